//! The blocking block-device interface upper layers (a filesystem, a test) use, built on
//! the driver's asynchronous core.

use alloc::vec::Vec;

use crate::driver::{Completion, Request, RequestId};
use crate::env::EventChannel;
use crate::env::Pages;
use crate::info::DiskInfo;
use crate::{BlkError, Blkfront};

/// A disk. Sector numbers count 512-byte sectors; they and buffer lengths must be
/// multiples of [`DiskInfo::sector_size`]. Each call returns once the operation is done
/// (or failed, or timed out).
pub trait BlockDevice {
    fn info(&self) -> DiskInfo;
    /// Fills `buf` from `sector` on.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError>;
    /// Writes `buf` at `sector`.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError>;
    /// Makes completed writes durable.
    fn flush(&mut self) -> Result<(), BlkError>;
    /// Marks `sectors` sectors from `sector` unused.
    fn discard(&mut self, sector: u64, sectors: u64) -> Result<(), BlkError>;
}

impl<P: Pages, E: EventChannel> Blkfront<P, E> {
    /// Submits `request` and waits, polling, until it completes or the timeout
    /// ([`Blkfront::set_timeout`]) passes. Completions of other requests that arrive
    /// meanwhile stay queued for [`Blkfront::take_completion`].
    pub fn run(&mut self, request: Request) -> Result<Vec<u8>, BlkError> {
        let id = self.submit(request)?;
        let c = self.wait_for(id)?;
        c.result.map(|()| c.data)
    }

    fn wait_for(&mut self, id: RequestId) -> Result<Completion, BlkError> {
        let deadline = self.evtchn.now_ns().saturating_add(self.timeout_ns);
        loop {
            self.poll();
            if let Some(c) = self.take_completion_of(id) {
                return Ok(c);
            }
            if self.evtchn.wait(self.port, deadline).is_err() {
                // One last look: the response may have come with the deadline.
                self.poll();
                if let Some(c) = self.take_completion_of(id) {
                    return Ok(c);
                }
                self.abandon(id);
                return Err(BlkError::Timeout);
            }
        }
    }
}

impl<P: Pages, E: EventChannel> BlockDevice for Blkfront<P, E> {
    fn info(&self) -> DiskInfo {
        Blkfront::info(self)
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let data = self.run(Request::Read { sector, len: buf.len() })?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError> {
        self.run(Request::Write { sector, data: buf.to_vec() }).map(drop)
    }

    fn flush(&mut self) -> Result<(), BlkError> {
        self.run(Request::Flush).map(drop)
    }

    fn discard(&mut self, sector: u64, sectors: u64) -> Result<(), BlkError> {
        self.run(Request::Discard { sector, sectors }).map(drop)
    }
}
