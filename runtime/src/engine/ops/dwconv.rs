//! `Op::DwConv`: depthwise 3×3 convolution (shared by every department), BN folded,
//! optional ReLU; weights `[3, 3, C]`.
//!
//! With threads, an int8 depthwise conv runs in the parts of the pointwise conv that reads
//! it ([`Prepared`], [`crate::engine::par::Pre`]; `ops::conv::eval` decides).

use core::ops::Range;

use super::{
    conv_geom, expect_len, f32s, f32s_mut, i8s, i8s_mut, io, op_requant, out_q, tensor, Ctx, R,
};
use crate::engine::par::Pre;
use crate::engine::EngineError;
use crate::format::Op;
use crate::kernels::Geom;
use crate::quant::QParams;

/// A `DwConv` checked and ready to run: geometry, tensors, quantisation, arena ranges.
pub(in crate::engine) struct Prepared<'s> {
    pub op: usize,
    pub output: u16,
    pub g: Geom,
    /// Arena byte ranges of its input and output.
    pub rin: Range<usize>,
    pub rout: Range<usize>,
    relu: bool,
    bias: &'s [f32],
    /// Weights (int8 codes or f32 bytes) and, int8, their scales and the input's and
    /// output's quantisation.
    w: &'s [u8],
    int8: Option<(&'s [f32], QParams, QParams)>,
}

/// Checks op `i`, a `DwConv`.
pub(in crate::engine) fn prepare<'s>(cx: &Ctx<'_, 's>, i: usize, op: &Op) -> R<Prepared<'s>> {
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
    let w = tensor(shared, weight, i)?;
    let int8 = match cx.io_qparams(input.value, output, i)? {
        Some((qx, qy)) => {
            expect_len(i8s(w), 9 * c, i)?;
            let ws = expect_len(f32s(tensor(shared, wscale, i)?)?, c, i)?;
            Some((ws, qx, qy))
        }
        None => {
            expect_len(f32s(w)?, 9 * c, i)?;
            None
        }
    };
    Ok(Prepared {
        op: i,
        output,
        g,
        rin: cx.range(&vin, i)?,
        rout: cx.range(&vout, i)?,
        relu,
        bias,
        w,
        int8,
    })
}

/// Runs op `i`, a `DwConv`, on its own.
pub(in crate::engine) fn eval(cx: &mut Ctx<'_, '_>, i: usize, op: &Op) -> R<()> {
    run(cx, &prepare(cx, i, op)?)
}

/// Runs `d` on its own.
pub(in crate::engine) fn run(cx: &mut Ctx<'_, '_>, d: &Prepared<'_>) -> R<()> {
    let i = d.op;
    let (y, [x]) = io(cx.act, d.rout.clone(), [d.rin.clone()], i)?;
    let kern = cx.kern;
    match d.int8 {
        Some((ws, qx, qy)) => {
            let (rq, folded) = op_requant(&mut cx.rq, cx.requant, d.bias, qx, ws, qy, i)?;
            if folded {
                // Only pointwise convs' tables take in the zero point.
                return Err(EngineError::Malformed { op: i });
            }
            cx.par.conv_i8(
                kern.dwconv3x3_i8,
                (true, kern.dwconv3x3_i8_pixels),
                &d.g,
                i8s(x),
                qx.zero_point,
                i8s(d.w),
                rq,
                out_q(qy, d.relu),
                i8s_mut(y),
                None,
            );
        }
        None => {
            let y = f32s_mut(y)?;
            (cx.par).conv_f32(
                kern.dwconv3x3_f32,
                kern.pix_align_f32,
                true,
                &d.g,
                f32s(x)?,
                f32s(d.w)?,
                d.bias,
                d.relu,
                y,
                None,
            );
            (cx.observe)(d.output as usize, y);
        }
    }
    Ok(())
}

impl<'s> Prepared<'s> {
    /// Bytes of the requantisation table [`Prepared::pre_i8`] needs of the `requant` region.
    pub fn table_bytes(&self) -> usize {
        12 * self.g.cout
    }

    /// int8: `d` to run in the parts of the pointwise conv that reads `y` (its output),
    /// on input `x`, its table in `requant` (at least [`Prepared::table_bytes`]); `None`
    /// for an f32 op. Call before the conv's own table is fetched (the cache is read in
    /// graph order).
    pub fn pre_i8<'a, 'c: 'a>(
        &'a self,
        cache: &mut super::RqCache<'c>,
        requant: &'a mut [u8],
        x: &'a [u8],
        y: &'a mut [u8],
    ) -> R<Option<Pre<'a>>>
    where
        's: 'a,
    {
        let Some((ws, qx, qy)) = self.int8 else {
            return Ok(None);
        };
        let (rq, folded) = op_requant(cache, requant, self.bias, qx, ws, qy, self.op)?;
        if folded {
            return Err(EngineError::Malformed { op: self.op });
        }
        Ok(Some(Pre {
            g: self.g,
            x: i8s(x),
            zx: qx.zero_point,
            w: i8s(self.w),
            rq,
            q: out_q(qy, self.relu),
            y: i8s_mut(y),
        }))
    }
}
