//! AVX2 ungrouped k×k conv with a short patch (ShuffleNetV2's 3x3 stride-2 stem: `cin·k·k`
//! = 27, 24 outputs). The weights are transposed once per call to `[cin·k·k, cout]` (padded
//! to 8 outputs) on the stack, tap-major (`(ky, kx, c)`, not the weights' `(c, ky, kx)`).
//! Per output row the `k` input rows it reads go once into row buffers (0 in the padding;
//! int8 widened to `x − zx`), where each pixel's kernel row is one run: the tiles broadcast
//! the taps from there (no per-pixel im2col patch), 8 output channels per lane vector
//! (16 in the AVX-512 table's f32 stem), several pixels a tile, so each weight vector loaded
//! feeds several FMAs / multiply-adds, and finish each pixel in registers. The AVX-512 table
//! takes this int8 stem as it is (it beat a `vpdpbusd` stem on per-pixel patches by ~20 %).
//! Problems past the stack buffers take the reference.
//!
//! f32: bias, then FMAs over the tap-major taps: only the order and FMA's single rounding
//! differ from the reference, `|Δ| ≤ 2·n·ε·(|b| + Σ|w·x|)`. int8: tap pairs `x − zx` as i16
//! and the weights as matching i16 pairs, `_mm256_madd_epi16` into i32: exact.
use core::arch::x86_64::*;

use core::mem::MaybeUninit;

use super::requant::{requant8_plain, requant8_sum, Requant, RqCols};
use crate::kernels::reference::conv::{self as refconv, PATCH};
use crate::kernels::{Geom, OutQ};
use core::ops::Range;

/// Largest transposed weight (`n · cout` rounded up to 8 outputs) kept on the stack.
const WT: usize = 2048;
/// Most output channels handled (the padded bias / output row on the stack).
const MAXC: usize = 128;

/// AVX2 f32 conv; same contract as `reference::conv::conv_f32`.
///
/// The input rows as the int8 conv's ([`conv_i8`]: copied once per output row into row
/// buffers, 0 in the padding, so a pixel's kernel row is a run there); each pixel's sum
/// starts from the bias and adds the taps by FMA in tap-major order.
pub(crate) fn conv_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let Some(l) = StemLayout::new(g).filter(|l| l.n * l.cp <= WT) else {
        return refconv::conv_f32(g, x, w, bias, relu, y);
    };
    let cout = g.cout;
    walk_f32(
        g,
        &l,
        l.cp,
        PT,
        (x, w, bias),
        y,
        |rows, wt, b, ox, npx, c0, out| {
            // SAFETY: only installed after AVX2+FMA detection; `wt` holds `n` rows of `cp`,
            // the blocks `c0 .. c0 + 8·B ≤ cp` inside them and `b`; `walk`'s tile bounds.
            unsafe {
                if c0 + 24 <= l.cp {
                    tile_f32::<3>(rows, &l, ox, wt, b, relu, c0, npx, cout, out);
                    24
                } else {
                    tile_f32::<1>(rows, &l, ox, wt, b, relu, c0, npx, cout, out);
                    8
                }
            }
        },
    );
}

/// The f32 stems' common part: the weights transposed once to `wt[e, o] = w[o, e]` (`e`
/// tap-major, as the rows' runs; rows of `cp ≥ l.cp` channels, 0 past `cout`), the biases
/// padded to `cp`, then [`walk`] with [`fill_row_f32`] and `tile(rows, wt, b, ox, npx, c0,
/// out)` for the tiles (`wt`: `n` rows of `cp`; `b`: `cp`).
fn walk_f32(
    g: &Geom,
    l: &StemLayout,
    cp: usize,
    pt: usize,
    (x, w, bias): (&[f32], &[f32], &[f32]),
    y: &mut [f32],
    mut tile: impl FnMut(&[[f32; RB]; KMAX], &[f32], &[f32], usize, usize, usize, &mut [f32]) -> usize,
) {
    assert!(cp >= l.cp && cp <= MAXC && l.n * cp <= WT);
    let cout = g.cout;
    if cp == 0 || g.ho == 0 || g.wo == 0 {
        return;
    }
    let mut wt = [0.0f32; WT];
    for (o, row) in w[..cout * l.n].chunks_exact(l.n).enumerate() {
        for e in 0..l.n {
            wt[e * cp + o] = row[oihw(g, e)];
        }
    }
    let mut b = [0.0f32; MAXC];
    b[..cout].copy_from_slice(&bias[..cout]);
    let (wt, b) = (&wt[..l.n * cp], &b[..cp]);
    let mut rows = [[0.0f32; RB]; KMAX];
    walk(
        g,
        l,
        pt,
        (0..g.ho * g.wo, y),
        &mut rows,
        |rows, ky, iy, c0, ncols| fill_row_f32(g, x, iy, c0, ncols, &mut rows[ky][..ncols * g.cin]),
        |rows, ox, npx, c0, out| tile(rows, wt, b, ox, npx, c0, out),
    );
}

