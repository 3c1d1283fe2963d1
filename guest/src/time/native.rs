//! The native clock: the TSC, calibrated once against PIT channel 2.

use super::TscScale;
use crate::arch::cpu::rdtsc;
use crate::arch::native::{pit_wait, PIT_HZ};
use core::sync::atomic::{AtomicU64, Ordering};

static ORIGIN_TSC: AtomicU64 = AtomicU64::new(0);
/// `TscScale` packed: mul_frac in the low 32 bits, shift in the next 8.
static SCALE: AtomicU64 = AtomicU64::new(0);

/// The calibration window: 50 ms of PIT ticks.
const CALIBRATION_TICKS: u16 = (PIT_HZ / 20) as u16;

/// Measures the TSC frequency; returns it in Hz.
pub fn calibrate() -> u64 {
    let t0 = pit_wait(CALIBRATION_TICKS, rdtsc);
    let t1 = rdtsc();
    let hz = (t1 - t0) * PIT_HZ / CALIBRATION_TICKS as u64;
    let scale = TscScale::from_hz(hz).unwrap_or(TscScale { mul_frac: u32::MAX, shift: 0 });
    SCALE.store(scale.mul_frac as u64 | ((scale.shift as u8 as u64) << 32), Ordering::Relaxed);
    ORIGIN_TSC.store(t0, Ordering::Relaxed);
    hz
}

fn scale() -> TscScale {
    let packed = SCALE.load(Ordering::Relaxed);
    TscScale { mul_frac: packed as u32, shift: (packed >> 32) as u8 as i8 }
}

pub extern "C" fn clock_ns() -> u64 {
    scale().ticks_to_ns(rdtsc().saturating_sub(ORIGIN_TSC.load(Ordering::Relaxed)))
}

/// Arms PIT channel 0 (IRQ 0) to fire once at the deadline, or after its longest count
/// (~55 ms) if the deadline is further: the interrupt then re-arms for the rest.
pub extern "C" fn set_timer(deadline_ns: u64) {
    let delta = deadline_ns.saturating_sub(clock_ns());
    let ticks = (delta as u128 * PIT_HZ as u128).div_ceil(1_000_000_000);
    crate::arch::native::pit_one_shot(ticks.clamp(1, u16::MAX as u128) as u16);
}
