//! int8 pointwise conv on AVX-512 VNNI (`vpdpbusd`, 256-bit lanes via AVX-512VL): four
//! `u8·i8` products summed into each i32 lane per instruction, without intermediate
//! saturation, so the sums stay exact. `vpdpbusd` wants one unsigned operand: the input is
//! offset to `x + 128 ∈ [0, 255]` (an `xor 0x80`), and the zero point comes back once per
//! output as `Σ w·(x − zx) = Σ w·(x + 128) − (128 + zx)·Σ w`, with `Σ w` per output channel
//! computed once per call. Tiles of 4 pixels × 4 output channels, 32 bytes per step;
//! 16 of the 32 vector registers accumulate. Bit-exact to the reference.
use core::arch::x86_64::*;

use super::requant::{Requant, RqCols};
use crate::kernels::{reference, Geom, OutQ};

/// Output pixels per tile.
const P: usize = 4;
/// Output channels per tile.
const O: usize = 4;
/// Output channels per requant block.
const OB: usize = 64;
/// Widest conv handled (the `Σw` correction lives on the stack; ShuffleNetV2 tops at 1024).
const MAXQ: usize = 1024;

/// AVX-512 VNNI, VL and BW (masked byte loads) are usable.
pub(crate) fn detected() -> bool {
    #[cfg(feature = "std")]
    {
        super::detected()
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(feature = "std"))]
    {
        super::detected()
            && cfg!(all(
                target_feature = "avx512vnni",
                target_feature = "avx512vl"
            ))
    }
}

/// Start of output pixel `p`'s input channels.
#[inline]
fn src(g: &Geom, p: usize) -> usize {
    let (oy, ox) = (p / g.wo, p % g.wo);
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// VNNI int8 pointwise conv; bit-exact twin of `reference::conv1x1::conv1x1_i8`. Convs
/// wider than [`MAXQ`] outputs take the reference.
pub(crate) fn conv1x1_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    if cout > MAXQ {
        return reference::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    let (w, y) = (&w[..cout * n], &mut y[..npix * cout]);
    let mut cols = RqCols::new();
    let req = Requant::new(&rq[..cout], &mut cols);
    // (128 + zx)·Σw per output channel: what the +128 offset of the input added.
    let mut corr = [0i32; MAXQ];
    for (c, row) in corr.iter_mut().zip(w.chunks_exact(n.max(1))) {
        *c = (128 + zx).wrapping_mul(row.iter().map(|&v| v as i32).sum::<i32>());
    }
    let mut acc = [[0i32; OB]; P];
    let mut p = 0;
    while p < npix {
        let np = P.min(npix - p);
        let xs = [0, 1, 2, 3].map(|i| &x[src(g, p + i.min(np - 1))..][..n]);
        let mut o0 = 0;
        while o0 < cout {
            let nb = OB.min(cout - o0);
            let mut o = 0;
            while o < nb {
                let no = O.min(nb - o);
                let ws = [0, 1, 2, 3].map(|j| &w[(o0 + o + j.min(no - 1)) * n..][..n]);
                // SAFETY: only installed after AVX2 + AVX-512 VNNI/VL/BW detection
                // (`detected`); every row holds exactly `n` bytes.
                let d = unsafe { tile(xs, ws, n) };
                for (i, dp) in d.iter().enumerate().take(np) {
                    for (j, &v) in dp.iter().enumerate().take(no) {
                        acc[i][o + j] = v.wrapping_sub(corr[o0 + o + j]);
                    }
                }
                o += no;
            }
            for (i, a) in acc.iter().enumerate().take(np) {
                let out = &mut y[(p + i) * cout + o0..][..nb];
                // SAFETY: AVX2 detected (as above).
                unsafe { req.row(o0, &a[..nb], q, out) };
            }
            o0 += nb;
        }
        p += np;
    }
}

/// `out[p][o] = Σ_i ws[o][i]·(xs[p][i] + 128)`.
///
/// # Safety
/// AVX2, AVX-512 VNNI, VL and BW available; every row at least `n` bytes.
#[target_feature(enable = "avx2,avx512vnni,avx512vl,avx512bw")]
unsafe fn tile(xs: [&[i8]; P], ws: [&[i8]; O], n: usize) -> [[i32; O]; P] {
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [[_mm256_setzero_si256(); O]; P];
    let (mut xv, mut wv) = ([_mm256_setzero_si256(); P], [_mm256_setzero_si256(); O]);
    let mut i = 0;
    while i < n {
        if i + 32 <= n {
            for p in 0..P {
                // SAFETY: `i + 32 <= n` and every row holds at least `n` bytes.
                xv[p] = unsafe { _mm256_loadu_si256(xs[p].as_ptr().add(i).cast()) };
            }
            for o in 0..O {
                // SAFETY: as above.
                wv[o] = unsafe { _mm256_loadu_si256(ws[o].as_ptr().add(i).cast()) };
            }
        } else {
            // Tail: masked loads (masked-off bytes are not read and load as 0); a zero weight
            // adds 0 whatever the (offset) input.
            let m: __mmask32 = (1u32 << (n - i)) - 1;
            for p in 0..P {
                // SAFETY: only the `n − i` bytes left in each row are enabled.
                xv[p] = unsafe { _mm256_maskz_loadu_epi8(m, xs[p].as_ptr().add(i).cast()) };
            }
            for o in 0..O {
                // SAFETY: as above.
                wv[o] = unsafe { _mm256_maskz_loadu_epi8(m, ws[o].as_ptr().add(i).cast()) };
            }
        }
        for p in 0..P {
            let xu = _mm256_xor_si256(xv[p], flip); // x + 128 as u8
            for o in 0..O {
                acc[p][o] = _mm256_dpbusd_epi32(acc[p][o], xu, wv[o]);
            }
        }
        i += 32;
    }
    let mut out = [[0i32; O]; P];
    for p in 0..P {
        let s = _mm256_hadd_epi32(
            _mm256_hadd_epi32(acc[p][0], acc[p][1]),
            _mm256_hadd_epi32(acc[p][2], acc[p][3]),
        );
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        // SAFETY: `out[p]` holds 4 i32.
        unsafe { _mm_storeu_si128(out[p].as_mut_ptr().cast(), s) };
    }
    out
}
