//! The last step of a scavenge: zeroing what SQLite leaves of moved cells inside B-tree
//! pages, so that an erased event's bytes are nowhere in the file.
//!
//! `secure_delete` zeroes a deleted cell and a freed page, but not everything: when SQLite
//! rebalances B-tree pages and rebuilds one (`rebuildPage` in SQLite 3.50), the cells that
//! stay on it are copied to new offsets and their old bytes are left in the page's
//! unallocated space (between the cell pointer array and the cell content area). A cell
//! copied so while its event was still kept leaves an old copy that the event's later
//! erasure does not reach: `tests/scavenge_kill.rs` found a tombstoned event's data that way
//! after a completed scavenge, in about one run in ten.
//!
//! So the scavenge reads every page through SQLite's `sqlite_dbpage` table (compiled in by
//! the workspace's `.cargo/config.toml`), zeroes the unallocated space and the bodies of the
//! freeblocks of each B-tree page, and writes back the pages that held anything there, in
//! the writer's transaction: through the log, crash-safe like any commit. Only bytes SQLite
//! does not read are changed, and a page is touched only when its header and cell pointers
//! are consistent; any other page (overflow, freelist, pointer map, the lock-byte page) is
//! left as it is. An overflow or freelist trunk page starts with a page number, whose first
//! byte is 0 or 1 below 2^25 pages: it can look like a B-tree page (flag 2, 5, 10 or 13)
//! only in a larger file, where the scavenge rewrites the file instead ([`fits`]).

/// What the scrub needs to know of the file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) page_size: usize,
    /// Page size less the reserved bytes at the end of each page.
    pub(crate) usable: usize,
    /// Whether the file has pointer-map pages (`auto_vacuum` on).
    pub(crate) pointer_maps: bool,
}

/// Pages in a file below which no overflow or freelist page can start like a B-tree page.
const PAGES_MAX: u64 = 1 << 25;

/// Whether a file of `pages` pages can be scrubbed page by page.
pub(crate) fn fits(pages: u64) -> bool {
    pages < PAGES_MAX
}

/// What the scrub did to one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scrubbed {
    /// A B-tree page whose free space held only zeros.
    Clean,
    /// A B-tree page whose free space held this many non-zero bytes, now zeros.
    Zeroed(usize),
    /// Not a B-tree page: left alone.
    Other,
    /// A page that looks like a B-tree page but whose header or cell pointers do not add
    /// up: left alone.
    Inconsistent,
}

impl Geometry {
    /// The lock-byte page (the one holding the byte at offset 2^30), never used for data.
    fn lock_byte_page(&self) -> u64 {
        0x4000_0000 / self.page_size as u64 + 1
    }

    /// Whether page `pgno` is a pointer-map page (SQLite's `PTRMAP_ISPAGE`).
    fn is_pointer_map(&self, pgno: u64) -> bool {
        if !self.pointer_maps || pgno < 2 {
            return false;
        }
        let per_map = self.usable as u64 / 5 + 1;
        let mut map = (pgno - 2) / per_map * per_map + 2;
        if map == self.lock_byte_page() {
            map += 1;
        }
        map == pgno
    }
}

fn u16_at(page: &[u8], at: usize) -> Option<usize> {
    let bytes = page.get(at..at + 2)?;
    Some(usize::from(u16::from_be_bytes([
        *bytes.first()?,
        *bytes.get(1)?,
    ])))
}

/// The ranges of `page` (page number `pgno`) SQLite holds no data in, when it is a B-tree
/// page whose structure adds up; `Err` says why it is left alone.
fn free_ranges(page: &[u8], pgno: u64, g: &Geometry) -> Result<Vec<(usize, usize)>, Scrubbed> {
    if page.len() != g.page_size || g.usable > g.page_size || pgno == g.lock_byte_page() {
        return Err(Scrubbed::Other);
    }
    if g.is_pointer_map(pgno) {
        return Err(Scrubbed::Other);
    }
    let header = if pgno == 1 { 100 } else { 0 };
    let header_size = match page.get(header) {
        Some(2 | 5) => 12,
        Some(10 | 13) => 8,
        _ => return Err(Scrubbed::Other),
    };
    let bad = Err(Scrubbed::Inconsistent);
    let (Some(first_free), Some(cells), Some(content)) = (
        u16_at(page, header + 1),
        u16_at(page, header + 3),
        u16_at(page, header + 5),
    ) else {
        return bad;
    };
    let content = if content == 0 { 65_536 } else { content };
    let pointers = header + header_size;
    let gap = pointers + 2 * cells;
    if gap > content || content > g.usable {
        return bad;
    }
    for i in 0..cells {
        match u16_at(page, pointers + 2 * i) {
            Some(cell) if cell >= content && cell < g.usable => {}
            _ => return bad,
        }
    }
    let mut ranges = vec![(gap, content)];
    // Freeblocks lie in the content area, in ascending order, each at least 4 bytes: a
    // 2-byte link and a 2-byte size, then the bytes to zero.
    let mut at = first_free;
    let mut end_of_last = content;
    while at != 0 {
        if at < end_of_last || at + 4 > g.usable {
            return bad;
        }
        let (Some(next), Some(size)) = (u16_at(page, at), u16_at(page, at + 2)) else {
            return bad;
        };
        if size < 4 || at + size > g.usable {
            return bad;
        }
        ranges.push((at + 4, at + size));
        end_of_last = at + size;
        at = next;
    }
    Ok(ranges)
}

