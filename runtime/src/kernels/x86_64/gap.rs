//! AVX2 global average pool of int8 codes: the pool head's per-channel sums over the pixels
//! (the same exact i32 sums as the reference, in 16-bit lanes: `|Σq| ≤ 128·n` fits for
//! `n ≤ 255` pixels), then the reference's f32 steps lane by lane (`s as f32`, one division
//! or one multiplication, a subtraction and a multiplication, each IEEE-rounded as there),
//! so the same bits.
use core::arch::x86_64::*;

use crate::kernels::reference::gap as refgap;
use crate::quant::QParams;

/// Most pixels whose sums fit 16-bit lanes.
const MAX_N: usize = 255;

/// Same contract and bits as `reference::gap::gap_i8`.
pub(crate) fn gap_i8(n: usize, c: usize, x: &[i8], qp: QParams, y: &mut [f32]) {
    if !(2..=MAX_N).contains(&n) || c < 16 || x.len() < n * c || y.len() < c {
        return refgap::gap_i8(n, c, x, qp, y);
    }
    // SAFETY: only installed after AVX2 detection; the lengths are checked above.
    unsafe { sums_and_means(n, c, x, qp, y) }
}

/// # Safety
/// AVX2 available; `2 ≤ n ≤ MAX_N`, `c ≥ 16`, `x` holds `n·c` codes, `y` `c` floats.
#[target_feature(enable = "avx2")]
unsafe fn sums_and_means(n: usize, c: usize, x: &[i8], qp: QParams, y: &mut [f32]) {
    let nf = n as f32;
    let (inv, pow2) = (1.0 / nf, n.is_power_of_two());
    let (scale, zp) = (
        _mm256_set1_ps(qp.scale),
        _mm256_set1_ps(qp.zero_point as f32),
    );
    let mut c0 = 0;
    while c0 < c {
        // 16 channels a step; the last step ends at `c` (overlapping the one before: the
        // same means again).
        let at = c0.min(c - 16);
        let mut acc = _mm256_setzero_si256();
        for p in 0..n {
            // SAFETY: `p·c + at + 16 ≤ n·c ≤ x.len()`.
            let v = unsafe { _mm_loadu_si128(x.as_ptr().add(p * c + at).cast()) };
            acc = _mm256_add_epi16(acc, _mm256_cvtepi8_epi16(v));
        }
        for (h, s) in [
            _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc)),
            _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(acc)),
        ]
        .into_iter()
        .enumerate()
        {
            let s = _mm256_cvtepi32_ps(s);
            let m = if pow2 {
                _mm256_mul_ps(s, _mm256_set1_ps(inv))
            } else {
                _mm256_div_ps(s, _mm256_set1_ps(nf))
            };
            let v = _mm256_mul_ps(scale, _mm256_sub_ps(m, zp));
            // SAFETY: `at + 8h + 8 ≤ at + 16 ≤ c ≤ y.len()`.
            unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(at + 8 * h), v) };
        }
        c0 = at + 16;
    }
}
