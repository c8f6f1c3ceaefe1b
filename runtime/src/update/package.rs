//! The `.lkdu` update package, format 2 (specified in `docs/update-format.md`):
//!
//! ```text
//! [header fields 128 B] [ed25519 signature of the 128 header bytes, 64 B] [delta blob]
//! ```
//! The header carries the blob's SHA-256 and is signed on its own, so a device authenticates
//! everything it decides on (department, version, base id, security counter, blob length and
//! hash) from the first [`HEADER_LEN`] bytes, before it journals or erases anything; the blob
//! that streams in afterwards must hash to the signed digest.
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 4    | magic `LKDU`                                                 |
//! | 4      | 2    | format version (2), u16 LE                                   |
//! | 6      | 2    | header length (192: fields and signature), u16 LE            |
//! | 8      | 4    | package version (the department's new version), u32 LE       |
//! | 12     | 4    | security counter (≤ version), u32 LE                         |
//! | 16     | 4    | blob length, u32 LE (1..=`MAX_BLOB`; 0 for a removal)        |
//! | 20     | 4    | flags: 0, [`FLAG_ADDED`], or `FLAG_ADDED | FLAG_REMOVE`      |
//! | 24     | 32   | base id of the bundle this applies to                        |
//! | 56     | 32   | department name, UTF-8, zero-padded                          |
//! | 88     | 1    | department name length (1..=32)                              |
//! | 89     | 1    | reserved (0)                                                 |
//! | 90     | 2    | added departments: class count of the head (1..), else 0     |
//! | 92     | 4    | reserved (0)                                                 |
//! | 96     | 32   | SHA-256 of the blob                                          |
//! | 128    | 64   | ed25519 signature of bytes 0..128                            |
use super::UpdateError;
use sha2::{Digest, Sha256};

