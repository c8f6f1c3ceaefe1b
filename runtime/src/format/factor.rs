//! The byte layout of one low-rank delta factor — its one encoder and one decoder.
//!
//! A factor is a row-major `[rows, cols]` matrix of f32 values (`A [r·k, Cin·k]` or
//! `B [Cout·k, r·k]` of an expert conv, see [`super::DeltaRef`]) stored in the blob's
//! [`DeltaDType`]:
//!
//! | dtype | bytes | layout |
//! |-------|-------|--------|
//! | `F32` | `4·rows·cols` | little-endian f32, row-major |
//! | `F16` | `2·rows·cols` | little-endian IEEE half, row-major (round to nearest even) |
//! | `I8`  | `rows·cols + 2·rows` | int8 rows (symmetric, zero point 0), then one little-endian f16 scale per row |
//!
//! int8 rows are quantised by [`crate::quant::quantize_delta_row`]: the scale is
//! `max|row| / 127` rounded *up* to the next half (so no code exceeds ±127), a zero row has
//! scale 0. [`encode_into`] writes this layout (the packer, the test fixture); [`Factor`]
//! reads it in place (the switch, the engine, the ONNX exporter). Round trip: `tests` below.

use super::{DeltaDType, TensorRef};

/// Bytes of a `rows × cols` factor in `dt`; `None` when the size overflows `usize`.
pub fn factor_bytes(dt: DeltaDType, rows: usize, cols: usize) -> Option<usize> {
    let n = rows.checked_mul(cols)?;
    match dt {
        DeltaDType::F32 => n.checked_mul(4),
        DeltaDType::F16 => n.checked_mul(2),
        DeltaDType::I8 => n.checked_add(rows.checked_mul(2)?),
    }
}

/// Why a factor could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The values or the output buffer do not hold `rows·cols` elements / `factor_bytes`.
    Shape,
    /// int8: row `row` is not finite or its scale does not fit an f16.
    RowScale {
        /// Index of the offending row.
        row: usize,
    },
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EncodeError::Shape => f.write_str("factor values do not match its shape"),
            EncodeError::RowScale { row } => {
                write!(f, "row {row}: not finite or too large for an f16 scale")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// Encodes the row-major `rows × cols` values `x` in `dt` into `out`, which must be exactly
/// [`factor_bytes`] long.
///
/// # Errors
/// [`EncodeError::Shape`] when the lengths disagree; [`EncodeError::RowScale`] for an int8
/// row that is not finite or whose scale exceeds the f16 range.
pub fn encode_into(
    x: &[f32],
    rows: usize,
    cols: usize,
    dt: DeltaDType,
    out: &mut [u8],
) -> Result<(), EncodeError> {
    let n = rows.checked_mul(cols).ok_or(EncodeError::Shape)?;
    if x.len() != n || Some(out.len()) != factor_bytes(dt, rows, cols) {
        return Err(EncodeError::Shape);
    }
    match dt {
        DeltaDType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DeltaDType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
        DeltaDType::I8 => {
            let (q, scales) = out.split_at_mut(n);
            let q: &mut [i8] = bytemuck::cast_slice_mut(q);
            for (i, s) in scales.chunks_exact_mut(2).enumerate() {
                let r = i * cols..(i + 1) * cols;
                let h = crate::quant::quantize_delta_row(&x[r.clone()], &mut q[r])
                    .ok_or(EncodeError::RowScale { row: i })?;
                s.copy_from_slice(&h.to_le_bytes());
            }
        }
    }
    Ok(())
}

/// [`encode_into`] into a new vector.
///
/// # Errors
/// As [`encode_into`].
#[cfg(feature = "std")]
pub fn encode(
    x: &[f32],
    rows: usize,
    cols: usize,
    dt: DeltaDType,
) -> Result<std::vec::Vec<u8>, EncodeError> {
    let mut out = std::vec![0u8; factor_bytes(dt, rows, cols).ok_or(EncodeError::Shape)?];
    encode_into(x, rows, cols, dt, &mut out)?;
    Ok(out)
}

/// A little-endian IEEE half's value, `half::f16::to_f32`'s bits: on Cortex-M4F/M7 by the
/// FPU's `VCVTB.F32.F16` (`kernels::f16_to_f32`), elsewhere by `half`.
#[inline(always)]
fn f16_le(b: [u8; 2]) -> f32 {
    let h = u16::from_le_bytes(b);
    #[cfg(all(target_arch = "arm", target_feature = "dsp", target_feature = "mclass"))]
    let v = crate::kernels::f16_to_f32(h);
    #[cfg(not(all(target_arch = "arm", target_feature = "dsp", target_feature = "mclass")))]
    let v = half::f16::from_bits(h).to_f32();
    v
}

/// A factor `[rows, cols]` read in place from a delta payload. Elements are decoded on read,
/// so the payload needs no alignment.
#[derive(Clone, Copy, Debug)]
pub struct Factor<'a> {
    bytes: &'a [u8],
    dtype: DeltaDType,
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns of the matrix.
    pub cols: usize,
}

