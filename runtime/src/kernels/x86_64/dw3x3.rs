//! AVX2 depthwise 3x3 (padding 1, stride 1 or 2) over NHWC: vectorised across channels,
//! which are contiguous in every input pixel, in the weights `[3, 3, C]` and in the output.
//! Per output pixel the taps inside the image are listed once (row slices), then each
//! 8-channel block accumulates its up-to-9 taps in one register.
//!
//! f32: FMA in the reference's tap order, so the difference is FMA's single rounding only
//! (`|Δ| ≤ 2·9·ε·(|b| + Σ|w·x|)`). int8: `w·(x − zx)` in i32 lanes (`_mm256_mullo_epi32`
//! of sign-extended bytes), exact, then the reference's scalar `requant` per channel.
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::lane_mask;
use super::requant::{Out16, Requant, RqCols, MAXQ};
use crate::kernels::reference::dwconv3x3::taps;
use crate::kernels::{Geom, OutQ};
use crate::quant::requant;
use core::ops::Range;

/// AVX2 f32 depthwise 3x3; same contract as `reference::dwconv3x3::dwconv3x3_f32`.
pub(crate) fn dwconv3x3_f32(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let c = g.cout;
    let bias = &bias[..c];
    // Interior columns `1 .. x_hi`, as in the int8 conv: with an interior row and at least 8
    // channels, a run of pixels per 8-channel block ([`run_f32`]); the rest pixel by pixel.
    let x_hi = if g.w >= 2 {
        ((g.w - 2) / g.stride + 1).min(g.wo)
    } else {
        0
    };
    let (s, is) = (g.stride, g.in_stride);
    assert!(x.len() >= g.h * g.w * is && g.c_off + c <= is && y.len() >= g.ho * g.wo * c);
    assert!(w.len() >= 9 * c);
    let mut t: [(&[f32], &[f32]); 9] = [(&[], &[]); 9];
    for oy in 0..g.ho {
        let runs = c >= 8 && oy * s >= 1 && oy * s + 1 < g.h && x_hi > 1;
        if runs {
            let x0 = ((oy * s - 1) * g.w + (s - 1)) * is + g.c_off;
            let offs: [usize; 9] = core::array::from_fn(|k| ((k / 3) * g.w + k % 3) * is);
            let out = (oy * g.wo + 1) * c;
            let mut c0 = 0;
            while c0 < c {
                let at = c0.min(c - 8);
                // SAFETY: only installed after AVX2+FMA detection; pixel `p` of the run is
                // output `(oy, 1 + p)`, interior: its taps are input pixels inside the
                // `h × w` image (`x` holds them all, asserted above) and `at + 8 ≤ c` of
                // their `c_off + c ≤ in_stride` channels; tap `k`'s weights are `w[k·c ..]`;
                // its output row holds `c` values in `y`.
                unsafe {
                    run_f32(
                        x[x0 + at..].as_ptr(),
                        &offs,
                        s * is,
                        x_hi - 1,
                        w[at..].as_ptr(),
                        c,
                        bias[at..].as_ptr(),
                        relu,
                        y[out + at..].as_mut_ptr(),
                    )
                };
                c0 = at + 8;
            }
        }
        for ox in 0..g.wo {
            if runs && (1..x_hi).contains(&ox) {
                continue;
            }
            let nt = taps(g, x, w, oy, ox, &mut t);
            let out = &mut y[(oy * g.wo + ox) * c..][..c];
            // SAFETY: only installed after AVX2+FMA detection; `bias`, `out` and every tap
            // row hold exactly `c` elements.
            unsafe { pixel_f32(&t[..nt], bias, relu, out) };
        }
    }
}

