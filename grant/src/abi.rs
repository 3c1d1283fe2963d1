//! Grant-table ABI of Xen 4.17 (`public/grant_table.h`), version 1 entries only.
//! Layouts are checked against the C headers; see the asserts under each type.

use core::mem::{offset_of, size_of};

use bitflags::bitflags;
use hypercall::abi::xen_pfn_t;
use ring::shared::Pod;

/// `grant_ref_t`: an index into the grant table, named to the other domain instead of an
/// address.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

// SAFETY: a transparent u32.
unsafe impl Pod for GrantRef {}

/// `domid_t` (`public/xen.h`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(pub u16);

// SAFETY: a transparent u16.
unsafe impl Pod for DomId {}

impl DomId {
    /// `DOMID_SELF`: "the calling domain" in hypercall arguments.
    pub const SELF: DomId = DomId(hypercall::abi::DOMID_SELF);
}

/// `GNTTAB_NR_RESERVED_ENTRIES`: entries kept across a toolstack's setup; never allocate them.
pub const NR_RESERVED_ENTRIES: u32 = 8;
/// `GNTTAB_RESERVED_CONSOLE`: the console ring page's entry, filled by the toolstack.
pub const RESERVED_CONSOLE: GrantRef = GrantRef(0);
/// `GNTTAB_RESERVED_XENSTORE`: the xenstore ring page's entry, filled by the toolstack.
pub const RESERVED_XENSTORE: GrantRef = GrantRef(1);

/// Version-1 entries in one 4 KiB grant-table frame.
pub const ENTRIES_PER_FRAME: u32 = 4096 / size_of::<GrantEntryV1>() as u32;

ring::pod! {
    /// `struct grant_entry_v1`. Xen sets `GTF_reading`/`GTF_writing` in `flags` while the
    /// grantee uses the frame, so live entries are accessed with atomics, not through this
    /// type; it fixes the layout.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct GrantEntryV1 {
        /// `GTF_*`: see [`GrantFlags`].
        pub flags: u16,
        /// The domain granted access.
        pub domid: DomId,
        /// The guest frame number granted.
        pub frame: u32,
    }
}

const _: () = assert!(size_of::<GrantEntryV1>() == 8);
const _: () = assert!(offset_of!(GrantEntryV1, flags) == 0);
const _: () = assert!(offset_of!(GrantEntryV1, domid) == 2);
const _: () = assert!(offset_of!(GrantEntryV1, frame) == 4);

/// `GTF_invalid`: the entry grants nothing.
pub const GTF_INVALID: u16 = 0;

bitflags! {
    /// `GTF_*`: the type (low two bits, see [`GrantFlags::TYPE_MASK`]) and flags of an entry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct GrantFlags: u16 {
        /// `GTF_permit_access`: the grantee may map or copy the frame.
        const PERMIT_ACCESS = 1;
        /// `GTF_accept_transfer`: the grantee may transfer a frame into this entry.
        const ACCEPT_TRANSFER = 2;
        /// `GTF_transitive`: the grantee may use another domain's grant through this one.
        const TRANSITIVE = 3;
        /// `GTF_type_mask`.
        const TYPE_MASK = 3;
        /// `GTF_readonly`: the grantee may only read.
        const READONLY = 1 << 2;
        /// `GTF_reading`: set by Xen while the grantee has the frame mapped or in use.
        const READING = 1 << 3;
        /// `GTF_writing`: set by Xen while the grantee may be writing to the frame.
        const WRITING = 1 << 4;
        /// `GTF_PWT`: cache attribute for the grantee's mapping.
        const PWT = 1 << 5;
        /// `GTF_PCD`: cache attribute for the grantee's mapping.
        const PCD = 1 << 6;
        /// `GTF_PAT`: cache attribute for the grantee's mapping.
        const PAT = 1 << 7;
        /// `GTF_sub_page`: v2 only; a v1 entry must not set it.
        const SUB_PAGE = 1 << 8;
        /// `GTF_transfer_committed` (accept-transfer entries reuse bit 2).
        const TRANSFER_COMMITTED = 1 << 2;
        /// `GTF_transfer_completed` (accept-transfer entries reuse bit 3).
        const TRANSFER_COMPLETED = 1 << 3;
    }
}

/// `GNTTABOP_*`: the `cmd` argument of `HYPERVISOR_grant_table_op`.
pub mod op {
    pub const MAP_GRANT_REF: u32 = 0;
    pub const UNMAP_GRANT_REF: u32 = 1;
    pub const SETUP_TABLE: u32 = 2;
    pub const DUMP_TABLE: u32 = 3;
    pub const TRANSFER: u32 = 4;
    pub const COPY: u32 = 5;
    pub const QUERY_SIZE: u32 = 6;
    pub const UNMAP_AND_REPLACE: u32 = 7;
    pub const SET_VERSION: u32 = 8;
    pub const GET_STATUS_FRAMES: u32 = 9;
    pub const GET_VERSION: u32 = 10;
    pub const SWAP_GRANT_REF: u32 = 11;
    pub const CACHE_FLUSH: u32 = 12;
}

