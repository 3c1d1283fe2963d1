//! Grant reference allocation: a free list over a fixed pool of references, with no heap.
//!
//! A reference handed out twice would let two drivers grant different pages under one name;
//! a reference freed twice would later be handed out twice. Both are caught here.

use crate::abi::{GrantRef, NR_RESERVED_ENTRIES};

/// Why an allocation or free failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefError {
    /// Every reference is in use.
    Exhausted,
    /// The reference is not allocated (freed twice, or never handed out).
    NotAllocated(GrantRef),
    /// The reference is outside the pool (a reserved entry, or past its end).
    OutOfRange(GrantRef),
}

impl core::fmt::Display for RefError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RefError::Exhausted => f.write_str("no free grant reference"),
            RefError::NotAllocated(r) => write!(f, "grant reference {} is not allocated", r.0),
            RefError::OutOfRange(r) => write!(f, "grant reference {} is not ours", r.0),
        }
    }
}

/// Link value of the last free entry.
const END: u32 = u32::MAX;
/// Link value of an allocated entry.
const IN_USE: u32 = u32::MAX - 1;

/// Hands out the `N` grant references that follow the reserved entries:
/// `NR_RESERVED_ENTRIES .. NR_RESERVED_ENTRIES + N`. Freed references are reused first.
pub struct RefAllocator<const N: usize> {
    /// Per entry: the next free entry's index (or [`END`]) while free, [`IN_USE`] otherwise.
    link: [u32; N],
    /// First free entry's index, or [`END`].
    head: u32,
    free: usize,
}

impl<const N: usize> RefAllocator<N> {
    /// A pool with every reference free; `const` so it can sit in a `static`.
    pub const fn new() -> Self {
        const {
            assert!(N as u64 + NR_RESERVED_ENTRIES as u64 <= IN_USE as u64, "pool too large");
        }
        let mut link = [END; N];
        let mut i = 0;
        while i + 1 < N {
            link[i] = (i + 1) as u32;
            i += 1;
        }
        RefAllocator { link, head: if N == 0 { END } else { 0 }, free: N }
    }

    /// References the pool holds.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// References free right now.
    pub fn available(&self) -> usize {
        self.free
    }

    /// Takes a free reference.
    pub fn alloc(&mut self) -> Result<GrantRef, RefError> {
        if self.head == END {
            return Err(RefError::Exhausted);
        }
        let i = self.head as usize;
        self.head = self.link[i];
        self.link[i] = IN_USE;
        self.free -= 1;
        Ok(GrantRef(i as u32 + NR_RESERVED_ENTRIES))
    }

    /// Returns `r` to the pool. The caller must already have ended the other domain's access
    /// to it, or the next owner's grant would be visible to that domain.
    pub fn free(&mut self, r: GrantRef) -> Result<(), RefError> {
        let i =
            r.0.checked_sub(NR_RESERVED_ENTRIES)
                .filter(|&i| (i as usize) < N)
                .ok_or(RefError::OutOfRange(r))? as usize;
        if self.link[i] != IN_USE {
            return Err(RefError::NotAllocated(r));
        }
        self.link[i] = self.head;
        self.head = i as u32;
        self.free += 1;
        Ok(())
    }
}

impl<const N: usize> Default for RefAllocator<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn hands_out_every_reference_once_then_exhausts() {
        let mut a = RefAllocator::<100>::new();
        assert_eq!(a.capacity(), 100);
        let refs: BTreeSet<u32> = (0..100).map(|_| a.alloc().unwrap().0).collect();
        assert_eq!(refs, (8..108).collect());
        assert_eq!(a.available(), 0);
        assert_eq!(a.alloc(), Err(RefError::Exhausted));
        a.free(GrantRef(50)).unwrap();
        assert_eq!(a.alloc(), Ok(GrantRef(50)));
        assert_eq!(a.alloc(), Err(RefError::Exhausted));
    }

    #[test]
    fn double_free_is_detected() {
        let mut a = RefAllocator::<4>::new();
        let r = a.alloc().unwrap();
        a.free(r).unwrap();
        assert_eq!(a.free(r), Err(RefError::NotAllocated(r)));
        // Never handed out at all.
        assert_eq!(a.free(GrantRef(11)), Err(RefError::NotAllocated(GrantRef(11))));
        // The failed frees did not corrupt the pool.
        assert_eq!(a.available(), 4);
        let all: BTreeSet<_> = (0..4).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn reserved_and_out_of_pool_refs_are_rejected() {
        let mut a = RefAllocator::<4>::new();
        for r in [0, 1, 7, 12, 13, u32::MAX] {
            assert_eq!(a.free(GrantRef(r)), Err(RefError::OutOfRange(GrantRef(r))));
        }
        assert_eq!(a.available(), 4);
    }

    #[test]
    fn empty_pool() {
        let mut a = RefAllocator::<0>::new();
        assert_eq!(a.alloc(), Err(RefError::Exhausted));
        assert_eq!(a.free(GrantRef(8)), Err(RefError::OutOfRange(GrantRef(8))));
    }

    #[test]
    fn matches_a_model_under_churn() {
        const N: usize = 64;
        let mut a = RefAllocator::<N>::new();
        let mut held: Vec<GrantRef> = Vec::new();
        // A deterministic pseudo-random mix of allocs and frees.
        let mut x = 0x2545_f491_u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if !x.is_multiple_of(3) || held.is_empty() {
                match a.alloc() {
                    Ok(r) => {
                        assert!(!held.contains(&r), "{r:?} handed out twice");
                        held.push(r);
                    }
                    Err(e) => {
                        assert_eq!(e, RefError::Exhausted);
                        assert_eq!(held.len(), N);
                    }
                }
            } else {
                let r = held.swap_remove(x as usize % held.len());
                a.free(r).unwrap();
            }
            assert_eq!(a.available(), N - held.len());
        }
    }

    #[test]
    fn usable_in_a_static() {
        static POOL: RefAllocator<16> = RefAllocator::new();
        assert_eq!(POOL.available(), 16);
        assert_eq!(RefError::Exhausted.to_string(), "no free grant reference");
    }
}
