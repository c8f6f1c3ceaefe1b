//! One file per op, tflite-micro style: each `eval` prepares its op (geometry from the value
//! table, checked against the format's shape rule in [`crate::format::validate`]; its
//! tensors; for int8 the per-channel requantisation) and runs its kernels from the table.
//! [`Ctx`] is what every op sees: the arena regions, the bundle, the current department.
//!
//! The bundle was validated by `Bundle::parse`, so the checks here never fire on a parsed
//! bundle; they keep the engine panic-free if they ever would (an inconsistency gives
//! [`EngineError::Malformed`]) and cost a few comparisons per op.

pub(super) mod concat_shuffle;
pub(super) mod conv;
pub(super) mod dwconv;
pub(super) mod maxpool;
pub(super) mod pool_head;

use core::ops::Range;

use super::EngineError;
use crate::format::plan::Plan;
use crate::format::{
    validate, DeltaRef, Dept, Manifest, Seq, SeqIter, Slice, TensorRef, ValueDesc,
};
use crate::kernels::{Geom, Kernels};
use crate::quant::{OutQ, QParams};

pub(super) type R<T> = Result<T, EngineError>;

/// What an op's `eval` sees: the arena's regions (disjoint borrows), the bundle's graph and
/// shared payload, the current department, the kernel table and the run's cursors.
pub(super) struct Ctx<'x, 'a> {
    /// Activation region (values at their planned offsets).
    pub act: &'x mut [u8],
    /// The decoded value table (16 B per value).
    pub table: &'x [u8],
    /// Materialized expert weights (empty in Streaming mode).
    pub weights: &'x [u8],
    /// f32 scratch: decoded factors, streaming buffers.
    pub scratch: &'x mut [u8],
    /// int8 requantisation parameters of the current op; at the `PoolHead` (the last op:
    /// no table is read after it), the pooled feature vector.
    pub requant: &'x mut [u8],
    /// The shared manifest.
    pub m: &'x Manifest<'a>,
    /// The shared payload.
    pub shared: &'a [u8],
    /// The current department.
    pub dept: &'x Dept<'a>,
    /// Which expert convs stream and which were rebuilt.
    pub plan: crate::format::plan::Plan,
    /// Kernel table.
    pub kern: Kernels,
    /// True for int8 bundles.
    pub int8: bool,
    /// Next materialized expert's offset in `weights`.
    pub wofs: usize,
    /// The department's deltas, walked in graph order.
    pub cursor: DeltaCursor<'a>,
    /// The calibration hook (f32 bundles).
    pub observe: &'x mut dyn FnMut(usize, &[f32]),
    /// Requantisation tables `select` precomputed (the int8 convs whose rows fit).
    pub rq: RqCache<'x>,
    /// Where conv kernels run (the calling thread, or split across the engine's pool).
    pub par: super::par::Par<'x>,
}

impl Ctx<'_, '_> {
    /// Bytes of one activation element.
    pub fn elem(&self) -> usize {
        if self.int8 {
            1
        } else {
            4
        }
    }

    /// Value `i` from the table.
    pub fn value(&self, i: u16, op: usize) -> R<ValueDesc> {
        value(self.table, i, op)
    }

    /// Arena byte range of value `v`.
    pub fn range(&self, v: &ValueDesc, op: usize) -> R<Range<usize>> {
        value_range(v, self.elem(), op)
    }

    /// Activation quantisation of value `i` (int8 bundles).
    pub fn qparams(&self, i: u16, op: usize) -> R<QParams> {
        qparams(self.dept, i, op)
    }

    /// int8 bundles: the quantisation of an op's input and output values; `None` for f32.
    pub fn io_qparams(&self, input: u16, output: u16, op: usize) -> R<Option<(QParams, QParams)>> {
        if !self.int8 {
            return Ok(None);
        }
        Ok(Some((self.qparams(input, op)?, self.qparams(output, op)?)))
    }
}

/// Value `i` of the engine's value table (`h, w, c, offset` as u32, written from the
/// manifest's `ValueDesc`s by `Engine::new`).
pub(super) fn value(table: &[u8], i: u16, op: usize) -> R<ValueDesc> {
    let s = 16 * i as usize;
    let b = table.get(s..s + 16).ok_or(EngineError::Malformed { op })?;
    let u = |j: usize| u32::from_le_bytes([b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3]]);
    let small = |j: usize| u16::try_from(u(j)).map_err(|_| EngineError::Malformed { op });
    Ok(ValueDesc {
        h: small(0)?,
        w: small(1)?,
        c: small(2)?,
        offset: u(3),
    })
}

/// Arena byte range of `v` with `elem`-byte elements (checked).
pub(super) fn value_range(v: &ValueDesc, elem: usize, op: usize) -> R<Range<usize>> {
    let start = v.offset as usize;
    let len = (v.h as usize)
        .checked_mul(v.w as usize)
        .and_then(|n| n.checked_mul(v.c as usize))
        .and_then(|n| n.checked_mul(elem));
    let end = len.and_then(|n| start.checked_add(n));
    end.map(|end| start..end)
        .ok_or(EngineError::Malformed { op })
}

