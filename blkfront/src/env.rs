//! What the driver needs from the guest: pages it can fill and grant, the shared ring, and
//! an event channel with a clock. These are every frontend's traits ([`frontend`]), which
//! the guest implements once for both drivers and [`frontend::fake`] for the host tests.

use crate::abi::{BlkifRequest, BlkifResponse};

pub use frontend::{EventChannel, Page, Pages, SharedRing, Timeout, PAGE_SIZE};

/// The ring the guest builds for this driver: `1 << order` pages of blkif slots, the order
/// from 0 to [`crate::RING_PAGE_ORDER`] and never more than the backend's
/// `max-ring-page-order`. A guest that cannot give that many pages gets asked for one.
pub type BlkRing<P> = <P as Pages>::Ring<BlkifRequest, BlkifResponse>;