/// First bytes of every package.
pub const MAGIC: [u8; 4] = *b"LKDU";
/// The package format version this runtime reads and writes (1 had an unsigned header and
/// a trailing signature; it is refused).
pub const FORMAT_VERSION: u16 = 2;
/// Bytes of the signed header fields.
pub const FIELDS_LEN: usize = 128;
/// Bytes of the ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of the authenticated header (fields, then their signature); the blob follows at
/// this offset (a multiple of `format::ALIGN`, so a blob read in place from an erase-aligned
/// slot is aligned for zero-copy).
pub const HEADER_LEN: usize = FIELDS_LEN + SIGNATURE_LEN;
/// Bytes of the SHA-256 digest.
pub const DIGEST_LEN: usize = 32;
/// Longest department name.
pub const NAME_MAX: usize = 32;
/// Flags bit 0: the package carries a department the base bundle does not have (added in
/// the field). Its header also states the head's class count, so a device can refuse a
/// head it cannot hold from the header alone. A reader of format 2 from before this flag
/// refuses such a package (`PackageBadHeader`: flags must be 0), never misreads it.
pub const FLAG_ADDED: u32 = 1;
/// Flags bit 1 (only with [`FLAG_ADDED`]): the package removes the added department it names
/// — a signed version of it with an empty blob and no classes. It is installed like any
/// version (A/B slot, commit, security counter), so an older package of the department is a
/// replay afterwards, and a newer add package brings it back.
pub const FLAG_REMOVE: u32 = 2;
/// Largest blob length a header may declare: the whole package length then fits a `u32`
/// (and so a `usize` on 32-bit targets) without wrapping.
pub const MAX_BLOB: u32 = u32::MAX - HEADER_LEN as u32;

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
    /// SHA-256 of the blob.
    pub blob_sha256: [u8; DIGEST_LEN],
    name: [u8; NAME_MAX],
    name_len: u8,
    /// 0 for an update of a bundle department or a removal; the head's class count (≥ 1) for
    /// a department added in the field ([`FLAG_ADDED`]).
    added_classes: u16,
    flags: u32,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl PackageHeader {
    /// A header for `name` (1..=32 bytes of UTF-8) and `blob`.
    ///
    /// # Errors
    /// `PackageBadHeader` for a bad name, an empty or too long blob or a counter above the
    /// version.
    pub fn new(
        name: &str,
        version: u32,
        security_counter: u32,
        base_id: [u8; 32],
        blob: &[u8],
    ) -> Result<Self, UpdateError> {
        let n = name.as_bytes();
        let blob_len = u32::try_from(blob.len()).map_err(|_| UpdateError::PackageBadHeader)?;
        if n.is_empty()
            || n.len() > NAME_MAX
            || security_counter > version
            || blob_len == 0
            || blob_len > MAX_BLOB
        {
            return Err(UpdateError::PackageBadHeader);
        }
        let mut buf = [0u8; NAME_MAX];
        buf[..n.len()].copy_from_slice(n);
        Ok(PackageHeader {
            version,
            security_counter,
            blob_len,
            base_id,
            blob_sha256: digest(blob),
            name: buf,
            name_len: n.len() as u8,
            added_classes: 0,
            flags: 0,
        })
    }

    /// The header of a package removing the department `name` added in the field: an empty
    /// blob, no classes.
    ///
    /// # Errors
    /// `PackageBadHeader` for a bad name or a counter above the version.
    pub fn new_removal(
        name: &str,
        version: u32,
        security_counter: u32,
        base_id: [u8; 32],
    ) -> Result<Self, UpdateError> {
        let mut h = Self::new(name, version, security_counter, base_id, &[0])?;
        h.blob_len = 0;
        h.blob_sha256 = digest(&[]);
        h.flags = FLAG_ADDED | FLAG_REMOVE;
        Ok(h)
    }

    /// True for a removal ([`FLAG_REMOVE`]).
    pub const fn is_removal(&self) -> bool {
        self.flags & FLAG_REMOVE != 0
    }

    /// A header for a department the base bundle does not have (added in the field), whose
    /// head has `classes` classes.
    ///
    /// # Errors
    /// As [`Self::new`]; `PackageBadHeader` for `classes == 0`.
    pub fn new_added(
        name: &str,
        version: u32,
        security_counter: u32,
        base_id: [u8; 32],
        classes: u16,
        blob: &[u8],
    ) -> Result<Self, UpdateError> {
        if classes == 0 {
            return Err(UpdateError::PackageBadHeader);
        }
        let mut h = Self::new(name, version, security_counter, base_id, blob)?;
        h.added_classes = classes;
        h.flags = FLAG_ADDED;
        Ok(h)
    }

    /// True for a department added in the field (absent from the base bundle), including
    /// its removal.
    pub const fn is_added(&self) -> bool {
        self.flags & FLAG_ADDED != 0
    }

    /// The head's class count an added department's header declares (`None` for an update
    /// of a bundle department).
    pub const fn added_classes(&self) -> Option<u16> {
        if self.added_classes > 0 {
            Some(self.added_classes)
        } else {
            None
        }
    }

    /// The department name.
    pub fn name(&self) -> &str {
        // Validated UTF-8 by `new` / `parse`.
        core::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("")
    }

    /// Total bytes of the package this header starts (at most `u32::MAX`: `blob_len` ≤
    /// [`MAX_BLOB`] is checked by `new` and `parse`).
    pub const fn package_len(&self) -> u32 {
        HEADER_LEN as u32 + self.blob_len
    }

    /// Decodes and checks the header fields from the first [`HEADER_LEN`] bytes of `bytes`
    /// and verifies their signature with `pubkey`: what a device may act on.
    ///
    /// # Errors
    /// Those of [`Self::parse`], then `BadKey`, `SignatureInvalid`.
    pub fn parse_signed(bytes: &[u8], pubkey: &[u8; 32]) -> Result<Self, UpdateError> {
        let h = Self::parse(bytes)?;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&bytes[FIELDS_LEN..HEADER_LEN]);
        verify_signature(pubkey, &bytes[..FIELDS_LEN], &sig)?;
        Ok(h)
    }

    /// Decodes and checks the header fields from the first [`HEADER_LEN`] bytes of `bytes`
    /// (not their signature: see [`Self::parse_signed`]).
    ///
    /// # Errors
    /// `PackageTruncated` (fewer than 192 bytes), `PackageBadMagic`,
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
        let flags = u32_at(b, 20);
        let added_classes = u16_at(b, 90);
        // An added department states its class count; any other package keeps it zero.
        let blob_len = u32_at(b, 16);
        let added_ok = match flags {
            0 => added_classes == 0,
            FLAG_ADDED => added_classes > 0,
            // A removal: no head, no blob.
            f if f == FLAG_ADDED | FLAG_REMOVE => added_classes == 0 && blob_len == 0,
            _ => false,
        };
        let bad = u16_at(b, 6) as usize != HEADER_LEN
            || !added_ok
            || name_len == 0
            || name_len > NAME_MAX
            || b[56 + name_len..88].iter().any(|&x| x != 0)
            || b[89] != 0
            || b[92..96].iter().any(|&x| x != 0)
            || core::str::from_utf8(&b[56..56 + name_len]).is_err();
        if bad {
            return Err(UpdateError::PackageBadHeader);
        }
        let mut base_id = [0u8; 32];
        base_id.copy_from_slice(&b[24..56]);
        let mut name = [0u8; NAME_MAX];
        name.copy_from_slice(&b[56..88]);
        let mut blob_sha256 = [0u8; DIGEST_LEN];
        blob_sha256.copy_from_slice(&b[96..128]);
        let (version, security_counter, blob_len) = (u32_at(b, 8), u32_at(b, 12), u32_at(b, 16));
        let empty_ok = flags & FLAG_REMOVE != 0;
        if security_counter > version || (blob_len == 0 && !empty_ok) || blob_len > MAX_BLOB {
            return Err(UpdateError::PackageBadHeader);
        }
        Ok(PackageHeader {
            version,
            security_counter,
            blob_len,
            base_id,
            blob_sha256,
            name,
            name_len: name_len as u8,
            added_classes,
            flags,
        })
    }

    /// The header's 128 field bytes (what the signature covers).
    pub fn encode(&self) -> [u8; FIELDS_LEN] {
        let mut b = [0u8; FIELDS_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.security_counter.to_le_bytes());
        b[16..20].copy_from_slice(&self.blob_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.flags.to_le_bytes());
        b[90..92].copy_from_slice(&self.added_classes.to_le_bytes());
        b[24..56].copy_from_slice(&self.base_id);
        b[56..88].copy_from_slice(&self.name);
        b[88] = self.name_len;
        b[96..128].copy_from_slice(&self.blob_sha256);
        b
    }
}