pub(super) fn f32s(b: &[u8]) -> R<&[f32]> {
    bytemuck::try_cast_slice(b).map_err(|_| EngineError::Misaligned)
}
pub(super) fn f32s_mut(b: &mut [u8]) -> R<&mut [f32]> {
    bytemuck::try_cast_slice_mut(b).map_err(|_| EngineError::Misaligned)
}
pub(super) fn i8s(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}
pub(super) fn i8s_mut(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

/// `payload[t]`, checked.
pub(super) fn tensor(payload: &[u8], t: TensorRef, op: usize) -> R<&[u8]> {
    let s = t.offset as usize;
    s.checked_add(t.len as usize)
        .and_then(|e| payload.get(s..e))
        .ok_or(EngineError::Malformed { op })
}

/// `s` holds exactly `n` elements.
pub(super) fn expect_len<T>(s: &[T], n: usize, op: usize) -> R<&[T]> {
    s.get(..n)
        .filter(|_| s.len() == n)
        .ok_or(EngineError::Malformed { op })
}

/// Per-department activation quantisation of value `i` (int8 bundles).
pub(super) fn qparams(d: &Dept<'_>, i: u16, op: usize) -> R<QParams> {
    let bad = EngineError::Malformed { op };
    let t = d.manifest.act_qparams;
    let rel = 8 * i as usize;
    if rel + 8 > t.len as usize {
        return Err(bad);
    }
    let s = (t.offset as usize).checked_add(rel).ok_or(bad)?;
    let b = d.payload.get(s..s + 8).ok_or(bad)?;
    Ok(QParams::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

/// Splits the activation region into the output range (mutable) and input ranges (shared),
/// which must not overlap the output (the planner guarantees it; checked here).
pub(super) fn io<'x, const N: usize>(
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

/// [`io`] for ops run as one (a depthwise conv, the pointwise conv that reads it, the
/// concat that reads that): the `M` outputs (mutable, an empty range `0..0` for an op not
/// fused) and the inputs, which must overlap no output (here the planner does not promise
/// it: a later op's output may reuse a value an earlier one reads last, so the caller runs
/// the ops one after the other when this returns `None`).
#[allow(clippy::type_complexity)]
pub(super) fn io_n<'x, const M: usize, const N: usize>(
    act: &'x mut [u8],
    outs: [Range<usize>; M],
    ins: [Range<usize>; N],
) -> Option<([&'x mut [u8]; M], [&'x [u8]; N])> {
    if !fits_n(act.len(), &outs, &ins) {
        return None;
    }
    let order = arena_order(&outs);
    let mut res: [&'x mut [u8]; M] = core::array::from_fn(|_| &mut [][..]);
    // The gap before each output (in arena order) and after the last: `(start, bytes)`.
    let mut gaps: [(usize, &'x [u8]); M] = [(0, &[]); M];
    let (mut rest, mut at) = (act, 0);
    for (k, &o) in order.iter().enumerate() {
        let r = &outs[o];
        let (gap, tail) = core::mem::take(&mut rest).split_at_mut(r.start - at);
        let (out, tail) = tail.split_at_mut(r.end - r.start);
        gaps[k] = (at, gap);
        res[o] = out;
        (rest, at) = (tail, r.end);
    }
    let last: (usize, &'x [u8]) = (at, rest);
    let mut got: [&'x [u8]; N] = [&[]; N];
    for (g, range) in got.iter_mut().zip(ins) {
        let (s, gap) = gaps
            .iter()
            .chain([&last])
            .find(|(s, gap)| range.start >= *s && range.end <= s + gap.len())?;
        *g = gap.get(range.start - s..range.end - s)?;
    }
    Some((res, got))
}

/// Whether [`io_n`] gives these ranges of an arena of `len` bytes: the outputs in bounds
/// and disjoint, each input inside one gap around them (the check alone, for a caller that
/// decides before it borrows).
pub(super) fn fits_n<const M: usize>(
    len: usize,
    outs: &[Range<usize>; M],
    ins: &[Range<usize>],
) -> bool {
    let order = arena_order(outs);
    let mut at = 0;
    // The gaps' ends are the outputs' starts in order, then `len`.
    for &o in &order {
        let r = &outs[o];
        if r.start < at || r.end < r.start {
            return false;
        }
        at = r.end;
    }
    if at > len {
        return false;
    }
    let starts = core::iter::once(0).chain(order.iter().map(|&o| outs[o].end));
    let ends = order.iter().map(|&o| outs[o].start).chain([len]);
    let inside = |r: &Range<usize>| {
        starts
            .clone()
            .zip(ends.clone())
            .any(|(s, e)| s <= r.start && r.start <= r.end && r.end <= e)
    };
    ins.iter().all(inside)
}

/// The outputs' indices in arena order (an empty output at another's start first).
fn arena_order<const M: usize>(outs: &[Range<usize>; M]) -> [usize; M] {
    let mut order: [usize; M] = core::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&o| (outs[o].start, outs[o].end));
    order
}

/// The int8 output stage: the output's zero point, clamped at it under a fused ReLU.
pub(super) fn out_q(qy: QParams, relu: bool) -> OutQ {
    OutQ {
        zero_point: qy.zero_point,
        lo: if relu { qy.zero_point } else { -128 },
    }
}

/// The `[bias, multiplier, shift]` table of `c` output channels (TFLite conv `Prepare`), in
/// the requant region.
pub(super) fn requant_table<'r>(
    table: crate::kernels::RequantTable,
    requant: &'r mut [u8],
    bias: &[f32],
    qx: QParams,
    ws: &[f32],
    qy: QParams,
    op: usize,
) -> R<&'r mut [[i32; 3]]> {
    let bad = EngineError::Malformed { op };
    let c = bias.len();
    let rq: &mut [[i32; 3]] = bytemuck::try_cast_slice_mut(
        requant
            .get_mut(..c.checked_mul(12).ok_or(bad)?)
            .ok_or(bad)?,
    )
    .map_err(|_| EngineError::Misaligned)?;
    let rq = rq.get_mut(..c).ok_or(bad)?;
    table(bias, qx.scale, ws.get(..c).ok_or(bad)?, qy.scale, rq);
    Ok(rq)
}

/// `[bias, multiplier, shift]` tables computed once by `select` (int8 bundles) into the part
/// of the scratch region inference leaves idle, as a run of entries in graph order: `[op
/// index, rows << 2 | kind]`, then the op's rows, by [`Entry`] kind. An op is there iff its
/// entry fitted the room left when `select` walked the ops; the others compute theirs per
/// inference in the requant region. Each row not recomputed saves ~200 Cortex-M
/// instructions an inference for ~8 to unpack it. Materialized packs, and a rebuilt
/// expert's rows keep only 4 bytes here: on the Cortex-M fixture (0.5x @32) all of its 4 k
/// rows fit, where 8-byte rows left ~1 k to compute at every inference. Auto, whose point
/// is a cheap switch, keeps rows whole (the tables `select` computes stay as many as
/// before: its switch would grow ~8 %).
#[derive(Clone, Copy)]
pub(super) struct RqCache<'x> {
    /// The entries not yet passed, the next cached op's first.
    pub words: &'x [u32],
    /// Computes the tables of the ops not cached (`Kernels::requant_table`).
    pub table: crate::kernels::RequantTable,
}

/// The bit of an [`RqCache`] entry's op word that marks biases holding the input's zero
/// point: for a pointwise conv (no padding) `Σ w·(x − zx) + b = Σ w·x + (b − zx·Σw)`, exact
/// in i32 because `quant::requant` adds the bias wrapping, so `select` folds `− zx·Σw` into
/// the cached biases ([`Fold`]) and the conv runs with zero point 0: its kernels need no
/// `Σw` at every call.
pub(super) const FOLDED: u32 = 1 << 31;

/// `select`'s zero-point fold ([`FOLDED`]) for [`fill_requant_cache`]: the walk folds
/// `− zx·Σw` into the cached tables of the pointwise convs, and lays the rebuilt pointwise
/// experts out for `packed` (the table's `conv1x1_i8_packed`) once it has read their rows
/// (the rebuild left them rows: `Engine::materialize` without the layout).
#[derive(Clone, Copy)]
pub(super) struct Fold {
    /// The table's packed pointwise slot.
    pub packed: Option<crate::kernels::PackedConv1x1I8>,
}

/// `rows[o][0] −= zx·Σ_k w[o·cin + k]` for every row `o` (wrapping, as `requant` adds the
/// bias): the [`FOLDED`] biases of a pointwise conv with `[cout, cin]` weights `w`.
fn fold_zero_point(rows: &mut [[i32; 3]], w: &[i8], cin: usize, zx: i32) {
    for (r, wr) in rows.iter_mut().zip(w.chunks_exact(cin)) {
        r[0] = r[0].wrapping_sub(zx.wrapping_mul(row_sum(wr)));
    }
}

/// `Σ w` (exact). On aarch64 16 bytes a `SADALP` into i16 lanes (at most 127 steps of ±256
/// a lane before they widen), where LLVM's loop costs about 0.9 instructions a byte — the
/// sums are most of the zero-point fold's cost at the switch.
fn row_sum(w: &[i8]) -> i32 {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    #[allow(unsafe_code)]
    {
        use core::arch::aarch64::*;
        let (chunks, tail) = w.as_chunks::<16>();
        let mut s = 0i32;
        for blk in chunks.chunks(127) {
            // SAFETY: NEON is baseline on this target (cfg'd on it); each load reads one
            // 16-byte chunk.
            unsafe {
                let mut acc = vdupq_n_s16(0);
                for c in blk {
                    acc = vpadalq_s8(acc, vld1q_s8(c.as_ptr()));
                }
                s += vaddlvq_s16(acc);
            }
        }
        s + tail.iter().map(|&v| v as i32).sum::<i32>()
    }
    #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
    {
        w.iter().map(|&v| v as i32).sum()
    }
}

/// How an [`RqCache`] entry holds its rows (the header's low 2 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// 12 bytes a row, as computed.
    Whole = 0,
    /// 8 bytes a row ([`pack_row`]).
    Packed = 1,
    /// 4 bytes a row here, `pack_row`'s first word; its second, the multiplier, in place of
    /// the per-channel scale in the rebuilt expert's slot of the weights region. Once the
    /// table is computed `select` needs the scales no more: the next switch rewrites them.
    Split = 2,
}

impl Entry {
    /// The kind in a header's low bits; `None` for 3.
    fn of(head: u32) -> Option<Self> {
        match head & 3 {
            0 => Some(Entry::Whole),
            1 => Some(Entry::Packed),
            2 => Some(Entry::Split),
            _ => None,
        }
    }

    /// Words a row takes in the cache.
    pub(super) const fn words(self) -> usize {
        match self {
            Entry::Whole => 3,
            Entry::Packed => 2,
            Entry::Split => 1,
        }
    }
}

/// A row in 8 bytes when it round-trips: `[bias << 5 | −shift, multiplier]` for
/// `shift ∈ −31..=0` (multipliers below one: almost every channel) and `|bias| < 2^26`.
#[inline]
pub(super) fn pack_row([bias, mult, shift]: [i32; 3]) -> Option<[u32; 2]> {
    ((-31..=0).contains(&shift) && (-(1 << 26)..1 << 26).contains(&bias))
        .then_some([(bias << 5) as u32 | shift.unsigned_abs(), mult as u32])
}

/// The row [`pack_row`] packed.
#[inline(always)]
pub(super) fn unpack_row([a, m]: [u32; 2]) -> [i32; 3] {
    [a as i32 >> 5, m as i32, -((a & 31) as i32)]
}

/// The requantisation table of int8 conv-like op `op` with `bias.len()` output channels:
/// its cached entry (unpacked into `requant` unless whole; a [`Entry::Split`] entry's
/// multipliers are the bits of `ws`, the rebuilt expert's slot), or computed into `requant`
/// ([`requant_table`]); and whether its biases hold the input's zero point ([`FOLDED`]:
/// the kernel then takes zero point 0).
pub(super) fn op_requant<'c: 'r, 'r>(
    cache: &mut RqCache<'c>,
    requant: &'r mut [u8],
    bias: &[f32],
    qx: QParams,
    ws: &[f32],
    qy: QParams,
    op: usize,
) -> R<(&'r [[i32; 3]], bool)> {
    let bad = EngineError::Malformed { op };
    let c = bias.len();
    // Entries of ops before this one that inference did not ask for are passed over.
    while let [word, head, rest @ ..] = cache.words {
        let (at, n, kind) = (
            (*word & !FOLDED) as usize,
            (*head >> 2) as usize,
            Entry::of(*head),
        );
        let folded = *word & FOLDED != 0;
        let kind = kind.ok_or(bad)?;
        let len = n.checked_mul(kind.words()).ok_or(bad)?;
        let (rows, next) = rest.split_at_checked(len).ok_or(bad)?;
        if at > op {
            break;
        }
        cache.words = next;
        if at < op {
            continue;
        }
        if n != c || ws.len() < c {
            return Err(bad);
        }
        if kind == Entry::Whole {
            return Ok((bytemuck::cast_slice(rows), folded));
        }
        let out: &mut [[i32; 3]] = bytemuck::try_cast_slice_mut(
            requant
                .get_mut(..c.checked_mul(12).ok_or(bad)?)
                .ok_or(bad)?,
        )
        .map_err(|_| EngineError::Misaligned)?;
        if kind == Entry::Packed {
            for (o, p) in out.iter_mut().zip(rows.chunks_exact(2)) {
                *o = unpack_row([p[0], p[1]]);
            }
        } else {
            for ((o, &a), m) in out.iter_mut().zip(rows).zip(ws) {
                *o = unpack_row([a, m.to_bits()]);
            }
        }
        return Ok((out, folded));
    }
    Ok((
        requant_table(cache.table, requant, bias, qx, ws, qy, op)?,
        false,
    ))
}

/// Fills `cache` (bytes of the idle scratch region) with the requantisation entries of the
/// int8 `Conv`/`DwConv` ops of department `d` that fit, in graph order (see [`RqCache`]):
/// whole rows computed in place while they fit; past that, with `pack`, each table computed
/// in `requant`, then packed where every row packs — a rebuilt expert's split, its
/// multipliers written over its scales in `weights`. Returns `(room, used)`: the capacity and the bytes written.
/// Rebuilt expert convs take their per-channel scales from their slot in `weights` (the
/// same bytes `conv::eval` reads), so the switch's rebuild must have run since the last
/// walk; streamed ones (`plan`, output sizes from the value `table`) have no table. With
/// `fold` the pointwise convs' cached biases take in the zero point ([`FOLDED`]) and the
/// walk lays every rebuilt pointwise expert out for the packed slot, cached or not.
#[allow(clippy::too_many_arguments)]
pub(super) fn fill_requant_cache(
    table_fn: crate::kernels::RequantTable,
    m: &Manifest<'_>,
    shared: &[u8],
    d: &Dept<'_>,
    plan: &Plan,
    table: &[u8],
    weights: &mut [u8],
    cache: &mut [u8],
    requant: &mut [u8],
    pack: bool,
    fold: Option<Fold>,
) -> R<(usize, usize)> {
    let whole = cache.len() / 4 * 4;
    let words: &mut [u32] =
        bytemuck::try_cast_slice_mut(&mut cache[..whole]).map_err(|_| EngineError::Misaligned)?;
    let (mut used, mut wofs) = (0usize, 0usize);
    for (i, op) in m.ops.iter().enumerate() {
        let bad = EngineError::Malformed { op: i };
        // `slot`: where a rebuilt expert's scales are in `weights`; else the shared ones.
        // `pw`: with `fold`, a pointwise conv's `[cout, cin]` weights — a rebuilt expert's
        // range of `weights` (`Err`) or the shared tensor (`Ok`) — and whether the packed
        // slot takes the rebuilt one.
        let (input, output, cout, bias, slot, shared_ws, pw) = match op {
            crate::format::Op::Conv {
                input,
                output,
                cout,
                k,
                pad,
                bias,
                weight,
                wscale,
                expert,
                ..
            } => {
                let (cout, k, cin) = (cout as usize, k as usize, input.c_len as usize);
                let v = value(table, output, i)?;
                let hw = v.h as usize * v.w as usize;
                if expert.is_some() && plan.streams(i, cout, cin, k, hw) {
                    continue;
                }
                let pointwise = fold.is_some() && k == 1 && pad == 0;
                if expert.is_some() {
                    let (wlen, slot) =
                        crate::format::layout::expert_slot(cout, cin, k, true).ok_or(bad)?;
                    let at = wofs.checked_add(wlen).ok_or(bad)?;
                    let rows = wofs..wofs.checked_add(cout * cin).ok_or(bad)?;
                    wofs = wofs.checked_add(slot).ok_or(bad)?;
                    let lay = fold
                        .and_then(|f| f.packed)
                        .filter(|p| conv::packed(plan.mode(), k, pad as usize, hw, p.min_pixels));
                    let pw = pointwise.then_some((Err(rows), cin, lay));
                    (input.value, output, cout, bias, Some(at), &[][..], pw)
                } else {
                    let ws = expect_len(f32s(tensor(shared, wscale, i)?)?, cout, i)?;
                    let pw = match pointwise {
                        true => {
                            let w = tensor(shared, weight, i)?;
                            Some((Ok(expect_len(i8s(w), cout * cin, i)?), cin, None))
                        }
                        false => None,
                    };
                    (input.value, output, cout, bias, None, ws, pw)
                }
            }
            crate::format::Op::DwConv {
                input,
                output,
                bias,
                wscale,
                ..
            } => {
                let c = input.c_len as usize;
                let ws = expect_len(f32s(tensor(shared, wscale, i)?)?, c, i)?;
                (input.value, output, c, bias, None, ws, None)
            }
            _ => continue,
        };
        'entry: {
            // An entry needs at least its header and its rows in their shortest form.
            let least = match (pack, slot) {
                (false, _) => Entry::Whole,
                (true, None) => Entry::Packed,
                (true, Some(_)) => Entry::Split,
            };
            if used
                .saturating_add(2)
                .saturating_add(cout.saturating_mul(least.words()))
                > words.len()
            {
                break 'entry;
            }
            // Whole rows wherever they still fit, even with `pack`: read in place at each
            // inference, nothing unpacked into the requant region (whose lines, at 2
            // threads, the other core then fetched for every op's parts).
            let whole_fits = used.saturating_add(2 + 3 * cout) <= words.len();
            let bias = expect_len(f32s(tensor(shared, bias, i)?)?, cout, i)?;
            let (qx, qy) = (qparams(d, input, i)?, qparams(d, output, i)?);
            let folded = pw.is_some();
            // Folds the zero point into `rows`' biases (a pointwise conv under `fold`).
            let fold_rows = |rows: &mut [[i32; 3]], weights: &[u8]| -> R<()> {
                if let Some((w, cin, _)) = &pw {
                    let w = match w {
                        Ok(w) => *w,
                        Err(r) => i8s(weights.get(r.clone()).ok_or(bad)?),
                    };
                    fold_zero_point(rows, w, *cin, qx.zero_point);
                }
                Ok(())
            };
            let head = |kind: Entry| -> R<[u32; 2]> {
                let op = u32::try_from(i)
                    .ok()
                    .filter(|&v| v & FOLDED == 0)
                    .ok_or(bad)?;
                Ok([
                    op | if folded { FOLDED } else { 0 },
                    u32::try_from(cout << 2 | kind as usize).map_err(|_| bad)?,
                ])
            };
            let ws = match slot {
                Some(at) => f32s(weights.get(at..at + 4 * cout).ok_or(bad)?)?,
                None => shared_ws,
            };
            if !pack || whole_fits {
                // Whole rows: computed in place.
                let dst = &mut words[used..used + 2 + 3 * cout];
                dst[..2].copy_from_slice(&head(Entry::Whole)?);
                let rows = bytemuck::cast_slice_mut(&mut dst[2..]);
                table_fn(bias, qx.scale, ws, qy.scale, rows);
                fold_rows(rows, weights)?;
                used += 2 + 3 * cout;
                break 'entry;
            }
            let rows = requant_table(table_fn, requant, bias, qx, ws, qy, i)?;
            fold_rows(rows, weights)?;
            let kind = match rows.iter().all(|&r| pack_row(r).is_some()) {
                false => Entry::Whole,
                true => least,
            };
            let len = cout * kind.words();
            let Some(dst) = words.get_mut(used..used.saturating_add(2 + len)) else {
                break 'entry;
            };
            let (h, body) = dst.split_at_mut(2);
            h.copy_from_slice(&head(kind)?);
            match (kind, slot) {
                (Entry::Whole, _) => body.copy_from_slice(bytemuck::cast_slice(rows)),
                (Entry::Packed, _) => {
                    for (o, &r) in body.chunks_exact_mut(2).zip(rows.iter()) {
                        o.copy_from_slice(&pack_row(r).unwrap_or_default());
                    }
                }
                (Entry::Split, Some(at)) => {
                    // The scales were read above and are not read again until the next
                    // switch.
                    let mults: &mut [u32] = bytemuck::try_cast_slice_mut(
                        weights.get_mut(at..at + 4 * cout).ok_or(bad)?,
                    )
                    .map_err(|_| EngineError::Misaligned)?;
                    for ((o, m), &r) in body.iter_mut().zip(mults).zip(rows.iter()) {
                        [*o, *m] = pack_row(r).unwrap_or_default();
                    }
                }
                (Entry::Split, None) => return Err(bad),
            }
            used += 2 + len;
        }
        // The rows are read: a rebuilt pointwise expert takes the packed slot's layout.
        if let Some((Err(r), cin, Some(p))) = pw {
            (p.pack)(cout, cin, i8s_mut(weights.get_mut(r).ok_or(bad)?));
        }
    }
    Ok((whole, 4 * used))
}

