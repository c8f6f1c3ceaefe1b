//! The shape and storage rules of a bundle's manifests, stated once: [`Bundle::parse`] and
//! [`Dept::parse_blob`] run [`validate_manifest`] / [`validate_dept`], and the engine's
//! op preparation checks each op against the same rule functions ([`conv_shape_ok`],
//! [`maxpool_shape_ok`], [`concat_shape_ok`], [`out_dim`]) before it runs a kernel.
//!
//! Every length, offset and count read from the untrusted bytes goes through checked
//! arithmetic (or is bounded first): `usize` is 32 bits on the device.
//!
//! [`Bundle::parse`]: super::Bundle::parse
//! [`Dept::parse_blob`]: super::Dept::parse_blob

use super::layout;
use super::view::Dept;
use super::{
    DeltaDType, FormatError, Manifest, Mode, Op, Precision, Seq, Slice, TensorRef, ValueDesc, ALIGN,
};
use crate::quant::QParams;

/// Most activation values a graph may have (bounds the validator's work and stack).
pub const MAX_VALUES: usize = 1024;
/// Most ops a graph may have.
pub const MAX_OPS: usize = 1024;
/// Most named tensors in the shared manifest.
pub const MAX_TENSORS: usize = 4096;
/// Most departments in one bundle.
pub const MAX_DEPARTMENTS: usize = 1024;
/// Most classes of one department.
pub const MAX_CLASSES: usize = 65535;

type R<T> = Result<T, FormatError>;
use FormatError as E;

/// Output size along one axis of a `k`-wide window with `stride` and symmetric `pad`:
/// `(n + 2·pad − k) / stride + 1`; `None` when the window never fits or `stride` is 0.
pub const fn out_dim(n: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = match pad.checked_mul(2) {
        Some(p2) => match n.checked_add(p2) {
            Some(v) => v,
            None => return None,
        },
        None => return None,
    };
    if stride == 0 || padded < k {
        None
    } else {
        Some((padded - k) / stride + 1)
    }
}

/// The windows the kernels implement: `k = 1` with stride 1 and no padding, or `k = 3`
/// with padding 1 and stride 1 or 2.
pub const fn window_ok(k: usize, stride: usize, pad: usize) -> bool {
    match k {
        1 => stride == 1 && pad == 0,
        3 => pad == 1 && (stride == 1 || stride == 2),
        _ => false,
    }
}

/// Channels `s` are a non-empty range of `v`'s channels.
pub const fn slice_ok(v: &ValueDesc, s: &Slice) -> bool {
    s.c_len > 0 && s.c_off as usize + s.c_len as usize <= v.c as usize
}

/// `Conv` / `DwConv` (a depthwise conv has `cout = c_len`, `k = 3`, `pad = 1`): an allowed
/// window over a valid slice of `vin`, and `vout` is `[out_dim(h), out_dim(w), cout]`.
pub fn conv_shape_ok(
    vin: &ValueDesc,
    input: &Slice,
    vout: &ValueDesc,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> bool {
    window_ok(k, stride, pad)
        && slice_ok(vin, input)
        && vout.c as usize == cout
        && out_dim(vin.h as usize, k, stride, pad) == Some(vout.h as usize)
        && out_dim(vin.w as usize, k, stride, pad) == Some(vout.w as usize)
}

/// `MaxPool` (3×3, stride 2, pad 1): same channels, pooled spatial size.
pub fn maxpool_shape_ok(vin: &ValueDesc, vout: &ValueDesc) -> bool {
    vout.c == vin.c
        && out_dim(vin.h as usize, 3, 2, 1) == Some(vout.h as usize)
        && out_dim(vin.w as usize, 3, 2, 1) == Some(vout.w as usize)
}

/// `ConcatShuffle`: two valid slices of equal width and the output's spatial size, the
/// output holding both.
pub fn concat_shape_ok(
    va: &ValueDesc,
    a: &Slice,
    vb: &ValueDesc,
    b: &Slice,
    vout: &ValueDesc,
) -> bool {
    slice_ok(va, a)
        && slice_ok(vb, b)
        && a.c_len == b.c_len
        && vout.c as usize == 2 * a.c_len as usize
        && (va.h, va.w) == (vout.h, vout.w)
        && (vb.h, vb.w) == (vout.h, vout.w)
}

// Checked arithmetic helpers.

fn mul(a: usize, b: usize) -> R<usize> {
    a.checked_mul(b).ok_or(E::Overflow)
}
fn add(a: usize, b: usize) -> R<usize> {
    a.checked_add(b).ok_or(E::Overflow)
}

/// `t` lies inside `payload`, starts 16-aligned, and is exactly `len` bytes.
fn check_tref(t: &TensorRef, payload: &[u8], len: usize) -> R<()> {
    let start = t.offset as usize;
    let end = add(start, t.len as usize)?;
    if !start.is_multiple_of(ALIGN) || end > payload.len() || t.len as usize != len {
        return Err(E::TensorBounds);
    }
    Ok(())
}

/// The bytes of `t` in `payload` (empty when out of bounds; callers check `t` first).
fn tref_bytes<'b>(t: &TensorRef, payload: &'b [u8]) -> &'b [u8] {
    let start = t.offset as usize;
    start
        .checked_add(t.len as usize)
        .and_then(|end| payload.get(start..end))
        .unwrap_or(&[])
}

