//! Xen's names for virtual disks: `xvdb` is xenbus device id 51728 (major 202, 16 minors a
//! disk), the id under `device/vbd/` and the name users write in xl configs and on our
//! command line.

use alloc::format;
use alloc::string::String;

const XVD_MAJOR: u32 = 202;
const MINORS_PER_DISK: u32 = 16;
/// `xvda` to `xvdp`: the disks major 202 has room for.
const XVD_DISKS: u32 = 256 / MINORS_PER_DISK;

/// The device id of `xvd<letter>`, `xvda` to `xvdp`; partitions are not disks.
pub fn id(name: &str) -> Option<u32> {
    match name.as_bytes() {
        [b'x', b'v', b'd', letter @ b'a'..=b'p'] => {
            Some((XVD_MAJOR << 8) | (u32::from(letter - b'a') * MINORS_PER_DISK))
        }
        _ => None,
    }
}

/// `xvdb` for 51728, and so on; other ids as `vbd<id>`.
pub fn name(id: u32) -> String {
    let minor = id & 0xff;
    let disk = minor / MINORS_PER_DISK;
    if id >> 8 == XVD_MAJOR && minor.is_multiple_of(MINORS_PER_DISK) && disk < XVD_DISKS {
        format!("xvd{}", char::from(b'a' + disk as u8))
    } else {
        format!("vbd{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_round_trip() {
        assert_eq!(id("xvda"), Some(51712));
        assert_eq!(id("xvdb"), Some(51728));
        assert_eq!(id("xvdp"), Some(51712 + 15 * 16));
        for letter in b'a'..=b'p' {
            let n = format!("xvd{}", char::from(letter));
            assert_eq!(name(id(&n).unwrap()), n);
        }
        for bad in ["", "xvd", "xvdq", "xvdA", "xvda1", "sda", "hda", "xvdaa"] {
            assert_eq!(id(bad), None, "{bad}");
        }
        assert_eq!(name(51713), "vbd51713");
        assert_eq!(name(768), "vbd768");
    }
}