ring::abi_enum! {
    /// `GNTST_*`: the per-operation `status` Xen writes back.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum GrantStatus: i16 {
        Okay = 0,
        GeneralError = -1,
        BadDomain = -2,
        BadGntref = -3,
        BadHandle = -4,
        BadVirtAddr = -5,
        BadDevAddr = -6,
        NoDeviceSpace = -7,
        PermissionDenied = -8,
        BadPage = -9,
        BadCopyArg = -10,
        AddressTooBig = -11,
        Eagain = -12,
        NoSpace = -13,
    }
}

/// `struct gnttab_setup_table`: asks Xen for the frames of our grant table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GnttabSetupTable {
    /// In: whose table, normally [`DomId::SELF`].
    pub dom: DomId,
    /// In: how many frames `frame_list` has room for.
    pub nr_frames: u32,
    /// Out: a `GNTST_*` code.
    pub status: i16,
    /// In: where Xen writes the frame numbers (`XEN_GUEST_HANDLE(xen_pfn_t)`).
    pub frame_list: *mut xen_pfn_t,
}

const _: () = assert!(size_of::<GnttabSetupTable>() == 24);
const _: () = assert!(offset_of!(GnttabSetupTable, dom) == 0);
const _: () = assert!(offset_of!(GnttabSetupTable, nr_frames) == 4);
const _: () = assert!(offset_of!(GnttabSetupTable, status) == 8);
const _: () = assert!(offset_of!(GnttabSetupTable, frame_list) == 16);

/// `struct gnttab_query_size`: current and maximum size of a grant table, in frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabQuerySize {
    /// In: whose table.
    pub dom: DomId,
    /// Out.
    pub nr_frames: u32,
    /// Out.
    pub max_nr_frames: u32,
    /// Out: a `GNTST_*` code.
    pub status: i16,
}

const _: () = assert!(size_of::<GnttabQuerySize>() == 16);
const _: () = assert!(offset_of!(GnttabQuerySize, dom) == 0);
const _: () = assert!(offset_of!(GnttabQuerySize, nr_frames) == 4);
const _: () = assert!(offset_of!(GnttabQuerySize, max_nr_frames) == 8);
const _: () = assert!(offset_of!(GnttabQuerySize, status) == 12);

bitflags! {
    /// `GNTCOPY_*`: which side of a [`GnttabCopy`] names a grant rather than a frame.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct CopyFlags: u16 {
        /// `GNTCOPY_source_gref`.
        const SOURCE_GREF = 1 << 0;
        /// `GNTCOPY_dest_gref`.
        const DEST_GREF = 1 << 1;
    }
}

/// The anonymous union of `struct gnttab_copy_ptr`; [`CopyFlags`] says which member is live.
#[repr(C)]
#[derive(Clone, Copy)]
pub union CopyPtrU {
    pub gref: GrantRef,
    pub gmfn: xen_pfn_t,
}

/// `struct gnttab_copy_ptr`: one side of a grant copy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GnttabCopyPtr {
    pub u: CopyPtrU,
    /// The domain owning the grant or frame.
    pub domid: DomId,
    /// Byte offset within the page.
    pub offset: u16,
}

const _: () = assert!(size_of::<GnttabCopyPtr>() == 16);
const _: () = assert!(offset_of!(GnttabCopyPtr, u) == 0);
const _: () = assert!(offset_of!(GnttabCopyPtr, domid) == 8);
const _: () = assert!(offset_of!(GnttabCopyPtr, offset) == 10);

/// One side of a grant copy, before it is encoded as a pointer plus a [`CopyFlags`] bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyTarget {
    /// A page another domain granted to us.
    Grant { gref: GrantRef, domid: DomId, offset: u16 },
    /// One of our own frames (`domid` is normally [`DomId::SELF`]).
    Frame { gmfn: xen_pfn_t, domid: DomId, offset: u16 },
}

impl CopyTarget {
    fn encode(self) -> (GnttabCopyPtr, bool) {
        match self {
            CopyTarget::Grant { gref, domid, offset } => {
                (GnttabCopyPtr { u: CopyPtrU { gref }, domid, offset }, true)
            }
            CopyTarget::Frame { gmfn, domid, offset } => {
                (GnttabCopyPtr { u: CopyPtrU { gmfn }, domid, offset }, false)
            }
        }
    }
}

