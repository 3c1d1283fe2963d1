//! Event channels: Xen's virtual interrupts.
//!
//! [`two_level`] turns an upcall into handler calls by scanning the 2-level pending bitmaps
//! of `shared_info`/`vcpu_info`, fairly; [`handlers`] maps ports to the functions that run
//! for them. Neither knows how the shared pages were mapped or how Xen is called.
#![cfg_attr(not(test), no_std)]

pub mod handlers;
pub mod two_level;

pub use handlers::{Handler, HandlerError, Handlers};
pub use two_level::TwoLevel;

/// An event channel port (`evtchn_port_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

impl core::fmt::Display for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "port {}", self.0)
    }
}
