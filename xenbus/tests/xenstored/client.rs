//! The operations, requests in flight, watches and transactions against a well-behaved
//! xenstored.

use std::sync::Arc;
use std::sync::Mutex;

use xenbus::store::TRANSACTION_ATTEMPTS;
use xenbus::wire::XENSTORE_PAYLOAD_MAX;
use xenbus::{Access, Error, Perm, ReqId, Store, WatchEvent, XsError, XsType};

use crate::fake::{setup, Client, DOMID};

/// Polls and waits until every request has its reply, collecting them in submission order.
fn collect(xs: &mut Client, ids: &[ReqId]) -> Vec<Result<Vec<u8>, Error>> {
    let mut out: Vec<Option<Result<Vec<u8>, Error>>> = vec![None; ids.len()];
    let deadline = xs.deadline_in(1_000_000_000);
    while out.iter().any(Option::is_none) {
        xs.poll().unwrap();
        for (slot, id) in out.iter_mut().zip(ids) {
            if slot.is_none() {
                *slot = xs.take_reply(*id);
            }
        }
        if out.iter().any(Option::is_none) {
            xs.wait(deadline).unwrap();
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

fn events() -> (Arc<Mutex<Vec<WatchEvent>>>, xenbus::WatchHandler<crate::fake::FakeTransport>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    (seen, Box::new(move |_, e: &WatchEvent| log.lock().unwrap().push(e.clone())))
}

fn paths(seen: &Mutex<Vec<WatchEvent>>) -> Vec<String> {
    seen.lock().unwrap().drain(..).map(|e| e.path).collect()
}

#[test]
fn basic_operations() {
    let (mut xs, fake) = setup();
    xs.write("data/a", b"hello").unwrap();
    assert_eq!(xs.read("data/a").unwrap(), b"hello");
    assert_eq!(xs.read_string("data/a").unwrap(), "hello");
    xs.write("data/n", b"51712").unwrap();
    assert_eq!(xs.read_u64("data/n").unwrap(), 51712);
    xs.mkdir("data/dir").unwrap();
    xs.mkdir("data/dir").unwrap();
    assert_eq!(xs.read("data/dir").unwrap(), b"");
    assert_eq!(xs.directory("data").unwrap(), ["a", "dir", "n"]);
    assert_eq!(xs.directory("data/dir").unwrap(), Vec::<String>::new());
    xs.rm("data/a").unwrap();
    assert_eq!(xs.read("data/a"), Err(Error::Xs(XsError::NoEnt)));
    xs.rm("data").unwrap();
    assert_eq!(fake.lock().unwrap().tree.len(), 0);
    assert!(xs.transport().notifies > 0);
}

#[test]
fn missing_key_is_enoent() {
    let (mut xs, _fake) = setup();
    assert_eq!(xs.read("nope"), Err(Error::Xs(XsError::NoEnt)));
    assert_eq!(xs.directory("nope"), Err(Error::Xs(XsError::NoEnt)));
    assert_eq!(xs.read_u64("nope"), Err(Error::Xs(XsError::NoEnt)));
    assert_eq!(xs.rm("no/such/parent"), Err(Error::Xs(XsError::NoEnt)));
}

#[test]
fn invalid_arguments_are_refused_before_sending() {
    let (mut xs, fake) = setup();
    assert_eq!(xs.read(""), Err(Error::InvalidArgument));
    assert_eq!(xs.write("a\0b", b"x"), Err(Error::InvalidArgument));
    assert_eq!(xs.set_perms("a", &[]), Err(Error::InvalidArgument));
    let (_, h) = events();
    assert_eq!(xs.watch("a", "", h), Err(Error::InvalidArgument));
    assert!(fake.lock().unwrap().requests.is_empty());
}

#[test]
fn permissions() {
    let (mut xs, fake) = setup();
    xs.write("data/mine", b"x").unwrap();
    assert_eq!(xs.get_perms("data/mine").unwrap(), [Perm { domid: DOMID, access: Access::None }]);
    let perms =
        [Perm { domid: DOMID, access: Access::None }, Perm { domid: 0, access: Access::Read }];
    xs.set_perms("data/mine", &perms).unwrap();
    assert_eq!(xs.get_perms("data/mine").unwrap(), perms);

    fake.lock().unwrap().set("secret", b"s");
    fake.lock().unwrap().set_perms("secret", &[(b'n', 0)]);
    assert_eq!(xs.read("secret"), Err(Error::Xs(XsError::Acces)));
    fake.lock().unwrap().set("ro", b"r");
    fake.lock().unwrap().set_perms("ro", &[(b'r', 0)]);
    assert_eq!(xs.read("ro").unwrap(), b"r");
    assert_eq!(xs.write("ro", b"w"), Err(Error::Xs(XsError::Acces)));
    assert_eq!(xs.write("ro/child", b"w"), Err(Error::Xs(XsError::Acces)));
    assert_eq!(xs.set_perms("ro", &perms), Err(Error::Xs(XsError::Acces)));
}

#[test]
fn out_of_order_replies() {
    let (mut xs, fake) = setup();
    for i in 0..10 {
        fake.lock().unwrap().set(&format!("k/{i}"), format!("value {i}").as_bytes());
    }
    fake.lock().unwrap().reverse = true;
    let ids: Vec<_> = (0..10)
        .map(|i| xs.submit(XsType::Read, 0, &[format!("k/{i}\0").as_bytes()]).unwrap())
        .collect();
    assert_eq!(xs.in_flight(), 10);
    for (i, reply) in collect(&mut xs, &ids).into_iter().enumerate() {
        assert_eq!(reply.unwrap(), format!("value {i}").as_bytes());
    }
    // The fake really did answer last first.
    assert_eq!(xs.in_flight(), 0);
    assert_eq!(xs.stats().unmatched_replies, 0);
}

#[test]
fn hundred_requests_in_flight() {
    let (mut xs, fake) = setup();
    fake.lock().unwrap().reverse = true;
    let writes: Vec<_> = (0..100)
        .map(|i| {
            let path = format!("many/{i:03}\0");
            let value = format!("v{i}").repeat(i % 7 + 1);
            xs.submit(XsType::Write, 0, &[path.as_bytes(), value.as_bytes()]).unwrap()
        })
        .collect();
    // Far more than the 1 KiB request ring holds: most of it is still queued in the client.
    assert_eq!(xs.in_flight(), 100);
    assert!(fake.lock().unwrap().requests.is_empty());
    for reply in collect(&mut xs, &writes) {
        assert_eq!(reply.unwrap(), b"OK\0");
    }
    let reads: Vec<_> = (0..100)
        .map(|i| xs.submit(XsType::Read, 0, &[format!("many/{i:03}\0").as_bytes()]).unwrap())
        .collect();
    for (i, reply) in collect(&mut xs, &reads).into_iter().enumerate() {
        assert_eq!(reply.unwrap(), format!("v{i}").repeat(i % 7 + 1).as_bytes());
    }
    assert_eq!(xs.directory("many").unwrap().len(), 100);
    assert_eq!(fake.lock().unwrap().count(XsType::Write), 100);
}

#[test]
fn replies_split_across_the_wrap_are_reassembled() {
    let (mut xs, fake) = setup();
    // Odd sizes walk message boundaries across every position of the 1 KiB ring, and a
    // 7-byte trickle splits headers and payloads across rounds as well.
    for i in 0..40 {
        fake.lock().unwrap().set(&format!("w/{i}"), &vec![b'a' + (i % 26) as u8; 37 * i + 3]);
    }
    fake.lock().unwrap().chunk = 7;
    for i in 0..40 {
        assert_eq!(xs.read(&format!("w/{i}")).unwrap(), vec![b'a' + (i % 26) as u8; 37 * i + 3]);
    }
    fake.lock().unwrap().chunk = 100;
    for i in (0..40).rev() {
        assert_eq!(xs.read(&format!("w/{i}")).unwrap().len(), 37 * i + 3);
    }
}

#[test]
fn four_kib_values() {
    let (mut xs, fake) = setup();
    // A reply carries up to XENSTORE_PAYLOAD_MAX bytes, four times the ring.
    let big: Vec<u8> = (0..XENSTORE_PAYLOAD_MAX).map(|i| (i * 7) as u8).collect();
    fake.lock().unwrap().set("big", &big);
    assert_eq!(xs.read("big").unwrap(), big);

    // A WRITE carries "path\0value" in the same 4096 bytes: "data/big\0" leaves 4087.
    let path = "data/big";
    let fits = XENSTORE_PAYLOAD_MAX - path.len() - 1;
    xs.write(path, &big[..fits]).unwrap();
    assert_eq!(xs.read(path).unwrap(), &big[..fits]);
    let sent = fake.lock().unwrap().requests.len();
    assert_eq!(xs.write(path, &big[..fits + 1]), Err(Error::Xs(XsError::TooBig)));
    assert_eq!(fake.lock().unwrap().requests.len(), sent, "an oversize request is never sent");
    assert_eq!(xs.read(path).unwrap(), &big[..fits]);
}

#[test]
fn watches_fire_at_registration_and_on_changes() {
    let (mut xs, fake) = setup();
    let (seen, handler) = events();
    xs.watch("dev", "tok", handler).unwrap();
    assert_eq!(xs.dispatch_watches(), 1);
    assert_eq!(paths(&seen), ["dev"]);
    assert_eq!(seen.lock().unwrap().len(), 0);

    xs.write("dev/a", b"1").unwrap();
    fake.lock().unwrap().set("dev/b/c", b"2");
    xs.write("elsewhere", b"3").unwrap();
    xs.rm("dev").unwrap();
    xs.dispatch_watches();
    let got = paths(&seen);
    for p in ["dev", "dev/a", "dev/b", "dev/b/c"] {
        assert!(got.iter().any(|g| g == p), "{p} missing from {got:?}");
    }
    assert!(!got.iter().any(|g| g == "elsewhere"));

    xs.unwatch("tok").unwrap();
    xs.write("dev/a", b"again").unwrap();
    assert_eq!(xs.dispatch_watches(), 0);
    assert_eq!(xs.unwatch("tok"), Err(Error::NoSuchWatch));
}

#[test]
fn watch_events_interleaved_with_replies() {
    let (mut xs, fake) = setup();
    let (seen, handler) = events();
    xs.watch("hot", "t", handler).unwrap();
    fake.lock().unwrap().reverse = true;
    let ids: Vec<_> = (0..20)
        .map(|i| xs.submit(XsType::Write, 0, &[b"hot/k\0", format!("{i}").as_bytes()]).unwrap())
        .collect();
    for reply in collect(&mut xs, &ids) {
        assert_eq!(reply.unwrap(), b"OK\0");
    }
    // The registration, the creation of hot/ itself, then one per write.
    assert_eq!(xs.pending_events(), 22);
    assert_eq!(xs.dispatch_watches(), 22);
    assert_eq!(seen.lock().unwrap().iter().filter(|e| e.path == "hot/k").count(), 20);
}

#[test]
fn handlers_may_issue_requests_and_manage_watches() {
    let (mut xs, fake) = setup();
    let fired = Arc::new(Mutex::new(0));
    let count = fired.clone();
    let copy = move |xs: &mut Client, e: &WatchEvent| {
        *count.lock().unwrap() += 1;
        let v = xs.read(&e.path).unwrap_or_default();
        xs.write("copied", &v).unwrap();
        if v == b"stop" {
            xs.unwatch("copy").unwrap();
        }
    };
    xs.watch("trigger", "copy", Box::new(copy)).unwrap();
    assert_eq!(xs.dispatch_watches(), 1);
    assert_eq!(xs.read("copied").unwrap(), b"");

    fake.lock().unwrap().set("trigger", b"one");
    xs.wait(u64::MAX).unwrap();
    xs.poll().unwrap();
    assert_eq!(xs.dispatch_watches(), 1);
    assert_eq!(xs.read("copied").unwrap(), b"one");

    fake.lock().unwrap().set("trigger", b"stop");
    xs.wait(u64::MAX).unwrap();
    xs.poll().unwrap();
    assert_eq!(xs.dispatch_watches(), 1);
    fake.lock().unwrap().set("trigger", b"three");
    xs.read("trigger").unwrap();
    assert_eq!(xs.dispatch_watches(), 0, "the handler removed its own watch");
    assert_eq!(*fired.lock().unwrap(), 3);
    assert_eq!(xs.read("copied").unwrap(), b"stop");
}

#[test]
fn duplicate_tokens_are_refused() {
    let (mut xs, _fake) = setup();
    let (_, h1) = events();
    let (_, h2) = events();
    xs.watch("a", "same", h1).unwrap();
    assert_eq!(xs.watch("b", "same", h2), Err(Error::TokenInUse));
}

#[test]
fn transactions_commit() {
    let (mut xs, fake) = setup();
    xs.write("acct/a", b"10").unwrap();
    let total = xs
        .transaction(|tx| {
            let a = tx.read_u64("acct/a")?;
            tx.write("acct/a", b"0")?;
            tx.write("acct/b", format!("{a}").as_bytes())?;
            assert_ne!(tx.id(), 0);
            Ok(a)
        })
        .unwrap();
    assert_eq!(total, 10);
    assert_eq!(fake.lock().unwrap().get("acct/b"), Some(&b"10"[..]));
    assert!(fake
        .lock()
        .unwrap()
        .requests
        .iter()
        .any(|h| h.ty == XsType::Write as u32 && h.tx_id != 0));
}

#[test]
fn eagain_reruns_the_body() {
    let (mut xs, fake) = setup();
    xs.write("counter", b"0").unwrap();
    fake.lock().unwrap().conflicts = 1;
    let mut runs = 0;
    xs.transaction(|tx| {
        runs += 1;
        let n = tx.read_u64("counter")?;
        tx.write("counter", format!("{}", n + 1).as_bytes())
    })
    .unwrap();
    assert_eq!(runs, 2);
    assert_eq!(xs.read_u64("counter").unwrap(), 1);
    assert_eq!(fake.lock().unwrap().count(XsType::TransactionStart), 2);
}

#[test]
fn eagain_retries_are_bounded() {
    let (mut xs, fake) = setup();
    fake.lock().unwrap().conflicts = u32::MAX;
    let mut runs = 0;
    let r = xs.transaction(|tx| {
        runs += 1;
        tx.write("x", b"1")
    });
    assert_eq!(r, Err(Error::Xs(XsError::Again)));
    assert_eq!(runs, TRANSACTION_ATTEMPTS);
    assert_eq!(xs.read("x"), Err(Error::Xs(XsError::NoEnt)));
}

#[test]
fn a_failing_body_aborts() {
    let (mut xs, fake) = setup();
    let r: Result<(), _> = xs.transaction(|tx| {
        tx.write("half", b"done")?;
        tx.read("missing").map(drop)
    });
    assert_eq!(r, Err(Error::Xs(XsError::NoEnt)));
    assert_eq!(xs.read("half"), Err(Error::Xs(XsError::NoEnt)));
    assert_eq!(fake.lock().unwrap().count(XsType::TransactionEnd), 1);
}

#[test]
fn a_silent_xenstored_times_out_and_the_late_reply_is_dropped() {
    let (mut xs, fake) = setup();
    xs.set_timeout(3_000_000);
    fake.lock().unwrap().set("k", b"v");
    fake.lock().unwrap().hold = true;
    assert_eq!(xs.read("k"), Err(Error::Timeout));
    assert!(fake.lock().unwrap().now >= 3_000_000);
    fake.lock().unwrap().hold = false;
    assert_eq!(xs.read("k").unwrap(), b"v");
    assert_eq!(xs.stats().unmatched_replies, 0);
    assert_eq!(xs.in_flight(), 0);
}

/// A resume in a new domain: a new xenstored, which knows none of our watches, behind the
/// same page. `resume` registers them again and each fires once with the store as it is.
#[test]
fn resume_registers_every_watch_again() {
    let (mut xs, fake) = setup();
    let (seen, handler) = events();
    xs.watch("control/shutdown", "control", handler).unwrap();
    xs.dispatch_watches();
    assert_eq!(paths(&seen), ["control/shutdown"]);

    fake.lock().unwrap().restart();
    fake.lock().unwrap().set("control/shutdown", b"");
    let transport = crate::fake::FakeTransport { fake: fake.clone(), notifies: 0 };
    assert_eq!(xs.resume(transport), Ok(0));
    xs.poll().unwrap();
    xs.dispatch_watches();
    assert_eq!(paths(&seen), ["control/shutdown"], "the re-registered watch fires once");

    fake.lock().unwrap().set("control/shutdown", b"poweroff");
    let deadline = xs.deadline_in(1_000_000_000);
    while xs.pending_events() == 0 {
        xs.wait(deadline).unwrap();
        xs.poll().unwrap();
    }
    xs.dispatch_watches();
    assert_eq!(paths(&seen), ["control/shutdown"], "and then follows the new store");
    assert_eq!(xs.read("control/shutdown").unwrap(), b"poweroff");
}

/// What the old xenstored had in flight or left in the reply ring is not taken for an
/// answer from the new one.
#[test]
fn resume_fails_requests_in_flight_and_drops_stale_replies() {
    let (mut xs, fake) = setup();
    xs.write("data/a", b"1").unwrap();
    fake.lock().unwrap().hold = true;
    let id = xs.submit(XsType::Read, 0, &[b"data/a\0"]).unwrap();
    // The old xenstored also left half a message in the reply ring.
    fake.lock().unwrap().inject(&crate::fake::msg(XsType::Read as u32, 77, 0, b"stale")[..10]);
    fake.lock().unwrap().step();
    xs.poll().unwrap();

    fake.lock().unwrap().restart();
    fake.lock().unwrap().hold = false;
    let transport = crate::fake::FakeTransport { fake: fake.clone(), notifies: 0 };
    assert_eq!(xs.resume(transport), Ok(0));
    assert_eq!(xs.take_reply(id), Some(Err(Error::Resumed)));
    assert_eq!(xs.read("data/a").unwrap(), b"1", "the connection works on");
}

#[test]
fn vcpu_availability_as_the_toolstack_writes_it() {
    use xenbus::control::vcpu_available;
    let (mut xs, fake) = setup();
    fake.lock().unwrap().set("cpu/1/availability", b"offline");
    fake.lock().unwrap().set("cpu/2/availability", b"online");
    fake.lock().unwrap().set("cpu/3/availability", b"half");
    assert_eq!(vcpu_available(&mut xs, 1), Ok(false));
    assert_eq!(vcpu_available(&mut xs, 2), Ok(true));
    assert_eq!(vcpu_available(&mut xs, 3), Err(xenbus::Error::BadValue));
    // No key: the toolstack never took the vCPU away.
    assert_eq!(vcpu_available(&mut xs, 4), Ok(true));
}
