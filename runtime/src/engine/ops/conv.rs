//! `Op::Conv`: an ungrouped k×k (the stem) or 1×1 convolution, BN folded, optional ReLU.
//!
//! Prepare picks the weight source: the bundle's `W0` (a shared conv), the rebuilt
//! `W0 + B·A` in the arena (a Materialized expert), or `W0` plus the department's factors
//! applied on the fly (a streamed 1x1 expert, see [`crate::switch`]; a streamed k×k one, the
//! stem, and the pointwise ones `Plan::rebuilds_per_inference` names, are rebuilt into
//! scratch for each inference). Eval runs the f32 or int8 kernel from the table, and for
//! streamed 1x1 experts the low-rank path.

use core::ops::Range;

use super::{
    concat_shuffle, conv_geom, dwconv, expect_len, f32s, f32s_mut, fits_n, i8s, i8s_mut, io_n,
    op_requant, out_q, requant_table, tensor, Ctx, RqCache, R,
};
use crate::engine::par::Stage;
use crate::engine::EngineError;
use crate::format::{layout, Mode, Op, TensorRef};
use crate::kernels::{ConvI8, Geom};
use crate::quant::QParams;
use crate::switch::{self, Delta};

/// A conv's weights, prepared.
enum Weights<'w> {
    /// The bundle's `W0`: `(weight, wscale)` tensors of the shared payload.
    Shared(&'w [u8], &'w [u8]),
    /// A Materialized expert's slot of the weights region (weights, then int8 scales — or,
    /// where `select` cached the table split, its multipliers: `ops::Entry::Split`).
    Rebuilt(&'w [u8]),
}

/// The weights of a conv not streamed: a rebuilt expert's `slot` of the weights region, else
/// the bundle's `W0` tensors (`wscale`, int8 only).
fn weights<'w>(
    cx: &Ctx<'w, '_>,
    slot: Option<Range<usize>>,
    (weight, wscale): (TensorRef, TensorRef),
    op: usize,
) -> R<Weights<'w>> {
    Ok(match slot {
        Some(r) => Weights::Rebuilt(cx.weights.get(r).ok_or(EngineError::Malformed { op })?),
        None => {
            let ws = if cx.int8 {
                tensor(cx.shared, wscale, op)?
            } else {
                &[]
            };
            Weights::Shared(tensor(cx.shared, weight, op)?, ws)
        }
    })
}

/// int8 `w` of a `(cout, cin, k, pad)` conv with `hw` output pixels (`wlen` weight bytes in
/// a rebuilt expert's slot): the weights, their per-channel scales (or a split cache
/// entry's multipliers) and the table's packed pointwise slot where the rebuilt expert is in
/// its layout ([`packed`]).
fn i8_weights<'w>(
    kern: &crate::kernels::Kernels,
    mode: Mode,
    w: Weights<'w>,
    wlen: usize,
    (cout, cin, k, pad): (usize, usize, usize, usize),
    hw: usize,
    op: usize,
) -> R<(&'w [i8], &'w [f32], Option<crate::kernels::PackedConv1x1I8>)> {
    let n = cout * cin * k * k;
    Ok(match w {
        Weights::Rebuilt(b) => {
            let (w, s) = b.split_at(wlen);
            let packed =
                (kern.conv1x1_i8_packed).filter(|p| packed(mode, k, pad, hw, p.min_pixels));
            (&i8s(w)[..n], &f32s(s)?[..cout], packed)
        }
        Weights::Shared(w, ws) => (
            expect_len(i8s(w), n, op)?,
            expect_len(f32s(ws)?, cout, op)?,
            None,
        ),
    })
}

/// Which ops [`eval`] ran inside the conv's own parts.
pub(in crate::engine) struct Fused {
    /// The depthwise conv before it (split across threads).
    pub pre: bool,
    /// The concat + shuffle after it (op `i + 1`).
    pub cat: bool,
    /// The pointwise conv after that (op `i + 2`, [`PostConv`]).
    pub post: bool,
}

