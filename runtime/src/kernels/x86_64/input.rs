//! The int8 engine's input step for RGB images on AVX2 (the AVX-512 table's too): each CHW
//! plane's run quantised 8 values a step ([`super::Quant8`]: the bytes of
//! `QParams::quantize`, one division and a round half away from zero), then 16 pixels of the
//! three runs interleaved into 48 NHWC bytes by nine `pshufb` and six `por` instead of a
//! byte load and store per value.
use core::arch::x86_64::*;

use crate::quant::QParams;

/// Pixels quantised per plane before they are interleaved (the runs on the stack).
const RUN: usize = 256;

/// `Kernels::quantize_rgb_i8`: `x[3p + ch] = q.quantize(planes[ch][p])` for the
/// `x.len() / 3` pixels (every plane at least that long).
pub(crate) fn quantize_rgb_i8(planes: [&[f32]; 3], q: QParams, x: &mut [i8]) {
    // SAFETY: only installed after AVX2 detection.
    unsafe { avx2(planes, q, x) }
}

/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
unsafe fn avx2(planes: [&[f32]; 3], q: QParams, x: &mut [i8]) {
    let m = x.len() / 3;
    let planes = planes.map(|p| &p[..m]);
    let mut runs = [[0i8; RUN]; 3];
    let quant = super::Quant8::new(q, false);
    let mut k = 0;
    while k < m {
        let len = RUN.min(m - k);
        for (run, plane) in runs.iter_mut().zip(&planes) {
            let (v, run) = (&plane[k..k + len], &mut run[..len]);
            let mut j = 0;
            while j + 8 <= len {
                // SAFETY: AVX2 (this function's contract); 8 f32 read and 8 bytes written
                // at `j + 8 ≤ len`.
                unsafe {
                    let b = quant.bytes(_mm256_loadu_ps(v.as_ptr().add(j)));
                    _mm_storel_epi64(run.as_mut_ptr().add(j).cast(), b);
                }
                j += 8;
            }
            crate::switch::quantize_row(q, false, &v[j..], &mut run[j..]);
        }
        let out = &mut x[3 * k..3 * (k + len)];
        let mut i = 0;
        while i + 16 <= len {
            // SAFETY: 16 bytes at `i + 16 ≤ len ≤ RUN` of each run, 48 bytes at
            // `3i + 48 ≤ 3·len = out.len()`.
            unsafe {
                // `each_ref`: `runs.map` took the 768-byte runs by value, a copy per 16 pixels.
                let v = runs
                    .each_ref()
                    .map(|r| _mm_loadu_si128(r.as_ptr().add(i).cast()));
                for (j, part) in SHUF.iter().enumerate() {
                    let mut o = _mm_setzero_si128();
                    for (vc, mask) in v.iter().zip(part) {
                        let mk = _mm_loadu_si128(mask.as_ptr().cast());
                        o = _mm_or_si128(o, _mm_shuffle_epi8(*vc, mk));
                    }
                    _mm_storeu_si128(out.as_mut_ptr().add(3 * i + 16 * j).cast(), o);
                }
            }
            i += 16;
        }
        for (p, px) in out[3 * i..].chunks_exact_mut(3).enumerate() {
            for (ch, v) in px.iter_mut().enumerate() {
                *v = runs[ch][i + p];
            }
        }
        k += len;
    }
}

/// `pshufb` masks: `SHUF[j][ch]` places channel `ch`'s bytes of 16 pixels into output
/// bytes `16j .. 16j + 16` of their 48 interleaved ones (`0x80`: a zero byte, ORed away).
static SHUF: [[[i8; 16]; 3]; 3] = {
    let mut m = [[[-128i8; 16]; 3]; 3];
    let mut j = 0;
    while j < 3 {
        let mut b = 0;
        while b < 16 {
            let at = 16 * j + b;
            m[j][at % 3][b] = (at / 3) as i8;
            b += 1;
        }
        j += 1;
    }
    m
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The interleaved bytes are `QParams::quantize` of every value, element by element,
    /// for pixel counts around the runs' and vectors' edges.
    #[test]
    fn quantize_rgb_is_quantize_per_value() {
        if !super::super::detected() {
            println!("SKIPPED quantize_rgb_is_quantize_per_value: no AVX2 on this CPU");
            return;
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        for &m in &[0usize, 1, 15, 16, 17, 47, 255, 256, 257, 600] {
            let planes: [std::vec::Vec<f32>; 3] = core::array::from_fn(|_| r.vec(m, 3.0));
            let q = QParams {
                scale: 0.01 + r.uniform(0.02),
                zero_point: r.below(256) as i32 - 128,
            };
            let mut x = std::vec![0i8; 3 * m];
            quantize_rgb_i8(core::array::from_fn(|c| &planes[c][..]), q, &mut x);
            for p in 0..m {
                for c in 0..3 {
                    let want = q.quantize(planes[c][p]);
                    assert_eq!(x[3 * p + c], want, "m {m} p {p} c {c}");
                }
            }
        }
    }
}