/// A whole package in memory whose structure and blob hash have been checked (not yet its
/// signature: see [`Package::verify`]).
#[derive(Clone, Copy, Debug)]
pub struct Package<'a> {
    /// The decoded header.
    pub header: PackageHeader,
    bytes: &'a [u8],
}

impl<'a> Package<'a> {
    /// Checks the header, the exact length and the blob's SHA-256.
    ///
    /// # Errors
    /// The header's errors, `PackageTruncated`, `PackageTrailing`, `HashMismatch`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, UpdateError> {
        let header = PackageHeader::parse(bytes)?;
        // Compared as u64: no wrap on a 32-bit target whatever `blob_len` says.
        let len = u64::from(header.package_len());
        if (bytes.len() as u64) < len {
            return Err(UpdateError::PackageTruncated);
        }
        if bytes.len() as u64 > len {
            return Err(UpdateError::PackageTrailing);
        }
        if digest(&bytes[HEADER_LEN..]) != header.blob_sha256 {
            return Err(UpdateError::HashMismatch);
        }
        Ok(Package { header, bytes })
    }

    /// The delta blob (exactly the bytes a bundle stores for this department).
    pub fn blob(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The whole package.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The ed25519 signature of the header fields.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(&self.bytes[FIELDS_LEN..HEADER_LEN]);
        s
    }

    /// Checks the header signature against `pubkey` (the blob is bound to it by its hash,
    /// checked by `parse`).
    ///
    /// # Errors
    /// `BadKey`, `SignatureInvalid`.
    pub fn verify(&self, pubkey: &[u8; 32]) -> Result<(), UpdateError> {
        verify_signature(pubkey, &self.bytes[..FIELDS_LEN], &self.signature())
    }
}

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(bytes).into()
}

/// Checks an ed25519 signature of `msg` (strict verification: no malleable signatures, no
/// small-order keys).
///
/// # Errors
/// `BadKey`, `SignatureInvalid`.
pub fn verify_signature(
    pubkey: &[u8; 32],
    msg: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), UpdateError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(pubkey).map_err(|_| UpdateError::BadKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(msg, &sig)
        .map_err(|_| UpdateError::SignatureInvalid)
}