/// 8 channels of a run of `npx` interior output pixels, [`pixel_f32`]'s sums (the bias,
/// then FMA over the 9 taps in order, then ReLU), the block's 9 weight vectors and bias
/// loaded once for the run: pixel `p`'s tap `k` is `x0 + p·step + offs[k]`, its weights
/// `w + k·c`, its output `out + p·c`.
///
/// # Safety
/// AVX2 and FMA available; every such input, weight and bias pointer readable for 8 f32,
/// every output pointer writable for 8.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_f32(
    x0: *const f32,
    offs: &[usize; 9],
    step: usize,
    npx: usize,
    w: *const f32,
    c: usize,
    bias: *const f32,
    relu: bool,
    out: *mut f32,
) {
    // SAFETY: this function's contract.
    unsafe {
        let wv: [__m256; 9] = core::array::from_fn(|k| _mm256_loadu_ps(w.add(k * c)));
        let bv = _mm256_loadu_ps(bias);
        for p in 0..npx {
            let base = x0.add(p * step);
            let mut acc = bv;
            for (k, &wk) in wv.iter().enumerate() {
                acc = _mm256_fmadd_ps(wk, _mm256_loadu_ps(base.add(offs[k])), acc);
            }
            if relu {
                acc = _mm256_max_ps(acc, _mm256_setzero_ps());
            }
            _mm256_storeu_ps(out.add(p * c), acc);
        }
    }
}

/// `out = bias + Σ_taps w·x` (then ReLU), 8 channels at a time: plain loads and stores (a
/// masked store costs several times a plain one on some CPUs); the last `c mod 8` channels
/// as a block ending at `c` (overlapping the one before: same sums, same bits), masked only
/// where `c < 8`.
///
/// # Safety
/// AVX2 and FMA available; every row of `taps` and `bias` at least `out.len()` long.
#[target_feature(enable = "avx2,fma")]
unsafe fn pixel_f32(taps: &[(&[f32], &[f32])], bias: &[f32], relu: bool, out: &mut [f32]) {
    let c = out.len();
    let mut c0 = 0;
    while c0 < c {
        if c >= 8 {
            let c0 = c0.min(c - 8);
            // SAFETY: `c0 + 8 ≤ c`: 8 lanes inside every row and `out`.
            unsafe {
                let acc = sum8_f32(taps, bias, c0, relu, |p| _mm256_loadu_ps(p));
                _mm256_storeu_ps(out.as_mut_ptr().add(c0), acc);
            }
        } else {
            // SAFETY: the mask enables only lanes `< c`, inside every row and `out`.
            unsafe {
                let m = _mm256_loadu_si256(lane_mask(c).as_ptr().cast());
                let acc = sum8_f32(taps, bias, 0, relu, |p| _mm256_maskload_ps(p, m));
                _mm256_maskstore_ps(out.as_mut_ptr(), m, acc);
            }
        }
        c0 += 8;
    }
}

/// `bias + Σ_taps w·x` (then ReLU) for channels `c0 .. c0 + 8`, every vector read by `load`.
///
/// # Safety
/// AVX2 and FMA available; `load` reads 8 f32 (or fewer, masked) at each pointer it gets:
/// `c0` of `bias` and of every row of `taps`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum8_f32(
    taps: &[(&[f32], &[f32])],
    bias: &[f32],
    c0: usize,
    relu: bool,
    load: impl Fn(*const f32) -> __m256,
) -> __m256 {
    let mut acc = load(bias.as_ptr().wrapping_add(c0));
    for &(wr, xr) in taps {
        let (wv, xv) = (
            load(wr.as_ptr().wrapping_add(c0)),
            load(xr.as_ptr().wrapping_add(c0)),
        );
        acc = _mm256_fmadd_ps(wv, xv, acc);
    }
    if relu {
        acc = _mm256_max_ps(acc, _mm256_setzero_ps());
    }
    acc
}

/// AVX2 int8 depthwise 3x3; bit-exact twin of `reference::dwconv3x3::dwconv3x3_i8`.
pub(crate) fn dwconv3x3_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    dw_i8::<false>(g, 0..g.ho * g.wo, x, zx, w, rq, q, y)
}

/// `Kernels::dwconv3x3_i8_pixels` ([`super::super::ConvPixelsI8`]) of [`dwconv3x3_i8`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn dwconv3x3_i8_pixels(
    g: &Geom,
    pixels: Range<usize>,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    dw_i8::<false>(g, pixels, x, zx, w, rq, q, y)
}

/// [`dwconv3x3_i8`] with the 16-channel blocks requantised on AVX-512 ([`Out16`]).
/// Install only when `avx512_detected`.
pub(crate) fn dwconv3x3_i8_avx512(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    dw_i8::<true>(g, 0..g.ho * g.wo, x, zx, w, rq, q, y)
}

