//! The index's entry record, byte by byte (format version 1).
//!
//! One record per cached image, stored as the value of the redb table
//! `entries` under the image's 16 UUID bytes. Little-endian throughout,
//! written and read only through this module; each offset is computed from
//! the field before it, and the last four bytes are the crc32 of all the
//! others. `docs/cache-format.md` is the normative description.
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 4 | magic `GSCE` |
//! | 4 | 1 | record version (1) |
//! | 5 | 1 | state: 0 reserved, 1 filling, 2 complete, 3 invalid |
//! | 6 | 1 | eviction queue: 0 small, 1 main |
//! | 7 | 1 | access frequency (0..=3) |
//! | 8 | 8 | image size in bytes |
//! | 16 | 4 | chunk size in bytes |
//! | 20 | 16 | md5 of the whole image |
//! | 36 | 64 | sha512 of the whole image |
//! | 100 | 8 | hits |
//! | 108 | 8 | last access, Unix seconds |
//! | 116 | 8 | created, Unix seconds |
//! | 124 | 8 | insertion sequence (FIFO order) |
//! | 132 | 4 | crc32 of bytes 0..132 |
//! | 136 | | end |

/// The record magic.
pub const MAGIC: [u8; 4] = *b"GSCE";
/// The record version this build writes and reads.
pub const VERSION: u8 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 4;
const STATE_AT: usize = VERSION_AT + 1;
const QUEUE_AT: usize = STATE_AT + 1;
const FREQ_AT: usize = QUEUE_AT + 1;
const SIZE_AT: usize = FREQ_AT + 1;
const CHUNK_AT: usize = SIZE_AT + 8;
const MD5_AT: usize = CHUNK_AT + 4;
const SHA512_AT: usize = MD5_AT + 16;
const HITS_AT: usize = SHA512_AT + 64;
const ACCESS_AT: usize = HITS_AT + 8;
const CREATED_AT: usize = ACCESS_AT + 8;
const SEQ_AT: usize = CREATED_AT + 8;
const CRC_AT: usize = SEQ_AT + 8;
/// Length of an encoded record.
pub const RECORD_LEN: usize = CRC_AT + 4;

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Space reserved, no chunk written yet.
    Reserved,
    /// Some chunks present, a fill under way or to resume.
    Filling,
    /// Every chunk present and the whole-image hashes checked.
    Complete,
    /// The hashes did not match: never served, data removed.
    Invalid,
}

impl State {
    fn to_byte(self) -> u8 {
        match self {
            State::Reserved => 0,
            State::Filling => 1,
            State::Complete => 2,
            State::Invalid => 3,
        }
    }

    fn from_byte(b: u8) -> Option<State> {
        Some(match b {
            0 => State::Reserved,
            1 => State::Filling,
            2 => State::Complete,
            3 => State::Invalid,
            _ => return None,
        })
    }
}

/// The eviction queue an entry sits in (S3-FIFO; see [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// New entries, evicted soon unless read again.
    Small,
    /// Entries that proved popular.
    Main,
}

/// One cached image's index record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Lifecycle state.
    pub state: State,
    /// Eviction queue.
    pub queue: Queue,
    /// Access frequency, saturating at 3.
    pub freq: u8,
    /// Image size in bytes.
    pub size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// md5 of the whole image.
    pub md5: [u8; 16],
    /// sha512 of the whole image.
    pub sha512: [u8; 64],
    /// Times served.
    pub hits: u64,
    /// Last access, Unix seconds.
    pub last_access: u64,
    /// Creation, Unix seconds.
    pub created: u64,
    /// Insertion sequence number (FIFO order across restarts).
    pub seq: u64,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not [`RECORD_LEN`] bytes.
    #[error("record has {0} bytes, expected {RECORD_LEN}")]
    Length(usize),
    /// Wrong magic.
    #[error("record magic is wrong")]
    Magic,
    /// A version this build does not read.
    #[error("record version {0} is not supported (this build reads {VERSION})")]
    Version(u8),
    /// The checksum does not match.
    #[error("record checksum mismatch")]
    Checksum,
    /// A field holds an impossible value.
    #[error("record field {0} is invalid")]
    Field(&'static str),
}

