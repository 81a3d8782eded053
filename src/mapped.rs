//! Read-only memory maps whose pages are handed back as they are consumed.
//!
//! Touched pages of a file mapping count as resident memory until the mapping goes away. Giving
//! them back after each chunk (`MADV_DONTNEED`, which for a read-only shared file mapping only
//! drops our view of the page cache; a later access reads the file again) keeps resident memory
//! flat however large a tensor is.

use std::ops::Range;
use std::sync::OnceLock;

use memmap2::{Mmap, UncheckedAdvice};

/// Bytes processed between releases.
pub const CHUNK: usize = 16 << 20;

/// The machine's page size (4 KiB on x86-64, 16 or 64 KiB on some arm64 systems): `madvise`
/// only acts on whole pages.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n)
            .ok()
            .filter(|&p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// Drops the pages of `range` from this process's resident set (whole pages inside it only).
pub fn release(map: &Mmap, range: Range<usize>) {
    let page = page_size();
    let start = range.start.div_ceil(page) * page;
    let end = (range.end.min(map.len()) / page) * page;
    if end > start {
        // SAFETY: the map is a read-only shared file mapping; after MADV_DONTNEED a later access
        // reads the same bytes from the file again, so no data can change or be lost.
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
    }
}

/// BLAKE3 over `map[range]`, chunk by chunk, releasing pages behind it.
pub fn hash_releasing(map: &Mmap, range: Range<usize>) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    let mut pos = range.start;
    while pos < range.end {
        let end = (pos + CHUNK).min(range.end);
        if end - pos > 1 << 20 {
            h.update_rayon(&map[pos..end]);
        } else {
            h.update(&map[pos..end]);
        }
        release(map, pos..end);
        pos = end;
    }
    h.finalize()
}
