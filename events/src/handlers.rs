//! Which function runs when a port fires.

use crate::Port;

/// Runs for an event on its port, with the context word given at registration (typically a
/// pointer or index the driver uses to find its state).
pub type Handler = fn(Port, usize);

/// Why a registry operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerError {
    /// The port is beyond what the registry (and the event ABI) covers.
    OutOfRange(Port),
    /// A handler is already registered for the port.
    AlreadyBound(Port),
    /// No handler is registered for the port.
    NotBound(Port),
}

impl core::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HandlerError::OutOfRange(p) => write!(f, "{p} out of range"),
            HandlerError::AlreadyBound(p) => write!(f, "{p} already has a handler"),
            HandlerError::NotBound(p) => write!(f, "{p} has no handler"),
        }
    }
}

/// Handlers for ports `0..N`, in a fixed table so it can live in a `static`.
pub struct Handlers<const N: usize> {
    slots: [Option<(Handler, usize)>; N],
}

impl<const N: usize> Handlers<N> {
    pub const fn new() -> Self {
        Handlers { slots: [None; N] }
    }

    fn index(port: Port) -> Result<usize, HandlerError> {
        let i = port.0 as usize;
        if i < N {
            Ok(i)
        } else {
            Err(HandlerError::OutOfRange(port))
        }
    }

    /// Binds `handler` to `port`; a port has at most one handler.
    pub fn register(
        &mut self,
        port: Port,
        handler: Handler,
        ctx: usize,
    ) -> Result<(), HandlerError> {
        let slot = &mut self.slots[Self::index(port)?];
        if slot.is_some() {
            return Err(HandlerError::AlreadyBound(port));
        }
        *slot = Some((handler, ctx));
        Ok(())
    }

    /// Unbinds `port`, returning its context so the caller can release what it names.
    pub fn unregister(&mut self, port: Port) -> Result<usize, HandlerError> {
        let slot = &mut self.slots[Self::index(port)?];
        slot.take().map(|(_, ctx)| ctx).ok_or(HandlerError::NotBound(port))
    }

    /// The handler for `port` and its context, if one is bound. The caller runs it after
    /// releasing whatever lock guards the registry, so a handler may bind or close ports.
    /// `None` for an event that arrived after unregistering, or on a port never bound.
    pub fn get(&self, port: Port) -> Option<(Handler, usize)> {
        Self::index(port).ok().and_then(|i| self.slots[i])
    }

    /// Forgets every binding: after a resume in a new domain no port of the old one exists,
    /// and the numbers Xen hands out next may be any of them.
    pub fn clear(&mut self) {
        self.slots = [None; N];
    }
}

impl<const N: usize> Default for Handlers<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static CALLS: RefCell<Vec<(u32, usize, char)>> = const { RefCell::new(Vec::new()) };
    }

    fn a(p: Port, ctx: usize) {
        CALLS.with(|c| c.borrow_mut().push((p.0, ctx, 'a')));
    }

    fn b(p: Port, ctx: usize) {
        CALLS.with(|c| c.borrow_mut().push((p.0, ctx, 'b')));
    }

    /// What the upcall does with `get`: run the handler, if any.
    fn run<const N: usize>(h: &Handlers<N>, port: Port) -> bool {
        match h.get(port) {
            Some((handler, ctx)) => {
                handler(port, ctx);
                true
            }
            None => false,
        }
    }

    fn take_calls() -> Vec<(u32, usize, char)> {
        CALLS.with(|c| c.borrow_mut().drain(..).collect())
    }

    #[test]
    fn register_run_unregister() {
        let mut h = Handlers::<4096>::new();
        h.register(Port(3), a, 30).unwrap();
        h.register(Port(4095), b, 40).unwrap();
        assert!(run(&h, Port(3)));
        assert!(run(&h, Port(4095)));
        assert!(!run(&h, Port(5)));
        assert!(!run(&h, Port(4096)));
        assert_eq!(take_calls(), vec![(3, 30, 'a'), (4095, 40, 'b')]);
        assert_eq!(h.unregister(Port(3)), Ok(30));
        assert!(!run(&h, Port(3)));
        assert_eq!(take_calls(), vec![]);
        // The port can be bound again once free.
        h.register(Port(3), b, 31).unwrap();
        assert!(run(&h, Port(3)));
        assert_eq!(take_calls(), vec![(3, 31, 'b')]);
    }

    #[test]
    fn errors() {
        let mut h = Handlers::<64>::new();
        assert_eq!(h.register(Port(64), a, 0), Err(HandlerError::OutOfRange(Port(64))));
        assert_eq!(h.unregister(Port(u32::MAX)), Err(HandlerError::OutOfRange(Port(u32::MAX))));
        assert_eq!(h.unregister(Port(1)), Err(HandlerError::NotBound(Port(1))));
        h.register(Port(1), a, 5).unwrap();
        assert_eq!(h.register(Port(1), b, 6), Err(HandlerError::AlreadyBound(Port(1))));
        // The failed registration left the first one in place.
        assert!(run(&h, Port(1)));
        assert_eq!(take_calls(), vec![(1, 5, 'a')]);
        assert_eq!(HandlerError::NotBound(Port(2)).to_string(), "port 2 has no handler");
    }

    #[test]
    fn clear_forgets_every_binding() {
        let mut h = Handlers::<64>::new();
        h.register(Port(1), a, 5).unwrap();
        h.register(Port(63), b, 6).unwrap();
        h.clear();
        assert!(!run(&h, Port(1)) && !run(&h, Port(63)));
        h.register(Port(1), b, 7).unwrap();
        assert!(run(&h, Port(1)));
        assert_eq!(take_calls(), vec![(1, 7, 'b')]);
    }

    #[test]
    fn usable_in_a_static() {
        static H: Handlers<16> = Handlers::new();
        assert!(!run(&H, Port(0)));
    }
}
