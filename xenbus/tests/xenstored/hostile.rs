//! A xenstored that lies: every lie is an error or a dropped message, never a panic, and the
//! client stays usable unless the byte stream itself is lost.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use xenbus::client::{MAX_QUEUED_EVENTS, MAX_QUEUED_PER_WATCH};
use xenbus::wire::interface::{RSP_CONS, RSP_PROD};
use xenbus::{Error, Protocol, Store, XsError, XsType};

use crate::fake::{msg, setup};

#[test]
fn oversize_length_kills_the_connection() {
    let (mut xs, fake) = setup();
    fake.lock().unwrap().set("k", b"v");
    fake.lock().unwrap().hold = true;
    let pending = xs.submit(XsType::Read, 0, &[b"k\0"]).unwrap();
    fake.lock().unwrap().inject(&msg(XsType::Read as u32, 1, 0, &[])[..12]);
    fake.lock().unwrap().inject(&5000u32.to_ne_bytes());
    let r = xs.read("k");
    assert_eq!(r, Err(Error::Protocol(Protocol::PayloadTooLong(5000))));
    // Everything waiting learns why, and nothing more is attempted.
    assert_eq!(xs.take_reply(pending), Some(r));
    assert_eq!(xs.broken(), Some(Error::Protocol(Protocol::PayloadTooLong(5000))));
    assert_eq!(xs.write("k", b"w"), Err(Error::Protocol(Protocol::PayloadTooLong(5000))));
    assert_eq!(xs.poll(), Err(Error::Protocol(Protocol::PayloadTooLong(5000))));
}

#[test]
fn garbage_indices_are_a_ring_error() {
    let (mut xs, fake) = setup();
    xs.write("k", b"v").unwrap();
    let cons = fake.lock().unwrap().page.word(RSP_CONS).load(Ordering::Relaxed);
    fake.lock().unwrap().page.word(RSP_PROD).store(cons.wrapping_add(2000), Ordering::Release);
    let e = xs.read("k").unwrap_err();
    assert!(matches!(e, Error::Ring(ring::byte::RingError::Corrupt { .. })), "{e:?}");
    assert_eq!(xs.read("k"), Err(e));
}

#[test]
fn unknown_and_repeated_req_ids_are_dropped() {
    let (mut xs, fake) = setup();
    fake.lock().unwrap().inject(&msg(XsType::Read as u32, 999, 0, b"forged"));
    xs.write("k", b"v").unwrap();
    assert_eq!(xs.stats().unmatched_replies, 1);
    // A second reply to a request already answered.
    let id = xs.submit(XsType::Read, 0, &[b"k\0"]).unwrap();
    while xs.take_reply(id).is_none() {
        xs.wait(u64::MAX).unwrap();
        xs.poll().unwrap();
    }
    let last = fake.lock().unwrap().requests.last().unwrap().req_id;
    fake.lock().unwrap().inject(&msg(XsType::Read as u32, last, 0, b"again"));
    // A reply for a request still queued on our side, which xenstored cannot have seen.
    assert_eq!(xs.read("k").unwrap(), b"v");
    assert_eq!(xs.stats().unmatched_replies, 2);
    assert_eq!(xs.take_reply(id), None);
    // A reply of no known type to nothing.
    fake.lock().unwrap().inject(&msg(0xffff, 4242, 0, b""));
    assert_eq!(xs.read("k").unwrap(), b"v");
    assert_eq!(xs.stats().unmatched_replies, 3);
    assert_eq!(xs.broken(), None);
}

