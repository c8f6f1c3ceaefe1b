//! int8 concat + 2-group channel shuffle with the rescale to the output's quantisation on
//! AVX-512 VBMI: a side already in the output's quantisation is copied, the other mapped
//! through its 256-entry table of `qy.quantize(q.dequantize(v))` (built per call by
//! `switch::quantize_row`, the same bytes) held in four registers — two `vpermi2b`
//! lookups of 128 entries, picked by the code's sign bit —, then the two sides'
//! 64-channel chunks interleaved by `vpunpck{l,h}bw` and one cross-lane `vpermt2q` each,
//! stored masked. Exact, so the spec's bytes. Taken only where the CPU has VBMI.
//!
//! On AVX2 ([`concat_shuffle_i8_avx2`]) a rescaled side runs as integer steps
//! ([`AffineCodes`]: a multiply, add and shift in i32 lanes, packed back with saturation),
//! taken only where those give all 256 codes of the side's table; 16 channels of both sides
//! are interleaved by `punpck{l,h}bw`.
use core::arch::x86_64::*;

use super::first_bytes;
use crate::kernels::reference::concat_shuffle::{fits, ConcatIn};
use crate::quant::{AffineCodes, QParams};

/// AVX-512 VBMI (byte permutes) on top of the AVX-512 table's features: the slot is
/// installed only where this holds.
pub(super) fn vbmi() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "avx512vbmi")
    }
}

/// `Kernels::concat_shuffle_i8` (the bytes of `reference::concat_shuffle::concat_shuffle_i8`);
/// `false`, nothing written, for slices that do not hold the shape or a rescaled side's
/// zero point past ±2^24 (the engine's portable code decides those). Install only after
/// AVX-512 detection and [`vbmi`].
pub(crate) fn concat_shuffle_i8(
    n: usize,
    c: usize,
    a: ConcatIn<'_>,
    b: ConcatIn<'_>,
    qy: QParams,
    y: &mut [i8],
) -> bool {
    let Some(len) = fits(n, c, &a, &b, qy, y.len()) else {
        return false;
    };
    // SAFETY: only installed after AVX-512 and VBMI detection; every pixel's
    // `c` codes lie inside each input (`holds`), `y` holds `n·2c` bytes.
    unsafe { body(n, c, &a, &b, qy, &mut y[..len]) };
    true
}

/// `table[v as u8] = qy.quantize(from.dequantize(v))` for every code, by the vectorised
/// `switch::quantize_row` (the same bytes): a rescaled side's definition, built per call.
fn codes_table(from: QParams, qy: QParams) -> [i8; 256] {
    let deq: [f32; 256] = core::array::from_fn(|i| from.dequantize(i as u8 as i8));
    let mut t = [0i8; 256];
    crate::switch::quantize_row(qy, false, &deq, &mut t);
    t
}

/// A side's map: `None` copies, `Some` holds its table as four 64-entry registers.
type Table = Option<[__m512i; 4]>;

/// # Safety
/// AVX-512 F/BW/VL/VBMI available; both sides `holds(n, c)`, `y.len() = n·2c`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn body(n: usize, c: usize, a: &ConcatIn<'_>, b: &ConcatIn<'_>, qy: QParams, y: &mut [i8]) {
    let table = |s: &ConcatIn<'_>| -> Table {
        (s.q != qy).then(|| {
            let t = codes_table(s.q, qy);
            // SAFETY: `t` holds 256 bytes.
            core::array::from_fn(|k| unsafe { _mm512_loadu_si512(t.as_ptr().add(64 * k).cast()) })
        })
    };
    let (ta, tb) = (table(a), table(b));
    // Output qwords of the two interleaved halves in order (lanes: lo.0, hi.0, lo.1, …).
    let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for p in 0..n {
        let (pa, pb) = (
            a.x[p * a.stride + a.off..].as_ptr(),
            b.x[p * b.stride + b.off..].as_ptr(),
        );
        let out = y[p * 2 * c..].as_mut_ptr();
        let mut c0 = 0;
        while c0 < c {
            let m = first_bytes(c - c0);
            // SAFETY: the loads keep bytes `c0 .. min(c0 + 64, c)` of the pixel's `c` codes
            // (`holds`), the stores bytes `2c0 .. 2·min(c0 + 64, c)` of its `2c` outputs.
            unsafe {
                let va = lookup(_mm512_maskz_loadu_epi8(m, pa.add(c0).cast()), &ta);
                let vb = lookup(_mm512_maskz_loadu_epi8(m, pb.add(c0).cast()), &tb);
                let (lo, hi) = (_mm512_unpacklo_epi8(va, vb), _mm512_unpackhi_epi8(va, vb));
                let k = 2 * (c - c0).min(64);
                let o = out.add(2 * c0);
                _mm512_mask_storeu_epi8(
                    o.cast(),
                    first_bytes(k),
                    _mm512_permutex2var_epi64(lo, first, hi),
                );
                if k > 64 {
                    let v = _mm512_permutex2var_epi64(lo, second, hi);
                    _mm512_mask_storeu_epi8(o.add(64).cast(), first_bytes(k - 64), v);
                }
            }
            c0 += 64;
        }
    }
}

