//! The in-guest self-test runner: tests named `area::what` run in order, each printing one
//! line (`ok N name`, `FAIL N name: why`, `skip N name: why`), then one closing line
//! `N passed, N failed, N skipped`. A skip never counts as a pass.

mod blk;
mod boot;
mod console;
mod cpu;
mod events;
mod grant;
mod hypercall;
mod irq;
mod mem;
mod net;
mod pvops;
mod smp;
mod stack;
mod time;
mod trap;
mod xenstore;

use crate::cmdline::Options;
use crate::println;
use alloc::string::String;

pub enum Outcome {
    Pass,
    Fail(String),
    Skip(&'static str),
}

pub struct Test {
    pub name: &'static str,
    pub run: fn() -> Outcome,
}

/// Fails the test with a formatted reason unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return $crate::selftest::Outcome::Fail(alloc::format!($($why)+));
        }
    };
}
pub(crate) use check;

/// Skips a test that needs Xen when running natively.
macro_rules! xen_only {
    () => {
        if !$crate::pvops::is_xen() {
            return $crate::selftest::Outcome::Skip("needs Xen (running natively)");
        }
    };
}
pub(crate) use xen_only;

const SUITES: &[&[Test]] = &[
    boot::TESTS,
    hypercall::TESTS,
    pvops::TESTS,
    cpu::TESTS,
    irq::TESTS,
    events::TESTS,
    trap::TESTS,
    mem::TESTS,
    smp::TESTS,
    time::TESTS,
    grant::TESTS,
    xenstore::TESTS,
    blk::TESTS,
    net::TESTS,
    console::TESTS,
    stack::TESTS,
];

pub struct Report {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl core::fmt::Display for Report {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

pub fn run(options: &Options<'_>) -> Report {
    let mut report = Report { passed: 0, failed: 0, skipped: 0 };
    let selected =
        || SUITES.iter().flat_map(|s| s.iter()).filter(|t| options.tests.selects(t.name));
    let total = selected().count();
    for (i, test) in selected().enumerate() {
        let n = i + 1;
        // Between tests, what goes on in the background gets its turn: the toolstack's
        // requests and devices (xenstore's watches), DHCP and the network's services.
        if crate::pvops::is_xen() {
            let _ = crate::xen::balloon::service();
            crate::net::poll();
            if let Some(what) = crate::xen::control::requested() {
                println!("selftest: stopped by the toolstack ({what}) after {i} of {total} tests");
                break;
            }
        }
        match (test.run)() {
            Outcome::Pass => {
                report.passed += 1;
                println!("ok {n} {}", test.name);
            }
            Outcome::Fail(why) => {
                report.failed += 1;
                println!("FAIL {n} {}: {why}", test.name);
            }
            Outcome::Skip(why) => {
                report.skipped += 1;
                println!("skip {n} {}: {why}", test.name);
            }
        }
    }
    report
}

/// A small deterministic generator for test data.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