#[test]
fn replies_that_are_not_what_was_asked() {
    let (mut xs, fake) = setup();
    fake.lock().unwrap().set("k", b"v");
    let forge = |ty: u32, p: &[u8]| fake.lock().unwrap().forge_next = Some((ty, p.to_vec()));

    forge(XsType::Write as u32, b"OK\0");
    let unexpected = Protocol::UnexpectedType { expected: XsType::Read, got: XsType::Write as u32 };
    assert_eq!(xs.read("k"), Err(Error::Protocol(unexpected)));
    forge(0xdead, b"");
    let unexpected = Protocol::UnexpectedType { expected: XsType::Read, got: 0xdead };
    assert_eq!(xs.read("k"), Err(Error::Protocol(unexpected)));
    forge(XsType::Error as u32, b"EWHATEVER\0");
    assert_eq!(xs.read("k"), Err(Error::Protocol(Protocol::UnknownError)));
    forge(XsType::Error as u32, b"EQUOTA\0");
    assert_eq!(xs.write("k", b"w"), Err(Error::Xs(XsError::Quota)));
    forge(XsType::Error as u32, b"ENOSPC\0");
    assert_eq!(xs.write("k", b"w"), Err(Error::Xs(XsError::NoSpc)));
    forge(XsType::Write as u32, b"NOPE\0");
    assert_eq!(xs.write("k", b"w"), Err(Error::Protocol(Protocol::BadReply)));
    forge(XsType::Directory as u32, b"ok\0\xff\xfe\0");
    assert_eq!(xs.directory("k"), Err(Error::Protocol(Protocol::NotUtf8)));
    forge(XsType::Directory as u32, b"a\0b");
    assert_eq!(xs.directory("k"), Err(Error::Protocol(Protocol::MissingNul)));
    forge(XsType::Directory as u32, b"../../x\0");
    assert_eq!(xs.directory("k"), Err(Error::Protocol(Protocol::BadName)));
    forge(XsType::GetPerms as u32, b"z9\0");
    assert_eq!(xs.get_perms("k"), Err(Error::Protocol(Protocol::BadReply)));
    forge(XsType::TransactionStart as u32, b"0\0");
    assert_eq!(xs.transaction(|tx| tx.read("k")), Err(Error::Protocol(Protocol::BadReply)));
    // None of that lost the stream (and the forged acks were for writes the fake did).
    assert_eq!(xs.read("k").unwrap(), b"w");
}

#[test]
fn each_error_name_is_typed() {
    let (mut xs, fake) = setup();
    for e in [
        XsError::NoEnt,
        XsError::Acces,
        XsError::Inval,
        XsError::TooBig,
        XsError::Again,
        XsError::Exist,
        XsError::IsDir,
        XsError::NoSpc,
        XsError::Io,
        XsError::Busy,
        XsError::Rofs,
        XsError::NotEmpty,
        XsError::NoSys,
        XsError::Perm,
        XsError::Quota,
    ] {
        fake.lock().unwrap().forge_next =
            Some((XsType::Error as u32, format!("{}\0", e.as_str()).into_bytes()));
        assert_eq!(xs.read("k"), Err(Error::Xs(e)));
    }
}

#[test]
fn malformed_watch_events_are_dropped() {
    let (mut xs, fake) = setup();
    let (seen, handler) = {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(0));
        let s = seen.clone();
        (
            seen,
            Box::new(move |_: &mut crate::fake::Client, _: &xenbus::WatchEvent| {
                *s.lock().unwrap() += 1
            }),
        )
    };
    xs.watch("w", "tok", handler).unwrap();
    for bad in [&b"wtok"[..], b"w\0tok", b"w\0", b"\0tok\0", b"w\0t\0extra\0", b"\xff\0tok\0"] {
        fake.lock().unwrap().inject(&msg(XsType::WatchEvent as u32, 0, 0, bad));
    }
    fake.lock().unwrap().inject(&msg(XsType::WatchEvent as u32, 0, 0, b"w\0stranger\0"));
    xs.write("other", b"x").unwrap();
    assert_eq!(xs.stats().bad_events, 6);
    // The registration event runs; the one for a token nobody registered is dropped.
    assert_eq!(xs.dispatch_watches(), 1);
    assert_eq!(*seen.lock().unwrap(), 1);
}

#[test]
fn an_event_flood_is_bounded() {
    let (mut xs, fake) = setup();
    let flood = msg(XsType::WatchEvent as u32, 0, 0, b"p\0t\0");
    for _ in 0..MAX_QUEUED_EVENTS + 10 {
        fake.lock().unwrap().inject(&flood);
    }
    xs.write("k", b"v").unwrap();
    assert_eq!(xs.pending_events(), MAX_QUEUED_PER_WATCH);
    assert_eq!(xs.stats().dropped_events, (MAX_QUEUED_EVENTS + 10 - MAX_QUEUED_PER_WATCH) as u64);
    assert_eq!(xs.dispatch_watches(), 0);
    // Many watches flooding at once still fill the queue only to its bound.
    for i in 0..MAX_QUEUED_EVENTS / MAX_QUEUED_PER_WATCH + 4 {
        let payload = format!("p\0t{i}\0");
        for _ in 0..MAX_QUEUED_PER_WATCH {
            fake.lock().unwrap().inject(&msg(XsType::WatchEvent as u32, 0, 0, payload.as_bytes()));
        }
    }
    xs.write("k", b"v").unwrap();
    assert_eq!(xs.pending_events(), MAX_QUEUED_EVENTS);
}

