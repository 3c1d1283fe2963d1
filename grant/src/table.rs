//! The grant table itself: the frames Xen shares with us, viewed as atomics, and the
//! references handed out over them.
//!
//! Xen and, through Xen, every domain we grant to can change an entry's `flags` at any time
//! (`GTF_reading`/`GTF_writing` while the grantee uses the page), so each field is an atomic
//! and nothing read back from the table is trusted beyond "the peer is using this now".

use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use crate::abi::{
    DomId, GrantEntryV1, GrantFlags, GrantRef, ENTRIES_PER_FRAME, NR_RESERVED_ENTRIES,
};
use crate::refs::RefAllocator;
use crate::GrantError;

/// The most frames the table can hold: 16376 references. Xen 4.17 allows 64 by default
/// (`max_grant_frames`); a unikernel with a disk and a network card needs a few.
pub const MAX_FRAMES: usize = 32;

const PER_FRAME: usize = ENTRIES_PER_FRAME as usize;
const MAX_REFS: usize = MAX_FRAMES * PER_FRAME - NR_RESERVED_ENTRIES as usize;

/// A `grant_entry_v1` as it lives in shared memory.
#[repr(C)]
struct Entry {
    flags: AtomicU16,
    domid: AtomicU16,
    frame: AtomicU32,
}

const _: () = assert!(size_of::<Entry>() == size_of::<GrantEntryV1>());
const _: () = assert!(offset_of!(Entry, flags) == offset_of!(GrantEntryV1, flags));
const _: () = assert!(offset_of!(Entry, domid) == offset_of!(GrantEntryV1, domid));
const _: () = assert!(offset_of!(Entry, frame) == offset_of!(GrantEntryV1, frame));

/// One 4 KiB grant-table frame.
#[repr(C, align(4096))]
struct Frame([Entry; PER_FRAME]);

const _: () = assert!(size_of::<Frame>() == 4096);

/// What Xen sets while the grantee has the page mapped or is copying to or from it.
const BUSY: u16 = GrantFlags::READING.bits() | GrantFlags::WRITING.bits();

/// Our grant table: up to [`MAX_FRAMES`] frames, and the references over them that are
/// ours to hand out (all but the first [`NR_RESERVED_ENTRIES`]).
///
/// The empty table is all zero bytes, so a `static` of it lands in `.bss`.
pub struct GrantTable {
    frames: [Option<&'static Frame>; MAX_FRAMES],
    nr_frames: usize,
    /// How many frames Xen lets us have, capped at [`MAX_FRAMES`].
    max_frames: usize,
    refs: RefAllocator<MAX_REFS>,
}

impl GrantTable {
    /// A table with no frames: every [`grant_access`](Self::grant_access) fails with
    /// [`GrantError::Exhausted`] until frames are added.
    pub const fn new() -> Self {
        GrantTable {
            frames: [None; MAX_FRAMES],
            nr_frames: 0,
            max_frames: 0,
            refs: RefAllocator::new(),
        }
    }

    /// Records how many frames Xen allows this domain (`max_nr_frames` of
    /// `GNTTABOP_query_size`), which [`needs_frames`](Self::needs_frames) asks for up to.
    pub fn set_max_frames(&mut self, xen_max: u32) {
        self.max_frames = (xen_max as usize).min(MAX_FRAMES);
    }

    /// The most frames the table will ask for: Xen's limit, capped at [`MAX_FRAMES`]; 0 until
    /// [`set_max_frames`](Self::set_max_frames).
    pub fn max_frames(&self) -> usize {
        self.max_frames
    }

    /// Frames added so far. Frame `i` holds references `i * 512 .. (i + 1) * 512`.
    pub fn frames(&self) -> usize {
        self.nr_frames
    }

    /// References free right now.
    pub fn available(&self) -> usize {
        self.refs.available()
    }

    /// Whether every reference is handed out and Xen allows another frame: the guest then
    /// asks `GNTTABOP_setup_table` for `frames() + 1` frames, maps the last one and passes it
    /// to [`add_frame`](Self::add_frame).
    pub fn needs_frames(&self) -> bool {
        self.refs.available() == 0 && self.nr_frames < self.max_frames
    }