/// The stems' walk over output pixels `px` (row-major; `y` holding those pixels): per row and strip of at most `l.strip` columns,
/// `fill(rows, ky, iy, c0, ncols)` for each kernel row `ky` (input row `iy`, `None` in the
/// padding; input columns `c0 − pad ..`, `ncols` of them), then per tile of at most `pt`
/// pixels from strip column `ox`, `tile(rows, ox, npx, c0, out)` from `c0 = 0` on, returning
/// how many output channels it did (`out`: the tile's `npx` output pixels).
fn walk<T, R>(
    g: &Geom,
    l: &StemLayout,
    pt: usize,
    (px, y): (Range<usize>, &mut [T]),
    rows: &mut R,
    mut fill: impl FnMut(&mut R, usize, Option<usize>, usize, usize),
    mut tile: impl FnMut(&R, usize, usize, usize, &mut [T]) -> usize,
) {
    let (cout, wo, p0) = (g.cout, g.wo, px.start);
    for oy in p0 / wo.max(1)..px.end.div_ceil(wo.max(1)) {
        // This row's columns `ox0 .. end` among the pixels.
        let mut ox0 = p0.max(oy * wo) - oy * wo;
        let end = px.end.min((oy + 1) * wo) - oy * wo;
        while ox0 < end {
            let nox = l.strip.min(end - ox0);
            let ncols = (nox - 1) * g.stride + g.k;
            for ky in 0..g.k {
                fill(
                    rows,
                    ky,
                    Geom::tap(oy, ky, g.stride, g.pad, g.h),
                    ox0 * g.stride,
                    ncols,
                );
            }
            let out = &mut y[(oy * wo + ox0 - p0) * cout..][..nox * cout];
            let mut ox = 0;
            while ox < nox {
                let npx = pt.min(nox - ox);
                let out = &mut out[ox * cout..][..npx * cout];
                let mut c0 = 0;
                while c0 < l.cp {
                    c0 += tile(rows, ox, npx, c0, out);
                }
                ox += npx;
            }
            ox0 += nox;
        }
    }
}

/// Output pixels per f32 stem tile.
const PT: usize = 4;
/// Output pixels per int8 stem tile: 3 × 3 blocks of accumulators, the 3 weight vectors
/// and the broadcast pair fill 13 of the 16 registers (at 4 pixels LLVM spilled one).
const PTI: usize = 3;

/// The AVX-512 table's f32 stem: [`conv_f32`]'s walk over row buffers with 16-lane
/// accumulators, [`PT5`] pixels a tile (32 registers hold 8 pixels × 2 blocks without
/// spilling), every lane summed as there (from the bias, FMA over the tap-major taps in
/// order), so the AVX2 twin's bits.
pub(crate) fn conv_f32_avx512(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let cp = g.cout.div_ceil(16) * 16;
    let Some(l) = StemLayout::new(g).filter(|l| l.n * cp <= WT && cp <= MAXC) else {
        return conv_f32(g, x, w, bias, relu, y);
    };
    walk_f32(
        g,
        &l,
        cp,
        PT5,
        (x, w, bias),
        y,
        |rows, wt, b, ox, npx, _, out| {
            // SAFETY: only installed after AVX-512 detection; `wt` holds `n` rows of `cp`, `b`
            // `cp` (a multiple of 16, at least `cout`); `walk`'s tile bounds.
            unsafe { tile_f32_512(rows, &l, ox, npx, wt, b, relu, out, g.cout) };
            // All the channels (`cp ≥ l.cp` ends the walk's channel loop).
            cp
        },
    );
}

