//! The serial protocol: one postcard-encoded message per frame, the frame being
//! `COBS(postcard(msg) ‖ crc32_le(postcard(msg))) 0x00`. The host sends a [`Request`], the
//! device answers every request with exactly one [`Response`] (an [`Response::Error`] for a
//! frame it cannot use, after which it keeps serving).
//!
//! Wire stability: variants are only ever appended, so a newer host still talks to an older
//! device (which answers `UnknownCommand`); fields are only ever appended at the end of a
//! response (`Hello`, `Status`), which an older host still decodes (postcard ignores the
//! bytes after the fields it knows).
use crate::{cobs, crc::crc32};
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Most departments a device reports.
pub const MAX_DEPTS: usize = 16;
/// Most classes in one department's scores.
pub const MAX_CLASSES: usize = 32;
/// Largest data field of an `InferChunk` / `UpdateChunk` (bytes).
pub const MAX_CHUNK: usize = 512;
/// Largest decoded message plus CRC the device accepts (bytes); longer frames are
/// `Oversized`.
pub const MAX_MSG: usize = MAX_CHUNK + 64;
/// Largest encoded frame, delimiter included.
pub const MAX_FRAME: usize = cobs::max_encoded_len(MAX_MSG) + 1;
/// Largest response message (the `Hello` with every department name is the longest).
pub const MAX_RESPONSE: usize = 768;

/// Host → device.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Who are you: answered by [`Response::Hello`].
    Hello,
    /// Counters and state: answered by [`Response::Status`].
    Status,
    /// Switch to department `dept`: answered by [`Response::Selected`].
    Select { dept: u8 },
    /// Start a frame of `len` f32 values (CHW, the model's input); answered by `Ack { next: 0 }`.
    InferBegin { len: u32 },
    /// f32 little-endian values starting at value `offset`; answered by `Ack`, or by `Scores`
    /// once the frame is complete (the device then runs the active department).
    InferChunk {
        offset: u32,
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Start (or resume) receiving an update package (`.lkdu`) of `len` bytes whose CRC-32 is
    /// `crc`: answered by `UpdateReady { resume_at }`, the offset the host continues from
    /// (after a reset: where the update store's journal says the package's bytes end on
    /// flash, at an erase-page boundary).
    UpdateBegin { len: u32, crc: u32 },
    /// Package bytes at `offset` (must equal the device's next offset; any length); answered
    /// by `Ack`. They go straight to the department's inactive A/B slot; the first chunk that
    /// completes the 192-byte signed package header is refused (`UpdateRejected`, before
    /// anything is written) when its signature does not verify with the device key, or the
    /// package is for another bundle, an unknown department, or not newer than what runs.
    UpdateChunk {
        offset: u32,
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Check the CRC, verify the package (SHA-256, signature, base id, version, security
    /// counter, delta blob) and commit it (one journal record): answered by `Updated`.
    UpdateCommit,
    /// Format the update store's journal — only when it was refused at boot
    /// ([`Health::StoreRefused`]; the highest readable security counters are kept):
    /// answered by `Status`, or `BadState` when the store is fine.
    FormatStore,
}

/// Whether the device runs its model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// The bundle verified and the update store opened.
    Ok,
    /// The bundle in flash is unsigned or its signature does not verify with the device's
    /// key, or it is damaged (code: [`crate::runtime_model::bundle_code`]): nothing runs;
    /// only `Hello` and `Status` are served, everything else is `NotRunning`.
    BundleRefused(u32),
    /// The update store refused to open (code: [`crate::runtime_model::update_code`], e.g.
    /// both journal bank headers invalid): the bundle's own departments run, updates are
    /// refused until `FormatStore`.
    StoreRefused(u32),
}

/// A department that does not run what its journal committed, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeptFault {
    /// Department index (its name is the `Hello` entry with this index).
    pub dept: u8,
    /// Why (an update store error code, [`crate::runtime_model::update_code`]; 18: the
    /// committed blob does not parse against the bundle).
    pub code: u32,
}

/// Device counters and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub active: u8,
    pub departments: u8,
    pub frames_ok: u32,
    pub frames_bad: u32,
    pub inferences: u32,
    pub button_presses: u32,
    /// Bytes of the update package received so far (or, after a reset, kept on flash), and
    /// its announced length (0 when none).
    pub update_staged: u32,
    pub update_len: u32,
    /// The version each department runs (0: none available).
    pub versions: Vec<u32, MAX_DEPTS>,
    /// Whether the model runs at all (bundle verified, update store open).
    pub health: Health,
    /// Departments that fell back from a committed update at boot, and why.
    pub faults: Vec<DeptFault, MAX_DEPTS>,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame's CRC does not match its payload.
    BadCrc,
    /// The frame was cut short (COBS structure or message ends early).
    Truncated,
    /// A request variant this firmware does not know.
    UnknownCommand,
    /// A known request whose fields do not decode.
    Malformed,
    /// The frame is longer than [`MAX_FRAME`]; it was dropped up to its delimiter.
    Oversized,
    /// No such department (`detail` = number of departments).
    BadDepartment,
    /// The request does not fit the current state (a chunk without a begin, …).
    BadState,
    /// A chunk at the wrong offset (`detail` = the offset expected).
    BadOffset,
    /// A length beyond what the device holds (`detail` = the limit).
    TooLarge,
    /// The flash driver failed.
    Flash,
    /// The received package does not match the announced CRC; the next `UpdateBegin` starts
    /// afresh.
    UpdateCrc,
    /// The runtime refused the package (`detail` = its error code).
    UpdateRejected,
    /// The model failed (`detail` = its error code).
    Model,
    /// The device runs nothing: its bundle was refused at boot (`detail` = the reason,
    /// as in [`Health::BundleRefused`]).
    NotRunning,
    /// The reply did not fit the device's response buffer (`detail` = its limit).
    ReplyTooLarge,
}

