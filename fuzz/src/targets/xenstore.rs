//! The xenstore client against a xenstored that lies: xenbus's fake xenstored answers the
//! client's requests, and the script has it inject raw bytes, replies to any request id,
//! watch events, forged reply types and payloads, and ring indices, between the client's
//! operations (plain, in transactions, watches and their handlers, control requests), and
//! floods of one watch's events.

use std::sync::atomic::Ordering;

use xenbus::control::{self, Feature};
use xenbus::wire::interface::{RSP_CONS, RSP_PROD};
use xenbus::{Access, Perm, Store, XsType};

use crate::input::{Input, Script};
use crate::xenstored::{self, msg};

const PATHS: &[&str] = &["k", "a/b", "control/shutdown", "device/vif/0/state", "device", "a"];
const TOKENS: &[&str] = &["t0", "t1", "xenbus-wait-0"];

/// Reply types worth forging: what requests expect, errors, events, and unknown values.
fn reply_type(input: &mut Input) -> u32 {
    match input.u8() % 12 {
        0 => XsType::Read as u32,
        1 => XsType::Directory as u32,
        2 => XsType::GetPerms as u32,
        3 => XsType::Write as u32,
        4 => XsType::Watch as u32,
        5 => XsType::Unwatch as u32,
        6 => XsType::TransactionStart as u32,
        7 => XsType::TransactionEnd as u32,
        8 => XsType::Error as u32,
        9 => XsType::WatchEvent as u32,
        10 => XsType::Mkdir as u32,
        _ => input.u32(),
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (mut xs, fake) = xenstored::setup();
    {
        let mut f = fake.lock().unwrap();
        for (path, value) in [
            ("k", &b"v"[..]),
            ("a/b", b"42"),
            ("device/vif/0/state", b"4"),
            ("device/vbd/51728/backend", b"/local/domain/0/backend/vbd/1/51728"),
            ("control/shutdown", b"reboot"),
        ] {
            f.set(path, value);
        }
    }
    // The guest's device list, fed events whose paths and listings xenstored controls.
    let mut devices = xenbus::frontend::DeviceList::new(&["vbd", "vif"]);
    while !input.is_empty() {
        let op = input.u8();
        let path = input.pick(PATHS);
        let token = input.pick(TOKENS);
        match op % 24 {
            // What xenstored does on its own.
            0 => fake.lock().unwrap().inject(input.chunk()),
            1 => {
                let ty = reply_type(&mut input);
                let mut f = fake.lock().unwrap();
                let last = f.requests.last().map_or(0, |h| h.req_id);
                let req_id = last.wrapping_add(i32::from(input.u8() as i8) as u32);
                f.inject(&msg(ty, req_id, input.u32(), input.chunk()));
            }
            2 => {
                let payload = match input.u8() % 3 {
                    0 => format!("{path}\0{token}\0").into_bytes(),
                    1 => [path.as_bytes(), b"\0", input.chunk()].concat(),
                    _ => input.chunk().to_vec(),
                };
                fake.lock().unwrap().inject(&msg(XsType::WatchEvent as u32, 0, 0, &payload));
            }
            3 => {
                let ty = reply_type(&mut input);
                fake.lock().unwrap().forge_next = Some((ty, input.chunk().to_vec()));
            }
            4 => {
                let mut f = fake.lock().unwrap();
                f.chunk = 1 + usize::from(input.u8());
                f.reverse = input.bool();
                f.hold = input.bool();
                f.conflicts = u32::from(input.u8() % 10);
            }
            5 => {
                let index = if input.bool() { RSP_PROD } else { RSP_CONS };
                let delta = i32::from(input.u16() as i16) as u32;
                let f = fake.lock().unwrap();
                let i = f.page.word(index);
                i.store(i.load(Ordering::Relaxed).wrapping_add(delta), Ordering::Release);
                drop(f);
                // Before xenstored runs again: it would trip over indices it did not write.
                let _ = xs.poll();
            }
            // A flood: one watch's events by the hundred or thousand (a backend rewriting
            // its own node in a loop), then what the client makes of them. Mostly a few
            // hundred, past the per-watch bound; now and then more than one poll takes in
            // (rarely: such a flood costs a hundred times a plain request).
            22 => {
                let n = if input.u8().is_multiple_of(32) {
                    1 + usize::from(input.u16() % 4096)
                } else {
                    1 + usize::from(input.u8())
                };
                let event =
                    msg(XsType::WatchEvent as u32, 0, 0, format!("{path}\0{token}\0").as_bytes());
                fake.lock().unwrap().inject(&event.repeat(n));
                let _ = xs.poll();
                let _ = xs.dispatch_watches();
            }
            // What the guest asks.
            6 => drop(xs.read(path)),
            7 => drop(xs.read_u64(path)),
            8 => drop(xs.read_state(path)),
            9 => drop(xs.read_string(path)),
            10 => drop(xs.directory(path)),
            11 => drop(xs.get_perms(path)),
            12 => drop(xs.write(path, input.chunk())),
            13 => drop(if input.bool() { xs.rm(path) } else { xs.mkdir(path) }),
            14 => {
                let perms = [
                    Perm { domid: 0, access: Access::None },
                    Perm { domid: input.u16(), access: Access::Read },
                ];
                let _ = xs.set_perms(path, &perms);
            }
            15 => drop(xs.transaction(|tx| {
                let v = tx.read(path)?;
                tx.write(path, &v)?;
                tx.directory("a")
            })),
            16 => drop(xs.watch(path, token, Box::new(|xs, event| drop(xs.read(&event.path))))),
            17 => drop(xs.unwatch(token)),
            18 => drop(xs.dispatch_watches()),
            19 => drop(xs.wait_for(path, 1_000_000, |xs| {
                Ok(xs.read(path)?.starts_with(b"4").then_some(()))
            })),
            20 => {
                drop(control::take_shutdown_request(&mut xs));
                let _ = control::advertise(&mut xs, &[Feature::Poweroff, Feature::Reboot]);
            }
            21 => {
                let path = String::from_utf8_lossy(input.chunk()).into_owned();
                let before = devices.ids("vbd").len() + devices.ids("vif").len();
                let changes = if input.bool() {
                    devices.on_event(&mut xs, &path)
                } else {
                    devices.rescan(&mut xs)
                };
                let after = devices.ids("vbd").len() + devices.ids("vif").len();
                assert!(after <= 2 * xenbus::frontend::MAX_DEVICES_PER_CLASS);
                if let Ok(changes) = changes {
                    assert!(changes.len() <= before + after, "more changes than devices");
                }
            }
            _ => {
                let ty = reply_type(&mut input);
                if let Ok(ty) = XsType::try_from(ty) {
                    if let Ok(id) = xs.submit(ty, 0, &[input.chunk()]) {
                        let _ = xs.poll();
                        drop(xs.take_reply(id));
                    }
                }
            }
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> =
        (6..23).map(|op| Script::default().u8(op).u8(op % 6).u8(op % 3).chunk(b"1").0).collect();
    // A watch, then an event for it and a malformed one, then dispatch.
    seeds.push(
        Script::default()
            .bytes(&[16, 0, 0])
            .bytes(&[2, 0, 0, 0])
            .bytes(&[2, 1, 1, 2])
            .chunk(b"p\0t\0x\0")
            .bytes(&[18, 0, 0])
            .0,
    );
    // Replies to the next request: an error, a wrong type, garbage.
    seeds.push(
        Script::default().bytes(&[1, 0, 0, 8, 1]).u32(0).chunk(b"ENOENT\0").bytes(&[6, 0, 0]).0,
    );
    seeds.push(Script::default().bytes(&[3, 0, 0, 1]).chunk(b"a\0b\0").bytes(&[10, 4, 0]).0);
    seeds.push(Script::default().bytes(&[0, 0, 0]).chunk(&[0xff; 40]).bytes(&[6, 0, 0]).0);
    // A transaction that conflicts, through a slow xenstored.
    seeds.push(Script::default().bytes(&[4, 0, 0, 3, 1, 0, 2, 15, 1, 0]).0);
    // Indices moved under the client.
    seeds.push(Script::default().bytes(&[6, 0, 0, 5, 0, 0, 1]).u16(2000).bytes(&[6, 0, 0]).0);
    seeds
}
