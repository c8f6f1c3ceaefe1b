//! Fixed-size little-endian headers: the bundle header (256 B) and the delta-blob header
//! (64 B). Field tables are in `docs/bundle-format.md`; offsets here are the wire format.

use super::FormatError;

/// Magic of a bundle file.
pub const BUNDLE_MAGIC: [u8; 8] = *b"LORKDBND";
/// Magic of a department delta blob (inside a bundle, or the body of a `.lkdu` update).
pub const DELTA_MAGIC: [u8; 8] = *b"LORKDDLT";
/// The format version this runtime reads and writes.
pub const VERSION: u16 = 1;
/// Bytes of the bundle header.
pub const HEADER_LEN: usize = 256;
/// Bytes of a delta-blob header.
pub const DELTA_HEADER_LEN: usize = 64;
/// Bytes of the optional trailing ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// `Header::flags` bit: an ed25519 signature over `bytes[..file_len]` follows the file.
pub const FLAG_SIGNED: u16 = 1;
/// Offset of `Header::file_sha256` (taken as zeros while hashing the file).
pub const FILE_HASH_OFFSET: usize = 192;

/// The bundle header, at offset 0 of the file.
///
/// | off | size | field |
/// |----:|-----:|-------|
/// | 0   | 8    | magic `LORKDBND` |
/// | 8   | 2    | version (1) |
/// | 10  | 2    | flags (bit 0: signed) |
/// | 12  | 4    | header_len (256) |
/// | 16  | 4    | file_len (bytes covered by the file hash and the signature) |
/// | 20  | 4    | department count |
/// | 24  | 8    | manifest offset, length |
/// | 32  | 8    | shared payload offset, length |
/// | 40  | 8    | delta blobs region offset, length |
/// | 48  | 8    | department table offset, length |
/// | 56  | 8    | reserved (0) |
/// | 64  | 32   | base id = SHA-256(manifest ‖ shared payload) |
/// | 96  | 32   | SHA-256(manifest) |
/// | 128 | 32   | SHA-256(shared payload) |
/// | 160 | 32   | SHA-256(department table) |
/// | 192 | 32   | SHA-256(file\[..file_len\] with this field zeroed) |
/// | 224 | 32   | reserved (0) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version (1).
    pub version: u16,
    /// Bit 0: signed; others 0.
    pub flags: u16,
    /// Bytes covered by the file hash and the signature.
    pub file_len: u32,
    /// Department table entries.
    pub dept_count: u32,
    /// The shared manifest.
    pub manifest: Section,
    /// The shared payload.
    pub shared: Section,
    /// The delta blobs region.
    pub blobs: Section,
    /// The department table.
    pub table: Section,
    /// SHA-256(manifest ‖ shared payload).
    pub base_id: [u8; 32],
    /// SHA-256 of the manifest section.
    pub manifest_sha256: [u8; 32],
    /// SHA-256 of the shared payload.
    pub shared_sha256: [u8; 32],
    /// SHA-256 of the department table.
    pub table_sha256: [u8; 32],
    /// SHA-256 of the file with this field zeroed.
    pub file_sha256: [u8; 32],
}

