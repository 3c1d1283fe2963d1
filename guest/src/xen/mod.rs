//! Xen's services to a guest, the same under PV and PVH: event channels, the grant table,
//! xenstore, the toolstack's control requests, the frontends' common plumbing, the watch
//! that finds devices, and PV spinlocks.

pub mod balloon;
pub mod control;
pub mod devices;
pub mod evtchn;
pub mod frontend;
pub mod gnttab;
pub mod pvlock;
pub mod suspend;
pub mod xenstore;
