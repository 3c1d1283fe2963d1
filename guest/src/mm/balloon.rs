//! The balloon's bookkeeping: which of our pages Xen has back, and the steps toward the
//! toolstack's target. The platform (the frame allocator, the p2m, the hypercalls) is behind
//! [`Reservation`], so the logic runs on the host against a fake that refuses at will.

use alloc::vec::Vec;

/// Pages moved per step: a step's frame list lives on the stack.
pub const BATCH: usize = 256;

/// What the balloon asks of the platform.
pub trait Reservation {
    /// A frame nothing uses (not allocated, so not granted, pinned or mapped by anyone),
    /// taken out of the frame allocator; `None` when none is free above what the guest keeps.
    fn take_unused(&mut self) -> Option<u64>;
    /// Hands a frame the balloon took but did not give away (or got back) to the allocator.
    fn put_unused(&mut self, pfn: u64);
    /// Gives the frames to Xen; returns how many, from the start, Xen took.
    ///
    /// # Safety
    /// Each frame came from [`Self::take_unused`] and was not put back: nothing uses it.
    unsafe fn give_back(&mut self, pfns: &[u64]) -> usize;
    /// Asks Xen for memory at the frames; returns how many, from the start, it populated.
    fn populate(&mut self, pfns: &[u64]) -> usize;
}

/// Why a step could not move toward the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Short {
    /// Every free page above the guest's reserve is already out: the rest is in use.
    NoFreeMemory,
    /// Xen took or gave none of the pages asked for (past `maxmem`, or out of memory).
    XenRefused,
    /// The list of pages out could not grow (the heap is exhausted).
    NoBookkeeping,
    /// Every page the guest may have is in: the target is above `maxmem` (or, where the guest
    /// cannot grow, above the memory it booted with).
    AllIn,
}

impl core::fmt::Display for Short {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Short::NoFreeMemory => "the rest of the memory is in use",
            Short::XenRefused => "Xen refused the pages",
            Short::NoBookkeeping => "no heap left to list the pages out",
            Short::AllIn => {
                "every page the guest may have is in (the target is above maxmem, or PVH's boot memory)"
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// At the target (or no target was set).
    Done,
    /// Some pages moved; more steps may follow.
    Moved(usize),
    /// Nothing moved: the target is `pages` away and cannot be reached now.
    Stuck { pages: u64, why: Short },
}

pub struct Balloon {
    /// The pages the guest has with the balloon empty: its boot memory, and under PV those
    /// past it up to `maxmem`. What is in use is this less what is out, counted as Linux
    /// counts, not by Xen's figure, which moves for reasons of its own (under PVH a
    /// grant-table frame placed over a RAM page frees that page).
    total: u64,
    /// The frames Xen has back, the latest last (the first to come back in).
    out: Vec<u64>,
    target: Option<u64>,
}

impl Balloon {
    /// A balloon for a guest of `total` pages, none out.
    pub const fn new(total: u64) -> Self {
        Balloon { total, out: Vec::new(), target: None }
    }

    /// The pages the guest has now.
    pub fn pages(&self) -> u64 {
        self.total - self.out.len() as u64
    }

    pub fn pages_out(&self) -> u64 {
        self.out.len() as u64
    }

    pub fn target(&self) -> Option<u64> {
        self.target
    }

    pub fn set_target(&mut self, pages: u64) {
        self.target = Some(pages);
    }

    /// Counts `pfns`, which Xen never populated (past the boot memory, up to `maxmem`), as
    /// out: a target above the boot memory brings them in, the lowest first.
    pub fn add_unpopulated(
        &mut self,
        pfns: core::ops::Range<u64>,
    ) -> Result<(), alloc::collections::TryReserveError> {
        self.out.try_reserve((pfns.end - pfns.start) as usize)?;
        self.total += pfns.end - pfns.start;
        self.out.extend(pfns.rev());
        Ok(())
    }

    /// Whether `pfn` is one Xen has back (a linear search: for the tests).
    #[cfg(test)]
    fn is_out(&self, pfn: u64) -> bool {
        self.out.contains(&pfn)
    }

    /// Moves up to [`BATCH`] pages toward the target.
    pub fn step(&mut self, platform: &mut impl Reservation) -> Step {
        let Some(target) = self.target else { return Step::Done };
        let pages = self.pages();
        if target < pages {
            self.shrink((pages - target).min(BATCH as u64) as usize, platform, pages - target)
        } else if target > pages {
            self.grow((target - pages).min(BATCH as u64) as usize, platform, target - pages)
        } else {
            Step::Done
        }
    }