/// Re-expresses int8 codes quantised with `from` in `to` (identity when they are equal),
/// through a 256-entry table of [`rescale_one`] (the same values, one lookup each).
pub(super) fn rescale(y: &mut [i8], from: QParams, to: QParams) {
    if from != to {
        let t = rescale_table(from, to);
        y.iter_mut().for_each(|v| *v = t[*v as u8 as usize]);
    }
}

/// `t[code as u8] = rescale_one(code, from, to)` for every int8 code.
pub(super) fn rescale_table(from: QParams, to: QParams) -> [i8; 256] {
    let codes: [i8; 256] = core::array::from_fn(|i| i as u8 as i8);
    let mut t = [0i8; 256];
    rescale_into(&codes, from, to, &mut t);
    t
}

/// `out[i] = rescale_one(x[i], from, to)`, the same bytes. On x86_64: blocks of codes
/// dequantised to f32, then [`crate::switch::quantize_row`] (`QParams::quantize`'s rounding
/// in a form that vectorises) instead of one scalar division and rounding per code. Cortex-M
/// and aarch64 keep the scalar form, which costs them fewer instructions (with the row
/// form the concats counted about twice as many on Cortex-M: no SIMD, and its
/// magic-number rounding is longer than `VCVT`).
pub(super) fn rescale_into(x: &[i8], from: QParams, to: QParams, out: &mut [i8]) {
    if !cfg!(target_arch = "x86_64") {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = rescale_one(v, from, to);
        }
        return;
    }
    const BLK: usize = 64;
    let mut f = [0.0f32; BLK];
    for (xs, os) in x.chunks(BLK).zip(out.chunks_mut(BLK)) {
        for (v, &q) in f.iter_mut().zip(xs) {
            *v = from.dequantize(q);
        }
        crate::switch::quantize_row(to, false, &f[..xs.len()], os);
    }
}

