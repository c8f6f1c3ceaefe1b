//! The inference engine: department switch and op execution over a caller-owned arena.
//!
//! `Engine::new` carves the arena by [`layout::regions`]; `select` makes a department
//! current (Materialized: rebuilds every expert conv's weight `W0 + B_t·A_t` into the arena,
//! see [`crate::switch`]); `infer` runs the graph: NHWC values at their planned arena
//! offsets, ops in order, the department's head last.
//!
//! The bundle is validated by `Bundle::parse`; the engine still slices with checks (an
//! inconsistency gives [`EngineError::Malformed`], never a panic), which costs a few
//! comparisons per op. Shared weights are read in place, so the bundle bytes and the arena
//! must be 16-aligned in memory (see `AlignedBytes` under `std`).
#![deny(unsafe_code)]

#[cfg(feature = "std")]
pub mod testnet;
#[cfg(feature = "std")]
pub use crate::aligned::AlignedBytes;

use core::ops::Range;

use crate::format::{
    Bundle, DeltaRef, Dept, Manifest, Mode, Op, Precision, Seq, SeqIter, Slice, TensorRef,
};
use crate::kernels::{reference as k, Geom, Kernels, OutQ};
use crate::quant::{ChannelRequant, QParams};
use crate::switch::{self, Delta};
use crate::format::layout::{self, Regions};

#[cfg(target_endian = "big")]
compile_error!("lorkd-runtime reads little-endian tensors in place");

/// Why the engine refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The arena is smaller than `bundle.arena_bytes(mode)`.
    ArenaTooSmall { needed: usize, got: usize },
    /// The arena or the bundle bytes do not start 16-aligned in memory.
    Misaligned,
    /// `select` of a department index the bundle does not have.
    UnknownDepartment { index: usize, count: usize },
    /// `infer` before any successful `select`.
    NoDepartment,
    /// The input has the wrong number of elements (`channels · size · size`).
    InputSize { expected: usize, got: usize },
    /// The logits buffer is shorter than the department's class count.
    LogitsSize { needed: usize, got: usize },
    /// Op `op` (or, for `usize::MAX`, the graph as a whole) does not fit its tensors.
    Malformed { op: usize },
    /// The department's deltas or head do not fit this bundle's graph.
    DeptMismatch,
}

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EngineError::ArenaTooSmall { needed, got } => {
                write!(f, "arena too small: needs {needed} bytes, got {got}")
            }
            EngineError::Misaligned => {
                f.write_str("arena or bundle bytes not 16-byte aligned in memory")
            }
            EngineError::UnknownDepartment { index, count } => {
                write!(f, "unknown department {index} (bundle has {count})")
            }
            EngineError::NoDepartment => f.write_str("no department selected"),
            EngineError::InputSize { expected, got } => {
                write!(f, "input has {got} elements, the model expects {expected}")
            }
            EngineError::LogitsSize { needed, got } => {
                write!(
                    f,
                    "logits buffer holds {got}, the department has {needed} classes"
                )
            }
            EngineError::Malformed { op } => write!(f, "op {op} does not fit its tensors"),
            EngineError::DeptMismatch => f.write_str("department deltas do not fit the graph"),
        }
    }
}

impl core::error::Error for EngineError {}

type R<T> = Result<T, EngineError>;

/// A value as the engine sees it (decoded once into the arena's value table).
#[derive(Clone, Copy, Debug)]
struct Val {
    h: usize,
    w: usize,
    c: usize,
    offset: usize,
}

/// Runs one bundle's graph for one department at a time over a caller-owned arena.
pub struct Engine<'b, 'a> {
    bundle: &'b Bundle<'a>,
    arena: &'b mut [u8],
    mode: Mode,
    reg: Regions,
    dept: Option<Dept<'a>>,
    kernels: Kernels,
}

/// The arena split into its regions (disjoint borrows).
struct Parts<'x> {
    act: &'x mut [u8],
    table: &'x [u8],
    weights: &'x mut [u8],
    scratch: &'x mut [u8],
    requant: &'x mut [u8],
    features: &'x mut [u8],
}

