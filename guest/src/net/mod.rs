//! The network (Xen only): the first vif the toolstack gave us, driven by netfront, with
//! smoltcp's TCP/IP on top and the services every boot with a vif offers: ICMP echo
//! replies, UDP and TCP echo on port 7, and an HTTP status page on port 80.
//!
//! One global [`Stack`] behind a lock. Nothing runs it on a timer of its own: whoever waits
//! (the self-tests, between tests the runner, `stay`'s control loop, the benchmarks) calls
//! [`poll`] and sleeps with [`wait`], which wakes on the vif's event channels and on
//! smoltcp's timers. DHCP thus goes on in the background of the boot: nothing waits for its
//! lease but what needs an address ([`wait_for_address`], bounded).

pub mod wire;

#[cfg(target_os = "none")]
mod arp;
#[cfg(target_os = "none")]
mod device;
#[cfg(target_os = "none")]
mod dhcp;
#[cfg(target_os = "none")]
mod services;
#[cfg(target_os = "none")]
mod stack;
#[cfg(target_os = "none")]
mod status;

#[cfg(target_os = "none")]
pub use stack::{
    gateway, icmp_ping, info, poll, resume, start, start_on, tcp_connect, wait, wait_for_address,
    wait_or, with_stack, Info, NoAddress, Stack, ADDRESS_WAIT_NS,
};
