//! Typed xenstore operations and the parsers of their replies.
//!
//! [`Store`] is implemented by the client itself and by a [`Transaction`], so the same calls
//! run inside and outside transactions. Replies are checked for the shape `io/xs_wire.h` and
//! `docs/misc/xenstore.txt` give them; values are bytes, and the `read_*` helpers that give
//! them a meaning reject anything that does not fit it.

use alloc::string::String;
use alloc::vec::Vec;
use core::str;

use crate::client::{Error, Protocol, Transport, WatchEvent, Xenstore};
use crate::state::XenbusState;
use crate::wire::{XsError, XsType, XENSTORE_ABS_PATH_MAX};

/// Attempts a [`Xenstore::transaction`] makes before giving up with `EAGAIN`: each retry means
/// another writer committed in between, so a bound keeps a busy store from starving us forever.
pub const TRANSACTION_ATTEMPTS: u32 = 8;

/// The operations on the store, in or out of a transaction.
pub trait Store {
    /// Sends `ty` with payload `parts` (concatenated, terminators included) and waits for the
    /// reply payload.
    fn request(&mut self, ty: XsType, parts: &[&[u8]]) -> Result<Vec<u8>, Error>;

    /// The value of `path`, as bytes (xenstore values need not be text).
    fn read(&mut self, path: &str) -> Result<Vec<u8>, Error> {
        check_path(path)?;
        self.request(XsType::Read, &[path.as_bytes(), b"\0"])
    }

    /// The value of `path`, which must be UTF-8 without NULs.
    fn read_string(&mut self, path: &str) -> Result<String, Error> {
        parse_string(self.read(path)?)
    }

    /// The value of `path` as a plain decimal number: no sign, no spaces, no overflow.
    fn read_u64(&mut self, path: &str) -> Result<u64, Error> {
        parse_u64(&self.read(path)?).ok_or(Error::BadValue)
    }

    /// The XenbusState number stored at `path`.
    fn read_state(&mut self, path: &str) -> Result<XenbusState, Error> {
        let n = self.read_u64(path)?;
        u32::try_from(n).ok().and_then(|n| XenbusState::try_from(n).ok()).ok_or(Error::BadValue)
    }

    /// Sets `path` to `value`, creating it and missing parents.
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Error> {
        check_path(path)?;
        expect_ok(&self.request(XsType::Write, &[path.as_bytes(), b"\0", value])?)
    }

    /// Creates `path` with an empty value if it does not exist.
    fn mkdir(&mut self, path: &str) -> Result<(), Error> {
        check_path(path)?;
        expect_ok(&self.request(XsType::Mkdir, &[path.as_bytes(), b"\0"])?)
    }

    /// Removes `path` and everything below it.
    fn rm(&mut self, path: &str) -> Result<(), Error> {
        check_path(path)?;
        expect_ok(&self.request(XsType::Rm, &[path.as_bytes(), b"\0"])?)
    }

    /// The names of the children of `path`.
    fn directory(&mut self, path: &str) -> Result<Vec<String>, Error> {
        check_path(path)?;
        parse_directory(&self.request(XsType::Directory, &[path.as_bytes(), b"\0"])?)
    }

    /// The permissions of `path`: the first entry names the owner and everyone's default.
    fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>, Error> {
        check_path(path)?;
        parse_perms(&self.request(XsType::GetPerms, &[path.as_bytes(), b"\0"])?)
    }

    /// Replaces the permissions of `path`; `perms[0]` is the owner and default.
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), Error> {
        check_path(path)?;
        if perms.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let mut list = Vec::new();
        for p in perms {
            list.push(p.access.letter());
            list.extend_from_slice(alloc::format!("{}", p.domid).as_bytes());
            list.push(0);
        }
        expect_ok(&self.request(XsType::SetPerms, &[path.as_bytes(), b"\0", &list])?)
    }
}

impl<T: Transport> Store for Xenstore<T> {
    fn request(&mut self, ty: XsType, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        self.call(ty, 0, parts)
    }
}

/// A transaction in progress; see [`Xenstore::transaction`].
pub struct Transaction<'a, T: Transport> {
    xs: &'a mut Xenstore<T>,
    id: u32,
}

impl<T: Transport> Transaction<'_, T> {
    /// The id xenstored gave the transaction.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl<T: Transport> Store for Transaction<'_, T> {
    fn request(&mut self, ty: XsType, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        self.xs.call(ty, self.id, parts)
    }
}

