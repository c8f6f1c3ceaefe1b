//! The one `.npy` reader of lorkd (format versions 1–3), returning `ndarray` arrays: members
//! of MedMNIST `.npz` archives here (uint8 images, integer labels), and the float32 tensors
//! `lorkd run` takes ([`read_f32`], [`write_f32`]).
//!
//! Written here rather than borrowed because the header is untrusted: the header must be a
//! `{...}` dict of at most 64 KiB, every slice is at a char boundary found by search (never
//! a fixed offset), the shape is checked for overflow, and the payload length is checked
//! against it before any allocation, so a hostile file yields an error, never a panic or a
//! huge allocation (the `npy` fuzz target in runtime/fuzz holds it to that). `ndarray-npy`
//! (0.9) does not: it allocates the header length a file claims (up to 4 GiB) and the payload
//! its shape claims before reading either, so a 100-byte file can ask for terabytes.

use std::io::Read;

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

/// The parsed header: element type, memory order and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// numpy type string, e.g. `|u1`, `<i8`.
    pub descr: String,
    /// Column-major payload.
    pub fortran_order: bool,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
}

/// Largest header accepted (numpy writes 64–128 bytes; v2 allows 4 GiB, we do not).
const MAX_HEADER: usize = 1 << 16;

/// Why an `.npy` file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyError(pub String);

impl std::fmt::Display for NpyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NpyError {}

impl NpyHeader {
    /// The shape as `usize`s; an error when a dimension does not fit.
    fn dims(&self) -> Result<Vec<usize>, String> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| format!("shape {:?} overflows", self.shape))
    }
}

/// A little-endian float32 (`<f4`), C-order `.npy` in memory, as an array of its shape.
/// Anything else (other dtypes, Fortran order, a payload longer or shorter than the shape)
/// is an error.
///
/// # Errors
/// A malformed or unsupported file, with what is wrong.
pub fn read_f32(bytes: &[u8]) -> Result<ArrayD<f32>, NpyError> {
    let mut r = bytes;
    let h = read_header(&mut r).map_err(NpyError)?;
    if h.descr != "<f4" {
        return Err(NpyError(format!(
            "dtype {:?}, expected little-endian float32 ('<f4')",
            h.descr
        )));
    }
    if h.fortran_order {
        return Err(NpyError("Fortran order; save it in C order".into()));
    }
    let n = numel(&h.shape)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| NpyError(format!("shape {:?} overflows", h.shape)))?;
    if r.len() as u64 != n {
        return Err(NpyError(format!(
            "holds {} bytes of data, shape {:?} needs {n}",
            r.len(),
            h.shape
        )));
    }
    let dims = h.dims().map_err(NpyError)?;
    let data = r
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    shaped(dims, data).map_err(NpyError)
}

/// `data` as a C-order array of `dims` (whose product the caller checked against its length).
fn shaped<T>(dims: Vec<usize>, data: Vec<T>) -> Result<ArrayD<T>, String> {
    ArrayD::from_shape_vec(IxDyn(&dims), data).map_err(|e| format!("shape {dims:?}: {e}"))
}