/// Writes a signed package for `blob` into `out` (which must hold `header.package_len()`
/// bytes) and returns its length. `secret` is the ed25519 secret key (seed).
///
/// # Errors
/// `PackageBadHeader` if `header` was not made for `blob` (length or hash), `ScratchTooSmall`
/// if `out` is too short.
pub fn write_signed(
    header: &PackageHeader,
    blob: &[u8],
    secret: &[u8; 32],
    out: &mut [u8],
) -> Result<usize, UpdateError> {
    use ed25519_dalek::Signer;
    if header.blob_len as usize != blob.len() || header.blob_sha256 != digest(blob) {
        return Err(UpdateError::PackageBadHeader);
    }
    let len = header.package_len() as usize;
    let out = out.get_mut(..len).ok_or(UpdateError::ScratchTooSmall)?;
    let fields = header.encode();
    out[..FIELDS_LEN].copy_from_slice(&fields);
    let sig = ed25519_dalek::SigningKey::from_bytes(secret).sign(&fields);
    out[FIELDS_LEN..HEADER_LEN].copy_from_slice(&sig.to_bytes());
    out[HEADER_LEN..].copy_from_slice(blob);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_department_headers_round_trip_and_flags_must_match_the_class_count() {
        let h = PackageHeader::new_added("oncology", 1, 1, [3; 32], 5, &[9u8; 48]).unwrap();
        assert!(h.is_added());
        assert_eq!(h.added_classes(), Some(5));
        let mut b = [0u8; HEADER_LEN];
        b[..FIELDS_LEN].copy_from_slice(&h.encode());
        assert_eq!(PackageHeader::parse(&b), Ok(h));
        assert_eq!(u32_at(&b, 20), FLAG_ADDED);
        // A flag without a class count, a class count without the flag, unknown flags.
        for (flags, classes) in [(FLAG_ADDED, 0u16), (0, 5), (2, 5), (3, 5), (2, 0), (4, 0)] {
            let mut m = b;
            m[20..24].copy_from_slice(&flags.to_le_bytes());
            m[90..92].copy_from_slice(&classes.to_le_bytes());
            assert_eq!(
                PackageHeader::parse(&m),
                Err(UpdateError::PackageBadHeader),
                "flags {flags} classes {classes}"
            );
        }
        let plain = PackageHeader::new("oncology", 1, 1, [3; 32], &[9u8; 48]).unwrap();
        assert!(!plain.is_added());
        assert_eq!(plain.added_classes(), None);
        assert_eq!(
            PackageHeader::new_added("oncology", 1, 1, [3; 32], 0, &[9u8; 48]),
            Err(UpdateError::PackageBadHeader)
        );
        // A removal: flags 3, no classes, an empty blob (and only a removal may be empty).
        let r = PackageHeader::new_removal("oncology", 4, 4, [3; 32]).unwrap();
        assert!(r.is_added() && r.is_removal() && r.added_classes().is_none());
        let mut b = [0u8; HEADER_LEN];
        b[..FIELDS_LEN].copy_from_slice(&r.encode());
        assert_eq!(u32_at(&b, 20), FLAG_ADDED | FLAG_REMOVE);
        assert_eq!(PackageHeader::parse(&b), Ok(r));
        assert_eq!(r.package_len() as usize, HEADER_LEN);
        let secret = [7u8; 32];
        let mut out = [0u8; HEADER_LEN];
        assert_eq!(write_signed(&r, &[], &secret, &mut out), Ok(HEADER_LEN));
        assert!(Package::parse(&out).is_ok());
        let mut m = b;
        m[16..20].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(PackageHeader::parse(&m), Err(UpdateError::PackageBadHeader));
        let mut m = b;
        m[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(PackageHeader::parse(&m), Err(UpdateError::PackageBadHeader));
    }

    #[test]
    fn lengths_near_u32_max_are_refused_not_wrapped() {
        let h = PackageHeader::new("lung", 2, 0, [1; 32], &[7u8; 40]).unwrap();
        for blob_len in [u32::MAX, u32::MAX - 100, MAX_BLOB + 1, 0] {
            let mut b = [0u8; HEADER_LEN];
            b[..FIELDS_LEN].copy_from_slice(&h.encode());
            b[16..20].copy_from_slice(&blob_len.to_le_bytes());
            assert_eq!(
                PackageHeader::parse(&b),
                Err(UpdateError::PackageBadHeader),
                "{blob_len}"
            );
            assert!(Package::parse(&b).is_err());
        }
        let mut b = [0u8; HEADER_LEN];
        b[..FIELDS_LEN].copy_from_slice(&h.encode());
        b[16..20].copy_from_slice(&MAX_BLOB.to_le_bytes());
        let h = PackageHeader::parse(&b).unwrap();
        assert_eq!(h.package_len(), u32::MAX);
        assert_eq!(
            Package::parse(&b).err(),
            Some(UpdateError::PackageTruncated)
        );
    }
}