/// Output pixels per AVX-512 f32 stem tile.
const PT5: usize = 8;

/// `out[t][o] = b[o] + Σ_e x_t[e]·wt[e, o]` (then ReLU) for the first `npx` of [`PT5`]
/// pixels from strip column `ox` (`x_t`: the pixel's runs in the row buffers), `o` in
/// 16-lane blocks two at a time where there are, stored straight into the output rows
/// (`cout` apart, the lanes past `cout` masked off).
///
/// # Safety
/// AVX-512F available; `cp = b.len()` a multiple of 16 and at least `cout`,
/// `wt.len() ≥ l.n · cp`, `0 < npx ≤ PT5`, `ox + npx ≤ l.strip`; `out` holds `npx·cout`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_f32_512(
    rows: &[[f32; RB]; KMAX],
    l: &StemLayout,
    ox: usize,
    npx: usize,
    wt: &[f32],
    b: &[f32],
    relu: bool,
    out: &mut [f32],
    cout: usize,
) {
    let cp = b.len();
    debug_assert!(cp.is_multiple_of(16) && cp >= cout && wt.len() >= l.n * cp);
    debug_assert!(0 < npx && npx <= PT5 && ox + npx <= l.strip && out.len() >= npx * cout);
    // Pixel `t`'s first element in a row buffer (a spare pixel repeats the last one).
    let mut at = [0; PT5];
    for (t, a) in at.iter_mut().enumerate() {
        *a = (ox + t.min(npx - 1)) * l.cstep;
    }
    let mut c0 = 0;
    while c0 < cp {
        let nb = if c0 + 32 <= cp { 2 } else { 1 };
        // SAFETY: the blocks `c0 .. c0 + 16·nb ≤ cp` are inside `b` and every `wt` row;
        // the pixels' runs as this function's contract.
        let acc = unsafe {
            if nb == 2 {
                blocks_f32_512::<2>(rows, l, &at, wt, b, c0)
            } else {
                let a = blocks_f32_512::<1>(rows, l, &at, wt, b, c0);
                a.map(|r| [r[0], _mm512_setzero_ps()])
            }
        };
        for (p, ap) in acc.iter().enumerate().take(npx) {
            for (k, &a) in ap.iter().enumerate().take(nb) {
                let o = c0 + 16 * k;
                if o >= cout {
                    break;
                }
                let a = if relu {
                    _mm512_max_ps(a, _mm512_setzero_ps())
                } else {
                    a
                };
                let keep = super::first16(cout - o);
                // SAFETY: the lanes `keep` selects are channels `o .. min(o + 16, cout)` of
                // pixel `p < npx` (`out` holds `npx·cout`).
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(p * cout + o), keep, a) };
            }
        }
        c0 += 16 * nb;
    }
}

/// `B` 16-lane blocks from `c0` of [`tile_f32_512`], for all [`PT5`] pixels (`at`: their
/// runs' starts in the row buffers).
///
/// # Safety
/// As [`tile_f32_512`], and `c0 + 16·B ≤ cp = b.len()`.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn blocks_f32_512<const B: usize>(
    rows: &[[f32; RB]; KMAX],
    l: &StemLayout,
    at: &[usize; PT5],
    wt: &[f32],
    b: &[f32],
    c0: usize,
) -> [[__m512; B]; PT5] {
    let cp = b.len();
    let mut bv = [_mm512_setzero_ps(); B];
    for (k, v) in bv.iter_mut().enumerate() {
        // SAFETY: `c0 + 16k + 16 ≤ cp = b.len()`.
        *v = unsafe { _mm512_loadu_ps(b.as_ptr().add(c0 + 16 * k)) };
    }
    let mut acc = [bv; PT5];
    let mut e = 0;
    for buf in rows.iter().take(l.k) {
        for i in 0..l.row {
            let mut wv = [_mm512_setzero_ps(); B];
            for (k, v) in wv.iter_mut().enumerate() {
                // SAFETY: row `e < n` of `wt` spans `e·cp .. e·cp + cp`, `c0 + 16k + 16 ≤ cp`.
                *v = unsafe { _mm512_loadu_ps(wt.as_ptr().add(e * cp + c0 + 16 * k)) };
            }
            for (ap, &p) in acc.iter_mut().zip(at) {
                // SAFETY: `p + i < (ox + npx − 1)·stride·cin + row ≤ ncols·cin ≤ RB`.
                let xv = _mm512_set1_ps(unsafe { *buf.get_unchecked(p + i) });
                for (a, &w) in ap.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, w, *a);
                }
            }
            e += 1;
        }
    }
    acc
}