    fn shrink(&mut self, want: usize, platform: &mut impl Reservation, away: u64) -> Step {
        if self.out.try_reserve(want).is_err() {
            return Step::Stuck { pages: away, why: Short::NoBookkeeping };
        }
        let mut frames = [0u64; BATCH];
        let mut n = 0;
        while n < want {
            let Some(pfn) = platform.take_unused() else { break };
            frames[n] = pfn;
            n += 1;
        }
        if n == 0 {
            return Step::Stuck { pages: away, why: Short::NoFreeMemory };
        }
        // SAFETY: every frame came from take_unused just above.
        let taken = unsafe { platform.give_back(&frames[..n]) }.min(n);
        self.out.extend_from_slice(&frames[..taken]);
        for &pfn in &frames[taken..n] {
            platform.put_unused(pfn);
        }
        if taken == 0 {
            return Step::Stuck { pages: away, why: Short::XenRefused };
        }
        Step::Moved(taken)
    }

    fn grow(&mut self, want: usize, platform: &mut impl Reservation, away: u64) -> Step {
        let n = want.min(self.out.len());
        if n == 0 {
            return Step::Stuck { pages: away, why: Short::AllIn };
        }
        let mut frames = [0u64; BATCH];
        let from = self.out.len() - n;
        frames[..n].copy_from_slice(&self.out[from..]);
        let populated = platform.populate(&frames[..n]).min(n);
        if populated == 0 {
            return Step::Stuck { pages: away, why: Short::XenRefused };
        }
        // The populated ones are the first of the slice: the rest stay out, in order.
        self.out.drain(from..from + populated);
        for &pfn in &frames[..populated] {
            platform.put_unused(pfn);
        }
        Step::Moved(populated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A guest of `free` unused frames above the reserve and a Xen that takes and gives at
    /// most what it is told to.
    struct Fake {
        /// What Xen counts as ours with nothing given back.
        base: u64,
        free: BTreeSet<u64>,
        /// Frames Xen has (given back by us), and the most it takes or gives per call.
        at_xen: BTreeSet<u64>,
        take_limit: usize,
        give_limit: usize,
        in_use: BTreeSet<u64>,
    }

    impl Fake {
        fn new(free: core::ops::Range<u64>) -> Self {
            Fake {
                base: 4096,
                free: free.collect(),
                at_xen: BTreeSet::new(),
                take_limit: usize::MAX,
                give_limit: usize::MAX,
                in_use: (0..16).collect(),
            }
        }
    }

    impl Fake {
        fn pages(&self) -> u64 {
            self.base - self.at_xen.len() as u64
        }
    }

    impl Reservation for Fake {
        fn take_unused(&mut self) -> Option<u64> {
            self.free.pop_first()
        }
        fn put_unused(&mut self, pfn: u64) {
            assert!(!self.at_xen.contains(&pfn), "{pfn} is Xen's");
            assert!(self.free.insert(pfn), "{pfn} freed twice");
        }
        unsafe fn give_back(&mut self, pfns: &[u64]) -> usize {
            let n = pfns.len().min(self.take_limit);
            for &pfn in &pfns[..n] {
                assert!(!self.in_use.contains(&pfn), "{pfn} is in use");
                assert!(self.at_xen.insert(pfn), "{pfn} given twice");
            }
            n
        }
        fn populate(&mut self, pfns: &[u64]) -> usize {
            let n = pfns.len().min(self.give_limit);
            for &pfn in &pfns[..n] {
                assert!(self.at_xen.remove(&pfn), "{pfn} populated but never given");
            }
            n
        }
    }

    fn run(b: &mut Balloon, f: &mut Fake) -> Step {
        for _ in 0..10_000 {
            match b.step(f) {
                Step::Moved(_) => {}
                other => return other,
            }
        }
        panic!("no end");
    }

    #[test]
    fn down_to_the_target_and_back_up_in_batches() {
        let mut f = Fake::new(16..4096);
        let mut b = Balloon::new(4096);
        assert_eq!(b.step(&mut f), Step::Done, "no target yet");
        b.set_target(1024);
        assert_eq!(b.step(&mut f), Step::Moved(BATCH));
        assert_eq!(run(&mut b, &mut f), Step::Done);
        assert_eq!((f.pages(), b.pages_out(), f.at_xen.len()), (1024, 3072, 3072));
        assert!(f.at_xen.iter().all(|&p| b.is_out(p)));
        b.set_target(4096);
        assert_eq!(run(&mut b, &mut f), Step::Done);
        assert_eq!((f.pages(), f.at_xen.len(), f.free.len()), (4096, 0, 4080));
    }

    #[test]
    fn only_free_frames_go_and_the_shortfall_is_said() {
        let mut f = Fake::new(16..100);
        let mut b = Balloon::new(4096);
        b.set_target(10);
        assert_eq!(run(&mut b, &mut f), Step::Stuck { pages: 4012 - 10, why: Short::NoFreeMemory });
        assert_eq!(f.pages(), 4096 - 84);
        // Memory freed later is given then.
        f.put_unused(3000);
        assert_eq!(b.step(&mut f), Step::Moved(1));
    }

    #[test]
    fn what_xen_refuses_stays_ours_and_is_said() {
        let mut f = Fake::new(16..4096);
        f.take_limit = 100;
        let mut b = Balloon::new(4096);
        b.set_target(4096 - 300);
        assert_eq!(b.step(&mut f), Step::Moved(100));
        assert_eq!(f.free.len(), 4080 - 100, "the refused frames went back to the allocator");
        f.take_limit = 0;
        assert_eq!(b.step(&mut f), Step::Stuck { pages: 200, why: Short::XenRefused });
        assert_eq!(f.free.len(), 4080 - 100);
        f.take_limit = usize::MAX;
        assert_eq!(run(&mut b, &mut f), Step::Done);
        // Back up, with Xen giving 50 at a time, then none (maxmem lowered).
        f.give_limit = 50;
        b.set_target(4096);
        assert_eq!(b.step(&mut f), Step::Moved(50));
        f.give_limit = 0;
        assert_eq!(b.step(&mut f), Step::Stuck { pages: 250, why: Short::XenRefused });
        assert_eq!(b.pages_out(), 250);
        assert_eq!(f.at_xen.len(), 250);
        f.give_limit = usize::MAX;
        assert_eq!(run(&mut b, &mut f), Step::Done);
        assert_eq!(f.at_xen.len(), 0);
    }

    #[test]
    fn a_target_above_all_the_guest_may_have_fills_the_balloon_and_says_so() {
        let mut f = Fake::new(16..4096);
        let mut b = Balloon::new(4096);
        b.set_target(2048);
        assert_eq!(run(&mut b, &mut f), Step::Done);
        b.set_target(5000);
        assert_eq!(run(&mut b, &mut f), Step::Stuck { pages: 5000 - 4096, why: Short::AllIn });
        assert_eq!(f.pages(), 4096);
    }

    #[test]
    fn unpopulated_pages_past_the_boot_memory_come_in_lowest_first() {
        let mut f = Fake::new(16..4096);
        // Xen has 4096..6144 (never populated): the fake counts them as given.
        f.base = 6144;
        f.at_xen.extend(4096..6144);
        let mut b = Balloon::new(4096);
        b.add_unpopulated(4096..6144).unwrap();
        assert_eq!(f.pages(), 4096);
        b.set_target(4096 + 10);
        assert_eq!(b.step(&mut f), Step::Moved(10));
        assert!((4096..4106).all(|p| f.free.contains(&p)), "the lowest came in first");
        b.set_target(6144);
        assert_eq!(run(&mut b, &mut f), Step::Done);
        b.set_target(7000);
        assert_eq!(run(&mut b, &mut f), Step::Stuck { pages: 856, why: Short::AllIn });
    }

    #[test]
    fn the_balloon_counts_its_own_pages_not_xens() {
        let mut f = Fake::new(16..4096);
        let mut b = Balloon::new(4096);
        b.set_target(2048);
        assert_eq!(run(&mut b, &mut f), Step::Done);
        // Xen freed 10 of our pages for reasons of its own (a grant frame over RAM): the
        // balloon's figure, like Linux's, does not move.
        f.base -= 10;
        b.set_target(1024);
        assert_eq!(run(&mut b, &mut f), Step::Done);
        assert_eq!((b.pages(), b.pages_out(), f.pages()), (1024, 3072, 1014));
    }
}
