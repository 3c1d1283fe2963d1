//! The block-device ring protocol of Xen 4.17 (`io/blkif.h`), x86-64 layouts.
//!
//! Padding the C compiler inserts is spelled out as `_pad` fields so the structs can cross
//! the shared ring ([`ring::pod!`]). Responses come from the backend: `operation` and
//! `status` go through [`Op::try_from`] and [`Status::try_from`], and `id` must be checked
//! against the requests actually outstanding.

use core::mem::{align_of, offset_of, size_of};

use bitflags::bitflags;
use grant::GrantRef;
use ring::shared::PAGE_SIZE;

ring::abi_enum! {
    /// `BLKIF_OP_*`: what a request asks for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Op: u8 {
        Read = 0,
        Write = 1,
        /// A write that completes only after all earlier ones (`feature-barrier`).
        WriteBarrier = 2,
        /// Flush the backend's write cache (`feature-flush-cache`).
        FlushDiskcache = 3,
        // 4 is BLKIF_OP_RESERVED_1, used by no current backend.
        /// Discard sectors ([`BlkifRequestDiscard`], `feature-discard`).
        Discard = 5,
        /// Segments listed in granted pages ([`BlkifRequestIndirect`],
        /// `feature-max-indirect-segments`).
        Indirect = 6,
    }
}

ring::abi_enum! {
    /// `BLKIF_RSP_*`: a response's outcome.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Status: i16 {
        /// Only for barrier writes the backend does not support.
        EOpNotSupp = -2,
        /// Failed for an unspecified reason (`-EIO`).
        Error = -1,
        Okay = 0,
    }
}

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments a direct request carries.
pub const MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: pages of segments an indirect request names.
pub const MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// [`BlkifRequestSegment`]s in one indirect page: 512.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = PAGE_SIZE / size_of::<BlkifRequestSegment>();
/// `BLKIF_DISCARD_SECURE`: in [`BlkifRequestDiscard::flag`], erase securely
/// (`discard-secure`).
pub const DISCARD_SECURE: u8 = 1 << 0;

bitflags! {
    /// `VDISK_*`: the backend's `info` node.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VdiskInfo: u32 {
        const CDROM = 0x1;
        const REMOVABLE = 0x2;
        const READONLY = 0x4;
    }
}

ring::pod! {
    /// `struct blkif_request_segment`: one granted page and the 512-byte sectors in it
    /// to transfer, `first_sect..=last_sect`.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct BlkifRequestSegment {
        pub gref: GrantRef,
        pub first_sect: u8,
        pub last_sect: u8,
        pub(crate) _pad: [u8; 2],
    }
}

impl BlkifRequestSegment {
    /// The segment as it lies in an indirect page: the x86-64 layout asserted below
    /// (little-endian `gref` at 0, `first_sect` at 4, `last_sect` at 5, zero padding).
    /// Written byte by byte so the driver needs no `unsafe` to fill the page.
    pub fn to_bytes(&self) -> [u8; 8] {
        let g = self.gref.0.to_le_bytes();
        [g[0], g[1], g[2], g[3], self.first_sect, self.last_sect, 0, 0]
    }
}

ring::pod! {
    /// `struct blkif_request`: a read or write of up to [`MAX_SEGMENTS_PER_REQUEST`]
    /// segments, and the type of the ring's request slots.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct BlkifRequest {
        /// An [`Op`].
        pub operation: u8,
        pub nr_segments: u8,
        /// `blkif_vdev_t`: the device, for read/write only.
        pub handle: u16,
        pub(crate) _pad: [u8; 4],
        /// Ours, echoed in the response.
        pub id: u64,
        /// `blkif_sector_t`: first 512-byte sector on the disk.
        pub sector_number: u64,
        pub seg: [BlkifRequestSegment; MAX_SEGMENTS_PER_REQUEST],
    }
}

ring::pod! {
    /// `struct blkif_request_discard`: shares a request slot.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct BlkifRequestDiscard {
        /// [`Op::Discard`].
        pub operation: u8,
        /// [`DISCARD_SECURE`] or 0.
        pub flag: u8,
        pub handle: u16,
        pub(crate) _pad: [u8; 4],
        pub id: u64,
        pub sector_number: u64,
        pub nr_sectors: u64,
    }
}

ring::pod! {
    /// `struct blkif_request_indirect`: shares a request slot; its segments are
    /// [`BlkifRequestSegment`]s in the pages `indirect_grefs` names.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct BlkifRequestIndirect {
        /// [`Op::Indirect`].
        pub operation: u8,
        /// [`Op::Read`] or [`Op::Write`].
        pub indirect_op: u8,
        pub nr_segments: u16,
        pub(crate) _pad0: [u8; 4],
        pub id: u64,
        pub sector_number: u64,
        pub handle: u16,
        pub(crate) _pad1: [u8; 2],
        pub indirect_grefs: [GrantRef; MAX_INDIRECT_PAGES_PER_REQUEST],
        pub(crate) _pad2: [u8; 4],
    }
}

ring::pod! {
    /// `struct blkif_response`: the type of the ring's response slots.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct BlkifResponse {
        /// The request's `id`, if the backend is honest.
        pub id: u64,
        /// The request's operation, if the backend is honest.
        pub operation: u8,
        pub(crate) _pad0: u8,
        /// A [`Status`].
        pub status: i16,
        pub(crate) _pad1: [u8; 4],
    }
}

