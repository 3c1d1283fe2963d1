//! Console backends behind one writer: the Xen PV console ring (a domU's console), Xen's
//! `console_io` hypercall (dom0's) and a 16550 UART (native).
#![cfg_attr(not(test), no_std)]

pub mod uart16550;
pub mod xen_ring;

pub use uart16550::Uart16550;
pub use xen_ring::{Doorbell, Stalled, XenRing};
