//! The one vif's smoltcp interface and the lock around it: starting and detaching it,
//! polling and waiting, and what the self-tests and benchmarks ask of it.

use super::device::{Nic, Vif};
use super::dhcp;
use super::services::Services;
use super::status;
use super::wire::Mac;
use crate::xen::frontend::{self, GuestEvents, GuestPages};
use crate::xen::{evtchn, xenstore};
use crate::{println, pvops, time};
use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use events::Port;
use netfront::{DeviceError, NetError, Ports};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{dhcpv4, icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
    Ipv4Address, Ipv4Cidr,
};

/// Everything the network is.
pub struct Stack {
    pub nic: Nic,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    /// The DHCP client, when the command line gave no address.
    dhcp: Option<SocketHandle>,
    services: Services,
    pub gateway: Option<Ipv4Address>,
}

static STACK: spin::Mutex<Option<Stack>> = spin::Mutex::new(None);
/// Set by the watch on the vif's backend state once it left Connected: `xl network-detach`
/// (the toolstack sets it Closing and waits for us to close).
static CLOSING: AtomicBool = AtomicBool::new(false);
const WATCH_TOKEN: &str = "vif-backend";
/// The vif's event channels, readable without the stack's lock.
static PORTS: spin::Mutex<Option<Ports>> = spin::Mutex::new(None);
/// When the network started, for the bound on waiting for an address.
static STARTED_NS: AtomicU64 = AtomicU64::new(0);

/// How long the vif may take to connect.
const TIMEOUT_NS: u64 = 10_000_000_000;
/// How long after the network started a wait for DHCP's lease may go on: a DHCP server
/// answers in well under a second; a bridge may have none.
pub const ADDRESS_WAIT_NS: u64 = 10_000_000_000;

pub fn now() -> Instant {
    Instant::from_micros((pvops::clock_ns() / 1000) as i64)
}

/// Runs `f` on the stack, if there is one.
pub fn with_stack<R>(f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
    STACK.lock().as_mut().map(f)
}

/// Connects the first vif, if the toolstack gave us one, and configures it (see
/// [`start_on`]). `Ok(false)`: no vif.
pub fn start() -> Result<bool, NetError> {
    let Some(&id) = crate::xen::devices::ids(crate::xen::devices::VIF).first() else {
        return Ok(false);
    };
    start_on(id).map(|()| true)
}

/// Connects vif `id` and configures it: `ip=`/`gw=` from the command line, else DHCP, which
/// goes on in the background, whenever the network is polled: nothing waits for it here.
/// Prints `net: up <ip>/<len> gw <ip> mac <mac>` once configured.
pub fn start_on(id: u32) -> Result<(), NetError> {
    // netfront never blocks, so never asks its events whether the backend is closing: the
    // stack's own watch (`watch_backend`, `CLOSING`) detaches the vif instead.
    let events = GuestEvents::new(alloc::sync::Arc::new(AtomicBool::new(false)));
    let offloads = if crate::boot::options().netoffload {
        netfront::Offloads::default()
    } else {
        netfront::Offloads::NONE
    };
    let vif =
        xenstore::with(|xs| Vif::connect_with(xs, id, GuestPages, events, TIMEOUT_NS, offloads))
            .unwrap_or(Err(NetError::Device(DeviceError::Xenstore(xenbus::Error::Timeout))))?;
    *PORTS.lock() = Some(vif.ports());
    CLOSING.store(false, Ordering::SeqCst);
    *dhcp::BAD_LEASE.lock() = None;
    watch_backend(vif.device().clone());
    let mac = vif.mac();
    let mut nic = Nic { vif, arp_seen: Vec::new() };
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    // Seeds TCP's initial sequence numbers and DHCP's transaction ids: the clock and the
    // MAC differ from boot to boot and guest to guest.
    config.random_seed = pvops::clock_ns()
        ^ u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
    let mut iface = Interface::new(config, &mut nic, now());
    let mut sockets = SocketSet::new(Vec::new());
    let mut gateway = None;
    let options = crate::boot::options();
    let dhcp = match options.ip {
        Some(cidr) => {
            let addr = Ipv4Address::from(cidr.addr);
            iface.update_ip_addrs(|addrs| {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(addr, cidr.prefix_len)));
            });
            if let Some(gw) = options.gw {
                gateway = Some(Ipv4Address::from(gw));
                let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::from(gw));
            }
            None
        }
        None => Some(sockets.add(dhcpv4::Socket::new())),
    };
    let services = Services::new(&mut sockets);
    let stack = Stack { nic, iface, sockets, dhcp, services, gateway };
    if dhcp.is_none() {
        stack.say_up();
    }
    *STACK.lock() = Some(stack);
    STARTED_NS.store(pvops::clock_ns(), Ordering::SeqCst);
    // The DHCP client's first request goes out now; its answers are read at later polls.
    poll();
    Ok(())
}

