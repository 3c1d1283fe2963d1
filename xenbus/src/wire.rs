//! The xenstore wire protocol of Xen 4.17 (`io/xs_wire.h`): every message is an
//! [`XsdSockmsg`] header followed by `len` payload bytes, carried over the two byte rings of
//! the page described by [`interface`].

use core::mem::{offset_of, size_of};

/// `struct xsd_sockmsg`. A header read from the ring is only what xenstored claims: `ty`
/// must go through [`XsType::try_from`] and `len` be checked against
/// [`XENSTORE_PAYLOAD_MAX`] before use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsdSockmsg {
    /// `XS_*`: see [`XsType`].
    pub ty: u32,
    /// Chosen by the requester, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside transactions.
    pub tx_id: u32,
    /// Payload bytes following the header.
    pub len: u32,
}

const _: () = assert!(size_of::<XsdSockmsg>() == 16);
const _: () = assert!(offset_of!(XsdSockmsg, ty) == 0);
const _: () = assert!(offset_of!(XsdSockmsg, req_id) == 4);
const _: () = assert!(offset_of!(XsdSockmsg, tx_id) == 8);
const _: () = assert!(offset_of!(XsdSockmsg, len) == 12);

impl XsdSockmsg {
    /// Bytes of the header on the wire.
    pub const SIZE: usize = size_of::<XsdSockmsg>();

    /// The header as it goes on the ring: fields in the domains' shared (native) byte order.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        for (chunk, v) in b.chunks_exact_mut(4).zip([self.ty, self.req_id, self.tx_id, self.len]) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// A header as read off the ring, unvalidated.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        XsdSockmsg { ty: word(0), req_id: word(4), tx_id: word(8), len: word(12) }
    }
}

ring::abi_enum! {
    /// `enum xsd_sockmsg_type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum XsType: u32 {
        /// `XS_CONTROL`, formerly `XS_DEBUG`.
        Control = 0,
        Directory = 1,
        Read = 2,
        GetPerms = 3,
        Watch = 4,
        Unwatch = 5,
        TransactionStart = 6,
        TransactionEnd = 7,
        Introduce = 8,
        Release = 9,
        GetDomainPath = 10,
        Write = 11,
        Mkdir = 12,
        Rm = 13,
        SetPerms = 14,
        WatchEvent = 15,
        Error = 16,
        IsDomainIntroduced = 17,
        Resume = 18,
        SetTarget = 19,
        // 20 was XS_RESTRICT, removed.
        ResetWatches = 21,
        DirectoryPart = 22,
    }
}

impl XsType {
    /// `XS_TYPE_COUNT`: one past the highest valid type.
    pub const COUNT: u32 = 23;
    /// `XS_INVALID`: guaranteed never to be a valid type.
    pub const INVALID: u32 = 0xffff;
}

/// In an `XS_WATCH_EVENT` payload, the index of the path (`XS_WATCH_PATH`) and of the token
/// (`XS_WATCH_TOKEN`) among its NUL-terminated strings.
pub const XS_WATCH_PATH: usize = 0;
pub const XS_WATCH_TOKEN: usize = 1;

/// Longest payload of one message; xenstored drops a connection that sends more.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path xenstored accepts.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path xenstored accepts.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// The errors xenstored reports in an `XS_ERROR` reply, by name: the `xsd_errors` table,
/// in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XsError {
    Inval,
    Acces,
    Exist,
    IsDir,
    NoEnt,
    NoMem,
    NoSpc,
    Io,
    NotEmpty,
    NoSys,
    Rofs,
    Busy,
    Again,
    IsConn,
    TooBig,
    Perm,
    /// `EQUOTA`: not in `xsd_errors`, but oxenstored sends it when a domain exceeds a quota
    /// (where C xenstored says `ENOSPC` or `E2BIG`); Linux would map it to `EINVAL`.
    Quota,
}