/// The pointwise conv after a fused concat that reads the concat's output (op `i + 2` of a
/// conv `i`: the next ShuffleNetV2 block's first conv, or the head conv after the last
/// block), prepared to run in the conv's parts after the concat ([`crate::engine::par::Then::post`]): int8, its
/// weights rebuilt at the switch or shared (not streamed: no scratch, no delta cursor), its
/// requantisation table at the requant region's end, where such a conv (one right after the
/// concat whose output it reads) keeps it when it runs on its own too (`at_end` of
/// [`eval`]).
struct PostConv<'w> {
    op: usize,
    g: Geom,
    /// Its output's arena bytes.
    rout: Range<usize>,
    f: ConvI8,
    w: &'w [i8],
    /// Per-channel weight scales (or a split cache entry's multipliers), biases.
    ws: &'w [f32],
    bias: &'w [f32],
    q: (QParams, QParams),
    relu: bool,
    /// Bytes of the weights region it takes (0: shared weights).
    slot: usize,
}

/// Op `j` as a [`PostConv`] reading value `reads` (the concat's output), or `None` where
/// it is not one. (Out of line: [`eval`]'s own path stays short.)
#[inline(never)]
fn post_conv<'w>(cx: &Ctx<'w, '_>, j: usize, op: &Op, reads: u16) -> R<Option<PostConv<'w>>> {
    let bad = EngineError::Malformed { op: j };
    let Op::Conv {
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
    } = *op
    else {
        return Ok(None);
    };
    if !cx.int8 || input.value != reads || (k, stride, pad) != (1, 1, 0) {
        return Ok(None);
    }
    let (vin, vout) = (cx.value(input.value, j)?, cx.value(output, j)?);
    let cout = cout as usize;
    let g = conv_geom(&vin, &input, &vout, cout, 1, 1, 0, j)?;
    let hw = g.ho * g.wo;
    if expert.is_some() && cx.plan.streams(j, cout, g.cin, 1, hw) {
        return Ok(None);
    }
    let (wlen, slot) = layout::expert_slot(cout, g.cin, 1, true).ok_or(bad)?;
    // Its slot, after the conv's (taken once it runs in the conv's parts).
    let slot = if expert.is_some() { slot } else { 0 };
    let end = cx.wofs.checked_add(slot).ok_or(bad)?;
    let w = weights(cx, expert.map(|_| cx.wofs..end), (weight, wscale), j)?;
    let (w, ws, packed) = i8_weights(
        &cx.kern,
        cx.plan.mode(),
        w,
        wlen,
        (cout, g.cin, 1, 0),
        hw,
        j,
    )?;
    let f = packed.map_or(cx.kern.conv1x1_i8, |p| p.conv);
    Ok(Some(PostConv {
        op: j,
        g,
        rout: cx.range(&vout, j)?,
        f,
        w,
        ws,
        bias: expect_len(f32s(tensor(cx.shared, bias, j)?)?, cout, j)?,
        q: cx.io_qparams(input.value, output, j)?.ok_or(bad)?,
        relu,
        slot,
    }))
}

impl PostConv<'_> {
    /// Bytes of its table in the requant region.
    fn table_bytes(&self) -> usize {
        12 * self.g.cout
    }

    /// Its table (in `requant` unless the cache holds it whole) and input zero point: read
    /// ahead of the conv's, on a copy of the cache's cursor (which the conv's table then
    /// passes, and the ops after this one pass this one's).
    fn table<'r>(&self, cache: RqCache<'r>, requant: &'r mut [u8]) -> R<(&'r [[i32; 3]], i32)> {
        let (qx, qy) = self.q;
        let mut ahead = cache;
        let (rq, folded) = op_requant(&mut ahead, requant, self.bias, qx, self.ws, qy, self.op)?;
        // A folded table's biases hold the zero point.
        Ok((rq, if folded { 0 } else { qx.zero_point }))
    }
}

