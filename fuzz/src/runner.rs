//! A fuzzer on stable Rust, for the short runs of `cargo test`: random mutations of the
//! targets' seed inputs and of its own recent inputs, for a bounded number of inputs or
//! time. It has no coverage feedback (cargo-fuzz's libFuzzer has, for `make fuzz`); the
//! targets make up for part of that by reading their input as a script, so random bytes
//! still reach deep into the drivers.
//!
//! On failure it saves the input and prints how to replay it: a panic (the hook runs even
//! where panics abort), or an input running longer than [`Config::hang_after`] (a watchdog
//! thread aborts the process, since a hung target cannot be interrupted).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::targets::Target;

pub struct Config {
    /// Seeds the mutations: the same seed replays the same run.
    pub seed: u64,
    /// Stop after this many inputs...
    pub max_inputs: u64,
    /// ...or this much time, whichever comes first.
    pub max_time: Duration,
    /// Inputs grow no longer than this.
    pub max_len: usize,
    /// One input taking longer than this is a hang.
    pub hang_after: Duration,
}

#[derive(Debug)]
pub struct Summary {
    pub inputs: u64,
    pub elapsed: Duration,
}

/// The target and the input being run, for the panic hook and the watchdog to report.
type Current = Arc<Mutex<(&'static str, Vec<u8>)>>;

thread_local! {
    /// The panic hook runs on the panicking thread: `cargo test` runs targets side by side.
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `target` under `config`; returns only if no input failed.
pub fn run(target: &Target, config: &Config) -> Summary {
    install_panic_hook();
    let current: Current = Arc::new(Mutex::new((target.name, Vec::new())));
    CURRENT.with(|c| *c.borrow_mut() = Some(current.clone()));
    let started = Instant::now();
    let last_start_ms = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (last, finished, current) = (last_start_ms.clone(), finished.clone(), current.clone());
        let limit = config.hang_after;
        std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let running = started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if running > limit && !finished.load(Ordering::Relaxed) {
                    report(&current, &format!("an input ran for more than {limit:?} (a hang)"));
                    std::process::abort();
                }
            }
        })
    };

    let mut rng = Rng(config.seed | 1);
    let seeds = (target.seeds)();
    let mut recent: Vec<Vec<u8>> = seeds.clone();
    let mut inputs = 0;
    while inputs < config.max_inputs && started.elapsed() < config.max_time {
        let input = if (inputs as usize) < seeds.len() {
            seeds[inputs as usize].clone()
        } else {
            let base = &recent[rng.below(recent.len())];
            let other = &recent[rng.below(recent.len())];
            mutate(&mut rng, base, other, config.max_len)
        };
        current.lock().unwrap_or_else(|e| e.into_inner()).1.clone_from(&input);
        last_start_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        (target.run)(&input);
        inputs += 1;
        // Recent inputs are mutated further: a cheap stand-in for a corpus.
        if recent.len() < 256 {
            recent.push(input);
        } else {
            let i = seeds.len() + rng.below(256 - seeds.len());
            recent[i] = input;
        }
    }
    finished.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    CURRENT.with(|c| *c.borrow_mut() = None);
    Summary { inputs, elapsed: started.elapsed() }
}

/// Runs every file in `dir` (a checked-in corpus, `fuzz/corpus/<target>/`) through `target`
/// once, as a regression test of what earlier campaigns found; returns how many. A missing
/// directory is an empty corpus. A failure is reported as in [`run`].
pub fn replay(target: &Target, dir: &std::path::Path) -> usize {
    install_panic_hook();
    let current: Current = Arc::new(Mutex::new((target.name, Vec::new())));
    CURRENT.with(|c| *c.borrow_mut() = Some(current.clone()));
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut n = 0;
    for file in files {
        let Ok(input) = std::fs::read(&file) else { continue };
        current.lock().unwrap_or_else(|e| e.into_inner()).1.clone_from(&input);
        (target.run)(&input);
        n += 1;
    }
    CURRENT.with(|c| *c.borrow_mut() = None);
    n
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            if let Some(current) = CURRENT.with(|c| c.borrow().clone()) {
                report(&current, "the target panicked");
            }
        }));
    });
}

/// Saves the current input under `target/fuzz-failures/` and prints how to replay it.
fn report(current: &Mutex<(&'static str, Vec<u8>)>, what: &str) {
    let (name, input) = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    let file = dir.join(format!("{name}-{:016x}", fnv1a(&input)));
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &input));
    let mut hex = String::new();
    for b in &input {
        let _ = write!(hex, "{b:02x}");
    }
    let mut msg = format!("fuzz: {name}: {what}; input ({} bytes): {hex}\n", input.len());
    let _ = match saved {
        Ok(()) => writeln!(
            msg,
            "fuzz: saved as {}; replay: cargo fuzz run --sanitizer none --features libfuzzer \
             {name} {}",
            file.display(),
            file.display()
        ),
        Err(e) => writeln!(msg, "fuzz: could not save it in {}: {e}", dir.display()),
    };
    // Straight to the process's stderr: the test harness's capture would be lost with the
    // abort that follows a hang.
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// xorshift64*: fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n`; `n` > 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Values at the edges of what fields hold, little-endian like the targets read them.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    u64::MAX,
];

/// One to four byte-level edits of `base`, sometimes spliced with `other`.
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            // Flip a bit.
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            // A random byte.
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            // Add or subtract a little, as to an index or a length.
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = v[i].wrapping_add(rng.below(33) as u8).wrapping_sub(16);
            }
            // An interesting value of 1, 2, 4 or 8 bytes.
            3 => {
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let n = 1 << rng.below(4);
                let at = rng.below(v.len() + 1);
                let end = (at + n).min(v.len());
                v.splice(at..end, value[..n].iter().copied());
            }
            // Insert random bytes.
            4 => {
                let at = rng.below(v.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                v.splice(at..at, bytes);
            }
            // Delete a range.
            5 if !v.is_empty() => {
                let at = rng.below(v.len());
                let n = 1 + rng.below((v.len() - at).min(32));
                v.drain(at..at + n);
            }
            // Repeat a range: scripts of repeated steps.
            6 if !v.is_empty() => {
                let at = rng.below(v.len());
                let n = 1 + rng.below((v.len() - at).min(64));
                let copy = v[at..at + n].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, copy);
            }
            // Splice: the head of one input and the tail of another.
            7 if !other.is_empty() => {
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            // Cut the end.
            8 if !v.is_empty() => v.truncate(rng.below(v.len())),
            _ => v.push(rng.byte()),
        }
    }
    v.truncate(max_len);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_within_the_length_limit_and_vary() {
        let mut rng = Rng(42);
        let base = vec![0u8; 100];
        let outs: Vec<Vec<u8>> = (0..1000).map(|_| mutate(&mut rng, &base, b"xyz", 120)).collect();
        assert!(outs.iter().all(|o| o.len() <= 120));
        assert!(outs.iter().filter(|o| **o != base).count() > 900);
    }
}
