//! `Op::ConcatShuffle`: `concat(a, b)` then channel shuffle with 2 groups
//! (`out[2i] = a[i]`, `out[2i+1] = b[i]`); int8 inputs are rescaled to the output's
//! quantisation on the way.

use super::{f32s, f32s_mut, i8s, i8s_mut, io, rescale_table, Ctx, R};
use crate::engine::EngineError;
use crate::format::{validate, Op};
use crate::kernels::reference as k;

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
            let y = i8s_mut(y);
            k::concat_shuffle::concat_shuffle(n, c, i8s(xa), sa, ao, i8s(xb), sb, bo, y);
            if qa != qy || qb != qy {
                let (ta, tb) = (rescale_table(qa, qy), rescale_table(qb, qy));
                for pair in y.chunks_exact_mut(2) {
                    pair[0] = ta[pair[0] as u8 as usize];
                    pair[1] = tb[pair[1] as u8 as usize];
                }
            }
        }
        None => {
            let y = f32s_mut(y)?;
            k::concat_shuffle::concat_shuffle(n, c, f32s(xa)?, sa, ao, f32s(xb)?, sb, bo, y);
            (cx.observe)(output as usize, y);
        }
    }
    Ok(())
}