/// [`dwconv3x3_i8_pixels`] with the AVX-512 output stage. Install only when
/// `avx512_detected`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dwconv3x3_i8_avx512_pixels(
    g: &Geom,
    pixels: Range<usize>,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    dw_i8::<true>(g, pixels, x, zx, w, rq, q, y)
}

/// The int8 depthwise conv's output pixels `pixels` (of `0 .. g.ho·g.wo`, row-major) into
/// `y` (those pixels only, from its start); `WIDE`: AVX-512 available, the 16-channel
/// blocks' output stage on it.
#[allow(clippy::too_many_arguments)]
fn dw_i8<const WIDE: bool>(
    g: &Geom,
    pixels: Range<usize>,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let c = g.cout;
    let rq = &rq[..c];
    let mut cols = RqCols::new();
    let req = Requant::new(rq, q, &mut cols);
    // 16-channel blocks from 0; where `c` is not a multiple of 16 (and at least 16) one more
    // ends at `c`, overlapping the one before it (those channels are written twice, the
    // same bytes): no 8-channel or scalar tails in the convs of 16 channels or more.
    let nb = match req {
        Requant::Cols(_) => c.div_ceil(16) * (c >= 16) as usize,
        Requant::Gather(_) => 0,
    };
    let start = |b: usize| (16 * b).min(c.saturating_sub(16));
    // Interior output rows / columns: those whose 3 taps all fall inside the input.
    let inner = |o: usize, n: usize| {
        (0..o)
            .filter(|&i| i * g.stride >= 1 && i * g.stride + 1 < n)
            .count()
    };
    // The pair weights cost about as much to build as two pixels' sums: only for enough
    // interior pixels (the 2×2 and 4×4 maps of small inputs have few or none).
    let np = if inner(g.ho, g.h) * inner(g.wo, g.w) >= 8 {
        nb
    } else {
        0
    };
    // Interior pixels (all 9 taps inside) take tap pairs through `madd` on raw `x`, the
    // zero point's share `zx·Σ_t w` subtracted once per channel: exact integer sums
    // (`|w·x| ≤ 2^14`, so a pair's sum fits), and `acc + bias` wraps in the reference too.
    let mut wp = [const { MaybeUninit::<Pairs16>::uninit() }; MAXQ / 16];
    let mut zs = [const { MaybeUninit::<i32>::uninit() }; MAXQ];
    for (b, slot) in wp[..np].iter_mut().enumerate() {
        // SAFETY: only installed after AVX2 detection; `start(b) + 16 ≤ c`.
        slot.write(unsafe { Pairs16::new(&w[..9 * c], c, start(b)) });
    }
    let nz = if np > 0 { c } else { 0 };
    if nz > 0 {
        // SAFETY: only installed after AVX2 detection; `np > 0`: `c ≥ 16`.
        unsafe { zero_point_sums(&w[..9 * c], c, zx, &mut zs[..c]) };
    }
    // SAFETY: the loops above wrote the first `np` blocks and `nz` sums.
    let (wp, zs) = unsafe {
        (
            &*(&wp[..np] as *const [MaybeUninit<Pairs16>] as *const [Pairs16]),
            &*(&zs[..nz] as *const [MaybeUninit<i32>] as *const [i32]),
        )
    };
    // Interior columns `1 .. x_hi` (`ox·stride ≥ 1` and `ox·stride + 1 < w`): with an interior
    // row, a run of pixels per block (`Run`); the rest pixel by pixel.
    let x_hi = if g.w >= 2 {
        ((g.w - 2) / g.stride + 1).min(g.wo)
    } else {
        0
    };
    let (s, is, wo) = (g.stride, g.in_stride, g.wo);
    let p0 = pixels.start;
    assert!(pixels.start <= pixels.end && pixels.end <= g.ho * wo);
    assert!(x.len() >= g.h * g.w * is && g.c_off + c <= is && y.len() >= pixels.len() * c);
    let mut t: [(&[i8], &[i8]); 9] = [(&[], &[]); 9];
    for oy in p0 / wo.max(1)..pixels.end.div_ceil(wo.max(1)) {
        // This row's columns `a .. b` among the pixels; its run, the interior ones among them.
        let (a, b) = (
            p0.max(oy * wo) - oy * wo,
            pixels.end.min((oy + 1) * wo) - oy * wo,
        );
        let (lo, hi) = (a.max(1), b.min(x_hi));
        let run = match req {
            Requant::Cols(cols) if np > 0 && oy * s >= 1 && oy * s + 1 < g.h && hi > lo => {
                let x0 = ((oy * s - 1) * g.w + (lo * s - 1)) * is + g.c_off;
                Some(Run {
                    x0: x[x0..].as_ptr(),
                    offs: core::array::from_fn(|k| ((k / 3) * g.w + k % 3) * is),
                    step: s * is,
                    npx: hi - lo,
                    out: y[(oy * wo + lo - p0) * c..].as_mut_ptr(),
                    c,
                    zs,
                    cols,
                    q,
                })
            }
            _ => None,
        };
        if let Some(run) = &run {
            for (b, pairs) in wp.iter().enumerate() {
                // SAFETY: only installed after AVX2 (with `WIDE`, AVX-512) detection; pixel
                // `p` of the run is output `(oy, lo + p)`, interior (`lo ≥ 1`, `lo + p <
                // x_hi`): its taps are input pixels `(oy·s − 1 + ky, (lo + p)·s − 1 + kx)`
                // inside the `h × w` image (`x` holds them all, asserted above), and
                // `start(b) + 16 ≤ c` of their `c_off + c ≤ in_stride` channels; its output
                // (`oy·wo + lo + p − p0` of `y`, one of the `pixels.len()` asserted) holds
                // `c` bytes.
                unsafe {
                    if WIDE {
                        run.block_512(pairs, start(b))
                    } else {
                        run.block(pairs, start(b))
                    }
                }
            }
        }
        for ox in a..b {
            if run.is_some() && (lo..hi).contains(&ox) {
                continue;
            }
            let nt = taps(g, x, w, oy, ox, &mut t);
            let out = &mut y[(oy * wo + ox - p0) * c..][..c];
            if let Requant::Cols(cols) = req {
                if nb > 0 {
                    if nt == 9 && np > 0 {
                        let xs: [&[i8]; 9] = core::array::from_fn(|k| t[k].1);
                        for (b, pairs) in wp.iter().enumerate() {
                            let c0 = start(b);
                            // SAFETY: only installed after AVX2 (with `WIDE`, AVX-512)
                            // detection; `c0 + 16 ≤ c ≤ MAXQ`, every tap row holds `c`
                            // bytes, `zs` `c` sums.
                            unsafe {
                                let (zs, o) = (&zs[c0..c0 + 16], &mut out[c0..c0 + 16]);
                                if WIDE {
                                    pairs16_i8_512(&xs, c0, pairs, zs, cols, q, o)
                                } else {
                                    pairs16_i8(&xs, c0, pairs, zs, cols, q, o)
                                }
                            };
                        }
                    } else {
                        for b in 0..nb {
                            let c0 = start(b);
                            // SAFETY: only installed after AVX2 (with `WIDE`, AVX-512)
                            // detection; `c0 + 16 ≤ c ≤ MAXQ` (`Cols`), every tap row holds
                            // `c` bytes.
                            unsafe {
                                let o = &mut out[c0..c0 + 16];
                                if WIDE {
                                    block16_i8_512(&t[..nt], c0, zx, cols, q, o)
                                } else {
                                    block16_i8(&t[..nt], c0, zx, cols, q, o)
                                }
                            };
                        }
                    }
                    continue;
                }
            }
            let mut c0 = 0;
            while c0 + 8 <= c {
                // SAFETY: only installed after AVX2 detection; `c0 + 8 <= c` and every tap
                // row holds `c` bytes.
                let acc = unsafe { block_i8(&t[..nt], c0, zx) };
                // SAFETY: as above.
                unsafe { req.row(c0, &acc, q, &mut out[c0..c0 + 8]) };
                c0 += 8;
            }
            // Channel tail (< 8): scalar, as the reference.
            for ch in c0..c {
                let mut a = 0i32;
                for &(wr, xr) in &t[..nt] {
                    a += wr[ch] as i32 * (xr[ch] as i32 - zx);
                }
                out[ch] = requant(a, rq[ch], q);
            }
        }
    }
}