/// `B` 8-channel blocks from `c0` for the first `npx` of [`PT`] pixels from strip column
/// `ox`: `b[o]`, then `+ x·wt[e, o]` by FMA for the tap-major taps `e` of the pixel's rows
/// (each weight vector loaded feeds `PT` FMAs), ReLU, stored to channels `c0 + 8b ..` of
/// `out`'s pixel rows (`cout` apart; a block past `cout` in part).
///
/// # Safety
/// AVX2 and FMA available; `wt` holds `n` rows of `l.cp`, `c0 + 8·B ≤ l.cp ≤ b.len()`,
/// `0 < npx ≤ PT`, `ox + npx ≤ l.strip`, `out` holds `npx·cout`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32<const B: usize>(
    rows: &[[f32; RB]; KMAX],
    l: &StemLayout,
    ox: usize,
    wt: &[f32],
    b: &[f32],
    relu: bool,
    c0: usize,
    npx: usize,
    cout: usize,
    out: &mut [f32],
) {
    let cp = l.cp;
    debug_assert!(c0 + 8 * B <= cp && cp <= b.len() && wt.len() >= l.n * cp);
    debug_assert!(0 < npx && npx <= PT && ox + npx <= l.strip && out.len() >= npx * cout);
    // Pixel `t`'s first element in a row buffer (a spare pixel repeats the last one).
    let at: [usize; PT] = core::array::from_fn(|t| (ox + t.min(npx - 1)) * l.cstep);
    // SAFETY: `c0 + 8k + 8 ≤ cp ≤ b.len()`.
    let bv: [__m256; B] =
        core::array::from_fn(|k| unsafe { _mm256_loadu_ps(b.as_ptr().add(c0 + 8 * k)) });
    let mut acc = [bv; PT];
    let mut e = 0;
    for buf in rows.iter().take(l.k) {
        for i in 0..l.row {
            // SAFETY: row `e < n` of `wt` spans `e·cp .. e·cp + cp`, `c0 + 8k + 8 ≤ cp`.
            let wv: [__m256; B] = core::array::from_fn(|k| unsafe {
                _mm256_loadu_ps(wt.as_ptr().add(e * cp + c0 + 8 * k))
            });
            for (ap, &p) in acc.iter_mut().zip(&at) {
                // SAFETY: `p + i < (ox + npx − 1)·stride·cin + row ≤ ncols·cin ≤ RB`.
                let xv = _mm256_set1_ps(unsafe { *buf.get_unchecked(p + i) });
                for (a, &w) in ap.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xv, w, *a);
                }
            }
            e += 1;
        }
    }
    for (t, ap) in acc.iter().enumerate().take(npx) {
        for (k, &a) in ap.iter().enumerate() {
            let o = c0 + 8 * k;
            if o >= cout {
                break;
            }
            let a = if relu {
                _mm256_max_ps(a, _mm256_setzero_ps())
            } else {
                a
            };
            let at = t * cout + o;
            if o + 8 <= cout {
                // SAFETY: `at + 8 ≤ (t + 1)·cout ≤ out.len()`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(at), a) };
            } else {
                let mut tmp = [0.0f32; 8];
                // SAFETY: `tmp` holds 8 values.
                unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), a) };
                out[at..at + cout - o].copy_from_slice(&tmp[..cout - o]);
            }
        }
    }
}