/// Runs op `i`, a `Conv`; with `next`, op `i + 1`, too where it is the concat + shuffle
/// that reads this conv's output (threads: it runs in the conv's pixel parts, see
/// [`crate::engine::par::Then`]), and then `post`, op `i + 2`, where it is a [`PostConv`];
/// with `pre`, the depthwise conv before it that writes its input (op `i − 1`, not run
/// yet): through [`crate::engine::par::Par::dw_conv_i8`] where it can (int8, a pointwise
/// conv on the plain slot, the arena ranges apart: in the conv's parts with threads), else
/// on its own first; `pre`'s `done()` once it ran on its own. The depthwise conv goes with
/// it wherever the two alone can, whatever the thread count (their tables side by side);
/// the concat and the post conv only with threads. So the requantisation tables lie where
/// they lie for any thread count: the depthwise conv's first, this conv's after it (at the
/// region's end with `at_end`: a conv right after the concat whose output it reads, as a
/// post conv), a post conv's at the region's end.
#[allow(clippy::too_many_arguments)]
pub(in crate::engine) fn eval(
    cx: &mut Ctx<'_, '_>,
    i: usize,
    op: &Op,
    next: Option<&Op>,
    post: Option<&Op>,
    at_end: bool,
    pre: Option<(&dwconv::Prepared<'_>, &mut dyn FnMut())>,
) -> R<Fused> {
    let bad = EngineError::Malformed { op: i };
    let Op::Conv {
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
    } = *op
    else {
        return Err(bad);
    };
    // Prepare: geometry, tensors, weight source, quantisation.
    let (vin, vout) = (cx.value(input.value, i)?, cx.value(output, i)?);
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
    let (wlen, slot) = layout::expert_slot(cout, g.cin, kk, cx.int8).ok_or(bad)?;
    let n = cout * g.cin * kk * kk; // fits: `expert_slot` multiplied it checked
    let shared = cx.shared;
    let bias = expect_len(f32s(tensor(shared, bias, i)?)?, cout, i)?;
    let (w, delta) = match expert {
        Some(_) if !cx.plan.streams(i, cout, g.cin, kk, g.ho * g.wo) => {
            let r = cx.wofs..cx.wofs.checked_add(slot).ok_or(bad)?;
            cx.wofs = r.end;
            (weights(cx, Some(r), (weight, wscale), i)?, None)
        }
        Some(e) => {
            let dref = cx.cursor.get(e as usize).ok_or(EngineError::DeptMismatch)?;
            let dept = cx.dept;
            let d = Delta::new(
                dept.payload,
                dref,
                dept.manifest.delta_dtype,
                cout,
                g.cin,
                kk,
                cx.m.rank as usize,
            )
            .ok_or(EngineError::DeptMismatch)?;
            (weights(cx, None, (weight, wscale), i)?, Some(d))
        }
        None => (weights(cx, None, (weight, wscale), i)?, None),
    };
    let q = cx.io_qparams(input.value, output, i)?;
    let (rin, rout) = (cx.range(&vin, i)?, cx.range(&vout, i)?);
    let (pointwise, pad) = (kk == 1 && pad == 0, pad as usize);
    let mode = cx.plan.mode();
    // A streamed expert that `Streaming` rebuilds in the scratch for this inference instead
    // (the plan's choice; a padded 1x1 too, which has no low-rank path).
    let rebuilt = delta.is_some()
        && (!pointwise || cx.plan.rebuilds_per_inference(cout, g.cin, kk, g.ho * g.wo));
    // The concat that reads this conv's output (not both sides) runs with it, and the
    // depthwise conv that writes its input (int8, through the plain slot, the requant
    // region holding both tables), where no op's output overlaps an input of the ops run
    // together (the planner may give a later op's output a value an earlier one reads
    // last).
    let cat = match next {
        Some(n @ Op::ConcatShuffle { a, b, .. }) if b.value == output && a.value != output => {
            Some(concat_shuffle::prepare(cx, i + 1, n)?)
        }
        _ => None,
    };
    let post = match (&cat, post) {
        (Some(c), Some(n)) if !at_end => post_conv(cx, i + 2, n, c.output)?,
        _ => None,
    };
    let (pre, mut pre_done) = match pre {
        Some((d, done)) => (Some(d), Some(done)),
        None => (None, None),
    };
    let room = cx.requant.len();
    let fusable = |d: &&dwconv::Prepared<'_>| {
        cx.int8
            && pointwise
            && g.stride == 1
            && (delta.is_none() || rebuilt)
            && d.rout == rin
            && (g.c_off, g.in_stride, g.h, g.w) == (0, d.g.cout, d.g.ho, d.g.wo)
            && room >= d.table_bytes() + 12 * cout
    };
    type Group<'p, 'c, 'q> = (
        Option<&'p dwconv::Prepared<'p>>,
        Option<&'c concat_shuffle::Prepared>,
        Option<&'q PostConv<'q>>,
    );
    let outs = |(p, c, q): Group<'_, '_, '_>| {
        [
            p.map_or(0..0, |_| rin.clone()),
            rout.clone(),
            c.map_or(0..0, |c| c.rout.clone()),
            q.map_or(0..0, |q| q.rout.clone()),
        ]
    };
    let ins = |(p, c, _): Group<'_, '_, '_>| {
        [
            p.map_or(rin.clone(), |d| d.rin.clone()),
            c.map_or(0..0, |c| c.ra.clone()),
        ]
    };
    // The post conv's table at the region's end, past the depthwise conv's and this conv's.
    let post_room = |(p, _, q): Group<'_, '_, '_>| {
        q.is_none_or(|q| room >= p.map_or(0, |d| d.table_bytes()) + 12 * cout + q.table_bytes())
    };
    let (fpre, fcat, fpost) = (
        pre.filter(fusable).filter(|_| !at_end),
        cat.as_ref(),
        post.as_ref(),
    );
    let fits = |t: Group<'_, '_, '_>| fits_n(cx.act.len(), &outs(t), &ins(t)) && post_room(t);
    // (The depthwise conv first: it goes with this conv wherever the two alone can.)
    let (fpre, fcat, fpost) = [
        (fpre, fcat, fpost),
        (fpre, fcat, None),
        (fpre, None, None),
        (None, fcat, fpost),
        (None, fcat, None),
    ]
    .into_iter()
    .find(|&(p, c, q)| (p.is_some() || c.is_some()) && fits((p, c, q)))
    .unwrap_or((None, None, None));
    if let (Some(d), None) = (pre, fpre) {
        dwconv::run(cx, d)?;
        if let Some(done) = pre_done.as_mut() {
            done();
        }
    }
    let cat = fcat;
    if let Some(p) = fpost {
        // Its slot, after this conv's.
        cx.wofs += p.slot;
    }
    let mut fused = Fused {
        pre: false,
        cat: cat.is_some(),
        post: fpost.is_some(),
    };
    let group = (fpre, cat, fpost);
    let ([xo, y, out, ypost], [x, xa]) = io_n(cx.act, outs(group), ins(group)).ok_or(bad)?;
    let out = cat.map(|_| out);

    // Eval.
    let kern = cx.kern;
    match q {
        Some((qx, qy)) => {
            let dims = (cout, g.cin, kk, pad);
            let (w, ws, packed) = i8_weights(&kern, mode, w, wlen, dims, g.ho * g.wo, i)?;
            // The fused depthwise conv: its table first (the cache is read in graph order),
            // then this conv's after it in the requant region (at its end with `at_end`),
            // and a post conv's at its end.
            let (region, rq_post) = match (fpost, at_end) {
                (Some(p), _) => cx.requant.split_at_mut(room - p.table_bytes()),
                (None, true) => {
                    let (rest, end) = cx.requant.split_at_mut(room.saturating_sub(12 * cout));
                    (end, rest)
                }
                (None, false) => (&mut cx.requant[..], &mut [][..]),
            };
            let (rq_pre, requant) = region.split_at_mut(fpre.map_or(0, |d| d.table_bytes()));
            let post_table = match fpost {
                Some(p) => Some((p, p.table(cx.rq, rq_post)?)),
                None => None,
            };
            let run_post = post_table.map(|(p, (rq, zx))| {
                let (f, g, w, q) = (p.f, p.g, p.w, out_q(p.q.1, p.relu));
                move |_: usize, x: &[i8], y: &mut [i8]| {
                    let part = crate::engine::par::pixel_part(&g, y.len() / g.cout);
                    f(&part, x, zx, w, rq, q, y)
                }
            });
            let (pre, x) = match fpre {
                Some(d) => (d.pre_i8(&mut cx.rq, rq_pre, x, xo)?, &[][..]),
                None => (None, i8s(x)),
            };
            let y = i8s_mut(y);
            // The fused concat: side `a` from the arena, side `b` the part's outputs.
            let (kcat, xa) = (kern.concat_shuffle_i8, i8s(xa));
            let run_cat = cat.as_ref().map(|c| {
                move |p0: usize, ys: &[i8], o: &mut [i8]| c.run_i8(kcat, &xa[p0 * c.sa..], ys, o)
            });
            let dw = (kern.dwconv3x3_i8, kern.dwconv3x3_i8_pixels);
            // A k×k conv's (the stem's) pixels twin: `f` is then `kern.conv_i8`.
            let rows = if pointwise { None } else { kern.conv_i8_pixels };
            let mut then = match (&cat, out, &run_cat) {
                (Some(c), Some(o), Some(f)) => {
                    Some(c.then(i8s_mut(o).get_mut(..c.out_len()).ok_or(bad)?, f))
                }
                _ => None,
            };
            if let (Some(t), Some(p), Some(f)) = (then.as_mut(), fpost, &run_post) {
                t.post = Some(Stage {
                    out: i8s_mut(ypost).get_mut(..p.g.out_len()).ok_or(bad)?,
                    unit: p.g.cout,
                    work: p.g.ho * p.g.wo * p.g.cout * p.g.cin,
                    f,
                });
            }
            match delta {
                None => {
                    let (rq, folded) = op_requant(&mut cx.rq, requant, bias, qx, ws, qy, i)?;
                    let f = match (pointwise, packed) {
                        (true, Some(p)) => p.conv,
                        (true, None) => kern.conv1x1_i8,
                        (false, _) => kern.conv_i8,
                    };
                    // A folded table's biases hold the zero point (pointwise convs only).
                    let zx = match folded {
                        false => qx.zero_point,
                        true if pointwise => 0,
                        true => return Err(bad),
                    };
                    let q = out_q(qy, relu);
                    match (pre, pre_done.as_mut()) {
                        (Some(p), Some(done)) => {
                            let par = cx.par;
                            fused.pre = par.dw_conv_i8(p, dw, done, f, &g, zx, w, rq, q, y, then)
                        }
                        _ => (cx.par).conv_i8(f, (false, rows), &g, x, zx, w, rq, q, y, then),
                    }
                }
                Some(d) if !rebuilt => {
                    let st = switch::StreamI8 { x: qx, y: qy, relu };
                    let scratch = f32s_mut(cx.scratch)?;
                    let lr = d
                        .lowrank_1x1(scratch, g.ho * g.wo, kern.streaming.decode)
                        .ok_or(bad)?;
                    let f = (lr.at, lr.bt, lr.r);
                    let macs = g.ho * g.wo * g.cout * g.cin;
                    cx.par
                        .pixels(&g, x, (lr.u, lr.r), y, macs, then, |g, x, u, y| {
                            switch::stream_conv1x1_i8_decoded(&kern, g, x, w, ws, bias, f, u, st, y)
                        });
                }
                Some(d) => {
                    let (d, scratch) = decode(&kern, &d, cx.scratch, i)?;
                    let (w, ws) = rebuild_i8(&kern, &d, w, ws, scratch, i)?;
                    let rq = requant_table(kern.requant_table, requant, bias, qx, ws, qy, i)?;
                    let f = if pointwise {
                        kern.conv1x1_i8
                    } else {
                        kern.conv_i8
                    };
                    let (q, zx) = (out_q(qy, relu), qx.zero_point);
                    match (pre, pre_done.as_mut()) {
                        (Some(p), Some(done)) => {
                            let par = cx.par;
                            fused.pre = par.dw_conv_i8(p, dw, done, f, &g, zx, w, rq, q, y, then)
                        }
                        _ => (cx.par).conv_i8(f, (false, rows), &g, x, zx, w, rq, q, y, then),
                    }
                }
            }
        }
        None => {
            // A Materialized pointwise expert is in the packed slot's layout when the table
            // has one (`Engine::materialize` laid it out), as in int8.
            let (w, packed) = match w {
                Weights::Rebuilt(b) => (
                    &f32s(b)?[..n],
                    kern.conv1x1_f32_packed
                        .filter(|p| packed(mode, kk, pad, g.ho * g.wo, p.min_pixels)),
                ),
                Weights::Shared(w, _) => (expect_len(f32s(w)?, n, i)?, None),
            };
            let (x, y) = (f32s(x)?, f32s_mut(y)?);
            let (w, stream) = match delta {
                Some(d) if rebuilt => {
                    let (d, scratch) = decode(&kern, &d, cx.scratch, i)?;
                    let wt = scratch.get_mut(..n).ok_or(bad)?;
                    (kern.materialize_f32)(w, &d, wt);
                    (&*wt, None)
                }
                d => (w, d),
            };
            // (Empty where nothing is fused: a `u8` slice of no particular alignment.)
            let xa = if cat.is_some() { f32s(xa)? } else { &[] };
            let run_cat = cat.as_ref().map(|c| {
                move |p0: usize, ys: &[f32], o: &mut [f32]| c.run_f32(&xa[p0 * c.sa..], ys, o)
            });
            let mut out = match (&cat, out) {
                (Some(c), Some(o)) => Some(f32s_mut(o)?.get_mut(..c.out_len()).ok_or(bad)?),
                _ => None,
            };
            let mut then = match (&cat, &mut out, &run_cat) {
                (Some(c), Some(o), Some(f)) => Some(c.then(o, f)),
                _ => None,
            };
            // A streamed 1x1 expert applies ReLU after its low-rank correction.
            let relu_now = relu && stream.is_none();
            let f = match (pointwise, packed) {
                (true, Some(p)) => p.conv,
                (true, None) => kern.conv1x1_f32,
                (false, _) => kern.conv_f32,
            };
            let now = if stream.is_some() { None } else { then.take() };
            cx.par.conv_f32(
                f,
                kern.pix_align_f32,
                false,
                &g,
                x,
                w,
                bias,
                relu_now,
                y,
                now,
            );
            if let Some(d) = stream {
                let scratch = f32s_mut(cx.scratch)?;
                let lr = d
                    .lowrank_1x1(scratch, g.ho * g.wo, kern.streaming.decode)
                    .ok_or(bad)?;
                let f = (lr.at, lr.bt, lr.r);
                let work = g.ho * g.wo * (g.cout + g.cin) * lr.r;
                cx.par
                    .pixels(&g, x, (lr.u, lr.r), y, work, then, |g, x, u, y| {
                        switch::stream_lowrank_f32_decoded(&kern, g, x, f, u, relu, y)
                    });
            }
            (cx.observe)(output as usize, y);
            if let (Some(c), Some(o)) = (&cat, out) {
                (cx.observe)(c.output as usize, o);
            }
        }
    }
    Ok(fused)
}

