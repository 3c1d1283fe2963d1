//! The two shared-memory ring protocols Xen frontends speak, each implemented once:
//! the byte ring of the console and xenstore pages ([`byte`]) and the request/response
//! ring of `io/ring.h` ([`shared`]) that blkfront and netfront use, with the table of their
//! requests in flight ([`slots`]).
//!
//! The other side of every ring is another domain that may be buggy or hostile: indices it
//! publishes are validated before use and data it writes is copied out exactly once.
#![cfg_attr(not(any(test, feature = "test-utils")), no_std)]

extern crate alloc;

pub mod byte;
#[cfg(feature = "test-utils")]
pub mod fake;
pub mod shared;
pub mod slots;
pub mod volatile;

/// Declares a `#[repr(int)]` enum of the values an ABI field may hold, with a
/// `TryFrom<int>` whose error is the unknown value as received: values the other side
/// writes are checked, never transmuted.
#[macro_export]
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $int:ty {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[repr($int)]
        $vis enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl TryFrom<$int> for $name {
            /// The unknown value, as received.
            type Error = $int;

            fn try_from(v: $int) -> Result<Self, $int> {
                $(if v == $value {
                    return Ok($name::$variant);
                })*
                Err(v)
            }
        }
    };
}