/// AVX2 int8 conv; bit-exact twin of `reference::conv::conv_i8`.
///
/// Per output row, the `k` input rows it reads are widened once to `x − zx` as i16 (0 in
/// the padding) into row buffers, so output pixel `ox`'s kernel row `ky` is the run of
/// `k·cin` elements at column `ox·stride` of buffer `ky`: the tile broadcasts its element
/// pairs straight from there (no per-pixel patch; a row's odd last element pairs with the
/// next one against a zero weight). Output columns go in strips whose input span fits a
/// buffer. Tiles of [`PTI`] pixels keep their sums in registers and requantise them there
/// ([`RqCols`]: [`requant8_plain`] or [`requant8_sum`]) into the output.
pub(crate) fn conv_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    conv_i8_pixels(g, 0..g.ho * g.wo, x, zx, w, rq, q, y)
}

/// `Kernels::conv_i8_pixels` ([`crate::kernels::ConvPixelsI8`]) of [`conv_i8`]: output
/// pixels `px` alone into `y` (the walk over those pixels only).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_i8_pixels(
    g: &Geom,
    px: Range<usize>,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let Some(l) = StemLayout::new(g) else {
        return refconv::conv_i8_pixels(g, px, x, zx, w, rq, q, y);
    };
    let (cout, cp) = (g.cout, l.cp);
    if cp == 0 || px.is_empty() || g.wo == 0 {
        return;
    }
    // wt[j, o] = (w[o, e], w[o, e + 1]) as an i16 pair (low, high) in one i32, for pair
    // `j = ky·rp + pp` at tap-major `e = ky·k·cin + 2pp`; 0 past the row or `cout`.
    let mut wt = [0i32; WT / 2];
    for (o, row) in w[..cout * l.n].chunks_exact(l.n).enumerate() {
        for ky in 0..g.k {
            for pp in 0..l.rp {
                let e = ky * l.row + 2 * pp;
                let lo = row[oihw(g, e)] as i16 as u16 as u32;
                let hi = if 2 * pp + 1 < l.row {
                    row[oihw(g, e + 1)] as i16 as u16 as u32
                } else {
                    0
                };
                wt[(ky * l.rp + pp) * cp + o] = (lo | hi << 16) as i32;
            }
        }
    }
    let mut cols = RqCols::new();
    let _ = Requant::new(&rq[..cout], q, &mut cols);
    // Every element initialised once: the tiles may read one past a row's last written
    // element (against a zero weight).
    let mut rows = [[MaybeUninit::new(0i16); RB]; KMAX];
    walk(
        g,
        &l,
        PTI,
        (px, y),
        &mut rows,
        // SAFETY: only installed after AVX2 detection; `ncols·cin + 16 ≤ RB` (`l.strip`).
        |rows, ky, iy, c0, ncols| unsafe { fill_row(g, x, zx, iy, c0, ncols, &mut rows[ky]) },
        |rows, ox, npx, c0, out| {
            // SAFETY: only installed after AVX2 detection; `wt` holds `k·rp` rows of `cp`,
            // the blocks `c0 .. c0 + 8·B ≤ cp` inside them and in `cols` (`cout` rounded up
            // to 16); `walk`'s tile bounds.
            unsafe {
                if c0 + 24 <= cp {
                    tile_i8::<3>(rows, &l, ox, &wt, &cols, q, c0, npx, cout, out);
                    24
                } else {
                    tile_i8::<1>(rows, &l, ox, &wt, &cols, q, c0, npx, cout, out);
                    8
                }
            }
        },
    );
}

/// Elements of one stem row buffer (i16 for int8, f32 for f32).
const RB: usize = 1024;
/// Most kernel rows the stems buffer.
const KMAX: usize = 7;

/// How the stems lay out their rows and weights.
struct StemLayout {
    /// Kernel side.
    k: usize,
    /// `cin·k²`.
    n: usize,
    /// Taps of one kernel row, `k·cin`.
    row: usize,
    /// Pairs a kernel row, `⌈row / 2⌉`.
    rp: usize,
    /// Output channels rounded up to 8 (the AVX-512 f32 stem rounds to 16 itself).
    cp: usize,
    /// Elements between neighbouring output pixels' runs in a row buffer, `stride·cin`.
    cstep: usize,
    /// Most output columns per strip: their input span and 16 more elements fit [`RB`].
    strip: usize,
}

