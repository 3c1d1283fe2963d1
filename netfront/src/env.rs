//! What the driver needs from the guest: pages it can fill and grant, the two shared rings,
//! and event channels. These are every frontend's traits ([`frontend`]), which the guest
//! implements once for both drivers and [`frontend::fake`] for the host tests. Nothing in
//! this driver blocks (smoltcp gets its timestamps from its caller), so it uses only the
//! event channel's `alloc_unbound`, `notify` and `close`.

use crate::abi::{NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse};

pub use frontend::{EventChannel, Page, Pages, SharedRing, PAGE_SIZE};

/// The transmit ring: one page.
pub type TxRing<P> = <P as Pages>::Ring<NetifTxRequest, NetifTxResponse>;
/// The receive ring: one page.
pub type RxRing<P> = <P as Pages>::Ring<NetifRxRequest, NetifRxResponse>;
