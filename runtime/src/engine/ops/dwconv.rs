//! `Op::DwConv`: depthwise 3×3 convolution (shared by every department), BN folded,
//! optional ReLU; weights `[3, 3, C]`.

use super::{
    conv_geom, expect_len, f32s, f32s_mut, i8s, i8s_mut, io, op_requant, out_q, tensor, Ctx, R,
};
use crate::engine::EngineError;
use crate::format::Op;

/// Runs op `i`, a `DwConv`.
pub(in crate::engine) fn eval(cx: &mut Ctx<'_, '_>, i: usize, op: &Op) -> R<()> {
    let Op::DwConv {
        input,
        output,
        stride,
        relu,
        weight,
        bias,
        wscale,
    } = *op
    else {
        return Err(EngineError::Malformed { op: i });
    };
    let (vin, vout) = (cx.value(input.value, i)?, cx.value(output, i)?);
    let c = input.c_len as usize;
    let g = conv_geom(&vin, &input, &vout, c, 3, stride as usize, 1, i)?;
    let shared = cx.shared;
    let bias = expect_len(f32s(tensor(shared, bias, i)?)?, c, i)?;
    let q = cx.io_qparams(input.value, output, i)?;
    let (rin, rout) = (cx.range(&vin, i)?, cx.range(&vout, i)?);
    let (y, [x]) = io(cx.act, rout, [rin], i)?;
    let kern = cx.kern;
    match q {
        Some((qx, qy)) => {
            let w = expect_len(i8s(tensor(shared, weight, i)?), 9 * c, i)?;
            let ws = expect_len(f32s(tensor(shared, wscale, i)?)?, c, i)?;
            let (rq, folded) = op_requant(&mut cx.rq, cx.requant, bias, qx, ws, qy, i)?;
            if folded {
                // Only pointwise convs' tables take in the zero point.
                return Err(EngineError::Malformed { op: i });
            }
            cx.par.conv_i8(
                kern.dwconv3x3_i8,
                (true, kern.dwconv3x3_i8_rows),
                &g,
                i8s(x),
                qx.zero_point,
                w,
                rq,
                out_q(qy, relu),
                i8s_mut(y),
                None,
            );
        }
        None => {
            let w = expect_len(f32s(tensor(shared, weight, i)?)?, 9 * c, i)?;
            let y = f32s_mut(y)?;
            let x = f32s(x)?;
            (cx.par).conv_f32(
                kern.dwconv3x3_f32,
                kern.pix_align_f32,
                true,
                &g,
                x,
                w,
                bias,
                relu,
                y,
                None,
            );
            (cx.observe)(output as usize, y);
        }
    }
    Ok(())
}
