//! Arena layout beyond the activation region — one rule shared by the packer (which writes
//! the totals into the bundle's `ArenaPlan`) and the engine (which carves the arena by it).
//!
//! ```text
//! [activations: align(ArenaPlan::activation_bytes)]
//! [value table: values × 16 B (h, w, c, offset as u32)]          decoded once, O(1) lookups
//! Materialized: for each expert conv in order: weight Cout·Cin·k·k elements (f32 or i8),
//!               int8 only: + Cout f32 per-channel weight scales;      each 16-aligned
//!               rebuild scratch: max over expert convs of
//!               D + (int8 only) Cin·k·k f32 (one channel)
//! Streaming:    low-rank scratch: max over expert convs of
//!               D + (k = 1: max(Hout·Wout·r, Cin) | k > 1: Cout·Cin·k·k) f32
//! Auto:         the rebuilt experts' slots as Materialized, the streamed ones' none
//!               ([`super::plan::Plan`]); scratch: the Streaming rule over the streamed
//!               experts, then the Materialized rule (over every expert: the cached
//!               requantisation tables keep Materialized's room)
//! where D = r·k·Cin·k + Cout·k·r·k: both factors decoded to f32 once per use.
//! Materialized, Streaming int8: + min(requant scratch, feature vector) at the scratch's
//!               end: room for the cached tables, as the two regions below share their
//!               bytes (in Streaming the only room: its scratch is busy at inference)
//! int8 (both):  requant scratch: max Cout over Conv/DwConv × (bias, multiplier, shift) i32
//! both:         pooled feature vector f32 [features], in the requant scratch's bytes
//!               (the `PoolHead` is the last op): the region is the larger of the two
//! Auto int8:    then min(the two) bytes unused. Every total is what it was with the
//!               two apart (bundles packed before keep their arena sizes)
//! ```
//! Every region starts 16-aligned. Requantisation parameters depend on the department's
//! activation scales: in int8 mode `select` computes them for the ops whose `[bias,
//! multiplier, shift]` rows fit the scratch that inference leaves idle (the rebuild scratch
//! and the bytes above; Streaming: those bytes alone, ~4 KiB at 0.5x), packed into 8 bytes
//! a row where they fit (Materialized, Streaming; `engine::ops::RqCache`) — in
//! Materialized a rebuilt expert's row into 4 bytes there and its multiplier over the
//! expert's per-channel scale in its weight slot, which inference does not read once the
//! table exists — the other ops at each `infer` into the requant scratch (integer
//! arithmetic, ~200 Cortex-M instructions a channel, against ~8 to unpack a cached row).
//! No region grows for it.
use crate::format::plan::Plan;
use crate::format::{Manifest, Mode, Op, Precision};

/// Rounds `n` up to the format's alignment.
pub const fn align(n: usize) -> usize {
    (n + crate::format::ALIGN - 1) & !(crate::format::ALIGN - 1)
}

/// One materialized expert's slot in the weights region: `(weight bytes, slot bytes)` —
/// the `Cout·Cin·k·k` weights (f32 or i8) 16-aligned, then for int8 the `Cout` f32
/// per-channel scales, 16-aligned. `None` on overflow.
pub fn expert_slot(cout: usize, cin: usize, k: usize, int8: bool) -> Option<(usize, usize)> {
    let n = cout.checked_mul(cin)?.checked_mul(k.checked_mul(k)?)?;
    let wlen = align_checked(n.checked_mul(if int8 { 1 } else { 4 })?)?;
    let scales = if int8 {
        align_checked(cout.checked_mul(4)?)?
    } else {
        0
    };
    Some((wlen, wlen.checked_add(scales)?))
}

/// f32 elements of the decoded factors of an expert conv: `A [r·k, Cin·k]` and `B [Cout·k,
/// r·k]`. `None` on overflow.
fn decoded(cout: usize, cin: usize, k: usize, rank: usize) -> Option<usize> {
    let rk = rank.checked_mul(k)?;
    rk.checked_mul(cin.checked_mul(k)?)?
        .checked_add(cout.checked_mul(k)?.checked_mul(rk)?)
}

/// f32 elements of the low-rank scratch a streamed expert conv takes at inference: its
/// decoded factors, then for k = 1 the larger of one input row and `u [Hout·Wout, r]`;
/// for k > 1 (the stem, rebuilt per inference) [`rebuild_scratch`]'s. `None` on overflow.
pub fn stream_scratch(
    cout: usize,
    cin: usize,
    k: usize,
    hw: usize,
    rank: usize,
    int8: bool,
) -> Option<usize> {
    if k != 1 {
        return rebuild_scratch(cout, cin, k, rank, int8);
    }
    decoded(cout, cin, k, rank)?.checked_add(cin.max(hw.checked_mul(rank)?))
}

/// f32 elements of scratch an expert conv takes when rebuilt at each inference (where
/// [`Plan::rebuilds_per_inference`] says so: a streamed k×k one always): its
/// decoded factors, then every channel's weight at once — int8: the rebuild's f32 row of
/// `Cin·k²`, the `Cout` scales, then the codes (4 a value); f32: the weights. `None` on
/// overflow.
pub fn rebuild_scratch(
    cout: usize,
    cin: usize,
    k: usize,
    rank: usize,
    int8: bool,
) -> Option<usize> {
    let ch = cin.checked_mul(k.checked_mul(k)?)?;
    let all = cout.checked_mul(ch)?;
    let w = match int8 {
        false => all,
        true => ch.checked_add(cout)?.checked_add(all.div_ceil(4))?,
    };
    decoded(cout, cin, k, rank)?.checked_add(w)
}

