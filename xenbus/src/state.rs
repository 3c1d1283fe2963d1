//! `enum xenbus_state` (`io/xenbus.h`): the state each end of a device writes to its
//! `state` node as they connect.

ring::abi_enum! {
    /// A device end's connection state.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum XenbusState: u32 {
        Unknown = 0,
        Initialising = 1,
        /// Early initialisation done; waiting for the peer or hotplug scripts.
        InitWait = 2,
        /// Waiting for a connection from the peer.
        Initialised = 3,
        Connected = 4,
        /// The device is being closed because of an error or an unplug.
        Closing = 5,
        Closed = 6,
        Reconfiguring = 7,
        Reconfigured = 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by a C program against Xen 4.17's io/xenbus.h.
    #[test]
    fn values_match_the_header() {
        for v in 0..=8 {
            assert_eq!(XenbusState::try_from(v).map(|s| s as u32), Ok(v));
        }
        assert_eq!(XenbusState::try_from(4), Ok(XenbusState::Connected));
        assert_eq!(XenbusState::try_from(9), Err(9));
        assert_eq!(XenbusState::try_from(u32::MAX), Err(u32::MAX));
    }
}