/// A byte range of the file: `offset .. offset + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Section {
    /// Bytes from the start of the file.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Section {
    /// End offset, checked.
    pub fn end(&self) -> Result<usize, FormatError> {
        (self.offset as usize)
            .checked_add(self.len as usize)
            .ok_or(FormatError::Overflow)
    }
    /// The section's bytes, when it lies inside `bytes`.
    pub fn slice<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], FormatError> {
        bytes
            .get(self.offset as usize..self.end()?)
            .ok_or(FormatError::SectionOutOfBounds)
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn h32_at(b: &[u8], o: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(&b[o..o + 32]);
    h
}
fn section_at(b: &[u8], o: usize) -> Section {
    Section {
        offset: u32_at(b, o),
        len: u32_at(b, o + 4),
    }
}

impl Header {
    /// Decodes and checks the fixed fields (magic, version, flags, lengths, reserved bytes).
    /// Section bounds and hashes are checked by `Bundle::parse`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let b = bytes
            .get(..HEADER_LEN)
            .ok_or(FormatError::HeaderTruncated)?;
        if b[..8] != BUNDLE_MAGIC {
            return Err(FormatError::HeaderBadMagic);
        }
        let version = u16_at(b, 8);
        if version != VERSION {
            return Err(FormatError::HeaderUnsupportedVersion);
        }
        let flags = u16_at(b, 10);
        if flags & !FLAG_SIGNED != 0
            || u32_at(b, 12) as usize != HEADER_LEN
            || b[56..64].iter().chain(&b[224..256]).any(|&x| x != 0)
        {
            return Err(FormatError::HeaderBadField);
        }
        Ok(Header {
            version,
            flags,
            file_len: u32_at(b, 16),
            dept_count: u32_at(b, 20),
            manifest: section_at(b, 24),
            shared: section_at(b, 32),
            blobs: section_at(b, 40),
            table: section_at(b, 48),
            base_id: h32_at(b, 64),
            manifest_sha256: h32_at(b, 96),
            shared_sha256: h32_at(b, 128),
            table_sha256: h32_at(b, 160),
            file_sha256: h32_at(b, FILE_HASH_OFFSET),
        })
    }

    /// The header's exact 256 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&BUNDLE_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.file_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.dept_count.to_le_bytes());
        for (o, s) in [
            (24, self.manifest),
            (32, self.shared),
            (40, self.blobs),
            (48, self.table),
        ] {
            b[o..o + 4].copy_from_slice(&s.offset.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&s.len.to_le_bytes());
        }
        b[64..96].copy_from_slice(&self.base_id);
        b[96..128].copy_from_slice(&self.manifest_sha256);
        b[128..160].copy_from_slice(&self.shared_sha256);
        b[160..192].copy_from_slice(&self.table_sha256);
        b[192..224].copy_from_slice(&self.file_sha256);
        b
    }

    /// True when the signed flag is set.
    pub fn is_signed(&self) -> bool {
        self.flags & FLAG_SIGNED != 0
    }
}

/// The header of a delta blob, at offset 0 of the blob.
///
/// | off | size | field |
/// |----:|-----:|-------|
/// | 0   | 8    | magic `LORKDDLT` |
/// | 8   | 2    | version (1) |
/// | 10  | 2    | reserved (0) |
/// | 12  | 4    | manifest length (the manifest starts at offset 64) |
/// | 16  | 4    | payload offset from the blob start (multiple of 16) |
/// | 20  | 4    | payload length (the blob ends with the payload) |
/// | 24  | 8    | reserved (0) |
/// | 32  | 32   | SHA-256(blob\[64..\]) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaHeader {
    /// Bytes of the postcard `DeptManifest` (at offset 64).
    pub manifest_len: u32,
    /// Offset of the payload from the blob start (aligned).
    pub payload_offset: u32,
    /// Bytes of the payload (the blob ends with it).
    pub payload_len: u32,
    /// SHA-256 of `blob[64..]`.
    pub sha256: [u8; 32],
}

impl DeltaHeader {
    /// Decodes and checks the fixed fields, and that the blob is exactly
    /// `payload_offset + payload_len` bytes with the manifest before the payload.
    pub fn decode(blob: &[u8]) -> Result<Self, FormatError> {
        let b = blob
            .get(..DELTA_HEADER_LEN)
            .ok_or(FormatError::HeaderTruncated)?;
        if b[..8] != DELTA_MAGIC {
            return Err(FormatError::HeaderBadMagic);
        }
        if u16_at(b, 8) != VERSION {
            return Err(FormatError::HeaderUnsupportedVersion);
        }
        if b[10..12].iter().chain(&b[24..32]).any(|&x| x != 0) {
            return Err(FormatError::HeaderBadField);
        }
        let h = DeltaHeader {
            manifest_len: u32_at(b, 12),
            payload_offset: u32_at(b, 16),
            payload_len: u32_at(b, 20),
            sha256: h32_at(b, 32),
        };
        let manifest_end = DELTA_HEADER_LEN
            .checked_add(h.manifest_len as usize)
            .ok_or(FormatError::Overflow)?;
        let end = (h.payload_offset as usize)
            .checked_add(h.payload_len as usize)
            .ok_or(FormatError::Overflow)?;
        if !(h.payload_offset as usize).is_multiple_of(super::ALIGN)
            || (h.payload_offset as usize) < manifest_end
            || end != blob.len()
        {
            return Err(FormatError::SectionOutOfBounds);
        }
        Ok(h)
    }

    /// The header's exact 64 bytes.
    pub fn encode(&self) -> [u8; DELTA_HEADER_LEN] {
        let mut b = [0u8; DELTA_HEADER_LEN];
        b[..8].copy_from_slice(&DELTA_MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.payload_offset.to_le_bytes());
        b[20..24].copy_from_slice(&self.payload_len.to_le_bytes());
        b[32..64].copy_from_slice(&self.sha256);
        b
    }
}