/// One 16-channel block's weights for [`pairs16_i8`]: taps `2j, 2j + 1` interleaved per
/// channel as i16 (`lo[j]`: channels 0–7, `hi[j]`: 8–15), the ninth tap alone.
#[derive(Clone, Copy)]
struct Pairs16 {
    lo: [[i16; 16]; 4],
    hi: [[i16; 16]; 4],
    last: [i16; 16],
}

impl Pairs16 {
    /// Channels `c0 .. c0 + 16` of the `[3, 3, c]` weights `w` (`c0 + 16 ≤ c`): the tap
    /// rows' bytes interleaved and widened as [`PairsRegs::sums`] does the inputs'.
    #[target_feature(enable = "avx2")]
    fn new(w: &[i8], c: usize, c0: usize) -> Self {
        let w = &w[..9 * c];
        assert!(c0 + 16 <= c);
        let mut rows = [_mm_setzero_si128(); 9];
        for (t, r) in rows.iter_mut().enumerate() {
            // SAFETY: tap `t`'s 16 bytes at `t·c + c0`, inside `w` (asserted).
            *r = unsafe { _mm_loadu_si128(w.as_ptr().add(t * c + c0).cast()) };
        }
        let mut p = Pairs16 {
            lo: [[0; 16]; 4],
            hi: [[0; 16]; 4],
            last: [0; 16],
        };
        let wide = _mm256_cvtepi8_epi16;
        for j in 0..4 {
            let (a, b) = (rows[2 * j], rows[2 * j + 1]);
            // SAFETY: each destination holds 16 i16.
            unsafe {
                _mm256_storeu_si256(p.lo[j].as_mut_ptr().cast(), wide(_mm_unpacklo_epi8(a, b)));
                _mm256_storeu_si256(p.hi[j].as_mut_ptr().cast(), wide(_mm_unpackhi_epi8(a, b)));
            }
        }
        // SAFETY: `last` holds 16 i16.
        unsafe { _mm256_storeu_si256(p.last.as_mut_ptr().cast(), wide(rows[8])) };
        p
    }
}

