//! f32 pointwise conv on AVX-512F: the AVX2 outer product ([`super::conv1x1`]) with a
//! 16-lane register per [`FO`]-channel panel row, so a panel's `[n][16]` layout (per call,
//! or packed at the switch by `pack_conv1x1_f32`: the same layout) is read one vector per
//! input, and the 32 registers hold a tile of 6 pixels × 4 panels (64 channels). Every
//! lane sums as the AVX2 tile does (from 0, FMA over `k` ascending, then `+ bias` and
//! ReLU), so the results are the AVX2 table's bits; inputs wider than `FMAXC` take its dot
//! tiles, as there.
use core::arch::x86_64::*;

use super::conv1x1::{conv1x1_f32_dots, groups_f32, src, PanelF32, FMAXC, FO};
use crate::kernels::Geom;

/// Output pixels per tile.
const P: usize = 6;
/// Panels (16-lane registers) per tile.
const B: usize = 4;

/// AVX-512F twin of `conv1x1::conv1x1_f32` (its bits).
pub(crate) fn conv1x1_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    outer(g, x, w, false, bias, relu, y)
}

/// AVX-512F twin of `conv1x1::conv1x1_f32_packed` (the same packed layout and bits).
pub(crate) fn conv1x1_f32_packed(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    outer(g, x, w, true, bias, relu, y)
}

fn outer(g: &Geom, x: &[f32], w: &[f32], prepacked: bool, bias: &[f32], relu: bool, y: &mut [f32]) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    if n > FMAXC {
        return conv1x1_f32_dots(g, x, w, bias, relu, y);
    }
    let (w, bias, y) = (&w[..cout * n], &bias[..cout], &mut y[..npix * cout]);
    groups_f32(n, w, prepacked, bias, &mut |panels| {
        let mut p = 0;
        while p < npix {
            let np = P.min(npix - p);
            let row = |i: usize| &x[src(g, p + i)..][..n];
            let out = &mut y[p * cout..];
            for pans in panels.chunks(B) {
                macro_rules! tile {
                    ($p:literal, $b:literal) => {
                        // SAFETY: only installed after AVX-512F detection; every panel
                        // holds `n·FO`, every row `n`; `out` holds `$p` pixels of `cout`
                        // channels past each panel's `o0 + no ≤ cout`.
                        unsafe {
                            tile::<$p, $b>(
                                pans.try_into().unwrap(),
                                core::array::from_fn(row),
                                relu,
                                &mut *out,
                                cout,
                            )
                        }
                    };
                    ($p:literal) => {
                        match pans.len() {
                            1 => tile!($p, 1),
                            2 => tile!($p, 2),
                            3 => tile!($p, 3),
                            _ => tile!($p, 4),
                        }
                    };
                }
                match np {
                    1 => tile!(1),
                    2 => tile!(2),
                    3 => tile!(3),
                    4 => tile!(4),
                    5 => tile!(5),
                    _ => tile!(6),
                }
            }
            p += np;
        }
    });
}

/// `Q` pixels × `R` panels: `acc[p][b] = Σ_k pans[b].w[k][..] · xs[p][k]` (FMA, `k`
/// ascending), then `+ bias`, ReLU, stored to each panel's channels of `out`'s pixel rows
/// (`cout` apart; a short panel's lanes past `no` masked off).
///
/// # Safety
/// AVX-512F available; every panel's `w` holds `n·FO` for `n = xs[0].len()`, every row of
/// `xs` `n`; `out` holds `(Q − 1)·cout + o0 + no` for every panel.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const Q: usize, const R: usize>(
    pans: &[PanelF32<'_>; R],
    xs: [&[f32]; Q],
    relu: bool,
    out: &mut [f32],
    cout: usize,
) {
    let n = xs[0].len();
    debug_assert!(pans.iter().all(|p| p.w.len() >= n * FO && p.no <= FO));
    debug_assert!(pans
        .iter()
        .all(|p| out.len() >= (Q - 1) * cout + p.o0 + p.no));
    let mut acc = [[_mm512_setzero_ps(); R]; Q];
    let xp = xs.map(|r| r.as_ptr());
    let wp = pans.map(|p| p.w.as_ptr());
    for k in 0..n {
        // SAFETY: `k < n`: row `k` of every panel (`FO` f32) and element `k` of every input.
        unsafe {
            let wv: [__m512; R] = core::array::from_fn(|b| _mm512_loadu_ps(wp[b].add(k * FO)));
            for p in 0..Q {
                let xb = _mm512_set1_ps(*xp[p].add(k));
                for b in 0..R {
                    acc[p][b] = _mm512_fmadd_ps(wv[b], xb, acc[p][b]);
                }
            }
        }
    }
    for (b, pan) in pans.iter().enumerate() {
        // SAFETY: `bias` holds `FO` f32.
        let bv = unsafe { _mm512_loadu_ps(pan.bias.as_ptr()) };
        let mask = super::first16(pan.no);
        for (p, ap) in acc.iter().enumerate() {
            let mut v = _mm512_add_ps(ap[b], bv);
            if relu {
                // `max_ps` returns its second operand for a NaN lane: 0, as `f32::max`.
                v = _mm512_max_ps(v, _mm512_setzero_ps());
            }
            let o = &mut out[p * cout + pan.o0..][..pan.no];
            // SAFETY: the lanes `mask` keeps are `o`'s `no` f32.
            unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, v) };
        }
    }
}
