//! Memory maps of present chunks: the one `unsafe` call of the crate.
#![allow(unsafe_code)]

use std::fs::File;

/// Maps bytes `start..start + len` of an entry's data file read-only.
///
/// The caller holds a lease on the entry and has checked, under the cache's
/// lock, that every chunk holding those bytes is present.
pub(crate) fn map_present(file: &File, start: u64, len: u64) -> std::io::Result<memmap2::Mmap> {
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: mapping is unsound if the mapped bytes change or the file
    // shrinks while mapped (a truncation under a mapping raises SIGBUS on
    // access). The file does not shrink: it is created at the image's full
    // size before any lease on it exists, and the cache never truncates an
    // existing data file (a new entry always creates a new file, after the
    // old one, if any, was unlinked); eviction and invalidation only unlink,
    // and an unlinked file stays intact for as long as a mapping or
    // descriptor refers to it; the lease the mapping borrows stops eviction
    // in the first place. The mapped bytes belong to present chunks, which
    // are not written again while present. One exception: in an entry still
    // being filled, a chunk the scrubber finds damaged is marked missing and
    // rewritten in place by its next claim; a window mapped just before
    // then sees old and new bytes mixed, as a read() racing the write
    // would, and never an access fault (the file does not shrink). A disk
    // that fails to read a mapped page raises SIGBUS, where read() would
    // return EIO (docs/decisions.md, decision 11).
    unsafe { memmap2::MmapOptions::new().offset(start).len(len).map(file) }
}