/// `zs[ch] = zx · Σ_t w[t][ch]` for every channel of the `[3, 3, c]` weights (`c ≥ 16`; 16
/// channels a step, the last step ending at `c`). `|Σ_t w| ≤ 9·128`: exact in i16.
#[target_feature(enable = "avx2")]
fn zero_point_sums(w: &[i8], c: usize, zx: i32, zs: &mut [MaybeUninit<i32>]) {
    assert!(c >= 16 && w.len() >= 9 * c && zs.len() >= c);
    let z = _mm256_set1_epi32(zx);
    let mut c0 = 0;
    while c0 < c {
        let at = c0.min(c - 16);
        let mut s = _mm256_setzero_si256();
        for t in 0..9 {
            // SAFETY: `t·c + at + 16 ≤ 9c ≤ w.len()`.
            let v = unsafe { _mm_loadu_si128(w.as_ptr().add(t * c + at).cast()) };
            s = _mm256_add_epi16(s, _mm256_cvtepi8_epi16(v));
        }
        let lo = _mm256_mullo_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(s)), z);
        let hi = _mm256_mullo_epi32(_mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(s)), z);
        // SAFETY: `at + 16 ≤ c ≤ zs.len()`: 16 i32 written.
        unsafe {
            _mm256_storeu_si256(zs.as_mut_ptr().add(at).cast(), lo);
            _mm256_storeu_si256(zs.as_mut_ptr().add(at + 8).cast(), hi);
        }
        c0 = at + 16;
    }
}

