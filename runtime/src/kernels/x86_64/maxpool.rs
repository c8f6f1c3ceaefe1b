//! AVX2 max pool 3x3, stride 2, padding 1 (padding never wins) over a dense NHWC
//! `[h, w, c]`: an interior output pixel reads its nine taps at fixed offsets, an edge pixel
//! lists the taps inside the image once; then a vector of channels a step (the last step
//! overlaps the one before when `c` is not a multiple of the lanes: the same maxima again). int8: 16 codes with `pmaxsb` (a max of codes, so exact).
//! f32: 8 lanes with `maxps(v, m)`, which is the reference's select `if v > m { v } else
//! { m }` lane by lane (NaN and signed zeros included), so the same bits. Fewer channels
//! than lanes take the reference.
use core::arch::x86_64::*;

use crate::kernels::reference::maxpool::{self as refpool, taps};
use crate::kernels::Geom;
use core::ops::Range;

/// Same contract as `reference::maxpool::maxpool3x3s2::<i8>`.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    let n = Geom::out_dim(h, 3, 2, 1) * Geom::out_dim(w, 3, 2, 1);
    maxpool3x3s2_i8_pixels(h, w, c, 0..n, x, y)
}

/// `Kernels::maxpool_i8_pixels` of [`maxpool3x3s2_i8`]: output pixels `pixels` alone.
pub(crate) fn maxpool3x3s2_i8_pixels(
    h: usize,
    w: usize,
    c: usize,
    pixels: Range<usize>,
    x: &[i8],
    y: &mut [i8],
) {
    if c < 16 {
        return refpool::maxpool3x3s2_pixels(h, w, c, pixels, x, y);
    }
    // SAFETY: only installed after AVX2 detection; `c ≥ 16`, as both pixel forms need.
    unsafe { walk(h, w, c, pixels, x, y, pixel9, pixel) }
}

/// Both tables' walk over output pixels `px` (row-major; `y` holding those): an interior one by `inner(x, base, w·c, out)`
/// ([`interior`]'s `base`: all nine taps inside `x`, which is cut to `h·w·c`), the others by
/// `edge(taps, out)` on the taps inside the image.
///
/// # Safety
/// `inner` and `edge` may be called on every `out` of `c` elements (their target features
/// available, `c` at least their lanes).
#[allow(clippy::too_many_arguments)]
unsafe fn walk<T: Copy>(
    h: usize,
    w: usize,
    c: usize,
    px: Range<usize>,
    x: &[T],
    y: &mut [T],
    inner: unsafe fn(&[T], usize, usize, &mut [T]),
    edge: unsafe fn(&[&[T]], &mut [T]),
) {
    let wo = Geom::out_dim(w, 3, 2, 1);
    let x = &x[..h * w * c];
    let mut t: [&[T]; 9] = [&[]; 9];
    let p0 = px.start;
    for p in px {
        let (oy, ox) = (p / wo, p % wo);
        {
            let out = &mut y[(p - p0) * c..][..c];
            if let Some(base) = interior(h, w, c, oy, ox) {
                // SAFETY: this function's contract; every tap of an interior pixel lies
                // inside `x` (`h·w·c` long) from `base`.
                unsafe { inner(x, base, w * c, out) };
                continue;
            }
            let nt = taps(h, w, c, x, oy, ox, &mut t);
            // SAFETY: this function's contract; every tap row and `out` hold `c` elements.
            unsafe { edge(&t[..nt], out) };
        }
    }
}

/// Where the 3×3 window of output pixel `(oy, ox)` starts (channel 0 of input pixel `(2oy −
/// 1, 2ox − 1)`), if all nine taps lie inside the `[h, w, c]` input.
#[inline]
fn interior(h: usize, w: usize, c: usize, oy: usize, ox: usize) -> Option<usize> {
    (oy >= 1 && ox >= 1 && 2 * oy + 1 < h && 2 * ox + 1 < w)
        .then(|| ((2 * oy - 1) * w + 2 * ox - 1) * c)
}

/// An interior window's taps after `(0, 0)` as `(row, column)`, in the reference's order
/// (row by row): [`pixel9`] and [`pixel9_f32`] fold them into the first.
const REST: [(usize, usize); 8] = [
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 1),
    (1, 2),
    (2, 0),
    (2, 1),
    (2, 2),
];

