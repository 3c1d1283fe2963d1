//! The HTTP status page (port 80).

use super::device::Nic;
use super::wire::Mac;
use crate::{pvops, time};
use alloc::format;
use alloc::string::String;
use smoltcp::iface::Interface;
use smoltcp::wire::Ipv4Address;

/// The HTTP page: what a person checking on the guest wants to see.
pub(super) fn status_page(nic: &Nic, iface: &Interface, gateway: Option<Ipv4Address>) -> String {
    let up = time::uptime_ns();
    let s = nic.vif.stats();
    let resumes = crate::xen::suspend::resumes();
    let addr = iface.ip_addrs().first().map_or(String::from("none"), |a| format!("{a}"));
    let gw = gateway.map_or(String::from("none"), |g| format!("{g}"));
    format!(
        "rust-unikernel\n\
         uptime: {}.{:03} s\n\
         pv_ops: {}\n\
         self-test: {}\n\
         resumes: {} in a new domain, {} cancelled\n\
         memory: {}\n\
         net: ip {addr} gw {gw} mac {}\n\
         netfront rx: {} packets, {} bytes, {} dropped, {} errors, {} bad responses, {} checksums trusted, {} bad\n\
         netfront tx: {} packets, {} bytes, {} dropped, {} errors, {} bad responses, {} large ({} segments), {} notifications\n\
         netfront: {} pages quarantined\n",
        up / 1_000_000_000,
        up / 1_000_000 % 1000,
        pvops::backend().name(),
        crate::xen::control::result().unwrap_or("running"),
        resumes.0,
        resumes.1,
        crate::xen::balloon::describe().unwrap_or_else(|| String::from("no balloon")),
        Mac(nic.vif.mac()),
        s.rx_packets,
        s.rx_bytes,
        s.rx_dropped,
        s.rx_errors,
        s.rx_bad_responses,
        s.rx_csum_trusted,
        s.rx_csum_bad,
        s.tx_packets,
        s.tx_bytes,
        s.tx_dropped,
        s.tx_errors,
        s.tx_bad_responses,
        s.tx_gso_frames,
        s.tx_gso_segments,
        s.tx_notifies,
        s.quarantined,
    )
}