/// Channels `c0 .. c0 + 16` of an interior output pixel (`xs`: its 9 taps' input rows),
/// requantised into `out`: [`pairs16_sums`], then [`RqCols::requant8`] per 8 channels.
///
/// # Safety
/// AVX2 available; every row of `xs` holds at least `c0 + 16` bytes, `zs` 16 sums, `out`
/// 16 bytes, and `cols` the parameters of channels `c0 .. c0 + 16` (`c0 + 16 ≤ MAXQ`).
#[target_feature(enable = "avx2")]
unsafe fn pairs16_i8(
    xs: &[&[i8]; 9],
    c0: usize,
    wp: &Pairs16,
    zs: &[i32],
    cols: &RqCols,
    q: OutQ,
    out: &mut [i8],
) {
    debug_assert!(out.len() >= 16);
    // SAFETY: this function's contract.
    let (lo, hi) = unsafe { pairs16_sums(xs, c0, wp, zs) };
    // SAFETY: `out` holds 16 bytes.
    unsafe { put16(lo, hi, cols, c0, q, out.as_mut_ptr()) };
}

/// [`pairs16_i8`] with [`Out16`] (the AVX-512 table).
///
/// # Safety
/// As [`pairs16_i8`], and AVX-512 F/BW/VL available.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn pairs16_i8_512(
    xs: &[&[i8]; 9],
    c0: usize,
    wp: &Pairs16,
    zs: &[i32],
    cols: &RqCols,
    q: OutQ,
    out: &mut [i8],
) {
    debug_assert!(out.len() >= 16);
    // SAFETY: this function's contract.
    let (lo, hi) = unsafe { pairs16_sums(xs, c0, wp, zs) };
    // SAFETY: `out` holds 16 bytes.
    unsafe { put16_512(lo, hi, &cols.out16(c0, q), out.as_mut_ptr()) };
}

/// Channels `c0 .. c0 + 16`'s sums (two 8-lane halves) requantised into the 16 bytes at
/// `out`, [`RqCols::requant8`] per half.
///
/// # Safety
/// AVX2 available; `out` writable for 16 bytes; `cols` holds channels `c0 .. c0 + 16`.
// Inlined into its AVX2 callers (no feature of its own: `inline(always)` needs that), so a
// run's pixels do not call it and reload their arguments.
#[inline(always)]
unsafe fn put16(lo: __m256i, hi: __m256i, cols: &RqCols, c0: usize, q: OutQ, out: *mut i8) {
    // SAFETY: AVX2 (this function's callers); `cols` holds channels `c0 .. c0 + 16`.
    let v = unsafe { super::narrow16(cols.requant8(lo, c0, q), cols.requant8(hi, c0 + 8, q)) };
    // SAFETY: this function's contract.
    unsafe { _mm_storeu_si128(out.cast(), v) };
}

/// [`put16`] by one [`Out16`] (the AVX-512 table: `cols.out16(c0, q)`).
///
/// # Safety
/// As [`put16`], and AVX-512 F/BW/VL available.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn put16_512(lo: __m256i, hi: __m256i, out16: &Out16, out: *mut i8) {
    let acc = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
    // SAFETY: this function's contract.
    unsafe { _mm_storeu_si128(out.cast(), out16.requant(acc)) };
}

/// `Σ_t w·x − zx·Σ_t w` for channels `c0 .. c0 + 16` of an interior output pixel (`xs`: its
/// 9 taps' input rows), in two 8-lane halves ([`PairsRegs::sums`]).
///
/// # Safety
/// AVX2 available; every row of `xs` holds at least `c0 + 16` bytes, `zs` 16 sums.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pairs16_sums(xs: &[&[i8]; 9], c0: usize, wp: &Pairs16, zs: &[i32]) -> (__m256i, __m256i) {
    debug_assert!(xs.iter().all(|r| r.len() >= c0 + 16) && zs.len() >= 16);
    // SAFETY: this function's contract.
    unsafe { PairsRegs::load(wp, zs).sums(xs.map(|r| r.as_ptr().add(c0))) }
}

/// A block's [`Pairs16`] and `zx·Σw` in registers: loaded once for a run of pixels.
#[derive(Clone, Copy)]
struct PairsRegs {
    lo: [__m256i; 4],
    hi: [__m256i; 4],
    last: __m256i,
    zs: [__m256i; 2],
}

