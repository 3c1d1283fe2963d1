//! Multicall batching: queue hypercalls, issue them all with one `HYPERVISOR_multicall`, and
//! check every entry's result. Xen runs the entries in order and carries on past a failed
//! one, so a batch reports the first failure and how many failed.

use crate::abi::{multicall_entry, nr};
use crate::Errno;

/// Why a batch did not fully succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// The multicall itself failed: no entry may have run.
    Multicall(Errno),
    /// Entries ran, and `failed` of them returned an error; the first was entry `index`
    /// (hypercall `op`), with `errno`.
    Entries { index: usize, op: u32, errno: Errno, failed: usize },
}

impl core::fmt::Display for BatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BatchError::Multicall(e) => write!(f, "multicall failed: {e}"),
            BatchError::Entries { index, op, errno, failed } => {
                write!(f, "{failed} entries failed, first entry {index} (hypercall {op}): {errno}")
            }
        }
    }
}

/// The batch is full: flush it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Up to `N` queued hypercalls.
pub struct Batch<const N: usize> {
    entries: [multicall_entry; N],
    len: usize,
}

impl<const N: usize> Default for Batch<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Batch<N> {
    pub const fn new() -> Self {
        const EMPTY: multicall_entry = multicall_entry { op: 0, result: 0, args: [0; 6] };
        Batch { entries: [EMPTY; N], len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// Queues hypercall `op`; returns its index in the batch.
    ///
    /// # Safety
    /// Pointers among `args` must stay valid until the batch is flushed, and the hypercall
    /// must not break any invariant Rust relies on (as for a direct hypercall).
    pub unsafe fn push(&mut self, op: u32, args: [u64; 6]) -> core::result::Result<usize, Full> {
        if self.len == N {
            return Err(Full);
        }
        self.entries[self.len] = multicall_entry { op: op.into(), result: 0, args };
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Issues every queued entry in one hypercall and empties the batch.
    pub fn flush(&mut self) -> core::result::Result<(), BatchError> {
        if self.len == 0 {
            return Ok(());
        }
        let n = core::mem::take(&mut self.len);
        // SAFETY: the entries were queued through `push`, whose contract keeps their
        // pointer arguments valid until now; Xen reads the array and writes each result.
        let ret = unsafe {
            crate::raw::hypercall2(nr::MULTICALL, self.entries.as_mut_ptr() as u64, n as u64)
        };
        Errno::check(ret).map_err(BatchError::Multicall)?;
        check_results(&self.entries[..n])
    }
}

/// The first failed entry of a completed multicall, and how many failed.
fn check_results(entries: &[multicall_entry]) -> core::result::Result<(), BatchError> {
    let mut first = None;
    let mut failed = 0;
    for (index, e) in entries.iter().enumerate() {
        if let Err(errno) = Errno::check(e.result as i64) {
            failed += 1;
            first.get_or_insert((index, e.op as u32, errno));
        }
    }
    match first {
        None => Ok(()),
        Some((index, op, errno)) => Err(BatchError::Entries { index, op, errno, failed }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op: u64, result: i64) -> multicall_entry {
        multicall_entry { op, result: result as u64, args: [0; 6] }
    }

    #[test]
    fn all_good() {
        assert_eq!(check_results(&[entry(1, 0), entry(14, 3)]), Ok(()));
    }

    #[test]
    fn reports_the_first_failure_and_the_count() {
        let r = check_results(&[entry(1, 0), entry(14, -22), entry(26, 0), entry(1, -1)]);
        assert_eq!(
            r,
            Err(BatchError::Entries { index: 1, op: 14, errno: Errno::EINVAL, failed: 2 })
        );
    }

    #[test]
    fn push_stops_when_full() {
        let mut b = Batch::<2>::new();
        // SAFETY: nothing is flushed in this test.
        unsafe {
            assert_eq!(b.push(17, [0; 6]), Ok(0));
            assert_eq!(b.push(17, [0; 6]), Ok(1));
            assert_eq!(b.push(17, [0; 6]), Err(Full));
        }
        assert!(b.is_full());
    }
}