/// Writes `a` as a float32 C-order `.npy` (format 1.0, header padded to 64 bytes as numpy
/// does); any memory layout of `a` is written in logical (C) order.
pub fn write_f32<S: Data<Elem = f32>, D: Dimension>(a: &ArrayBase<S, D>) -> Vec<u8> {
    let dims: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    // A header past 64 KiB needs format 2.0; shapes of a few dims never get there.
    out.extend_from_slice(&(h.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend(a.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// The uint8 payload of a C-order member whose header `h` was just read from `r`, as an
/// array of its shape (read with [`read_payload`]'s bounded reservation).
pub(crate) fn read_u8(r: &mut impl Read, h: &NpyHeader) -> Result<ArrayD<u8>, String> {
    let n = numel(&h.shape).ok_or_else(|| format!("shape {:?} overflows", h.shape))?;
    let dims = h.dims()?;
    shaped(dims, read_payload(r, n)?)
}

/// The integer payload (`|u1`, `<i8`, `>u4`, …) of a C-order member whose header `h` was
/// just read from `r`, as i64s of its shape; `Ok(None)` for a non-integer dtype or unsigned
/// 64-bit values beyond i64.
pub(crate) fn read_ints(r: &mut impl Read, h: &NpyHeader) -> Result<Option<ArrayD<i64>>, String> {
    let Some(size) = h.descr.get(2..).and_then(|s| s.parse::<u64>().ok()) else {
        return Ok(None);
    };
    let bytes = numel(&h.shape)
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| "shape overflows".to_string())?;
    let raw = read_payload(r, bytes)?;
    let dims = h.dims()?;
    ints(&h.descr, &raw).map(|v| shaped(dims, v)).transpose()
}

/// Reads and parses the magic, version, length and dict of an `.npy` header, leaving `r` at
/// the payload.
///
/// # Errors
/// A malformed header, with what is wrong.
pub fn read_header(r: &mut impl Read) -> Result<NpyHeader, String> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|e| format!("reading npy magic: {e}"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err("not an .npy member (bad magic)".into());
    }
    let len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|e| format!("reading npy header length: {e}"))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|e| format!("reading npy header length: {e}"))?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!("unsupported npy version {v}")),
    };
    if len > MAX_HEADER {
        return Err(format!("npy header of {len} bytes is too long"));
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text)
        .map_err(|e| format!("reading npy header: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| "npy header is not text".to_string())?;
    parse_dict(&text)
}

/// Parses `{'descr': '<u1', 'fortran_order': False, 'shape': (3, 28, 28), }`.
fn parse_dict(s: &str) -> Result<NpyHeader, String> {
    let s = s.trim_end_matches(['\n', ' ', '\0']).trim_start();
    if !(s.starts_with('{') && s.ends_with('}')) {
        return Err("npy header is not a {...} dict".into());
    }
    let value_of = |key: &str| -> Result<&str, String> {
        let at = s
            .find(&format!("'{key}'"))
            .or_else(|| s.find(&format!("\"{key}\"")))
            .ok_or_else(|| format!("npy header has no {key:?}"))?;
        let rest = s[at + key.len() + 2..].trim_start();
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("npy header: expected ':' after {key:?}"))?;
        Ok(rest.trim_start())
    };
    let d = value_of("descr")?;
    let q = d
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or_else(|| {
            "npy header: descr is not a simple type (structured arrays are not supported)"
                .to_string()
        })?;
    let end = d[1..].find(q).ok_or("npy header: unterminated descr")?;
    let descr = d[1..1 + end].to_string();

    let f = value_of("fortran_order")?;
    let fortran_order = if f.starts_with("True") {
        true
    } else if f.starts_with("False") {
        false
    } else {
        return Err("npy header: fortran_order is neither True nor False".into());
    };

    let sh = value_of("shape")?;
    let sh = sh
        .strip_prefix('(')
        .ok_or("npy header: shape is not a tuple")?;
    let end = sh.find(')').ok_or("npy header: unterminated shape")?;
    let dims = &sh[..end];
    if dims.len() > 256 {
        return Err("npy header: shape has too many dimensions".into());
    }
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.trim_end_matches('L')
                .parse::<u64>()
                .map_err(|_| format!("npy header: bad dimension {t:?}"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
    })
}

/// Product of the dimensions, or None on overflow.
pub(crate) fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// Reads exactly `n` bytes of payload, reserving at most 256 MiB up front whatever `n`
/// claims; fewer bytes in the member is an error.
fn read_payload(r: &mut impl Read, n: u64) -> Result<Vec<u8>, String> {
    if n > isize::MAX as u64 {
        return Err(format!("payload of {n} bytes is too large"));
    }
    let mut buf = Vec::with_capacity((n as usize).min(1 << 28));
    r.take(n)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading payload: {e}"))?;
    if (buf.len() as u64) != n {
        return Err(format!("truncated, {} of {n} bytes", buf.len()));
    }
    Ok(buf)
}

