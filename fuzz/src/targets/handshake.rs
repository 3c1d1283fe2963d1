//! Both drivers' handshakes against a backend (and toolstack) that lies while they connect:
//! at every round of xenstored the script has the backend take any state, write any of the
//! keys the driver reads with any value (numbers out of range, negative, huge, empty, not
//! numbers), remove its directory, rewrite the frontend's `backend` keys, or do its honest
//! step. Whatever happened, the driver either connects (then one I/O and a close) or fails
//! cleanly: afterwards every page it took is back, every grant ended, every port closed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use blkfront::BlockDevice;

use crate::input::{Input, Script};
use crate::{blkback, netback};

/// Keys a backend writes that blkfront reads.
const BLK_KEYS: &[&str] = &[
    "sectors",
    "sector-size",
    "physical-sector-size",
    "info",
    "mode",
    "feature-flush-cache",
    "feature-barrier",
    "feature-discard",
    "discard-granularity",
    "discard-alignment",
    "feature-max-indirect-segments",
    "feature-persistent",
    "max-ring-page-order",
    "online",
];

/// Keys a backend writes that netfront reads.
const NET_KEYS: &[&str] = &[
    "feature-rx-copy",
    "feature-rx-flip",
    "feature-sg",
    "feature-gso-tcpv4",
    "feature-gso-tcpv6",
    "feature-split-event-channels",
    "multi-queue-max-queues",
    "feature-rx-notify",
    "online",
];

/// Keys of the frontend's directory the toolstack writes.
const FRONT_KEYS: &[&str] = &["backend", "backend-id", "mac"];

/// Values worth writing: the plausible, the edges, and garbage.
const VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "4",
    "8",
    "512",
    "4096",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "",
    " 1",
    "1x",
    "0x10",
    "00:16:3e:5a:0b:1c",
    "ff:ff:ff:ff:ff:ff",
    "/local/domain/0/backend/vbd/1/51712",
    "/local/domain/0/backend/vif/1/0",
    "/local/domain/7",
    "r",
    "w",
];

/// What the backend (or the toolstack) does at one idle round of xenstored.
enum Act {
    /// Its honest step (blkback's or netback's in the fakes).
    Honest,
    /// Nothing: the driver's wait runs to its deadline.
    Nothing,
    State(Vec<u8>),
    BackendKey(&'static str, Vec<u8>),
    FrontendKey(&'static str, Vec<u8>),
    RemoveBackend,
}

fn value(input: &mut Input) -> Vec<u8> {
    match input.u8() % 4 {
        0 => input.chunk().to_vec(),
        1 => input.u32().to_string().into_bytes(),
        _ => input.pick(VALUES).as_bytes().to_vec(),
    }
}

fn acts(input: &mut Input, keys: &'static [&'static str]) -> VecDeque<Act> {
    let mut acts = VecDeque::new();
    while !input.is_empty() && acts.len() < 64 {
        acts.push_back(match input.u8() % 8 {
            0 | 1 => Act::Honest,
            2 => Act::Nothing,
            3 => Act::State(match input.u8() % 3 {
                0 => input.chunk().to_vec(),
                _ => (input.u8() % 9).to_string().into_bytes(),
            }),
            4 | 5 => Act::BackendKey(input.pick(keys), value(input)),
            6 => Act::FrontendKey(input.pick(FRONT_KEYS), value(input)),
            _ => Act::RemoveBackend,
        });
    }
    acts
}

/// Replaces the backend's honest idle step in `store` by the script's acts, then the honest
/// step again once they run out.
fn script_backend(
    store: &mut xenbus::fake::Fake,
    frontend: String,
    backend: String,
    acts: VecDeque<Act>,
) {
    let honest = Rc::new(RefCell::new(store.on_idle.take().expect("the backend's handshake")));
    let acts = RefCell::new(acts);
    store.on_idle = Some(Box::new(move |fake| match acts.borrow_mut().pop_front() {
        None | Some(Act::Honest) => (honest.borrow_mut())(fake),
        Some(Act::Nothing) => false,
        Some(Act::State(v)) => {
            fake.set(&format!("{backend}/state"), &v);
            true
        }
        Some(Act::BackendKey(k, v)) => {
            fake.set(&format!("{backend}/{k}"), &v);
            true
        }
        Some(Act::FrontendKey(k, v)) => {
            fake.set(&format!("{frontend}/{k}"), &v);
            true
        }
        Some(Act::RemoveBackend) => {
            fake.remove(&backend);
            true
        }
    }));
}

/// What a driver must leave behind, connected or not, once it closed (or failed to
/// connect): nothing of the guest's. The backend in this target never holds a grant.
fn assert_clean(table: &frontend::fake::FakeGrantTable, ports: &frontend::fake::FakePorts) {
    assert!(table.grants.is_empty(), "{} grant(s) left active", table.grants.len());
    assert_eq!(table.pages_out(), 0, "pages not given back");
    assert!(ports.allocated.iter().all(|p| ports.is_closed(*p)), "a port left open");
}

/// A short deadline per wait: the fake clock advances to it at once when nothing happens.
const TIMEOUT_NS: u64 = 50_000;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    if input.bool() {
        // A small disk, as in the blkfront target: the default one took most of the time.
        let mut rig = blkback::Rig::new(&[("sectors", "256")]);
        {
            let mut store = rig.store.lock().unwrap();
            let acts = acts(&mut input, BLK_KEYS);
            script_backend(&mut store, blkback::frontend_path(), blkback::backend_path(), acts);
        }
        let env = frontend::fake::FakeEnv(rig.world.clone());
        if let Ok(mut blk) =
            blkfront::Blkfront::connect(&mut rig.xs, blkback::VBD, env.clone(), env, TIMEOUT_NS)
        {
            blk.set_timeout(TIMEOUT_NS);
            let mut buf = vec![0x5a; 4096];
            let _ = blk.write(0, &buf);
            let _ = blk.read(0, &mut buf);
            let (_, completions) = blk.close(&mut rig.xs, TIMEOUT_NS);
            drop(completions);
        }
        let w = rig.w();
        assert_clean(&w.table, &w.ports);
    } else {
        let mut rig = netback::Rig::new(&[]);
        {
            let mut store = rig.store.lock().unwrap();
            let acts = acts(&mut input, NET_KEYS);
            script_backend(&mut store, netback::frontend_path(), netback::backend_path(), acts);
        }
        let env = frontend::fake::FakeEnv(rig.world.clone());
        if let Ok(mut net) =
            netfront::Netfront::connect(&mut rig.xs, netback::VIF, env.clone(), env, TIMEOUT_NS)
        {
            let _ = net.send(&netback::frame(60, 1));
            rig.w().serve();
            net.poll();
            while net.recv().is_some() {}
            let _ = net.close(&mut rig.xs, TIMEOUT_NS);
        }
        let w = rig.w();
        assert_clean(&w.table, &w.ports);
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let honest = |blk: u8| Script::default().u8(blk).bytes(&[0; 16]).0;
    vec![
        honest(1),
        honest(0),
        // blkfront: a huge sector count, then honest.
        Script::default().u8(1).u8(4).u8(0).u8(2).u8(0).bytes(&[0; 8]).0,
        // blkfront: the backend closes mid-handshake.
        Script::default().u8(1).u8(0).u8(3).u8(1).u8(5).bytes(&[0; 8]).0,
        // netfront: no rx-copy.
        Script::default().u8(0).u8(4).u8(2).u8(0).u8(0).bytes(&[0; 8]).0,
        // netfront: the backend's directory vanishes.
        Script::default().u8(0).u8(0).u8(7).bytes(&[0; 8]).0,
    ]
}
