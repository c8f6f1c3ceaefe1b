//! AVX2 twin of `quant::requant` for 8 output channels at once — TFLite's
//! `MultiplyByQuantizedMultiplier` (shift left, `SaturatingRoundingDoublingHighMul`,
//! `RoundingDivideByPOT`), the zero point added with saturation, the clamp — bit-exact for
//! every input (the unit test sweeps edges and random values). The high multiply runs as two
//! `_mm256_mul_epi32` (even and odd lanes in i64).
use core::arch::x86_64::*;

use crate::kernels::OutQ;

/// The per-channel requant parameters as lanes (`[bias, multiplier, shift]` transposed).
#[derive(Clone, Copy)]
pub(super) struct Rq8 {
    pub bias: __m256i,
    pub mult: __m256i,
    pub shift: __m256i,
}

/// Most output channels [`RqSoa`] holds (ShuffleNetV2's widest conv has 1024).
pub(super) const MAXQ: usize = 1024;

/// A conv's `[bias, multiplier, shift]` triples transposed once per call (zero-padded to a
/// whole vector), so 8 channels' parameters are three vector loads.
pub(super) struct RqSoa {
    t: [[i32; MAXQ]; 3],
    n: usize,
}

impl RqSoa {
    /// `None` when `rq` has more than [`MAXQ`] channels (callers then requant one by one).
    pub(super) fn new(rq: &[[i32; 3]]) -> Option<Self> {
        if rq.len() > MAXQ {
            return None;
        }
        let mut t = [[0i32; MAXQ]; 3];
        for (j, r) in rq.iter().enumerate() {
            t[0][j] = r[0];
            t[1][j] = r[1];
            t[2][j] = r[2];
        }
        Some(RqSoa { t, n: rq.len() })
    }

    /// Channels `c0 .. c0 + 8` (zero past the end).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn at(&self, c0: usize) -> Rq8 {
        let c0 = c0.min(MAXQ - 8);
        let [b, m, s] = [0, 1, 2].map(|k| &self.t[k][c0..c0 + 8]);
        // SAFETY: each slice holds 8 i32.
        unsafe {
            Rq8 {
                bias: _mm256_loadu_si256(b.as_ptr().cast()),
                mult: _mm256_loadu_si256(m.as_ptr().cast()),
                shift: _mm256_loadu_si256(s.as_ptr().cast()),
            }
        }
    }

    /// `out[i] = requant(acc[i], rq[c0 + i], q)` for `i < out.len()` (`acc` as long), 8
    /// channels per step; `c0 + out.len() ≤ n` and `c0` a multiple of 8.
    #[target_feature(enable = "avx2")]
    pub(super) fn row(&self, c0: usize, acc: &[i32], q: OutQ, out: &mut [i8]) {
        let n = out.len().min(acc.len()).min(self.n - c0.min(self.n));
        let mut i = 0;
        while i < n {
            let mut a = [0i32; 8];
            let m = (n - i).min(8);
            a[..m].copy_from_slice(&acc[i..i + m]);
            let mut b = [0i8; 16];
            // SAFETY: `a` holds 8 i32, `b` 16 bytes.
            unsafe {
                let v = requant8(_mm256_loadu_si256(a.as_ptr().cast()), &self.at(c0 + i), q);
                _mm_storeu_si128(b.as_mut_ptr().cast(), v);
            }
            out[i..i + m].copy_from_slice(&b[..m]);
            i += 8;
        }
    }
}

/// `quant::requant(acc[j], rq[j], q)` for the 8 lanes, as i8 in the low 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requant8(acc: __m256i, rq: &Rq8, q: OutQ) -> __m128i {
    let zero = _mm256_setzero_si256();
    let x = _mm256_add_epi32(acc, rq.bias);
    // Left shift (wrapping, as `x.wrapping_mul(1 << left)`), right exponent clamped to 31.
    let left = _mm256_and_si256(_mm256_max_epi32(rq.shift, zero), _mm256_set1_epi32(31));
    let right = _mm256_min_epi32(
        _mm256_max_epi32(_mm256_sub_epi32(zero, rq.shift), zero),
        _mm256_set1_epi32(31),
    );
    let x = _mm256_sllv_epi32(x, left);
    let v = srdhm(x, rq.mult);
    // RoundingDivideByPOT: (v >> e) + (remainder > (mask >> 1) + (v < 0)).
    let one = _mm256_set1_epi32(1);
    let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
    let neg = _mm256_cmpgt_epi32(zero, v);
    let rem = _mm256_and_si256(v, mask);
    let thr = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1), neg);
    let v = _mm256_sub_epi32(_mm256_srav_epi32(v, right), _mm256_cmpgt_epi32(rem, thr));
    // v.saturating_add(zp): on overflow (operands of one sign, sum of the other) saturate.
    let zp = _mm256_set1_epi32(q.zero_point);
    let s = _mm256_add_epi32(v, zp);
    let ovf = _mm256_and_si256(_mm256_xor_si256(s, v), _mm256_xor_si256(s, zp));
    let sat = _mm256_xor_si256(_mm256_srai_epi32(v, 31), _mm256_set1_epi32(i32::MAX));
    let s = _mm256_blendv_epi8(s, sat, _mm256_srai_epi32(ovf, 31));
    let s = _mm256_min_epi32(
        _mm256_max_epi32(s, _mm256_set1_epi32(q.lo.max(-128))),
        _mm256_set1_epi32(127),
    );
    let w = _mm_packs_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    _mm_packs_epi16(w, w)
}