/// `xsd_errors`, indexed by [`XsError`], then the names only oxenstored sends.
const XSD_ERRORS: [(XsError, &str); 17] = [
    (XsError::Inval, "EINVAL"),
    (XsError::Acces, "EACCES"),
    (XsError::Exist, "EEXIST"),
    (XsError::IsDir, "EISDIR"),
    (XsError::NoEnt, "ENOENT"),
    (XsError::NoMem, "ENOMEM"),
    (XsError::NoSpc, "ENOSPC"),
    (XsError::Io, "EIO"),
    (XsError::NotEmpty, "ENOTEMPTY"),
    (XsError::NoSys, "ENOSYS"),
    (XsError::Rofs, "EROFS"),
    (XsError::Busy, "EBUSY"),
    (XsError::Again, "EAGAIN"),
    (XsError::IsConn, "EISCONN"),
    (XsError::TooBig, "E2BIG"),
    (XsError::Perm, "EPERM"),
    (XsError::Quota, "EQUOTA"),
];

impl XsError {
    /// Parses an `XS_ERROR` payload: the error's name, NUL-terminated or not.
    pub fn from_payload(payload: &[u8]) -> Option<Self> {
        let name = payload.strip_suffix(b"\0").unwrap_or(payload);
        XSD_ERRORS.iter().find(|(_, s)| s.as_bytes() == name).map(|(e, _)| *e)
    }

    /// The name on the wire, e.g. `"ENOENT"`.
    pub fn as_str(self) -> &'static str {
        XSD_ERRORS[self as usize].1
    }
}

impl core::fmt::Display for XsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `struct xenstore_domain_interface`: the page shared with xenstored. Byte offsets, for the
/// byte ring (`ring::byte`) and for the feature, connection and error words.
pub mod interface {
    use core::mem::{offset_of, size_of};

    /// `XENSTORE_RING_SIZE`: bytes in each direction's array.
    pub const RING_SIZE: u32 = 1024;

    #[repr(C)]
    struct XenstoreDomainInterface {
        req: [u8; RING_SIZE as usize],
        rsp: [u8; RING_SIZE as usize],
        req_cons: u32,
        req_prod: u32,
        rsp_cons: u32,
        rsp_prod: u32,
        server_features: u32,
        connection: u32,
        error: u32,
    }

    type I = XenstoreDomainInterface;
    /// Requests to xenstored.
    pub const REQ: usize = offset_of!(I, req);
    /// Replies and watch events.
    pub const RSP: usize = offset_of!(I, rsp);
    pub const REQ_CONS: usize = offset_of!(I, req_cons);
    pub const REQ_PROD: usize = offset_of!(I, req_prod);
    pub const RSP_CONS: usize = offset_of!(I, rsp_cons);
    pub const RSP_PROD: usize = offset_of!(I, rsp_prod);
    /// `XENSTORE_SERVER_FEATURE_*` bits xenstored supports.
    pub const SERVER_FEATURES: usize = offset_of!(I, server_features);
    /// `XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`.
    pub const CONNECTION: usize = offset_of!(I, connection);
    /// `XENSTORE_ERROR_*`, if the server has `XENSTORE_SERVER_FEATURE_ERROR`.
    pub const ERROR: usize = offset_of!(I, error);
    /// Bytes of the page the structure uses.
    pub const SIZE: usize = size_of::<I>();

    /// The request ring: we produce, xenstored consumes.
    pub const REQ_RING: ring::byte::Layout =
        ring::byte::Layout { data: REQ, size: RING_SIZE, cons: REQ_CONS, prod: REQ_PROD };
    /// The reply ring: xenstored produces, we consume.
    pub const RSP_RING: ring::byte::Layout =
        ring::byte::Layout { data: RSP, size: RING_SIZE, cons: RSP_CONS, prod: RSP_PROD };

    const _: () = assert!(SIZE == 2076);
    const _: () = assert!(REQ == 0 && RSP == 1024);
    const _: () = assert!(REQ_CONS == 2048 && REQ_PROD == 2052);
    const _: () = assert!(RSP_CONS == 2056 && RSP_PROD == 2060);
    const _: () = assert!(SERVER_FEATURES == 2064 && CONNECTION == 2068 && ERROR == 2072);