/// Zeroes the free space of `page` (page number `pgno`) when it is a B-tree page whose
/// structure adds up, and says what it did.
pub(crate) fn scrub(page: &mut [u8], pgno: u64, g: &Geometry) -> Scrubbed {
    let ranges = match free_ranges(page, pgno, g) {
        Ok(ranges) => ranges,
        Err(why) => return why,
    };
    let mut zeroed = 0;
    for (from, to) in ranges {
        if let Some(bytes) = page.get_mut(from..to) {
            for b in bytes.iter_mut().filter(|b| **b != 0) {
                *b = 0;
                zeroed += 1;
            }
        }
    }
    if zeroed == 0 {
        Scrubbed::Clean
    } else {
        Scrubbed::Zeroed(zeroed)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        page_size: 4096,
        usable: 4096,
        pointer_maps: true,
    };

    /// A table leaf page with cells of `sizes` bytes (each filled with 0xC5) packed at the
    /// end, `stale` bytes of 0xAA in the unallocated space, and one freeblock.
    fn leaf(sizes: &[usize], stale: usize) -> Vec<u8> {
        let mut page = vec![0u8; 4096];
        page[0] = 13;
        let freeblock = 8usize;
        let mut top = 4096;
        let mut pointers = Vec::new();
        for size in sizes {
            top -= size;
            page[top..top + size].fill(0xC5);
            pointers.push(top);
        }
        // A freeblock below the cells: link 0, size 8, then 4 stale bytes.
        top -= freeblock;
        page[top..top + 2].copy_from_slice(&0u16.to_be_bytes());
        page[top + 2..top + 4].copy_from_slice(&(freeblock as u16).to_be_bytes());
        page[top + 4..top + freeblock].fill(0xBB);
        let content = top;
        page[1..3].copy_from_slice(&(content as u16).to_be_bytes());
        page[3..5].copy_from_slice(&(sizes.len() as u16).to_be_bytes());
        page[5..7].copy_from_slice(&(content as u16).to_be_bytes());
        for (i, p) in pointers.iter().enumerate() {
            page[8 + 2 * i..10 + 2 * i].copy_from_slice(&(*p as u16).to_be_bytes());
        }
        page[content - stale..content].fill(0xAA);
        page
    }

    #[test]
    fn stale_bytes_in_a_leaf_are_zeroed_and_its_cells_and_header_are_kept() {
        let mut page = leaf(&[100, 200, 50], 300);
        let before = page.clone();
        assert_eq!(scrub(&mut page, 7, &G), Scrubbed::Zeroed(304));
        assert!(!page.contains(&0xAA) && !page.contains(&0xBB));
        assert_eq!(page[..14], before[..14], "header and pointers kept");
        let cells = 4096 - 350;
        assert_eq!(page[cells..], before[cells..], "cells kept");
        assert_eq!(scrub(&mut page, 7, &G), Scrubbed::Clean);
    }

    #[test]
    fn page_one_is_read_after_the_file_header() {
        let mut page = vec![0u8; 4096];
        page[..16].copy_from_slice(b"SQLite format 3\0");
        let mut rest = leaf(&[40], 20);
        // A leaf on page 1 starts at offset 100 (its pointers and offsets stay absolute).
        let b = rest[..12].to_vec();
        rest[..100].fill(0);
        page[100..].copy_from_slice(&rest[100..]);
        page[100..108].copy_from_slice(&b[..8]);
        page[108..110].copy_from_slice(&b[8..10]);
        assert_eq!(scrub(&mut page, 1, &G), Scrubbed::Zeroed(24));
        assert_eq!(&page[..16], b"SQLite format 3\0");
    }

    #[test]
    fn pointer_map_lock_byte_and_other_pages_are_left_alone() {
        // Pointer-map entries start with a type (2 and 5 are types): page 2 is always one.
        let mut map = leaf(&[10], 30);
        let before = map.clone();
        assert_eq!(scrub(&mut map, 2, &G), Scrubbed::Other);
        assert_eq!(scrub(&mut map, 2 + 4096 / 5 + 1, &G), Scrubbed::Other);
        assert_eq!(scrub(&mut map, 0x4000_0000 / 4096 + 1, &G), Scrubbed::Other);
        assert_eq!(map, before);
        // An overflow page starts with the next page's number.
        let mut overflow = vec![0xAAu8; 4096];
        overflow[..4].copy_from_slice(&77u32.to_be_bytes());
        assert_eq!(scrub(&mut overflow, 9, &G), Scrubbed::Other);
        // Without pointer maps, page 2 is an ordinary page.
        let plain = Geometry {
            pointer_maps: false,
            ..G
        };
        assert_eq!(scrub(&mut map, 2, &plain), Scrubbed::Zeroed(34));
    }

    #[test]
    fn a_page_whose_structure_does_not_add_up_is_left_alone() {
        let mut page = leaf(&[100], 50);
        // A cell pointer into the unallocated space.
        page[8..10].copy_from_slice(&20u16.to_be_bytes());
        let before = page.clone();
        assert_eq!(scrub(&mut page, 5, &G), Scrubbed::Inconsistent);
        assert_eq!(page, before);
        // Too many cells for the content area's start.
        let mut page = leaf(&[100], 50);
        page[3..5].copy_from_slice(&3000u16.to_be_bytes());
        assert_eq!(scrub(&mut page, 5, &G), Scrubbed::Inconsistent);
        // A freeblock running past the page.
        let mut page = leaf(&[100], 50);
        let free = usize::from(u16::from_be_bytes([page[1], page[2]]));
        page[free + 2..free + 4].copy_from_slice(&4000u16.to_be_bytes());
        assert_eq!(scrub(&mut page, 5, &G), Scrubbed::Inconsistent);
    }
}
