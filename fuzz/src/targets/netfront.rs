//! netfront's ring consumers against a netback that lies, on both rings: transmit responses
//! with any id and status, receive responses with any id, offset, flags and length, extra-info
//! slots of any type and chain, data written into the buffers or not, `rsp_prod`s anywhere,
//! grants kept mapped; between them the driver polls, sends and receives, and takes TCP
//! segments and other frames from its stack's side (smoltcp's transmit token), which it
//! joins into large segments with a GSO slot (answered `NETIF_RSP_NULL` by an honest
//! backend, with any id by a lying one) and sends with blank checksums.

use netfront::abi::{NetifExtraInfo, NetifRxResponse, NetifTxResponse, RxFlags};
use netfront::abi::{RSP_DROPPED, RSP_ERROR, RSP_NULL, RSP_OKAY};

use smoltcp::phy::{Device, TxToken};
use smoltcp::time::Instant;

use crate::input::{Input, Script};
use crate::netback::{frame, Rig, RxFrame};

/// Backend features withdrawn, one bit of the first byte each.
const WITHOUT: &[(&str, &str)] = &[
    ("feature-sg", "-"),
    ("feature-split-event-channels", "-"),
    ("feature-gso-tcpv4", "-"),
    ("feature-rx-copy", "-"),
];

/// 4 KiB pages.
const PAGE: u16 = 4096;

fn tx_status(input: &mut Input) -> i16 {
    match input.u8() % 6 {
        0 | 1 => RSP_OKAY,
        2 => RSP_ERROR,
        3 => RSP_DROPPED,
        4 => RSP_NULL,
        _ => input.u16() as i16,
    }
}

fn rx_status(input: &mut Input) -> i16 {
    match input.u8() % 4 {
        0 | 1 => (input.u16() % (PAGE + 1)) as i16,
        2 => input.pick(&[RSP_ERROR, RSP_DROPPED, RSP_NULL, RSP_OKAY]),
        _ => input.u16() as i16,
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let bits = input.u8();
    let extra: Vec<(&str, &str)> =
        WITHOUT.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, k)| *k).collect();
    let mut rig = Rig::new(&extra);
    // Without the features netfront requires, refusing to connect is the right outcome.
    let Ok(mut net) = rig.connect() else { return };
    rig.w().hold_tx = true;
    let mut tx_ids: Vec<u16> = Vec::new();
    let mut rx_taken = Vec::new();
    // Responses written since the connection: the true `rsp_prod`s, for lies close to them.
    let (mut tx_produced, mut rx_produced) = (0u32, 0u32);
    let near = |input: &mut Input, produced: u32| match input.u8() % 3 {
        0 => produced.wrapping_add(i32::from(input.u8() as i8) as u32),
        1 => produced.wrapping_add(u32::from(input.u16())),
        _ => input.u32(),
    };
    let mut lied = false;
    // The next sequence number of the stream the stack sends.
    let mut seq = 1u32;
    while !input.is_empty() {
        let op = input.u8() % 16;
        lied |= matches!(op, 2 | 4 | 6 | 7 | 8 | 10 | 12);
        match op {
            0 => {
                let len = usize::from(input.u16() % 9000);
                let _ = net.send(&frame(len, input.u8()));
            }
            1 => tx_ids.extend(rig.w().take_tx().iter().map(|r| r.id)),
            2 => {
                let id = match tx_ids.len() {
                    n if n > 0 && input.bool() => tx_ids[usize::from(input.u8()) % n],
                    _ => input.u16(),
                };
                let status = tx_status(&mut input);
                rig.w().respond_tx(NetifTxResponse { id, status });
                tx_produced = tx_produced.wrapping_add(1);
            }
            3 => rig.w().publish_tx(),
            4 => {
                let v = near(&mut input, tx_produced);
                rig.w().set_tx_rsp_prod(v);
            }
            5 => rx_taken.extend(rig.w().take_rx()),
            // Data into a posted buffer the backend still holds a grant to. The request
            // may be stale, its reference since ended and granted again for a transmit
            // (read-only): Xen would refuse that copy, and so does this backend.
            6 if !rx_taken.is_empty() => {
                let req = rx_taken[usize::from(input.u8()) % rx_taken.len()];
                let offset = usize::from(input.u16() % PAGE);
                let data = input.chunk();
                let mut w = rig.w();
                if w.table.grants.get(&req.gref.0).is_some_and(|g| !g.readonly) {
                    let n = data.len().min(usize::from(PAGE) - offset);
                    w.write_rx(req.gref, offset, &data[..n]);
                }
            }
            7 => {
                let id = match rx_taken.len() {
                    n if n > 0 && input.bool() => rx_taken[usize::from(input.u8()) % n].id,
                    _ => input.u16(),
                };
                let offset = if input.bool() { input.u16() } else { input.u16() % PAGE };
                let flags = RxFlags::from_bits_retain(input.u16()).bits();
                let status = rx_status(&mut input);
                rig.w().respond_rx(NetifRxResponse { id, offset, flags, status });
                rx_produced = rx_produced.wrapping_add(1);
            }
            8 => {
                let raw = NetifExtraInfo {
                    ty: input.u8() % 7,
                    flags: input.u8() % 4,
                    u: [input.u16(), input.u16(), input.u16()],
                };
                rig.w().respond_rx_extra(raw);
                rx_produced = rx_produced.wrapping_add(1);
            }
            9 => rig.w().publish_rx(),
            10 => {
                let v = near(&mut input, rx_produced);
                rig.w().set_rx_rsp_prod(v);
            }
            11 => {
                net.poll();
                while net.recv().is_some() {}
            }
            // The backend keeps a buffer's page mapped.
            12 if !rx_taken.is_empty() => {
                let req = rx_taken[usize::from(input.u8()) % rx_taken.len()];
                rig.w().table.held.insert(req.gref.0);
            }
            // A frame from the stack: mostly the next TCP segment of one stream (a run to
            // join), sometimes one out of line, or a frame of the test pattern.
            14 => {
                let f = match input.u8() % 4 {
                    0 => frame(60 + usize::from(input.u16() % 1455), input.u8()),
                    1 => tcp_segment(input.u32(), usize::from(input.u16() % 1461), input.u8()),
                    _ => {
                        let len = if input.bool() { 1460 } else { usize::from(input.u16() % 1461) };
                        let flags = if input.u8().is_multiple_of(8) { 0x18 } else { 0x10 };
                        let f = tcp_segment(seq, len, flags);
                        seq = seq.wrapping_add(len as u32);
                        f
                    }
                };
                if let Some(tx) = net.transmit(Instant::from_millis(0)) {
                    tx.consume(f.len(), |buf| buf.copy_from_slice(&f));
                }
            }
            15 => net.flush(),
            // An honest stretch: a frame delivered and transmits answered. Only before any
            // lie: the fake netback serves requests by grants it expects to exist, and a lie
            // rightly makes the driver end some (a response to a buffer not yet taken).
            _ if lied => {}
            _ => {
                let len = 14 + usize::from(input.u16() % 9000);
                let chunk = 1 + usize::from(input.u16());
                let mut w = rig.w();
                w.to_guest.push_back(RxFrame { chunk, ..RxFrame::new(frame(len, 7)) });
                rx_produced = rx_produced.wrapping_add(w.serve_rx() as u32);
                w.hold_tx = false;
                tx_produced = tx_produced.wrapping_add(w.serve_tx() as u32);
                w.hold_tx = true;
            }
        }
    }
    net.poll();
    while net.recv().is_some() {}
    let _ = net.close(&mut rig.xs, 1_000_000);
}

