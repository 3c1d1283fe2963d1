//! After a restore or migration into a new domain: the old backend, its mappings and the
//! event channels are gone and a fresh backend waits. The driver reconnects on new rings,
//! drops what was in flight (as a wire would), fills the receive ring and goes on, with the
//! MAC and features of the new domain.

use netfront::{NetError, Ports};

use crate::fake::{frame, Driver, Rig, RxFrame, MAC_BYTES, PORT, RING_SIZE};

const SECOND: u64 = 1_000_000_000;

fn reconnect(rig: &mut Rig, net: &mut Driver) -> Result<(), NetError> {
    let env = rig.env();
    net.reconnect(&mut rig.xs, env, SECOND)
}

#[test]
fn frames_flow_again_on_new_rings_and_ports() {
    let (mut rig, mut net) = Rig::connected(&[]);
    rig.w().hold_tx = true;
    for seed in 0..3 {
        net.send(&frame(1514, seed)).unwrap();
    }
    assert_eq!(net.tx_in_flight(), 3);
    rig.new_domain(&[]);
    reconnect(&mut rig, &mut net).unwrap();
    assert_eq!(net.tx_in_flight(), 0, "frames in flight were dropped");
    assert_eq!(net.ports(), Ports { tx: PORT + 2, rx: PORT + 3 });
    assert_eq!(net.rx_posted(), RING_SIZE);
    assert!(!net.is_broken());
    {
        let w = rig.w();
        assert_eq!(w.table.rings_freed, 2, "both old rings went back to the guest");
        // The new rings and a full receive ring: nothing of the old connection granted.
        assert_eq!(w.table.grants.len(), 2 + RING_SIZE);
        assert_eq!(w.rx_available() as usize, RING_SIZE);
        assert_eq!(w.ports.notifies(PORT + 3), 1, "the new receive ring's fill was told");
    }
    rig.w().hold_tx = false;
    net.send(&frame(600, 9)).unwrap();
    rig.w().serve();
    assert_eq!(rig.w().sent.pop_front(), Some(frame(600, 9)));
    rig.w().deliver(RxFrame::new(frame(900, 4)));
    assert_eq!(net.recv(), Some(frame(900, 4)));
    net.close(&mut rig.xs, SECOND).unwrap();
    assert_eq!(rig.w().pages_out(), 0, "nothing of either connection pinned");
}

#[test]
fn the_new_domains_mac_and_features_are_taken() {
    let (mut rig, mut net) = Rig::connected(&[]);
    assert_eq!(net.mac(), MAC_BYTES);
    rig.new_domain(&[("mac", "00:16:3e:00:00:99"), ("feature-split-event-channels", "-")]);
    reconnect(&mut rig, &mut net).unwrap();
    assert_eq!(net.mac(), [0, 0x16, 0x3e, 0, 0, 0x99]);
    assert!(!net.features().split_event_channels);
    assert_eq!(net.ports(), Ports { tx: PORT + 2, rx: PORT + 2 });
}

#[test]
fn a_reconnect_that_fails_leaves_the_device_stopped() {
    let (mut rig, mut net) = Rig::connected(&[]);
    rig.new_domain(&[("feature-rx-copy", "-")]);
    assert!(reconnect(&mut rig, &mut net).is_err());
    assert!(net.is_broken());
    assert!(net.send(&frame(100, 1)).is_err());
    let _ = net.close(&mut rig.xs, SECOND);
    assert_eq!(rig.w().pages_out(), 0);
}

#[test]
fn a_device_broken_before_the_suspend_works_again() {
    let (mut rig, mut net) = Rig::connected(&[]);
    // A runaway rsp_prod breaks the device.
    rig.w().set_tx_rsp_prod(1000);
    net.poll();
    assert!(net.is_broken());
    rig.new_domain(&[]);
    reconnect(&mut rig, &mut net).unwrap();
    assert!(!net.is_broken());
    net.send(&frame(60, 2)).unwrap();
    rig.w().serve();
    assert_eq!(rig.w().sent.pop_front(), Some(frame(60, 2)));
}