/// Whether a rebuilt expert conv (`k`, `pad`, `hw` output pixels) is kept in the layout of
/// the table's packed pointwise slot (whose `min_pixels` is given): `Engine::materialize`
/// packs it and [`eval`] runs the packed conv on it. Every rebuilt expert, in `Auto` too:
/// laying a small layer out once per switch costs less than laying it out per inference.
pub(in crate::engine) fn packed(
    mode: Mode,
    k: usize,
    pad: usize,
    hw: usize,
    min_pixels: usize,
) -> bool {
    mode != Mode::Streaming && k == 1 && pad == 0 && hw >= min_pixels
}

/// A streamed k×k expert (the stem), or a pointwise one `Plan::rebuilds_per_inference`
/// names, rebuilt for this inference as the switch rebuilds a Materialized one
/// (`switch::materialize_i8_with`), in the scratch after its decoded factors: its
/// `Cout·Cin·k²` weights cost a few thousand operations against the conv's `H·W` times as
/// many, and the conv then runs the plain int8 slot — the Materialized layer's bytes at its
/// speed, with no weight RAM held between inferences. Returns the int8 weights and their
/// per-channel scales.
fn rebuild_i8<'s>(
    kern: &crate::kernels::Kernels,
    d: &Delta<'_>,
    w0: &[i8],
    s0: &[f32],
    scratch: &'s mut [f32],
    op: usize,
) -> R<(&'s [i8], &'s [f32])> {
    let bad = EngineError::Malformed { op };
    let (n, cout) = (d.channel_len(), d.cout);
    let (row, rest) = scratch.split_at_mut(n.min(scratch.len()));
    let (ws, rest) = rest.split_at_mut(cout.min(rest.len()));
    let w = bytemuck::cast_slice_mut::<f32, i8>(rest).get_mut(..cout * n);
    let (Some(w), true, true) = (w, row.len() == n, ws.len() == cout) else {
        return Err(bad);
    };
    switch::materialize_i8_with(kern, w0, s0, d, row, w, ws);
    Ok((w, ws))
}

/// `d`'s factors decoded to f32 at the start of `scratch` by the `decode_factors` slot of
/// `kern`, and the rest of `scratch`; `d` itself and all of `scratch` where both factors
/// are already aligned f32 (nothing to decode: the copy cost the 0.5x @64 switch ~6 %).
pub(in crate::engine) fn decode<'s, 'd: 's>(
    kern: &crate::kernels::Kernels,
    d: &Delta<'d>,
    scratch: &'s mut [u8],
    op: usize,
) -> R<(Delta<'s>, &'s mut [f32])> {
    let scratch = f32s_mut(scratch)?;
    if d.a.as_f32().is_some() && d.b.as_f32().is_some() {
        return Ok((*d, scratch));
    }
    if scratch.len() < d.decoded_len() {
        return Err(EngineError::Malformed { op });
    }
    let (dec, rest) = scratch.split_at_mut(d.decoded_len());
    Ok((d.decoded(dec, kern.decode_factors), rest))
}