/// `struct gnttab_copy`: Xen copies `len` bytes from `source` to `dest` for us.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    pub len: u16,
    /// [`CopyFlags`] bits.
    pub flags: u16,
    /// Out: a `GNTST_*` code.
    pub status: i16,
}

const _: () = assert!(size_of::<GnttabCopy>() == 40);
const _: () = assert!(offset_of!(GnttabCopy, source) == 0);
const _: () = assert!(offset_of!(GnttabCopy, dest) == 16);
const _: () = assert!(offset_of!(GnttabCopy, len) == 32);
const _: () = assert!(offset_of!(GnttabCopy, flags) == 34);
const _: () = assert!(offset_of!(GnttabCopy, status) == 36);

impl GnttabCopy {
    /// A copy of `len` bytes, with the flags matching the union members filled in.
    pub fn new(source: CopyTarget, dest: CopyTarget, len: u16) -> Self {
        let (source, src_is_gref) = source.encode();
        let (dest, dest_is_gref) = dest.encode();
        let mut flags = CopyFlags::empty();
        flags.set(CopyFlags::SOURCE_GREF, src_is_gref);
        flags.set(CopyFlags::DEST_GREF, dest_is_gref);
        GnttabCopy { source, dest, len, flags: flags.bits(), status: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_per_frame() {
        assert_eq!(ENTRIES_PER_FRAME, 512);
    }

    #[test]
    fn grant_flags_match_the_header() {
        assert_eq!(GrantFlags::PERMIT_ACCESS.bits(), 1);
        assert_eq!(GrantFlags::TRANSITIVE.bits(), 3);
        assert_eq!(GrantFlags::READONLY.bits(), 4);
        assert_eq!(GrantFlags::WRITING.bits(), 16);
        assert_eq!(GrantFlags::SUB_PAGE.bits(), 256);
        assert_eq!(GrantFlags::TRANSFER_COMPLETED.bits(), 8);
        let f = GrantFlags::PERMIT_ACCESS | GrantFlags::READONLY | GrantFlags::READING;
        assert_eq!(f & GrantFlags::TYPE_MASK, GrantFlags::PERMIT_ACCESS);
    }

    #[test]
    fn status_codes_round_trip() {
        for v in -13..=0 {
            assert_eq!(GrantStatus::try_from(v).map(|s| s as i16), Ok(v));
        }
        assert_eq!(GrantStatus::try_from(-14), Err(-14));
        assert_eq!(GrantStatus::try_from(1), Err(1));
        assert_eq!(GrantStatus::try_from(-10), Ok(GrantStatus::BadCopyArg));
    }

    #[test]
    fn copy_sets_flags_per_side() {
        let g = CopyTarget::Grant { gref: GrantRef(77), domid: DomId(3), offset: 12 };
        let f = CopyTarget::Frame { gmfn: 0x1_2345_6789, domid: DomId::SELF, offset: 100 };
        let c = GnttabCopy::new(g, f, 1500);
        assert_eq!(c.flags, CopyFlags::SOURCE_GREF.bits());
        // SAFETY: the flags say `source` holds a gref and `dest` a frame.
        let (src, dst) = unsafe { (c.source.u.gref, c.dest.u.gmfn) };
        assert_eq!((src, c.source.domid, c.source.offset), (GrantRef(77), DomId(3), 12));
        assert_eq!((dst, c.dest.domid, c.dest.offset), (0x1_2345_6789, DomId(0x7ff0), 100));
        assert_eq!(c.len, 1500);
        let c = GnttabCopy::new(f, g, 1);
        assert_eq!(c.flags, CopyFlags::DEST_GREF.bits());
        let c = GnttabCopy::new(g, g, 1);
        assert_eq!(CopyFlags::from_bits(c.flags), Some(CopyFlags::all()));
    }
}

/// `GNTMAP_host_map`: map the granted frame at `host_addr` in our page tables (PV).
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`.
pub const GNTMAP_READONLY: u32 = 1 << 2;

/// `struct gnttab_map_grant_ref`: maps another domain's (or our own) grant.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GnttabMapGrantRef {
    pub host_addr: u64,
    pub flags: u32,
    pub gref: GrantRef,
    pub dom: DomId,
    pub status: i16,
    pub handle: u32,
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    pub status: i16,
}

const _: () = assert!(size_of::<GnttabMapGrantRef>() == 32);
const _: () = assert!(offset_of!(GnttabMapGrantRef, gref) == 12);
const _: () = assert!(offset_of!(GnttabMapGrantRef, status) == 18);
const _: () = assert!(offset_of!(GnttabMapGrantRef, handle) == 20);
const _: () = assert!(size_of::<GnttabUnmapGrantRef>() == 24);
const _: () = assert!(offset_of!(GnttabUnmapGrantRef, status) == 20);
