//! Properties for the fuzz targets in `fuzz/`: each target is one call here.
#![allow(clippy::panic)]

use crate::format::{EntryRecord, RECORD_LEN};

/// Arbitrary bytes never panic the index's entry-record decoder; a record it
/// accepts encodes back to exactly the same bytes, and its chunk arithmetic
/// stays inside the image for every chunk index.
///
/// Bytes that fail the crc alone are also decoded with a fixed crc, so the
/// fuzzer reaches the field checks behind it.
pub fn entry_record(data: &[u8]) {
    check_record(data);
    if data.len() == RECORD_LEN {
        let mut fixed = [0u8; RECORD_LEN];
        fixed.copy_from_slice(data);
        let crc = crc32fast::hash(&fixed[..RECORD_LEN - 4]);
        fixed[RECORD_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        check_record(&fixed);
    }
}

fn check_record(data: &[u8]) {
    let Ok(record) = EntryRecord::decode(data) else {
        return;
    };
    assert_eq!(record.encode().as_slice(), data, "decode -> encode differs");
    let chunks = record.chunk_count();
    assert!(record.chunk_size > 0, "accepted a zero chunk size");
    for i in [
        0,
        1,
        chunks.saturating_sub(1),
        chunks,
        chunks.saturating_add(1),
        u64::MAX,
    ] {
        match record.chunk_range(i) {
            Some((start, end)) => assert!(
                i < chunks && start < end && end <= record.size,
                "chunk {i} of {chunks}: {start}..{end} of {} bytes",
                record.size
            ),
            None => assert!(i >= chunks, "chunk {i} of {chunks} has no range"),
        }
    }
}
