//! Which vCPU each port is bound to (`EVTCHNOP_bind_vcpu`; 0 until rebound): the guest's
//! record of what it asked Xen. Under the 2-level ABI every vCPU sees the same pending
//! bits, so a vCPU's [`TwoLevel`](crate::TwoLevel) view delivers only the ports recorded as
//! its own, as Linux's per-CPU `cpu_evtchn_mask` does; under either ABI it says which ports
//! must move before their vCPU goes down.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::abi::BadPort;
use crate::Port;

/// Ports covered: the 2-level ABI's, more than the guest binds under FIFO.
pub const OWNED_PORTS: usize = crate::two_level::NR_PORTS;

pub struct PortOwners([AtomicU8; OWNED_PORTS]);

impl PortOwners {
    /// Every port on vCPU 0.
    pub const fn new() -> Self {
        PortOwners([const { AtomicU8::new(0) }; OWNED_PORTS])
    }

    fn slot(&self, port: Port) -> Result<&AtomicU8, BadPort> {
        self.0.get(port.0 as usize).ok_or(BadPort(port))
    }

    /// Records that `port` is bound to `vcpu`.
    pub fn set(&self, port: Port, vcpu: u8) -> Result<(), BadPort> {
        self.slot(port)?.store(vcpu, Ordering::SeqCst);
        Ok(())
    }

    /// The vCPU `port` is bound to; 0 for one beyond the table.
    pub fn get(&self, port: Port) -> u8 {
        self.slot(port).map_or(0, |s| s.load(Ordering::SeqCst))
    }

    /// The ports bound to `vcpu`.
    pub fn of(&self, vcpu: u8) -> impl Iterator<Item = Port> + '_ {
        (0..OWNED_PORTS as u32).map(Port).filter(move |&p| self.get(p) == vcpu)
    }

    /// Every port back on vCPU 0 (a new domain, where no port of ours exists).
    pub fn reset(&self) {
        for slot in &self.0 {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

impl Default for PortOwners {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_start_on_vcpu_0_and_move_where_recorded() {
        let owners = PortOwners::new();
        assert_eq!(owners.get(Port(7)), 0);
        owners.set(Port(7), 3).unwrap();
        owners.set(Port(4095), 3).unwrap();
        assert_eq!(owners.of(3).collect::<Vec<_>>(), [Port(7), Port(4095)]);
        assert_eq!(owners.set(Port(4096), 1), Err(BadPort(Port(4096))));
        assert_eq!(owners.get(Port(4096)), 0);
        owners.reset();
        assert_eq!(owners.of(3).count(), 0);
    }
}
