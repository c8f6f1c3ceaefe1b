//! `Bundle::parse`: validate once, then run blind.
//!
//! `parse` checks the header, sections, hashes and signature here, then the manifests with
//! [`super::validate`] (the one statement of the shape rules). After `parse` returns `Ok`,
//! every `TensorRef` lies inside its payload, is 16-aligned and has exactly the length its
//! op's shape and dtype need; every value / slice index and channel range exists; op shapes
//! are consistent; the arena plan covers the activations (without a live value being
//! overwritten before it is read) plus `layout::extra_bytes`; every department blob fits the
//! shared graph and names this bundle's base id; every hash (and the signature, with
//! `parse_signed`) matches.

use sha2::{Digest, Sha256};

use super::header::{
    DeltaHeader, Header, DELTA_HEADER_LEN, FILE_HASH_OFFSET, HEADER_LEN, SIGNATURE_LEN,
};
use super::validate::{validate_dept, validate_manifest};
use super::{DeptEntry, DeptManifest, FormatError, Manifest, Mode, Seq, ALIGN};

pub use super::validate::{MAX_CLASSES, MAX_DEPARTMENTS, MAX_OPS, MAX_TENSORS, MAX_VALUES};

type R<T> = Result<T, FormatError>;
use FormatError as E;

/// A parsed, fully validated bundle borrowing the file bytes.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    header: Header,
    manifest: Manifest<'a>,
    shared: &'a [u8],
    table: Seq<'a, DeptEntry<'a>>,
}

/// One department: its manifest and the payload its `TensorRef`s point into.
#[derive(Clone, Copy, Debug)]
pub struct Dept<'a> {
    /// The decoded department manifest.
    pub manifest: DeptManifest<'a>,
    /// The payload its `TensorRef`s are relative to.
    pub payload: &'a [u8],
}

/// SHA-256 of the shared part (manifest bytes ‖ shared payload): the base id.
pub fn base_id_of(manifest: &[u8], shared: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(manifest);
    h.update(shared);
    h.finalize().into()
}

/// SHA-256 of `bytes[..file_len]` with the header's file-hash field taken as zeros.
pub fn file_hash(covered: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    let cut = FILE_HASH_OFFSET.min(covered.len());
    h.update(&covered[..cut]);
    if covered.len() >= FILE_HASH_OFFSET + 32 {
        h.update([0u8; 32]);
        h.update(&covered[FILE_HASH_OFFSET + 32..]);
    }
    h.finalize().into()
}