/// [`align`] that reports overflow instead of wrapping.
pub const fn align_checked(n: usize) -> Option<usize> {
    match n.checked_add(crate::format::ALIGN - 1) {
        Some(v) => Some(v & !(crate::format::ALIGN - 1)),
        None => None,
    }
}

/// Byte offsets of the regions of the arena (from its start) for one manifest and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regions {
    /// Start of the value table.
    pub values: usize,
    /// Start of the materialized expert weights (Materialized) or the low-rank scratch
    /// (Streaming).
    pub weights: usize,
    /// Start of the f32 scratch (decoded factors, plus the int8 rebuild's channel or the
    /// streaming low-rank buffer).
    pub scratch: usize,
    /// Bytes at the start of the scratch that streamed experts use at inference (the rest
    /// is idle then; 0 when nothing streams).
    pub stream_scratch: usize,
    /// Start of the int8 requant scratch, which also holds the pooled feature vector (its
    /// bytes are idle once the `PoolHead`, the last op, runs).
    pub requant: usize,
    /// Total bytes.
    pub total: usize,
}

/// Computes [`Regions`]; `None` if a size overflows `usize`.
pub fn regions(m: &Manifest<'_>, mode: Mode) -> Option<Regions> {
    regions_with(m, &Plan::new(m, mode))
}

/// [`regions`] for a plan already made (the engine keeps its own).
pub fn regions_with(m: &Manifest<'_>, plan: &Plan) -> Option<Regions> {
    let int8 = m.precision == Precision::Int8;
    let mut weights = 0usize;
    let mut chan = 0usize;
    let mut lowrank = 0usize;
    let mut max_cout = 0usize;
    let rank = m.rank as usize;
    for (i, op) in m.ops.iter().enumerate() {
        match op {
            Op::Conv {
                input,
                output,
                cout,
                k,
                expert,
                ..
            } => {
                let (cout, k, cin) = (cout as usize, k as usize, input.c_len as usize);
                max_cout = max_cout.max(cout);
                if expert.is_some() {
                    let hw = match m.values.get(output as usize) {
                        Some(v) => (v.h as usize).checked_mul(v.w as usize)?,
                        None => 0,
                    };
                    let streams = plan.streams(i, cout, cin, k, hw);
                    if !streams {
                        weights = weights.checked_add(expert_slot(cout, cin, k, int8)?.1)?;
                    }
                    if streams {
                        lowrank = lowrank.max(stream_scratch(cout, cin, k, hw, rank, int8)?);
                    }
                    // Auto sizes the rebuild scratch over every expert, as Materialized: it
                    // holds the cached requantisation tables, which would otherwise shrink.
                    if plan.mode() != Mode::Streaming {
                        let ch = cin.checked_mul(k.checked_mul(k)?)?;
                        let dec = decoded(cout, cin, k, rank)?;
                        chan = chan.max(dec.checked_add(if int8 { ch } else { 0 })?);
                    }
                }
            }
            Op::DwConv { input, .. } => max_cout = max_cout.max(input.c_len as usize),
            _ => {}
        }
    }
    let values = align_checked(m.arena.activation_bytes as usize)?;
    let w0 = values.checked_add(align_checked(m.values.len().checked_mul(16)?)?)?;
    // The streamed experts' buffers, then the rebuild's (idle at inference, where it holds
    // the cached requantisation tables). Materialized has no streamed experts (lowrank = 0),
    // Streaming no rebuilt ones (weights = chan = 0), so both keep their sizes.
    let scratch = w0.checked_add(weights)?;
    let stream_scratch = align_checked(lowrank.checked_mul(4)?)?;
    // The pooled features reuse the requant scratch: the `PoolHead` is the last op, so no
    // table is read after it. The bytes this saves stay in the arena, so every total is
    // what it was with the two regions apart: in Materialized and Streaming at the end of
    // the scratch (idle at inference: room for cached requantisation tables; Streaming has
    // no other), in Auto at the end (Auto keeps its cache, and so its switch, as it was).
    let rq = if int8 {
        align_checked(max_cout.checked_mul(12)?)?
    } else {
        0
    };
    let feat = align_checked(m.features as usize * 4)?;
    let (cache, pad) = match plan.mode() {
        Mode::Materialized | Mode::Streaming => (rq.min(feat), 0),
        Mode::Auto => (0, rq.min(feat)),
    };
    let requant = scratch
        .checked_add(stream_scratch)?
        .checked_add(align_checked(chan.checked_mul(4)?)?)?
        .checked_add(cache)?;
    let total = requant.checked_add(rq.max(feat))?.checked_add(pad)?;
    Some(Regions {
        values,
        weights: w0,
        scratch,
        stream_scratch,
        requant,
        total,
    })
}

/// Writes the totals of both modes into `m.arena` (the packer's and the fixture's last step
/// before encoding the manifest); `None` if a size overflows `usize` or `u32`.
pub fn fill_totals(m: &mut Manifest<'_>) -> Option<()> {
    m.arena.materialized_bytes = u32::try_from(regions(m, Mode::Materialized)?.total).ok()?;
    m.arena.streaming_bytes = u32::try_from(regions(m, Mode::Streaming)?.total).ok()?;
    Some(())
}

/// Arena bytes needed after the activation region in `mode` (saturates at `usize::MAX` when
/// the sizes overflow, which no arena can satisfy).
pub fn extra_bytes(m: &Manifest<'_>, mode: Mode) -> usize {
    match regions(m, mode) {
        Some(r) => r.total.saturating_sub(m.arena.activation_bytes as usize),
        None => usize::MAX,
    }
}
