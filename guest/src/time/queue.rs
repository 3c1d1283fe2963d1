//! The timer queue: callbacks ordered by deadline (ties in the order they were added).

use alloc::collections::BinaryHeap;
use core::cmp::{Ordering, Reverse};

/// What runs when a timer expires, with the context word given when it was added.
pub type Callback = fn(usize);

/// Names a timer, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId(u64);

struct Entry {
    deadline: u64,
    id: TimerId,
    callback: Callback,
    ctx: usize,
}

impl Entry {
    fn key(&self) -> (u64, u64) {
        (self.deadline, self.id.0)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

#[derive(Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    next_id: u64,
}

impl TimerQueue {
    pub const fn new() -> Self {
        TimerQueue { heap: BinaryHeap::new(), next_id: 0 }
    }

    pub fn add(&mut self, deadline: u64, callback: Callback, ctx: usize) -> TimerId {
        let id = TimerId(self.next_id);
        self.next_id += 1;
        self.heap.push(Reverse(Entry { deadline, id, callback, ctx }));
        id
    }

    /// Removes a timer that has not fired; `false` if it already fired or never existed.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let before = self.heap.len();
        self.heap.retain(|Reverse(e)| e.id != id);
        self.heap.len() != before
    }

    /// The earliest deadline, if any timer is pending.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Takes the earliest timer if it has expired at `now`.
    pub fn pop_expired(&mut self, now: u64) -> Option<(Callback, usize)> {
        if self.next_deadline()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| (e.callback, e.ctx))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nop(_: usize) {}

    fn drain(q: &mut TimerQueue, now: u64) -> Vec<usize> {
        core::iter::from_fn(|| q.pop_expired(now)).map(|(_, ctx)| ctx).collect()
    }

    #[test]
    fn expires_in_deadline_order_and_not_before() {
        let mut q = TimerQueue::new();
        q.add(300, nop, 3);
        q.add(100, nop, 1);
        q.add(200, nop, 2);
        assert_eq!(q.next_deadline(), Some(100));
        assert_eq!(drain(&mut q, 99), []);
        assert_eq!(drain(&mut q, 200), [1, 2]);
        assert_eq!(drain(&mut q, 1000), [3]);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn equal_deadlines_keep_insertion_order() {
        let mut q = TimerQueue::new();
        for ctx in 0..50 {
            q.add(7, nop, ctx);
        }
        assert_eq!(drain(&mut q, 7), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn cancel_removes_only_that_timer() {
        let mut q = TimerQueue::new();
        let a = q.add(10, nop, 1);
        let b = q.add(20, nop, 2);
        assert!(q.cancel(a));
        assert!(!q.cancel(a), "already cancelled");
        assert_eq!(q.len(), 1);
        assert_eq!(drain(&mut q, 100), [2]);
        assert!(!q.cancel(b), "already fired");
    }

    #[test]
    fn many_random_timers_come_out_sorted() {
        let mut q = TimerQueue::new();
        let mut x: u64 = 0x1234_5678;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            q.add(x % 10_000, nop, (x % 10_000) as usize);
        }
        let out = drain(&mut q, u64::MAX);
        assert_eq!(out.len(), 1000);
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
    }
}
