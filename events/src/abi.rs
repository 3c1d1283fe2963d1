//! What the upcall and the port operations need from an event channel ABI, whichever one
//! Xen was asked for.

use crate::Port;

/// A port the ABI cannot name: beyond its fixed range (2-level) or beyond the event array
/// pages registered so far (FIFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPort(pub Port);

/// What the caller must do after [`EventAbi::unmask`] so that an event which arrived while
/// the port was masked is not left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmask {
    /// Nothing: no event was waiting, or one is already on its way.
    Done,
    /// An event was waiting and is now marked for the upcall, but Xen only notices on its
    /// next return to the guest: force that (any hypercall does, for a PV guest), or leave it
    /// for the next upcall. 2-level only.
    ForceUpcallCheck,
    /// An event is waiting and only Xen can queue it: issue `EVTCHNOP_unmask` for the port,
    /// which unmasks it and queues the event. The port stays masked until then. FIFO only.
    NeedsHypercall,
}

/// A head or link in a FIFO queue that names a port outside the registered event array
/// pages. Xen never writes one, so the queue's memory was corrupted: the demultiplexer drops
/// the rest of that queue rather than follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadLink {
    /// The priority queue, 0 (highest) to 15.
    pub queue: u8,
    /// The port it named.
    pub port: Port,
}

/// What one [`EventAbi::demux`] call did, and what it found wrong in shared memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DemuxReport {
    /// Events handed to the handler.
    pub delivered: u32,
    /// The call stopped at its work bound with work left (handlers raising events as fast
    /// as they are consumed, links rewritten under us, an upcall flag that stays set). The
    /// upcall is left pending, so Xen enters it again and the events left are not lost.
    pub cut_short: bool,
    /// The last bad head or link met, if any.
    pub bad_link: Option<BadLink>,
    /// Bits set in the FIFO `ready` word for queues that do not exist; ignored.
    pub bogus_ready: u32,
}

impl DemuxReport {
    /// Whether nothing unusual happened: all work done, no sign of corrupted memory.
    pub fn is_clean(&self) -> bool {
        !self.cut_short && self.bad_link.is_none() && self.bogus_ready == 0
    }
}

/// One vCPU's view of an event channel ABI.
///
/// Ports outside [`max_ports`](Self::max_ports) are an `Err(BadPort)`, never a panic.
///
/// Every method takes `&self` so that one view can live in a `static` and the handlers
/// [`demux`](Self::demux) runs can mask, unmask, poll and clear ports through it: those
/// four may run at any time, concurrently with `demux` or from inside one of its handlers.
/// `demux` itself must not run concurrently with itself for the same vCPU, nor be re-entered
/// from a handler: it keeps where its last walk stopped, and two walkers would strand
/// queued events. The guest calls it only from that vCPU's upcall, with events masked.
/// Breaking that rule loses events but is still memory-safe.
pub trait EventAbi {
    /// Delivers every pending, unmasked event to `handle`, once per event, and clears the
    /// vCPU's upcall flag. Each event is marked not pending before its handler runs, so one
    /// raised again during the handler is delivered again rather than lost.
    fn demux(&self, handle: &mut dyn FnMut(Port)) -> DemuxReport;

    /// Stops `port` from interrupting us; its events stay pending until it is unmasked.
    fn mask(&self, port: Port) -> Result<(), BadPort>;

    /// Lets `port` interrupt us again; the result says what the caller must do so that an
    /// event which arrived meanwhile is delivered.
    fn unmask(&self, port: Port) -> Result<Unmask, BadPort>;

    /// Whether an event is pending on `port` (masked or not).
    fn is_pending(&self, port: Port) -> Result<bool, BadPort>;

    /// Consumes a pending event on `port` without delivering it (for a masked port that is
    /// polled rather than served by the upcall); returns whether one was pending.
    fn clear_pending(&self, port: Port) -> Result<bool, BadPort>;

    /// Ports `0..max_ports()` can be used now.
    fn max_ports(&self) -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{FakeXen, FifoXen, TwoLevelXen};

    fn demux<A: EventAbi + ?Sized>(abi: &A) -> (Vec<u32>, DemuxReport) {
        let mut got = Vec::new();
        let report = abi.demux(&mut |p| got.push(p.0));
        (got, report)
    }

    fn unmask<A: EventAbi + ?Sized>(x: &impl FakeXen, abi: &A, port: u32) {
        let action = abi.unmask(Port(port)).unwrap();
        x.follow(port, action);
    }