/// After a resume in a new domain: the vif reconnects to its new backend (see
/// [`netfront::Netfront::reconnect`]), the watch moves to the new backend's state, and, if
/// we have an address, a gratuitous ARP tells the bridge and neighbours where our MAC is
/// now. Sockets, the address and DHCP's lease carry on; TCP resends what was lost. If the
/// vif cannot reconnect the network goes down, as after a detach.
pub fn resume() {
    let mut guard = STACK.lock();
    let Some(stack) = guard.as_mut() else { return };
    *PORTS.lock() = None;
    let events = GuestEvents::new(alloc::sync::Arc::new(AtomicBool::new(false)));
    let reconnected = xenstore::with(|xs| {
        // The watch xenstore re-registered names the old domain's backend.
        if let Err(e) = xs.unwatch(WATCH_TOKEN) {
            log::warn!("net: unwatching the old backend: {e}");
        }
        stack.nic.vif.reconnect(xs, events, TIMEOUT_NS)
    })
    .unwrap_or(Err(NetError::Device(DeviceError::Xenstore(xenbus::Error::Timeout))));
    if let Err(e) = reconnected {
        log::error!("net: the vif did not reconnect after the resume: {e}");
        if let Some(stack) = guard.take() {
            drop(guard);
            detach(stack, "no backend after the resume");
        }
        return;
    }
    let vif = &stack.nic.vif;
    *PORTS.lock() = Some(vif.ports());
    CLOSING.store(false, Ordering::SeqCst);
    watch_backend(vif.device().clone());
    let mac = vif.mac();
    let hardware = HardwareAddress::Ethernet(EthernetAddress(mac));
    if stack.iface.hardware_addr() != hardware {
        log::warn!("net: the new domain's MAC is {}", Mac(mac));
        stack.iface.set_hardware_addr(hardware);
    }
    if let Some(addr) = stack.iface.ipv4_addr() {
        let announce = super::wire::gratuitous_arp(mac, addr.octets());
        if let Err(e) = stack.nic.vif.send(&announce) {
            log::warn!("net: gratuitous ARP after the resume: {e}");
        }
    }
    drop(guard);
    println!("net: resumed mac {}", Mac(mac));
    poll();
}

/// Why there is no address to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAddress {
    /// No network (no vif, or it went away).
    NoNetwork,
    /// No `ip=`, and no DHCP server answered within [`ADDRESS_WAIT_NS`] of the start.
    NoLease,
    /// The DHCP server's lease made no sense (the ERROR line says why).
    BadLease(&'static str),
}

/// The network's address, waiting for DHCP's lease until [`ADDRESS_WAIT_NS`] after the
/// network started (so a bridge without a DHCP server costs that wait once, not per caller),
/// or until the toolstack asks us to go.
pub fn wait_for_address() -> Result<(Ipv4Address, u8), NoAddress> {
    let deadline = STARTED_NS.load(Ordering::SeqCst).saturating_add(ADDRESS_WAIT_NS);
    loop {
        poll();
        if let Some(why) = *dhcp::BAD_LEASE.lock() {
            return Err(NoAddress::BadLease(why));
        }
        let info = info().ok_or(NoAddress::NoNetwork)?;
        if let Some(addr) = info.addr {
            return Ok(addr);
        }
        if pvops::clock_ns() >= deadline || crate::xen::control::requested().is_some() {
            return Err(NoAddress::NoLease);
        }
        wait_or(deadline, xenstore::signalled);
    }
}