impl<T: Transport> Xenstore<T> {
    /// Runs `body` in a transaction and commits it. When xenstored answers `EAGAIN` (another
    /// writer got in first) the whole body runs again in a new transaction, up to
    /// [`TRANSACTION_ATTEMPTS`] times, so it must only act on the store through `tx`. An
    /// error from `body` aborts the transaction and is returned.
    pub fn transaction<R>(
        &mut self,
        mut body: impl FnMut(&mut Transaction<'_, T>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let reply = self.call(XsType::TransactionStart, 0, &[b"\0"])?;
            let id = parse_tx_id(&reply)?;
            let result = body(&mut Transaction { xs: self, id });
            let commit = result.is_ok();
            let ended = self
                .call(XsType::TransactionEnd, id, &[if commit { b"T\0" } else { b"F\0" }])
                .and_then(|r| expect_ok(&r));
            match (result, ended) {
                (Ok(r), Ok(())) => return Ok(r),
                (Ok(_), Err(Error::Xs(XsError::Again))) | (Err(Error::Xs(XsError::Again)), _) => {}
                (Ok(_), Err(e)) | (Err(e), _) => return Err(e),
            }
        }
        Err(Error::Xs(XsError::Again))
    }
}

/// Who may do what to a node (`docs/misc/xenstore.txt`, "permissions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub domid: u16,
    pub access: Access,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

impl Access {
    fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }

    fn from_letter(c: u8) -> Option<Self> {
        Some(match c {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        })
    }
}

