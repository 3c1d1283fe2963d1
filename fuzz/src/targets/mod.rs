//! One module per target, each with `run` (the target) and `seeds` (valid inputs to start
//! mutating from).

pub mod blkfront;
pub mod cmdline;
pub mod console;
pub mod handshake;
pub mod netfront;
pub mod netwire;
pub mod xenstore;

pub struct Target {
    /// The cargo-fuzz binary's name too.
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
}

pub const ALL: &[Target] = &[
    Target { name: "cmdline", run: cmdline::run, seeds: cmdline::seeds },
    Target { name: "console", run: console::run, seeds: console::seeds },
    Target { name: "xenstore", run: xenstore::run, seeds: xenstore::seeds },
    Target { name: "blkfront", run: blkfront::run, seeds: blkfront::seeds },
    Target { name: "netfront", run: netfront::run, seeds: netfront::seeds },
    Target { name: "netwire", run: netwire::run, seeds: netwire::seeds },
    Target { name: "handshake", run: handshake::run, seeds: handshake::seeds },
];