/// Device → host.
// A response lives on the stack only while it is encoded (no allocator to box `Hello`'s
// name and version lists), so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response<'a> {
    Hello {
        #[serde(borrow)]
        version: &'a str,
        #[serde(borrow)]
        departments: Vec<&'a str, MAX_DEPTS>,
        active: u8,
        /// f32 values per input frame.
        input_len: u32,
        /// The version each department runs (0: none available).
        versions: Vec<u32, MAX_DEPTS>,
    },
    Status(Status),
    Selected {
        dept: u8,
    },
    /// The next offset expected (values for inference, bytes for updates).
    Ack {
        next: u32,
    },
    Scores {
        dept: u8,
        top1: u16,
        scores: Vec<f32, MAX_CLASSES>,
    },
    UpdateReady {
        resume_at: u32,
    },
    Updated {
        dept: u8,
        version: u32,
    },
    Error {
        code: ErrorCode,
        detail: u32,
    },
}

/// A frame the device could not turn into a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadCrc,
    Truncated,
    UnknownCommand,
    Malformed,
}

impl From<FrameError> for ErrorCode {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::BadCrc => ErrorCode::BadCrc,
            FrameError::Truncated => ErrorCode::Truncated,
            FrameError::UnknownCommand => ErrorCode::UnknownCommand,
            FrameError::Malformed => ErrorCode::Malformed,
        }
    }
}

/// Encodes `msg` as one frame (delimiter included) into `out` using `scratch` for the
/// plain message; returns the frame length. `None` when a buffer is too small.
pub fn encode_frame<T: Serialize>(msg: &T, scratch: &mut [u8], out: &mut [u8]) -> Option<usize> {
    let n = postcard::to_slice(msg, scratch).ok()?.len();
    let crc = crc32(&scratch[..n]).to_le_bytes();
    scratch.get_mut(n..n + 4)?.copy_from_slice(&crc);
    let m = cobs::encode(&scratch[..n + 4], out).ok()?;
    *out.get_mut(m)? = 0;
    Some(m + 1)
}

/// Checks one received frame (without its delimiter) in place: COBS, then CRC. Returns the
/// message bytes.
pub fn open_frame(frame: &mut [u8]) -> Result<&[u8], FrameError> {
    let n = cobs::decode_in_place(frame).map_err(|e| match e {
        cobs::CobsError::ZeroByte => FrameError::Malformed,
        _ => FrameError::Truncated,
    })?;
    if n < 4 {
        return Err(FrameError::Truncated);
    }
    let (msg, crc) = frame[..n].split_at(n - 4);
    if crc32(msg).to_le_bytes() != crc {
        return Err(FrameError::BadCrc);
    }
    Ok(msg)
}

/// Number of [`Request`] variants this firmware knows.
pub const REQUEST_VARIANTS: u32 = 9;

/// Decodes a checked request; a variant index beyond [`REQUEST_VARIANTS`] is
/// `UnknownCommand` (postcard itself reports it as a generic serde error).
pub fn decode_request(msg: &[u8]) -> Result<Request<'_>, FrameError> {
    match postcard::take_from_bytes::<u32>(msg) {
        Ok((v, _)) if v >= REQUEST_VARIANTS => Err(FrameError::UnknownCommand),
        Ok(_) => decode(msg),
        Err(_) => Err(FrameError::Truncated),
    }
}

/// Decodes a checked message.
pub fn decode<'a, T: Deserialize<'a>>(msg: &'a [u8]) -> Result<T, FrameError> {
    postcard::from_bytes(msg).map_err(|e| match e {
        postcard::Error::DeserializeBadEnum => FrameError::UnknownCommand,
        postcard::Error::DeserializeUnexpectedEnd => FrameError::Truncated,
        _ => FrameError::Malformed,
    })
}

/// Splits a byte stream into frames at 0x00, holding at most [`MAX_FRAME`] bytes; a longer
/// frame is dropped up to its delimiter and reported once as oversized.
pub struct FrameReader {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflow: bool,
}

