//! Monotonic time in nanoseconds on both platforms: Xen's pvclock (vcpu_time_info) or a
//! TSC calibrated against the PIT. Both turn TSC deltas into nanoseconds the same way.

#[cfg(target_os = "none")]
pub mod native;
pub mod queue;
#[cfg(target_os = "none")]
mod timers;
#[cfg(target_os = "none")]
pub mod xen_common;

#[cfg(target_os = "none")]
pub use timers::*;

/// A TSC-to-nanoseconds conversion in pvclock form: shift the delta by `shift` (left when
/// positive), then multiply by `mul_frac / 2^32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscScale {
    pub mul_frac: u32,
    pub shift: i8,
}

impl TscScale {
    /// The scale for a TSC running at `hz`, as Xen computes it (`set_time_scale`): the
    /// largest precision with `mul_frac` in [2^31, 2^32).
    pub fn from_hz(hz: u64) -> Option<TscScale> {
        if hz == 0 {
            return None;
        }
        let mut tps = hz;
        let mut shift: i32 = 0;
        // Bring ticks/s into [0.5 s, 1 s) worth of ns so that the fraction is normalised.
        while tps > 2 * 1_000_000_000 {
            tps >>= 1;
            shift -= 1;
        }
        while tps <= 1_000_000_000 {
            tps <<= 1;
            shift += 1;
        }
        // ns per (shifted) tick as a 32-bit fraction: 1e9 / tps < 1.
        let mul_frac = ((1_000_000_000u128 << 32) / tps as u128) as u64;
        if mul_frac > u32::MAX as u64 {
            return None;
        }
        Some(TscScale { mul_frac: mul_frac as u32, shift: shift as i8 })
    }

    /// Nanoseconds in `delta` TSC ticks.
    pub fn ticks_to_ns(self, delta: u64) -> u64 {
        let d = if self.shift >= 0 { delta << self.shift } else { delta >> -(self.shift as i32) };
        ((d as u128 * self.mul_frac as u128) >> 32) as u64
    }
}

/// One pvclock record (`vcpu_time_info`): Xen's system time at a TSC timestamp, and the
/// scale to extrapolate from there.
#[derive(Clone, Copy, Debug)]
pub struct PvClock {
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub scale: TscScale,
}

impl PvClock {
    /// System time at `tsc`. The difference wraps: Xen offsets a PV guest's TSC to start
    /// near zero when the domain is built, so a timestamp taken before that reads as
    /// "negative".
    pub fn ns_at(&self, tsc: u64) -> u64 {
        self.system_time.wrapping_add(self.scale.ticks_to_ns(tsc.wrapping_sub(self.tsc_timestamp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvclock_extrapolates_across_a_wrapped_timestamp() {
        let clock = PvClock {
            tsc_timestamp: 0u64.wrapping_sub(1_000),
            system_time: 5_000_000_000,
            scale: TscScale { mul_frac: 0x8000_0000, shift: 0 },
        };
        assert_eq!(clock.ns_at(1_000), 5_000_001_000);
        assert_eq!(clock.ns_at(0u64.wrapping_sub(1_000)), 5_000_000_000);
    }

    #[test]
    fn pvclock_scale_matches_xen_values() {
        // A 2 GHz TSC: Xen reports mul_frac 0x80000000, shift 0 (0.5 ns per tick).
        let s = TscScale { mul_frac: 0x8000_0000, shift: 0 };
        assert_eq!(s.ticks_to_ns(2_000_000_000), 1_000_000_000);
        let s = TscScale { mul_frac: 0x8000_0000, shift: -1 };
        assert_eq!(s.ticks_to_ns(4_000_000_000), 1_000_000_000);
    }

    #[test]
    fn from_hz_round_trips_to_one_second() {
        for hz in [
            1_000_000u64,
            1_193_182,
            999_999_999,
            1_000_000_001,
            2_400_000_000,
            3_700_123_456,
            10_000_000_000,
        ] {
            let s = TscScale::from_hz(hz).unwrap();
            assert!(s.mul_frac >= 1 << 31, "{hz}: not normalised: {s:?}");
            let ns = s.ticks_to_ns(hz);
            assert!(ns.abs_diff(1_000_000_000) <= 2, "{hz} Hz -> {ns} ns for one second");
        }
        assert_eq!(TscScale::from_hz(0), None);
    }

    #[test]
    fn large_deltas_do_not_overflow() {
        let s = TscScale::from_hz(3_000_000_000).unwrap();
        // A year of ticks: no overflow, and only the 32-bit fraction's rounding (parts in
        // 10^9, as with Xen's own scale) as error.
        let year_ns: u64 = 1_000_000_000 * 86400 * 365;
        let ns = s.ticks_to_ns(3_000_000_000 * 86400 * 365);
        assert!(ns.abs_diff(year_ns) < year_ns / 100_000_000, "{ns} vs {year_ns}");
    }
}
