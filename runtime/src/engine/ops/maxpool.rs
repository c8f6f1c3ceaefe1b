//! `Op::MaxPool`: 3×3, stride 2, padding 1.

use super::{f32s, f32s_mut, i8s, i8s_mut, io, rescale, Ctx, R};
use crate::engine::EngineError;
use crate::format::{validate, Op};
use crate::kernels::Geom;

/// Runs op `i`, a `MaxPool`.
pub(in crate::engine) fn eval(cx: &mut Ctx<'_, '_>, i: usize, op: &Op) -> R<()> {
    let bad = EngineError::Malformed { op: i };
    let Op::MaxPool { input, output } = *op else {
        return Err(bad);
    };
    let (vin, vout) = (cx.value(input, i)?, cx.value(output, i)?);
    if !validate::maxpool_shape_ok(&vin, &vout) {
        return Err(bad);
    }
    let q = cx.io_qparams(input, output, i)?;
    let (h, w, c) = (vin.h as usize, vin.w as usize, vin.c as usize);
    let (rin, rout) = (cx.range(&vin, i)?, cx.range(&vout, i)?);
    let (y, [x]) = io(cx.act, rout, [rin], i)?;
    let row = Geom::out_dim(w, 3, 2, 1) * c;
    let n = Geom::out_dim(h, 3, 2, 1) * row;
    // Nine compares an output, split by output rows across the engine's threads.
    match q {
        Some((qx, qy)) => {
            let (x, y) = (i8s(x), i8s_mut(y).get_mut(..n).ok_or(bad)?);
            let (pool, px, par) = (cx.kern.maxpool_i8, cx.kern.maxpool_i8_pixels, cx.par);
            par.rows(y, row, 9 * n, |r0, y| {
                // Dequantisation is monotonic, so the max of the codes is the code of the max.
                match px {
                    // The part's pixels alone (no row early, nothing copied).
                    Some(px) => px(h, w, c, r0 * row / c..(r0 * row + y.len()) / c, x, y),
                    None => rows(par, |h, x, y| pool(h, w, c, x, y), (h, w, c), x, r0, y),
                }
                rescale(y, qx, qy);
            });
        }
        None => {
            let (x, y) = (f32s(x)?, f32s_mut(y)?.get_mut(..n).ok_or(bad)?);
            let (pool, par) = (cx.kern.maxpool_f32, cx.par);
            par.rows(y, row, 9 * n, |r0, y| {
                rows(par, |h, x, y| pool(h, w, c, x, y), (h, w, c), x, r0, y)
            });
            (cx.observe)(output as usize, y);
        }
    }
    Ok(())
}

/// Output rows `r0 ..` (as many as `y` holds) of the max pool of the `[h, w, c]` input `x`,
/// through `pool(rows, x, y)` (the whole pool of a `[rows, w, c]` input): a k×k conv's row
/// cut ([`crate::engine::par::row_part`]), so every kept row sees the whole pool's taps; a
/// part's early rows go to `par`'s scratch.
fn rows<T: bytemuck::Pod>(
    par: crate::engine::par::Par<'_>,
    pool: impl Fn(usize, &[T], &mut [T]),
    (h, w, c): (usize, usize, usize),
    x: &[T],
    r0: usize,
    y: &mut [T],
) {
    let out = |n| Geom::out_dim(n, 3, 2, 1);
    let row = out(w) * c;
    let n = y.len() / row.max(1);
    let (k, stride, pad) = (3, 2, 1);
    let (ho, wo) = (out(h), out(w));
    let g = Geom {
        h,
        w,
        in_stride: c,
        c_off: 0,
        cin: c,
        ho,
        wo,
        cout: c,
        k,
        stride,
        pad,
    };
    let (sub, x0, lead) = crate::engine::par::row_part(&g, r0, n);
    let x = &x[x0..];
    // The kernel derives its output rows from its input's: more than `lead + n` where the
    // window stops short of the image's bottom (the extra rows are dropped too).
    let ho = out(sub.h);
    if lead == 0 && ho == n {
        return pool(sub.h, x, y);
    }
    // A part of a split (the whole pool is the case above).
    #[cfg(feature = "threads")]
    par.scratch(ho * row, |out: &mut [T]| {
        pool(sub.h, x, out);
        y.copy_from_slice(&out[lead * row..][..n * row]);
    });
    #[cfg(not(feature = "threads"))]
    {
        let _ = par;
        unreachable!("a max pool runs whole without threads");
    }
}
