//! Connecting and closing through xenstore, and refusing what a backend must not claim.

use blkfront::abi::{Op, VdiskInfo};
use blkfront::DeviceError;
use blkfront::{BlkError, BlockDevice, Features, Request};

use crate::fake::{backend_path, frontend_path, Rig, PORT};

const SECOND: u64 = 1_000_000_000;

#[test]
fn handshake_reaches_connected_with_features() {
    let (rig, blk) = Rig::connected(&[
        ("sectors", "8192"),
        ("sector-size", "4096"),
        ("physical-sector-size", "4096"),
        ("info", "2"),
        ("feature-barrier", "1"),
        ("feature-max-indirect-segments", "256"),
        ("feature-persistent", "1"),
    ]);
    let info = blk.info();
    assert_eq!((info.sectors, info.sector_size, info.physical_sector_size), (8192, 4096, 4096));
    assert_eq!(info.flags, VdiskInfo::REMOVABLE);
    assert_eq!(
        info.features,
        Features {
            flush_cache: true,
            barrier: true,
            discard: true,
            max_indirect_segments: 256,
            persistent: true,
            max_ring_page_order: 4,
        }
    );
    assert_eq!(blk.port(), PORT);
    assert_eq!(blk.device().backend, backend_path());
    let fe = frontend_path();
    assert_eq!(rig.store_get(&format!("{fe}/state")).as_deref(), Some("4"));
    assert_eq!(rig.store_get(&format!("{}/state", backend_path())).as_deref(), Some("4"));
    assert_eq!(rig.store_get(&format!("{fe}/event-channel")).as_deref(), Some("7"));
    assert_eq!(rig.store_get(&format!("{fe}/protocol")).as_deref(), Some("x86_64-abi"));
    // The ring-ref names the one grant that exists: the ring page, writable, to dom0.
    let ring_ref: u32 = rig.store_get(&format!("{fe}/ring-ref")).unwrap().parse().unwrap();
    assert_eq!(rig.w().table.grants.keys().copied().collect::<Vec<_>>(), [ring_ref]);
}

#[test]
fn ring_keys_are_written_in_one_transaction() {
    let (rig, _blk) = Rig::connected(&[]);
    let s = rig.store.lock().unwrap();
    let writes: Vec<_> = s
        .requests
        .iter()
        .filter(|h| h.ty == xenbus::XsType::Write as u32)
        .map(|h| h.tx_id)
        .collect();
    // ring-ref, event-channel, protocol, feature-persistent in a transaction; the state
    // writes outside.
    assert_eq!(writes.iter().filter(|&&t| t != 0).count(), 4);
    assert!(writes.iter().filter(|&&t| t != 0).all(|&t| t == writes[0]));
    assert_eq!(s.count(xenbus::XsType::TransactionEnd), 1);
}

fn refused(extra: &[(&str, &str)]) -> BlkError {
    let mut rig = Rig::new(extra);
    let err = rig.connect().err().expect("handshake should fail");
    // Everything handed back, nothing left granted or allocated, and the backend told.
    let w = rig.w();
    assert!((w.table.rings_freed > 0) && w.ports.is_closed(PORT));
    assert!(w.table.grants.is_empty());
    assert_eq!(w.pages_out(), 0);
    drop(w);
    assert_eq!(rig.store_get(&format!("{}/state", frontend_path())).as_deref(), Some("5"));
    err
}

#[test]
fn bad_backend_values_are_errors() {
    let bad = |key, value| match refused(&[(key, value)]) {
        BlkError::Device(DeviceError::BadBackendValue { key: k, .. }) => {
            assert_eq!(k, key, "{key}={value}")
        }
        e => panic!("{key}={value}: {e:?}"),
    };
    bad("sectors", "abc");
    bad("sectors", "");
    bad("sectors", "36028797018963968");
    bad("sector-size", "0");
    bad("sector-size", "3000");
    bad("sector-size", "8192");
    bad("sector-size", "-");
    bad("physical-sector-size", "1000");
    bad("info", "x");
    bad("feature-flush-cache", "7");
    // Printable for the guest's log.
    let e = refused(&[("sector-size", "3000")]);
    assert!(e.to_string().contains("sector-size"), "{e}");
}

#[test]
fn backend_that_never_connects_times_out() {
    let mut rig = Rig::new(&[]);
    // The backend reaches InitWait and stops there.
    {
        let mut s = rig.store.lock().unwrap();
        s.on_idle = None;
        s.set(&format!("{}/state", backend_path()), b"2");
    }
    assert_eq!(
        rig.connect().err(),
        Some(BlkError::Device(DeviceError::Xenstore(xenbus::Error::Timeout)))
    );
    assert!(rig.w().table.rings_freed > 0);
}

