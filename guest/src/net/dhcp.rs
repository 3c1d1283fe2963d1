//! The DHCP client's news, applied to the interface: a lease is checked before it is used,
//! and a refused one is kept for whoever waits for an address to say why.

use super::stack::Stack;
use super::wire;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::dhcpv4;
use smoltcp::wire::IpCidr;

/// Why the DHCP server's lease was refused, if it was.
pub(super) static BAD_LEASE: spin::Mutex<Option<&'static str>> = spin::Mutex::new(None);

impl Stack {
    /// Applies what the DHCP client `h` says; false when it refused the lease, which ends
    /// the caller's round before it serves anything.
    pub(super) fn poll_dhcp(&mut self, h: SocketHandle) -> bool {
        match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            Some(dhcpv4::Event::Configured(c)) => {
                let checked =
                    wire::check_lease(c.address.address(), c.address.prefix_len(), c.router);
                if let Err(why) = checked {
                    log::error!(
                        "net: DHCP lease {} router {:?} refused: {why}",
                        c.address,
                        c.router
                    );
                    *BAD_LEASE.lock() = Some(why);
                    return false;
                }
                *BAD_LEASE.lock() = None;
                self.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(c.address));
                });
                self.gateway = c.router;
                match c.router {
                    Some(r) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => self.iface.routes_mut().remove_default_ipv4_route().map_or((), drop),
                }
                log::info!("net: DHCP lease {} router {:?}", c.address, c.router);
                self.say_up();
            }
            // Also what the client says when it starts: nothing was lost then.
            Some(dhcpv4::Event::Deconfigured) if self.iface.ipv4_addr().is_none() => {}
            Some(dhcpv4::Event::Deconfigured) => {
                log::warn!("net: DHCP lease lost");
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.gateway = None;
            }
            None => {}
        }
        true
    }
}
