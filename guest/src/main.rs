//! The guest image: everything lives in the `guest` library; this binary only links it.
#![no_std]
#![no_main]

use guest as _;
