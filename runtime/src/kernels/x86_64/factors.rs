//! An expert's low-rank factors decoded to f32 on AVX2 + F16C, the spec's values (int8
//! codes times their row's f16 scale, one product; f16 by `vcvtph2ps`, exact; f32 as
//! stored): row-major for a rebuild ([`decode_rows`], the `Kernels::decode_factors` slot)
//! and transposed for a streaming expert's GEMMs ([`decode_t`], `Streaming::decode`).
use core::arch::x86_64::*;

use crate::format::factor::Factor;
use crate::format::DeltaDType;

/// [`crate::switch::decode_factors`] 8 values a step (then 4, then one at a time): the
/// scalar decode took a software f16 conversion per int8 row (a rank-8 `B` row is eight
/// values) or per f16 value (the Auto switch at 0.5x @32 with int8 factors 13.6 → 12.9 µs).
pub(super) fn decode_rows(a: &Factor<'_>, b: &Factor<'_>, da: &mut [f32], db: &mut [f32]) {
    rows(a, da);
    rows(b, db);
}

/// One factor of [`decode_rows`] into `out[..rows·cols]`.
fn rows(f: &Factor<'_>, out: &mut [f32]) {
    let (rows, cols) = (f.rows, f.cols);
    let out = &mut out[..rows * cols];
    if out.is_empty() {
        return;
    }
    let (bytes, dt) = f.raw();
    match dt {
        // Little-endian f32 as stored: the bytes themselves.
        DeltaDType::F32 => bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(bytes),
        // SAFETY (both): installed only after AVX2 + F16C detection; `bytes` holds
        // `factor_bytes(dt, rows, cols)` (a `Factor` invariant): `2·rows·cols` bytes of
        // f16, or `rows·cols` codes then `rows` f16 scales.
        DeltaDType::F16 => unsafe { f16_avx2(bytes, out) },
        DeltaDType::I8 => {
            let (q, sc) = bytes.split_at(rows * cols);
            unsafe { i8_avx2(q, sc, cols, out) }
        }
    }
}

/// One f16 value to f32 (`vcvtph2ps`, exact).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16(b: &[u8]) -> f32 {
    let h = u16::from_le_bytes([b[0], b[1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// `out[i]` = the little-endian f16 at `v[2i..]`.
///
/// # Safety
/// AVX2 and F16C available; `v.len() == 2·out.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_avx2(v: &[u8], out: &mut [f32]) {
    assert_eq!(v.len(), 2 * out.len());
    let mut oc = out.chunks_exact_mut(8);
    let mut vc = v.chunks_exact(16);
    for (o, b) in (&mut oc).zip(&mut vc) {
        // SAFETY: `b` holds the 16 bytes the load reads, `o` the 8 floats the store writes.
        unsafe {
            _mm256_storeu_ps(
                o.as_mut_ptr(),
                _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().cast())),
            )
        };
    }
    for (o, b) in oc
        .into_remainder()
        .iter_mut()
        .zip(vc.remainder().chunks_exact(2))
    {
        *o = f16(b);
    }
}

/// `out[i·cols + j] = q[i·cols + j] as f32 · s_i`, `s_i` the f16 at `sc[2i..]`.
///
/// # Safety
/// AVX2 and F16C available; `q.len() == out.len()`, a multiple of `cols`, with one f16
/// scale a row in `sc`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn i8_avx2(q: &[u8], sc: &[u8], cols: usize, out: &mut [f32]) {
    assert!(q.len() == out.len() && cols > 0 && out.len().is_multiple_of(cols));
    assert!(sc.len() >= 2 * (out.len() / cols));
    for ((o, q), s) in out
        .chunks_exact_mut(cols)
        .zip(q.chunks_exact(cols))
        .zip(sc.chunks_exact(2))
    {
        let s = f16(s);
        let sv = _mm256_set1_ps(s);
        let mut j = 0;
        while j + 8 <= cols {
            // SAFETY: `j + 8 ≤ cols`: 8 codes of the row, 8 floats of its output.
            unsafe {
                let v = _mm_loadl_epi64(q.as_ptr().add(j).cast());
                let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                _mm256_storeu_ps(o.as_mut_ptr().add(j), _mm256_mul_ps(v, sv));
            }
            j += 8;
        }
        if j + 4 <= cols {
            // SAFETY: `j + 4 ≤ cols`: 4 codes (read as one i32), 4 floats.
            unsafe {
                let v = _mm_cvtsi32_si128(q.as_ptr().add(j).cast::<i32>().read_unaligned());
                let v = _mm_cvtepi32_ps(_mm_cvtepi8_epi32(v));
                _mm_storeu_ps(
                    o.as_mut_ptr().add(j),
                    _mm_mul_ps(v, _mm256_castps256_ps128(sv)),
                );
            }
            j += 4;
        }
        for (o, &v) in o[j..].iter_mut().zip(&q[j..]) {
            *o = v as i8 as f32 * s;
        }
    }
}

