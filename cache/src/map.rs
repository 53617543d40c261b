//! Memory maps of complete entries: the one `unsafe` call of the crate.
#![allow(unsafe_code)]

use std::fs::File;

/// Maps a complete entry's data file read-only.
///
/// The caller holds a lease on a complete entry.
pub(crate) fn map_complete(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: mapping is unsound if the file changes or shrinks while mapped
    // (a truncation under a mapping raises SIGBUS on access). Neither happens
    // to this file: it belongs to a complete entry, whose chunks are never
    // written again; the cache never truncates an existing data file (a new
    // entry always creates a new file, after the old one, if any, was
    // unlinked); eviction and invalidation only unlink, and an unlinked file
    // stays intact for as long as a mapping or descriptor refers to it; and
    // the lease the mapping keeps stops eviction in the first place.
    unsafe { memmap2::Mmap::map(file) }
}
