//! `Op::MaxPool`: 3×3, stride 2, padding 1.

use super::{f32s, f32s_mut, i8s, i8s_mut, io, rescale, Ctx, R};
use crate::engine::EngineError;
use crate::format::{validate, Op};
use crate::kernels::reference as k;

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
    match q {
        Some((qx, qy)) => {
            let y = i8s_mut(y);
            // Dequantisation is monotonic, so the max of the codes is the code of the max.
            (cx.kern.maxpool_i8)(h, w, c, i8s(x), y);
            rescale(y, qx, qy);
        }
        None => {
            let y = f32s_mut(y)?;
            k::maxpool::maxpool3x3s2(h, w, c, f32s(x)?, y);
            (cx.observe)(output as usize, y);
        }
    }
    Ok(())
}
