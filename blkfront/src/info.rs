//! What the backend publishes about the disk (`io/blkif.h`, "Backend XenBus Nodes"), read
//! from its xenstore directory and validated: these are another domain's claims, and a
//! nonsensical one is refused with [`BlkError::Device(DeviceError::BadBackendValue)`] rather than trusted.
//!
//! Units follow Xen 4.17's blkif.h: `sectors` and every sector number on the ring count
//! 512-byte sectors whatever `sector-size` says; `sector-size` is the logical block size,
//! which every transfer must be a multiple of and aligned to.

use crate::DeviceError;
use log::warn;
use xenbus::frontend::{read_flag, read_optional};
use xenbus::Store;

use crate::abi::VdiskInfo;
use crate::BlkError;

/// The unit of `sectors` and of sector numbers on the ring.
pub const SECTOR_SIZE: u64 = 512;

/// The largest logical sector size we accept: a sector must fit a page, the unit of a
/// segment.
pub const MAX_SECTOR_SIZE: u32 = 4096;

/// The largest ring order we believe; Linux's blkback offers at most 4 (16 pages).
pub const MAX_RING_PAGE_ORDER: u32 = 8;

/// Optional operations the backend offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `feature-flush-cache`: [`crate::abi::Op::FlushDiskcache`] works.
    pub flush_cache: bool,
    /// `feature-barrier`: [`crate::abi::Op::WriteBarrier`] works.
    pub barrier: bool,
    /// `feature-discard`: [`crate::abi::Op::Discard`] works.
    pub discard: bool,
    /// `feature-max-indirect-segments`: segments an indirect request may carry (0: no
    /// indirect requests). We use up to [`crate::MAX_INDIRECT_SEGMENTS`] of them.
    pub max_indirect_segments: u32,
    /// `feature-persistent`: the backend keeps grants mapped across requests, and we keep
    /// up to [`crate::MAX_PERSISTENT_GRANTS`] bounce pages granted for it.
    pub persistent: bool,
    /// `max-ring-page-order`: the ring may span `1 << order` pages (0 if absent). We use
    /// up to `1 << `[`crate::RING_PAGE_ORDER`] pages.
    pub max_ring_page_order: u32,
}

/// The disk, as the backend describes it once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Capacity in 512-byte sectors ([`SECTOR_SIZE`]).
    pub sectors: u64,
    /// Logical block size in bytes: a power of two from 512 to 4096. Transfers are whole
    /// multiples of it, at sector numbers aligned to it.
    pub sector_size: u32,
    /// Physical block size in bytes (`sector-size` if the backend does not say).
    pub physical_sector_size: u32,
    /// `info`: read-only, CD-ROM, removable. Unknown bits are dropped.
    pub flags: VdiskInfo,
    pub features: Features,
}

impl DiskInfo {
    pub fn read_only(&self) -> bool {
        self.flags.contains(VdiskInfo::READONLY)
    }

    /// Capacity in bytes (cannot overflow: checked when read).
    pub fn capacity_bytes(&self) -> u64 {
        self.sectors * SECTOR_SIZE
    }

    /// Sectors of [`SECTOR_SIZE`] in one logical block.
    pub(crate) fn sectors_per_block(&self) -> u64 {
        u64::from(self.sector_size) / SECTOR_SIZE
    }
}

/// Reads and checks the backend's `max-ring-page-order`, which it writes before InitWait.
pub(crate) fn read_ring_order(xs: &mut impl Store, backend: &str) -> Result<u32, BlkError> {
    const KEY: &str = "max-ring-page-order";
    let order = read_optional(xs, backend, KEY)?.unwrap_or(0);
    match u32::try_from(order) {
        Ok(o) if o <= MAX_RING_PAGE_ORDER => Ok(o),
        _ => Err(BlkError::Device(DeviceError::BadBackendValue {
            key: KEY,
            why: "ring order too large",
        })),
    }
}

/// Reads and checks what the backend writes when it connects: the disk's size and
/// geometry, its flags and the optional features.
pub(crate) fn read_disk_info(
    xs: &mut impl Store,
    backend: &str,
    max_ring_page_order: u32,
) -> Result<DiskInfo, BlkError> {
    let sectors = read_required(xs, backend, "sectors")?;
    if sectors.checked_mul(SECTOR_SIZE).is_none() {
        return Err(BlkError::Device(DeviceError::BadBackendValue {
            key: "sectors",
            why: "capacity overflows 64 bits of bytes",
        }));
    }
    let sector_size = check_sector_size(read_required(xs, backend, "sector-size")?)?;
    let physical_sector_size = match read_optional(xs, backend, "physical-sector-size")? {
        None => sector_size,
        Some(p) => check_physical_sector_size(p, sector_size)?,
    };
    let raw_info = read_required(xs, backend, "info")?;
    let raw_info = u32::try_from(raw_info).map_err(|_| {
        BlkError::Device(DeviceError::BadBackendValue { key: "info", why: "not a 32-bit value" })
    })?;
    let flags = VdiskInfo::from_bits_truncate(raw_info);
    if flags.bits() != raw_info {
        warn!("blkfront: {backend}/info {raw_info:#x}: ignoring unknown flags");
    }
    let max_indirect = read_optional(xs, backend, "feature-max-indirect-segments")?.unwrap_or(0);
    let max_indirect_segments = u32::try_from(max_indirect).map_err(|_| {
        BlkError::Device(DeviceError::BadBackendValue {
            key: "feature-max-indirect-segments",
            why: "too large",
        })
    })?;
    let features = Features {
        flush_cache: read_flag(xs, backend, "feature-flush-cache")?,
        barrier: read_flag(xs, backend, "feature-barrier")?,
        discard: read_flag(xs, backend, "feature-discard")?,
        max_indirect_segments,
        persistent: read_flag(xs, backend, "feature-persistent")?,
        max_ring_page_order,
    };
    Ok(DiskInfo { sectors, sector_size, physical_sector_size, flags, features })
}

