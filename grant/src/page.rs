//! A page a split driver (blkfront, netfront) owns and grants to its backend.

/// Bytes in a page.
pub const PAGE_SIZE: usize = ring::shared::PAGE_SIZE;

/// One 4 KiB page of guest memory a driver owns while it holds the value: a bounce buffer
/// for request data, a receive buffer, a transmit page.
///
/// A driver grants a page only after filling it completely (the data, zeros elsewhere), so
/// the backend never sees anything else of ours.
///
/// Dropping a `Page` must **not** return its memory to the allocator: a driver drops a page
/// only when it could not revoke the backend's access to it, and that memory must then
/// never be reused. Pages a driver is done with go back through its guest's `free_page`.
pub trait Page {
    fn bytes(&self) -> &[u8; PAGE_SIZE];
    fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE];
    /// The frame number the backend is granted: the machine frame under PV (p2m lookup),
    /// the guest frame otherwise.
    fn frame(&self) -> u64;
}