impl PairsRegs {
    /// # Safety
    /// AVX2 available; `zs` holds 16 sums.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(wp: &Pairs16, zs: &[i32]) -> Self {
        let zs = &zs[..16];
        // SAFETY: 16 i16 of each fixed array, 8 + 8 i32 of `zs`.
        unsafe {
            let w16 = |v: &[i16; 16]| _mm256_loadu_si256(v.as_ptr().cast());
            PairsRegs {
                lo: wp.lo.each_ref().map(w16),
                hi: wp.hi.each_ref().map(w16),
                last: w16(&wp.last),
                zs: [
                    _mm256_loadu_si256(zs.as_ptr().cast()),
                    _mm256_loadu_si256(zs.as_ptr().add(8).cast()),
                ],
            }
        }
    }

    /// `Σ_t w·x − zx·Σ_t w` for the 16 channels at the 9 tap pointers `xs`, in two 8-lane
    /// halves — taps two at a time, their bytes interleaved and widened so one `madd` per 8
    /// channels sums both products.
    ///
    /// # Safety
    /// AVX2 available; every pointer readable for 16 bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sums(&self, xs: [*const i8; 9]) -> (__m256i, __m256i) {
        // SAFETY: 16-byte loads at every tap pointer (this function's contract).
        unsafe {
            let ld = |p: *const i8| _mm_loadu_si128(p.cast());
            let mut lo = _mm256_sub_epi32(_mm256_setzero_si256(), self.zs[0]);
            let mut hi = _mm256_sub_epi32(_mm256_setzero_si256(), self.zs[1]);
            for j in 0..4 {
                let (a, b) = (ld(xs[2 * j]), ld(xs[2 * j + 1]));
                let l = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));
                let h = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));
                lo = _mm256_add_epi32(lo, _mm256_madd_epi16(l, self.lo[j]));
                hi = _mm256_add_epi32(hi, _mm256_madd_epi16(h, self.hi[j]));
            }
            let p = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(ld(xs[8])), self.last);
            lo = _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
            hi = _mm256_add_epi32(hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(p)));
            (lo, hi)
        }
    }
}

/// A run of interior output pixels of one row (all 9 taps inside): each 16-channel block
/// ([`Run::block`], given its pair weights) loads those, its `zx·Σw` and requantisation
/// lanes once for the run.
struct Run<'r> {
    /// Pixel 0's tap 0 (channel 0 of its first input pixel, `c_off` applied).
    x0: *const i8,
    /// Each tap's offset from tap 0, in bytes.
    offs: [usize; 9],
    /// Input bytes between consecutive output pixels (`stride · in_stride`).
    step: usize,
    /// Pixels in the run.
    npx: usize,
    /// Pixel 0's output (channel 0); pixels `c` apart.
    out: *mut i8,
    c: usize,
    zs: &'r [i32],
    cols: &'r RqCols,
    q: OutQ,
}

impl Run<'_> {
    /// Channels `c0 .. c0 + 16` (pair weights `wp`) of every pixel of the run,
    /// [`RqCols::requant8`] per 8 channels.
    ///
    /// # Safety
    /// AVX2 available; for every pixel `p < npx` and tap `t`, `x0 + p·step + offs[t] + c0`
    /// readable for 16 bytes, `out + p·c + c0` writable for 16; `c0 + 16 ≤` the channels
    /// `cols` and `zs` hold.
    #[target_feature(enable = "avx2")]
    unsafe fn block(&self, wp: &Pairs16, c0: usize) {
        // SAFETY: this function's contract.
        unsafe {
            let regs = PairsRegs::load(wp, &self.zs[c0..c0 + 16]);
            for p in 0..self.npx {
                let base = self.x0.add(p * self.step + c0);
                let (lo, hi) = regs.sums(self.offs.map(|o| base.add(o)));
                put16(lo, hi, self.cols, c0, self.q, self.out.add(p * self.c + c0));
            }
        }
    }

    /// [`Run::block`] with [`Out16`] (its parameters loaded once for the run).
    ///
    /// # Safety
    /// As [`Run::block`], and AVX-512 F/BW/VL available.
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
    unsafe fn block_512(&self, wp: &Pairs16, c0: usize) {
        // SAFETY: this function's contract.
        unsafe {
            let regs = PairsRegs::load(wp, &self.zs[c0..c0 + 16]);
            let out16 = self.cols.out16(c0, self.q);
            for p in 0..self.npx {
                let base = self.x0.add(p * self.step + c0);
                let (lo, hi) = regs.sums(self.offs.map(|o| base.add(o)));
                put16_512(lo, hi, &out16, self.out.add(p * self.c + c0));
            }
        }
    }
}

