//! `Op::ConcatShuffle`: `concat(a, b)` then channel shuffle with 2 groups
//! (`out[2i] = a[i]`, `out[2i+1] = b[i]`); int8 inputs are rescaled to the output's
//! quantisation on the way.

use super::{f32s, f32s_mut, i8s, i8s_mut, io, rescale_into, rescale_one, rescale_table, Ctx, R};
use crate::engine::EngineError;
use crate::format::{validate, Op};
use crate::kernels::reference as k;
use k::concat_shuffle::ConcatIn;

/// Runs op `i`, a `ConcatShuffle`.
pub(in crate::engine) fn eval(cx: &mut Ctx<'_, '_>, i: usize, op: &Op) -> R<()> {
    let bad = EngineError::Malformed { op: i };
    let Op::ConcatShuffle { a, b, output } = *op else {
        return Err(bad);
    };
    let (va, vb, vout) = (
        cx.value(a.value, i)?,
        cx.value(b.value, i)?,
        cx.value(output, i)?,
    );
    if !validate::concat_shape_ok(&va, &a, &vb, &b, &vout) {
        return Err(bad);
    }
    let q = if cx.int8 {
        Some((
            cx.qparams(a.value, i)?,
            cx.qparams(b.value, i)?,
            cx.qparams(output, i)?,
        ))
    } else {
        None
    };
    let (c, n) = (a.c_len as usize, vout.h as usize * vout.w as usize);
    let (ao, bo) = (a.c_off as usize, b.c_off as usize);
    let (sa, sb) = (va.c as usize, vb.c as usize);
    let (ra, rb, rout) = (cx.range(&va, i)?, cx.range(&vb, i)?, cx.range(&vout, i)?);
    let (y, [xa, xb]) = io(cx.act, rout, [ra, rb], i)?;
    match q {
        Some((qa, qb, qy)) => {
            let y = i8s_mut(y).get_mut(..n * 2 * c).ok_or(bad)?;
            let (xa, xb) = (i8s(xa), i8s(xb));
            let (kern, same) = (cx.kern.concat_shuffle_i8, qa == qy && qb == qy);
            // Decided for the whole op, so a split runs the same form in every part.
            let table = !same && n * c > 256;
            let run = |p0: usize, y: &mut [i8]| {
                let n = y.len() / (2 * c);
                let (xa, xb) = (&xa[p0 * sa..], &xb[p0 * sb..]);
                let side = |x, stride, off, q| ConcatIn { x, stride, off, q };
                let (ia, ib) = (side(xa, sa, ao, qa), side(xb, sb, bo, qb));
                if kern.is_some_and(|f| f(n, c, ia, ib, qy, y)) {
                    return;
                }
                if same {
                    k::concat_shuffle::concat_shuffle(n, c, xa, sa, ao, xb, sb, bo, y);
                } else if table {
                    // Each code through a 256-entry table of `rescale_one`, in the copy itself
                    // (built per part: a few hundred values against thousands of codes).
                    let (ta, tb) = (rescale_table(qa, qy), rescale_table(qb, qy));
                    let (fa, fb) = (|v: i8| ta[v as u8 as usize], |v: i8| tb[v as u8 as usize]);
                    interleave_each(n, c, xa, sa, ao, xb, sb, bo, y, fa, fb);
                } else if cfg!(target_arch = "x86_64") {
                    // Fewer codes a side than a table has entries: rescale them directly, a
                    // block of a pixel's channels at a time (vectorised).
                    let f = |q| move |x: &[i8], o: &mut [i8]| rescale_into(x, q, qy, o);
                    interleave(n, c, xa, sa, ao, xb, sb, bo, y, f(qa), f(qb));
                } else {
                    // The same, one code at a time straight into `y` (no block pass: Cortex-M
                    // counts fewer instructions so).
                    let f = |q| move |v| rescale_one(v, q, qy);
                    interleave_each(n, c, xa, sa, ao, xb, sb, bo, y, f(qa), f(qb));
                }
            };
            // A copy with a rescale: a few operations a byte.
            cx.par.rows(y, 2 * c, 4 * y.len(), run);
        }
        None => {
            let y = f32s_mut(y)?.get_mut(..n * 2 * c).ok_or(bad)?;
            let (xa, xb) = (f32s(xa)?, f32s(xb)?);
            cx.par.rows(y, 2 * c, 4 * y.len(), |p0, y| {
                let (xa, xb, n) = (&xa[p0 * sa..], &xb[p0 * sb..], y.len() / (2 * c));
                k::concat_shuffle::concat_shuffle(n, c, xa, sa, ao, xb, sb, bo, y)
            });
            (cx.observe)(output as usize, y);
        }
    }
    Ok(())
}

/// [`k::concat_shuffle::concat_shuffle`] with each side's codes mapped on the way
/// (`y[p, 2i] = fa(a[p, i])`, `y[p, 2i+1] = fb(b[p, i])`, a pixel's channels in blocks of
/// [`BLK`]): one pass instead of a copy and a rescale pass over `y`.
#[allow(clippy::too_many_arguments)]
fn interleave(
    n: usize,
    c: usize,
    a: &[i8],
    a_stride: usize,
    a_off: usize,
    b: &[i8],
    b_stride: usize,
    b_off: usize,
    y: &mut [i8],
    fa: impl Fn(&[i8], &mut [i8]),
    fb: impl Fn(&[i8], &mut [i8]),
) {
    const BLK: usize = 64;
    let (mut ma, mut mb) = ([0i8; BLK], [0i8; BLK]);
    for (p, out) in y.chunks_exact_mut(2 * c).take(n).enumerate() {
        let pa = &a[p * a_stride + a_off..][..c];
        let pb = &b[p * b_stride + b_off..][..c];
        for ((out, xa), xb) in out
            .chunks_mut(2 * BLK)
            .zip(pa.chunks(BLK))
            .zip(pb.chunks(BLK))
        {
            let m = xa.len();
            fa(xa, &mut ma[..m]);
            fb(xb, &mut mb[..m]);
            let pairs = out.as_chunks_mut::<2>().0.iter_mut();
            for ((o, &va), &vb) in pairs.zip(&ma[..m]).zip(&mb[..m]) {
                *o = [va, vb];
            }
        }
    }
}

/// [`k::concat_shuffle::concat_shuffle`] with each element mapped on the way
/// (`y[p, 2i] = fa(a[p, i])`, `y[p, 2i+1] = fb(b[p, i])`): one pass instead of a copy and
/// a rescale pass over `y`.
#[allow(clippy::too_many_arguments)]
fn interleave_each(
    n: usize,
    c: usize,
    a: &[i8],
    a_stride: usize,
    a_off: usize,
    b: &[i8],
    b_stride: usize,
    b_off: usize,
    y: &mut [i8],
    fa: impl Fn(i8) -> i8,
    fb: impl Fn(i8) -> i8,
) {
    for (p, out) in y.chunks_exact_mut(2 * c).take(n).enumerate() {
        let pa = &a[p * a_stride + a_off..][..c];
        let pb = &b[p * b_stride + b_off..][..c];
        for ((o, &va), &vb) in out.as_chunks_mut::<2>().0.iter_mut().zip(pa).zip(pb) {
            *o = [fa(va), fb(vb)];
        }
    }
}