#[test]
fn a_closed_backend_that_never_comes_back_is_an_error() {
    let mut rig = Rig::new(&[]);
    {
        let mut s = rig.store.lock().unwrap();
        s.on_idle = None;
        s.set(&format!("{}/state", backend_path()), b"6");
    }
    // We go through Closed and Initialising again; a backend that stays Closed never
    // offers a new handshake.
    assert_eq!(
        rig.connect().err(),
        Some(BlkError::Device(DeviceError::Xenstore(xenbus::Error::Timeout)))
    );
    let store = rig.store.lock().unwrap();
    let ours = store.get(&format!("{}/state", frontend_path()));
    assert_eq!(ours.map(|v| v.to_vec()), Some(b"1".to_vec()), "left Initialising for the next try");
}

#[test]
fn missing_device_times_out() {
    let mut rig = Rig::new(&[]);
    rig.store.lock().unwrap().remove(&frontend_path());
    assert_eq!(
        rig.connect().err(),
        Some(BlkError::Device(DeviceError::Xenstore(xenbus::Error::Timeout)))
    );
}

#[test]
fn close_fails_outstanding_requests_and_returns_everything() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    let mut buf = vec![0; 8192];
    blk.read(0, &mut buf).unwrap();
    rig.w().hold = true;
    let a = blk.submit(Request::Read { sector: 0, len: 4096 }).unwrap();
    let b = blk.submit(Request::Write { sector: 8, data: vec![1; 512] }).unwrap();
    assert_eq!(blk.in_flight(), 2);
    let (result, failed) = blk.close(&mut rig.xs, SECOND);
    assert_eq!(result, Ok(()));
    assert_eq!(
        failed.iter().map(|c| (c.id, c.result)).collect::<Vec<_>>(),
        [
            (a, Err(BlkError::Device(DeviceError::NotConnected))),
            (b, Err(BlkError::Device(DeviceError::NotConnected)))
        ]
    );
    let fe = frontend_path();
    assert_eq!(rig.store_get(&format!("{fe}/state")).as_deref(), Some("6"));
    assert_eq!(rig.store_get(&format!("{}/state", backend_path())).as_deref(), Some("6"));
    let w = rig.w();
    assert!(w.table.grants.is_empty(), "every grant ended");
    assert_eq!(w.pages_out(), 0, "every page returned");
    assert!((w.table.rings_freed > 0) && w.ports.is_closed(PORT));
    // The write never reached the disk.
    assert!(w.requests.iter().all(|r| r.operation == Op::Read as u8));
}

/// `xl block-detach` in the middle of I/O: the toolstack sets the backend Closing while
/// requests are in flight and the guest's watch reports it. The requests fail with
/// BackendClosed, as does every later one, the grants end (the backend let go of the
/// pages), and the close handshake the toolstack waits for completes.
#[test]
fn detach_in_the_middle_of_io_fails_requests_and_closes() {
    let (mut rig, mut blk) = Rig::connected(&[]);
    rig.w().hold = true;
    let a = blk.submit(Request::Write { sector: 0, data: vec![7; 8192] }).unwrap();
    assert_eq!(blk.in_flight(), 1);
    let be_state = format!("{}/state", backend_path());
    rig.store.lock().unwrap().set(&be_state, b"5");
    rig.w().ports.backend_closing = true;
    let mut buf = vec![0; 4096];
    assert_eq!(blk.read(0, &mut buf), Err(BlkError::Device(DeviceError::BackendClosed)));
    let c = blk.take_completion_of(a).expect("the write failed too");
    assert_eq!(
        (c.result, c.data),
        (Err(BlkError::Device(DeviceError::BackendClosed)), vec![7; 8192])
    );
    assert_eq!(
        blk.submit(Request::Flush).err(),
        Some(BlkError::Device(DeviceError::BackendClosed))
    );
    assert_eq!(blk.stopped(), Some(BlkError::Device(DeviceError::BackendClosed)));
    assert_eq!((blk.in_flight(), blk.outstanding()), (0, 0));
    assert_eq!(rig.w().table.grants.len(), 1, "only the ring's grant is left");
    let (result, failed) = blk.close(&mut rig.xs, SECOND);
    assert_eq!(result, Ok(()));
    assert!(failed.is_empty());
    assert_eq!(rig.store_get(&format!("{}/state", frontend_path())).as_deref(), Some("6"));
    assert_eq!(rig.store_get(&be_state).as_deref(), Some("6"));
    let w = rig.w();
    assert!(
        w.table.grants.is_empty()
            && w.pages_out() == 0
            && (w.table.rings_freed > 0)
            && w.ports.is_closed(PORT)
    );
    assert_ne!(w.disk[..8192], [7; 8192][..], "the held write never reached the disk");
}