/// A path we may send: non-empty, no NUL (it would end the string early on the wire), within
/// xenstored's limit.
pub(crate) fn check_path(path: &str) -> Result<(), Error> {
    if path.is_empty() || path.len() > XENSTORE_ABS_PATH_MAX || path.contains('\0') {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

pub(crate) fn check_token(token: &str) -> Result<(), Error> {
    if token.is_empty() || token.contains('\0') {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// The reply of the operations that only acknowledge.
pub(crate) fn expect_ok(payload: &[u8]) -> Result<(), Error> {
    match payload {
        b"OK\0" | b"OK" => Ok(()),
        _ => Err(Error::Protocol(Protocol::BadReply)),
    }
}

/// A run of NUL-terminated strings, as DIRECTORY, GET_PERMS and WATCH_EVENT carry them.
fn split_strings(payload: &[u8]) -> Result<impl Iterator<Item = &[u8]>, Error> {
    let body = match payload {
        [] => None,
        [body @ .., 0] => Some(body),
        _ => return Err(Error::Protocol(Protocol::MissingNul)),
    };
    Ok(body.into_iter().flat_map(|b| b.split(|&c| c == 0)))
}

fn utf8(bytes: &[u8]) -> Result<&str, Error> {
    str::from_utf8(bytes).map_err(|_| Error::Protocol(Protocol::NotUtf8))
}

/// A DIRECTORY reply: child names, each NUL-terminated.
pub fn parse_directory(payload: &[u8]) -> Result<Vec<String>, Error> {
    split_strings(payload)?
        .map(|name| {
            let name = utf8(name)?;
            if name.is_empty() || name.contains('/') {
                return Err(Error::Protocol(Protocol::BadName));
            }
            Ok(name.into())
        })
        .collect()
}

/// A GET_PERMS reply: entries like `r5`, each NUL-terminated, at least one.
pub fn parse_perms(payload: &[u8]) -> Result<Vec<Perm>, Error> {
    let bad = Error::Protocol(Protocol::BadReply);
    let perms = split_strings(payload)?
        .map(|entry| {
            let (&letter, domid) = entry.split_first().ok_or(bad)?;
            let access = Access::from_letter(letter).ok_or(bad)?;
            let domid = parse_u64(domid).and_then(|d| u16::try_from(d).ok()).ok_or(bad)?;
            Ok(Perm { domid, access })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if perms.is_empty() {
        return Err(bad);
    }
    Ok(perms)
}

/// A WATCH_EVENT payload: exactly `path\0token\0`, both UTF-8, the path non-empty.
pub fn parse_watch_event(payload: &[u8]) -> Result<WatchEvent, Error> {
    let mut strings = split_strings(payload)?;
    let (Some(path), Some(token), None) = (strings.next(), strings.next(), strings.next()) else {
        return Err(Error::Protocol(Protocol::BadReply));
    };
    let (path, token) = (utf8(path)?, utf8(token)?);
    if path.is_empty() {
        return Err(Error::Protocol(Protocol::BadReply));
    }
    Ok(WatchEvent { path: path.into(), token: token.into() })
}

/// A TRANSACTION_START reply: the id in decimal, NUL-terminated; 0 means "no transaction"
/// and cannot be one.
fn parse_tx_id(payload: &[u8]) -> Result<u32, Error> {
    let digits = payload.strip_suffix(b"\0").unwrap_or(payload);
    parse_u64(digits)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n != 0)
        .ok_or(Error::Protocol(Protocol::BadReply))
}

/// A plain decimal number: at least one digit, nothing else, no overflow.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A value that must be text: UTF-8 without NULs.
pub fn parse_string(bytes: Vec<u8>) -> Result<String, Error> {
    let s = String::from_utf8(bytes).map_err(|_| Error::BadValue)?;
    if s.contains('\0') {
        return Err(Error::BadValue);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"51712"), Some(51712));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for bad in
            [&b""[..], b"18446744073709551616", b"-1", b"+1", b" 1", b"1 ", b"1\0", b"0x10", b"1a"]
        {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8() {
        assert_eq!(parse_string(b"vif".to_vec()), Ok("vif".into()));
        assert_eq!(parse_string(b"a\0b".to_vec()), Err(Error::BadValue));
        assert_eq!(parse_string(vec![0xff, 0x61]), Err(Error::BadValue));
    }

    #[test]
    fn directory_listings() {
        assert_eq!(parse_directory(b""), Ok(vec![]));
        assert_eq!(parse_directory(b"0\0"), Ok(vec!["0".into()]));
        assert_eq!(parse_directory(b"0\x0051712\0"), Ok(vec!["0".into(), "51712".into()]));
        let p = |e| Err(Error::Protocol(e));
        assert_eq!(parse_directory(b"0\x001"), p(Protocol::MissingNul));
        assert_eq!(parse_directory(b"\0"), p(Protocol::BadName));
        assert_eq!(parse_directory(b"a\0\0"), p(Protocol::BadName));
        assert_eq!(parse_directory(b"a/b\0"), p(Protocol::BadName));
        assert_eq!(parse_directory(b"\xc3\x28\0"), p(Protocol::NotUtf8));
    }

    #[test]
    fn permissions() {
        let perms = parse_perms(b"n0\0r5\0b65535\0").unwrap();
        assert_eq!(
            perms,
            [
                Perm { domid: 0, access: Access::None },
                Perm { domid: 5, access: Access::Read },
                Perm { domid: 65535, access: Access::Both },
            ]
        );
        for bad in [&b""[..], b"\0", b"x1\0", b"r\0", b"r65536\0", b"r-1\0", b"n0"] {
            assert!(parse_perms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn watch_events() {
        let ev = parse_watch_event(b"device/vif/0/state\0tok\0").unwrap();
        assert_eq!((ev.path.as_str(), ev.token.as_str()), ("device/vif/0/state", "tok"));
        assert_eq!(parse_watch_event(b"p\0\0").unwrap().token, "");
        for bad in [&b""[..], b"p", b"p\0", b"p\0t", b"\0t\0", b"p\0t\0x\0", b"\xff\0t\0"] {
            assert!(parse_watch_event(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transaction_ids() {
        assert_eq!(parse_tx_id(b"17\0"), Ok(17));
        assert_eq!(parse_tx_id(b"4294967295"), Ok(u32::MAX));
        for bad in [&b"0\0"[..], b"", b"\0", b"4294967296\0", b"x\0"] {
            assert!(parse_tx_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn acknowledgements() {
        assert_eq!(expect_ok(b"OK\0"), Ok(()));
        assert_eq!(expect_ok(b"OK"), Ok(()));
        assert_eq!(expect_ok(b"NO\0"), Err(Error::Protocol(Protocol::BadReply)));
    }

    #[test]
    fn paths_we_send() {
        assert_eq!(check_path("device"), Ok(()));
        assert_eq!(check_path(""), Err(Error::InvalidArgument));
        assert_eq!(check_path("a\0b"), Err(Error::InvalidArgument));
        assert_eq!(check_path(&"a".repeat(XENSTORE_ABS_PATH_MAX + 1)), Err(Error::InvalidArgument));
        assert_eq!(check_token(""), Err(Error::InvalidArgument));
    }
}
