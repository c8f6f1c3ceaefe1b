//! The `.lkdu` update package (specified in `docs/update-format.md`):
//!
//! ```text
//! [header 128 B] [delta blob, blob_len B] [SHA-256 32 B] [ed25519 signature 64 B]
//! ```
//! The digest covers header and blob; the signature is ed25519 over the 32-byte digest (as
//! MCUboot signs the image hash), so a device can hash a package while it streams into flash
//! and check the signature without holding the package in RAM.
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 4    | magic `LKDU`                                                 |
//! | 4      | 2    | format version (1), u16 LE                                   |
//! | 6      | 2    | header length (128), u16 LE                                  |
//! | 8      | 4    | package version (the department's new version), u32 LE       |
//! | 12     | 4    | security counter (≤ version), u32 LE                         |
//! | 16     | 4    | blob length, u32 LE (≥ 1)                                    |
//! | 20     | 4    | flags (0)                                                    |
//! | 24     | 32   | base id of the bundle this applies to                        |
//! | 56     | 32   | department name, UTF-8, zero-padded                          |
//! | 88     | 1    | department name length (1..=32)                              |
//! | 89     | 39   | reserved (0)                                                 |
use super::UpdateError;
use sha2::{Digest, Sha256};

/// First bytes of every package.
pub const MAGIC: [u8; 4] = *b"LKDU";
/// The package format version this runtime reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the fixed header; the blob follows at this offset (a multiple of `format::ALIGN`,
/// so a blob read in place from an erase-aligned slot is aligned for zero-copy).
pub const HEADER_LEN: usize = 128;
/// Bytes of the SHA-256 digest.
pub const DIGEST_LEN: usize = 32;
/// Bytes of the ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes after the blob: digest then signature.
pub const TRAILER_LEN: usize = DIGEST_LEN + SIGNATURE_LEN;
/// Longest department name.
pub const NAME_MAX: usize = 32;

/// The decoded fixed header of a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackageHeader {
    /// The department's new version (monotonic per department).
    pub version: u32,
    /// After this package is installed the department never again runs a version below it.
    pub security_counter: u32,
    /// Bytes of the delta blob.
    pub blob_len: u32,
    /// Base id of the bundle the delta was made for.
    pub base_id: [u8; 32],
    name: [u8; NAME_MAX],
    name_len: u8,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl PackageHeader {
    /// A header for `name` (1..=32 bytes of UTF-8).
    ///
    /// # Errors
    /// `PackageBadHeader` for a bad name, an empty blob or a counter above the version.
    pub fn new(
        name: &str,
        version: u32,
        security_counter: u32,
        base_id: [u8; 32],
        blob_len: u32,
    ) -> Result<Self, UpdateError> {
        let n = name.as_bytes();
        if n.is_empty() || n.len() > NAME_MAX || security_counter > version || blob_len == 0 {
            return Err(UpdateError::PackageBadHeader);
        }
        let mut buf = [0u8; NAME_MAX];
        buf[..n.len()].copy_from_slice(n);
        Ok(PackageHeader {
            version,
            security_counter,
            blob_len,
            base_id,
            name: buf,
            name_len: n.len() as u8,
        })
    }

    /// The department name.
    pub fn name(&self) -> &str {
        // Validated UTF-8 by `new` / `parse`.
        core::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("")
    }

    /// Total bytes of the package this header starts.
    pub const fn package_len(&self) -> usize {
        HEADER_LEN + self.blob_len as usize + TRAILER_LEN
    }

    /// Decodes and checks the header from the first [`HEADER_LEN`] bytes of `bytes`.
    ///
    /// # Errors
    /// `PackageTruncated` (fewer than 128 bytes), `PackageBadMagic`,
    /// `PackageUnsupportedVersion`, `PackageBadHeader`.
    pub fn parse(bytes: &[u8]) -> Result<Self, UpdateError> {
        if bytes.len() >= 4 && bytes[..4] != MAGIC {
            return Err(UpdateError::PackageBadMagic);
        }
        let b = bytes
            .get(..HEADER_LEN)
            .ok_or(UpdateError::PackageTruncated)?;
        if u16_at(b, 4) != FORMAT_VERSION {
            return Err(UpdateError::PackageUnsupportedVersion);
        }
        let name_len = b[88] as usize;
        let bad = u16_at(b, 6) as usize != HEADER_LEN
            || u32_at(b, 20) != 0
            || name_len == 0
            || name_len > NAME_MAX
            || b[56 + name_len..88].iter().any(|&x| x != 0)
            || b[89..].iter().any(|&x| x != 0)
            || core::str::from_utf8(&b[56..56 + name_len]).is_err();
        if bad {
            return Err(UpdateError::PackageBadHeader);
        }
        let mut base_id = [0u8; 32];
        base_id.copy_from_slice(&b[24..56]);
        let mut name = [0u8; NAME_MAX];
        name.copy_from_slice(&b[56..88]);
        let (version, security_counter, blob_len) = (u32_at(b, 8), u32_at(b, 12), u32_at(b, 16));
        if security_counter > version || blob_len == 0 {
            return Err(UpdateError::PackageBadHeader);
        }
        Ok(PackageHeader {
            version,
            security_counter,
            blob_len,
            base_id,
            name,
            name_len: name_len as u8,
        })
    }

    /// The header's 128 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.security_counter.to_le_bytes());
        b[16..20].copy_from_slice(&self.blob_len.to_le_bytes());
        b[24..56].copy_from_slice(&self.base_id);
        b[56..88].copy_from_slice(&self.name);
        b[88] = self.name_len;
        b
    }
}

