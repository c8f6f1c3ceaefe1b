//! The error type of the update layer: small, `Copy`, named by the phase that refused.
use crate::format::FormatError;
use embedded_storage::nor_flash::NorFlashErrorKind;

/// Why an update (or opening the update store) was refused. Every refusal before the first
/// flash write leaves the flash unchanged; see `UpdateStore` for which checks run when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateError {
    /// The flash driver failed (or power was lost mid-operation).
    Flash(NorFlashErrorKind),
    /// The `Layout` does not fit this flash (alignment, bounds, overlap, bank too small,
    /// `WRITE_SIZE` unsupported) or the department count exceeds the store's capacity.
    Layout,
    /// The journal on flash was written for a different `Layout`.
    LayoutMismatch,
    /// Both journal bank headers are invalid but records remain: the store refuses to
    /// open rather than forget commits and security counters; `UpdateStore::format` is
    /// the explicit way out.
    JournalDamaged,
    /// The package does not start with `LKDU`.
    PackageBadMagic,
    /// A package format version this runtime does not read.
    PackageUnsupportedVersion,
    /// A header field is invalid (header length, flags, name, reserved bytes, counter > version).
    PackageBadHeader,
    /// Fewer bytes than the header declares.
    PackageTruncated,
    /// More bytes than the header declares.
    PackageTrailing,
    /// The SHA-256 over header and blob does not match the package's digest.
    HashMismatch,
    /// The public key is not a valid ed25519 point.
    BadKey,
    /// The ed25519 signature does not verify with the device's key.
    SignatureInvalid,
    /// The package names a department the bundle does not have.
    UnknownDepartment,
    /// The package was made for another bundle (base id differs).
    BaseMismatch,
    /// The package is larger than a delta slot.
    TooLarge,
    /// The package's version is older than the department's current one (a replay).
    VersionOld,
    /// The package's version equals the department's current one.
    VersionCurrent,
    /// The package's version is below the department's persisted security counter.
    VersionBelowCounter,
    /// The delta blob inside the (authentic) package does not parse against the bundle.
    Blob(FormatError),
    /// The blob's department, version or base id differ from the package header's.
    BlobMismatch,
    /// The package bytes streamed to flash start with another header than the update began with.
    HeaderMismatch,
    /// A chunk or `finish` came with no update in progress.
    NoUpdate,
    /// A chunk does not start where the previous one ended (the store expects `offset`).
    OutOfOrder,
    /// A chunk goes past the package length the header declared.
    Overflow,
    /// `finish` before every byte of the package arrived.
    Incomplete,
    /// The scratch buffer cannot hold the delta blob.
    ScratchTooSmall,
    /// A package adding a department names one the bundle already has.
    NameClash,
    /// Every added-department slot pair of the layout is taken.
    TooManyDepartments,
    /// An added department's head has more classes than the device takes.
    TooManyClasses,
}

impl From<NorFlashErrorKind> for UpdateError {
    fn from(e: NorFlashErrorKind) -> Self {
        UpdateError::Flash(e)
    }
}

impl From<FormatError> for UpdateError {
    fn from(e: FormatError) -> Self {
        UpdateError::Blob(e)
    }
}

impl core::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use UpdateError::*;
        let s = match self {
            Flash(k) => return write!(f, "flash error: {k}"),
            Blob(e) => return write!(f, "delta blob refused: {e}"),
            Layout => "update layout does not fit the flash or the store",
            LayoutMismatch => "the journal on flash was written for another layout",
            JournalDamaged => "update journal damaged (both bank headers invalid); refusing to format it implicitly",
            PackageBadMagic => "not a lorkd update package (bad magic)",
            PackageUnsupportedVersion => "unsupported update package version",
            PackageBadHeader => "bad update package header field",
            PackageTruncated => "update package truncated",
            PackageTrailing => "update package has trailing bytes",
            HashMismatch => "update package SHA-256 mismatch",
            BadKey => "public key is not a valid ed25519 key",
            SignatureInvalid => "update package signature does not verify",
            UnknownDepartment => "update names an unknown department",
            BaseMismatch => "update was made for another bundle (base id differs)",
            TooLarge => "update package is larger than a delta slot",
            VersionOld => "update version is older than the current one (replay)",
            VersionCurrent => "update version equals the current one",
            VersionBelowCounter => "update version is below the security counter",
            BlobMismatch => "delta blob disagrees with the package header",
            HeaderMismatch => "streamed package header differs from the one the update began with",
            NoUpdate => "no update in progress",
            OutOfOrder => "update chunk out of order",
            Overflow => "update chunk past the declared package length",
            Incomplete => "update package incomplete",
            ScratchTooSmall => "scratch buffer smaller than the delta blob",
            NameClash => "the added department's name is a department of the bundle",
            TooManyDepartments => "no free added-department slot (the layout's count is reached)",
            TooManyClasses => "the added department's head has more classes than the device takes",
        };
        f.write_str(s)
    }
}

impl core::error::Error for UpdateError {}