impl<'a> Factor<'a> {
    /// The factor at `t` in `payload`; `None` if `t` lies outside `payload` or does not hold
    /// exactly [`factor_bytes`] bytes.
    pub fn new(
        payload: &'a [u8],
        t: TensorRef,
        dtype: DeltaDType,
        rows: usize,
        cols: usize,
    ) -> Option<Self> {
        let start = t.offset as usize;
        let bytes = payload.get(start..start.checked_add(t.len as usize)?)?;
        Self::from_bytes(bytes, dtype, rows, cols)
    }

    /// The factor stored in exactly `bytes`; `None` when the length is not [`factor_bytes`].
    pub fn from_bytes(
        bytes: &'a [u8],
        dtype: DeltaDType,
        rows: usize,
        cols: usize,
    ) -> Option<Self> {
        (Some(bytes.len()) == factor_bytes(dtype, rows, cols)).then_some(Factor {
            bytes,
            dtype,
            rows,
            cols,
        })
    }

    /// A factor of no elements.
    pub const EMPTY: Factor<'static> = Factor {
        bytes: &[],
        dtype: DeltaDType::F32,
        rows: 0,
        cols: 0,
    };

    /// Element `(i, j)`; callers keep `i < rows`, `j < cols`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        let n = i * self.cols + j;
        match self.dtype {
            DeltaDType::F32 => {
                let b = &self.bytes[4 * n..4 * n + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            DeltaDType::F16 => f16_le([self.bytes[2 * n], self.bytes[2 * n + 1]]),
            DeltaDType::I8 => self.bytes[n] as i8 as f32 * self.row_scale(i),
        }
    }

    #[inline]
    fn row_scale(&self, i: usize) -> f32 {
        let o = self.rows * self.cols + 2 * i;
        f16_le([self.bytes[o], self.bytes[o + 1]])
    }

    /// The elements as an f32 slice when stored as f32 and 4-aligned in memory (the fast
    /// path of the switch's loops; other storage decodes per element).
    #[inline]
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        match self.dtype {
            DeltaDType::F32 => bytemuck::try_cast_slice(self.bytes).ok(),
            _ => None,
        }
    }

    /// Decodes row `i` into `out[..cols]`.
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        match self.dtype {
            DeltaDType::F32 => {
                let b = &self.bytes[4 * i * self.cols..][..4 * self.cols];
                for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            // The row's f16 scale decoded once, not per element (the products are `get`'s).
            DeltaDType::I8 => {
                let s = self.row_scale(i);
                let b = &self.bytes[i * self.cols..][..self.cols];
                for (o, &q) in out[..self.cols].iter_mut().zip(b) {
                    *o = q as i8 as f32 * s;
                }
            }
            DeltaDType::F16 => {
                for (j, o) in out[..self.cols].iter_mut().enumerate() {
                    *o = self.get(i, j);
                }
            }
        }
    }

    /// Decodes the whole factor, row-major, into `out[..rows·cols]` (one [`Factor::row_into`]
    /// per row).
    pub fn decode_into(&self, out: &mut [f32]) {
        if self.cols == 0 {
            return;
        }
        if self.dtype == DeltaDType::I8 {
            // One loop over the rows, not a `row_into` call each (a rank-4 `B` row is four
            // values: the call, its checks and dispatch cost more than the row); the same
            // products.
            let (rows, cols) = (self.rows, self.cols);
            let (q, sc) = self.bytes.split_at(rows * cols);
            if cols == 4 {
                // Rank-4 `B` rows: the four products in a row without an inner loop.
                let out = out[..rows * 4].chunks_exact_mut(4);
                for ((o, q), s) in out.zip(q.chunks_exact(4)).zip(sc.chunks_exact(2)) {
                    let s = f16_le([s[0], s[1]]);
                    for (o, &v) in o.iter_mut().zip(q) {
                        *o = v as i8 as f32 * s;
                    }
                }
                return;
            }
            let out = out[..rows * cols].chunks_exact_mut(cols);
            for ((o, q), s) in out.zip(q.chunks_exact(cols)).zip(sc.chunks_exact(2)) {
                let s = f16_le([s[0], s[1]]);
                for (o, &v) in o.iter_mut().zip(q) {
                    *o = v as i8 as f32 * s;
                }
            }
            return;
        }
        for (i, row) in out[..self.rows * self.cols]
            .chunks_exact_mut(self.cols)
            .enumerate()
        {
            self.row_into(i, row);
        }
    }

    /// Decodes the factor transposed: `out[j·rows + i] = get(i, j)` for the whole
    /// `cols × rows` result (`out[..rows·cols]`). The streaming epilogues read `B` by columns
    /// (8 output channels of one rank row at a time). Every value is the row decoder's
    /// product, bit for bit.
    pub fn decode_transposed_into(&self, out: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        let out = &mut out[..rows * cols];
        if self.dtype == DeltaDType::I8 {
            let (q, sc) = self.bytes.split_at(rows * cols);
            // Every streaming call decodes `Aᵀ` (`rows` = r) and `Bᵀ` (`rows` = Cout): blocks
            // of 8 rows, each column's 8 values one fixed-size run of `out` (vector
            // converts and stores on NEON), the scales decoded once a block; the last rows
            // one value at a time.
            let scale = |i: usize| f16_le([sc[2 * i], sc[2 * i + 1]]);
            let r8 = rows / 8 * 8;
            for i0 in (0..r8).step_by(8) {
                let mut s = [0.0f32; 8];
                for (k, sk) in s.iter_mut().enumerate() {
                    *sk = scale(i0 + k);
                }
                let q = &q[i0 * cols..(i0 + 8) * cols];
                for (j, run) in out.chunks_exact_mut(rows).enumerate() {
                    for (k, (o, &sk)) in run[i0..i0 + 8].iter_mut().zip(&s).enumerate() {
                        *o = q[k * cols + j] as i8 as f32 * sk;
                    }
                }
            }
            for i in r8..rows {
                let s = scale(i);
                for (j, &v) in q[i * cols..(i + 1) * cols].iter().enumerate() {
                    out[j * rows + i] = v as i8 as f32 * s;
                }
            }
        } else if rows > 0 && cols > 0 {
            // f32 / f16: each element decoded in place, row by row (no per-element dtype
            // dispatch as in `get`).
            let w = if self.dtype == DeltaDType::F32 { 4 } else { 2 };
            for (i, row) in self.bytes.chunks_exact(w * cols).take(rows).enumerate() {
                for (j, c) in row.chunks_exact(w).enumerate() {
                    out[j * rows + i] = match self.dtype {
                        DeltaDType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                        _ => f16_le([c[0], c[1]]),
                    };
                }
            }
        }
    }

    /// The stored bytes (the layout table above) and their dtype: for kernels that decode
    /// whole tiles at once.
    #[inline]
    pub fn raw(&self) -> (&'a [u8], DeltaDType) {
        (self.bytes, self.dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        }
    }

    /// encode → decode for every dtype: exact for f32, the f16 rounding for f16, within half
    /// a row step for int8; the int8 bytes are the row quantiser's codes and scales.
    #[test]
    fn round_trip_every_dtype() {
        let seed = crate::test_seed();
        let mut r = rng(seed);
        for (rows, cols) in [(1, 1), (3, 5), (8, 2), (0, 4), (4, 0)] {
            let mut x: std::vec::Vec<f32> = (0..rows * cols).map(|_| r()).collect();
            if rows > 1 && cols > 0 {
                x[cols..2 * cols].fill(0.0); // a zero row: scale 0
            }
            for dt in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
                let b = encode(&x, rows, cols, dt).unwrap();
                assert_eq!(Some(b.len()), factor_bytes(dt, rows, cols));
                let f = Factor::from_bytes(&b, dt, rows, cols).unwrap();
                let mut y = std::vec![0.0; rows * cols];
                f.decode_into(&mut y);
                for i in 0..rows {
                    let amax = x[i * cols..(i + 1) * cols]
                        .iter()
                        .fold(0f32, |a, v| a.max(v.abs()));
                    for j in 0..cols {
                        let (v, d) = (x[i * cols + j], y[i * cols + j]);
                        assert_eq!(d.to_bits(), f.get(i, j).to_bits());
                        match dt {
                            DeltaDType::F32 => assert_eq!(d.to_bits(), v.to_bits()),
                            DeltaDType::F16 => assert_eq!(d, half::f16::from_f32(v).to_f32()),
                            DeltaDType::I8 => {
                                let s = half::f16::from_le_bytes([
                                    b[rows * cols + 2 * i],
                                    b[rows * cols + 2 * i + 1],
                                ])
                                .to_f32();
                                assert!(
                                    s * 127.0 >= amax && (d - v).abs() <= 0.5 * s * (1.0 + 1e-6),
                                    "{v} {d} {s}"
                                );
                            }
                        }
                    }
                }
                assert!(
                    Factor::from_bytes(&b, dt, rows + 1, cols).is_none() || rows * cols + cols == 0
                );
            }
        }
    }

    /// The transposed decode holds `get(i, j)` at `[j·rows + i]`, bit for bit, for every
    /// dtype, with rows shorter and longer than its stack chunk.
    #[test]
    fn transposed_decode_is_get_transposed() {
        let mut r = rng(crate::test_seed());
        for (rows, cols) in [
            (1, 1),
            (7, 3),
            (24, 8),
            (3, 64),
            (5, 65),
            (2, 130),
            (150, 8),
            (70, 16),
            (1024, 4),
            (0, 4),
            (4, 0),
        ] {
            let x: std::vec::Vec<f32> = (0..rows * cols).map(|_| r()).collect();
            for dt in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
                let b = encode(&x, rows, cols, dt).unwrap();
                let f = Factor::from_bytes(&b, dt, rows, cols).unwrap();
                let mut t = std::vec![f32::NAN; rows * cols + 1];
                f.decode_transposed_into(&mut t);
                for i in 0..rows {
                    for j in 0..cols {
                        let want = f.get(i, j).to_bits();
                        assert_eq!(t[j * rows + i].to_bits(), want, "{dt:?} {rows}x{cols}");
                    }
                }
                assert!(t[rows * cols].is_nan(), "wrote past rows·cols");
            }
        }
    }

    #[test]
    fn encode_refuses_bad_shapes_and_rows() {
        let mut out = [0u8; 8];
        assert_eq!(
            encode_into(&[1.0; 3], 2, 2, DeltaDType::F16, &mut out),
            Err(EncodeError::Shape)
        );
        assert_eq!(
            encode_into(&[1.0; 4], 2, 2, DeltaDType::F32, &mut out),
            Err(EncodeError::Shape)
        );
        let mut out = [0u8; 8];
        let x = [1.0, 2.0, f32::INFINITY, 1.0];
        assert_eq!(
            encode_into(&x, 2, 2, DeltaDType::I8, &mut out),
            Err(EncodeError::RowScale { row: 1 })
        );
        assert_eq!(factor_bytes(DeltaDType::F32, usize::MAX, 2), None);
    }
}