// Sizes and offsets printed by a C program against Xen 4.17's io/blkif.h.
const _: () = assert!(size_of::<BlkifRequestSegment>() == 8);
const _: () = assert!(offset_of!(BlkifRequestSegment, gref) == 0);
const _: () = assert!(offset_of!(BlkifRequestSegment, first_sect) == 4);
const _: () = assert!(offset_of!(BlkifRequestSegment, last_sect) == 5);

const _: () = assert!(size_of::<BlkifRequest>() == 112);
const _: () = assert!(align_of::<BlkifRequest>() == 8);
const _: () = assert!(offset_of!(BlkifRequest, operation) == 0);
const _: () = assert!(offset_of!(BlkifRequest, nr_segments) == 1);
const _: () = assert!(offset_of!(BlkifRequest, handle) == 2);
const _: () = assert!(offset_of!(BlkifRequest, id) == 8);
const _: () = assert!(offset_of!(BlkifRequest, sector_number) == 16);
const _: () = assert!(offset_of!(BlkifRequest, seg) == 24);

const _: () = assert!(size_of::<BlkifRequestDiscard>() == 32);
const _: () = assert!(offset_of!(BlkifRequestDiscard, operation) == 0);
const _: () = assert!(offset_of!(BlkifRequestDiscard, flag) == 1);
const _: () = assert!(offset_of!(BlkifRequestDiscard, handle) == 2);
const _: () = assert!(offset_of!(BlkifRequestDiscard, id) == 8);
const _: () = assert!(offset_of!(BlkifRequestDiscard, sector_number) == 16);
const _: () = assert!(offset_of!(BlkifRequestDiscard, nr_sectors) == 24);

const _: () = assert!(size_of::<BlkifRequestIndirect>() == 64);
const _: () = assert!(offset_of!(BlkifRequestIndirect, operation) == 0);
const _: () = assert!(offset_of!(BlkifRequestIndirect, indirect_op) == 1);
const _: () = assert!(offset_of!(BlkifRequestIndirect, nr_segments) == 2);
const _: () = assert!(offset_of!(BlkifRequestIndirect, id) == 8);
const _: () = assert!(offset_of!(BlkifRequestIndirect, sector_number) == 16);
const _: () = assert!(offset_of!(BlkifRequestIndirect, handle) == 24);
const _: () = assert!(offset_of!(BlkifRequestIndirect, indirect_grefs) == 28);

const _: () = assert!(size_of::<BlkifResponse>() == 16);
const _: () = assert!(offset_of!(BlkifResponse, id) == 0);
const _: () = assert!(offset_of!(BlkifResponse, operation) == 8);
const _: () = assert!(offset_of!(BlkifResponse, status) == 10);

#[cfg(test)]
mod tests {
    use super::*;
    use ring::shared::ring_size;

    /// `__CONST_RING_SIZE(blkif, pages * 4096)` printed by a C program.
    #[test]
    fn ring_holds_as_many_requests_as_in_c() {
        for (pages, slots) in [(1, 32), (2, 64), (4, 128), (8, 256), (16, 512)] {
            assert_eq!(ring_size::<BlkifRequest, BlkifResponse>(pages), slots);
        }
    }

    /// Values printed by a C program against Xen 4.17's io/blkif.h.
    #[test]
    fn constants_match_the_header() {
        let ops = [(0, Op::Read), (1, Op::Write), (2, Op::WriteBarrier), (3, Op::FlushDiskcache)];
        for (v, op) in ops.into_iter().chain([(5, Op::Discard), (6, Op::Indirect)]) {
            assert_eq!(Op::try_from(v), Ok(op));
            assert_eq!(op as u8, v);
        }
        assert_eq!(Op::try_from(4), Err(4));
        assert_eq!(Op::try_from(7), Err(7));
        for (v, s) in [(-2, Status::EOpNotSupp), (-1, Status::Error), (0, Status::Okay)] {
            assert_eq!(Status::try_from(v), Ok(s));
            assert_eq!(s as i16, v);
        }
        assert_eq!(Status::try_from(1), Err(1));
        assert_eq!(Status::try_from(i16::MIN), Err(i16::MIN));
        assert_eq!(VdiskInfo::from_bits(7), Some(VdiskInfo::all()));
    }

    #[test]
    fn segments_serialise_as_in_c() {
        let s = BlkifRequestSegment {
            gref: GrantRef(0x0403_0201),
            first_sect: 5,
            last_sect: 7,
            ..Default::default()
        };
        assert_eq!(s.to_bytes(), [1, 2, 3, 4, 5, 7, 0, 0]);
        assert_eq!(SEGMENTS_PER_INDIRECT_PAGE, 512);
    }

    #[test]
    fn requests_start_empty() {
        let r = BlkifRequest { id: 9, nr_segments: 1, ..Default::default() };
        assert_eq!(r.seg, [BlkifRequestSegment::default(); MAX_SEGMENTS_PER_REQUEST]);
        assert_eq!((r.operation, r.id), (Op::Read as u8, 9));
    }
}
