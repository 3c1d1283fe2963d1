//! What the guest answers on the network: UDP and TCP echo on port 7 (RFC 862) and HTTP on
//! port 80, whose every path shows the status page. ICMP echo replies are smoltcp's own.

use super::wire::{parse_http_request, HttpRequest, MAX_REQUEST_HEAD};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};

const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 80;
/// Connections served at once, per TCP service: each has its own listening socket.
const CONNECTIONS: usize = 2;
/// Each TCP socket's buffers, each way: a window large enough to keep dom0's bridge busy.
const TCP_BUFFER: usize = 64 * 1024;

/// One HTTP connection's progress.
struct Http {
    handle: SocketHandle,
    request: Vec<u8>,
    response: Vec<u8>,
    sent: usize,
}

pub struct Services {
    udp_echo: SocketHandle,
    tcp_echo: [SocketHandle; CONNECTIONS],
    http: [Http; CONNECTIONS],
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    )
}

impl Services {
    pub fn new(sockets: &mut SocketSet<'static>) -> Services {
        let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 16384]);
        let mut udp = udp::Socket::new(buf(), buf());
        // A fresh socket on a free port: binding cannot fail.
        let _ = udp.bind(ECHO_PORT);
        let udp_echo = sockets.add(udp);
        let tcp_echo = [(); CONNECTIONS].map(|()| sockets.add(tcp_socket()));
        let http = [(); CONNECTIONS].map(|()| Http {
            handle: sockets.add(tcp_socket()),
            request: Vec::new(),
            response: Vec::new(),
            sent: 0,
        });
        Services { udp_echo, tcp_echo, http }
    }

    /// Moves every service along after the interface polled. `status` renders the page.
    pub fn serve(&mut self, sockets: &mut SocketSet<'static>, status: impl Fn() -> String) {
        udp_echo(sockets.get_mut(self.udp_echo));
        for &h in &self.tcp_echo {
            tcp_echo(sockets.get_mut(h));
        }
        for http in &mut self.http {
            http.serve(sockets.get_mut(http.handle), &status);
        }
    }
}

/// Listening, or in the middle of the handshake: nothing to serve yet, and nothing to close.
fn connecting(socket: &tcp::Socket) -> bool {
    matches!(socket.state(), tcp::State::Listen | tcp::State::SynReceived)
}

fn udp_echo(socket: &mut udp::Socket) {
    let mut buf = [0u8; 2048];
    while socket.can_send() {
        let Ok((n, meta)) = socket.recv_slice(&mut buf) else { break };
        if socket.send_slice(&buf[..n], meta.endpoint).is_err() {
            break;
        }
    }
}

/// Listens again once a connection is over; echoes what arrives as far as the send buffer
/// has room (the rest waits in the receive buffer, which closes the peer's window); closes
/// when the peer has closed and everything went back.
fn tcp_echo(socket: &mut tcp::Socket) {
    if !socket.is_open() {
        // A closed socket listens on a port we own: cannot fail.
        let _ = socket.listen(ECHO_PORT);
        return;
    }
    if connecting(socket) {
        return;
    }
    let mut buf = [0u8; 4096];
    while socket.can_recv() && socket.can_send() {
        let room = (socket.send_capacity() - socket.send_queue()).min(buf.len());
        let Ok(n) = socket.recv_slice(&mut buf[..room]) else { break };
        if n == 0 {
            break;
        }
        // `room` bytes fit: all of them are queued.
        let _ = socket.send_slice(&buf[..n]);
    }
    if !socket.may_recv() && socket.recv_queue() == 0 && socket.send_queue() == 0 {
        socket.close();
    }
}

impl Http {
    fn serve(&mut self, socket: &mut tcp::Socket, status: &impl Fn() -> String) {
        if !socket.is_open() {
            self.request.clear();
            self.response.clear();
            self.sent = 0;
            let _ = socket.listen(HTTP_PORT);
            return;
        }
        if connecting(socket) {
            return;
        }
        if self.response.is_empty() {
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = socket.recv_slice(&mut buf) {
                let keep = n.min(MAX_REQUEST_HEAD - self.request.len());
                self.request.extend_from_slice(&buf[..keep]);
            }
            self.response = match parse_http_request(&self.request) {
                HttpRequest::Incomplete if socket.may_recv() => return,
                HttpRequest::Incomplete | HttpRequest::Bad => {
                    response("400 Bad Request", "only GET and HEAD are served\n", false)
                }
                HttpRequest::Get { head, .. } => response("200 OK", &status(), head),
            };
        }
        while self.sent < self.response.len() {
            match socket.send_slice(&self.response[self.sent..]) {
                Ok(n @ 1..) => self.sent += n,
                _ => break,
            }
        }
        if self.sent == self.response.len() {
            // Connection: close; the socket listens again once the close completes.
            socket.close();
        }
    }
}

fn response(status: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = alloc::format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        r.push_str(body);
    }
    r.into_bytes()
}
