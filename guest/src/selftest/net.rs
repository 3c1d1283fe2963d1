//! The network against the backend and bridge of whatever host we run on: the first vif the
//! toolstack gives us, configured by DHCP or `ip=`/`gw=`. A bridge without a DHCP server is a
//! skip (said once on an INFO line); a DHCP server that answers with nonsense is a failure.

use super::{check, xen_only, Outcome, Test};
use crate::xen::xenstore;
use crate::{net, pvops};
use alloc::format;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use xenbus::Store;

pub const TESTS: &[Test] = &[
    Test { name: "net::connected", run: connected },
    Test { name: "net::mac_matches_xenstore", run: mac_matches_xenstore },
    Test { name: "net::arp_resolves_gateway", run: arp_resolves_gateway },
    Test { name: "net::ping_gateway", run: ping_gateway },
];

/// Skips unless the boot brought the network up (a vif was given).
macro_rules! with_vif {
    () => {
        xen_only!();
        if net::info().is_none() {
            return Outcome::Skip("the xl config gives the guest no vif");
        }
    };
}

/// Skips unless the network has an address (waiting a bounded time for DHCP's lease) and a
/// gateway (the lease's router, or `gw=`).
fn gateway() -> Result<Ipv4Address, Outcome> {
    use core::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    match net::wait_for_address() {
        Ok(_) => {}
        Err(net::NoAddress::NoNetwork) => return Err(Outcome::Skip("no network")),
        Err(net::NoAddress::NoLease) => {
            if !SAID.swap(true, Ordering::Relaxed) {
                log::info!(
                    "net: no address: no DHCP server answered within {} s and no ip= was given",
                    net::ADDRESS_WAIT_NS / 1_000_000_000
                );
            }
            return Err(Outcome::Skip("no address: no DHCP server answered and no ip="));
        }
        Err(net::NoAddress::BadLease(why)) => {
            return Err(Outcome::Fail(format!("the DHCP server's lease has {why}")))
        }
    }
    net::gateway().ok_or(Outcome::Skip("no gateway: neither DHCP nor gw= gave one"))
}

/// The handshake reached Connected on both sides, and the vif is configured.
fn connected() -> Outcome {
    with_vif!();
    let (path, backend) = match net::with_stack(|s| {
        let d = s.nic.vif.device();
        (d.path.clone(), d.backend.clone())
    }) {
        Some(p) => p,
        None => return Outcome::Skip("no network"),
    };
    for dir in [&path, &backend] {
        let state = xenstore::with(|xs| xs.read_u64(&format!("{dir}/state")));
        check!(matches!(state, Some(Ok(4))), "{dir}/state is {state:?}, not 4 (Connected)");
    }
    if let Err(net::NoAddress::BadLease(why)) = net::wait_for_address() {
        return Outcome::Fail(format!("connected, but the DHCP server's lease has {why}"));
    }
    Outcome::Pass
}

/// The MAC the driver uses is the one the toolstack wrote in our vif's directory.
fn mac_matches_xenstore() -> Outcome {
    with_vif!();
    let Some((path, mac)) = net::with_stack(|s| (s.nic.vif.device().path.clone(), s.nic.vif.mac()))
    else {
        return Outcome::Skip("no network");
    };
    let key = format!("{path}/mac");
    let stored = xenstore::with(|xs| xs.read(&key));
    let Some(Ok(stored)) = stored else { return Outcome::Fail(format!("cannot read {key}")) };
    let ours = format!("{}", net::wire::Mac(mac));
    check!(
        stored.eq_ignore_ascii_case(ours.as_bytes()),
        "{key} is {stored:?}, the driver uses {ours}"
    );
    Outcome::Pass
}

/// A connection attempt to the gateway makes smoltcp ask for its MAC; dom0 answers by ARP.
fn arp_resolves_gateway() -> Outcome {
    with_vif!();
    let gw = match gateway() {
        Ok(gw) => gw,
        Err(outcome) => return outcome,
    };
    // The discard port: nothing listens there in dom0, which resets the connection, after
    // answering the ARP request.
    let sock = net::tcp_connect(IpEndpoint::new(IpAddress::Ipv4(gw), 9), 49_999, 1024);
    let deadline = pvops::clock_ns() + 3_000_000_000;
    let seen = loop {
        net::poll();
        let found = net::info().and_then(|i| {
            i.arp_seen.iter().find(|(ip, _)| Ipv4Address::from(*ip) == gw).map(|&(_, mac)| mac)
        });
        if found.is_some() || pvops::clock_ns() >= deadline {
            break found;
        }
        net::wait(deadline);
    };
    if let Ok(h) = sock {
        net::with_stack(|s| s.sockets.remove(h));
    }
    match seen {
        Some(mac) => {
            log::info!("net: gateway {gw} is at {}", net::wire::Mac(mac));
            Outcome::Pass
        }
        None => Outcome::Fail(format!("no ARP from the gateway {gw} within 3 s")),
    }
}

/// Five echo requests to the gateway, every one answered.
fn ping_gateway() -> Outcome {
    with_vif!();
    let gw = match gateway() {
        Ok(gw) => gw,
        Err(outcome) => return outcome,
    };
    let mut total = 0;
    for seq in 0..5 {
        match net::icmp_ping(gw, 0x7575, seq, 3_000_000_000) {
            Ok(rtt) => total += rtt,
            Err(why) => return Outcome::Fail(format!("ping {gw} #{seq}: {why}")),
        }
    }
    log::info!("net: 5 pings to {gw}, average {} us", total / 5 / 1000);
    Outcome::Pass
}
