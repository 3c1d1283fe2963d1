//! Xen's error numbers (`xen/include/public/errno.h`), as a typed error.

use core::fmt;

/// A Xen error number. Hypercalls return its negation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $val:literal,)*) => {
        impl Errno {
            $(pub const $name: Errno = Errno($val);)*

            /// The symbolic name, if Xen defines this number.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7,
    ENOEXEC = 8, EBADF = 9, ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13,
    EFAULT = 14, EBUSY = 16, EEXIST = 17, EXDEV = 18, ENODEV = 19, EISDIR = 21,
    EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOSPC = 28, EROFS = 30, EMLINK = 31,
    EDOM = 33, ERANGE = 34, EDEADLK = 35, ENAMETOOLONG = 36, ENOLCK = 37, ENOSYS = 38,
    ENOTEMPTY = 39, ENODATA = 61, ETIME = 62, EBADMSG = 74, EOVERFLOW = 75, EILSEQ = 84,
    ERESTART = 85, ENOTSOCK = 88, EMSGSIZE = 90, EOPNOTSUPP = 95, EADDRINUSE = 98,
    EADDRNOTAVAIL = 99, ENOBUFS = 105, EISCONN = 106, ENOTCONN = 107, ETIMEDOUT = 110,
    ECONNREFUSED = 111,
}

impl Errno {
    /// Splits a raw hypercall return value: `-4095..=-1` is an error, anything else a value.
    pub fn check(ret: i64) -> Result<u64, Errno> {
        if (-4095..0).contains(&ret) {
            Err(Errno(-ret as i32))
        } else {
            Ok(ret as u64)
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_errors_from_values() {
        assert_eq!(Errno::check(0), Ok(0));
        assert_eq!(Errno::check(0x4_0011), Ok(0x4_0011));
        assert_eq!(Errno::check(-38), Err(Errno::ENOSYS));
        assert_eq!(Errno::check(-4095), Err(Errno(4095)));
        // Large "negative" values are addresses or counts, not errors.
        assert_eq!(Errno::check(-4096), Ok((-4096i64) as u64));
    }

    #[test]
    fn names() {
        assert_eq!(format!("{}", Errno::EAGAIN), "EAGAIN");
        assert_eq!(format!("{:?}", Errno(4000)), "Errno(4000)");
    }
}