/// gemmlowp `SaturatingRoundingDoublingHighMul` per lane: `(a·b + nudge) / 2^31` truncated,
/// nudge `2^30` or `1 − 2^30` by the sign of `a·b`; `MIN·MIN` saturates to `MAX`.
#[inline]
#[target_feature(enable = "avx2")]
fn srdhm(a: __m256i, b: __m256i) -> __m256i {
    let even = high_mul_i64(_mm256_mul_epi32(a, b));
    let odd = high_mul_i64(_mm256_mul_epi32(
        _mm256_srli_epi64(a, 32),
        _mm256_srli_epi64(b, 32),
    ));
    // Results sit in the low dword of each i64 lane: interleave even and odd back.
    let r = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0b1010_1010);
    let min = _mm256_set1_epi32(i32::MIN);
    let both_min = _mm256_and_si256(_mm256_cmpeq_epi32(a, min), _mm256_cmpeq_epi32(b, min));
    _mm256_blendv_epi8(r, _mm256_set1_epi32(i32::MAX), both_min)
}

/// `(ab + nudge) / 2^31` (truncating) for 4 i64 lanes; the low 32 bits are the result.
#[inline]
#[target_feature(enable = "avx2")]
fn high_mul_i64(ab: __m256i) -> __m256i {
    let neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), ab);
    let pos_nudge = _mm256_set1_epi64x(1 << 30);
    let neg_nudge = _mm256_set1_epi64x(1 - (1 << 30));
    let t = _mm256_add_epi64(ab, _mm256_blendv_epi8(pos_nudge, neg_nudge, neg));
    // Division toward zero: add 2^31 − 1 to negatives before the shift. Bits 31..62 of the
    // i64 are the low 32 bits of the arithmetic shift, so a logical shift serves.
    let t = _mm256_add_epi64(
        t,
        _mm256_and_si256(neg_t(t), _mm256_set1_epi64x((1 << 31) - 1)),
    );
    _mm256_srli_epi64(t, 31)
}

/// All-ones in the i64 lanes of `t` that are negative.
#[inline]
#[target_feature(enable = "avx2")]
fn neg_t(t: __m256i) -> __m256i {
    _mm256_cmpgt_epi64(_mm256_setzero_si256(), t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::requant;

    #[test]
    fn requant8_is_bit_exact() {
        if !super::super::detected() {
            return;
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        println!("seed = {seed}");
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let edges = [
            0,
            1,
            -1,
            i32::MIN,
            i32::MAX,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
            i32::MAX - 1,
        ];
        for it in 0..200_000 {
            let pick = |r: u64, lo: i64, hi: i64| (lo + (r % (hi - lo + 1) as u64) as i64) as i32;
            let mut acc = [0i32; 8];
            let mut rq = [[0i32; 3]; 8];
            for j in 0..8 {
                let r = next();
                acc[j] = if it % 4 == 0 {
                    edges[(r % edges.len() as u64) as usize]
                } else if it % 4 == 1 {
                    r as i32
                } else {
                    pick(r, -200_000, 200_000)
                };
                let r = next();
                rq[j] = [
                    if it % 3 == 0 {
                        r as i32
                    } else {
                        pick(r, -5000, 5000)
                    },
                    if it % 7 == 0 {
                        edges[(r >> 40) as usize % edges.len()]
                    } else {
                        pick(r >> 20, 1 << 30, i32::MAX as i64)
                    },
                    pick(r >> 45, -33, 33),
                ];
            }
            let r = next();
            let zp = if it % 11 == 0 {
                edges[(r % 9) as usize]
            } else {
                pick(r, -128, 127)
            };
            let q = OutQ {
                zero_point: zp,
                lo: if r & 1 == 0 {
                    -128
                } else {
                    pick(r >> 8, -128, 127)
                },
            };
            let mut got = [0i8; 8];
            let len = 1 + (r >> 20) as usize % 8;
            // SAFETY: AVX2 detected above.
            unsafe {
                RqSoa::new(&rq[..len])
                    .unwrap()
                    .row(0, &acc[..len], q, &mut got[..len])
            };
            for j in 0..len {
                assert_eq!(
                    got[j],
                    requant(acc[j], rq[j], q),
                    "{:?} {:?} {q:?}",
                    acc[j],
                    rq[j]
                );
            }
        }
    }
}
