//! Journal records: fixed 64-byte, CRC-32-protected entries appended to a journal bank.
//!
//! A record slot is *free* when all its bytes are `0xFF` (erased), *valid* when magic and
//! CRC check, and *garbage* otherwise (an interrupted write: skipped, never rewritten).
//!
//! | offset | size | field                                                           |
//! |--------|------|-----------------------------------------------------------------|
//! | 0      | 4    | magic `LKJR` (record) / `LKJB` (bank header, record 0 of a bank)|
//! | 4      | 1    | kind: 1 Begin, 2 Progress, 3 Commit, 4 Counter                  |
//! | 5      | 1    | slot (0 = A, 1 = B)                                              |
//! | 6      | 2    | department index, u16 LE                                         |
//! | 8      | 4    | version                                                          |
//! | 12     | 4    | package length                                                   |
//! | 16     | 4    | security counter                                                 |
//! | 20     | 4    | pages written (Progress)                                         |
//! | 24     | 32   | Begin: SHA-256 of the package header; Commit: package digest     |
//! | 56     | 4    | reserved (0)                                                     |
//! | 60     | 4    | CRC-32 (IEEE) of bytes 0..60                                     |
//!
//! The bank header uses the same frame: `kind` 0, `version` = bank sequence number,
//! and bytes 8.. hold the layout fingerprint (`Layout::fingerprint`) so a journal written
//! under another layout is refused instead of misread.

/// Bytes of one record (a multiple of every supported `WRITE_SIZE`).
pub const RECORD: usize = 64;
const MAGIC_RECORD: [u8; 4] = *b"LKJR";
const MAGIC_BANK: [u8; 4] = *b"LKJB";

/// One journal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// An update of `dept` into `slot` started; `header_hash` = SHA-256 of its 128-byte header.
    Begin {
        /// Department index.
        dept: u16,
        /// Slot (0 = A, 1 = B).
        slot: u8,
        /// The package's version.
        version: u32,
        /// Package bytes.
        len: u32,
        /// SHA-256 of the package header.
        header_hash: [u8; 32],
    },
    /// The first `pages` erase pages of the slot hold the package's bytes.
    Progress {
        /// Department index.
        dept: u16,
        /// Slot (0 = A, 1 = B).
        slot: u8,
        /// Erase pages written.
        pages: u32,
    },
    /// The slot holds a verified package; it may run.
    Commit {
        /// Department index.
        dept: u16,
        /// Slot (0 = A, 1 = B).
        slot: u8,
        /// The committed version.
        version: u32,
        /// Package bytes.
        len: u32,
        /// The package's security counter.
        counter: u32,
        /// SHA-256 of the package.
        digest: [u8; 32],
    },
    /// The department's security counter is at least `counter`.
    Counter {
        /// Department index.
        dept: u16,
        /// The counter's floor.
        counter: u32,
    },
}

/// CRC-32 (IEEE 802.3, reflected, as zlib).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn seal(b: &mut [u8; RECORD]) {
    let c = crc32(&b[..60]);
    b[60..].copy_from_slice(&c.to_le_bytes());
}

fn sealed(b: &[u8; RECORD]) -> bool {
    crc32(&b[..60]).to_le_bytes() == b[60..]
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// What a record slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Erased: never written since the bank's erase.
    Free,
    /// Written but not a valid record (torn or corrupt).
    Garbage,
    /// A record whose CRC checks.
    Valid(Record),
}

impl Record {
    /// The record's 64 bytes.
    pub fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[..4].copy_from_slice(&MAGIC_RECORD);
        let (kind, dept, slot, version, len, counter, pages, hash) = match *self {
            Record::Begin {
                dept,
                slot,
                version,
                len,
                header_hash,
            } => (1, dept, slot, version, len, 0, 0, header_hash),
            Record::Progress { dept, slot, pages } => (2, dept, slot, 0, 0, 0, pages, [0; 32]),
            Record::Commit {
                dept,
                slot,
                version,
                len,
                counter,
                digest,
            } => (3, dept, slot, version, len, counter, 0, digest),
            Record::Counter { dept, counter } => (4, dept, 0, 0, 0, counter, 0, [0; 32]),
        };
        b[4] = kind;
        b[5] = slot;
        b[6..8].copy_from_slice(&dept.to_le_bytes());
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[12..16].copy_from_slice(&len.to_le_bytes());
        b[16..20].copy_from_slice(&counter.to_le_bytes());
        b[20..24].copy_from_slice(&pages.to_le_bytes());
        b[24..56].copy_from_slice(&hash);
        seal(&mut b);
        b
    }

    /// Classifies a record slot read from flash.
    pub fn decode(b: &[u8; RECORD]) -> Slot {
        if b.iter().all(|&x| x == 0xFF) {
            return Slot::Free;
        }
        if b[..4] != MAGIC_RECORD || !sealed(b) {
            return Slot::Garbage;
        }
        let dept = u16::from_le_bytes([b[6], b[7]]);
        let (slot, version, len, counter, pages) = (
            b[5],
            u32_at(b, 8),
            u32_at(b, 12),
            u32_at(b, 16),
            u32_at(b, 20),
        );
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[24..56]);
        let r = match b[4] {
            1 => Record::Begin {
                dept,
                slot,
                version,
                len,
                header_hash: hash,
            },
            2 => Record::Progress { dept, slot, pages },
            3 => Record::Commit {
                dept,
                slot,
                version,
                len,
                counter,
                digest: hash,
            },
            4 => Record::Counter { dept, counter },
            _ => return Slot::Garbage,
        };
        if slot > 1 {
            return Slot::Garbage;
        }
        Slot::Valid(r)
    }
}

/// Encodes a bank header: sequence number and layout fingerprint.
pub fn encode_bank(seq: u32, fingerprint: &[u8; 32]) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[..4].copy_from_slice(&MAGIC_BANK);
    b[8..12].copy_from_slice(&seq.to_le_bytes());
    b[24..56].copy_from_slice(fingerprint);
    seal(&mut b);
    b
}

/// Decodes a bank header: `(seq, fingerprint)` when valid.
pub fn decode_bank(b: &[u8; RECORD]) -> Option<(u32, [u8; 32])> {
    if b[..4] != MAGIC_BANK || !sealed(b) {
        return None;
    }
    let mut f = [0u8; 32];
    f.copy_from_slice(&b[24..56]);
    Some((u32_at(b, 8), f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_and_flips_are_garbage() {
        let recs = [
            Record::Begin {
                dept: 3,
                slot: 1,
                version: 7,
                len: 999,
                header_hash: [5; 32],
            },
            Record::Progress {
                dept: 2,
                slot: 0,
                pages: 4,
            },
            Record::Commit {
                dept: 1,
                slot: 1,
                version: 9,
                len: 1234,
                counter: 8,
                digest: [0xA5; 32],
            },
            Record::Counter {
                dept: 0,
                counter: 12,
            },
        ];
        for r in recs {
            let b = r.encode();
            assert_eq!(Record::decode(&b), Slot::Valid(r));
            for i in 0..RECORD {
                let mut f = b;
                f[i] ^= 0x10;
                assert_eq!(Record::decode(&f), Slot::Garbage, "flip at {i}");
            }
        }
        assert_eq!(Record::decode(&[0xFF; RECORD]), Slot::Free);
        assert_eq!(decode_bank(&encode_bank(42, &[1; 32])), Some((42, [1; 32])));
        assert_eq!(
            decode_bank(
                &Record::Counter {
                    dept: 0,
                    counter: 1
                }
                .encode()
            ),
            None
        );
    }
}