/// [`switch::decode_lowrank`] with the factors decoded 8×8 at a time: each row's 8 values
/// loaded into one register (int8: widened, converted and times the row's f16 scale,
/// `q as f32 · s`; f16: `vcvtph2ps`; f32: as stored — the spec's values), the 8 rows
/// transposed in registers and stored as 8-lane runs of `Aᵀ`'s / `Bᵀ`'s rows, instead of
/// one scattered store per element.
pub(super) fn decode_t(a: &Factor<'_>, b: &Factor<'_>, at: &mut [f32], bt: &mut [f32]) {
    transposed(a, at);
    transposed(b, bt);
}

/// [`Factor::decode_transposed_into`]: at least 8 rows and whole 8-column tiles in
/// registers ([`decode_t_avx2`]; the rows past the last 8 by `get`); the rest the spec.
fn transposed(f: &Factor<'_>, out: &mut [f32]) {
    let (rows, cols) = (f.rows, f.cols);
    if rows < 8 || !cols.is_multiple_of(8) {
        return f.decode_transposed_into(out);
    }
    let out = &mut out[..rows * cols];
    let (bytes, dt) = f.raw();
    // SAFETY (each call): installed only after AVX2 + F16C detection; `bytes` holds
    // `factor_bytes(dt, rows, cols)` (a `Factor` invariant), `out` `rows·cols` values.
    match dt {
        DeltaDType::F32 => unsafe { decode_t_avx2::<4>(bytes, &[], rows, cols, out) },
        DeltaDType::F16 => unsafe { decode_t_avx2::<2>(bytes, &[], rows, cols, out) },
        DeltaDType::I8 => {
            let (q, sc) = bytes.split_at(rows * cols);
            unsafe { decode_t_avx2::<1>(q, sc, rows, cols, out) };
        }
    }
    if rows % 8 != 0 {
        // The rows past the last whole 8, as the spec decodes them.
        let r0 = rows / 8 * 8;
        for j in 0..cols {
            for i in r0..rows {
                out[j * rows + i] = f.get(i, j);
            }
        }
    }
}

/// The whole 8-row blocks of [`transposed`]: `W` bytes a value (1: int8 codes with the f16
/// row scales `sc`, 2: f16, 4: f32), `cols` a multiple of 8. Eight rows' f16 scales are
/// one `vcvtph2ps` (exact, as every f16 → f32 conversion).
#[target_feature(enable = "avx2,f16c")]
unsafe fn decode_t_avx2<const W: usize>(
    v: &[u8],
    sc: &[u8],
    rows: usize,
    cols: usize,
    out: &mut [f32],
) {
    assert!(v.len() == W * rows * cols && out.len() == rows * cols && cols.is_multiple_of(8));
    assert!(W != 1 || sc.len() == 2 * rows);
    let (vp, op) = (v.as_ptr(), out.as_mut_ptr());
    for i0 in (0..rows / 8 * 8).step_by(8) {
        let mut s = [0.0f32; 8];
        if W == 1 {
            let h = &sc[2 * i0..][..16];
            // SAFETY: `h` holds the 16 bytes (8 little-endian f16) the load reads, `s` the
            // 8 floats the store writes.
            unsafe {
                _mm256_storeu_ps(
                    s.as_mut_ptr(),
                    _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast())),
                )
            };
        }
        for c0 in (0..cols).step_by(8) {
            // SAFETY (both blocks): `i0 + 8 ≤ rows` and `c0 + 8 ≤ cols` (`cols` a multiple
            // of 8), so each row's 8 values at `W·((i0 + k)·cols + c0)` lie inside `v`
            // (`W·rows·cols` bytes), and each run of 8 floats at `(c0 + j)·rows + i0`
            // inside `out`.
            let r: [__m256; 8] = core::array::from_fn(|k| unsafe {
                let p = vp.add(W * ((i0 + k) * cols + c0));
                match W {
                    1 => _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))),
                        _mm256_set1_ps(s[k]),
                    ),
                    2 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                    _ => _mm256_loadu_ps(p.cast()),
                }
            });
            for (j, t) in super::transpose8(r).into_iter().enumerate() {
                unsafe { _mm256_storeu_ps(op.add((c0 + j) * rows + i0), t) };
            }
        }
    }
}
