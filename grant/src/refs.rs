//! Grant reference allocation: a free list over a fixed-size pool of references, with no heap.
//!
//! The pool covers only the references whose entries are mapped: it starts empty and
//! [`RefAllocator::grow`] extends it as grant-table frames are added, up to `N`.
//!
//! A reference handed out twice would let two drivers grant different pages under one name;
//! a reference freed twice would later be handed out twice. Both are caught here.

use crate::abi::{GrantRef, NR_RESERVED_ENTRIES};

/// Why an allocation, free or growth failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefError {
    /// Every reference is in use.
    Exhausted,
    /// The reference is not allocated (freed twice, or never handed out).
    NotAllocated(GrantRef),
    /// The reference is outside the pool (a reserved entry, or past its end).
    OutOfRange(GrantRef),
    /// Growing would take the pool past the `N` references it has room for.
    Full,
}

impl core::fmt::Display for RefError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RefError::Exhausted => f.write_str("no free grant reference"),
            RefError::NotAllocated(r) => write!(f, "grant reference {} is not allocated", r.0),
            RefError::OutOfRange(r) => write!(f, "grant reference {} is not ours", r.0),
            RefError::Full => f.write_str("grant reference pool cannot grow further"),
        }
    }
}

/// Link value of an allocated entry.
const IN_USE: u32 = u32::MAX;

/// Hands out grant references `NR_RESERVED_ENTRIES .. NR_RESERVED_ENTRIES + len`, where `len`
/// grows up to `N`. Freed references are reused first.
///
/// The empty pool is all zero bytes, so a `static` of it costs the image nothing.
pub struct RefAllocator<const N: usize> {
    /// Per entry below `len`: the next free entry's index while free (meaningless for the
    /// last one: `free` says where the list ends), [`IN_USE`] otherwise.
    link: [u32; N],
    /// First free entry's index; meaningless while `free` is 0.
    head: u32,
    free: usize,
    len: usize,
}

impl<const N: usize> RefAllocator<N> {
    /// An empty pool; `const` so it can sit in a `static`.
    pub const fn new() -> Self {
        const {
            assert!(N as u64 + NR_RESERVED_ENTRIES as u64 <= IN_USE as u64, "pool too large");
        }
        RefAllocator { link: [0; N], head: 0, free: 0, len: 0 }
    }

    /// References the pool covers now.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// References free right now.
    pub fn available(&self) -> usize {
        self.free
    }

    /// Adds the next `count` references to the pool, all free. Nothing changes on error.
    pub fn grow(&mut self, count: usize) -> Result<(), RefError> {
        let end = self.len.checked_add(count).filter(|&end| end <= N).ok_or(RefError::Full)?;
        if count == 0 {
            return Ok(());
        }
        // The new entries go in front of the free list, chained in ascending order.
        for i in self.len..end - 1 {
            self.link[i] = (i + 1) as u32;
        }
        self.link[end - 1] = self.head;
        self.head = self.len as u32;
        self.free += count;
        self.len = end;
        Ok(())
    }

    /// Takes a free reference.
    pub fn alloc(&mut self) -> Result<GrantRef, RefError> {
        if self.free == 0 {
            return Err(RefError::Exhausted);
        }
        let i = self.head as usize;
        self.head = self.link[i];
        self.link[i] = IN_USE;
        self.free -= 1;
        Ok(GrantRef(i as u32 + NR_RESERVED_ENTRIES))
    }

    /// Whether `r` is handed out.
    pub fn is_allocated(&self, r: GrantRef) -> bool {
        self.index(r).is_ok_and(|i| self.link[i] == IN_USE)
    }

    /// Returns `r` to the pool. The caller must already have ended the other domain's access
    /// to it, or the next owner's grant would be visible to that domain.
    pub fn free(&mut self, r: GrantRef) -> Result<(), RefError> {
        let i = self.index(r)?;
        if self.link[i] != IN_USE {
            return Err(RefError::NotAllocated(r));
        }
        self.link[i] = self.head;
        self.head = i as u32;
        self.free += 1;
        Ok(())
    }

