use super::{check, Outcome, Test, XorShift};
use crate::{print, println};

pub const TESTS: &[Test] = &[Test { name: "console::bulk_64k", run: bulk_64k }];

const LINES: u32 = 1024;
const LINE_CHARS: usize = 63;

/// 64 KiB through the console, far more than any ring holds: the guest must not lose a
/// byte (it counts what its backends drop), and the host recomputes the FNV-1a hash of
/// what arrived (rig/check-console.py) to prove nothing was lost on the way either.
fn bulk_64k() -> Outcome {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let lost_before = crate::console::lost_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    println!("console-bulk: begin lines={LINES}");
    for i in 0..LINES {
        let mut line = [0u8; LINE_CHARS + 1];
        let prefix = alloc::format!("{i:04} ");
        line[..5].copy_from_slice(prefix.as_bytes());
        for b in &mut line[5..LINE_CHARS] {
            *b = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
        }
        line[LINE_CHARS] = b'\n';
        for &b in &line {
            hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // SAFETY-free: the line is ASCII by construction.
        print!("{}", core::str::from_utf8(&line).unwrap_or("?"));
    }
    println!("console-bulk: end bytes={} fnv1a={hash:016x}", LINES as usize * (LINE_CHARS + 1));
    let lost = crate::console::lost_bytes() - lost_before;
    check!(lost == 0, "the console dropped {lost} bytes");
    Outcome::Pass
}