fn f32s(b: &[u8]) -> R<&[f32]> {
    bytemuck::try_cast_slice(b).map_err(|_| EngineError::Misaligned)
}
fn f32s_mut(b: &mut [u8]) -> R<&mut [f32]> {
    bytemuck::try_cast_slice_mut(b).map_err(|_| EngineError::Misaligned)
}
fn i8s(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}
fn i8s_mut(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

/// `payload[t]`, checked.
fn tensor(payload: &[u8], t: TensorRef, op: usize) -> R<&[u8]> {
    let s = t.offset as usize;
    payload
        .get(s..s + t.len as usize)
        .ok_or(EngineError::Malformed { op })
}

fn value(table: &[u8], i: u16, op: usize) -> R<Val> {
    let b = table
        .get(i as usize * 16..i as usize * 16 + 16)
        .ok_or(EngineError::Malformed { op })?;
    let u = |j: usize| {
        u32::from_le_bytes([b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3]]) as usize
    };
    Ok(Val {
        h: u(0),
        w: u(1),
        c: u(2),
        offset: u(3),
    })
}

/// Splits the activation region into the output range (mutable) and input ranges (shared),
/// which must not overlap the output (the planner guarantees it; checked here).
fn io<'x, const N: usize>(
    act: &'x mut [u8],
    out: Range<usize>,
    ins: [Range<usize>; N],
    op: usize,
) -> R<(&'x mut [u8], [&'x [u8]; N])> {
    let bad = EngineError::Malformed { op };
    if out.start > out.end || out.end > act.len() {
        return Err(bad);
    }
    let (left, rest) = act.split_at_mut(out.start);
    let (o, right) = rest.split_at_mut(out.end - out.start);
    let (left, right): (&'x [u8], &'x [u8]) = (left, right);
    let mut res: [&'x [u8]; N] = [&[]; N];
    for (r, range) in res.iter_mut().zip(ins) {
        *r = if range.end <= out.start {
            left.get(range).ok_or(bad)?
        } else if range.start >= out.end {
            right
                .get(range.start - out.end..range.end - out.end)
                .ok_or(bad)?
        } else {
            return Err(bad);
        };
    }
    Ok((o, res))
}

/// Per-department activation quantisation of value `i` (int8 bundles).
fn qparams(d: &Dept<'_>, i: u16, op: usize) -> R<QParams> {
    let t = d.manifest.act_qparams;
    let s = t.offset as usize + 8 * i as usize;
    if 8 * (i as usize + 1) > t.len as usize {
        return Err(EngineError::Malformed { op });
    }
    let b = d
        .payload
        .get(s..s + 8)
        .ok_or(EngineError::Malformed { op })?;
    Ok(QParams {
        scale: f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        zero_point: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    })
}

/// Walks a department's deltas in graph order (expert indices increase along the ops), so
/// each lookup is O(1) amortised instead of a scan of the postcard sequence.
struct DeltaCursor<'a> {
    seq: Seq<'a, DeltaRef>,
    it: SeqIter<'a, DeltaRef>,
    next: usize,
}

impl<'a> DeltaCursor<'a> {
    fn new(seq: Seq<'a, DeltaRef>) -> Self {
        DeltaCursor {
            seq,
            it: seq.iter(),
            next: 0,
        }
    }
    fn get(&mut self, i: usize) -> Option<DeltaRef> {
        if i < self.next {
            self.it = self.seq.iter();
            self.next = 0;
        }
        while self.next < i {
            self.it.next()?;
            self.next += 1;
        }
        self.next += 1;
        self.it.next()
    }
}

fn is_aligned(p: *const u8) -> bool {
    (p as usize) & (crate::format::ALIGN - 1) == 0
}