pub(super) fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl<'a> Bundle<'a> {
    /// Parses and validates a bundle (every offset, length, shape, index and SHA-256).
    /// A signature, if present, is not checked: use [`Bundle::parse_signed`] for that.
    pub fn parse(bytes: &'a [u8]) -> R<Self> {
        Self::parse_inner(bytes, None)
    }

    /// As [`Bundle::parse`], and requires a valid ed25519 signature by `pubkey`.
    pub fn parse_signed(bytes: &'a [u8], pubkey: &[u8; 32]) -> R<Self> {
        Self::parse_inner(bytes, Some(pubkey))
    }

    fn parse_inner(bytes: &'a [u8], pubkey: Option<&[u8; 32]>) -> R<Self> {
        let header = Header::decode(bytes)?;
        let file_len = header.file_len as usize;
        let expect = if header.is_signed() {
            file_len.checked_add(SIGNATURE_LEN).ok_or(E::Overflow)?
        } else {
            file_len
        };
        if bytes.len() != expect || file_len < HEADER_LEN || bytes.len() > u32::MAX as usize {
            return Err(E::HeaderBadLength);
        }
        let covered = &bytes[..file_len];

        // Sections in file order, each after the previous one, the table ending the file.
        let h = &header;
        if h.manifest.offset as usize != HEADER_LEN
            || !(h.shared.offset as usize).is_multiple_of(ALIGN)
            || !(h.blobs.offset as usize).is_multiple_of(ALIGN)
            || (h.shared.offset as usize) < h.manifest.end()?
            || (h.blobs.offset as usize) < h.shared.end()?
            || (h.table.offset as usize) < h.blobs.end()?
            || h.table.end()? != file_len
        {
            return Err(E::SectionOutOfBounds);
        }

        if let Some(pk) = pubkey {
            if !header.is_signed() {
                return Err(E::SignatureMissing);
            }
            let vk = ed25519_dalek::VerifyingKey::from_bytes(pk).map_err(|_| E::SignatureBadKey)?;
            let mut sig = [0u8; SIGNATURE_LEN];
            sig.copy_from_slice(&bytes[file_len..]);
            let sig = ed25519_dalek::Signature::from_bytes(&sig);
            vk.verify_strict(covered, &sig)
                .map_err(|_| E::SignatureInvalid)?;
        }

        if file_hash(covered) != header.file_sha256 {
            return Err(E::FileHashMismatch);
        }
        let mbytes = header.manifest.slice(covered)?;
        let shared = header.shared.slice(covered)?;
        header.blobs.slice(covered)?;
        let tbytes = header.table.slice(covered)?;
        if sha(mbytes) != header.manifest_sha256
            || sha(shared) != header.shared_sha256
            || sha(tbytes) != header.table_sha256
        {
            return Err(E::SectionHashMismatch);
        }
        if base_id_of(mbytes, shared) != header.base_id {
            return Err(E::BaseIdMismatch);
        }

        let (manifest, rest) =
            postcard::take_from_bytes::<Manifest<'a>>(mbytes).map_err(|_| E::ManifestDecode)?;
        if !rest.is_empty() {
            return Err(E::ManifestDecode);
        }
        validate_manifest(&manifest, shared)?;

        // Department table: entries point at blobs inside the blobs region.
        let count = header.dept_count as usize;
        if count > MAX_DEPARTMENTS {
            return Err(E::DepartmentTable);
        }
        let table = Seq::<DeptEntry<'a>>::from_encoded(header.dept_count, tbytes);
        table.validate().map_err(|_| E::DepartmentTable)?;
        for (i, entry) in table.iter().enumerate() {
            let blob = entry_blob(covered, &header, &entry)?;
            let dept = Dept::parse_blob(blob, &manifest, &header.base_id)?;
            if dept.manifest.name != entry.name {
                return Err(E::DepartmentTable);
            }
            if table.iter().take(i).any(|e| e.name == entry.name) {
                return Err(E::DepartmentTable);
            }
        }
        Ok(Bundle {
            bytes,
            header,
            manifest,
            shared,
            table,
        })
    }

    /// The shared manifest (graph, tensor table, arena plan).
    pub fn manifest(&self) -> &Manifest<'a> {
        &self.manifest
    }
    /// The shared payload; the manifest's `TensorRef` offsets are relative to it.
    pub fn shared(&self) -> &'a [u8] {
        self.shared
    }
    /// SHA-256 of the shared part (manifest ‖ shared payload).
    pub fn base_id(&self) -> &[u8; 32] {
        &self.header.base_id
    }
    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The whole file, signature included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Number of departments.
    pub fn department_count(&self) -> usize {
        self.table.len()
    }
    /// The raw delta blob of department `i` (what a `.lkdu` update carries).
    pub fn department_blob(&self, i: usize) -> Option<&'a [u8]> {
        let entry = self.table.get(i)?;
        entry_blob(
            &self.bytes[..self.header.file_len as usize],
            &self.header,
            &entry,
        )
        .ok()
    }
    /// Department `i` (validated by `parse`; decoding here cannot fail on a parsed bundle).
    pub fn department(&self, i: usize) -> Option<Dept<'a>> {
        Dept::decode(self.department_blob(i)?).ok()
    }
    /// Index of the department called `name`.
    pub fn find_department(&self, name: &str) -> Option<usize> {
        self.table.iter().position(|e| e.name == name)
    }
    /// Exact arena bytes the engine needs in `mode`: planned by the packer for Materialized
    /// and Streaming, computed by the same rule from the manifest for Auto.
    pub fn arena_bytes(&self, mode: Mode) -> usize {
        match mode {
            Mode::Materialized => self.manifest.arena.materialized_bytes as usize,
            Mode::Streaming => self.manifest.arena.streaming_bytes as usize,
            Mode::Auto => {
                super::layout::regions(&self.manifest, mode).map_or(usize::MAX, |r| r.total)
            }
        }
    }
    /// True when the file carries a signature (checked only by `parse_signed`).
    pub fn is_signed(&self) -> bool {
        self.header.is_signed()
    }
}

fn entry_blob<'a>(covered: &'a [u8], h: &Header, e: &DeptEntry<'_>) -> R<&'a [u8]> {
    let start = e.offset as usize;
    let end = start.checked_add(e.len as usize).ok_or(E::Overflow)?;
    if !start.is_multiple_of(ALIGN) || start < h.blobs.offset as usize || end > h.blobs.end()? {
        return Err(E::DepartmentTable);
    }
    covered.get(start..end).ok_or(E::DepartmentTable)
}

impl<'a> Dept<'a> {
    /// Parses and validates one delta blob against the shared manifest it will run with
    /// (which must come from a parsed [`Bundle`]) and that bundle's base id. Used for the
    /// blobs inside a bundle and for field-update slots alike.
    pub fn parse_blob(blob: &'a [u8], shared: &Manifest<'_>, base_id: &[u8; 32]) -> R<Self> {
        let h = DeltaHeader::decode(blob)?;
        if sha(&blob[DELTA_HEADER_LEN..]) != h.sha256 {
            return Err(E::SectionHashMismatch);
        }
        let dept = Self::decode_with(blob, &h)?;
        if &dept.manifest.base_id != base_id {
            return Err(E::DeptBaseMismatch);
        }
        validate_dept(&dept, shared)?;
        Ok(dept)
    }

    /// Decodes without hashing or validation (for blobs already validated).
    fn decode(blob: &'a [u8]) -> R<Self> {
        let h = DeltaHeader::decode(blob)?;
        Self::decode_with(blob, &h)
    }

    fn decode_with(blob: &'a [u8], h: &DeltaHeader) -> R<Self> {
        let mend = DELTA_HEADER_LEN + h.manifest_len as usize; // checked by DeltaHeader::decode
        let mbytes = &blob[DELTA_HEADER_LEN..mend];
        let (manifest, rest) =
            postcard::take_from_bytes::<DeptManifest<'a>>(mbytes).map_err(|_| E::DeptDecode)?;
        if !rest.is_empty() {
            return Err(E::DeptDecode);
        }
        Ok(Dept {
            manifest,
            payload: &blob[h.payload_offset as usize..],
        })
    }

    /// Number of classes of this department's head.
    pub fn classes(&self) -> usize {
        self.manifest.classes.len()
    }
}