fn check_sector_size(v: u64) -> Result<u32, BlkError> {
    const KEY: &str = "sector-size";
    match u32::try_from(v) {
        Ok(s) if s.is_power_of_two() && u64::from(s) >= SECTOR_SIZE && s <= MAX_SECTOR_SIZE => {
            Ok(s)
        }
        _ => Err(BlkError::Device(DeviceError::BadBackendValue {
            key: KEY,
            why: "not a power of two in 512..=4096",
        })),
    }
}

fn check_physical_sector_size(v: u64, logical: u32) -> Result<u32, BlkError> {
    match u32::try_from(v) {
        Ok(s) if s.is_power_of_two() && s >= logical => Ok(s),
        _ => Err(BlkError::Device(DeviceError::BadBackendValue {
            key: "physical-sector-size",
            why: "not a power of two at least sector-size",
        })),
    }
}

/// A number the backend must have written.
fn read_required(xs: &mut impl Store, backend: &str, key: &'static str) -> Result<u64, BlkError> {
    read_optional(xs, backend, key)?
        .ok_or(BlkError::Device(DeviceError::BadBackendValue { key, why: "missing" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec::Vec;
    use xenbus::{Error, XsError, XsType};

    /// Just enough of a store to answer reads.
    struct Map(BTreeMap<String, Vec<u8>>);

    impl Store for Map {
        fn request(&mut self, ty: XsType, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
            assert_eq!(ty, XsType::Read);
            let path = core::str::from_utf8(parts[0]).unwrap();
            self.0.get(path).cloned().ok_or(Error::Xs(XsError::NoEnt))
        }
    }

    const BE: &str = "/be";

    fn store(pairs: &[(&str, &str)]) -> Map {
        let mut m = BTreeMap::new();
        for (k, v) in
            [("sectors", "2048"), ("sector-size", "512"), ("info", "0")].iter().chain(pairs)
        {
            m.insert(format!("{BE}/{k}"), v.as_bytes().to_vec());
        }
        Map(m)
    }

    fn info(pairs: &[(&str, &str)]) -> Result<DiskInfo, BlkError> {
        read_disk_info(&mut store(pairs), BE, 0)
    }

    fn bad(key: &'static str, value: &str) -> &'static str {
        match info(&[(key, value)]) {
            Err(BlkError::Device(DeviceError::BadBackendValue { key: k, why })) if k == key => why,
            other => panic!("{key}={value}: {other:?}"),
        }
    }

    #[test]
    fn minimal_disk() {
        let i = info(&[]).unwrap();
        assert_eq!((i.sectors, i.sector_size, i.physical_sector_size), (2048, 512, 512));
        assert_eq!(i.features, Features::default());
        assert!(!i.read_only());
        assert_eq!(i.capacity_bytes(), 1 << 20);
    }

    #[test]
    fn all_features() {
        let i = info(&[
            ("sector-size", "4096"),
            ("physical-sector-size", "8192"),
            ("info", "5"),
            ("feature-flush-cache", "1"),
            ("feature-barrier", "1"),
            ("feature-discard", "1"),
            ("feature-max-indirect-segments", "256"),
            ("feature-persistent", "1"),
        ])
        .unwrap();
        assert_eq!(i.sectors_per_block(), 8);
        assert_eq!(i.physical_sector_size, 8192);
        assert!(i.read_only() && i.flags.contains(VdiskInfo::CDROM));
        let f = i.features;
        assert!(f.flush_cache && f.barrier && f.discard && f.persistent);
        assert_eq!(f.max_indirect_segments, 256);
        // Unknown info bits are dropped, not fatal.
        assert_eq!(info(&[("info", "12")]).unwrap().flags, VdiskInfo::READONLY);
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(bad("sectors", "abc"), "not a number");
        assert_eq!(bad("sectors", "-1"), "not a number");
        assert_eq!(bad("sectors", "99999999999999999999"), "not a number");
        assert_eq!(bad("sectors", "36028797018963968"), "capacity overflows 64 bits of bytes");
        for s in ["0", "3000", "256", "8192", "4294967808", ""] {
            bad("sector-size", s);
        }
        assert_eq!(bad("physical-sector-size", "256"), "not a power of two at least sector-size");
        assert_eq!(bad("info", "4294967296"), "not a 32-bit value");
        assert_eq!(bad("feature-discard", "2"), "not 0 or 1");
        assert_eq!(bad("feature-barrier", "yes"), "not a number");
        assert_eq!(bad("feature-max-indirect-segments", "4294967296"), "too large");
        let mut m = store(&[]);
        m.0.remove("/be/sectors");
        assert_eq!(
            read_disk_info(&mut m, BE, 0),
            Err(BlkError::Device(DeviceError::BadBackendValue { key: "sectors", why: "missing" }))
        );
    }

    #[test]
    fn ring_order() {
        assert_eq!(read_ring_order(&mut store(&[]), BE), Ok(0));
        assert_eq!(read_ring_order(&mut store(&[("max-ring-page-order", "4")]), BE), Ok(4));
        assert!(read_ring_order(&mut store(&[("max-ring-page-order", "9")]), BE).is_err());
        assert!(read_ring_order(&mut store(&[("max-ring-page-order", "x")]), BE).is_err());
    }
}