/// Geometry of a conv / depthwise op from its input slice and output value.
#[allow(clippy::too_many_arguments)]
fn conv_geom(
    vin: &Val,
    input: &Slice,
    vout: &Val,
    cout: usize,
    kk: usize,
    stride: usize,
    pad: usize,
    op: usize,
) -> R<Geom> {
    let g = Geom {
        h: vin.h,
        w: vin.w,
        in_stride: vin.c,
        c_off: input.c_off as usize,
        cin: input.c_len as usize,
        ho: vout.h,
        wo: vout.w,
        cout,
        k: kk,
        stride,
        pad,
    };
    let ok = g.c_off + g.cin <= g.in_stride
        && g.cin > 0
        && vout.c == cout
        && stride > 0
        && g.ho == Geom::out_dim(g.h, kk, stride, pad)
        && g.wo == Geom::out_dim(g.w, kk, stride, pad);
    if ok {
        Ok(g)
    } else {
        Err(EngineError::Malformed { op })
    }
}

/// `d`'s factors decoded to f32 at the start of `scratch`, and the rest of `scratch`.
fn decode<'s>(d: &Delta<'_>, scratch: &'s mut [u8], op: usize) -> R<(Delta<'s>, &'s mut [f32])> {
    let scratch = f32s_mut(scratch)?;
    if scratch.len() < d.decoded_len() {
        return Err(EngineError::Malformed { op });
    }
    let (dec, rest) = scratch.split_at_mut(d.decoded_len());
    Ok((d.decoded(dec), rest))
}

fn expect_len<T>(s: &[T], n: usize, op: usize) -> R<&[T]> {
    s.get(..n)
        .filter(|_| s.len() == n)
        .ok_or(EngineError::Malformed { op })
}

impl<'b, 'a> Engine<'b, 'a> {
    /// An engine over `arena` (at least `bundle.arena_bytes(mode)` bytes, 16-aligned).
    ///
    /// # Errors
    /// [`EngineError::ArenaTooSmall`] with the needed and given sizes; `Misaligned`.
    pub fn new(bundle: &'b Bundle<'a>, arena: &'b mut [u8], mode: Mode) -> R<Self> {
        let m = bundle.manifest();
        let reg = layout::regions(m, mode).ok_or(EngineError::Malformed { op: usize::MAX })?;
        let needed = reg.total.max(bundle.arena_bytes(mode));
        if arena.len() < needed {
            return Err(EngineError::ArenaTooSmall {
                needed,
                got: arena.len(),
            });
        }
        if !is_aligned(arena.as_ptr()) || !is_aligned(bundle.shared().as_ptr()) {
            return Err(EngineError::Misaligned);
        }
        let table = &mut arena[reg.values..reg.weights];
        let mut n = 0;
        for (i, v) in m.values.iter().enumerate() {
            let e = table
                .get_mut(16 * i..16 * i + 16)
                .ok_or(EngineError::Malformed { op: usize::MAX })?;
            for (j, x) in [v.h as u32, v.w as u32, v.c as u32, v.offset]
                .into_iter()
                .enumerate()
            {
                e[4 * j..4 * j + 4].copy_from_slice(&x.to_le_bytes());
            }
            n += 1;
        }
        if n != m.values.len() {
            return Err(EngineError::Malformed { op: usize::MAX });
        }
        Ok(Engine {
            bundle,
            arena,
            mode,
            reg,
            dept: None,
            kernels: Kernels::best(),
        })
    }

