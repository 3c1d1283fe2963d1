//! Page-frame bookkeeping: one bit per frame, set = in use. Frames start out in use and
//! are handed to the allocator range by range as the boot code learns which are free.

/// Why a frame operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame (or no free run of the requested length).
    Exhausted,
    /// The frame is beyond the bitmap.
    OutOfRange(u64),
    /// Freeing a frame that is not allocated.
    DoubleFree(u64),
}

pub struct FrameBitmap<'a> {
    words: &'a mut [u64],
    frames: u64,
    free: u64,
    /// Where the next search starts: allocation is next-fit.
    hint: u64,
}

impl<'a> FrameBitmap<'a> {
    /// Bookkeeping for `frames` frames, all in use, in `words` (which must hold them).
    pub fn new(words: &'a mut [u64], frames: u64) -> Self {
        assert!(words.len() as u64 * 64 >= frames, "bitmap too small");
        words.fill(u64::MAX);
        FrameBitmap { words, frames, free: 0, hint: 0 }
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn free_frames(&self) -> u64 {
        self.free
    }

    fn in_use(&self, f: u64) -> bool {
        self.words[(f / 64) as usize] & (1 << (f % 64)) != 0
    }

    fn set(&mut self, f: u64, used: bool) {
        let w = &mut self.words[(f / 64) as usize];
        if used {
            *w |= 1 << (f % 64);
        } else {
            *w &= !(1 << (f % 64));
        }
    }

    /// Makes `[start, end)` available (frames already free stay free).
    pub fn add_free_range(&mut self, start: u64, end: u64) {
        for f in start..end.min(self.frames) {
            if self.in_use(f) {
                self.set(f, false);
                self.free += 1;
            }
        }
    }

    pub fn alloc(&mut self) -> Result<u64, FrameError> {
        self.alloc_run(1)
    }

    /// `count` contiguous frames; returns the first.
    pub fn alloc_run(&mut self, count: u64) -> Result<u64, FrameError> {
        if count == 0 || count > self.free {
            return Err(FrameError::Exhausted);
        }
        // Two passes: from the hint to the end, then from the start.
        for (from, to) in [(self.hint, self.frames), (0, self.hint.min(self.frames))] {
            if let Some(first) = self.find_run(from, to, count) {
                for f in first..first + count {
                    self.set(f, true);
                }
                self.free -= count;
                self.hint = first + count;
                return Ok(first);
            }
        }
        Err(FrameError::Exhausted)
    }

    fn find_run(&self, from: u64, to: u64, count: u64) -> Option<u64> {
        let mut f = from;
        let mut run_start = from;
        while f < to {
            // Skip fully used words quickly.
            if f.is_multiple_of(64) && self.words[(f / 64) as usize] == u64::MAX {
                f += 64;
                run_start = f;
                continue;
            }
            if self.in_use(f) {
                run_start = f + 1;
            } else if f + 1 - run_start == count {
                return Some(run_start);
            }
            f += 1;
        }
        None
    }

    /// Covers frames up to `frames` (as many as the words hold), the new ones in use until
    /// added or freed: memory the domain may be given later.
    pub fn grow(&mut self, frames: u64) {
        let cap = self.words.len() as u64 * 64;
        // Every bit past the old count is still set: `new` set them all, and nothing clears
        // a bit at or past the count.
        self.frames = self.frames.max(frames.min(cap));
    }

    pub fn free(&mut self, f: u64) -> Result<(), FrameError> {
        if f >= self.frames {
            return Err(FrameError::OutOfRange(f));
        }
        if !self.in_use(f) {
            return Err(FrameError::DoubleFree(f));
        }
        self.set(f, false);
        self.free += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_and_grows_by_ranges() {
        let mut words = [0u64; 4];
        let mut b = FrameBitmap::new(&mut words, 200);
        assert_eq!(b.alloc(), Err(FrameError::Exhausted));
        b.add_free_range(10, 20);
        b.add_free_range(15, 25); // overlaps: counted once
        assert_eq!(b.free_frames(), 15);
        b.add_free_range(190, 1000); // clipped to the bitmap
        assert_eq!(b.free_frames(), 25);
    }

    #[test]
    fn grown_frames_start_in_use_and_free_one_by_one() {
        let mut words = [0u64; 4];
        let mut b = FrameBitmap::new(&mut words, 100);
        b.add_free_range(0, 100);
        b.grow(1000);
        assert_eq!((b.frames(), b.free_frames()), (256, 100));
        assert_eq!(b.free(300), Err(FrameError::OutOfRange(300)));
        assert_eq!(b.free(200), Ok(()));
        assert_eq!(b.free(200), Err(FrameError::DoubleFree(200)));
        assert_eq!(b.free_frames(), 101);
        b.grow(50);
        assert_eq!(b.frames(), 256, "never shrinks");
    }

    #[test]
    fn allocates_every_free_frame_once() {
        let mut words = [0u64; 2];
        let mut b = FrameBitmap::new(&mut words, 128);
        b.add_free_range(3, 128);
        let mut got: Vec<u64> = (0..125).map(|_| b.alloc().unwrap()).collect();
        assert_eq!(b.alloc(), Err(FrameError::Exhausted));
        got.sort();
        assert_eq!(got, (3..128).collect::<Vec<_>>());
        b.free(50).unwrap();
        assert_eq!(b.alloc(), Ok(50));
    }

    #[test]
    fn contiguous_runs_skip_holes_and_wrap() {
        let mut words = [0u64; 4];
        let mut b = FrameBitmap::new(&mut words, 256);
        b.add_free_range(0, 256);
        let a = b.alloc_run(100).unwrap();
        assert_eq!(a, 0);
        b.free(150).unwrap_err(); // 150 is free already
        let hole = b.alloc().unwrap(); // 100
        assert_eq!(hole, 100);
        let c = b.alloc_run(150).unwrap();
        assert_eq!(c, 101);
        assert_eq!(b.alloc_run(10), Err(FrameError::Exhausted)); // only 5 left
        for f in 0..20 {
            b.free(f).unwrap();
        }
        // The hint is past the end: the search wraps to the start.
        assert_eq!(b.alloc_run(20), Ok(0));
    }

    #[test]
    fn bad_frees_are_errors() {
        let mut words = [0u64; 1];
        let mut b = FrameBitmap::new(&mut words, 64);
        b.add_free_range(0, 64);
        assert_eq!(b.free(64), Err(FrameError::OutOfRange(64)));
        assert_eq!(b.free(5), Err(FrameError::DoubleFree(5)));
        let f = b.alloc().unwrap();
        b.free(f).unwrap();
        assert_eq!(b.free(f), Err(FrameError::DoubleFree(f)));
    }
}