/// [`pixel`] for an interior pixel: its nine taps at fixed offsets from `base` (`row`
/// between window rows, `out.len()` between columns), no row list.
///
/// # Safety
/// AVX2 available; `out.len() ≥ 16`; `x` holds `base + 2·row + 3·out.len()` bytes.
#[target_feature(enable = "avx2")]
unsafe fn pixel9(x: &[i8], base: usize, row: usize, out: &mut [i8]) {
    let c = out.len();
    debug_assert!(c >= 16 && base + 2 * row + 3 * c <= x.len());
    let p = x[base..].as_ptr();
    let mut c0 = 0;
    while c0 < c {
        let at = c0.min(c - 16);
        // SAFETY: tap `(dy, dx)` reads `base + dy·row + dx·c + at .. + 16 ≤ base + 2·row +
        // 3c` bytes of `x`; `at + 16 ≤ c = out.len()`.
        unsafe {
            let ld = |dy: usize, dx: usize| _mm_loadu_si128(p.add(dy * row + dx * c + at).cast());
            let mut m = ld(0, 0);
            for (dy, dx) in REST {
                m = _mm_max_epi8(m, ld(dy, dx));
            }
            _mm_storeu_si128(out.as_mut_ptr().add(at).cast(), m);
        }
        c0 = at + 16;
    }
}

/// `out = max over rows`, 16 channels a step, the last step ending at `out.len()`.
///
/// # Safety
/// AVX2 available; `rows` not empty, `out.len() ≥ 16`, every row at least `out.len()` long.
#[target_feature(enable = "avx2")]
unsafe fn pixel(rows: &[&[i8]], out: &mut [i8]) {
    let c = out.len();
    debug_assert!(!rows.is_empty() && c >= 16 && rows.iter().all(|r| r.len() >= c));
    let mut c0 = 0;
    while c0 < c {
        let at = c0.min(c - 16);
        // SAFETY: `at + 16 ≤ c`, the length of `out` and of every row.
        unsafe {
            let mut m = _mm_loadu_si128(rows[0].as_ptr().add(at).cast());
            for r in &rows[1..] {
                m = _mm_max_epi8(m, _mm_loadu_si128(r.as_ptr().add(at).cast()));
            }
            _mm_storeu_si128(out.as_mut_ptr().add(at).cast(), m);
        }
        c0 = at + 16;
    }
}

/// Same contract and bits as `reference::maxpool::maxpool3x3s2::<f32>`.
pub(crate) fn maxpool3x3s2_f32(h: usize, w: usize, c: usize, x: &[f32], y: &mut [f32]) {
    if c < 8 {
        return refpool::maxpool3x3s2(h, w, c, x, y);
    }
    let n = Geom::out_dim(h, 3, 2, 1) * Geom::out_dim(w, 3, 2, 1);
    // SAFETY: only installed after AVX2 detection; `c ≥ 8`, as both pixel forms need.
    unsafe { walk(h, w, c, 0..n, x, y, pixel9_f32, pixel_f32) }
}

/// `out = rows[0]`, then `out = if v > out { v } else { out }` for each further row, 8
/// channels a step, the last step ending at `out.len()`.
///
/// # Safety
/// AVX2 available; `rows` not empty, `out.len() ≥ 8`, every row at least `out.len()` long.
#[target_feature(enable = "avx2")]
unsafe fn pixel_f32(rows: &[&[f32]], out: &mut [f32]) {
    let c = out.len();
    debug_assert!(!rows.is_empty() && c >= 8 && rows.iter().all(|r| r.len() >= c));
    let mut c0 = 0;
    while c0 < c {
        let at = c0.min(c - 8);
        // SAFETY: `at + 8 ≤ c`, the length of `out` and of every row.
        unsafe {
            let mut m = _mm256_loadu_ps(rows[0].as_ptr().add(at));
            for r in &rows[1..] {
                // `maxps(a, b)` is `a > b ? a : b` per lane: the reference's select.
                m = _mm256_max_ps(_mm256_loadu_ps(r.as_ptr().add(at)), m);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(at), m);
        }
        c0 = at + 8;
    }
}

/// [`pixel_f32`] for an interior pixel ([`pixel9`]'s offsets), the taps in the reference's
/// order.
///
/// # Safety
/// AVX2 available; `out.len() ≥ 8`; `x` holds `base + 2·row + 3·out.len()` values.
#[target_feature(enable = "avx2")]
unsafe fn pixel9_f32(x: &[f32], base: usize, row: usize, out: &mut [f32]) {
    let c = out.len();
    debug_assert!(c >= 8 && base + 2 * row + 3 * c <= x.len());
    let p = x[base..].as_ptr();
    let mut c0 = 0;
    while c0 < c {
        let at = c0.min(c - 8);
        // SAFETY: tap `(dy, dx)` reads `base + dy·row + dx·c + at .. + 8 ≤ base + 2·row + 3c`
        // values of `x`; `at + 8 ≤ c = out.len()`.
        unsafe {
            let ld = |dy: usize, dx: usize| _mm256_loadu_ps(p.add(dy * row + dx * c + at));
            let mut m = ld(0, 0);
            for (dy, dx) in REST {
                // `maxps(a, b)` is `a > b ? a : b` per lane: the reference's select.
                m = _mm256_max_ps(ld(dy, dx), m);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(at), m);
        }
        c0 = at + 8;
    }
}