    /// What the guest relies on, whichever ABI it runs on.
    fn common_behaviour(x: &impl FakeXen) {
        let abi = x.abi();
        let ports = [1, 63, 64, 1023, 1024, 4095];
        for p in ports.into_iter().chain(5..10) {
            unmask(x, &abi, p);
        }

        // Events on masked ports wait, then arrive once unmasked and the caller did its part.
        for p in ports {
            abi.mask(Port(p)).unwrap();
            x.raise(p);
        }
        let (got, report) = demux(&abi);
        assert_eq!((got, report), (vec![], DemuxReport::default()));
        assert!(ports.iter().all(|&p| abi.is_pending(Port(p)) == Ok(true)));
        for p in ports {
            unmask(x, &abi, p);
        }
        let (mut got, report) = demux(&abi);
        got.sort_unstable();
        assert_eq!(got, ports);
        assert_eq!(report.delivered, ports.len() as u32);
        assert!(report.is_clean());
        assert!(ports.iter().all(|&p| abi.is_pending(Port(p)) == Ok(false)));

        // Raising twice before delivery is one event.
        x.raise(5);
        x.raise(5);
        assert_eq!(demux(&abi).0, [5]);

        // An event raised by a handler is delivered in the same call.
        x.raise(6);
        let mut got = Vec::new();
        abi.demux(&mut |p| {
            got.push(p.0);
            if p.0 == 6 {
                x.raise(7);
            }
        });
        assert_eq!(got, [6, 7]);

        // A polled port: read and cleared without delivery, nothing left to unmask.
        abi.mask(Port(9)).unwrap();
        x.raise(9);
        assert_eq!(abi.is_pending(Port(9)), Ok(true));
        assert_eq!(abi.clear_pending(Port(9)), Ok(true));
        assert_eq!(abi.clear_pending(Port(9)), Ok(false));
        assert_eq!(abi.unmask(Port(9)), Ok(Unmask::Done));
        assert_eq!(demux(&abi).0, []);

        let max = abi.max_ports();
        assert!(max >= 4096);
        let bad = Port(max);
        assert_eq!(abi.mask(bad), Err(BadPort(bad)));
        assert_eq!(abi.unmask(bad), Err(BadPort(bad)));
        assert_eq!(abi.is_pending(bad), Err(BadPort(bad)));
        assert_eq!(abi.clear_pending(Port(u32::MAX)), Err(BadPort(Port(u32::MAX))));
    }

    #[test]
    fn two_level_behaves_as_the_guest_expects() {
        common_behaviour(&TwoLevelXen::new());
    }

    #[test]
    fn fifo_behaves_as_the_guest_expects() {
        common_behaviour(&FifoXen::new(4));
    }

    /// Handlers reach the ABI through the same shared view that is running them, as the
    /// guest's do through its `static`.
    fn handlers_use_the_view_that_runs_them(x: &impl FakeXen) {
        let abi = x.abi();
        for p in 1..=4 {
            unmask(x, &abi, p);
        }
        abi.mask(Port(3)).unwrap();
        for p in [3, 1, 2, 4] {
            x.raise(p);
        }
        let mut got = Vec::new();
        let report = abi.demux(&mut |p| {
            got.push(p.0);
            if p.0 == 1 {
                // Keep 2's event for later, drop 4's, let 3's through.
                abi.mask(Port(2)).unwrap();
                assert_eq!(abi.clear_pending(Port(4)), Ok(true));
                unmask(x, &abi, 3);
                assert_eq!(abi.is_pending(Port(3)), Ok(true));
            }
        });
        assert_eq!(got, [1, 3]);
        assert_eq!(report.delivered, 2);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(abi.is_pending(Port(2)), Ok(true));
        assert_eq!(abi.is_pending(Port(4)), Ok(false));

        unmask(x, &abi, 2);
        assert_eq!(demux(&abi).0, [2]);
    }

    #[test]
    fn two_level_handlers_use_the_view_that_runs_them() {
        handlers_use_the_view_that_runs_them(&TwoLevelXen::new());
    }

    #[test]
    fn fifo_handlers_use_the_view_that_runs_them() {
        handlers_use_the_view_that_runs_them(&FifoXen::new(1));
    }

    #[test]
    fn demux_is_callable_through_a_trait_object() {
        let x = FifoXen::new(1);
        let fifo = x.abi();
        let abi: &dyn EventAbi = &fifo;
        unmask(&x, abi, 3);
        x.raise(3);
        let (got, report) = demux(abi);
        assert_eq!((got, report.delivered), (vec![3], 1));
    }
}
