//! The one error type of the format layer: small, `Copy`, named by the phase that failed.

/// Why a bundle or a delta blob was refused. Every check of `Bundle::parse` /
/// `Dept::parse_blob` maps to one variant; untrusted bytes never panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the fixed header needs.
    HeaderTruncated,
    /// The magic bytes are not `LORKDBND` (bundle) / `LORKDDLT` (delta blob).
    HeaderBadMagic,
    /// A format version this runtime does not read.
    HeaderUnsupportedVersion,
    /// Unknown flag bits, a wrong header length, or non-zero reserved bytes.
    HeaderBadField,
    /// The file length in the header disagrees with the bytes (or the signature flag).
    HeaderBadLength,
    /// A section lies outside the file, overlaps another or is misaligned.
    SectionOutOfBounds,
    /// The whole-file SHA-256 does not match.
    FileHashMismatch,
    /// A section's SHA-256 does not match.
    SectionHashMismatch,
    /// The base id in the header is not SHA-256(shared manifest ‖ shared payload).
    BaseIdMismatch,
    /// postcard could not decode the shared manifest (or bytes were left over).
    ManifestDecode,
    /// A manifest list (values, ops, tensors, departments, classes, deltas) is malformed or too long.
    ManifestSeq,
    /// A `ValueDesc` is empty, misaligned or lies outside the activation region.
    ManifestValue,
    /// An op names a value, slice or channel range that does not exist or is not yet computed.
    ManifestIndex,
    /// An op's shapes are inconsistent (output h/w/c vs input, k, stride, pad).
    ManifestShape,
    /// A `TensorRef` is misaligned, outside its payload, or its length is not what the shape needs.
    TensorBounds,
    /// Stored scales or zero points are not finite / positive / in range.
    TensorValue,
    /// `Op::Conv::expert` indices are not `0..experts` in graph order.
    ManifestExperts,
    /// The graph does not end in exactly one `PoolHead` reading `features` channels.
    ManifestHead,
    /// An op writes a value that overlaps one of its inputs or a value still to be read.
    ArenaOverlap,
    /// The arena plan is smaller than the activations plus the engine's extra region.
    ArenaTooSmall,
    /// The department table is malformed (bad entry, duplicate name, name mismatch).
    DepartmentTable,
    /// A department manifest could not be decoded (or bytes were left over).
    DeptDecode,
    /// A department blob was made for another shared part (base id differs).
    DeptBaseMismatch,
    /// A department's deltas, head or activation parameters do not fit the shared graph.
    DeptShape,
    /// A size computation overflowed.
    Overflow,
    /// A signature was required but the file has none.
    SignatureMissing,
    /// The public key is not a valid ed25519 point.
    SignatureBadKey,
    /// The ed25519 signature does not verify.
    SignatureInvalid,
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use FormatError::*;
        f.write_str(match self {
            HeaderTruncated => "bundle header truncated",
            HeaderBadMagic => "bad magic (not a lorkd bundle or delta blob)",
            HeaderUnsupportedVersion => "unsupported format version",
            HeaderBadField => "bad header field (flags, header length or reserved bytes)",
            HeaderBadLength => "file length disagrees with the header",
            SectionOutOfBounds => "section out of bounds, overlapping or misaligned",
            FileHashMismatch => "whole-file SHA-256 mismatch",
            SectionHashMismatch => "section SHA-256 mismatch",
            BaseIdMismatch => "base id is not the hash of the shared part",
            ManifestDecode => "shared manifest does not decode",
            ManifestSeq => "malformed or oversized manifest list",
            ManifestValue => "activation value empty, misaligned or outside the arena",
            ManifestIndex => "op refers to a missing value or channel range",
            ManifestShape => "op shapes inconsistent",
            TensorBounds => "tensor misaligned, out of bounds or of the wrong length",
            TensorValue => "scale or zero point out of range",
            ManifestExperts => "expert conv indices not in graph order",
            ManifestHead => "graph does not end in one PoolHead over the feature width",
            ArenaOverlap => "arena plan overlaps live values",
            ArenaTooSmall => "arena plan smaller than the engine needs",
            DepartmentTable => "malformed department table",
            DeptDecode => "department manifest does not decode",
            DeptBaseMismatch => "department delta made for another base",
            DeptShape => "department deltas or head do not fit the shared graph",
            Overflow => "size arithmetic overflow",
            SignatureMissing => "signature required but absent",
            SignatureBadKey => "invalid ed25519 public key",
            SignatureInvalid => "ed25519 signature does not verify",
        })
    }
}

impl core::error::Error for FormatError {}