/// A TCP segment over IPv4 as smoltcp leaves it for checksum offload: its checksum zero.
fn tcp_segment(seq: u32, len: usize, flags: u8) -> Vec<u8> {
    let mut f = vec![0x00, 0x16, 0x3e, 0, 0, 1, 0x00, 0x16, 0x3e, 0x5a, 0x0b, 0x1c, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((40 + len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 169, 254, 0, 2, 169, 254, 0, 1]);
    f.extend_from_slice(&[0xc0, 0x00, 0x00, 0x07]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..len).map(|i| (seq as usize + i) as u8));
    f
}

pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        // A frame received in one slot, then one sent and acknowledged.
        Script::default()
            .u8(0)
            .bytes(&[5, 6, 0])
            .u16(0)
            .chunk(&[0xab; 60])
            .bytes(&[7, 1, 0, 0])
            .u16(0)
            .u16(0)
            .bytes(&[0])
            .u16(60)
            .bytes(&[9, 11, 0])
            .u16(1500)
            .bytes(&[7, 1, 1, 0, 0, 0, 3, 11])
            .0,
        // A chain with an extra-info slot, then a runaway rx rsp_prod.
        Script::default()
            .u8(1)
            .bytes(&[5, 5, 7, 1, 0, 0])
            .u16(0)
            .u16(0)
            .u16(RxFlags::EXTRA_INFO.bits() | RxFlags::MORE_DATA.bits())
            .bytes(&[0])
            .u16(100)
            .bytes(&[8, 1, 0])
            .u16(1448)
            .u16(4)
            .u16(0)
            .bytes(&[7, 1, 1, 0, 0])
            .u16(0)
            .u16(0)
            .bytes(&[0])
            .u16(200)
            .bytes(&[9, 11, 10, 1])
            .u16(1000)
            .u8(11)
            .0,
        // A run of full segments from the stack, flushed, answered honestly (the GSO slot's
        // NULL response), then a lone frame.
        Script::default()
            .u8(0)
            .bytes(&[14, 2, 1, 1, 14, 2, 1, 1, 14, 2, 1, 1, 14, 3, 1, 0, 15, 13])
            .u16(100)
            .u16(100)
            .bytes(&[14, 0])
            .u16(40)
            .u8(3)
            .bytes(&[15, 11])
            .0,
        // Honest traffic, then transmit lies.
        Script::default()
            .u8(0)
            .bytes(&[13])
            .u16(3000)
            .u16(1000)
            .bytes(&[0])
            .u16(100)
            .bytes(&[1, 1, 2, 1, 0, 2, 2, 0])
            .u16(999)
            .bytes(&[5, 3, 4, 2])
            .u32(77)
            .u8(11)
            .0,
    ]
}
