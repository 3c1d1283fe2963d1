//! The network ring protocol of Xen 4.17 (`io/netif.h`), x86-64 layouts.
//!
//! Two rings: on the transmit ring we send [`NetifTxRequest`]s and get [`NetifTxResponse`]s;
//! on the receive ring we post empty pages as [`NetifRxRequest`]s and get
//! [`NetifRxResponse`]s. A packet's extra-info slots ([`NetifExtraInfo`]) take the place of
//! a request (transmit) or a response (receive) in the same ring.

use core::mem::{align_of, offset_of, size_of};

use bitflags::bitflags;
use grant::GrantRef;

/// `XEN_NETIF_NR_SLOTS_MIN`: slots a backend must accept for one packet.
pub const NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`: largest packet, in bytes, the first tx slot can announce.
pub const MAX_TX_SIZE: usize = 0xffff;

/// `NETIF_RSP_DROPPED`.
pub const RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`. On the receive ring a non-negative status is the received length.
pub const RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the response to an extra-info slot, carrying nothing.
pub const RSP_NULL: i16 = 1;

bitflags! {
    /// `NETTXF_*`: [`NetifTxRequest::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TxFlags: u16 {
        /// The protocol checksum field is blank (offloaded).
        const CSUM_BLANK = 1 << 0;
        /// The data has been validated against its checksum.
        const DATA_VALIDATED = 1 << 1;
        /// The packet continues in the next request.
        const MORE_DATA = 1 << 2;
        /// Extra-info slots follow this request.
        const EXTRA_INFO = 1 << 3;
    }
}

bitflags! {
    /// `NETRXF_*`: [`NetifRxResponse::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RxFlags: u16 {
        /// The data has been validated against its checksum.
        const DATA_VALIDATED = 1 << 0;
        /// The protocol checksum field is blank (offloaded).
        const CSUM_BLANK = 1 << 1;
        /// The packet continues in the next response.
        const MORE_DATA = 1 << 2;
        /// Extra-info slots follow this response.
        const EXTRA_INFO = 1 << 3;
        /// The packet has a GSO prefix (deprecated).
        const GSO_PREFIX = 1 << 4;
    }
}

bitflags! {
    /// `XEN_NETIF_EXTRA_FLAG_*`: [`NetifExtraInfo::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ExtraFlags: u8 {
        /// Another extra-info slot follows.
        const MORE = 1 << 0;
    }
}

ring::abi_enum! {
    /// `XEN_NETIF_EXTRA_TYPE_*` (`NONE` is never valid on the wire).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ExtraType: u8 {
        Gso = 1,
        McastAdd = 2,
        McastDel = 3,
        Hash = 4,
    }
}

impl ExtraType {
    /// `XEN_NETIF_EXTRA_TYPE_MAX`: one past the highest type.
    pub const MAX: u8 = 5;
}

/// `XEN_NETIF_GSO_TYPE_*`.
pub const GSO_TYPE_NONE: u8 = 0;
pub const GSO_TYPE_TCPV4: u8 = 1;
pub const GSO_TYPE_TCPV6: u8 = 2;

ring::pod! {
    /// `struct netif_tx_request`: one fragment of a packet to send.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct NetifTxRequest {
        pub gref: GrantRef,
        /// Where the fragment starts in the page.
        pub offset: u16,
        /// [`TxFlags`] bits.
        pub flags: u16,
        /// Ours, echoed in the response.
        pub id: u16,
        /// The whole packet's size in the first fragment, this fragment's in the others.
        pub size: u16,
    }
}

ring::pod! {
    /// `struct netif_tx_response`.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct NetifTxResponse {
        pub id: u16,
        /// `RSP_*`.
        pub status: i16,
    }
}

ring::pod! {
    /// `struct netif_rx_request`: a granted page for the backend to receive into.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct NetifRxRequest {
        /// Ours, echoed in the response.
        pub id: u16,
        pub(crate) _pad: u16,
        pub gref: GrantRef,
    }
}

ring::pod! {
    /// `struct netif_rx_response`.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct NetifRxResponse {
        pub id: u16,
        /// Where the data starts in the page.
        pub offset: u16,
        /// [`RxFlags`] bits.
        pub flags: u16,
        /// Bytes received if non-negative, else `RSP_*`.
        pub status: i16,
    }
}

