//! The pages a frontend grants its backend, through their whole life, for every driver:
//! taken from a pool (or the guest), granted, settled after the backend answered (the grant
//! ended, kept as a persistent grant, or quarantined while the backend still holds it), and
//! recycled. One implementation, so that blkfront and netfront cannot drift apart on what a
//! held grant means, and so that what a backend can make us pin is bounded in one place.
//!
//! A backend that keeps pages mapped past their request is misbehaving unless the protocol
//! lets it (blkif's persistent grants, up to what we agree to keep). The pages it holds
//! cannot be reused or trusted (it may still write them), so they are quarantined until it
//! lets go. Past [`PagePool::over_cap`] the driver marks the device broken, as Linux's
//! frontends do: nothing new is granted to that backend, so the memory it pins stops
//! growing.

use alloc::vec::Vec;

use log::warn;

use crate::{DomId, GrantError, GrantRef, Page};

/// What a driver needs from the guest for its data pages: memory to fill and grants to
/// give. The guest implements it once (its frame allocator and grant table) for every
/// driver; the drivers' own environment traits add their rings.
pub trait Grants {
    type Page: Page;

    /// A page of any content (the driver overwrites all of it before granting), or `None`
    /// when memory is short.
    fn alloc_page(&mut self) -> Option<Self::Page>;

    /// Takes back a page the driver no longer needs. Its grant, if it had one, has ended.
    fn free_page(&mut self, page: Self::Page);

    /// Grants `domid` access to `frame`, read-only when the backend only reads the page.
    /// The guest's [`crate::GrantTable::grant_access`] does exactly this.
    fn grant(&mut self, frame: u64, domid: DomId, readonly: bool) -> Result<GrantRef, GrantError>;

    /// Revokes a grant made by [`grant`](Self::grant) ([`crate::GrantTable::end_access`]).
    /// [`GrantError::InUse`] means the backend still has the page mapped: the grant stays.
    /// Any other error means the reference is not granted (any more): the page is ours.
    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError>;
}

/// A page and the grant the backend reaches it through.
#[derive(Debug)]
pub struct Granted<P> {
    pub page: P,
    pub gref: GrantRef,
    /// The grant lasts as long as the connection: after each use the page goes back to
    /// the pool still granted.
    pub persistent: bool,
}

/// A page for a request, before it is filled: one still granted from an earlier use
/// (persistent), or one with no grant.
#[derive(Debug)]
pub enum Spare<P> {
    Granted(Granted<P>),
    Bare(P),
}

impl<P: Page> Spare<P> {
    pub fn page(&mut self) -> &mut P {
        match self {
            Spare::Granted(g) => &mut g.page,
            Spare::Bare(p) => p,
        }
    }
}

/// A page after its request, as [`PagePool::settle`] left it.
#[derive(Debug)]
pub enum Settled<P> {
    /// The grant ended: the page is ours alone (safe to read).
    Ended(P),
    /// Kept granted for the next request (the backend maps it persistently). Its content
    /// is the backend's answer, which it wrote before responding.
    Persistent(Granted<P>),
    /// The backend still holds the grant and may still write the page: quarantined.
    Held,
}

impl<P> Settled<P> {
    /// The page, unless the backend holds it.
    pub fn page(&self) -> Option<&P> {
        match self {
            Settled::Ended(p) => Some(p),
            Settled::Persistent(g) => Some(&g.page),
            Settled::Held => None,
        }
    }
}

/// Totals since the pool was made, for the drivers' statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Pages quarantined because the backend held their grant after its answer.
    pub quarantined: u64,
    /// Pages kept granted across requests: ones the backend kept mapped that we reuse
    /// still granted, and ones granted to stay ([`PagePool::grant_kept`]).
    pub persistent_grants: u64,
}

/// One device's data pages: bare ones ready for reuse, persistent ones ready for reuse
/// still granted, and the quarantine.
pub struct PagePool<P> {
    /// Whose pages, for the log lines (`blkfront`, `netfront`).
    driver: &'static str,
    backend: DomId,
    bare: Vec<P>,
    persistent: Vec<Granted<P>>,
    quarantine: Vec<Granted<P>>,
    /// Pages we agree to keep granted across requests (0: the protocol has no such thing).
    max_persistent: usize,
    max_quarantined: usize,
    stats: PoolStats,
}

