//! AVX2 ungrouped k×k conv with a short patch (ShuffleNetV2's 3x3 stride-2 stem: `cin·k·k`
//! = 27, 24 outputs). The weights are transposed once per call to `[cin·k·k, cout]` (padded
//! to 8 outputs) on the stack, so each output pixel is its im2col patch (gathered as in the
//! reference) times that matrix: one broadcast per patch element, 8 output channels per
//! lane vector. Larger problems fall back to the reference.
//!
//! f32: FMA in the reference's order (bias, then the patch in `(c, ky, kx)` order): single
//! rounding only, `|Δ| ≤ 2·n·ε·(|b| + Σ|w·x|)`. int8: the patch `x − zx` as i16 pairs and
//! the weights as matching i16 pairs, `_mm256_madd_epi16` into i32: exact.
use core::arch::x86_64::*;

use super::requant::{Requant, RqCols};
use crate::kernels::reference::conv::{self as refconv, gather, PATCH};
use crate::kernels::{Geom, OutQ};

/// Largest transposed weight (`n · cout` rounded up to 8 outputs) kept on the stack.
const WT: usize = 2048;
/// Most output channels handled (the padded bias / output row on the stack).
const MAXC: usize = 128;

/// Output channels rounded up to whole 8-lane vectors, if the problem fits the stack tiles.
fn padded_cout(g: &Geom, n: usize) -> Option<usize> {
    let cp = g.cout.div_ceil(8) * 8;
    (n <= PATCH && cp <= MAXC && n.div_ceil(2) * 2 * cp <= WT).then_some(cp)
}

/// AVX2 f32 conv; same contract as `reference::conv::conv_f32`.
pub(crate) fn conv_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let n = g.cin * g.k * g.k;
    let Some(cp) = padded_cout(g, n) else {
        return refconv::conv_f32(g, x, w, bias, relu, y);
    };
    let mut wt = [0.0f32; WT];
    for (o, row) in w[..g.cout * n].chunks_exact(n).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            wt[t * cp + o] = v;
        }
    }
    let mut b = [0.0f32; MAXC];
    b[..g.cout].copy_from_slice(&bias[..g.cout]);
    let (mut patch, mut tmp) = ([0.0f32; PATCH], [0.0f32; MAXC]);
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            gather(g, x, oy, ox, 0.0, |v| v, &mut patch[..n]);
            // SAFETY: only installed after AVX2+FMA detection; `wt` holds `n·cp`, `b` and
            // `tmp` hold `cp` elements.
            unsafe { pixel_f32(&patch[..n], &wt[..n * cp], &b[..cp], relu, &mut tmp[..cp]) };
            y[(oy * g.wo + ox) * g.cout..][..g.cout].copy_from_slice(&tmp[..g.cout]);
        }
    }
}

/// `out[o] = b[o] + Σ_t patch[t]·wt[t, o]` (then ReLU), `o` in 8-lane blocks.
///
/// # Safety
/// AVX2 and FMA available; `out.len() == b.len()` a multiple of 8, `wt.len() ≥ patch.len()
/// · out.len()`.
#[target_feature(enable = "avx2,fma")]
unsafe fn pixel_f32(patch: &[f32], wt: &[f32], b: &[f32], relu: bool, out: &mut [f32]) {
    let cp = out.len();
    for c0 in (0..cp).step_by(8) {
        // SAFETY: `c0 + 8 <= cp`, and row `t` of `wt` spans `t·cp .. t·cp + cp`.
        unsafe {
            let mut acc = _mm256_loadu_ps(b.as_ptr().add(c0));
            for (t, &v) in patch.iter().enumerate() {
                let wv = _mm256_loadu_ps(wt.as_ptr().add(t * cp + c0));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(v), wv, acc);
            }
            if relu {
                acc = _mm256_max_ps(acc, _mm256_setzero_ps());
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(c0), acc);
        }
    }
}

/// AVX2 int8 conv; bit-exact twin of `reference::conv::conv_i8`.
pub(crate) fn conv_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let n = g.cin * g.k * g.k;
    let Some(cp) = padded_cout(g, n) else {
        return refconv::conv_i8(g, x, zx, w, rq, q, y);
    };
    // wt[tp, o] = (w[o, 2tp], w[o, 2tp+1]) as an i16 pair (low, high) in one i32.
    let np = n.div_ceil(2);
    let mut wt = [0i32; WT / 2];
    for (o, row) in w[..g.cout * n].chunks_exact(n).enumerate() {
        for tp in 0..np {
            let lo = row[2 * tp] as i16 as u16 as u32;
            let hi = row.get(2 * tp + 1).map_or(0, |&v| v as i16 as u16 as u32);
            wt[tp * cp + o] = (lo | hi << 16) as i32;
        }
    }
    let mut cols = RqCols::zeroed();
    let req = Requant::new(&rq[..g.cout], &mut cols);
    // The patch as i16 pairs; an odd last element pairs with 0.
    let (mut patch, mut pairs, mut acc) = ([0i16; PATCH], [0i32; PATCH / 2], [0i32; MAXC]);
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            // x − zx ∈ [−255, 255] fits i16; padding contributes 0.
            gather(
                g,
                x,
                oy,
                ox,
                0i16,
                |v| (v as i32 - zx) as i16,
                &mut patch[..n],
            );
            for (tp, p) in pairs[..np].iter_mut().enumerate() {
                let hi = if 2 * tp + 1 < n { patch[2 * tp + 1] } else { 0 };
                *p = (patch[2 * tp] as u16 as u32 | (hi as u16 as u32) << 16) as i32;
            }
            // SAFETY: only installed after AVX2 detection; `wt` holds `np·cp`, `acc` `cp`.
            unsafe { pixel_i8(&pairs[..np], &wt[..np * cp], &mut acc[..cp]) };
            let out = &mut y[(oy * g.wo + ox) * g.cout..][..g.cout];
            // SAFETY: only installed after AVX2 detection.
            unsafe { req.row(0, &acc[..g.cout], q, out) };
        }
    }
}

/// `out[o] = Σ_tp madd(pairs[tp], wt[tp, o])`, `o` in 8-lane blocks.
///
/// # Safety
/// AVX2 available; `out.len()` a multiple of 8, `wt.len() ≥ pairs.len() · out.len()`.
#[target_feature(enable = "avx2")]
unsafe fn pixel_i8(pairs: &[i32], wt: &[i32], out: &mut [i32]) {
    let cp = out.len();
    for c0 in (0..cp).step_by(8) {
        let mut acc = _mm256_setzero_si256();
        for (tp, &v) in pairs.iter().enumerate() {
            // SAFETY: `c0 + 8 <= cp`, row `tp` of `wt` spans `tp·cp .. tp·cp + cp`.
            let wv = unsafe { _mm256_loadu_si256(wt.as_ptr().add(tp * cp + c0).cast()) };
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_set1_epi32(v), wv));
        }
        // SAFETY: `c0 + 8 <= cp = out.len()`.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(c0).cast(), acc) };
    }
}