/// A backend writing its own node in a loop floods its watch: the flood keeps its newest
/// events and the toolstack's request behind it still reaches its handler.
#[test]
fn a_flooded_watch_does_not_crowd_out_another() {
    let (mut xs, fake) = setup();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    for (path, token) in [("backend/state", "flood"), ("control/shutdown", "control")] {
        let seen = seen.clone();
        xs.watch(path, token, Box::new(move |_, e| seen.lock().unwrap().push(e.path.clone())))
            .unwrap();
    }
    xs.dispatch_watches();
    seen.lock().unwrap().clear();
    for i in 0..5 * MAX_QUEUED_EVENTS {
        let payload = format!("backend/state/{i}\0flood\0");
        fake.lock().unwrap().inject(&msg(XsType::WatchEvent as u32, 0, 0, payload.as_bytes()));
    }
    fake.lock().unwrap().inject(&msg(
        XsType::WatchEvent as u32,
        0,
        0,
        b"control/shutdown\0control\0",
    ));
    xs.write("k", b"v").unwrap();
    xs.dispatch_watches();
    let seen = seen.lock().unwrap();
    assert!(seen.iter().any(|p| p == "control/shutdown"), "the control event was lost");
    assert_eq!(seen.len(), MAX_QUEUED_PER_WATCH + 1);
    let last = format!("backend/state/{}", 5 * MAX_QUEUED_EVENTS - 1);
    assert!(seen.contains(&last), "the flood's newest event was dropped");
}

#[test]
fn values_that_do_not_parse() {
    let (mut xs, fake) = setup();
    for (value, ok) in [
        (&b"12abc"[..], None),
        (b"-1", None),
        (b" 7", None),
        (b"", None),
        (b"99999999999999999999", None),
        (b"18446744073709551615", Some(u64::MAX)),
    ] {
        fake.lock().unwrap().set("n", value);
        assert_eq!(xs.read_u64("n").ok(), ok, "{value:?}");
        if ok.is_none() {
            assert_eq!(xs.read_u64("n"), Err(Error::BadValue));
        }
    }
    fake.lock().unwrap().set("s", b"\xc3\x28");
    assert_eq!(xs.read_string("s"), Err(Error::BadValue));
    assert_eq!(xs.read("s").unwrap(), b"\xc3\x28", "raw reads take any bytes");
    fake.lock().unwrap().set("state", b"9");
    assert_eq!(xs.read_state("state"), Err(Error::BadValue));
    fake.lock().unwrap().set("state", b"4294967300");
    assert_eq!(xs.read_state("state"), Err(Error::BadValue));
}

/// A xenstored that writes without pause must not keep the vCPU in the client: one poll
/// takes in a bounded amount and says more may wait; the client's own waits do not sleep
/// through what is left, and the next polls take it in.
#[test]
fn one_poll_takes_in_a_bounded_amount() {
    let (mut xs, fake) = setup();
    xs.set_poll_budget(100);
    let event = msg(XsType::WatchEvent as u32, 0, 0, b"p\0t\0");
    for _ in 0..40 {
        fake.lock().unwrap().inject(&event);
    }
    // One round of the fake fills the reply ring (1 KiB) with what it has.
    fake.lock().unwrap().step();
    let cons = |fake: &Arc<Mutex<crate::fake::Fake>>| {
        fake.lock().unwrap().page.word(RSP_CONS).load(Ordering::Acquire)
    };
    let before = cons(&fake);
    xs.poll().unwrap();
    assert!(cons(&fake).wrapping_sub(before) <= 100, "one poll took in more than its budget");
    assert!(xs.has_unread());
    // A wait returns at once: there is something to take in.
    assert_eq!(xs.wait(u64::MAX), Ok(()));
    let mut polls = 1;
    while xs.has_unread() || fake.lock().unwrap().step() {
        xs.poll().unwrap();
        polls += 1;
        assert!(polls < 1000);
    }
    assert!(polls >= 40 * event.len() / 100, "{polls} polls");
    assert_eq!(xs.pending_events() as u64 + xs.stats().dropped_events, 40);
    fake.lock().unwrap().set("k", b"v");
    assert_eq!(xs.read("k").unwrap(), b"v");
}