/// Decodes integer elements (`|u1`, `<i8`, `>u4`, …) to i64; None for other types and for
/// unsigned 64-bit values beyond i64.
fn ints(descr: &str, bytes: &[u8]) -> Option<Vec<i64>> {
    let mut ch = descr.chars();
    let order = ch.next()?;
    let kind = ch.next()?;
    let size: usize = ch.as_str().parse().ok()?;
    if !matches!(kind, 'i' | 'u')
        || !matches!(size, 1 | 2 | 4 | 8)
        || !matches!(order, '<' | '>' | '|' | '=')
    {
        return None;
    }
    let big = order == '>';
    bytes
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            if big {
                for (i, &x) in c.iter().rev().enumerate() {
                    b[i] = x;
                }
            } else {
                b[..size].copy_from_slice(c);
            }
            let u = u64::from_le_bytes(b);
            if kind == 'u' {
                i64::try_from(u).ok()
            } else {
                // Sign-extend from `size` bytes.
                let shift = 64 - 8 * size as u32;
                Some(((u << shift) as i64) >> shift)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_ints() {
        let h = parse_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (3, 1), }").unwrap();
        assert_eq!(h.descr, "<i8");
        assert!(!h.fortran_order);
        assert_eq!(h.shape, [3, 1]);
        assert_eq!(
            parse_dict("{'descr': '|u1', 'fortran_order': True, 'shape': (5,), }")
                .unwrap()
                .shape,
            [5]
        );
        assert_eq!(
            parse_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (), }")
                .unwrap()
                .shape,
            Vec::<u64>::new()
        );
        assert!(
            parse_dict("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,), }")
                .is_err()
        );
        assert!(parse_dict("{'descr': '|u1', 'shape': (2,), }").is_err());
        assert_eq!(ints("<i2", &[0xff, 0xff, 2, 0]).unwrap(), [-1, 2]);
        assert_eq!(ints(">i4", &[0, 0, 1, 0]).unwrap(), [256]);
        assert_eq!(ints("|u1", &[200]).unwrap(), [200]);
        assert!(ints("<f4", &[0; 4]).is_none());
        assert!(ints("<u8", &[0xff; 8]).is_none());
        assert_eq!(numel(&[u64::MAX, 2]), None);
    }

    /// Crafted headers: each is an error naming the problem, never a panic.
    #[test]
    fn crafted_headers_are_errors() {
        let a = ndarray::array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let good = write_f32(&a);
        assert_eq!(read_f32(&good).unwrap(), a.clone().into_dyn());
        // A transposed view is written in its logical order.
        let t = read_f32(&write_f32(&a.t())).unwrap();
        assert_eq!(t, a.t().into_dyn());
        let with_header = |h: &str| {
            let mut v = b"\x93NUMPY\x01\x00".to_vec();
            v.extend_from_slice(&(h.len() as u16).to_le_bytes());
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(&[0; 8]);
            v
        };
        for h in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': ), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (, }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }",
            "{'descr': '<\u{e9}\u{e9}\u{e9}\u{e9}', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '\u{e9}",
            "{'descr'",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
            "'descr': '<f4', 'fortran_order': False, 'shape': (2,), ",
            "",
        ] {
            let e = read_f32(&with_header(h)).unwrap_err();
            assert!(!e.0.is_empty(), "{h:?}");
        }
        // The right size passes through the same path.
        assert!(read_f32(&with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        ))
        .is_ok());
        // Truncations of a good file at every length.
        for n in 0..good.len() {
            assert!(read_f32(&good[..n]).is_err(), "{n} bytes");
        }
        // Header length beyond the file, non-UTF-8 header bytes.
        let mut long = good.clone();
        long[8] = 0xff;
        long[9] = 0xff;
        assert!(read_f32(&long).is_err());
        let mut bad = good.clone();
        bad[12] = 0xc3;
        assert!(read_f32(&bad).is_err());
    }
}