/// One code re-expressed: the spec of [`rescale_into`] and [`rescale_table`].
#[inline]
pub(super) fn rescale_one(v: i8, from: QParams, to: QParams) -> i8 {
    // `to.quantize(…)`'s byte in the target's shortest form.
    crate::switch::quantize_one(to, from.dequantize(v))
}

/// Walks a department's deltas in graph order (expert indices increase along the ops), so
/// each lookup is O(1) amortised instead of a scan of the postcard sequence.
pub(super) struct DeltaCursor<'a> {
    seq: Seq<'a, DeltaRef>,
    it: SeqIter<'a, DeltaRef>,
    next: usize,
}

impl<'a> DeltaCursor<'a> {
    pub fn new(seq: Seq<'a, DeltaRef>) -> Self {
        DeltaCursor {
            seq,
            it: seq.iter(),
            next: 0,
        }
    }
    pub fn get(&mut self, i: usize) -> Option<DeltaRef> {
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

/// Geometry of a `Conv` / `DwConv` over `input` of `vin` into `vout`, after the format's
/// shape rule ([`validate::conv_shape_ok`]) holds.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_geom(
    vin: &ValueDesc,
    input: &Slice,
    vout: &ValueDesc,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    op: usize,
) -> R<Geom> {
    if !validate::conv_shape_ok(vin, input, vout, cout, k, stride, pad) {
        return Err(EngineError::Malformed { op });
    }
    Ok(Geom {
        h: vin.h as usize,
        w: vin.w as usize,
        in_stride: vin.c as usize,
        c_off: input.c_off as usize,
        cin: input.c_len as usize,
        ho: vout.h as usize,
        wo: vout.w as usize,
        cout,
        k,
        stride,
        pad,
    })
}

#[cfg(test)]
mod tests {
    use super::{op_requant, pack_row, rescale_into, rescale_one, rescale_table, unpack_row};
    use super::{requant_table, Entry, RqCache};
    use crate::engine::testnet::Rng;
    use crate::quant::QParams;