impl StemLayout {
    /// The layout of `g`, if its rows and weights fit the stack buffers.
    fn new(g: &Geom) -> Option<Self> {
        let (n, row) = (g.cin * g.k * g.k, g.k * g.cin);
        let (rp, cp) = (row.div_ceil(2), g.cout.div_ceil(8) * 8);
        let span = ((RB - 16) / g.cin.max(1)).checked_sub(g.k)?;
        let strip = span / g.stride.max(1) + 1;
        (g.cin > 0 && g.k <= KMAX && n <= PATCH && cp <= MAXC && g.k * rp * cp <= WT / 2).then_some(
            Self {
                k: g.k,
                n,
                row,
                rp,
                cp,
                cstep: g.stride * g.cin,
                strip,
            },
        )
    }
}

/// Where the tap-major patch element `e = (ky·k + kx)·cin + c` sits in an OIHW weight row.
pub(super) fn oihw(g: &Geom, e: usize) -> usize {
    (e % g.cin) * g.k * g.k + e / g.cin
}

/// `buf[j·cin + c] = x[iy, ix, c_off + c] − zx` for the `ncols` input columns `ix = c0 + j
/// − pad` (0 where `iy` is `None` or `ix` is outside the image): a dense run (`in_stride =
/// cin`) widened 16 bytes at a time.
///
/// # Safety
/// AVX2 available; `ncols·cin ≤ buf.len()`.
#[target_feature(enable = "avx2")]
unsafe fn fill_row(
    g: &Geom,
    x: &[i8],
    zx: i32,
    iy: Option<usize>,
    c0: usize,
    ncols: usize,
    buf: &mut [MaybeUninit<i16>; RB],
) {
    let cin = g.cin;
    let buf = &mut buf[..ncols * cin];
    let Some(iy) = iy else {
        buf.fill(MaybeUninit::new(0));
        return;
    };
    let (a, b) = inside_cols(g, c0, ncols);
    buf[..a * cin].fill(MaybeUninit::new(0));
    buf[b * cin..].fill(MaybeUninit::new(0));
    if a == b {
        return;
    }
    let ix = c0 + a - g.pad;
    let src = (iy * g.w + ix) * g.in_stride + g.c_off;
    let dst = &mut buf[a * cin..b * cin];
    if g.in_stride == cin {
        // SAFETY: AVX2 (this function's contract); `dst` and the run are `(b − a)·cin` long.
        unsafe { super::conv1x1::widen(&x[src..src + dst.len()], zx, dst) };
    } else {
        let px = x[src..].chunks(g.in_stride);
        for (d, px) in dst.chunks_exact_mut(cin).zip(px) {
            for (d, &v) in d.iter_mut().zip(px) {
                d.write(v as i16 - zx as i16);
            }
        }
    }
}

/// `buf[j·cin + c] = x[iy, ix, c_off + c]` for the input columns `ix = c0 + j − pad` of
/// `buf` (`buf.len() / cin` of them), 0 where `iy` is `None` or `ix` is outside the image.
fn fill_row_f32(g: &Geom, x: &[f32], iy: Option<usize>, c0: usize, ncols: usize, buf: &mut [f32]) {
    let cin = g.cin;
    let Some(iy) = iy else {
        buf.fill(0.0);
        return;
    };
    let (a, b) = inside_cols(g, c0, ncols);
    buf[..a * cin].fill(0.0);
    buf[b * cin..].fill(0.0);
    if a == b {
        return;
    }
    let src = (iy * g.w + c0 + a - g.pad) * g.in_stride + g.c_off;
    let dst = &mut buf[a * cin..b * cin];
    if g.in_stride == cin {
        dst.copy_from_slice(&x[src..src + dst.len()]);
    } else {
        for (d, px) in dst.chunks_exact_mut(cin).zip(x[src..].chunks(g.in_stride)) {
            d.copy_from_slice(&px[..cin]);
        }
    }
}

/// Of the `ncols` input columns `c0 − pad ..` a row buffer holds, those inside the image:
/// `a .. b` (`a ≤ b ≤ ncols`).
fn inside_cols(g: &Geom, c0: usize, ncols: usize) -> (usize, usize) {
    let a = g.pad.saturating_sub(c0).min(ncols);
    (a, (g.w + g.pad).saturating_sub(c0).clamp(a, ncols))
}