    /// Appends the next frame of the table (frame number [`frames()`](Self::frames) in the
    /// list `GNTTABOP_setup_table` returned) and makes its references available.
    ///
    /// # Safety
    /// 1. `frame` is the address of that grant-table frame, mapped readable and writable and
    ///    aligned to 4096 bytes, and stays mapped there for the rest of the program.
    /// 2. Within this domain, nothing but this table accesses those 4096 bytes from now on
    ///    (Xen and the domains we grant to do, which is why the table uses atomics).
    pub unsafe fn add_frame(&mut self, frame: NonNull<u8>) -> Result<(), GrantError> {
        let slot = self.frames.get_mut(self.nr_frames).ok_or(GrantError::TableFull)?;
        let new_refs =
            if self.nr_frames == 0 { PER_FRAME - NR_RESERVED_ENTRIES as usize } else { PER_FRAME };
        self.refs.grow(new_refs)?;
        // SAFETY: by contract 1 the frame is mapped for good and aligned for `Frame`, whose
        // fields are all atomics, so a shared reference stays sound however Xen writes to it;
        // by contract 2 no other Rust access in this domain aliases it.
        *slot = Some(unsafe { frame.cast::<Frame>().as_ref() });
        self.nr_frames += 1;
        Ok(())
    }

    /// Lets `domid` access our page `frame` (a machine frame under PV, a guest frame
    /// otherwise), read-only or read-write, under a new reference.
    pub fn grant_access(
        &mut self,
        domid: DomId,
        frame: u64,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let frame32 = u32::try_from(frame).map_err(|_| GrantError::FrameTooLarge(frame))?;
        let r = self.refs.alloc()?;
        // The allocator covers only refs of added frames, so the entry exists.
        let e = self.entry(r).ok_or(GrantError::NotGranted(r))?;
        let mut flags = GrantFlags::PERMIT_ACCESS;
        flags.set(GrantFlags::READONLY, readonly);
        e.domid.store(domid.0, Ordering::Relaxed);
        e.frame.store(frame32, Ordering::Relaxed);
        // Release: Xen reads `flags` first and must not see the grant before its domid and
        // frame (Linux's `wmb()` in gnttab_update_entry_v1).
        e.flags.store(flags.bits(), Ordering::Release);
        Ok(r)
    }

    /// Revokes the grant under `r` and frees the reference.
    ///
    /// While the grantee has the page mapped (or Xen is copying) this refuses with
    /// [`GrantError::InUse`] and leaves the grant in place: the caller retries later, and must
    /// not reuse the page until this succeeds.
    pub fn end_access(&mut self, r: GrantRef) -> Result<(), GrantError> {
        if !self.refs.is_allocated(r) {
            return Err(GrantError::NotGranted(r));
        }
        let e = self.entry(r).ok_or(GrantError::NotGranted(r))?;
        let flags = e.flags.load(Ordering::Relaxed);
        if flags & BUSY != 0 {
            return Err(GrantError::InUse(r));
        }
        // The exchange fails only if Xen changed the flags since the load, which it does only
        // for a grantee using the page: that is "in use" too, so unlike Linux's
        // gnttab_end_foreign_access_ref_v1 we report it instead of looping, and a grantee that
        // maps and unmaps without pause cannot keep us spinning. Acquire: once the grant is
        // gone, our later accesses to the page come after the grantee's last ones.
        e.flags
            .compare_exchange(flags, 0, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| GrantError::InUse(r))?;
        self.refs.free(r)?;
        Ok(())
    }

    /// Whether the grantee of `r` has the page mapped or Xen is copying it right now: false
    /// for a reference the table has no entry for. Reserved entries are reported too (the
    /// console and xenstore pages' grants belong to the toolstack, not to us).
    pub fn is_in_use(&self, r: GrantRef) -> bool {
        self.entry(r).is_some_and(|e| e.flags.load(Ordering::Relaxed) & BUSY != 0)
    }

    fn entry(&self, r: GrantRef) -> Option<&'static Entry> {
        let i = r.0 as usize;
        let frame = (*self.frames.get(i / PER_FRAME)?)?;
        Some(&frame.0[i % PER_FRAME])
    }
}

