//! Max pool 3x3, stride 2, padding 1 (padding never wins), over a dense NHWC `[h, w, c]`.

/// Generic over the element (`f32` or `i8`: int8 max pool works on the codes, which is exact
/// when input and output share quantisation; the engine rescales otherwise).
pub fn maxpool3x3s2<T: Copy + PartialOrd>(h: usize, w: usize, c: usize, x: &[T], y: &mut [T]) {
    let ho = crate::kernels::Geom::out_dim(h, 3, 2, 1);
    let wo = crate::kernels::Geom::out_dim(w, 3, 2, 1);
    for oy in 0..ho {
        for ox in 0..wo {
            let out = &mut y[(oy * wo + ox) * c..][..c];
            let mut first = true;
            for ky in 0..3 {
                let Some(iy) = crate::kernels::Geom::tap(oy, ky, 2, 1, h) else {
                    continue;
                };
                for kx in 0..3 {
                    let Some(ix) = crate::kernels::Geom::tap(ox, kx, 2, 1, w) else {
                        continue;
                    };
                    let px = &x[(iy * w + ix) * c..][..c];
                    if first {
                        out.copy_from_slice(px);
                        first = false;
                    } else {
                        for (o, &v) in out.iter_mut().zip(px) {
                            // A select, not a conditional store, so it vectorises.
                            *o = if v > *o { v } else { *o };
                        }
                    }
                }
            }
        }
    }
}
