//! What the guest answers on the network: UDP and TCP echo on port 7 (RFC 862), HTTP on
//! port 80, whose every path shows the status page, and the far end of the network
//! benchmarks that dom0 runs (`rig/netbench.c`): a sink on port 5001 that replies with the
//! byte count it received, and a source on port 5002 that sends as many zeros as asked.
//! ICMP echo replies are smoltcp's own.

use super::wire::{
    parse_http_request, parse_source_request, HttpRequest, SourceRequest, MAX_REQUEST_HEAD,
    MAX_SOURCE_REQUEST,
};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};

const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 80;
const SINK_PORT: u16 = 5001;
const SOURCE_PORT: u16 = 5002;
/// The benchmark sockets' bulk direction, each: a sixty-fourth of the memory, between these.
/// The window must cover what is in flight: at the rig's 50 MiB/s and round trips of 1-10 ms
/// that is up to 512 KiB, so a guest with the memory gets twice that (in alternated runs of
/// one boot, 1 MiB against 256 KiB sent a median 50.4 against 44.1 MiB/s, received 79.8 against
/// 76.6); a small guest keeps what it always had. smoltcp scales the window to the buffer.
const BULK_BUFFER_MIN: usize = 256 * 1024;
const BULK_BUFFER_MAX: usize = 1024 * 1024;

fn bulk_buffer() -> usize {
    let (_, frames) = crate::mm::frame_stats();
    (frames as usize * crate::arch::PAGE_SIZE as usize / 64).clamp(BULK_BUFFER_MIN, BULK_BUFFER_MAX)
}
/// Their other direction carries a count line at most.
const LINE_BUFFER: usize = 64;
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

/// The benchmark sink's connection: bytes counted so far, and whether the count went back.
struct Sink {
    handle: SocketHandle,
    received: u64,
    replied: bool,
}

/// The benchmark source's connection.
enum Source {
    /// The request line so far.
    Reading(Vec<u8>),
    /// Zeros left to queue, of how many asked.
    Sending { asked: u64, left: u64 },
    /// Everything queued (or the request refused): the socket is closing.
    Done,
}

pub struct Services {
    udp_echo: SocketHandle,
    tcp_echo: [SocketHandle; CONNECTIONS],
    http: [Http; CONNECTIONS],
    sink: Sink,
    source: (SocketHandle, Source),
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp_socket_of(TCP_BUFFER, TCP_BUFFER)
}

fn tcp_socket_of(rx: usize, tx: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; rx]), tcp::SocketBuffer::new(vec![0; tx]))
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
        let bulk = bulk_buffer();
        let sink = Sink {
            handle: sockets.add(tcp_socket_of(bulk, LINE_BUFFER)),
            received: 0,
            replied: false,
        };
        let source = (sockets.add(tcp_socket_of(LINE_BUFFER, bulk)), Source::Reading(Vec::new()));
        Services { udp_echo, tcp_echo, http, sink, source }
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
        self.sink.serve(sockets.get_mut(self.sink.handle));
        self.source.1.serve(sockets.get_mut(self.source.0));
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

/// Listens on `port` (ours: cannot fail); a peer that stops acknowledging for a minute loses
/// the connection, so one dead client cannot hold the benchmark port for ever.
fn listen_bounded(socket: &mut tcp::Socket, port: u16) {
    socket.set_timeout(Some(smoltcp::time::Duration::from_secs(60)));
    let _ = socket.listen(port);
}

/// Who is connected, for the far end's log line.
fn peer(socket: &tcp::Socket) -> alloc::string::String {
    socket.remote_endpoint().map_or_else(|| "?".into(), |e| alloc::format!("{}", e.addr))
}

impl Sink {
    /// Counts what arrives without copying it; once the peer has closed and everything is
    /// counted, replies `<count>\n` and closes. The count is the far end's half of the
    /// benchmark's evidence: dom0 compares it with what it sent.
    fn serve(&mut self, socket: &mut tcp::Socket) {
        if !socket.is_open() {
            self.received = 0;
            self.replied = false;
            listen_bounded(socket, SINK_PORT);
            return;
        }
        if connecting(socket) || self.replied {
            return;
        }
        while let Ok(n @ 1..) = socket.recv(|b| (b.len(), b.len())) {
            self.received += n as u64;
        }
        if !socket.may_recv() && socket.recv_queue() == 0 {
            let line = alloc::format!("{}\n", self.received);
            // A fresh connection's send buffer (LINE_BUFFER) holds the line.
            let _ = socket.send_slice(line.as_bytes());
            socket.close();
            self.replied = true;
            crate::println!(
                "netbench: sink: received {} bytes from {}",
                self.received,
                peer(socket)
            );
        }
    }
}

impl Source {
    /// Reads the request line, then keeps the send buffer full of zeros until the count is
    /// queued, and closes (the FIN follows the last byte).
    fn serve(&mut self, socket: &mut tcp::Socket) {
        if !socket.is_open() {
            *self = Source::Reading(Vec::new());
            listen_bounded(socket, SOURCE_PORT);
            return;
        }
        if connecting(socket) {
            return;
        }
        if let Source::Reading(request) = self {
            let mut buf = [0u8; MAX_SOURCE_REQUEST];
            while let Ok(n @ 1..) = socket.recv_slice(&mut buf) {
                let keep = n.min(MAX_SOURCE_REQUEST - request.len());
                request.extend_from_slice(&buf[..keep]);
            }
            *self = match parse_source_request(request) {
                SourceRequest::Incomplete if socket.may_recv() => return,
                SourceRequest::Incomplete => {
                    socket.close();
                    Source::Done
                }
                SourceRequest::Bad(why) => {
                    crate::println!(
                        "netbench: source: refused request from {}: {why}",
                        peer(socket)
                    );
                    socket.abort();
                    Source::Done
                }
                SourceRequest::Bytes(n) => Source::Sending { asked: n, left: n },
            };
        }
        let Source::Sending { asked, left } = self else { return };
        while *left > 0 {
            let want = usize::try_from(*left).unwrap_or(usize::MAX);
            match socket.send(|b| {
                let n = b.len().min(want);
                b[..n].fill(0);
                (n, n)
            }) {
                Ok(n @ 1..) => *left -= n as u64,
                _ => break,
            }
        }
        if *left == 0 {
            socket.close();
            crate::println!("netbench: source: sent {asked} bytes to {}", peer(socket));
            *self = Source::Done;
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