impl Default for GrantTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{GTF_INVALID, RESERVED_CONSOLE, RESERVED_XENSTORE};
    use std::collections::BTreeSet;

    /// A zeroed grant-table frame, as Xen hands it out, leaked so it outlives the table.
    fn fake_frame() -> &'static Frame {
        // SAFETY: an all-zero `Frame` is valid (atomics of 0).
        Box::leak(Box::new(unsafe { core::mem::zeroed::<Frame>() }))
    }

    /// `frames` fresh fake frames in a table; Xen allows `MAX_FRAMES`.
    fn table_with(frames: usize) -> (Box<GrantTable>, Vec<&'static Frame>) {
        let mut t = Box::new(GrantTable::new());
        t.set_max_frames(MAX_FRAMES as u32);
        let fakes: Vec<_> = (0..frames).map(|_| fake_frame()).collect();
        for f in &fakes {
            // SAFETY: leaked, page-aligned, zeroed; the test only touches it atomically, as
            // Xen would.
            unsafe { t.add_frame(NonNull::from(*f).cast()) }.unwrap();
        }
        (t, fakes)
    }

    /// What Xen would read from entry `r`.
    fn read(fakes: &[&'static Frame], r: GrantRef) -> GrantEntryV1 {
        let e = &fakes[r.0 as usize / PER_FRAME].0[r.0 as usize % PER_FRAME];
        GrantEntryV1 {
            flags: e.flags.load(Ordering::Acquire),
            domid: DomId(e.domid.load(Ordering::Relaxed)),
            frame: e.frame.load(Ordering::Relaxed),
        }
    }

    /// The peer maps (or stops mapping) the page: Xen flips bits in `flags`.
    fn peer(fakes: &[&'static Frame], r: GrantRef, set: GrantFlags, on: bool) {
        let e = &fakes[r.0 as usize / PER_FRAME].0[r.0 as usize % PER_FRAME];
        if on {
            e.flags.fetch_or(set.bits(), Ordering::AcqRel);
        } else {
            e.flags.fetch_and(!set.bits(), Ordering::AcqRel);
        }
    }

    #[test]
    fn entry_is_what_xen_expects() {
        let (mut t, fakes) = table_with(1);
        let rw = t.grant_access(DomId(5), 0x8_1234, false).unwrap();
        assert_eq!(
            read(&fakes, rw),
            GrantEntryV1 { flags: 1, domid: DomId(5), frame: 0x8_1234 } // GTF_permit_access
        );
        let ro = t.grant_access(DomId(0x12), u32::MAX.into(), true).unwrap();
        assert_eq!(
            read(&fakes, ro),
            // GTF_permit_access | GTF_readonly
            GrantEntryV1 { flags: 1 | 4, domid: DomId(0x12), frame: u32::MAX }
        );
        // The bytes themselves, as Xen's `grant_entry_v1_t` sees them (x86 is little-endian).
        let bytes: &[u8; 4096] = frame_bytes(fakes[0]);
        let off = ro.0 as usize * 8;
        assert_eq!(&bytes[off..off + 8], &[5, 0, 0x12, 0, 0xff, 0xff, 0xff, 0xff]);
    }

    fn frame_bytes(f: &'static Frame) -> &'static [u8; 4096] {
        // SAFETY: `Frame` is 4096 bytes of plain integers; nothing writes it concurrently in
        // this test.
        unsafe { &*(f as *const Frame).cast::<[u8; 4096]>() }
    }

    #[test]
    fn grant_then_end_clears_the_entry_and_frees_the_ref() {
        let (mut t, fakes) = table_with(1);
        let avail = t.available();
        let r = t.grant_access(DomId(1), 42, false).unwrap();
        assert_eq!(t.available(), avail - 1);
        assert!(!t.is_in_use(r));
        t.end_access(r).unwrap();
        assert_eq!(read(&fakes, r).flags, GTF_INVALID);
        assert_eq!(t.available(), avail);
    }

    #[test]
    fn end_is_refused_while_the_peer_uses_the_page() {
        for busy in
            [GrantFlags::READING, GrantFlags::WRITING, GrantFlags::READING | GrantFlags::WRITING]
        {
            let (mut t, fakes) = table_with(1);
            let r = t.grant_access(DomId(3), 7, false).unwrap();
            let avail = t.available();
            peer(&fakes, r, busy, true);
            assert!(t.is_in_use(r));
            for _ in 0..3 {
                assert_eq!(t.end_access(r), Err(GrantError::InUse(r)));
            }
            // The grant is intact and the ref still ours.
            let e = read(&fakes, r);
            assert_eq!((e.flags & 3, e.domid, e.frame), (1, DomId(3), 7));
            assert_eq!(t.available(), avail);

            peer(&fakes, r, busy, false);
            assert!(!t.is_in_use(r));
            t.end_access(r).unwrap();
            assert_eq!(read(&fakes, r).flags, GTF_INVALID);
            assert_eq!(t.available(), avail + 1);
        }
    }

    #[test]
    fn end_races_a_peer_that_maps_and_unmaps() {
        let (mut t, fakes) = table_with(1);
        let r = t.grant_access(DomId(3), 7, false).unwrap();
        let e = &fakes[0].0[r.0 as usize];
        let permit = GrantFlags::PERMIT_ACCESS.bits();
        std::thread::scope(|s| {
            // Xen's _set_status_v1 on the peer's behalf: it marks the entry busy only while
            // the grant stands, and the grant must not vanish while it is busy.
            s.spawn(|| {
                while e
                    .flags
                    .compare_exchange(permit, permit | BUSY, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    std::hint::spin_loop();
                    assert_eq!(e.flags.load(Ordering::Relaxed), permit | BUSY);
                    e.flags.fetch_and(!BUSY, Ordering::Release);
                }
            });
            let mut refused = 0u64;
            loop {
                match t.end_access(r) {
                    Ok(()) => break,
                    Err(err) => assert_eq!(err, GrantError::InUse(r)),
                }
                refused += 1;
                assert!(refused < 100_000_000, "end_access never got through");
            }
        });
        assert_eq!(read(&fakes, r).flags, GTF_INVALID);
        assert_eq!(t.end_access(r), Err(GrantError::NotGranted(r)));
    }

    #[test]
    fn double_end_and_foreign_refs_are_errors() {
        let (mut t, _fakes) = table_with(1);
        let r = t.grant_access(DomId(1), 1, true).unwrap();
        t.end_access(r).unwrap();
        assert_eq!(t.end_access(r), Err(GrantError::NotGranted(r)));
        for bad in [
            RESERVED_CONSOLE,
            RESERVED_XENSTORE,
            GrantRef(7),
            GrantRef(100),
            GrantRef(512),
            GrantRef(u32::MAX),
        ] {
            assert_eq!(t.end_access(bad), Err(GrantError::NotGranted(bad)));
            assert!(!t.is_in_use(bad));
        }
        assert_eq!(t.available(), PER_FRAME - 8);
    }

    #[test]
    fn reserved_refs_are_never_handed_out_and_left_alone() {
        let (mut t, fakes) = table_with(1);
        // What the toolstack put in the console and xenstore entries.
        fakes[0].0[0].flags.store(1, Ordering::Relaxed);
        fakes[0].0[0].frame.store(0xc0, Ordering::Relaxed);
        fakes[0].0[1].flags.store(1, Ordering::Relaxed);
        fakes[0].0[1].frame.store(0x5e, Ordering::Relaxed);
        let refs: BTreeSet<u32> =
            std::iter::from_fn(|| t.grant_access(DomId(1), 9, false).ok()).map(|r| r.0).collect();
        assert_eq!(refs, (8..512).collect());
        assert_eq!(
            read(&fakes, RESERVED_CONSOLE),
            GrantEntryV1 { flags: 1, domid: DomId(0), frame: 0xc0 }
        );
        assert_eq!(
            read(&fakes, RESERVED_XENSTORE),
            GrantEntryV1 { flags: 1, domid: DomId(0), frame: 0x5e }
        );
        for r in 2..8 {
            assert_eq!(read(&fakes, GrantRef(r)), GrantEntryV1::default());
        }
        // The peer using the console page shows, but the entry is not ours to end.
        peer(&fakes, RESERVED_CONSOLE, GrantFlags::READING, true);
        assert!(t.is_in_use(RESERVED_CONSOLE));
    }

    #[test]
    fn exhaustion_is_an_error_and_recovers() {
        let (mut t, fakes) = table_with(1);
        let mut held: Vec<GrantRef> =
            std::iter::from_fn(|| t.grant_access(DomId(2), 1, false).ok()).collect();
        assert_eq!(held.len(), PER_FRAME - 8);
        assert_eq!(t.grant_access(DomId(2), 1, false), Err(GrantError::Exhausted));
        assert!(t.needs_frames());

        // A ref the peer still uses stays out of the pool.
        let busy = held.pop().unwrap();
        peer(&fakes, busy, GrantFlags::WRITING, true);
        assert_eq!(t.end_access(busy), Err(GrantError::InUse(busy)));
        assert_eq!(t.grant_access(DomId(2), 1, false), Err(GrantError::Exhausted));

        for r in held.drain(..10) {
            t.end_access(r).unwrap();
        }
        assert!(!t.needs_frames());
        for _ in 0..10 {
            held.push(t.grant_access(DomId(2), 1, false).unwrap());
        }
        assert_eq!(t.grant_access(DomId(2), 1, false), Err(GrantError::Exhausted));
        peer(&fakes, busy, GrantFlags::WRITING, false);
        t.end_access(busy).unwrap();
        assert_eq!(t.grant_access(DomId(2), 1, false), Ok(busy));
    }

    #[test]
    fn adding_a_frame_extends_the_refs() {
        let (mut t, mut fakes) = table_with(1);
        t.set_max_frames(2);
        assert_eq!((t.frames(), t.max_frames()), (1, 2));
        while t.grant_access(DomId(4), 1, false).is_ok() {}
        assert!(t.needs_frames());

        let f = fake_frame();
        // SAFETY: as in `table_with`.
        unsafe { t.add_frame(NonNull::from(f).cast()) }.unwrap();
        fakes.push(f);
        assert_eq!((t.frames(), t.available()), (2, PER_FRAME));
        assert!(!t.needs_frames());
        let refs: BTreeSet<u32> = std::iter::from_fn(|| t.grant_access(DomId(4), 0xabc, true).ok())
            .map(|r| r.0)
            .collect();
        assert_eq!(refs, (512..1024).collect());
        assert_eq!(
            read(&fakes, GrantRef(700)),
            GrantEntryV1 { flags: 5, domid: DomId(4), frame: 0xabc }
        );
        // Xen allows no more: exhausted, but asking for frames would be pointless.
        assert!(!t.needs_frames());
        t.end_access(GrantRef(1023)).unwrap();
        assert_eq!(read(&fakes, GrantRef(1023)).flags, GTF_INVALID);
    }

    #[test]
    fn table_stops_at_max_frames() {
        let (mut t, _fakes) = table_with(MAX_FRAMES);
        t.set_max_frames(u32::MAX);
        assert_eq!((t.max_frames(), t.available()), (MAX_FRAMES, MAX_REFS));
        let f = fake_frame();
        // SAFETY: as in `table_with`.
        assert_eq!(unsafe { t.add_frame(NonNull::from(f).cast()) }, Err(GrantError::TableFull));
        assert_eq!(t.frames(), MAX_FRAMES);
        while t.grant_access(DomId(4), 1, false).is_ok() {}
        assert!(!t.needs_frames());
        assert_eq!(
            t.end_access(GrantRef((MAX_FRAMES * PER_FRAME) as u32)),
            Err(GrantError::NotGranted(GrantRef(16384)))
        );
    }

    #[test]
    fn no_frames_no_grants() {
        let mut t = GrantTable::new();
        assert_eq!(t.grant_access(DomId(1), 1, false), Err(GrantError::Exhausted));
        // Xen's limit unknown: nothing to ask for yet.
        assert!(!t.needs_frames());
        t.set_max_frames(4);
        assert!(t.needs_frames());
        assert!(!t.is_in_use(GrantRef(8)));
    }

    #[test]
    fn frame_beyond_32_bits_is_refused_without_using_a_ref() {
        let (mut t, _fakes) = table_with(1);
        let avail = t.available();
        let big = u64::from(u32::MAX) + 1;
        assert_eq!(t.grant_access(DomId(1), big, false), Err(GrantError::FrameTooLarge(big)));
        assert_eq!(t.available(), avail);
    }

    #[test]
    fn usable_in_a_static() {
        // The guest keeps the table in a `static` lock: it must be `Send` and const-built.
        static TABLE: GrantTable = GrantTable::new();
        fn send<T: Send + Sync>(_: &T) {}
        send(&TABLE);
        assert_eq!(TABLE.frames(), 0);
    }
}
