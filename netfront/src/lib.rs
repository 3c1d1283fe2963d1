//! The Xen network frontend: a virtual NIC served by a backend domain (netback) over a
//! transmit and a receive ring.
//!
//! - [`abi`]: the protocol's structs and constants (`io/netif.h`).
//! - [`mod@env`]: what the guest supplies, as traits: pages it can grant ([`Pages`]), the two
//!   rings it built over one page each ([`SharedRing`]) and event channels
//!   ([`EventChannel`]). Everything that touches raw memory or Xen sits behind them, so this
//!   crate forbids `unsafe` and runs on the host against a fake backend.
//! - [`Netfront`]: the driver. [`Netfront::connect`] runs the xenbus handshake; then
//!   [`Netfront::send`], [`Netfront::poll`] and [`Netfront::recv`] move Ethernet frames, and
//!   the driver is a [`smoltcp::phy::Device`] for smoltcp's `Interface`.
//! - [`csum`]: the software checksum fill-in for frames the backend left `csum_blank`.
//!
//! # Integrating it (the guest's side)
//!
//! 1. Implement [`Pages`] and [`EventChannel`]. The page side is blkfront's contract (frame
//!    allocator + [`grant::GrantTable`]), so the guest's blkfront pages can serve here too;
//!    `alloc_ring` builds a one-page `FrontRing` (the one `unsafe` call) for either slot
//!    layout. The event channel is the `events` crate's alloc_unbound/send/close, with the
//!    port bound to record that it fired; the driver never blocks, so it needs no wait.
//! 2. `Netfront::connect(&mut xenstore, vif_id, pages, evtchn, timeout_ns)`; the vif ids
//!    come from `xenbus::frontend::device_ids(xs, "vif")`. The MAC address the toolstack
//!    assigned is [`Netfront::mac`].
//! 3. Route [`Netfront::ports`] to the code that polls (one port, or two when the backend
//!    offers split event channels). As in blkfront the driver is a plain `&mut` value: the
//!    handler only records that a port fired, and whoever holds the driver calls
//!    [`Netfront::poll`] (or lets smoltcp do it, below). Polling with nothing to do is
//!    cheap and harmless.
//! 4. With smoltcp: build an `Interface` with `HardwareAddress::Ethernet(
//!    EthernetAddress(net.mac()))` and call `iface.poll(now, &mut net, &mut sockets)`
//!    whenever a port fired or a socket timer (`iface.poll_delay`) expires.
//!    [`Device::receive`](smoltcp::phy::Device::receive) polls the rings itself when no
//!    frame is waiting; [`Netfront::work_pending`] says whether to go round again before
//!    waiting for the next event, and [`Netfront::flush`] sends what smoltcp handed over.
//!    Without smoltcp: [`Netfront::send`] and [`Netfront::recv`].
//! 5. [`Netfront::close`] before giving the memory up.
//!
//! # Negotiated features
//!
//! We require `feature-rx-copy` (the backend copies into our pages; the old page-flipping
//! mode is not supported) and write `request-rx-copy=1`, `feature-rx-notify=1` (we notify
//! when we post receive buffers) and `feature-sg=1` (received frames may span several
//! slots; we join them). Split event channels (`event-channel-tx`/`-rx`) are used when
//! offered. Frames over one page go out only if the backend has `feature-sg`.
//!
//! Offloads ([`Offloads`], both on unless the guest asks otherwise):
//! - checksums ([`csum`]): TCP's and UDP's go out blank for the backend to complete, and
//!   we write `feature-no-csum-offload=0`; received frames the backend marked blank or
//!   validated are taken as they are, the others checked by the driver;
//! - large TCP segments: we write `feature-gso-tcpv4=1` and take frames of up to 64 KiB,
//!   and, if the backend has `feature-gso-tcpv4` and `feature-sg`, join the segments
//!   smoltcp makes into frames of up to 64 KiB with a GSO slot (`gso`).
//!
//! Transmit requests are published, and the backend told, once per batch:
//! [`Netfront::flush`] after each `Interface::poll`.
//!
//! Not supported: multiple queues (`multi-queue-max-queues` is read and ignored: one
//! queue), the control ring, multicast control, hashing, IPv6 checksum offload.
//!
//! The backend is another domain and may be buggy or hostile. Data only ever crosses in
//! pages the driver owns and fills with nothing but the frame; every value it writes to
//! xenstore or the rings is validated before use, responses are matched to requests only
//! through the driver's own tables, and a grant is ended before the page behind it is
//! read or reused.
#![cfg_attr(not(any(test, feature = "test-utils")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod csum;
mod device;
mod driver;
pub mod env;
#[cfg(feature = "test-utils")]
pub mod fake;
mod gso;
mod handshake;
mod rx;
mod tx;

pub use device::{NetRxToken, NetTxToken};
pub use driver::{Netfront, Ports, Stats, MAX_QUARANTINED, MTU, TX_KEPT_PAGES};
pub use env::{EventChannel, Page, Pages, SharedRing};
pub use handshake::{Features, Offloads};

use core::fmt;

pub use frontend::DeviceError;

/// Why a network operation, or the connection, failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The transmit ring has no room for the frame: poll, then try again.
    Busy,
    /// A frame to send shorter than an Ethernet header, longer than
    /// [`abi::MAX_TX_SIZE`], or longer than a page while the backend lacks `feature-sg`.
    BadLength,
    /// The toolstack's `mac` key is missing or not a unicast `aa:bb:cc:dd:ee:ff`.
    BadMac,
    /// What every frontend may fail with: the device broke (a corrupted ring, more receive
    /// buffers held than [`MAX_QUARANTINED`]) or closed, the guest ran out of pages, grants
    /// or ports, the handshake's xenstore or backend values failed, or the backend lacks a
    /// feature we cannot do without (`feature-rx-copy`).
    Device(DeviceError),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Busy => f.write_str("netfront: transmit ring full"),
            NetError::BadLength => f.write_str("netfront: frame length not sendable"),
            NetError::BadMac => f.write_str("netfront: missing or invalid mac"),
            NetError::Device(e) => write!(f, "netfront: {e}"),
        }
    }
}

frontend::wrap_device_error!(NetError);