ring::pod! {
    /// `struct netif_extra_info`. The C union `u` (`gso`, `mcast`, `hash`) is kept as its
    /// raw 6 bytes; [`decode`](Self::decode) and [`new`](Self::new) convert to and from
    /// [`Extra`].
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct NetifExtraInfo {
        /// An [`ExtraType`].
        pub ty: u8,
        /// [`ExtraFlags`] bits.
        pub flags: u8,
        /// The union, as `uint16_t pad[3]` so the struct keeps C's 2-byte alignment.
        pub u: [u16; 3],
    }
}

// Sizes and offsets printed by a C program against Xen 4.17's io/netif.h.
const _: () = assert!(size_of::<NetifTxRequest>() == 12);
const _: () = assert!(offset_of!(NetifTxRequest, gref) == 0);
const _: () = assert!(offset_of!(NetifTxRequest, offset) == 4);
const _: () = assert!(offset_of!(NetifTxRequest, flags) == 6);
const _: () = assert!(offset_of!(NetifTxRequest, id) == 8);
const _: () = assert!(offset_of!(NetifTxRequest, size) == 10);
const _: () = assert!(size_of::<NetifTxResponse>() == 4);
const _: () = assert!(offset_of!(NetifTxResponse, status) == 2);
const _: () = assert!(size_of::<NetifRxRequest>() == 8);
const _: () = assert!(offset_of!(NetifRxRequest, id) == 0);
const _: () = assert!(offset_of!(NetifRxRequest, gref) == 4);
const _: () = assert!(size_of::<NetifRxResponse>() == 8);
const _: () = assert!(offset_of!(NetifRxResponse, id) == 0);
const _: () = assert!(offset_of!(NetifRxResponse, offset) == 2);
const _: () = assert!(offset_of!(NetifRxResponse, flags) == 4);
const _: () = assert!(offset_of!(NetifRxResponse, status) == 6);
const _: () = assert!(size_of::<NetifExtraInfo>() == 8);
const _: () = assert!(align_of::<NetifExtraInfo>() == 2);
const _: () = assert!(offset_of!(NetifExtraInfo, ty) == 0);
const _: () = assert!(offset_of!(NetifExtraInfo, flags) == 1);
const _: () = assert!(offset_of!(NetifExtraInfo, u) == 2);
// The extra-info slot must fit where netif.h puts it: a tx request and an rx response.
const _: () = assert!(size_of::<NetifExtraInfo>() <= size_of::<NetifTxRequest>());
const _: () = assert!(size_of::<NetifExtraInfo>() <= size_of::<NetifRxResponse>());

/// The content of an extra-info slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    /// `u.gso`: segment the packet into `size`-byte payloads.
    Gso {
        size: u16,
        /// `GSO_TYPE_*`.
        ty: u8,
        /// `XEN_NETIF_GSO_FEAT_*` (none defined yet).
        features: u16,
    },
    /// `u.mcast`: subscribe to a multicast address.
    McastAdd([u8; 6]),
    /// `u.mcast`: unsubscribe from a multicast address.
    McastDel([u8; 6]),
    /// `u.hash`: the packet's hash.
    Hash {
        /// `_XEN_NETIF_CTRL_HASH_TYPE_*`.
        ty: u8,
        /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
        algorithm: u8,
        /// As on the wire, least significant byte first.
        value: [u8; 4],
    },
}

impl NetifExtraInfo {
    /// Encodes `extra`; `more` says another extra-info slot follows.
    pub fn new(extra: Extra, more: bool) -> Self {
        let mut b = [0u8; 6];
        let ty = match extra {
            Extra::Gso { size, ty, features } => {
                b[0..2].copy_from_slice(&size.to_ne_bytes());
                b[2] = ty;
                b[4..6].copy_from_slice(&features.to_ne_bytes());
                ExtraType::Gso
            }
            Extra::McastAdd(addr) => {
                b = addr;
                ExtraType::McastAdd
            }
            Extra::McastDel(addr) => {
                b = addr;
                ExtraType::McastDel
            }
            Extra::Hash { ty, algorithm, value } => {
                b[0] = ty;
                b[1] = algorithm;
                b[2..6].copy_from_slice(&value);
                ExtraType::Hash
            }
        };
        let flags = if more { ExtraFlags::MORE } else { ExtraFlags::empty() };
        let u = [0, 2, 4].map(|i| u16::from_ne_bytes([b[i], b[i + 1]]));
        NetifExtraInfo { ty: ty as u8, flags: flags.bits(), u }
    }