/// `B` 8-channel blocks from `c0` for the first `npx` of [`PTI`] pixels from strip column
/// `ox`: `Σ_j madd(pair j of the pixel's rows, wt[j, o])` in registers (each weight vector
/// loaded feeds `PTI` multiply-adds) from the bias, requantised with `cols`' block (once
/// for the `PTI` pixels; [`requant8_plain`] when plain) and stored to
/// channels `c0 + 8b ..` of `out`'s pixel rows (`cout` apart; a block past `cout` in part).
///
/// # Safety
/// AVX2 available; `wt` holds `k·rp` rows of `l.cp`, `c0 + 8·B ≤ l.cp`, `0 < npx ≤ PTI`,
/// `ox + npx ≤ l.strip`, `out` holds `npx·cout`, `cols` holds channels `c0 .. c0 + 8·B`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn tile_i8<const B: usize>(
    rows: &[[MaybeUninit<i16>; RB]; KMAX],
    l: &StemLayout,
    ox: usize,
    wt: &[i32],
    cols: &RqCols,
    q: OutQ,
    c0: usize,
    npx: usize,
    cout: usize,
    out: &mut [i8],
) {
    let (cp, k) = (l.cp, l.k);
    debug_assert!(c0 + 8 * B <= cp && wt.len() >= k * l.rp * cp);
    debug_assert!(0 < npx && npx <= PTI && ox + npx <= l.strip && out.len() >= npx * cout);
    // Pixel `t`'s first element in a row buffer (a spare pixel repeats the last one).
    let at: [usize; PTI] = core::array::from_fn(|t| (ox + t.min(npx - 1)) * l.cstep);
    // The sums start at the bias (wrapping adds: the same sums).
    let mut bias = [_mm256_setzero_si256(); B];
    for (b, v) in bias.iter_mut().enumerate() {
        *v = cols.bias8(c0 + 8 * b);
    }
    let mut a = [bias; PTI];
    let mut j = 0;
    for buf in rows.iter().take(k) {
        let base = buf.as_ptr().cast::<i16>();
        for pp in 0..l.rp {
            let mut wv = [_mm256_setzero_si256(); B];
            for (b, v) in wv.iter_mut().enumerate() {
                // SAFETY: row `j < k·rp` of `wt` spans `j·cp .. j·cp + cp`, `c0 + 8b + 8 ≤ cp`.
                *v = unsafe { _mm256_loadu_si256(wt.as_ptr().add(j * cp + c0 + 8 * b).cast()) };
            }
            for (ap, &p) in a.iter_mut().zip(&at) {
                // SAFETY: `p + 2pp + 2 ≤ (ox + npx − 1)·stride·cin + row + 1 ≤ ncols·cin + 1
                // < RB` (`ox + npx ≤ strip`): one unaligned i32 of initialised elements.
                let pair = unsafe { base.add(p + 2 * pp).cast::<i32>().read_unaligned() };
                let xv = _mm256_set1_epi32(pair);
                for (s, &w) in ap.iter_mut().zip(&wv) {
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(xv, w));
                }
            }
            j += 1;
        }
    }
    for b in 0..B {
        let o = c0 + 8 * b;
        if o >= cout {
            break;
        }
        let mut r = [_mm256_setzero_si256(); PTI];
        if cols.plain() {
            let p = cols.plain8(o);
            for (v, at) in r.iter_mut().zip(&a) {
                *v = requant8_plain(at[b], &p);
            }
        } else {
            let p = cols.lanes(o);
            for (v, at) in r.iter_mut().zip(&a) {
                *v = requant8_sum(at[b], &p, q);
            }
        }
        for (t, &v) in r.iter().enumerate().take(npx) {
            let v = super::narrow8(v);
            let at = t * cout + o;
            if o + 8 <= cout {
                // SAFETY: `at + 8 ≤ (t + 1)·cout ≤ out.len()`.
                unsafe { _mm_storel_epi64(out.as_mut_ptr().add(at).cast(), v) };
            } else {
                let mut tmp = [0i8; 16];
                // SAFETY: `tmp` holds 16 bytes.
                unsafe { _mm_storeu_si128(tmp.as_mut_ptr().cast(), v) };
                out[at..at + cout - o].copy_from_slice(&tmp[..cout - o]);
            }
        }
    }
}