    /// `io_n` gives exactly the ranges `fits_n` accepts, and those right: random ranges
    /// (reversed and out-of-bounds ones too, empty ones at 0 as for an op not fused) in a
    /// small arena holding each byte's index, two and three outputs, against the
    /// definition — outputs in bounds and disjoint, every input in bounds and overlapping
    /// no output.
    #[test]
    fn io_n_gives_what_fits_n_accepts() {
        fn check<const M: usize>(r: &mut Rng) -> usize {
            let range = |r: &mut Rng, len: usize| {
                if r.below(8) == 0 {
                    return 0..0;
                }
                let a = r.below(len + 3);
                a..a + r.below(8) - usize::from(a > 0 && r.below(9) == 0) * 2.min(a)
            };
            let mut ok = 0;
            for _ in 0..100_000 {
                let len = r.below(40);
                let outs: [_; M] = core::array::from_fn(|_| range(r, len));
                let ins = [range(r, len), range(r, len)];
                let good = |x: &core::ops::Range<usize>| x.start <= x.end && x.end <= len;
                // (An empty range strictly inside another is not apart from it: it lies in
                // no gap.)
                let apart = |x: &core::ops::Range<usize>, y: &core::ops::Range<usize>| {
                    x.end <= y.start || y.end <= x.start
                };
                let want = outs.iter().all(good)
                    && (0..M).all(|a| (a + 1..M).all(|b| apart(&outs[a], &outs[b])))
                    && ins
                        .iter()
                        .all(|i| good(i) && outs.iter().all(|o| apart(i, o)));
                let fits = super::fits_n(len, &outs, &ins);
                assert_eq!(fits, want, "{len} {outs:?} {ins:?}");
                let mut act: std::vec::Vec<u8> = (0..len as u8).collect();
                let got = super::io_n(&mut act, outs.clone(), ins.clone());
                assert_eq!(got.is_some(), want);
                if let Some((o, [x, y])) = got {
                    ok += 1;
                    let at = |s: &[u8], r: &core::ops::Range<usize>| {
                        s.len() == r.len() && s.iter().zip(r.clone()).all(|(&v, i)| v as usize == i)
                    };
                    assert!((0..M).all(|k| at(o[k], &outs[k])));
                    assert!(at(x, &ins[0]) && at(y, &ins[1]));
                }
            }
            ok
        }
        let mut r = Rng::new(crate::test_seed());
        let (two, three) = (check::<2>(&mut r), check::<3>(&mut r));
        assert!(
            two > 1000 && three > 300,
            "only {two} and {three} cases fit"
        );
    }

