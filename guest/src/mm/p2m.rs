//! The shape of the p2m's frame-list tree, which a PV guest publishes for the toolstack
//! (`xl save` walks it to find the p2m): a top page naming frame-list pages, each naming up
//! to [`ENTRIES_PER_PAGE`] p2m pages, each holding that many entries.

/// 64-bit frame numbers in a 4 KiB page.
pub const ENTRIES_PER_PAGE: u64 = 512;

/// How many pages the p2m of `nr_pages` entries fills, and how many frame-list pages name
/// those; `None` when more frame-list pages are needed than the one top page can name
/// (512 GiB of guest memory).
pub fn tree_shape(nr_pages: u64) -> Option<(u64, u64)> {
    let leaves = nr_pages.div_ceil(ENTRIES_PER_PAGE);
    let lists = leaves.div_ceil(ENTRIES_PER_PAGE);
    (lists <= ENTRIES_PER_PAGE).then_some((leaves, lists))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(tree_shape(0), Some((0, 0)));
        assert_eq!(tree_shape(1), Some((1, 1)));
        // 64 MiB, the default domU: 16384 pages in 32 p2m pages, one list.
        assert_eq!(tree_shape(16384), Some((32, 1)));
        assert_eq!(tree_shape(512 * 512), Some((512, 1)));
        assert_eq!(tree_shape(512 * 512 + 1), Some((513, 2)));
        assert_eq!(tree_shape(512 * 512 * 512), Some((512 * 512, 512)));
        assert_eq!(tree_shape(512 * 512 * 512 + 1), None);
    }
}