/// What the network looks like now.
pub struct Info {
    pub mac: [u8; 6],
    pub addr: Option<(Ipv4Address, u8)>,
    pub gateway: Option<Ipv4Address>,
    pub stats: netfront::Stats,
    pub arp_seen: Vec<([u8; 4], [u8; 6])>,
}

pub fn info() -> Option<Info> {
    with_stack(|s| Info {
        mac: s.nic.vif.mac(),
        addr: s.iface.ipv4_addr().map(|a| {
            let len = s.iface.ip_addrs().iter().find_map(|c| match c {
                IpCidr::Ipv4(c) if c.address() == a => Some(c.prefix_len()),
                _ => None,
            });
            (a, len.unwrap_or(32))
        }),
        gateway: s.gateway,
        stats: s.nic.vif.stats(),
        arp_seen: s.nic.arp_seen.clone(),
    })
}

pub fn gateway() -> Option<Ipv4Address> {
    with_stack(|s| s.gateway).flatten()
}

impl Stack {
    /// The line a person (and the rig) looks for: the network is configured.
    pub(super) fn say_up(&self) {
        let Some(addr) = self.iface.ipv4_addr() else { return };
        let len = self.iface.ip_addrs().iter().find_map(|c| match c {
            IpCidr::Ipv4(c) if c.address() == addr => Some(c.prefix_len()),
            _ => None,
        });
        let gw = self.gateway.map_or(String::from("none"), |g| format!("{g}"));
        println!("net: up {addr}/{} gw {gw} mac {}", len.unwrap_or(32), Mac(self.nic.vif.mac()));
    }

    /// One round: frames in and out, DHCP's news applied, the services served. Returns
    /// whether anything may have changed.
    fn poll_once(&mut self) -> bool {
        let changed = self.iface.poll(now(), &mut self.nic, &mut self.sockets)
            != smoltcp::iface::PollResult::None;
        // What smoltcp queued goes out now, with one notification.
        self.nic.vif.flush();
        if let Some(h) = self.dhcp {
            if !self.poll_dhcp(h) {
                return changed;
            }
        }
        let (nic, iface, gateway) = (&self.nic, &self.iface, self.gateway);
        self.services.serve(&mut self.sockets, || status::status_page(nic, iface, gateway));
        changed
    }
}

fn watch_backend(device: xenbus::frontend::Device) {
    let path = device.backend_state_path();
    let watched = xenstore::with(|xs| {
        frontend::watch_backend_state(xs, device, WATCH_TOKEN, |_| {
            CLOSING.store(true, Ordering::SeqCst)
        })
    });
    if let Some(Err(e)) = watched {
        log::warn!("net: cannot watch {path} ({e}): a detach would go unnoticed");
    }
}

/// Once the backend is closing, or broke the protocol (netfront stopped the device): the
/// vif's side of the close, so that the toolstack's detach completes, and the network is
/// gone; the rest of the guest goes on without it.
fn detach(stack: Stack, why: &str) {
    let vif = stack.nic.vif;
    *PORTS.lock() = None;
    log::error!("net: {}: {why}: network down", vif.device().path);
    let closed = xenstore::with(|xs| {
        if let Err(e) = xs.unwatch(WATCH_TOKEN) {
            log::warn!("net: unwatching the backend: {e}");
        }
        vif.close(xs, TIMEOUT_NS)
    });
    match closed {
        Some(Ok(())) => log::warn!("net: vif closed"),
        Some(Err(e)) => log::error!("net: closing the vif: {e}"),
        None => {}
    }
}

/// Runs the stack until it has nothing more to do right now (bounded).
pub fn poll() {
    let mut guard = STACK.lock();
    let broken = guard.as_ref().is_some_and(|s| s.nic.vif.is_broken());
    if CLOSING.load(Ordering::SeqCst) || broken {
        if let Some(stack) = guard.take() {
            drop(guard);
            let why = if broken {
                "the backend broke the protocol (netfront stopped the device)"
            } else {
                "the backend is closing"
            };
            detach(stack, why);
        }
        return;
    }
    let Some(stack) = guard.as_mut() else { return };
    for _ in 0..64 {
        let changed = stack.poll_once();
        if !changed && !stack.nic.vif.work_pending() {
            break;
        }
    }
}