    /// `XENSTORE_SERVER_FEATURE_RECONNECTION`: the ring can be reset through `connection`.
    pub const SERVER_FEATURE_RECONNECTION: u32 = 1;
    /// `XENSTORE_SERVER_FEATURE_ERROR`: the `error` word is present.
    pub const SERVER_FEATURE_ERROR: u32 = 2;
    /// `XENSTORE_CONNECTED`: the steady state.
    pub const CONNECTED: u32 = 0;
    /// `XENSTORE_RECONNECT`: a reconnection is in progress.
    pub const RECONNECT: u32 = 1;
    /// `XENSTORE_ERROR_NONE`.
    pub const ERROR_NONE: u32 = 0;
    /// `XENSTORE_ERROR_COMM`: communication problem.
    pub const ERROR_COMM: u32 = 1;
    /// `XENSTORE_ERROR_RINGIDX`: invalid ring index.
    pub const ERROR_RINGIDX: u32 = 2;
    /// `XENSTORE_ERROR_PROTO`: protocol violation, e.g. a payload too long.
    pub const ERROR_PROTO: u32 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_bytes() {
        let m = XsdSockmsg { ty: XsType::Read as u32, req_id: 7, tx_id: 0x0102_0304, len: 12 };
        let b = m.to_bytes();
        assert_eq!(&b[0..4], &2u32.to_ne_bytes());
        assert_eq!(&b[8..12], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(XsdSockmsg::from_bytes(&b), m);
    }

    /// Values printed by a C program against Xen 4.17's io/xs_wire.h.
    #[test]
    fn message_types_match_the_header() {
        let expect = [
            (0, XsType::Control),
            (1, XsType::Directory),
            (2, XsType::Read),
            (3, XsType::GetPerms),
            (4, XsType::Watch),
            (5, XsType::Unwatch),
            (6, XsType::TransactionStart),
            (7, XsType::TransactionEnd),
            (8, XsType::Introduce),
            (9, XsType::Release),
            (10, XsType::GetDomainPath),
            (11, XsType::Write),
            (12, XsType::Mkdir),
            (13, XsType::Rm),
            (14, XsType::SetPerms),
            (15, XsType::WatchEvent),
            (16, XsType::Error),
            (17, XsType::IsDomainIntroduced),
            (18, XsType::Resume),
            (19, XsType::SetTarget),
            (21, XsType::ResetWatches),
            (22, XsType::DirectoryPart),
        ];
        for (v, t) in expect {
            assert_eq!(XsType::try_from(v), Ok(t));
            assert_eq!(t as u32, v);
        }
        for bad in [20, XsType::COUNT, XsType::INVALID, u32::MAX] {
            assert_eq!(XsType::try_from(bad), Err(bad));
        }
    }

    #[test]
    fn error_strings() {
        let names = [
            "EINVAL",
            "EACCES",
            "EEXIST",
            "EISDIR",
            "ENOENT",
            "ENOMEM",
            "ENOSPC",
            "EIO",
            "ENOTEMPTY",
            "ENOSYS",
            "EROFS",
            "EBUSY",
            "EAGAIN",
            "EISCONN",
            "E2BIG",
            "EPERM",
            "EQUOTA",
        ];
        for (i, name) in names.iter().enumerate() {
            let e = XsError::from_payload(name.as_bytes()).unwrap();
            assert_eq!(e, XSD_ERRORS[i].0);
            assert_eq!(e.as_str(), *name);
            assert_eq!(e.to_string(), *name);
        }
        assert_eq!(XsError::from_payload(b"ENOENT\0"), Some(XsError::NoEnt));
        assert_eq!(XsError::from_payload(b"ENOENT\0\0"), None);
        assert_eq!(XsError::from_payload(b"enoent"), None);
        assert_eq!(XsError::from_payload(b""), None);
    }
}
