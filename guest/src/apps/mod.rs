//! Apps the command line selects (`app=`), run after the self-tests.

pub mod pattern;

#[cfg(target_os = "none")]
mod blk;

#[cfg(target_os = "none")]
pub use blk::run;
