//! Grant tables: how this domain lets another one (a backend) access its pages.
//!
//! [`abi`] holds the grant-table types of `public/grant_table.h`; [`refs`] hands out grant
//! references from a fixed pool, catching exhaustion and double frees.
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod refs;

pub use abi::{DomId, GrantRef};
pub use refs::{RefAllocator, RefError};
