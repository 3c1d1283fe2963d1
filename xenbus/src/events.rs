//! The watch events a client has received and not yet dispatched, bounded in all and per
//! watch, with every operation a flood makes (queue one, evict the oldest of its watch,
//! take the oldest of all) logarithmic in the queue's size: xenstored decides how many
//! events arrive, so their cost must not grow with how many are already waiting.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;

use crate::client::WatchEvent;

/// What became of an event offered to [`EventQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Queued; its watch had its limit queued, so the oldest of them went: this one.
    Evicted(WatchEvent),
    /// Not queued, the queue being full: handed back.
    Full(WatchEvent),
}

pub(crate) struct EventQueue {
    /// Per token, the paths of its events with their arrival numbers, oldest first.
    by_token: BTreeMap<String, VecDeque<(u64, String)>>,
    /// Every queued event's arrival number, with its token: the order of dispatch.
    order: BTreeMap<u64, String>,
    next: u64,
    max_total: usize,
    max_per_token: usize,
}

impl EventQueue {
    pub(crate) fn new(max_total: usize, max_per_token: usize) -> Self {
        EventQueue {
            by_token: BTreeMap::new(),
            order: BTreeMap::new(),
            next: 0,
            max_total,
            max_per_token: max_per_token.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn push(&mut self, event: WatchEvent) -> Pushed {
        let at_limit =
            self.by_token.get_mut(&event.token).filter(|paths| paths.len() >= self.max_per_token);
        let pushed = if let Some((seq, path)) = at_limit.and_then(VecDeque::pop_front) {
            self.order.remove(&seq);
            Pushed::Evicted(WatchEvent { path, token: event.token.clone() })
        } else if self.order.len() >= self.max_total {
            return Pushed::Full(event);
        } else {
            Pushed::Queued
        };
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, event.token.clone());
        self.by_token.entry(event.token).or_default().push_back((seq, event.path));
        pushed
    }

    /// The oldest event of all.
    pub(crate) fn pop(&mut self) -> Option<WatchEvent> {
        let (seq, token) = self.order.pop_first()?;
        let paths = self.by_token.get_mut(&token)?;
        let (front, path) = paths.pop_front()?;
        debug_assert_eq!(front, seq, "a token's oldest event is the oldest of it in order");
        if paths.is_empty() {
            self.by_token.remove(&token);
        }
        Some(WatchEvent { path, token })
    }

    /// Drops every event of `token`; returns how many there were.
    pub(crate) fn remove_token(&mut self, token: &str) -> usize {
        let Some(paths) = self.by_token.remove(token) else { return 0 };
        for (seq, _) in &paths {
            self.order.remove(seq);
        }
        paths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn event(path: &str, token: &str) -> WatchEvent {
        WatchEvent { path: path.to_string(), token: token.to_string() }
    }

    fn drain(q: &mut EventQueue) -> Vec<(String, String)> {
        core::iter::from_fn(|| q.pop()).map(|e| (e.token, e.path)).collect()
    }

    #[test]
    fn events_leave_in_arrival_order_across_tokens() {
        let mut q = EventQueue::new(10, 10);
        for (p, t) in [("a", "1"), ("b", "2"), ("c", "1"), ("d", "3"), ("e", "2")] {
            assert_eq!(q.push(event(p, t)), Pushed::Queued);
        }
        assert_eq!(q.len(), 5);
        let order: Vec<String> = drain(&mut q).into_iter().map(|(_, p)| p).collect();
        assert_eq!(order, ["a", "b", "c", "d", "e"]);
        assert_eq!(q.len(), 0);
        assert!(q.by_token.is_empty());
    }

    #[test]
    fn a_token_at_its_limit_loses_its_oldest_and_keeps_the_rest_in_order() {
        let mut q = EventQueue::new(100, 2);
        q.push(event("x0", "x"));
        q.push(event("y0", "y"));
        q.push(event("x1", "x"));
        assert_eq!(q.push(event("x2", "x")), Pushed::Evicted(event("x0", "x")));
        assert_eq!(q.len(), 3);
        let got = drain(&mut q);
        let want = [("y", "y0"), ("x", "x1"), ("x", "x2")];
        assert_eq!(got, want.map(|(t, p)| (t.to_string(), p.to_string())));
    }

    #[test]
    fn a_full_queue_refuses_new_tokens_but_a_flooded_one_still_rotates() {
        let mut q = EventQueue::new(3, 2);
        q.push(event("a", "1"));
        q.push(event("b", "1"));
        q.push(event("c", "2"));
        assert_eq!(q.push(event("d", "3")), Pushed::Full(event("d", "3")));
        assert_eq!(q.push(event("e", "1")), Pushed::Evicted(event("a", "1")));
        assert_eq!(q.len(), 3);
        let paths: Vec<String> = drain(&mut q).into_iter().map(|(_, p)| p).collect();
        assert_eq!(paths, ["b", "c", "e"]);
    }

    #[test]
    fn removing_a_token_leaves_the_others_in_order() {
        let mut q = EventQueue::new(10, 10);
        for (p, t) in [("a", "1"), ("b", "2"), ("c", "1"), ("d", "2")] {
            q.push(event(p, t));
        }
        assert_eq!(q.remove_token("1"), 2);
        assert_eq!(q.remove_token("1"), 0);
        assert_eq!(q.len(), 2);
        let paths: Vec<String> = drain(&mut q).into_iter().map(|(_, p)| p).collect();
        assert_eq!(paths, ["b", "d"]);
    }

    #[test]
    fn a_flood_of_many_tokens_stays_within_both_bounds() {
        let mut q = EventQueue::new(1024, 64);
        for i in 0..100_000u32 {
            q.push(event("p", &(i % 1000).to_string()));
        }
        assert_eq!(q.len(), 1024);
        assert!(q.by_token.values().all(|paths| paths.len() <= 64));
        assert_eq!(drain(&mut q).len(), 1024);
    }
}
