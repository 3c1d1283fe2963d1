//! Event channels: Xen's virtual interrupts.
//!
//! Xen offers two ABIs for telling a guest which ports fired: [`two_level`] (pending and mask
//! bitmaps in `shared_info`, up to 4096 ports) and [`fifo`] (an event word per port in pages
//! the guest registers, queued by priority, up to 131072 ports). Both implement [`EventAbi`],
//! so the upcall and the port operations above them do not care which one is in use.
//! [`handlers`] maps ports to the functions that run for them. Nothing here knows how the
//! shared pages were mapped or how Xen is called: where the ABI needs a hypercall, the
//! operation says so in its result.
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod fifo;
pub mod handlers;
pub mod owners;
pub mod two_level;

#[cfg(test)]
mod sim;

pub use abi::{BadLink, BadPort, DemuxReport, EventAbi, Unmask};
pub use fifo::{Fifo, VcpuQueues};
pub use handlers::{Handler, HandlerError, Handlers};
pub use owners::PortOwners;
pub use two_level::TwoLevel;

/// An event channel port (`evtchn_port_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

impl core::fmt::Display for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "port {}", self.0)
    }
}