    /// Replaces the kernel table (`Kernels::best()` by default; tests compare against
    /// `Kernels::reference()`).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The kernel table in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The switching mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The current department, if any.
    pub fn department(&self) -> Option<&Dept<'a>> {
        self.dept.as_ref()
    }

    /// Arena bytes holding rebuilt weights (0 in Streaming mode).
    pub fn weight_ram_bytes(&self) -> usize {
        self.reg.scratch - self.reg.weights
    }

    /// Makes department `dept` of the bundle current.
    ///
    /// # Errors
    /// [`EngineError::UnknownDepartment`] for an index the bundle does not have.
    pub fn select(&mut self, dept: usize) -> R<()> {
        let count = self.bundle.department_count();
        let d = self
            .bundle
            .department(dept)
            .ok_or(EngineError::UnknownDepartment { index: dept, count })?;
        self.select_blob(d)
    }

    /// Makes `dept` current: a department of this bundle, or a delta from an update slot
    /// (already checked against this bundle by `Dept::parse_blob`). Materialized mode
    /// rebuilds every expert weight from the pristine `W0`.
    pub fn select_blob(&mut self, dept: Dept<'a>) -> R<()> {
        self.dept = None;
        let m = *self.bundle.manifest();
        let dm = &dept.manifest;
        if dm.deltas.len() != m.experts as usize || dm.classes.is_empty() {
            return Err(EngineError::DeptMismatch);
        }
        if self.mode == Mode::Materialized {
            self.materialize(&m, &dept)?;
        }
        self.dept = Some(dept);
        Ok(())
    }

    fn parts(&mut self) -> Parts<'_> {
        let r = self.reg;
        let (act, rest) = self.arena.split_at_mut(r.values);
        let (table, rest) = rest.split_at_mut(r.weights - r.values);
        let (weights, rest) = rest.split_at_mut(r.scratch - r.weights);
        let (scratch, rest) = rest.split_at_mut(r.requant - r.scratch);
        let (requant, rest) = rest.split_at_mut(r.features - r.requant);
        let features = &mut rest[..r.total - r.features];
        Parts {
            act,
            table,
            weights,
            scratch,
            requant,
            features,
        }
    }

    fn materialize(&mut self, m: &Manifest<'a>, dept: &Dept<'a>) -> R<()> {
        let shared = self.bundle.shared();
        let int8 = m.precision == Precision::Int8;
        let rank = m.rank as usize;
        let requant_weights = self.kernels.requant_weights;
        let p = self.parts();
        let mut wofs = 0usize;
        let mut cursor = DeltaCursor::new(dept.manifest.deltas);
        for (i, op) in m.ops.iter().enumerate() {
            let Op::Conv {
                input,
                cout,
                k,
                weight,
                wscale,
                expert: Some(e),
                ..
            } = op
            else {
                continue;
            };
            let (cout, kk, cin) = (cout as usize, k as usize, input.c_len as usize);
            let bad = EngineError::Malformed { op: i };
            let n = cout * cin * kk * kk;
            let dref = cursor.get(e as usize).ok_or(EngineError::DeptMismatch)?;
            let delta = Delta::new(
                dept.payload,
                dref,
                dept.manifest.delta_dtype,
                cout,
                cin,
                kk,
                rank,
            )
            .ok_or(EngineError::DeptMismatch)?;
            let w0 = tensor(shared, weight, i)?;
            // Decode both factors once; the rebuild then runs on contiguous f32.
            let scratch = f32s_mut(p.scratch)?;
            if scratch.len() < delta.decoded_len() {
                return Err(bad);
            }
            let (dec, scratch) = scratch.split_at_mut(delta.decoded_len());
            let delta = delta.decoded(dec);
            if int8 {
                let wlen = layout::align(n);
                let dst = p
                    .weights
                    .get_mut(wofs..wofs + wlen + layout::align(cout * 4))
                    .ok_or(bad)?;
                let (dw, ds) = dst.split_at_mut(wlen);
                let s0 = expect_len(f32s(tensor(shared, wscale, i)?)?, cout, i)?;
                if scratch.len() < delta.channel_len() {
                    return Err(bad);
                }
                let ds = &mut f32s_mut(ds)?[..cout];
                switch::materialize_i8_with(
                    requant_weights,
                    expect_len(i8s(w0), n, i)?,
                    s0,
                    &delta,
                    scratch,
                    &mut i8s_mut(dw)[..n],
                    ds,
                );
                wofs += wlen + layout::align(cout * 4);
            } else {
                let wlen = layout::align(n * 4);
                let dst = p.weights.get_mut(wofs..wofs + wlen).ok_or(bad)?;
                let out = &mut f32s_mut(dst)?[..n];
                switch::materialize_f32(expect_len(f32s(w0)?, n, i)?, &delta, out);
                wofs += wlen;
            }
        }
        Ok(())
    }

    /// Runs the current department on one image (`input_chw`: normalised, `[C, H, W]` f32)
    /// and writes its logits; returns the number of classes.
    ///
    /// # Errors
    /// `NoDepartment`, `InputSize`, `LogitsSize`.
    pub fn infer(&mut self, input_chw: &[f32], logits: &mut [f32]) -> R<usize> {
        self.run(input_chw, logits, &mut |_, _| {})
    }

    /// As [`Engine::infer`], and calls `observe(value, data)` with every f32 value (NHWC)
    /// right after it is computed, the input (value 0) first — the calibration hook.
    /// int8 bundles observe nothing.
    pub fn infer_observe(
        &mut self,
        input_chw: &[f32],
        logits: &mut [f32],
        mut observe: impl FnMut(usize, &[f32]),
    ) -> R<usize> {
        self.run(input_chw, logits, &mut observe)
    }

    fn run(
        &mut self,
        input: &[f32],
        logits: &mut [f32],
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> R<usize> {
        let dept = self.dept.ok_or(EngineError::NoDepartment)?;
        let m = *self.bundle.manifest();
        let shared = self.bundle.shared();
        let mode = self.mode;
        let kern = self.kernels;
        let int8 = m.precision == Precision::Int8;
        let classes = dept.manifest.classes.len();
        if logits.len() < classes {
            return Err(EngineError::LogitsSize {
                needed: classes,
                got: logits.len(),
            });
        }
        let p = self.parts();
        // Input: CHW f32 -> value 0, NHWC (quantised with value 0's qparams for int8).
        let v0 = value(p.table, 0, usize::MAX)?;
        let expected = v0.c * v0.h * v0.w;
        if input.len() != expected {
            return Err(EngineError::InputSize {
                expected,
                got: input.len(),
            });
        }
        let hw = v0.h * v0.w;
        if int8 {
            let q = qparams(&dept, 0, usize::MAX)?;
            let x = i8s_mut(
                p.act
                    .get_mut(v0.offset..v0.offset + expected)
                    .ok_or(EngineError::Malformed { op: usize::MAX })?,
            );
            for (pix, px) in x.chunks_exact_mut(v0.c).enumerate() {
                for (c, v) in px.iter_mut().enumerate() {
                    *v = q.quantize(input[c * hw + pix]);
                }
            }
        } else {
            let x = f32s_mut(
                p.act
                    .get_mut(v0.offset..v0.offset + 4 * expected)
                    .ok_or(EngineError::Malformed { op: usize::MAX })?,
            )?;
            for (pix, px) in x.chunks_exact_mut(v0.c).enumerate() {
                for (c, v) in px.iter_mut().enumerate() {
                    *v = input[c * hw + pix];
                }
            }
            observe(0, x);
        }

        let elem = if int8 { 1 } else { 4 };
        let vrange = |v: &Val| v.offset..v.offset + v.h * v.w * v.c * elem;
        let mut wofs = 0usize;
        let mut cursor = DeltaCursor::new(dept.manifest.deltas);
        for (i, op) in m.ops.iter().enumerate() {
            let bad = EngineError::Malformed { op: i };
            match op {
                Op::Conv {
                    input,
                    output,
                    cout,
                    k,
                    stride,
                    pad,
                    relu,
                    weight,
                    bias,
                    wscale,
                    expert,
                } => {
                    let (vin, vout) = (value(p.table, input.value, i)?, value(p.table, output, i)?);
                    let (kk, cout) = (k as usize, cout as usize);
                    let g = conv_geom(
                        &vin,
                        &input,
                        &vout,
                        cout,
                        kk,
                        stride as usize,
                        pad as usize,
                        i,
                    )?;
                    let n = cout * g.cin * kk * kk;
                    let bias = expect_len(f32s(tensor(shared, bias, i)?)?, cout, i)?;
                    let (y, [x]) = io(p.act, vrange(&vout), [vrange(&vin)], i)?;
                    // Materialized experts read the rebuilt weight; others W0 from the bundle.
                    let (own_w, delta) = match expert {
                        Some(_) if mode == Mode::Materialized => {
                            let wlen = layout::align(n * elem);
                            let r =
                                wofs..wofs + wlen + if int8 { layout::align(cout * 4) } else { 0 };
                            wofs = r.end;
                            (Some(p.weights.get(r).ok_or(bad)?), None)
                        }
                        Some(e) => {
                            let dref = cursor.get(e as usize).ok_or(EngineError::DeptMismatch)?;
                            let d = Delta::new(
                                dept.payload,
                                dref,
                                dept.manifest.delta_dtype,
                                cout,
                                g.cin,
                                kk,
                                m.rank as usize,
                            );
                            (None, Some(d.ok_or(EngineError::DeptMismatch)?))
                        }
                        None => (None, None),
                    };
                    let pointwise = kk == 1 && pad == 0;
                    if int8 {
                        let (qx, qy) =
                            (qparams(&dept, input.value, i)?, qparams(&dept, output, i)?);
                        let (w, ws) = match own_w {
                            Some(b) => {
                                let (w, s) = b.split_at(layout::align(n));
                                (&i8s(w)[..n], &f32s(s)?[..cout])
                            }
                            None => (
                                expect_len(i8s(tensor(shared, weight, i)?), n, i)?,
                                expect_len(f32s(tensor(shared, wscale, i)?)?, cout, i)?,
                            ),
                        };
                        let (x, y) = (i8s(x), i8s_mut(y));
                        let q = OutQ {
                            zero_point: qy.zero_point,
                            lo: if relu { qy.zero_point } else { -128 },
                        };
                        match delta {
                            None => {
                                let rq: &mut [[i32; 3]] = bytemuck::try_cast_slice_mut(
                                    p.requant.get_mut(..12 * cout).ok_or(bad)?,
                                )
                                .map_err(|_| EngineError::Misaligned)?;
                                let rq = rq.get_mut(..cout).ok_or(bad)?;
                                for (o, r) in rq.iter_mut().enumerate() {
                                    *r = ChannelRequant::new(bias[o], qx.scale, ws[o], qy.scale)
                                        .to_array();
                                }
                                if pointwise {
                                    (kern.conv1x1_i8)(&g, x, qx.zero_point, w, rq, q, y);
                                } else {
                                    (kern.conv_i8)(&g, x, qx.zero_point, w, rq, q, y);
                                }
                            }
                            Some(d) => {
                                let (d, scratch) = decode(&d, p.scratch, i)?;
                                let st = switch::StreamI8 { x: qx, y: qy, relu };
                                if pointwise {
                                    let u = scratch.get_mut(..g.ho * g.wo * d.a.rows).ok_or(bad)?;
                                    switch::stream_conv1x1_i8(
                                        kern.dot_i8,
                                        &g,
                                        x,
                                        w,
                                        ws,
                                        bias,
                                        &d,
                                        st,
                                        u,
                                        y,
                                    );
                                } else {
                                    let wlen = g.cout * d.channel_len();
                                    let wbuf = scratch.get_mut(..wlen).ok_or(bad)?;
                                    switch::stream_conv_i8(&g, x, w, ws, bias, &d, st, wbuf, y);
                                }
                            }
                        }
                    } else {
                        let w = match own_w {
                            Some(b) => &f32s(b)?[..n],
                            None => expect_len(f32s(tensor(shared, weight, i)?)?, n, i)?,
                        };
                        let (x, y) = (f32s(x)?, f32s_mut(y)?);
                        let relu_now = relu && delta.is_none();
                        if pointwise {
                            (kern.conv1x1_f32)(&g, x, w, bias, relu_now, y);
                        } else {
                            (kern.conv_f32)(&g, x, w, bias, relu_now, y);
                        }
                        if let Some(d) = delta {
                            let (d, scratch) = decode(&d, p.scratch, i)?;
                            if pointwise {
                                let u = scratch.get_mut(..g.ho * g.wo * d.a.rows).ok_or(bad)?;
                                switch::lowrank_u(&g, x, |v| v, &d.a, u);
                                switch::lowrank_add_f32(&g, u, &d.b, relu, y);
                            } else {
                                let wbuf = scratch.get_mut(..d.channel_len()).ok_or(bad)?;
                                switch::stream_conv_add_f32(&g, x, &d, relu, wbuf, y);
                            }
                        }
                        observe(output as usize, y);
                    }
                }
                Op::DwConv {
                    input,
                    output,
                    stride,
                    relu,
                    weight,
                    bias,
                    wscale,
                } => {
                    let (vin, vout) = (value(p.table, input.value, i)?, value(p.table, output, i)?);
                    let c = input.c_len as usize;
                    let g = conv_geom(&vin, &input, &vout, c, 3, stride as usize, 1, i)?;
                    let bias = expect_len(f32s(tensor(shared, bias, i)?)?, c, i)?;
                    let (y, [x]) = io(p.act, vrange(&vout), [vrange(&vin)], i)?;
                    if int8 {
                        let (qx, qy) =
                            (qparams(&dept, input.value, i)?, qparams(&dept, output, i)?);
                        let w = expect_len(i8s(tensor(shared, weight, i)?), 9 * c, i)?;
                        let ws = expect_len(f32s(tensor(shared, wscale, i)?)?, c, i)?;
                        let rq: &mut [[i32; 3]] =
                            bytemuck::try_cast_slice_mut(p.requant.get_mut(..12 * c).ok_or(bad)?)
                                .map_err(|_| EngineError::Misaligned)?;
                        let rq = rq.get_mut(..c).ok_or(bad)?;
                        for (o, r) in rq.iter_mut().enumerate() {
                            *r = ChannelRequant::new(bias[o], qx.scale, ws[o], qy.scale).to_array();
                        }
                        let q = OutQ {
                            zero_point: qy.zero_point,
                            lo: if relu { qy.zero_point } else { -128 },
                        };
                        (kern.dwconv3x3_i8)(&g, i8s(x), qx.zero_point, w, rq, q, i8s_mut(y));
                    } else {
                        let w = expect_len(f32s(tensor(shared, weight, i)?)?, 9 * c, i)?;
                        let y = f32s_mut(y)?;
                        (kern.dwconv3x3_f32)(&g, f32s(x)?, w, bias, relu, y);
                        observe(output as usize, y);
                    }
                }
                Op::MaxPool { input, output } => {
                    let (vin, vout) = (value(p.table, input, i)?, value(p.table, output, i)?);
                    if vout.c != vin.c
                        || vout.h != Geom::out_dim(vin.h, 3, 2, 1)
                        || vout.w != Geom::out_dim(vin.w, 3, 2, 1)
                    {
                        return Err(bad);
                    }
                    let (y, [x]) = io(p.act, vrange(&vout), [vrange(&vin)], i)?;
                    if int8 {
                        let y = i8s_mut(y);
                        // Dequantisation is monotonic, so the max of the codes is the code of the max.
                        k::maxpool::maxpool3x3s2(vin.h, vin.w, vin.c, i8s(x), y);
                        let (qx, qy) = (qparams(&dept, input, i)?, qparams(&dept, output, i)?);
                        rescale(y, qx, qy);
                    } else {
                        let y = f32s_mut(y)?;
                        k::maxpool::maxpool3x3s2(vin.h, vin.w, vin.c, f32s(x)?, y);
                        observe(output as usize, y);
                    }
                }
                Op::ConcatShuffle { a, b, output } => {
                    let (va, vb, vout) = (
                        value(p.table, a.value, i)?,
                        value(p.table, b.value, i)?,
                        value(p.table, output, i)?,
                    );
                    let c = a.c_len as usize;
                    let ok = b.c_len == a.c_len
                        && vout.c == 2 * c
                        && a.c_off as usize + c <= va.c
                        && b.c_off as usize + c <= vb.c
                        && (va.h, va.w) == (vout.h, vout.w)
                        && (vb.h, vb.w) == (vout.h, vout.w);
                    if !ok {
                        return Err(bad);
                    }
                    let n = vout.h * vout.w;
                    let (y, [xa, xb]) = io(p.act, vrange(&vout), [vrange(&va), vrange(&vb)], i)?;
                    let (ao, bo) = (a.c_off as usize, b.c_off as usize);
                    if int8 {
                        let y = i8s_mut(y);
                        k::concat_shuffle::concat_shuffle(
                            n,
                            c,
                            i8s(xa),
                            va.c,
                            ao,
                            i8s(xb),
                            vb.c,
                            bo,
                            y,
                        );
                        let (qa, qb, qy) = (
                            qparams(&dept, a.value, i)?,
                            qparams(&dept, b.value, i)?,
                            qparams(&dept, output, i)?,
                        );
                        if qa != qy || qb != qy {
                            let (ta, tb) = (rescale_table(qa, qy), rescale_table(qb, qy));
                            for pair in y.chunks_exact_mut(2) {
                                pair[0] = ta[pair[0] as u8 as usize];
                                pair[1] = tb[pair[1] as u8 as usize];
                            }
                        }
                    } else {
                        let y = f32s_mut(y)?;
                        k::concat_shuffle::concat_shuffle(
                            n,
                            c,
                            f32s(xa)?,
                            va.c,
                            ao,
                            f32s(xb)?,
                            vb.c,
                            bo,
                            y,
                        );
                        observe(output as usize, y);
                    }
                }
                Op::PoolHead { input } => {
                    let vin = value(p.table, input, i)?;
                    let f = m.features as usize;
                    if vin.c != f {
                        return Err(bad);
                    }
                    let x = p.act.get(vrange(&vin)).ok_or(bad)?;
                    let feat = f32s_mut(p.features)?.get_mut(..f).ok_or(bad)?;
                    if int8 {
                        k::gap::gap_i8(vin.h * vin.w, f, i8s(x), qparams(&dept, input, i)?, feat);
                    } else {
                        k::gap::gap_f32(vin.h * vin.w, f, f32s(x)?, feat);
                    }
                    let hw = expect_len(
                        f32s(tensor(dept.payload, dept.manifest.head_weight, i)?)?,
                        classes * f,
                        i,
                    )
                    .map_err(|_| EngineError::DeptMismatch)?;
                    let hb = expect_len(
                        f32s(tensor(dept.payload, dept.manifest.head_bias, i)?)?,
                        classes,
                        i,
                    )
                    .map_err(|_| EngineError::DeptMismatch)?;
                    k::linear::linear_f32(feat, hw, hb, &mut logits[..classes]);
                    return Ok(classes);
                }
            };
        }
        Err(EngineError::Malformed { op: usize::MAX })
    }
}

/// Re-expresses int8 codes quantised with `from` in `to` (identity when they are equal),
/// through a 256-entry table of [`rescale_one`] (the same values, one lookup each).
fn rescale(y: &mut [i8], from: QParams, to: QParams) {
    if from != to {
        let t = rescale_table(from, to);
        y.iter_mut().for_each(|v| *v = t[*v as u8 as usize]);
    }
}

/// `t[code as u8] = rescale_one(code, from, to)` for every int8 code.
fn rescale_table(from: QParams, to: QParams) -> [i8; 256] {
    let mut t = [0i8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = rescale_one(i as u8 as i8, from, to);
    }
    t
}

#[inline]
fn rescale_one(v: i8, from: QParams, to: QParams) -> i8 {
    to.quantize(from.dequantize(v))
}