/// Sleeps until the vif signals, a smoltcp timer is due, or the clock reaches
/// `deadline_ns`. Call [`poll`] after.
pub fn wait(deadline_ns: u64) {
    wait_or(deadline_ns, || false)
}

/// [`wait`], also woken when `other()` holds (checked as [`time::wait_until`] does), for a
/// loop that serves something else too.
pub fn wait_or(deadline_ns: u64, mut other: impl FnMut() -> bool) {
    let due = with_stack(|s| s.iface.poll_delay(now(), &s.sockets)).flatten();
    let until = match due {
        Some(d) => deadline_ns.min(pvops::clock_ns().saturating_add(d.total_micros() * 1000)),
        None => deadline_ns,
    };
    let ports = *PORTS.lock();
    time::wait_until(|| ports.is_some_and(signalled) | other(), until);
}

/// Whether a vif port fired since last asked (both are checked, and cleared).
fn signalled(ports: Ports) -> bool {
    let tx = evtchn::take_fired(Port(ports.tx));
    let rx = ports.rx != ports.tx && evtchn::take_fired(Port(ports.rx));
    tx || rx
}

/// Sends one ICMP echo request to `target` and waits up to `timeout_ns` for its reply;
/// the round-trip time in nanoseconds.
pub fn icmp_ping(
    target: Ipv4Address,
    ident: u16,
    seq: u16,
    timeout_ns: u64,
) -> Result<u64, &'static str> {
    let payload = *b"rust-unikernel ping 0123456789ab";
    let handle = with_stack(|s| {
        let buf = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]);
        let mut socket = icmp::Socket::new(buf(), buf());
        socket.bind(icmp::Endpoint::Ident(ident)).map(|()| s.sockets.add(socket))
    })
    .ok_or("no network")?
    .map_err(|_| "cannot bind the ICMP socket")?;
    let start = pvops::clock_ns();
    let sent = with_stack(|s| {
        let caps = s.nic.capabilities().checksum;
        let repr = Icmpv4Repr::EchoRequest { ident, seq_no: seq, data: &payload };
        let socket = s.sockets.get_mut::<icmp::Socket>(handle);
        socket.send(repr.buffer_len(), IpAddress::Ipv4(target)).map(|buf| {
            repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
        })
    });
    let result = match sent {
        Some(Ok(())) => loop {
            poll();
            let reply = with_stack(|s| {
                let socket = s.sockets.get_mut::<icmp::Socket>(handle);
                let mut found = false;
                while let Ok((data, from)) = socket.recv() {
                    let Ok(packet) = Icmpv4Packet::new_checked(data) else { continue };
                    let caps = smoltcp::phy::ChecksumCapabilities::default();
                    if let Ok(Icmpv4Repr::EchoReply { ident: i, seq_no, data }) =
                        Icmpv4Repr::parse(&packet, &caps)
                    {
                        found |= from == IpAddress::Ipv4(target)
                            && i == ident
                            && seq_no == seq
                            && data == payload;
                    }
                }
                found
            });
            if reply == Some(true) {
                break Ok(pvops::clock_ns() - start);
            }
            if pvops::clock_ns() - start >= timeout_ns {
                break Err("no echo reply in time");
            }
            wait(start + timeout_ns);
        },
        _ => Err("cannot queue the echo request"),
    };
    with_stack(|s| s.sockets.remove(handle));
    result
}

/// A TCP socket connecting to `remote`, with buffers of `buffer` bytes each way.
pub fn tcp_connect(
    remote: IpEndpoint,
    local_port: u16,
    buffer: usize,
) -> Result<SocketHandle, &'static str> {
    with_stack(|s| {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffer]),
            tcp::SocketBuffer::new(vec![0; buffer]),
        );
        socket.set_nagle_enabled(false);
        // Every segment acknowledged at once: a delayed ACK (10 ms) stalls the sender
        // whenever our window is the limit, which it is over dom0's bridge.
        socket.set_ack_delay(None);
        socket.connect(s.iface.context(), remote, local_port).map_err(|_| "cannot connect")?;
        Ok(s.sockets.add(socket))
    })
    .ok_or("no network")?
}