/// What one byte fed to a [`FrameReader`] completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// Nothing complete yet.
    More,
    /// A frame of this many bytes is in [`FrameReader::frame`].
    Frame(usize),
    /// An oversized frame ended.
    Oversized,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub const fn new() -> Self {
        FrameReader {
            buf: [0; MAX_FRAME],
            len: 0,
            overflow: false,
        }
    }

    /// Feeds one received byte.
    pub fn feed(&mut self, b: u8) -> Fed {
        if b == 0 {
            let (n, over) = (self.len, self.overflow);
            self.len = 0;
            self.overflow = false;
            return match (over, n) {
                (true, _) => Fed::Oversized,
                (false, 0) => Fed::More, // empty frame: idle line / resync
                (false, n) => Fed::Frame(n),
            };
        }
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        } else {
            self.overflow = true;
        }
        Fed::More
    }

    /// The bytes of the frame `feed` just reported (valid until the next `feed`).
    pub fn frame(&mut self, n: usize) -> &mut [u8] {
        &mut self.buf[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip_and_pinned_bytes() {
        let mut s = [0u8; 64];
        let mut f = [0u8; 80];
        // Pinned: Select is variant 2, dept 3 → [2, 3] + CRC, COBS-encoded, 0x00.
        let n = encode_frame(&Request::Select { dept: 3 }, &mut s, &mut f).unwrap();
        let crc = crc32(&[2, 3]).to_le_bytes();
        let mut plain = std::vec![2u8, 3];
        plain.extend_from_slice(&crc);
        let mut expect = std::vec![0u8; 16];
        let m = cobs::encode(&plain, &mut expect).unwrap();
        expect.truncate(m);
        expect.push(0);
        assert_eq!(&f[..n], &expect[..]);
        let msg = open_frame(&mut f[..n - 1]).unwrap();
        assert_eq!(decode::<Request>(msg).unwrap(), Request::Select { dept: 3 });
    }

    #[test]
    fn an_older_host_still_decodes_responses_with_appended_fields() {
        // The responses as a host from before `versions` was appended knew them.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, PartialEq, Deserialize)]
        enum OldResponse<'a> {
            Hello {
                #[serde(borrow)]
                version: &'a str,
                #[serde(borrow)]
                departments: Vec<&'a str, MAX_DEPTS>,
                active: u8,
                input_len: u32,
            },
            Status(OldStatus),
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct OldStatus {
            active: u8,
            departments: u8,
            frames_ok: u32,
            frames_bad: u32,
            inferences: u32,
            button_presses: u32,
            update_staged: u32,
            update_len: u32,
        }
        let mut buf = [0u8; 256];
        let hello = Response::Hello {
            version: "0.1.0",
            departments: Vec::from_slice(&["lung", "brain"]).unwrap(),
            active: 1,
            input_len: 3072,
            versions: Vec::from_slice(&[1, 7]).unwrap(),
        };
        let n = postcard::to_slice(&hello, &mut buf).unwrap().len();
        let old: OldResponse = postcard::from_bytes(&buf[..n]).unwrap();
        assert_eq!(
            old,
            OldResponse::Hello {
                version: "0.1.0",
                departments: Vec::from_slice(&["lung", "brain"]).unwrap(),
                active: 1,
                input_len: 3072,
            }
        );
        let status = Response::Status(Status {
            active: 1,
            departments: 2,
            frames_ok: 300,
            frames_bad: 2,
            inferences: 9,
            button_presses: 1,
            update_staged: 4096,
            update_len: 47168,
            versions: Vec::from_slice(&[1, 7]).unwrap(),
            health: Health::StoreRefused(26),
            faults: Vec::from_slice(&[DeptFault { dept: 1, code: 18 }]).unwrap(),
        });
        let mut buf = [0u8; 256];
        let n = postcard::to_slice(&status, &mut buf).unwrap().len();
        let old: OldResponse = postcard::from_bytes(&buf[..n]).unwrap();
        assert_eq!(
            old,
            OldResponse::Status(OldStatus {
                active: 1,
                departments: 2,
                frames_ok: 300,
                frames_bad: 2,
                inferences: 9,
                button_presses: 1,
                update_staged: 4096,
                update_len: 47168,
            })
        );
    }

    #[test]
    fn unknown_variant_is_unknown_command() {
        assert_eq!(decode_request(&[100]), Err(FrameError::UnknownCommand));
        assert_eq!(
            decode_request(&[0xC8, 0x01]),
            Err(FrameError::UnknownCommand)
        );
        assert_eq!(
            decode_request(&[REQUEST_VARIANTS as u8]),
            Err(FrameError::UnknownCommand)
        );
        assert_eq!(decode_request(&[]), Err(FrameError::Truncated));
        assert_eq!(decode_request(&[0x80]), Err(FrameError::Truncated));
        assert_eq!(decode_request(&[2]), Err(FrameError::Truncated)); // Select without dept
        assert_eq!(decode_request(&[7]), Ok(Request::UpdateCommit));
        assert_eq!(decode_request(&[8]), Ok(Request::FormatStore));
    }
}
