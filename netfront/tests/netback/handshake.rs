//! Connecting and closing through xenstore, and refusing what must be refused.

use netfront::DeviceError;
use netfront::{Features, NetError, Netfront, Offloads, Ports};

use crate::fake::{backend_path, frontend_path, Rig, MAC_BYTES, PORT, RING_SIZE, VIF};

const SECOND: u64 = 1_000_000_000;

fn key(rig: &Rig, k: &str) -> Option<String> {
    rig.store_get(&format!("{}/{k}", frontend_path()))
}

#[test]
fn handshake_publishes_rings_and_features_and_fills_the_rx_ring() {
    let (rig, net) = Rig::connected(&[]);
    assert_eq!(net.mac(), MAC_BYTES);
    assert_eq!(
        net.features(),
        Features {
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            ipv6_csum_offload: true,
            split_event_channels: true,
            max_queues: 2,
        }
    );
    // Split event channels, as Linux's netback offers them.
    assert_eq!(net.ports(), Ports { tx: PORT, rx: PORT + 1 });
    assert_eq!(key(&rig, "event-channel-tx").as_deref(), Some("7"));
    assert_eq!(key(&rig, "event-channel-rx").as_deref(), Some("8"));
    assert_eq!(key(&rig, "event-channel"), None);
    for (k, v) in [
        ("request-rx-copy", "1"),
        ("feature-rx-notify", "1"),
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"),
        ("feature-no-csum-offload", "0"),
        ("state", "4"),
    ] {
        assert_eq!(key(&rig, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(net.offloads(), Offloads { csum: true, gso: true });
    assert_eq!(rig.store_get(&format!("{}/state", backend_path())).as_deref(), Some("4"));
    // The ring refs name writable grants of two distinct pages.
    let w = rig.w();
    let tx: u32 = key(&rig, "tx-ring-ref").unwrap().parse().unwrap();
    let rx: u32 = key(&rig, "rx-ring-ref").unwrap().parse().unwrap();
    assert_ne!(tx, rx);
    assert!(!w.table.grants[&tx].readonly && !w.table.grants[&rx].readonly);
    // Every receive slot holds a posted, zeroed, writable buffer; the backend was told.
    assert_eq!(net.rx_posted(), RING_SIZE);
    assert_eq!(w.rx_available() as usize, RING_SIZE);
    assert_eq!(w.table.grants.len(), 2 + RING_SIZE);
    assert_eq!(w.pages_out(), 2 + RING_SIZE);
    assert_eq!(w.ports.notifies.get(&(PORT + 1)), Some(&1));
    assert_eq!(w.ports.notifies.get(&PORT), None);
    assert_eq!(net.stats(), Default::default());
}

#[test]
fn offloads_follow_what_we_ask_and_what_the_backend_offers() {
    // None asked: the keys say we take neither blank checksums nor large segments.
    let mut rig = Rig::new(&[]);
    let env = rig.env();
    let net =
        Netfront::connect_with(&mut rig.xs, VIF, env.clone(), env, SECOND, Offloads::NONE).unwrap();
    assert_eq!(net.offloads(), Offloads::NONE);
    assert_eq!(key(&rig, "feature-gso-tcpv4").as_deref(), Some("0"));
    assert_eq!(key(&rig, "feature-no-csum-offload").as_deref(), Some("1"));
    // Checksums only: no GSO either way (a large segment is sent with a blank checksum).
    let mut rig = Rig::new(&[]);
    let env = rig.env();
    let csum = Offloads { csum: true, gso: false };
    let net = Netfront::connect_with(&mut rig.xs, VIF, env.clone(), env, SECOND, csum).unwrap();
    assert_eq!(net.offloads(), csum);
    assert_eq!(key(&rig, "feature-gso-tcpv4").as_deref(), Some("0"));
    assert_eq!(key(&rig, "feature-no-csum-offload").as_deref(), Some("0"));
    // A backend without GSO, or without scatter-gather, gets no large segments; we still
    // take them (the keys are ours).
    for missing in ["feature-gso-tcpv4", "feature-sg"] {
        let (rig, net) = Rig::connected(&[(missing, "0")]);
        assert_eq!(net.offloads(), Offloads { csum: true, gso: false }, "{missing}");
        assert_eq!(key(&rig, "feature-gso-tcpv4").as_deref(), Some("1"));
    }
}

#[test]
fn one_event_channel_without_split_channels() {
    let (rig, net) = Rig::connected(&[("feature-split-event-channels", "-")]);
    assert_eq!(net.ports(), Ports { tx: PORT, rx: PORT });
    assert_eq!(key(&rig, "event-channel").as_deref(), Some("7"));
    assert_eq!(key(&rig, "event-channel-tx"), None);
    assert!(!net.features().split_event_channels);
    assert_eq!(rig.w().ports.notifies(PORT), 1);
}

#[test]
fn one_event_channel_when_the_guest_has_only_one() {
    let mut rig = Rig::new(&[]);
    rig.w().ports.limit = 1;
    let net = rig.connect().unwrap();
    assert_eq!(net.ports(), Ports { tx: PORT, rx: PORT });
    assert_eq!(key(&rig, "event-channel").as_deref(), Some("7"));
}

#[test]
fn keys_are_written_in_one_transaction() {
    let (rig, _net) = Rig::connected(&[]);
    let s = rig.store.lock().unwrap();
    let in_tx: Vec<_> = s
        .requests
        .iter()
        .filter(|h| h.ty == xenbus::XsType::Write as u32 && h.tx_id != 0)
        .map(|h| h.tx_id)
        .collect();
    // Two ring refs, two ports, five features; the state write outside.
    assert_eq!(in_tx.len(), 9);
    assert!(in_tx.iter().all(|&t| t == in_tx[0]));
    assert_eq!(s.count(xenbus::XsType::TransactionEnd), 1);
}

/// Connects, expecting a refusal; checks everything was handed back.
fn refused(rig: &mut Rig) -> NetError {
    let err = rig.connect().err().expect("handshake should fail");
    let w = rig.w();
    assert!(w.table.grants.is_empty(), "nothing left granted");
    assert_eq!(w.pages_out(), 0, "nothing left allocated");
    let mut closed = w.ports.closed.clone();
    closed.sort();
    assert_eq!(closed, w.ports.allocated, "every port closed");
    err
}

#[test]
fn a_backend_without_rx_copy_is_refused() {
    for value in ["-", "0"] {
        let mut rig = Rig::new(&[("feature-rx-copy", value)]);
        let e = refused(&mut rig);
        assert_eq!(e, NetError::Device(DeviceError::MissingFeature("feature-rx-copy")));
        assert!(e.to_string().contains("feature-rx-copy"), "{e}");
        // Refused before anything was set up or published.
        assert_eq!(rig.w().ports.allocated, Vec::<u32>::new());
        assert_eq!(key(&rig, "tx-ring-ref"), None);
    }
}

#[test]
fn a_missing_or_bad_mac_is_refused() {
    for mac in [None, Some("00:16:3e:5a:0b"), Some("01:00:5e:00:00:01"), Some("zz:16:3e:5a:0b:1c")]
    {
        let mut rig = Rig::new(&[]);
        {
            let mut s = rig.store.lock().unwrap();
            let path = format!("{}/mac", frontend_path());
            match mac {
                None => s.remove(&path),
                Some(m) => s.set(&path, m.as_bytes()),
            }
        }
        assert_eq!(refused(&mut rig), NetError::BadMac, "{mac:?}");
    }
}

#[test]
fn bad_backend_values_are_refused() {
    for (k, v) in [
        ("feature-sg", "2"),
        ("feature-rx-copy", "yes"),
        ("feature-split-event-channels", "-1"),
        ("multi-queue-max-queues", "0"),
        ("multi-queue-max-queues", "100000"),
        ("multi-queue-max-queues", "x"),
    ] {
        let mut rig = Rig::new(&[(k, v)]);
        match refused(&mut rig) {
            NetError::Device(DeviceError::BadBackendValue { key, .. }) => {
                assert_eq!(key, k, "{k}={v}")
            }
            e => panic!("{k}={v}: {e:?}"),
        }
    }
}

#[test]
fn a_backend_that_closes_instead_of_connecting_is_refused() {
    let mut rig = Rig::new(&[]);
    rig.w().refuse_connect = true;
    assert_eq!(refused(&mut rig), NetError::Device(DeviceError::BackendClosed));
    assert_eq!(key(&rig, "state").as_deref(), Some("5"));
}

#[test]
fn a_backend_that_never_connects_times_out() {
    let mut rig = Rig::new(&[]);
    {
        // The backend reaches InitWait and stops there.
        let mut s = rig.store.lock().unwrap();
        s.on_idle = None;
        for (k, v) in crate::fake::features(&[]) {
            s.set(&format!("{}/{k}", backend_path()), v.as_bytes());
        }
        s.set(&format!("{}/state", backend_path()), b"2");
    }
    assert_eq!(refused(&mut rig), NetError::Device(DeviceError::Xenstore(xenbus::Error::Timeout)));
}

#[test]
fn running_out_of_memory_for_the_rings_is_refused() {
    for limit in [0, 1] {
        let mut rig = Rig::new(&[]);
        rig.w().table.page_limit = limit;
        assert_eq!(refused(&mut rig), NetError::Device(DeviceError::NoMemory));
    }
}

#[test]
fn close_returns_everything() {
    let (mut rig, mut net) = Rig::connected(&[]);
    // Some traffic, and a frame left in flight.
    net.send(&crate::fake::frame(100, 1)).unwrap();
    rig.w().serve();
    net.poll();
    rig.w().hold_tx = true;
    net.send(&crate::fake::frame(5000, 2)).unwrap();
    assert_eq!(net.tx_in_flight(), 2);
    assert_eq!(net.close(&mut rig.xs, SECOND), Ok(()));
    assert_eq!(key(&rig, "state").as_deref(), Some("6"));
    assert_eq!(rig.store_get(&format!("{}/state", backend_path())).as_deref(), Some("6"));
    let w = rig.w();
    assert!(w.table.grants.is_empty(), "every grant ended");
    assert_eq!(w.pages_out(), 0, "every page returned");
    assert_eq!(w.table.rings_freed, 2);
    assert_eq!(w.ports.closed, [PORT, PORT + 1]);
}

#[test]
fn reconnecting_after_close_works() {
    let (mut rig, net) = Rig::connected(&[]);
    net.close(&mut rig.xs, SECOND).unwrap();
    // The ports start over in the fake.
    rig.w().ports.allocated.clear();
    rig.w().ports.closed.clear();
    let mut net = rig.connect().expect("second handshake");
    assert_eq!(net.rx_posted(), RING_SIZE);
    net.send(&crate::fake::frame(60, 3)).unwrap();
    rig.w().serve();
    assert_eq!(rig.w().sent.pop_front(), Some(crate::fake::frame(60, 3)));
}
