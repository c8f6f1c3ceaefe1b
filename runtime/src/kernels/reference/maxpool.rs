//! Max pool 3x3, stride 2, padding 1 (padding never wins), over a dense NHWC `[h, w, c]`.

/// Generic over the element (`f32` or `i8`: int8 max pool works on the codes, which is exact
/// when input and output share quantisation; the engine rescales otherwise).
pub fn maxpool3x3s2<T: Copy + PartialOrd>(h: usize, w: usize, c: usize, x: &[T], y: &mut [T]) {
    let ho = crate::kernels::Geom::out_dim(h, 3, 2, 1);
    let wo = crate::kernels::Geom::out_dim(w, 3, 2, 1);
    maxpool3x3s2_pixels(h, w, c, 0..ho * wo, x, y)
}

/// [`maxpool3x3s2`]'s output pixels `pixels` (row-major) alone, into `y` from its start (`x`
/// the whole input): a thread's share.
pub fn maxpool3x3s2_pixels<T: Copy + PartialOrd>(
    h: usize,
    w: usize,
    c: usize,
    pixels: core::ops::Range<usize>,
    x: &[T],
    y: &mut [T],
) {
    let wo = crate::kernels::Geom::out_dim(w, 3, 2, 1);
    let mut t: [&[T]; 9] = [&[]; 9];
    let p0 = pixels.start;
    for p in pixels {
        let (oy, ox) = (p / wo, p % wo);
        {
            let nt = taps(h, w, c, x, oy, ox, &mut t);
            let out = &mut y[(p - p0) * c..][..c];
            if let Some((first, rest)) = t[..nt].split_first() {
                out.copy_from_slice(first);
                for px in rest {
                    for (o, &v) in out.iter_mut().zip(*px) {
                        // A select, not a conditional store, so it vectorises.
                        *o = if v > *o { v } else { *o };
                    }
                }
            }
        }
    }
}

/// The rows (`c` long) of the taps of output pixel `(oy, ox)` that fall inside the `[h, w,
/// c]` input, in the reference's order; returns how many (at least 1: the centre tap
/// `(2·oy, 2·ox)` is always inside). The SIMD twins' per-pixel setup.
#[inline]
pub(crate) fn taps<'x, T>(
    h: usize,
    w: usize,
    c: usize,
    x: &'x [T],
    oy: usize,
    ox: usize,
    t: &mut [&'x [T]; 9],
) -> usize {
    let mut nt = 0;
    for ky in 0..3 {
        let Some(iy) = crate::kernels::Geom::tap(oy, ky, 2, 1, h) else {
            continue;
        };
        for kx in 0..3 {
            let Some(ix) = crate::kernels::Geom::tap(ox, kx, 2, 1, w) else {
                continue;
            };
            t[nt] = &x[(iy * w + ix) * c..][..c];
            nt += 1;
        }
    }
    nt
}