    /// The union's bytes, in memory order.
    fn union_bytes(&self) -> [u8; 6] {
        let [a, b, c] = self.u.map(u16::to_ne_bytes);
        [a[0], a[1], b[0], b[1], c[0], c[1]]
    }

    /// Decodes the slot; an unknown type is returned as the error.
    pub fn decode(&self) -> Result<Extra, u8> {
        let b = self.union_bytes();
        Ok(match ExtraType::try_from(self.ty)? {
            ExtraType::Gso => Extra::Gso {
                size: u16::from_ne_bytes([b[0], b[1]]),
                ty: b[2],
                features: u16::from_ne_bytes([b[4], b[5]]),
            },
            ExtraType::McastAdd => Extra::McastAdd(b),
            ExtraType::McastDel => Extra::McastDel(b),
            ExtraType::Hash => {
                Extra::Hash { ty: b[0], algorithm: b[1], value: [b[2], b[3], b[4], b[5]] }
            }
        })
    }

    /// Whether another extra-info slot follows.
    pub fn more(&self) -> bool {
        ExtraFlags::from_bits_retain(self.flags).contains(ExtraFlags::MORE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::shared::ring_size;

    /// `__CONST_RING_SIZE(netif_tx/netif_rx, pages * 4096)` printed by a C program.
    #[test]
    fn rings_hold_as_many_slots_as_in_c() {
        for (pages, slots) in [(1, 256), (2, 512), (4, 1024), (16, 4096)] {
            assert_eq!(ring_size::<NetifTxRequest, NetifTxResponse>(pages), slots);
            assert_eq!(ring_size::<NetifRxRequest, NetifRxResponse>(pages), slots);
        }
    }

    /// Values printed by a C program against Xen 4.17's io/netif.h.
    #[test]
    fn constants_match_the_header() {
        assert_eq!(TxFlags::all().bits(), 0xf);
        assert_eq!(TxFlags::EXTRA_INFO.bits(), 8);
        assert_eq!(RxFlags::all().bits(), 0x1f);
        assert_eq!(RxFlags::DATA_VALIDATED.bits(), 1);
        assert_eq!(RxFlags::CSUM_BLANK.bits(), 2);
        for (v, t) in [(1, ExtraType::Gso), (2, ExtraType::McastAdd), (3, ExtraType::McastDel)] {
            assert_eq!(ExtraType::try_from(v), Ok(t));
        }
        assert_eq!(ExtraType::try_from(4), Ok(ExtraType::Hash));
        assert_eq!(ExtraType::try_from(0), Err(0));
        assert_eq!(ExtraType::try_from(ExtraType::MAX), Err(5));
    }

    #[test]
    fn extra_info_round_trips() {
        let cases = [
            Extra::Gso { size: 1448, ty: GSO_TYPE_TCPV4, features: 0 },
            Extra::McastAdd([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
            Extra::McastDel([0x33, 0x33, 0, 0, 0, 1]),
            Extra::Hash { ty: 1, algorithm: 1, value: [0xde, 0xad, 0xbe, 0xef] },
        ];
        for (i, e) in cases.into_iter().enumerate() {
            let more = i % 2 == 0;
            let x = NetifExtraInfo::new(e, more);
            assert_eq!(x.decode(), Ok(e));
            assert_eq!(x.more(), more);
        }
        let bad = NetifExtraInfo { ty: 0, flags: 0, u: [0; 3] };
        assert_eq!(bad.decode(), Err(0));
    }

    /// Union member offsets within the struct, from the C program: gso.size 2, gso.type 4,
    /// gso.features 6, hash.type 2, hash.algorithm 3, hash.value 4.
    #[test]
    fn extra_info_union_layout() {
        let x = NetifExtraInfo::new(Extra::Gso { size: 0x1234, ty: 7, features: 0xabcd }, false);
        let bytes = x.union_bytes();
        assert_eq!(&bytes[0..2], &0x1234u16.to_ne_bytes()); // struct offset 2
        assert_eq!(bytes[2], 7); // struct offset 4
        assert_eq!(&bytes[4..6], &0xabcdu16.to_ne_bytes()); // struct offset 6
        let h = NetifExtraInfo::new(Extra::Hash { ty: 3, algorithm: 1, value: [9, 8, 7, 6] }, true);
        assert_eq!(h.union_bytes(), [3, 1, 9, 8, 7, 6]);
        assert_eq!((h.ty, h.flags), (4, 1));
    }
}