/// Little-endian f32s of a checked tensor.
fn f32s<'b>(t: &TensorRef, payload: &'b [u8]) -> impl Iterator<Item = f32> + 'b {
    tref_bytes(t, payload)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Bytes of one activation element in the arena.
fn act_elem(p: Precision) -> usize {
    match p {
        Precision::F32 => 4,
        Precision::Int8 => 1,
    }
}

fn value_bytes(v: &ValueDesc, elem: usize) -> R<usize> {
    mul(mul(mul(v.h as usize, v.w as usize)?, v.c as usize)?, elem)
}

/// A 1024-bit set for "value defined" bookkeeping without an allocator.
struct BitSet([u64; MAX_VALUES / 64]);
impl BitSet {
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Arena byte range of value `i` (values validated to fit).
fn value_range(values: &Seq<'_, ValueDesc>, i: usize, elem: usize) -> R<(usize, usize)> {
    let v = values.get(i).ok_or(E::ManifestIndex)?;
    let start = v.offset as usize;
    Ok((start, add(start, value_bytes(&v, elem)?)?))
}

/// Every value defined after `v` up to and including `out` must not overlap `v`'s bytes
/// (values are numbered in definition order, so these are exactly the values written
/// between `v`'s definition and this read).
fn check_live(values: &Seq<'_, ValueDesc>, v: usize, out: usize, elem: usize) -> R<()> {
    let rv = value_range(values, v, elem)?;
    for desc in values.iter().skip(v + 1).take(out.saturating_sub(v)) {
        let start = desc.offset as usize;
        let rw = (start, add(start, value_bytes(&desc, elem)?)?);
        if overlaps(rv, rw) {
            return Err(E::ArenaOverlap);
        }
    }
    Ok(())
}

fn slice_desc(values: &Seq<'_, ValueDesc>, s: &Slice, defined: &BitSet) -> R<ValueDesc> {
    let i = s.value as usize;
    if i >= values.len() || !defined.get(i) {
        return Err(E::ManifestIndex);
    }
    let v = values.get(i).ok_or(E::ManifestIndex)?;
    if !slice_ok(&v, s) {
        return Err(E::ManifestIndex);
    }
    Ok(v)
}

fn value_desc(values: &Seq<'_, ValueDesc>, i: u16, defined: &BitSet) -> R<ValueDesc> {
    slice_desc(
        values,
        &Slice {
            value: i,
            c_off: 0,
            c_len: 1,
        },
        defined,
    )
}

/// Checks a weight/bias/wscale triple of `cout` channels with `per_channel` weights each.
fn check_wbs(
    m: &Manifest<'_>,
    shared: &[u8],
    w: &TensorRef,
    b: &TensorRef,
    s: &TensorRef,
    cout: usize,
    per_channel: usize,
) -> R<()> {
    let welem = match m.precision {
        Precision::F32 => 4,
        Precision::Int8 => 1,
    };
    check_tref(w, shared, mul(mul(cout, per_channel)?, welem)?)?;
    check_tref(b, shared, mul(cout, 4)?)?;
    match m.precision {
        Precision::F32 => check_tref(s, shared, 0),
        Precision::Int8 => {
            check_tref(s, shared, mul(cout, 4)?)?;
            if f32s(s, shared).any(|x| !(x.is_finite() && x > 0.0)) {
                return Err(E::TensorValue);
            }
            Ok(())
        }
    }
}

/// Validates the shared manifest against the shared payload.
pub(super) fn validate_manifest(m: &Manifest<'_>, shared: &[u8]) -> R<()> {
    let (values, ops) = (m.values, m.ops);
    if values.len() > MAX_VALUES || ops.len() > MAX_OPS || m.tensors.len() > MAX_TENSORS {
        return Err(E::ManifestSeq);
    }
    values.validate().map_err(|_| E::ManifestSeq)?;
    ops.validate().map_err(|_| E::ManifestSeq)?;
    m.tensors.validate().map_err(|_| E::ManifestSeq)?;
    let elem = act_elem(m.precision);

    // Input spec and value 0 (the input image, NHWC).
    let inp = m.input;
    if !(1..=3).contains(&inp.channels) || inp.size == 0 || m.features == 0 {
        return Err(E::ManifestShape);
    }
    let v0 = values.get(0).ok_or(E::ManifestIndex)?;
    if (v0.h, v0.w, v0.c) != (inp.size, inp.size, inp.channels) {
        return Err(E::ManifestShape);
    }
    let act = m.arena.activation_bytes as usize;
    for v in values.iter() {
        if v.h == 0 || v.w == 0 || v.c == 0 || !(v.offset as usize).is_multiple_of(ALIGN) {
            return Err(E::ManifestValue);
        }
        if add(v.offset as usize, value_bytes(&v, elem)?)? > act {
            return Err(E::ManifestValue);
        }
    }

    // Ops: SSA in definition order, shapes, weights, liveness.
    let mut defined = BitSet([0; MAX_VALUES / 64]);
    defined.set(0);
    let mut next_value = 1usize;
    let mut next_expert = 0usize;
    let mut head_seen = false;
    let n_ops = ops.len();
    for (i, op) in ops.iter().enumerate() {
        if head_seen {
            return Err(E::ManifestHead);
        }
        // (inputs read, output written)
        let (reads, output): ([Option<u16>; 2], Option<u16>) = match op {
            Op::Conv {
                input,
                output,
                cout,
                k,
                stride,
                pad,
                weight,
                bias,
                wscale,
                expert,
                ..
            } => {
                let vi = slice_desc(&values, &input, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                let (k, stride, pad) = (k as usize, stride as usize, pad as usize);
                if !conv_shape_ok(&vi, &input, &vo, cout as usize, k, stride, pad) {
                    return Err(E::ManifestShape);
                }
                let per = mul(mul(input.c_len as usize, k)?, k)?;
                check_wbs(m, shared, &weight, &bias, &wscale, cout as usize, per)?;
                // Streaming scratch (`h·w·r` f32) must stay far from `usize` limits even on
                // 32-bit targets, so `layout::regions` cannot overflow while aligning.
                let lowrank = mul(mul(mul(vo.h as usize, vo.w as usize)?, m.rank as usize)?, 4)?;
                if lowrank > i32::MAX as usize {
                    return Err(E::ArenaTooSmall);
                }
                if let Some(e) = expert {
                    if e as usize != next_expert {
                        return Err(E::ManifestExperts);
                    }
                    next_expert += 1;
                }
                ([Some(input.value), None], Some(output))
            }
            Op::DwConv {
                input,
                output,
                stride,
                weight,
                bias,
                wscale,
                ..
            } => {
                let vi = slice_desc(&values, &input, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                if !conv_shape_ok(
                    &vi,
                    &input,
                    &vo,
                    input.c_len as usize,
                    3,
                    stride as usize,
                    1,
                ) {
                    return Err(E::ManifestShape);
                }
                check_wbs(m, shared, &weight, &bias, &wscale, input.c_len as usize, 9)?;
                ([Some(input.value), None], Some(output))
            }
            Op::MaxPool { input, output } => {
                let vi = value_desc(&values, input, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                if !maxpool_shape_ok(&vi, &vo) {
                    return Err(E::ManifestShape);
                }
                ([Some(input), None], Some(output))
            }
            Op::ConcatShuffle { a, b, output } => {
                let va = slice_desc(&values, &a, &defined)?;
                let vb = slice_desc(&values, &b, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                if !concat_shape_ok(&va, &a, &vb, &b, &vo) {
                    return Err(E::ManifestShape);
                }
                ([Some(a.value), Some(b.value)], Some(output))
            }
            Op::PoolHead { input } => {
                let vi = value_desc(&values, input, &defined)?;
                if vi.c != m.features || i + 1 != n_ops {
                    return Err(E::ManifestHead);
                }
                head_seen = true;
                ([Some(input), None], None)
            }
        };
        if let Some(out) = output {
            for r in reads.into_iter().flatten() {
                check_live(&values, r as usize, out as usize, elem)?;
            }
            defined.set(out as usize);
            next_value += 1;
        }
    }
    if !head_seen {
        return Err(E::ManifestHead);
    }
    if next_expert != m.experts as usize {
        return Err(E::ManifestExperts);
    }

    for t in m.tensors.iter() {
        if t.rank as usize > 4 {
            return Err(E::TensorBounds);
        }
        let mut n = t.dtype.size();
        for &d in &t.dims[..t.rank as usize] {
            n = mul(n, d as usize)?;
        }
        check_tref(&t.data, shared, n)?;
    }

    // Arena totals: activations, then the engine's regions (`layout::regions`, whose
    // arithmetic is checked; the geometry checked above keeps its unchecked products small).
    for (mode, total) in [
        (Mode::Materialized, m.arena.materialized_bytes),
        (Mode::Streaming, m.arena.streaming_bytes),
    ] {
        let need = layout::regions(m, mode).ok_or(E::Overflow)?.total;
        if (total as usize) < need {
            return Err(E::ArenaTooSmall);
        }
    }
    Ok(())
}

/// The output value of the next op must be the next undefined value (definition order).
fn out_desc(values: &Seq<'_, ValueDesc>, out: u16, next_value: usize) -> R<ValueDesc> {
    if out as usize != next_value {
        return Err(E::ManifestIndex);
    }
    values.get(out as usize).ok_or(E::ManifestIndex)
}

/// Validates a department manifest and payload against the shared graph.
pub(super) fn validate_dept(d: &Dept<'_>, m: &Manifest<'_>) -> R<()> {
    let dm = &d.manifest;
    let p = d.payload;
    if dm.name.is_empty() || dm.name.len() > 255 {
        return Err(E::DeptShape);
    }
    let classes = dm.classes.len();
    if classes == 0 || classes > MAX_CLASSES {
        return Err(E::DeptShape);
    }
    dm.classes.validate().map_err(|_| E::ManifestSeq)?;
    if dm.deltas.len() != m.experts as usize {
        return Err(E::DeptShape);
    }
    dm.deltas.validate().map_err(|_| E::ManifestSeq)?;
    let r = m.rank as usize;
    let mut deltas = dm.deltas.iter();
    for op in m.ops.iter() {
        if let Op::Conv {
            input,
            cout,
            k,
            expert: Some(_),
            ..
        } = op
        {
            let k = k as usize;
            let dr = deltas.next().ok_or(E::DeptShape)?;
            let rk = mul(r, k)?;
            let (ar, ac) = (rk, mul(input.c_len as usize, k)?);
            let (br, bc) = (mul(cout as usize, k)?, rk);
            let alen = super::factor::factor_bytes(dm.delta_dtype, ar, ac).ok_or(E::Overflow)?;
            let blen = super::factor::factor_bytes(dm.delta_dtype, br, bc).ok_or(E::Overflow)?;
            check_tref(&dr.a, p, alen).map_err(|_| E::DeptShape)?;
            check_tref(&dr.b, p, blen).map_err(|_| E::DeptShape)?;
            if dm.delta_dtype == DeltaDType::I8 {
                for (t, rows, cols) in [(dr.a, ar, ac), (dr.b, br, bc)] {
                    // The row scales: the last `2·rows` bytes (the length was checked above).
                    let b = tref_bytes(&t, p);
                    let b = b.get(mul(rows, cols)?..).unwrap_or(&[]);
                    let bad = b.chunks_exact(2).any(|c| {
                        let x = half::f16::from_le_bytes([c[0], c[1]]);
                        !(x.is_finite() && x.to_f32() >= 0.0)
                    });
                    if bad {
                        return Err(E::TensorValue);
                    }
                }
            }
        }
    }
    let features = m.features as usize;
    check_tref(&dm.head_weight, p, mul(mul(classes, features)?, 4)?).map_err(|_| E::DeptShape)?;
    check_tref(&dm.head_bias, p, mul(classes, 4)?).map_err(|_| E::DeptShape)?;
    match m.precision {
        Precision::F32 => check_tref(&dm.act_qparams, p, 0).map_err(|_| E::DeptShape)?,
        Precision::Int8 => {
            let t = dm.act_qparams;
            check_tref(&t, p, mul(m.values.len(), 8)?).map_err(|_| E::DeptShape)?;
            for c in tref_bytes(&t, p).chunks_exact(8) {
                let q = QParams::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                let (s, zp) = (q.scale, q.zero_point);
                if !s.is_finite() || s <= 0.0 || !(-128..=127).contains(&zp) {
                    return Err(E::TensorValue);
                }
            }
        }
    }
    Ok(())
}