    /// `row_sum` is the plain sum: lengths 0..=300 and 4096 (past the i16 lanes' 127
    /// steps), random bytes, all −128 and all 127.
    #[test]
    fn row_sum_is_the_sum() {
        let mut r = Rng::new(crate::test_seed());
        for n in (0..=300).chain([2032, 2048, 4096]) {
            for fill in [None, Some(-128i8), Some(127)] {
                let w: std::vec::Vec<i8> = (0..n)
                    .map(|_| fill.unwrap_or_else(|| r.below(256) as u8 as i8))
                    .collect();
                let want: i32 = w.iter().map(|&v| v as i32).sum();
                assert_eq!(super::row_sum(&w), want, "n {n} fill {fill:?}");
            }
        }
    }

    /// `pack_row` packs exactly the rows it can give back: random rows over the whole i32
    /// space and around the bias and shift bounds.
    #[test]
    fn packed_rows_round_trip() {
        let mut r = Rng::new(crate::test_seed());
        let mut any = || r.next_u64() as i32;
        let mut packed = 0;
        for k in 0..200_000 {
            let edge: [i32; 7] = [-(1 << 26) - 1, -(1 << 26), (1 << 26) - 1, 1 << 26, 0, -1, 1];
            let mut row = [any(), any(), any()];
            if k % 2 == 0 {
                row[0] = edge[k / 2 % edge.len()].wrapping_add(any() % 3);
                row[2] = (any() % 40).wrapping_add(4);
                row[2] = if row[2] > 0 { -row[2] + 8 } else { row[2] };
            }
            let fits = (-31..=0).contains(&row[2]) && (-(1 << 26)..1 << 26).contains(&row[0]);
            match pack_row(row) {
                Some(p) => {
                    packed += 1;
                    assert!(fits, "{row:?}");
                    assert_eq!(unpack_row(p), row);
                }
                None => assert!(!fits, "{row:?}"),
            }
        }
        assert!(packed > 10_000, "{packed}");
    }