/// Channels `c0 .. c0 + 16` of one output pixel, requantised into `out`: [`block16_sums`],
/// then [`RqCols::requant8`] per 8 channels.
///
/// # Safety
/// AVX2 available; every row of `taps` holds at least `c0 + 16` bytes, `out` 16, and `cols`
/// the parameters of channels `c0 .. c0 + 16` (`c0 + 16 ≤ MAXQ`).
#[target_feature(enable = "avx2")]
unsafe fn block16_i8(
    taps: &[(&[i8], &[i8])],
    c0: usize,
    zx: i32,
    cols: &RqCols,
    q: OutQ,
    out: &mut [i8],
) {
    debug_assert!(out.len() >= 16);
    // SAFETY: this function's contract.
    let (lo, hi) = unsafe { block16_sums(taps, c0, zx) };
    // SAFETY: `out` holds 16 bytes.
    unsafe { put16(lo, hi, cols, c0, q, out.as_mut_ptr()) };
}

/// [`block16_i8`] with [`Out16`] (the AVX-512 table).
///
/// # Safety
/// As [`block16_i8`], and AVX-512 F/BW/VL available.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn block16_i8_512(
    taps: &[(&[i8], &[i8])],
    c0: usize,
    zx: i32,
    cols: &RqCols,
    q: OutQ,
    out: &mut [i8],
) {
    debug_assert!(out.len() >= 16);
    // SAFETY: this function's contract.
    let (lo, hi) = unsafe { block16_sums(taps, c0, zx) };
    // SAFETY: `out` holds 16 bytes.
    unsafe { put16_512(lo, hi, &cols.out16(c0, q), out.as_mut_ptr()) };
}

/// `Σ_taps w·(x − zx)` for channels `c0 .. c0 + 16` of one output pixel, in two 8-lane
/// halves: each tap's products in i16 lanes (exact: `|w·(x − zx)| ≤ 128·255 < 2^15`),
/// widened into two i32 accumulators — twice the channels of [`block_i8`] per
/// instruction, without its slow 32-bit multiplies.
///
/// # Safety
/// AVX2 available; every row of `taps` holds at least `c0 + 16` bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block16_sums(taps: &[(&[i8], &[i8])], c0: usize, zx: i32) -> (__m256i, __m256i) {
    debug_assert!(taps.iter().all(|(w, x)| w.len().min(x.len()) >= c0 + 16));
    let z = _mm256_set1_epi16(zx as i16);
    let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for &(wr, xr) in taps {
        // SAFETY: 16-byte loads at `c0`, in bounds by the contract.
        let (wv, xv) = unsafe {
            (
                _mm_loadu_si128(wr.as_ptr().add(c0).cast()),
                _mm_loadu_si128(xr.as_ptr().add(c0).cast()),
            )
        };
        let xv = _mm256_sub_epi16(_mm256_cvtepi8_epi16(xv), z);
        let p = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(wv), xv);
        lo = _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
        hi = _mm256_add_epi32(hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(p)));
    }
    (lo, hi)
}

/// `Σ_taps w[c0..c0+8]·(x[c0..c0+8] − zx)` in exact i32 lanes.
///
/// # Safety
/// AVX2 available; every row of `taps` holds at least `c0 + 8` bytes.
#[target_feature(enable = "avx2")]
unsafe fn block_i8(taps: &[(&[i8], &[i8])], c0: usize, zx: i32) -> [i32; 8] {
    let z = _mm256_set1_epi32(zx);
    let mut acc = _mm256_setzero_si256();
    for &(wr, xr) in taps {
        // SAFETY: 8-byte loads at `c0`, in bounds by the contract.
        let (wv, xv) = unsafe {
            (
                _mm_loadl_epi64(wr.as_ptr().add(c0).cast()),
                _mm_loadl_epi64(xr.as_ptr().add(c0).cast()),
            )
        };
        let xv = _mm256_sub_epi32(_mm256_cvtepi8_epi32(xv), z);
        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_cvtepi8_epi32(wv), xv));
    }
    let mut out = [0i32; 8];
    // SAFETY: `out` holds 8 i32.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), acc) };
    out
}