impl<P: Page> PagePool<P> {
    /// `driver`'s pool for pages granted to `backend`: up to `max_persistent` kept mapped by
    /// agreement, up to `max_quarantined` held against it before [`over_cap`](Self::over_cap).
    pub fn new(
        driver: &'static str,
        backend: DomId,
        max_persistent: usize,
        max_quarantined: usize,
    ) -> Self {
        PagePool {
            driver,
            backend,
            bare: Vec::new(),
            persistent: Vec::new(),
            quarantine: Vec::new(),
            max_persistent,
            max_quarantined,
            stats: PoolStats::default(),
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Pages kept out of use because the backend holds their grant.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Whether the backend holds more pages against the protocol than the device may pin:
    /// the driver then marks the device broken.
    pub fn over_cap(&self) -> bool {
        self.quarantine.len() > self.max_quarantined
    }

    /// [`over_cap`](Self::over_cap), saying so for the device at `path`.
    pub fn check_cap(&self, path: &str) -> bool {
        let over = self.over_cap();
        if over {
            warn!(
                "{}: {path}: the backend holds {} pages past their requests (at most {}): device marked broken",
                self.driver,
                self.quarantine.len(),
                self.max_quarantined
            );
        }
        over
    }

    /// A page with no grant: from the pool, else from the guest.
    pub fn take_bare<G: Grants<Page = P>>(&mut self, grants: &mut G) -> Option<P> {
        self.bare.pop().or_else(|| grants.alloc_page())
    }

    /// A page with no grant from the pool only: one this driver used before, holding what
    /// it last held.
    pub fn take_recycled(&mut self) -> Option<P> {
        self.bare.pop()
    }

    /// A page still granted from an earlier request, if the pool holds one: its content is
    /// what it held then.
    pub fn take_persistent(&mut self) -> Option<Granted<P>> {
        self.persistent.pop()
    }

    /// A page for a request: a persistent one if there is one (no grant to make), else a
    /// bare one.
    pub fn take_spare<G: Grants<Page = P>>(&mut self, grants: &mut G) -> Option<Spare<P>> {
        if let Some(g) = self.persistent.pop() {
            return Some(Spare::Granted(g));
        }
        self.take_bare(grants).map(Spare::Bare)
    }

    /// Grants a filled page to the backend (unless it is granted already), or puts it back
    /// in the pool if the grant fails.
    pub fn grant<G: Grants<Page = P>>(
        &mut self,
        grants: &mut G,
        spare: Spare<P>,
        readonly: bool,
    ) -> Result<Granted<P>, GrantError> {
        let page = match spare {
            Spare::Granted(g) => return Ok(g),
            Spare::Bare(page) => page,
        };
        match grants.grant(page.frame(), self.backend, readonly) {
            Ok(gref) => Ok(Granted { page, gref, persistent: false }),
            Err(e) => {
                self.bare.push(page);
                Err(e)
            }
        }
    }

    /// [`grant`](Self::grant), and the grant made to stay while fewer than `max_persistent`
    /// pages are kept: after its request the page comes back still granted
    /// ([`Settled::Persistent`]) and the next request reuses it with no grant to make or
    /// end. Only for pages the backend reads, and whose old content it may see again: what
    /// it was sent before.
    pub fn grant_kept<G: Grants<Page = P>>(
        &mut self,
        grants: &mut G,
        spare: Spare<P>,
        readonly: bool,
    ) -> Result<Granted<P>, GrantError> {
        let mut g = self.grant(grants, spare, readonly)?;
        if !g.persistent && self.stats.persistent_grants < self.max_persistent as u64 {
            self.stats.persistent_grants += 1;
            g.persistent = true;
        }
        Ok(g)
    }

    /// `g` after the backend answered its request: kept if persistent (or made so, if the
    /// backend still maps it and `persistent_ok` and there is room), else its grant ends;
    /// a page whose grant the backend will not let go of is quarantined.
    pub fn settle<G: Grants<Page = P>>(
        &mut self,
        grants: &mut G,
        mut g: Granted<P>,
        persistent_ok: bool,
    ) -> Settled<P> {
        if g.persistent {
            return Settled::Persistent(g);
        }
        let room = self.stats.persistent_grants < self.max_persistent as u64;
        match grants.end_grant(g.gref) {
            Err(GrantError::InUse(_)) if persistent_ok && room => {
                self.stats.persistent_grants += 1;
                g.persistent = true;
                Settled::Persistent(g)
            }
            Err(GrantError::InUse(_)) => {
                self.stats.quarantined += 1;
                let n = self.stats.quarantined;
                // At the 1st, 2nd, 4th... only: a flood of them must not become one of lines.
                if n.is_power_of_two() {
                    warn!(
                        "{}: backend still holds grant {}: page quarantined ({n} so far)",
                        self.driver, g.gref.0
                    );
                }
                self.quarantine.push(g);
                Settled::Held
            }
            Ok(()) => Settled::Ended(g.page),
            Err(e) => {
                // The reference is not granted: the backend cannot reach the page.
                warn!("{}: ending grant {}: {e}", self.driver, g.gref.0);
                Settled::Ended(g.page)
            }
        }
    }

    /// Puts a settled page where the next request finds it.
    pub fn recycle(&mut self, settled: Settled<P>) {
        match settled {
            Settled::Ended(page) => self.bare.push(page),
            Settled::Persistent(g) => self.persistent.push(g),
            Settled::Held => {}
        }
    }

    /// [`settle`](Self::settle), then [`recycle`](Self::recycle).
    pub fn release<G: Grants<Page = P>>(
        &mut self,
        grants: &mut G,
        g: Granted<P>,
        persistent_ok: bool,
    ) {
        let settled = self.settle(grants, g, persistent_ok);
        self.recycle(settled);
    }

    /// Quarantined pages whose grant the backend has let go of return to the pool.
    pub fn retry_quarantine<G: Grants<Page = P>>(&mut self, grants: &mut G) {
        for g in core::mem::take(&mut self.quarantine) {
            match grants.end_grant(g.gref) {
                Err(GrantError::InUse(_)) => self.quarantine.push(g),
                Ok(()) | Err(_) => self.bare.push(g.page),
            }
        }
    }

    /// Ends the grants of the persistent pages the pool holds (those in use stay): they
    /// become bare pages, or are quarantined if the backend still holds them. For a device
    /// marked broken, whose backend is to reach none of our pages any more.
    pub fn end_persistent<G: Grants<Page = P>>(&mut self, grants: &mut G) {
        for g in core::mem::take(&mut self.persistent) {
            self.release(grants, Granted { persistent: false, ..g }, false);
        }
    }

    /// After the backend disconnected: ends every grant that can end (the persistent ones
    /// included, which a disconnected backend should have unmapped) and gives every page
    /// that is ours back to the guest. Returns how many the backend still holds: they stay
    /// granted and are leaked, never reused (see [`Page`]).
    pub fn shut_down<G: Grants<Page = P>>(mut self, grants: &mut G) -> usize {
        self.end_persistent(grants);
        self.retry_quarantine(grants);
        for page in self.bare {
            grants.free_page(page);
        }
        let leaked = self.quarantine.len();
        if leaked > 0 {
            warn!("{}: leaking {leaked} pages the backend still holds", self.driver);
        }
        leaked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::collections::{BTreeMap, BTreeSet};
    use core::ptr::NonNull;

    #[repr(C, align(4096))]
    struct Mem([u8; crate::PAGE_SIZE]);

    struct TestPage(Box<Mem>, u64);

    // SAFETY: the box is the page's only owner; nothing borrows its bytes.
    unsafe impl Page for TestPage {
        fn base(&self) -> NonNull<u8> {
            NonNull::from(&self.0 .0).cast()
        }
        fn frame(&self) -> u64 {
            self.1
        }
    }

    /// A grant table whose backend holds the references in `held`.
    #[derive(Default)]
    struct Table {
        next_frame: u64,
        live_pages: usize,
        grants: BTreeMap<u32, u64>,
        held: BTreeSet<u32>,
        next_ref: u32,
    }

    impl Grants for Table {
        type Page = TestPage;
        fn alloc_page(&mut self) -> Option<TestPage> {
            self.next_frame += 1;
            self.live_pages += 1;
            Some(TestPage(Box::new(Mem([0; crate::PAGE_SIZE])), self.next_frame))
        }
        fn free_page(&mut self, page: TestPage) {
            assert!(!self.grants.values().any(|&f| f == page.1), "freed while granted");
            self.live_pages -= 1;
        }
        fn grant(&mut self, frame: u64, _: DomId, _: bool) -> Result<GrantRef, GrantError> {
            self.next_ref += 1;
            self.grants.insert(self.next_ref, frame);
            Ok(GrantRef(self.next_ref))
        }
        fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
            if self.held.contains(&gref.0) {
                return Err(GrantError::InUse(gref));
            }
            self.grants.remove(&gref.0).map(drop).ok_or(GrantError::NotGranted(gref))
        }
    }

    fn granted(pool: &mut PagePool<TestPage>, t: &mut Table) -> Granted<TestPage> {
        let spare = pool.take_spare(t).unwrap();
        pool.grant(t, spare, false).unwrap()
    }

    #[test]
    fn pages_are_reused_once_their_grant_ended() {
        let (mut t, mut pool) = (Table::default(), PagePool::new("test", DomId(0), 0, 4));
        for _ in 0..10 {
            let g = granted(&mut pool, &mut t);
            pool.release(&mut t, g, false);
        }
        assert_eq!((t.live_pages, t.grants.len(), pool.quarantined()), (1, 0, 0));
        assert_eq!(pool.shut_down(&mut t), 0);
        assert_eq!(t.live_pages, 0);
    }

    #[test]
    fn held_pages_are_quarantined_until_let_go_and_counted_against_the_cap() {
        let (mut t, mut pool) = (Table::default(), PagePool::new("test", DomId(0), 0, 2));
        for i in 0..3 {
            let g = granted(&mut pool, &mut t);
            t.held.insert(g.gref.0);
            assert!(matches!(pool.settle(&mut t, g, true), Settled::Held));
            assert_eq!(pool.over_cap(), i == 2);
        }
        pool.retry_quarantine(&mut t);
        assert_eq!(pool.quarantined(), 3, "still held");
        t.held.clear();
        pool.retry_quarantine(&mut t);
        assert_eq!((pool.quarantined(), pool.over_cap(), pool.stats().quarantined), (0, false, 3));
        assert_eq!(pool.shut_down(&mut t), 0);
        assert_eq!(t.live_pages, 0);
    }

    #[test]
    fn persistent_pages_up_to_the_limit_then_quarantine() {
        let (mut t, mut pool) = (Table::default(), PagePool::new("test", DomId(0), 2, 8));
        let gs: Vec<_> = (0..3).map(|_| granted(&mut pool, &mut t)).collect();
        t.held.extend(t.grants.keys().copied());
        let settled: Vec<_> = gs.into_iter().map(|g| pool.settle(&mut t, g, true)).collect();
        assert!(matches!(settled[0], Settled::Persistent(_)));
        assert!(matches!(settled[1], Settled::Persistent(_)));
        assert!(matches!(settled[2], Settled::Held));
        for s in settled {
            pool.recycle(s);
        }
        // The next request gets a persistent page: no new grant.
        let grants = t.grants.len();
        assert!(matches!(pool.take_spare(&mut t), Some(Spare::Granted(_))));
        assert_eq!(t.grants.len(), grants);
        assert_eq!(pool.stats(), PoolStats { quarantined: 1, persistent_grants: 2 });
    }

    #[test]
    fn kept_grants_are_reused_up_to_the_limit_and_ended_at_shut_down() {
        let (mut t, mut pool) = (Table::default(), PagePool::new("test", DomId(0), 2, 8));
        let kept = |pool: &mut PagePool<TestPage>, t: &mut Table| {
            let spare = pool.take_spare(t).unwrap();
            pool.grant_kept(t, spare, true).unwrap()
        };
        let gs: Vec<_> = (0..3).map(|_| kept(&mut pool, &mut t)).collect();
        assert_eq!(gs.iter().map(|g| g.persistent).collect::<Vec<_>>(), [true, true, false]);
        for g in gs {
            pool.release(&mut t, g, false);
        }
        assert_eq!(t.grants.len(), 2, "the kept two stay granted, the third ended");
        // The next two uses make no grant; the third takes the bare page and grants it.
        let refs = t.next_ref;
        let gs: Vec<_> = (0..3).map(|_| kept(&mut pool, &mut t)).collect();
        assert_eq!(t.next_ref, refs + 1);
        for g in gs {
            pool.release(&mut t, g, false);
        }
        assert_eq!(pool.stats().persistent_grants, 2);
        assert_eq!(pool.shut_down(&mut t), 0);
        assert_eq!((t.live_pages, t.grants.len()), (0, 0));
    }

    #[test]
    fn shut_down_leaks_only_what_the_backend_still_holds() {
        let (mut t, mut pool) = (Table::default(), PagePool::new("test", DomId(0), 4, 8));
        let a = granted(&mut pool, &mut t);
        let b = granted(&mut pool, &mut t);
        t.held.insert(a.gref.0);
        t.held.insert(b.gref.0);
        let a = pool.settle(&mut t, a, true);
        pool.recycle(a);
        let b = pool.settle(&mut t, b, false);
        pool.recycle(b);
        // The persistent one was let go at disconnect; the quarantined one was not.
        t.held.remove(&1);
        assert_eq!(pool.shut_down(&mut t), 1);
        assert_eq!(t.live_pages, 1);
    }
}