/// A whole package in memory whose structure and digest have been checked (not yet its
/// signature: see [`Package::verify`]).
#[derive(Clone, Copy, Debug)]
pub struct Package<'a> {
    /// The decoded header.
    pub header: PackageHeader,
    bytes: &'a [u8],
}

impl<'a> Package<'a> {
    /// Checks the header, the exact length and the SHA-256.
    ///
    /// # Errors
    /// The header's errors, `PackageTruncated`, `PackageTrailing`, `HashMismatch`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, UpdateError> {
        let header = PackageHeader::parse(bytes)?;
        let len = header.package_len();
        if bytes.len() < len {
            return Err(UpdateError::PackageTruncated);
        }
        if bytes.len() > len {
            return Err(UpdateError::PackageTrailing);
        }
        let body = len - TRAILER_LEN;
        if digest(&bytes[..body]) != bytes[body..body + DIGEST_LEN] {
            return Err(UpdateError::HashMismatch);
        }
        Ok(Package { header, bytes })
    }

    /// The delta blob (exactly the bytes a bundle stores for this department).
    pub fn blob(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + self.header.blob_len as usize]
    }

    /// The whole package.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// SHA-256 over header and blob.
    pub fn digest(&self) -> [u8; DIGEST_LEN] {
        let o = self.bytes.len() - TRAILER_LEN;
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&self.bytes[o..o + DIGEST_LEN]);
        d
    }

    /// The ed25519 signature.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        let o = self.bytes.len() - SIGNATURE_LEN;
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(&self.bytes[o..]);
        s
    }

    /// Checks the signature against `pubkey`.
    ///
    /// # Errors
    /// `BadKey`, `SignatureInvalid`.
    pub fn verify(&self, pubkey: &[u8; 32]) -> Result<(), UpdateError> {
        verify_signature(pubkey, &self.digest(), &self.signature())
    }
}

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(bytes).into()
}

/// Checks an ed25519 signature over a package digest (strict verification: no malleable
/// signatures, no small-order keys).
///
/// # Errors
/// `BadKey`, `SignatureInvalid`.
pub fn verify_signature(
    pubkey: &[u8; 32],
    digest: &[u8; DIGEST_LEN],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), UpdateError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(pubkey).map_err(|_| UpdateError::BadKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(digest, &sig)
        .map_err(|_| UpdateError::SignatureInvalid)
}

/// Writes a signed package for `blob` into `out` (which must hold `header.package_len()`
/// bytes) and returns its length. `secret` is the ed25519 secret key (seed).
///
/// # Errors
/// `PackageBadHeader` if `header.blob_len` is not `blob.len()`, `ScratchTooSmall` if `out`
/// is too short.
pub fn write_signed(
    header: &PackageHeader,
    blob: &[u8],
    secret: &[u8; 32],
    out: &mut [u8],
) -> Result<usize, UpdateError> {
    use ed25519_dalek::Signer;
    if header.blob_len as usize != blob.len() {
        return Err(UpdateError::PackageBadHeader);
    }
    let len = header.package_len();
    let out = out.get_mut(..len).ok_or(UpdateError::ScratchTooSmall)?;
    let body = HEADER_LEN + blob.len();
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    out[HEADER_LEN..body].copy_from_slice(blob);
    let d = digest(&out[..body]);
    out[body..body + DIGEST_LEN].copy_from_slice(&d);
    let sig = ed25519_dalek::SigningKey::from_bytes(secret).sign(&d);
    out[body + DIGEST_LEN..].copy_from_slice(&sig.to_bytes());
    Ok(len)
}
