//! `Op::PoolHead`: global average pool to the feature vector, then the department's linear
//! head into the logits. Always the last op.

use super::{expect_len, f32s, f32s_mut, i8s, tensor, Ctx, R};
use crate::engine::EngineError;
use crate::format::Op;
use crate::kernels::reference as k;

/// Runs op `i`, the `PoolHead`; writes `logits[..classes]` and returns `classes`.
pub(in crate::engine) fn eval(
    cx: &mut Ctx<'_, '_>,
    i: usize,
    op: &Op,
    logits: &mut [f32],
) -> R<usize> {
    let bad = EngineError::Malformed { op: i };
    let Op::PoolHead { input } = *op else {
        return Err(bad);
    };
    let vin = cx.value(input, i)?;
    let f = cx.m.features as usize;
    if vin.c as usize != f {
        return Err(bad);
    }
    let hw = vin.h as usize * vin.w as usize;
    let q = if cx.int8 {
        Some(cx.qparams(input, i)?)
    } else {
        None
    };
    let rin = cx.range(&vin, i)?;
    let x = cx.act.get(rin).ok_or(bad)?;
    // The requant scratch's bytes: idle from here on (`layout::Regions::requant`).
    let feat = f32s_mut(cx.requant)?.get_mut(..f).ok_or(bad)?;
    match q {
        Some(qp) => (cx.kern.gap_i8)(hw, f, i8s(x), qp, feat),
        None => k::gap::gap_f32(hw, f, f32s(x)?, feat),
    }
    let dept = cx.dept;
    let classes = dept.classes();
    let head = |t, n| {
        expect_len(f32s(tensor(dept.payload, t, i)?)?, n, i).map_err(|_| EngineError::DeptMismatch)
    };
    let hw_ = head(dept.manifest.head_weight, classes * f)?;
    let hb = head(dept.manifest.head_bias, classes)?;
    (cx.kern.linear_f32)(feat, hw_, hb, logits.get_mut(..classes).ok_or(bad)?);
    Ok(classes)
}