    /// `op_requant` returns a cached entry's rows (packed, split or whole), passes over
    /// entries of ops inference does not ask for, and computes the tables of ops not cached:
    /// every op's table equals the one computed for it.
    #[test]
    fn op_requant_reads_packed_split_whole_and_missing_entries() {
        let seed = crate::test_seed();
        let mut r = Rng::new(seed);
        let table: crate::kernels::RequantTable = crate::quant::requant_table;
        let mut kinds = [0usize; 3];
        for _ in 0..50 {
            let ops: std::vec::Vec<_> = (0..8)
                .map(|_| {
                    let c = 1 + r.below(40);
                    let q = |r: &mut Rng| QParams {
                        scale: 2f32.powf(r.uniform(6.0)),
                        zero_point: r.below(256) as i32 - 128,
                    };
                    let ws: std::vec::Vec<f32> =
                        (0..c).map(|_| 2f32.powf(r.uniform(8.0) - 8.0)).collect();
                    (r.vec(c, 50.0), q(&mut r), ws, q(&mut r), r.below(5))
                })
                .collect();
            // Kind 0: not cached, 1: packed if it packs, 2: whole, 3: cached but not asked,
            // 4: split if it packs (the multipliers in `slots`, where the scales were).
            let mut words = std::vec::Vec::new();
            let mut slots: std::vec::Vec<std::vec::Vec<f32>> = std::vec::Vec::new();
            let mut scratch = std::vec![[0i32; 3]; 64];
            for (i, (bias, qx, ws, qy, kind)) in ops.iter().enumerate() {
                slots.push(ws.clone());
                if *kind == 0 {
                    continue;
                }
                let rows = &mut scratch[..bias.len()];
                table(bias, qx.scale, ws, qy.scale, rows);
                let packs = *kind != 2 && rows.iter().all(|&w| pack_row(w).is_some());
                let entry = match (packs, *kind) {
                    (false, _) => Entry::Whole,
                    (true, 4) => Entry::Split,
                    (true, _) => Entry::Packed,
                };
                kinds[entry as usize] += 1;
                words.extend([i as u32, (bias.len() << 2 | entry as usize) as u32]);
                for (j, &w) in rows.iter().enumerate() {
                    match entry {
                        Entry::Packed => words.extend(pack_row(w).unwrap()),
                        Entry::Whole => words.extend(w.map(|v| v as u32)),
                        Entry::Split => {
                            let [a, m] = pack_row(w).unwrap();
                            words.push(a);
                            slots[i][j] = f32::from_bits(m);
                        }
                    }
                }
            }
            let mut cache = RqCache {
                words: &words,
                table,
            };
            let mut requant = std::vec![[0i32; 3]; 64];
            let mut want = std::vec![[0i32; 3]; 64];
            for (i, (bias, qx, ws, qy, kind)) in ops.iter().enumerate() {
                if *kind == 3 {
                    continue;
                }
                let want = requant_table(
                    table,
                    bytemuck::cast_slice_mut(&mut want),
                    bias,
                    *qx,
                    ws,
                    *qy,
                    i,
                )
                .unwrap();
                let (got, _) = op_requant(
                    &mut cache,
                    bytemuck::cast_slice_mut(&mut requant),
                    bias,
                    *qx,
                    &slots[i],
                    *qy,
                    i,
                )
                .unwrap();
                assert_eq!(got, &*want, "op {i} kind {kind} (seed {seed})");
            }
            assert!(cache.words.is_empty() || ops[7].4 == 3);
        }
        assert!(kinds.iter().all(|&k| k > 20), "entries by kind: {kinds:?}");
    }

