//! Every fuzz target, briefly, on every `cargo test`: its checked-in corpus, its seeds, then
//! mutations of them, with a fixed seed so a failure here fails the same way on every run.
//! `make fuzz` runs the same targets for longer under libFuzzer.

use std::time::Duration;

use fuzz::runner::{self, Config};
use fuzz::targets::ALL;

fn brief(name: &str) {
    let target = ALL.iter().find(|t| t.name == name).expect("a target of that name");
    // The campaigns' corpus first: every input they kept still runs clean.
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name);
    let replayed = runner::replay(target, &corpus);
    println!("fuzz {name}: {replayed} corpus inputs replayed, no failure");
    let config = Config {
        seed: 0x5eed,
        max_inputs: 3000,
        // A bound for slow machines, not the usual stop: the inputs run out first.
        max_time: Duration::from_secs(20),
        max_len: 4096,
        hang_after: Duration::from_secs(10),
    };
    let summary = runner::run(target, &config);
    println!("fuzz {name}: {} inputs in {:.2?}, no failure", summary.inputs, summary.elapsed);
    assert!(summary.inputs >= (target.seeds)().len() as u64);
}

#[test]
fn every_target_is_tested_here() {
    let names: Vec<&str> = ALL.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        ["cmdline", "console", "xenstore", "blkfront", "netfront", "netwire", "handshake"]
    );
}

#[test]
fn cmdline() {
    brief("cmdline");
}

#[test]
fn console() {
    brief("console");
}

#[test]
fn xenstore() {
    brief("xenstore");
}

#[test]
fn blkfront() {
    brief("blkfront");
}

#[test]
fn netfront() {
    brief("netfront");
}

#[test]
fn netwire() {
    brief("netwire");
}

#[test]
fn handshake() {
    brief("handshake");
}
