//! The guest's pages and grant table as a fake backend sees them (feature `test-utils`):
//! one implementation of [`Grants`] for every driver's host tests and for the fuzz targets,
//! with the knobs a test turns to play a backend that holds grants or a guest short of pages.
//!
//! A driver's fake environment is a [`FakeEnv`] over its own world (the fake backend's
//! state, which holds a [`FakeGrantTable`]); the driver crate implements its ring and event
//! traits for that `FakeEnv`, and gets [`Grants`] from here.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{RefCell, RefMut};
use core::ptr::NonNull;

use ring::fake::{Held, SharedMem};
use ring::shared::{FrontRing, Pod};

use crate::{DomId, GrantError, GrantRef, Grants, Page, PAGE_SIZE};

/// A page as the guest hands it out, over memory the fake backend can reach.
pub struct FakePage(Rc<SharedMem>);

// SAFETY: the `Rc` keeps the page's memory alive while `self` holds it; the fake backend
// writes it only while the driver is not running (one thread), and the driver reaches it
// only through the trait's accessors.
unsafe impl Page for FakePage {
    fn base(&self) -> NonNull<u8> {
        self.0.base()
    }

    fn frame(&self) -> u64 {
        self.0.frame()
    }
}

/// One active grant: page `page` of `mem`, to `domid`.
pub struct Grant {
    pub mem: Rc<SharedMem>,
    pub page: usize,
    pub readonly: bool,
    pub domid: DomId,
}

impl Grant {
    pub fn frame(&self) -> u64 {
        self.mem.frame() + self.page as u64
    }

    /// `f` of the whole page in place, as the backend sees it through its mapping.
    pub fn view<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        self.mem.view(self.page * PAGE_SIZE, PAGE_SIZE, f)
    }

    /// Writes into the page through the backend's mapping (or a grant copy).
    pub fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= PAGE_SIZE, "write beyond the granted page");
        self.mem.write(self.page * PAGE_SIZE + off, data);
    }
}

/// The first reference the fake table hands out (the ones below are reserved, as in Xen's).
const FIRST_GREF: u32 = 8;

/// The active grants by reference. References are handed out in increasing order and never
/// reused, so this is a vector indexed by `gref - FIRST_GREF` with a map's read API: the fuzz
/// targets grant hundreds of pages per input, and a tree's compares were a large part of
/// their time.
#[derive(Default)]
pub struct GrantMap {
    slots: Vec<Option<(u32, Grant)>>,
    live: usize,
}

impl GrantMap {
    fn slot(gref: u32) -> Option<usize> {
        gref.checked_sub(FIRST_GREF).map(|i| i as usize)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn get(&self, gref: &u32) -> Option<&Grant> {
        let i = Self::slot(*gref)?;
        self.slots.get(i)?.as_ref().map(|(_, g)| g)
    }

    pub fn contains_key(&self, gref: &u32) -> bool {
        self.get(gref).is_some()
    }

    /// The active references, in increasing order.
    pub fn keys(&self) -> impl Iterator<Item = &u32> {
        self.slots.iter().flatten().map(|(r, _)| r)
    }

    pub fn values(&self) -> impl Iterator<Item = &Grant> {
        self.slots.iter().flatten().map(|(_, g)| g)
    }

    fn insert(&mut self, gref: u32, grant: Grant) {
        let i = Self::slot(gref).expect("a reference the table handed out");
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        assert!(self.slots[i].replace((gref, grant)).is_none(), "reference {gref} reused");
        self.live += 1;
    }

    fn remove(&mut self, gref: &u32) -> Option<Grant> {
        let i = Self::slot(*gref)?;
        let (_, g) = self.slots.get_mut(i)?.take()?;
        self.live -= 1;
        Some(g)
    }
}

impl core::ops::Index<&u32> for GrantMap {
    type Output = Grant;

    fn index(&self, gref: &u32) -> &Grant {
        self.get(gref).expect("no such grant")
    }
}

/// The guest's allocated pages and its grants, with the backend's mappings.
pub struct FakeGrantTable {
    /// Every page allocated and not freed, by frame (a ring's pages each by its own).
    frames: BTreeMap<u64, Rc<SharedMem>>,
    pub grants: GrantMap,
    /// The frames of `grants`, to catch a page granted twice or freed while granted
    /// without a scan of every grant (the fuzz targets grant hundreds per input).
    granted_frames: BTreeSet<u64>,
    next_gref: u32,
    /// Grants the backend keeps mapped: ending them fails with `InUse`.
    pub held: BTreeSet<u32>,
    /// `alloc_page` fails once this many pages are out.
    pub page_limit: usize,
    /// `grant` fails ([`GrantError::Exhausted`]) once this many grants are active.
    pub grant_limit: usize,
    pub pages_freed: usize,
    /// Rings handed back through [`FakeGrantTable::free_ring`].
    pub rings_freed: usize,
    /// The most pages the fake guest gives one ring: 1 by default, as a guest without
    /// multi-page rings. (Enforced by the drivers' fake environment.)
    pub max_ring_pages: usize,
    /// The pages asked for by every ring allocation, given or refused.
    pub ring_requests: Vec<usize>,
}

impl Default for FakeGrantTable {
    fn default() -> Self {
        FakeGrantTable {
            frames: BTreeMap::new(),
            grants: GrantMap::default(),
            granted_frames: BTreeSet::new(),
            next_gref: FIRST_GREF,
            held: BTreeSet::new(),
            page_limit: usize::MAX,
            grant_limit: usize::MAX,
            pages_freed: 0,
            rings_freed: 0,
            max_ring_pages: 1,
            ring_requests: Vec::new(),
        }
    }
}

impl FakeGrantTable {
    /// Grants made since the table was, ended or not.
    pub fn grants_made(&self) -> u32 {
        self.next_gref - FIRST_GREF
    }