    /// Every code, random pairs of quantisations (scales over many octaves, zero points
    /// inside and far outside the int8 range, equal pairs): the vectorisable rescale gives
    /// `rescale_one`'s bytes, as does the table; lengths around the 64-code blocks.
    #[test]
    fn rescale_into_and_table_are_rescale_one() {
        let mut r = Rng::new(crate::test_seed());
        let codes: std::vec::Vec<i8> = (0..300).map(|i| (i * 37 % 256) as u8 as i8).collect();
        for _ in 0..2000 {
            let mut q = || QParams {
                scale: 2f32.powf(r.uniform(12.0)) * (1.0 + r.uniform(0.5)),
                zero_point: match r.below(4) {
                    0 => r.below(1 << 20) as i32 - (1 << 19),
                    _ => r.below(256) as i32 - 128,
                },
            };
            let (from, to) = (q(), q());
            let to = if r.below(8) == 0 { from } else { to };
            let t = rescale_table(from, to);
            let n = r.below(codes.len() + 1);
            let mut got = std::vec![0i8; n];
            rescale_into(&codes[..n], from, to, &mut got);
            for (&v, &g) in codes[..n].iter().zip(&got) {
                let want = rescale_one(v, from, to);
                assert_eq!(g, want, "{v} {from:?} -> {to:?}");
                assert_eq!(t[v as u8 as usize], want, "table {v} {from:?} -> {to:?}");
            }
        }
    }
}