    fn index(&self, r: GrantRef) -> Result<usize, RefError> {
        r.0.checked_sub(NR_RESERVED_ENTRIES)
            .map(|i| i as usize)
            .filter(|&i| i < self.len)
            .ok_or(RefError::OutOfRange(r))
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

    fn full<const N: usize>() -> RefAllocator<N> {
        let mut a = RefAllocator::<N>::new();
        a.grow(N).unwrap();
        a
    }

    #[test]
    fn hands_out_every_reference_once_then_exhausts() {
        let mut a = full::<100>();
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
        let mut a = full::<4>();
        let r = a.alloc().unwrap();
        assert!(a.is_allocated(r));
        a.free(r).unwrap();
        assert!(!a.is_allocated(r));
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
        let mut a = full::<4>();
        for r in [0, 1, 7, 12, 13, u32::MAX] {
            assert_eq!(a.free(GrantRef(r)), Err(RefError::OutOfRange(GrantRef(r))));
            assert!(!a.is_allocated(GrantRef(r)));
        }
        assert_eq!(a.available(), 4);
    }

    #[test]
    fn empty_pool() {
        let mut a = RefAllocator::<0>::new();
        assert_eq!(a.alloc(), Err(RefError::Exhausted));
        assert_eq!(a.free(GrantRef(8)), Err(RefError::OutOfRange(GrantRef(8))));
        assert_eq!(a.grow(0), Ok(()));
        assert_eq!(a.grow(1), Err(RefError::Full));
    }

    #[test]
    fn growth_extends_the_pool_and_stops_at_n() {
        let mut a = RefAllocator::<10>::new();
        assert_eq!((a.capacity(), a.available()), (0, 0));
        assert_eq!(a.alloc(), Err(RefError::Exhausted));
        // Refs past the pool's current end are not ours yet.
        assert_eq!(a.free(GrantRef(8)), Err(RefError::OutOfRange(GrantRef(8))));

        a.grow(4).unwrap();
        let first: Vec<u32> = (0..4).map(|_| a.alloc().unwrap().0).collect();
        assert_eq!(first, [8, 9, 10, 11]);
        assert_eq!(a.alloc(), Err(RefError::Exhausted));

        // Growth keeps the free list: a freed ref and the new ones are all handed out.
        a.free(GrantRef(9)).unwrap();
        a.grow(6).unwrap();
        assert_eq!(a.available(), 7);
        let rest: BTreeSet<u32> = (0..7).map(|_| a.alloc().unwrap().0).collect();
        assert_eq!(rest, [9].into_iter().chain(12..18).collect());
        assert_eq!(a.alloc(), Err(RefError::Exhausted));

        assert_eq!(a.grow(1), Err(RefError::Full));
        assert_eq!(a.grow(usize::MAX), Err(RefError::Full));
        assert_eq!((a.capacity(), a.available()), (10, 0));
    }

    #[test]
    fn matches_a_model_under_churn() {
        const N: usize = 64;
        let mut a = RefAllocator::<N>::new();
        a.grow(16).unwrap();
        let mut held: Vec<GrantRef> = Vec::new();
        // A deterministic pseudo-random mix of allocs, frees and growth.
        let mut x = 0x2545_f491_u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x.is_multiple_of(997) && a.capacity() < N {
                a.grow(16).unwrap();
            } else if !x.is_multiple_of(3) || held.is_empty() {
                match a.alloc() {
                    Ok(r) => {
                        assert!(!held.contains(&r), "{r:?} handed out twice");
                        assert!((8..8 + a.capacity() as u32).contains(&r.0));
                        held.push(r);
                    }
                    Err(e) => {
                        assert_eq!(e, RefError::Exhausted);
                        assert_eq!(held.len(), a.capacity());
                    }
                }
            } else {
                let r = held.swap_remove(x as usize % held.len());
                a.free(r).unwrap();
            }
            assert_eq!(a.available(), a.capacity() - held.len());
        }
        assert_eq!(a.capacity(), N, "the churn should have grown the pool to its end");
    }

    #[test]
    fn usable_in_a_static() {
        static POOL: RefAllocator<16> = RefAllocator::new();
        assert_eq!(POOL.available(), 0);
        assert_eq!(RefError::Exhausted.to_string(), "no free grant reference");
    }
}