fn put(buf: &mut [u8; RECORD_LEN], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

impl EntryRecord {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut buf = [0u8; RECORD_LEN];
        put(&mut buf, MAGIC_AT, &MAGIC);
        buf[VERSION_AT] = VERSION;
        buf[STATE_AT] = self.state.to_byte();
        buf[QUEUE_AT] = match self.queue {
            Queue::Small => 0,
            Queue::Main => 1,
        };
        buf[FREQ_AT] = self.freq.min(3);
        put(&mut buf, SIZE_AT, &self.size.to_le_bytes());
        put(&mut buf, CHUNK_AT, &self.chunk_size.to_le_bytes());
        put(&mut buf, MD5_AT, &self.md5);
        put(&mut buf, SHA512_AT, &self.sha512);
        put(&mut buf, HITS_AT, &self.hits.to_le_bytes());
        put(&mut buf, ACCESS_AT, &self.last_access.to_le_bytes());
        put(&mut buf, CREATED_AT, &self.created.to_le_bytes());
        put(&mut buf, SEQ_AT, &self.seq.to_le_bytes());
        let crc = crc32fast::hash(&buf[..CRC_AT]);
        put(&mut buf, CRC_AT, &crc.to_le_bytes());
        buf
    }

    /// Decodes and checks a record.
    pub fn decode(bytes: &[u8]) -> Result<EntryRecord, FormatError> {
        if bytes.len() != RECORD_LEN {
            return Err(FormatError::Length(bytes.len()));
        }
        if bytes[MAGIC_AT..MAGIC_AT + 4] != MAGIC {
            return Err(FormatError::Magic);
        }
        if bytes[VERSION_AT] != VERSION {
            return Err(FormatError::Version(bytes[VERSION_AT]));
        }
        if crc32fast::hash(&bytes[..CRC_AT]) != u32_at(bytes, CRC_AT) {
            return Err(FormatError::Checksum);
        }
        let state = State::from_byte(bytes[STATE_AT]).ok_or(FormatError::Field("state"))?;
        let queue = match bytes[QUEUE_AT] {
            0 => Queue::Small,
            1 => Queue::Main,
            _ => return Err(FormatError::Field("queue")),
        };
        if bytes[FREQ_AT] > 3 {
            return Err(FormatError::Field("freq"));
        }
        let chunk_size = u32_at(bytes, CHUNK_AT);
        if chunk_size == 0 {
            return Err(FormatError::Field("chunk_size"));
        }
        let size = u64_at(bytes, SIZE_AT);
        // Chunks are indexed by u32 (the index's `chunks` table).
        if size.div_ceil(u64::from(chunk_size)) > u64::from(u32::MAX) {
            return Err(FormatError::Field("size"));
        }
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&bytes[MD5_AT..MD5_AT + 16]);
        let mut sha512 = [0u8; 64];
        sha512.copy_from_slice(&bytes[SHA512_AT..SHA512_AT + 64]);
        Ok(EntryRecord {
            state,
            queue,
            freq: bytes[FREQ_AT],
            size,
            chunk_size,
            md5,
            sha512,
            hits: u64_at(bytes, HITS_AT),
            last_access: u64_at(bytes, ACCESS_AT),
            created: u64_at(bytes, CREATED_AT),
            seq: u64_at(bytes, SEQ_AT),
        })
    }

    /// Number of chunks of the image (the last may be short).
    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_size))
    }

    /// Byte range `[start, end)` of chunk `i`, or `None` past the end.
    pub fn chunk_range(&self, i: u64) -> Option<(u64, u64)> {
        let cs = u64::from(self.chunk_size);
        let start = i.checked_mul(cs)?;
        (start < self.size).then(|| (start, start.saturating_add(cs).min(self.size)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> EntryRecord {
        EntryRecord {
            state: State::Filling,
            queue: Queue::Main,
            freq: 2,
            size: 21_474_836_480,
            chunk_size: 8 << 20,
            md5: [0x11; 16],
            sha512: [0x22; 64],
            hits: 7,
            last_access: 1_798_761_600,
            created: 1_798_000_000,
            seq: 42,
        }
    }

    #[test]
    fn format_offsets_match_the_documented_table() {
        assert_eq!((SIZE_AT, CHUNK_AT, MD5_AT, SHA512_AT), (8, 16, 20, 36));
        assert_eq!(
            (HITS_AT, ACCESS_AT, CREATED_AT, SEQ_AT, CRC_AT),
            (100, 108, 116, 124, 132)
        );
        assert_eq!(RECORD_LEN, 136);
        let bytes = sample().encode();
        assert_eq!(&bytes[..4], b"GSCE");
        assert_eq!(bytes[4], 1);
        assert_eq!(&bytes[8..16], &21_474_836_480u64.to_le_bytes());
    }

    #[test]
    fn format_checksum_catches_any_flipped_bit() {
        let bytes = sample().encode();
        for i in 0..RECORD_LEN * 8 {
            let mut b = bytes;
            b[i / 8] ^= 1 << (i % 8);
            assert!(EntryRecord::decode(&b).is_err(), "bit {i}");
        }
    }

    #[test]
    fn format_refuses_other_versions_and_lengths() {
        let mut b = sample().encode();
        b[4] = 2;
        assert_eq!(EntryRecord::decode(&b), Err(FormatError::Version(2)));
        assert_eq!(
            EntryRecord::decode(&b[..100]),
            Err(FormatError::Length(100))
        );
    }

    #[test]
    fn chunk_ranges_cover_the_image_exactly() {
        let mut r = sample();
        r.size = 20 << 20;
        r.chunk_size = 8 << 20;
        assert_eq!(r.chunk_count(), 3);
        assert_eq!(r.chunk_range(2), Some((16 << 20, 20 << 20)));
        assert_eq!(r.chunk_range(3), None);
        r.size = 0;
        assert_eq!(r.chunk_count(), 0);
        assert_eq!(r.chunk_range(0), None);
        // The last chunk of the largest size ends at the size, not past u64.
        r.chunk_size = u32::MAX;
        r.size = u64::MAX - 1;
        let last = r.chunk_count() - 1;
        assert_eq!(r.chunk_range(last).map(|(_, end)| end), Some(u64::MAX - 1));
    }

    #[test]
    fn format_refuses_a_size_of_more_chunks_than_the_index_counts() {
        let mut r = sample();
        r.chunk_size = 1;
        r.size = u64::from(u32::MAX);
        assert_eq!(EntryRecord::decode(&r.encode()), Ok(r.clone()));
        r.size += 1;
        assert_eq!(
            EntryRecord::decode(&r.encode()),
            Err(FormatError::Field("size"))
        );
    }

    proptest! {
        #[test]
        fn format_round_trips(size in any::<u64>(), cs in 1u32.., freq in 0u8..=3, hits in any::<u64>(), seq in any::<u64>(), st in 0u8..4) {
            let mut r = sample();
            r.size = size.min(u64::from(cs) * u64::from(u32::MAX));
            r.chunk_size = cs;
            r.freq = freq;
            r.hits = hits;
            r.seq = seq;
            r.state = State::from_byte(st).unwrap();
            prop_assert_eq!(EntryRecord::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn format_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = EntryRecord::decode(&bytes);
        }
    }
}