/// `v`'s codes through the side's table (`None`: as they are).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vbmi")]
fn lookup(v: __m512i, t: &Table) -> __m512i {
    match t {
        None => v,
        Some([t0, t1, t2, t3]) => {
            // Codes 0..127 index entries 0..127 (`t0`, `t1`), −128..−1 entries 128..255
            // (`t2`, `t3`): the low 7 bits pick within a pair, the sign picks the pair.
            let pos = _mm512_permutex2var_epi8(*t0, v, *t1);
            let neg = _mm512_permutex2var_epi8(*t2, v, *t3);
            _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), pos, neg)
        }
    }
}

/// `Kernels::concat_shuffle_i8` on AVX2 (the reference's bytes): each side copied or mapped
/// by its [`AffineCodes`], 16 channels of a pixel at a time (a last short step overlaps
/// the one before). `false`, nothing written, for fewer than 16 channels, slices that do
/// not hold the shape, or a rescaled side without a fit (the engine's portable code does
/// those). Install only after AVX2 detection.
pub(crate) fn concat_shuffle_i8_avx2(
    n: usize,
    c: usize,
    a: ConcatIn<'_>,
    b: ConcatIn<'_>,
    qy: QParams,
    y: &mut [i8],
) -> bool {
    let Some(len) = fits(n, c, &a, &b, qy, y.len()).filter(|_| c >= 16) else {
        return false;
    };
    let map = |s: &ConcatIn<'_>| -> Option<Option<AffineCodes>> {
        if s.q == qy {
            return Some(None);
        }
        AffineCodes::fit(s.q, qy, &codes_table(s.q, qy)).map(Some)
    };
    let (Some(ma), Some(mb)) = (map(&a), map(&b)) else {
        return false;
    };
    // SAFETY: only installed after AVX2 detection; every pixel's `c ≥ 16` codes lie inside
    // each input (`holds`), `y` holds `n·2c` bytes.
    unsafe { body_avx2(n, c, &a, &b, ma, mb, &mut y[..len]) };
    true
}

/// # Safety
/// AVX2 available; `c ≥ 16`, both sides `holds(n, c)`, `y.len() = n·2c`.
#[target_feature(enable = "avx2")]
unsafe fn body_avx2(
    n: usize,
    c: usize,
    a: &ConcatIn<'_>,
    b: &ConcatIn<'_>,
    ma: Option<AffineCodes>,
    mb: Option<AffineCodes>,
    y: &mut [i8],
) {
    debug_assert!(c >= 16 && y.len() == n * 2 * c);
    for p in 0..n {
        let (pa, pb) = (
            &a.x[p * a.stride + a.off..][..c],
            &b.x[p * b.stride + b.off..][..c],
        );
        let out = &mut y[p * 2 * c..][..2 * c];
        let mut c0 = 0;
        loop {
            // The last step starts at `c − 16`: bytes written twice get the same values.
            let at = c0.min(c - 16);
            // SAFETY: `at + 16 ≤ c`: 16 codes of each side read, 32 outputs from `2·at` written.
            unsafe {
                let va = affine16(_mm_loadu_si128(pa.as_ptr().add(at).cast()), ma);
                let vb = affine16(_mm_loadu_si128(pb.as_ptr().add(at).cast()), mb);
                let o = out.as_mut_ptr().add(2 * at);
                _mm_storeu_si128(o.cast(), _mm_unpacklo_epi8(va, vb));
                _mm_storeu_si128(o.add(16).cast(), _mm_unpackhi_epi8(va, vb));
            }
            c0 += 16;
            if c0 >= c {
                break;
            }
        }
    }
}

/// 16 codes through `f` ([`AffineCodes::apply`] in i32 lanes; `None`: as they are).
#[inline]
#[target_feature(enable = "avx2")]
fn affine16(v: __m128i, f: Option<AffineCodes>) -> __m128i {
    let Some(f) = f else {
        return v;
    };
    let (m, k, s) = (
        _mm256_set1_epi32(f.m),
        _mm256_set1_epi32(f.c),
        _mm_cvtsi32_si128(f.s as i32),
    );
    let step = |x: __m256i| _mm256_sra_epi32(_mm256_add_epi32(_mm256_mullo_epi32(x, m), k), s);
    let lo = step(_mm256_cvtepi8_epi32(v));
    let hi = step(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v)));
    // i32 → i16 with saturation (per 128-bit lane: lo 0–3, hi 0–3, lo 4–7, hi 4–7), back in
    // order, then → i8 with saturation: the clamp to [−128, 127].
    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(lo, hi));
    _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w))
}