    /// Pages allocated and not freed (rings' included).
    pub fn pages_out(&self) -> usize {
        self.frames.len()
    }

    /// The grant `gref` if it is active and gives `domid` the access asked for: what a
    /// backend's map or grant copy checks.
    pub fn mapping(&self, gref: GrantRef, domid: DomId, writable: bool) -> Option<&Grant> {
        self.grants.get(&gref.0).filter(|g| g.domid == domid && !(writable && g.readonly))
    }

    pub fn alloc_page(&mut self) -> Option<FakePage> {
        if self.frames.len() >= self.page_limit {
            return None;
        }
        // Garbage, as a recycled page would hold: the driver must overwrite it.
        let mem = SharedMem::filled(1, 0xee);
        self.frames.insert(mem.frame(), mem.clone());
        Some(FakePage(mem))
    }

    pub fn free_page(&mut self, page: FakePage) {
        let frame = page.frame();
        assert!(!self.granted_frames.contains(&frame), "page freed while granted");
        self.frames.remove(&frame).expect("freeing a page twice");
        self.pages_freed += 1;
    }

    pub fn grant(
        &mut self,
        frame: u64,
        domid: DomId,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let mem = self.frames.get(&frame).expect("granting a page we never gave out").clone();
        assert!(!self.granted_frames.contains(&frame), "page granted twice");
        if self.grants.len() >= self.grant_limit {
            return Err(GrantError::Exhausted);
        }
        let page = (frame - mem.frame()) as usize;
        let r = self.next_gref;
        self.next_gref += 1;
        self.grants.insert(r, Grant { mem, page, readonly, domid });
        self.granted_frames.insert(frame);
        Ok(GrantRef(r))
    }

    pub fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        if self.held.contains(&gref.0) {
            return Err(GrantError::InUse(gref));
        }
        let grant = self.grants.remove(&gref.0).ok_or(GrantError::NotGranted(gref))?;
        self.granted_frames.remove(&grant.frame());
        Ok(())
    }

    /// `pages` zeroed, contiguous pages with a front ring over them, each page granted
    /// writable to `backend`, references in page order: as the guest builds a ring.
    pub fn alloc_ring<Req: Pod, Rsp: Pod>(
        &mut self,
        pages: usize,
        backend: DomId,
    ) -> Result<FakeRing<Req, Rsp>, RingAllocError> {
        if self.frames.len() + pages > self.page_limit {
            return Err(RingAllocError::NoMemory);
        }
        let mem = SharedMem::new(pages);
        let front = mem.front_ring();
        for f in mem.frames() {
            self.frames.insert(f, mem.clone());
        }
        let mut refs = Vec::with_capacity(pages);
        for f in mem.frames() {
            match self.grant(f, backend, false) {
                Ok(r) => refs.push(r),
                Err(e) => {
                    for r in refs {
                        self.end_grant(r).expect("fresh ring grant");
                    }
                    for f in mem.frames() {
                        self.frames.remove(&f);
                    }
                    return Err(RingAllocError::Grant(e));
                }
            }
        }
        Ok(FakeRing { front, refs })
    }

    /// Takes back a ring from [`alloc_ring`](Self::alloc_ring): ends its grants (they must
    /// not be held) and frees its pages.
    pub fn free_ring<Req: Pod, Rsp: Pod>(&mut self, ring: FakeRing<Req, Rsp>) {
        for r in &ring.refs {
            self.end_grant(*r).expect("ring grant");
        }
        for f in ring.front.mem().frames() {
            self.frames.remove(&f);
        }
        self.rings_freed += 1;
    }
}

/// Why [`FakeGrantTable::alloc_ring`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingAllocError {
    /// The page limit does not allow the ring's pages.
    NoMemory,
    Grant(GrantError),
}

/// A ring the fake guest built: its front end and the references of its pages' grants.
pub struct FakeRing<Req: Pod, Rsp: Pod> {
    pub front: Held<FrontRing<Req, Rsp>>,
    pub refs: Vec<GrantRef>,
}

/// A world (a fake backend's state) that holds the guest's fake grant table.
pub trait HasGrantTable {
    fn grant_table(&mut self) -> &mut FakeGrantTable;
}

/// The guest's side effects as a driver sees them, over a shared world `W`: the environment
/// value a driver's host test hands the driver. Clones share the world.
pub struct FakeEnv<W>(pub Rc<RefCell<W>>);

impl<W> Clone for FakeEnv<W> {
    fn clone(&self) -> Self {
        FakeEnv(self.0.clone())
    }
}

impl<W> FakeEnv<W> {
    pub fn world(&self) -> RefMut<'_, W> {
        self.0.borrow_mut()
    }
}

impl<W: HasGrantTable> Grants for FakeEnv<W> {
    type Page = FakePage;

    fn alloc_page(&mut self) -> Option<FakePage> {
        self.world().grant_table().alloc_page()
    }

    fn free_page(&mut self, page: FakePage) {
        self.world().grant_table().free_page(page)
    }

    fn grant(&mut self, frame: u64, domid: DomId, readonly: bool) -> Result<GrantRef, GrantError> {
        self.world().grant_table().grant(frame, domid, readonly)
    }

    fn end_grant(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        self.world().grant_table().end_grant(gref)
    }
}
