//! Department switch: `W_t = W0 + reshape(B_t·A_t, [Cout, Cin, k, k])` (the paper's Eq. 1
//! at deployment, BN scale and LoRA scaling already folded into `B_t`'s rows).
//!
//! Never unmerge: every switch rebuilds `W_t` from the pristine `W0` of the bundle, so
//! select A, B, A gives A's weights bit for bit (subtracting a delta from rounded or
//! quantised weights drifts with every switch). int8 weights are dequantised per output
//! channel, the delta added in f32, and the sum re-quantised per output channel
//! (symmetric, ±127).
//!
//! Row-major reshape means output channel `o`'s `Cin·k·k` weights (OIHW order) are exactly
//! rows `o·k .. o·k + k` of `B·A` laid end to end, so one channel is `B[o·k..o·k+k, :] · A`.
//! Streaming mode never forms `ΔW` for 1x1 convs: it adds the low-rank path `B·(A·x)`.

pub use crate::format::factor::Factor;
use crate::format::{DeltaDType, DeltaRef};
use crate::kernels::{Geom, SumTile};
use crate::quant::QParams;

/// The two factors of one expert conv: `A [r·k, Cin·k]`, `B [Cout·k, r·k]`.
#[derive(Clone, Copy, Debug)]
pub struct Delta<'a> {
    /// `A [r·k, Cin·k]`.
    pub a: Factor<'a>,
    /// `B [Cout·k, r·k]`.
    pub b: Factor<'a>,
    /// Output channels.
    pub cout: usize,
    /// Input channels.
    pub cin: usize,
    /// Kernel side.
    pub k: usize,
}

impl<'a> Delta<'a> {
    /// Views the factors of `d`, checking their byte lengths against the conv's shape.
    pub fn new(
        payload: &'a [u8],
        d: DeltaRef,
        dtype: DeltaDType,
        cout: usize,
        cin: usize,
        k: usize,
        rank: usize,
    ) -> Option<Self> {
        let rk = rank.checked_mul(k)?;
        let a = Factor::new(payload, d.a, dtype, rk, cin.checked_mul(k)?)?;
        let b = Factor::new(payload, d.b, dtype, cout.checked_mul(k)?, rk)?;
        Some(Delta { a, b, cout, cin, k })
    }

    /// `ΔW[o]` (the `Cin·k·k` weights of output channel `o`, OIHW order) into `out`:
    /// rows `o·k .. o·k+k` of `B·A`. Each element is `Σ_j B[·, j]·A[j, ·]` summed in `j`
    /// order from 0 (so every path below gives the same bits); with both factors as f32
    /// slices (see [`Delta::decoded`]) four rank rows go per pass over the output row.
    pub fn channel_into(&self, o: usize, out: &mut [f32]) {
        self.channel_into_inline(o, out)
    }

    /// [`Delta::channel_into`] inlined into its caller, so that a kernel table's
    /// `#[target_feature]` body compiles the row loops for its own lanes (the same
    /// operations, so the same bits).
    #[inline(always)]
    pub(crate) fn channel_into_inline(&self, o: usize, out: &mut [f32]) {
        let (rk, ck) = (self.a.rows, self.a.cols);
        let out = &mut out[..self.k * ck];
        out.fill(0.0);
        if let (Some(a), Some(b)) = (self.a.as_f32(), self.b.as_f32()) {
            for r in 0..self.k {
                let brow = &b[(o * self.k + r) * rk..][..rk];
                axpy_rows(&mut out[r * ck..][..ck], brow, a);
            }
            return;
        }
        let a32 = self.a.as_f32();
        for r in 0..self.k {
            let row = &mut out[r * ck..][..ck];
            for j in 0..rk {
                let bij = self.b.get(o * self.k + r, j);
                if bij == 0.0 {
                    continue;
                }
                match a32 {
                    Some(a) => {
                        for (v, &aj) in row.iter_mut().zip(&a[j * ck..][..ck]) {
                            *v += bij * aj;
                        }
                    }
                    None => {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v += bij * self.a.get(j, c);
                        }
                    }
                }
            }
        }
    }

    /// As [`Delta::channel_into`], without zeroing `out` first where both factors are
    /// decoded and the rank row count is at least 4: the same values, except that an
    /// element whose every term is a zero may come out −0 instead of +0. For the int8
    /// rebuild, which adds `s0·W0q` and re-quantises: neither `max|w|` nor a code can see
    /// the sign of a zero (every `s0·q` term is itself ±0 or nonzero), so the bytes match.
    pub fn channel_into_i8(&self, o: usize, out: &mut [f32]) {
        self.channel_into_i8_inline(o, out)
    }

    /// [`Delta::channel_into_i8`] inlined into its caller, so that a kernel table's
    /// `#[target_feature]` body compiles the row loops for its own lanes (the same
    /// operations, so the same bits).
    #[inline(always)]
    pub(crate) fn channel_into_i8_inline(&self, o: usize, out: &mut [f32]) {
        let (rk, ck) = (self.a.rows, self.a.cols);
        match (self.a.as_f32(), self.b.as_f32()) {
            (Some(a), Some(b)) if rk >= 4 => {
                let out = &mut out[..self.k * ck];
                for r in 0..self.k {
                    let brow = &b[(o * self.k + r) * rk..][..rk];
                    axpy_rows_init(&mut out[r * ck..][..ck], brow, a);
                }
            }
            _ => self.channel_into(o, out),
        }
    }

    /// f32 elements [`Delta::decoded`] needs: `A` (`r·k × Cin·k`) and `B` (`Cout·k × r·k`).
    pub const fn decoded_len(&self) -> usize {
        self.a.rows * self.a.cols + self.b.rows * self.b.cols
    }

    /// Both factors decoded once into `buf` (at least [`Delta::decoded_len`] f32) by
    /// `decode` (the `Kernels::decode_factors` slot, [`decode_factors`]'s values) and viewed
    /// as f32 factors, so the loops here take their contiguous f32 paths instead of decoding
    /// f16 / int8 elements one at a time. Same values, so the same results bit for bit.
    pub fn decoded<'s>(
        &self,
        buf: &'s mut [f32],
        decode: crate::kernels::DecodeFactors,
    ) -> Delta<'s> {
        let na = self.a.rows * self.a.cols;
        let nb = self.b.rows * self.b.cols;
        let (da, rest) = buf[..na + nb].split_at_mut(na);
        decode(&self.a, &self.b, da, rest);
        let bytes: &'s [u8] = bytemuck::cast_slice(&buf[..na + nb]);
        let (ba, bb) = bytes.split_at(4 * na);
        // Cannot fail: the slices hold exactly rows·cols f32 each.
        let a = Factor::from_bytes(ba, DeltaDType::F32, self.a.rows, self.a.cols);
        let b = Factor::from_bytes(bb, DeltaDType::F32, self.b.rows, self.b.cols);
        Delta {
            a: a.unwrap_or(Factor::EMPTY),
            b: b.unwrap_or(Factor::EMPTY),
            cout: self.cout,
            cin: self.cin,
            k: self.k,
        }
    }

    /// Elements of one output channel's weight: `Cin·k·k`.
    pub const fn channel_len(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// The factors as f32 slices, `A` of `rk·ck` and `B` of `cout·k·rk` elements, when
    /// decoded ([`Delta::decoded`]), of rank ≥ 1 and consistent with the conv's shape: what
    /// the `Kernels::rebuild_layer_i8` slots read.
    #[inline]
    pub(crate) fn f32_factors(&self) -> Option<(&'a [f32], &'a [f32])> {
        let (a, b) = (self.a.as_f32()?, self.b.as_f32()?);
        let (rk, ck, k) = (self.a.rows, self.a.cols, self.k);
        let fits = rk > 0
            && ck * k == self.channel_len()
            && self.b.cols == rk
            && a.len() >= rk * ck
            && b.len() >= self.cout * k * rk;
        fits.then(|| (&a[..rk * ck], &b[..self.cout * k * rk]))
    }

    /// Whether a `Kernels::rebuild_layer_i8` slot's slices hold this whole expert: `W0q` and
    /// the codes `Cout·channel_len`, `s0` and the scales `Cout`.
    #[inline]
    pub(crate) fn layer_fits(&self, w0: &[i8], s0: &[f32], out: &[i8], scale: &[f32]) -> bool {
        let n = self.cout * self.channel_len();
        w0.len() >= n && out.len() >= n && s0.len() >= self.cout && scale.len() >= self.cout
    }
}

/// `row[c] += Σ_j b[j]·a[j·n + c]` (`n = row.len()`), `j` in order, four `a` rows per
/// pass: `((row + b0·a0) + b1·a1) + …` element-wise, the same rounding sequence as one
/// row at a time, with a quarter of the loads and stores of `row`. Vectorises over `c`.
#[inline]
fn axpy_rows(row: &mut [f32], b: &[f32], a: &[f32]) {
    axpy_rows_from(row, b, a, 0)
}

/// `row = Σ_j b[j]·a[j]` with the same sums as [`axpy_rows`] over a zeroed row, except
/// that a sum whose every term is a zero may be −0 where that gives +0 (the first rank
/// group is written, not added to `0.0`). `b.len() ≥ 4`.
#[inline(always)]
fn axpy_rows_init(row: &mut [f32], b: &[f32], a: &[f32]) {
    let n = row.len();
    let (b0, b1, b2, b3) = (b[0], b[1], b[2], b[3]);
    let a4 = &a[..4 * n];
    let (a0, rest) = a4.split_at(n);
    let (a1, rest) = rest.split_at(n);
    let (a2, a3) = rest.split_at(n);
    for ((((v, &x0), &x1), &x2), &x3) in row.iter_mut().zip(a0).zip(a1).zip(a2).zip(a3) {
        *v = b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3;
    }
    axpy_rows_from(row, b, a, 4)
}

/// [`axpy_rows`] from rank row `j0` on (a multiple of 4).
#[inline(always)]
fn axpy_rows_from(row: &mut [f32], b: &[f32], a: &[f32], j0: usize) {
    let n = row.len();
    let mut j = j0;
    while j + 4 <= b.len() {
        let (b0, b1, b2, b3) = (b[j], b[j + 1], b[j + 2], b[j + 3]);
        let a4 = &a[j * n..][..4 * n];
        let (a0, rest) = a4.split_at(n);
        let (a1, rest) = rest.split_at(n);
        let (a2, a3) = rest.split_at(n);
        for ((((v, &x0), &x1), &x2), &x3) in row.iter_mut().zip(a0).zip(a1).zip(a2).zip(a3) {
            *v = *v + b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3;
        }
        j += 4;
    }
    for (jj, &bj) in b.iter().enumerate().skip(j) {
        for (v, &x) in row.iter_mut().zip(&a[jj * n..][..n]) {
            *v += bj * x;
        }
    }
}

/// f32 materialisation: `out = W0 + ΔW`, channel by channel, from the pristine `w0`.
/// `out` and `w0` hold `Cout·Cin·k·k` elements.
pub fn materialize_f32(w0: &[f32], d: &Delta<'_>, out: &mut [f32]) {
    materialize_f32_inline(w0, d, out)
}

/// [`materialize_f32`] inlined into its caller (a kernel table's `#[target_feature]` body:
/// the same operations on its lanes, so the same bits).
#[inline(always)]
pub(crate) fn materialize_f32_inline(w0: &[f32], d: &Delta<'_>, out: &mut [f32]) {
    let n = d.channel_len();
    for o in 0..d.cout {
        let dst = &mut out[o * n..][..n];
        d.channel_into_inline(o, dst);
        for (v, &w) in dst.iter_mut().zip(&w0[o * n..][..n]) {
            *v += w;
        }
    }
}

/// int8 materialisation, per output channel `o`: `w = s0[o]·W0q[o] + ΔW[o]` in f32 (in
/// `scratch`, `Cin·k·k` elements), then `s[o] = max|w| / 127` and `q = round(w / s[o])`
/// clamped to ±127. A channel that is all zero gets `s = 1`.
/// (`w / s` is computed as `w · (1/s)`; the result stays within half a step plus an ulp.)
pub fn materialize_i8(
    w0: &[i8],
    s0: &[f32],
    d: &Delta<'_>,
    scratch: &mut [f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) {
    let k = crate::kernels::Kernels::reference();
    materialize_i8_with(&k, w0, s0, d, scratch, out, out_scale);
}

/// [`materialize_i8`] with the kernel table `k`: its whole-channel rebuild
/// (`Kernels::rebuild_i8`) where it has one, else `B·A` and its per-channel
/// re-quantisation (`Kernels::requant_weights`); bit-identical in every table. A table's
/// whole-expert slot (`Kernels::rebuild_layer_i8`) goes first where it takes the shape.
pub fn materialize_i8_with(
    k: &crate::kernels::Kernels,
    w0: &[i8],
    s0: &[f32],
    d: &Delta<'_>,
    scratch: &mut [f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) {
    let n = d.channel_len();
    if let Some(f) = k.rebuild_layer_i8 {
        if f(
            d,
            &w0[..d.cout * n],
            &s0[..d.cout],
            &mut out[..d.cout * n],
            &mut out_scale[..d.cout],
        ) {
            return;
        }
    }
    let scratch = &mut scratch[..n];
    for o in 0..d.cout {
        let (w0, out) = (&w0[o * n..][..n], &mut out[o * n..][..n]);
        out_scale[o] = match k.rebuild_i8 {
            Some(f) => f(d, o, w0, s0[o], scratch, out),
            None => {
                d.channel_into_i8(o, scratch);
                (k.requant_weights)(scratch, w0, s0[o], out)
            }
        };
    }
}

/// One output channel of the int8 rebuild in one pass over the weights instead of two
/// (`B·A` into `w`, then `w += s0·W0q` with `max|w|`): where both factors are decoded f32
/// and `A` has exactly 4 rows (rank 4 at k = 1, the common expert), each weight is
/// `((b0·a0 + b1·a1) + b2·a2) + b3·a3 + s0·q` in that order — the sums of
/// [`Delta::channel_into_i8`] and the reference's add, so the same f32 bits — stored once,
/// with `max|w|` taken on the way; then [`quantize_from_amax`]. `None` (nothing written)
/// for other factor shapes. `w0`, `out`: channel `o`'s; `w` at least its length. The
/// portable form, for the host tests; the Cortex-M table runs [`rebuild_rank4_i8_with`]
/// with its `asm!` row loop.
#[cfg(test)]
pub(crate) fn rebuild_rank4_i8(
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> Option<f32> {
    let n = d.channel_len();
    let amax = rank4_pass(rank4_row, d, o, w0, s0, w)?;
    Some(quantize_from_amax(&w[..n], amax, &mut out[..n]))
}

/// One row of [`rebuild_rank4_i8`]: `w[i] = b0·a0[i] + b1·a1[i] + b2·a2[i] + b3·a3[i] +
/// s0·q[i]` (left to right) for the `w.len()` elements (every slice at least that long),
/// and the largest `bits << 1` of them and `m2`.
#[cfg(any(test, all(target_arch = "arm", target_feature = "dsp")))]
pub(crate) type Rank4Row = fn(&[f32; 4], [&[f32]; 4], &[i8], f32, &mut [f32], u32) -> u32;

/// The portable [`Rank4Row`] (and the Cortex-M twin's tail).
#[cfg(any(test, all(target_arch = "arm", target_feature = "dsp")))]
pub(crate) fn rank4_row(
    b: &[f32; 4],
    a: [&[f32]; 4],
    q: &[i8],
    s0: f32,
    w: &mut [f32],
    m2: u32,
) -> u32 {
    let [b0, b1, b2, b3] = *b;
    let n = w.len();
    let rows = a[0][..n]
        .iter()
        .zip(&a[1][..n])
        .zip(&a[2][..n])
        .zip(&a[3][..n]);
    // `max|w|` as the largest `bits << 1` (the sign bit shifted out): one compare a weight.
    let mut m2 = m2;
    for ((v, &q), (((&x0, &x1), &x2), &x3)) in w.iter_mut().zip(&q[..n]).zip(rows) {
        let t = b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + s0 * q as f32;
        *v = t;
        m2 = m2.max(t.to_bits() << 1);
    }
    m2
}

/// The first half of [`rebuild_rank4_i8`] with the row loop `row`: the f32 weights of
/// channel `o` into `w[..channel_len]`; returns their `max|w|` bits (see
/// [`quantize_from_amax`]), `None` (nothing written) where the factors do not fit.
#[cfg(any(test, all(target_arch = "arm", target_feature = "dsp")))]
pub(crate) fn rank4_pass(
    row: Rank4Row,
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
) -> Option<u32> {
    let (a, b) = (d.a.as_f32()?, d.b.as_f32()?);
    let (ck, k) = (d.a.cols, d.k);
    if d.a.rows != 4 {
        return None;
    }
    let n = k * ck;
    let (w, w0) = (&mut w[..n], &w0[..n]);
    let (a0, rest) = a[..4 * ck].split_at(ck);
    let (a1, rest) = rest.split_at(ck);
    let (a2, a3) = rest.split_at(ck);
    let mut m2 = 0u32;
    for r in 0..k {
        let br: &[f32; 4] = b[(o * k + r) * 4..][..4].try_into().ok()?;
        let (wr, qr) = (&mut w[r * ck..][..ck], &w0[r * ck..][..ck]);
        m2 = row(br, [a0, a1, a2, a3], qr, s0, wr, m2);
    }
    Some(m2 >> 1)
}

/// The rounding half of the int8 re-quantisation, given `amax_bits`, the largest
/// `bits & 0x7fff_ffff` of `w` (a NaN's bits top every number's: then the max over the
/// rest is taken here, as the reference does): `s = max|w| / 127` (1 for an all-zero
/// channel), `q = quantize_weight(w · (1/s))` via the branch-free
/// `fixed::quantize_weight_fast`. Returns `s`.
#[cfg(test)]
pub(crate) fn quantize_from_amax(w: &[f32], amax_bits: u32, out: &mut [i8]) -> f32 {
    quantize_from_amax_with(round_row, w, amax_bits, out)
}

/// `out[i] = fixed::quantize_weight_fast(w[i] · inv)` (a [`quantize_from_amax_with`] loop).
#[cfg(any(test, all(target_arch = "arm", target_feature = "dsp")))]
pub(crate) fn round_row(w: &[f32], inv: f32, out: &mut [i8]) {
    for (q, &v) in out.iter_mut().zip(w) {
        *q = crate::kernels::fixed::quantize_weight_fast(v * inv);
    }
}

/// [`quantize_from_amax`] with the rounding loop `round` (`w`, `out` of one length).
/// Inlined, so that the Cortex-M layer loop calls its `round` directly, once a channel.
#[cfg(any(test, all(target_arch = "arm", target_feature = "dsp")))]
#[inline(always)]
pub(crate) fn quantize_from_amax_with(
    round: fn(&[f32], f32, &mut [i8]),
    w: &[f32],
    mut amax_bits: u32,
    out: &mut [i8],
) -> f32 {
    if amax_bits > 0x7f80_0000 {
        amax_bits = crate::quant::amax_bits(0, w);
    }
    let s = crate::quant::weight_scale(f32::from_bits(amax_bits));
    round(w, 1.0 / s, out);
    s
}

/// Streaming low-rank path, first half (k = 1): `u[p, j] = Σ_c A[j, c] · x[p, c]` over the
/// (strided) output pixels `p`; `x` read through `load` (identity for f32, dequantise for
/// int8). `u` holds `ho·wo·r` elements.
pub fn lowrank_u<T: Copy>(
    g: &Geom,
    x: &[T],
    load: impl Fn(T) -> f32,
    a: &Factor<'_>,
    u: &mut [f32],
) {
    // Each input element is loaded (dequantised) once per pixel into a stack chunk, not once
    // per rank row; every `u[p, j]` still sums over `c` in order, so the bits are unchanged.
    const CHUNK: usize = 256;
    let mut buf = [0.0f32; CHUNK];
    let r = a.rows;
    let a32 = a.as_f32();
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let px = &x[(oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off..][..g.cin];
            let up = &mut u[(oy * g.wo + ox) * r..][..r];
            up.fill(0.0);
            for c0 in (0..g.cin).step_by(CHUNK) {
                let m = CHUNK.min(g.cin - c0);
                for (b, &v) in buf[..m].iter_mut().zip(&px[c0..c0 + m]) {
                    *b = load(v);
                }
                for (j, uj) in up.iter_mut().enumerate() {
                    let mut acc = *uj;
                    match a32 {
                        Some(a) => {
                            for (&aj, &xv) in a[j * g.cin + c0..][..m].iter().zip(&buf[..m]) {
                                acc += aj * xv;
                            }
                        }
                        None => {
                            for (c, &xv) in buf[..m].iter().enumerate() {
                                acc += a.get(j, c0 + c) * xv;
                            }
                        }
                    }
                    *uj = acc;
                }
            }
        }
    }
}

/// Streaming low-rank path, second half (k = 1): `y[p, o] += Σ_j B[o, j] · u[p, j]`, then
/// ReLU if asked (the W0 path ran without it).
pub fn lowrank_add_f32(g: &Geom, u: &[f32], b: &Factor<'_>, relu: bool, y: &mut [f32]) {
    let r = b.cols;
    for p in 0..g.ho * g.wo {
        let up = &u[p * r..][..r];
        for (o, yo) in y[p * g.cout..][..g.cout].iter_mut().enumerate() {
            let mut acc = *yo;
            match b.as_f32() {
                Some(b) => {
                    for (&bj, &uj) in b[o * r..][..r].iter().zip(up) {
                        acc += bj * uj;
                    }
                }
                None => {
                    for (j, &uj) in up.iter().enumerate() {
                        acc += b.get(o, j) * uj;
                    }
                }
            }
            *yo = if relu { acc.max(0.0) } else { acc };
        }
    }
}

/// Quantisation of the streaming int8 convs: input and output activations, fused ReLU.
#[derive(Clone, Copy, Debug)]
pub struct StreamI8 {
    /// Input activation quantisation.
    pub x: QParams,
    /// Output activation quantisation.
    pub y: QParams,
    /// Fused ReLU.
    pub relu: bool,
}

impl StreamI8 {
    #[inline]
    fn out(&self, v: f32) -> i8 {
        self.y.quantize(if self.relu { v.max(0.0) } else { v })
    }
}

/// Streaming int8 1x1 expert conv: the `W0` path in integers (`acc = Σ W0q·(x − zx)`), the
/// low-rank path in f32 on the dequantised input, summed in f32 and quantised once:
/// `y = q(s_x·s_w[o]·acc + bias[o] + Σ_j B[o,j]·u[p,j])`, `u = A·deq(x)` (in `u`).
/// Not bit-equal to the materialized path (which re-quantises `W0 + ΔW`); see the tests
/// for the bound. `dot` is the integer dot product (`Kernels::dot_i8`; every table gives the
/// same exact sums).
#[allow(clippy::too_many_arguments)]
pub fn stream_conv1x1_i8(
    dot: crate::kernels::DotI8,
    g: &Geom,
    x: &[i8],
    w0: &[i8],
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    st: StreamI8,
    u: &mut [f32],
    y: &mut [i8],
) {
    lowrank_u(g, x, |q| st.x.dequantize(q), &d.a, u);
    let (zx, r) = (st.x.zero_point, d.a.rows);
    let b32 = d.b.as_f32();
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let p = oy * g.wo + ox;
            let px = &x[(oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off..][..g.cin];
            let up = &u[p * r..][..r];
            for (o, yo) in y[p * g.cout..][..g.cout].iter_mut().enumerate() {
                let acc = dot(&w0[o * g.cin..][..g.cin], px, zx);
                *yo = corrected_out(acc, o, ws, bias, d, b32, up, st);
            }
        }
    }
}

/// One streaming 1x1 output of the spec ([`stream_conv1x1_i8`]): the exact `W0` sum `acc`
/// of channel `o` dequantised plus the bias, plus the low-rank correction
/// `Σ_j B[o, j]·u[j]` (`j` in order), quantised. The GEMM path's epilogues are tested
/// against its values ([`corrected_value`]) bit for bit.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn corrected_out(
    acc: i32,
    o: usize,
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    b32: Option<&[f32]>,
    up: &[f32],
    st: StreamI8,
) -> i8 {
    st.out(corrected_value(acc, o, ws, bias, d, b32, up, st.x.scale))
}

/// The f32 value of [`corrected_out`] before ReLU and quantisation (`sx`: the input scale).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn corrected_value(
    acc: i32,
    o: usize,
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    b32: Option<&[f32]>,
    up: &[f32],
    sx: f32,
) -> f32 {
    let r = up.len();
    let mut v = acc as f32 * (sx * ws[o]) + bias[o];
    match b32 {
        Some(b) => {
            for (&bj, &uj) in b[o * r..][..r].iter().zip(up) {
                v += bj * uj;
            }
        }
        None => {
            for (j, &uj) in up.iter().enumerate() {
                v += d.b.get(o, j) * uj;
            }
        }
    }
    v
}

/// Lanes of the streaming low-rank GEMMs: rank rows or output pixels in [`lowrank_u_gemm`],
/// output channels in the epilogues. Eight f32 (one AVX2 register, two NEON ones), written as
/// fixed-size arrays so LLVM vectorises the lane loops on every target without `unsafe`.
const L: usize = 8;
type Lanes = [f32; L];
/// Input channels [`pixel_lanes`] dequantises per pass (its stack tile, `CH × L` f32).
const CH: usize = 32;

/// A streaming 1x1 expert's factors decoded for the low-rank GEMMs, and its `u`.
pub struct LowRank1x1<'s> {
    /// `Aᵀ [Cin, r]`: `A` transposed, so a channel's `r` rank weights are contiguous (the
    /// lanes of [`lowrank_u_gemm`]'s rank-lane path).
    pub at: &'s [f32],
    /// `Bᵀ [r, Cout]`: `B` transposed, so the epilogues read 8 output channels of one
    /// rank row contiguously.
    pub bt: &'s [f32],
    /// Rank rows `r`.
    pub r: usize,
    /// `u [ho·wo, r]`.
    pub u: &'s mut [f32],
}

impl Delta<'_> {
    /// The factors of a 1x1 expert decoded once into `buf` — the [`Delta::decoded_len`]
    /// space [`Delta::decoded`] uses, then `npix·r` for `u`, so the arena plan is unchanged
    /// — as a [`LowRank1x1`]. The values are [`Factor::get`]'s, as in [`Delta::decoded`].
    /// `None` when `k ≠ 1` or `buf` is short.
    pub fn lowrank_1x1<'s>(
        &self,
        buf: &'s mut [f32],
        npix: usize,
        decode: crate::kernels::DecodeFactors,
    ) -> Option<LowRank1x1<'s>> {
        let (n, r) = (self.decoded_len(), self.a.rows);
        if self.k != 1 || buf.len() < n.checked_add(npix.checked_mul(r)?)? {
            return None;
        }
        let (dec, rest) = buf.split_at_mut(n);
        let (at, bt) = dec.split_at_mut(r * self.a.cols);
        decode(&self.a, &self.b, at, bt);
        Some(LowRank1x1 {
            at,
            bt,
            r,
            u: &mut rest[..npix * r],
        })
    }
}

/// An expert's factors row-major for its rebuild ([`Factor::decode_into`]): `A` into `a`,
/// `B` into `b`. The spec of the `Kernels::decode_factors` slot.
pub fn decode_factors(fa: &Factor<'_>, fb: &Factor<'_>, a: &mut [f32], b: &mut [f32]) {
    fa.decode_into(a);
    fb.decode_into(b);
}

/// A streaming 1x1 expert's factors as its GEMMs read them, both transposed
/// ([`Factor::decode_transposed_into`]): `Aᵀ [Cin, r]` into `at`, `Bᵀ [r, Cout]` into `bt`.
/// The spec of the `Streaming::decode` slot.
pub fn decode_lowrank(a: &Factor<'_>, b: &Factor<'_>, at: &mut [f32], bt: &mut [f32]) {
    a.decode_transposed_into(at);
    b.decode_transposed_into(bt);
}

/// [`lowrank_u`] as a small GEMM, the same bits: `u[p, j] = Σ_c A[j, c]·load(x[p, c])`, each
/// sum from `0.0` over `c` in order (a product then an add per term, as there). Whole
/// blocks of `L` rank rows take [`rank_lanes`]; the rows past the last whole block (r not
/// a multiple of 8) take [`pixel_lanes`]. `at`: the decoded `Aᵀ [Cin, r]`; `u`: `ho·wo·r`.
/// Inlined into its callers so a `#[target_feature]` one (the AVX2 table) compiles it
/// with its registers.
#[inline(always)]
pub fn lowrank_u_gemm<T: Copy>(
    g: &Geom,
    x: &[T],
    load: impl Fn(T) -> f32,
    at: &[f32],
    r: usize,
    u: &mut [f32],
) {
    let (npix, cin) = (g.ho * g.wo, g.cin);
    let (at, u) = (&at[..r * cin], &mut u[..npix * r]);
    let r0 = r / L * L;
    if r0 > 0 {
        rank_lanes(g, x, &load, at, r, r0, u);
    }
    if r0 < r {
        pixel_lanes(g, x, &load, at, r, r0, u);
    }
}

/// Rank rows `0 .. r0` (`r0` a multiple of `L`) of [`lowrank_u_gemm`]: per output pixel,
/// the lanes of one accumulator hold `L` rank rows; each input is loaded (dequantised)
/// once per block and times `Aᵀ`'s `L` contiguous weights of its channel added in — every lane
/// useful at any pixel count, no transposed input tile (3–4× [`pixel_lanes`] with 8 rank
/// rows at 16 to 784 pixels, measured on AVX2). Four pixels go side by side: their sums
/// are independent chains, so the adds' latency overlaps (one pixel alone is one chain of
/// `Cin` dependent adds) and each `Aᵀ` vector loaded feeds four.
#[inline(always)]
fn rank_lanes<T: Copy>(
    g: &Geom,
    x: &[T],
    load: &impl Fn(T) -> f32,
    at: &[f32],
    r: usize,
    r0: usize,
    u: &mut [f32],
) {
    let npix = u.len() / r.max(1);
    let mut p = 0;
    while p + 4 <= npix {
        rank_lanes_px::<4, T>(g, x, load, at, r, r0, p, u);
        p += 4;
    }
    while p < npix {
        rank_lanes_px::<1, T>(g, x, load, at, r, r0, p, u);
        p += 1;
    }
}

/// Pixels `p .. p + N` of [`rank_lanes`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rank_lanes_px<const N: usize, T: Copy>(
    g: &Geom,
    x: &[T],
    load: &impl Fn(T) -> f32,
    at: &[f32],
    r: usize,
    r0: usize,
    p: usize,
    u: &mut [f32],
) {
    let cin = g.cin;
    let xs: [&[T]; N] = core::array::from_fn(|k| {
        let (oy, ox) = ((p + k) / g.wo, (p + k) % g.wo);
        &x[(oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off..][..cin]
    });
    for j0 in (0..r0).step_by(L) {
        let mut acc = [[0.0f32; L]; N];
        for (c, ac) in at.chunks_exact(r).take(cin).enumerate() {
            let w = &ac[j0..j0 + L];
            for (a, xk) in acc.iter_mut().zip(&xs) {
                let xv = load(xk[c]);
                for (s, &wl) in a.iter_mut().zip(w) {
                    *s += wl * xv;
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            u[(p + k) * r + j0..][..L].copy_from_slice(a);
        }
    }
}

/// Rank rows `r0 .. r` (fewer than `L`) of [`lowrank_u_gemm`] with `L` output pixels in the
/// lanes of one accumulator per rank row: the inputs of a pixel tile loaded (dequantised)
/// once into a transposed stack tile, then every input vector feeding up to 4 rank rows.
#[inline(always)]
fn pixel_lanes<T: Copy>(
    g: &Geom,
    x: &[T],
    load: &impl Fn(T) -> f32,
    a: &[f32],
    r: usize,
    r0: usize,
    u: &mut [f32],
) {
    let (npix, cin, rb) = (g.ho * g.wo, g.cin, r - r0);
    debug_assert!(rb < L);
    let mut xt = [[0.0f32; L]; CH];
    let mut acc = [[0.0f32; L]; L];
    let mut off = [0usize; L];
    for p0 in (0..npix).step_by(L) {
        let np = L.min(npix - p0);
        for (i, o) in off.iter_mut().enumerate().take(np) {
            let (oy, ox) = ((p0 + i) / g.wo, (p0 + i) % g.wo);
            *o = (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off;
        }
        if np < L {
            xt = [[0.0; L]; CH]; // lanes past the image stay finite (and unused)
        }
        acc[..rb].fill([0.0; L]);
        for c0 in (0..cin).step_by(CH) {
            let m = CH.min(cin - c0);
            for (i, &o) in off[..np].iter().enumerate() {
                for (t, &v) in xt[..m].iter_mut().zip(&x[o + c0..][..m]) {
                    t[i] = load(v);
                }
            }
            let (xs, acc) = (&xt[..m], &mut acc[..rb]);
            let mut j = 0;
            // 4 rows per pass on SIMD targets; the Cortex-M FPU has 32 scalar registers,
            // so it takes 2 (16 accumulators).
            if !cfg!(target_arch = "arm") {
                while j + 4 <= rb {
                    rank_rows::<4>(&mut acc[j..], a, r, r0 + j, c0, xs);
                    j += 4;
                }
            }
            while j + 2 <= rb {
                rank_rows::<2>(&mut acc[j..], a, r, r0 + j, c0, xs);
                j += 2;
            }
            if j < rb {
                rank_rows::<1>(&mut acc[j..], a, r, r0 + j, c0, xs);
            }
        }
        for (i, up) in u[p0 * r..].chunks_exact_mut(r).take(np).enumerate() {
            for (uj, aj) in up[r0..].iter_mut().zip(&acc[..rb]) {
                *uj = aj[i];
            }
        }
    }
}

/// `acc[k][l] += A[j + k, c0 + c]·xs[c][l]` for `k < N`, `c` in order: `N` rank rows of
/// [`lowrank_u_gemm`] over one channel chunk, in registers (`at`: `Aᵀ [Cin, r]`).
#[inline(always)]
fn rank_rows<const N: usize>(
    acc: &mut [Lanes],
    at: &[f32],
    r: usize,
    j: usize,
    c0: usize,
    xs: &[Lanes],
) {
    let at = &at[c0 * r..][..xs.len() * r];
    let mut s: [Lanes; N] = core::array::from_fn(|k| acc[k]);
    for (ac, xv) in at.chunks_exact(r).zip(xs) {
        let w = &ac[j..j + N];
        for (sk, &wk) in s.iter_mut().zip(w) {
            for (v, &xl) in sk.iter_mut().zip(xv) {
                *v += wk * xl;
            }
        }
    }
    acc[..N].copy_from_slice(&s);
}

/// [`QParams::quantize`] of every value of `v` into `out` (after ReLU when `relu`), the
/// same bytes, in a loop LLVM vectorises (one formula per element, no float-to-int
/// conversion, whose saturating `as` it splits into scalar code per lane):
/// - `t = x / scale` clamped to ±2^22 as there; NaN becomes 0 (it gives the zero point
///   there too);
/// - `m = t + 1.5·2^23` lies in `[2^23, 2^24]`, where f32 steps by 1: `m` is `t` rounded to
///   the nearest integer, ties to even, and `bits(m) − bits(1.5·2^23)` is that integer `n`
///   (f32 bits count up by one per step, across the binade at 2^24 too);
/// - `f = t − (m − 1.5·2^23)` is exact (an integer difference, then Sterbenz), so a tie
///   shows as `f = ±0.5`; round-half-away-from-zero (the spec's rounding) differs from
///   ties-to-even only where such a tie went toward zero: `+1` for `f = 0.5, t > 0`, `−1`
///   for `f = −0.5, t < 0`;
/// - the zero point is clamped to ±2^24 first, which cannot change a result (the code is
///   within ±(2^22 + 1), so past ±2^24 the sum saturates to −128 / 127 either way) and
///   makes the add overflow-free without `saturating_add`.
#[inline(always)]
pub(crate) fn quantize_row(q: QParams, relu: bool, v: &[f32], out: &mut [i8]) {
    if cfg!(target_arch = "arm") {
        return quantize_row_vcvt(q, relu, v, out);
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    let (v, out) = {
        let m = v.len().min(out.len()) / 16 * 16;
        quantize_row_neon(q, relu, &v[..m], &mut out[..m]);
        (&v[m..], &mut out[m..])
    };
    const MAGIC: f32 = 12_582_912.0;
    let zp = q.zero_point.clamp(-(1 << 24), 1 << 24);
    for (o, &x) in out.iter_mut().zip(v) {
        let x = if relu { x.max(0.0) } else { x };
        let t = (x / q.scale).clamp(-4_194_304.0, 4_194_304.0);
        let t = if t.is_nan() { 0.0 } else { t };
        let m = t + MAGIC;
        let n = m.to_bits() as i32 - MAGIC.to_bits() as i32;
        let f = t - (m - MAGIC);
        let r = n + i32::from(f == 0.5 && t > 0.0) - i32::from(f == -0.5 && t < 0.0);
        *o = (r + zp).clamp(-128, 127) as i8;
    }
}

/// [`quantize_row`] on 32-bit Arm: no SIMD to vectorise for, so one saturating conversion a
/// value ([`quantize_vcvt`]) is shorter; one out-of-line copy (the callers inline the row
/// form, and this loop unrolled in each cost kilobytes of flash).
#[inline(never)]
fn quantize_row_vcvt(q: QParams, relu: bool, v: &[f32], out: &mut [i8]) {
    for (o, &x) in out.iter_mut().zip(v) {
        *o = quantize_vcvt(q, if relu { x.max(0.0) } else { x });
    }
}

/// [`QParams::quantize`] of one value, the same byte: on 32-bit Arm [`quantize_vcvt`]
/// (about 13 instructions instead of about 30 on Cortex-M4F), elsewhere `quantize` itself.
#[inline(always)]
pub(crate) fn quantize_one(q: QParams, x: f32) -> i8 {
    if cfg!(target_arch = "arm") {
        quantize_vcvt(q, x)
    } else {
        q.quantize(x)
    }
}

/// [`QParams::quantize`] by one saturating float-to-int conversion (`VCVT`, which the
/// FPv4 FPU has; it has no round-to-nearest-away conversion nor float min/max):
/// - `|t|` rounded half away from zero is `trunc(|t| + (½ − 2^−25))` for `|t| ≤ 2^22`:
///   with `|t| = k + f`, a fraction `f < ½` is at most `½ − ulp(|t|)`, so the sum stays at
///   least one f32 step below `k + 1` and truncates to `k`; a tie gives `k + 1 − 2^−25`,
///   which rounds to `k + 1` (less than half a step away, or exactly half below 1, where
///   ties-to-even picks 1); `f > ½` puts the sum past `k + 1` (`quantize_vcvt_is_quantize`
///   checks every f32 near each tie);
/// - past `2^22` the spec clamps `t`: the integer `min(u, 2^22)` is the same; the
///   conversion saturates (`as i32`), and a NaN converts to 0 (the spec's zero point);
/// - the sign comes back from `t`'s sign bit (`−0` and `−NaN` give 0 either way), then the
///   spec's saturating add of the zero point and clamp.
#[inline(always)]
pub(crate) fn quantize_vcvt(q: QParams, x: f32) -> i8 {
    quantize_vcvt_with::<true>(q, x)
}

/// [`quantize_vcvt`], and with `CLAMP = false` without the clamp of `|t|` to 2^22 (3
/// instructions fewer), which is the same byte for zero points within ±2^21
/// ([`near_zero_point`]): a `|t|` past 2^22 then gives `u ≥ 2^22` (`as i32` saturates),
/// whose sum with the zero point keeps `t`'s sign and a magnitude past 127 — the clamp's.
#[inline(always)]
pub(crate) fn quantize_vcvt_with<const CLAMP: bool>(q: QParams, x: f32) -> i8 {
    let t = x / q.scale;
    let u = (t.abs() + crate::quant::HALF_BELOW) as i32;
    let u = if CLAMP { u.min(1 << 22) } else { u };
    let s = (t.to_bits() as i32) >> 31;
    ((u ^ s) - s).saturating_add(q.zero_point).clamp(-128, 127) as i8
}

/// Whether [`quantize_vcvt_with`] may skip its clamp for `q`.
#[inline(always)]
pub(crate) fn near_zero_point(q: QParams) -> bool {
    q.zero_point.unsigned_abs() <= 1 << 21
}

/// [`quantize_row`] on aarch64, 16 values a step (`v.len() = out.len()`, a multiple of
/// 16): `t = x / scale` (after `FMAXNM` with 0 for ReLU: `max` ignores a NaN, as `f32::max`
/// does), `FCVTAS` — round half away from zero, the spec's rounding, saturating, NaN → 0 as
/// the spec's — clamped to ±2^22 (the spec clamps `t` there; rounding is monotone and ±2^22
/// are integers), `+ zp` saturating as the spec's `saturating_add`, and narrowed with
/// saturation (the spec's clamp to −128..127): the same bytes.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
fn quantize_row_neon(q: QParams, relu: bool, v: &[f32], out: &mut [i8]) {
    use core::arch::aarch64::*;
    if q.zero_point.unsigned_abs() <= 1 << 14 {
        // A zero point in ±2^14 (every int8 one) joins in i16 after the first saturating
        // narrow, and neither clamp is needed: a code past ±2^15 saturates there and stays
        // past ±2^14 with it, so the last narrow gives −128 / 127 as the spec's clamps do;
        // below, the sum is exact.
        for (xs, o) in v.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
            // SAFETY: NEON is baseline on this target; `xs` holds 16 f32 and `o` 16 bytes.
            unsafe {
                let (s, zp) = (vdupq_n_f32(q.scale), vdupq_n_s16(q.zero_point as i16));
                let r = [0, 4, 8, 12].map(|k| {
                    let x = vld1q_f32(xs.as_ptr().add(k));
                    let x = if relu {
                        vmaxnmq_f32(x, vdupq_n_f32(0.0))
                    } else {
                        x
                    };
                    vcvtaq_s32_f32(vdivq_f32(x, s))
                });
                let lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r[0]), r[1]), zp);
                let hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(r[2]), r[3]), zp);
                vst1q_s8(o.as_mut_ptr(), vqmovn_high_s16(vqmovn_s16(lo), hi));
            }
        }
        return;
    }
    for (xs, o) in v.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        // SAFETY: NEON is baseline on this target (the fn is cfg'd on it); `xs` holds 16
        // f32 and `o` 16 bytes (the chunks).
        unsafe {
            let (s, zp, lim) = (
                vdupq_n_f32(q.scale),
                vdupq_n_s32(q.zero_point),
                vdupq_n_s32(1 << 22),
            );
            let r = [0, 4, 8, 12].map(|k| {
                let x = vld1q_f32(xs.as_ptr().add(k));
                let x = if relu {
                    vmaxnmq_f32(x, vdupq_n_f32(0.0))
                } else {
                    x
                };
                let n = vcvtaq_s32_f32(vdivq_f32(x, s));
                vqaddq_s32(vminq_s32(vmaxq_s32(n, vnegq_s32(lim)), lim), zp)
            });
            let lo = vqmovn_high_s32(vqmovn_s32(r[0]), r[1]);
            let hi = vqmovn_high_s32(vqmovn_s32(r[2]), r[3]);
            vst1q_s8(o.as_mut_ptr(), vqmovn_high_s16(vqmovn_s16(lo), hi));
        }
    }
}

/// Lane blocks of [`corrected_lanes`] an epilogue pass takes where the tile has the
/// channels: each `u[p, j]` broadcast then feeds `M` vectors of `Bᵀ`. At `N = 4`, 2 blocks
/// (8 accumulators) cut the 1.0x @224 streaming 1x1 experts ~7 % against 1; 3 (12) made
/// them ~50 % slower on AVX2 (the values no longer stay in registers).
const M: usize = 2;

/// Streaming int8 1x1 expert conv with both halves as GEMMs — the bytes of
/// [`stream_conv1x1_i8`] (its spec): the `W0` sums from the pointwise GEMM slot
/// (`Kernels::conv1x1_sums_i8`), `u = A·deq(x)` (`Streaming::u_i8`, [`lowrank_u_gemm`]) and
/// on each tile of sums [`epilogue_i8`] (`Streaming::epilogue_i8`), all from the table `k`.
/// `scratch`: f32, at least `decoded_len + ho·wo·r` (the Streaming arena's low-rank
/// scratch). `None` (nothing written) when `k ≠ 1` or it is short.
#[allow(clippy::too_many_arguments)]
pub fn stream_conv1x1_i8_gemm(
    k: &crate::kernels::Kernels,
    g: &Geom,
    x: &[i8],
    w0: &[i8],
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    st: StreamI8,
    scratch: &mut [f32],
    y: &mut [i8],
) -> Option<()> {
    let lr = d.lowrank_1x1(scratch, g.ho * g.wo, k.streaming.decode)?;
    stream_conv1x1_i8_decoded(k, g, x, w0, ws, bias, (lr.at, lr.bt, lr.r), lr.u, st, y);
    Some(())
}

/// [`stream_conv1x1_i8_gemm`] once the factors are decoded (`(Aᵀ, Bᵀ, r)` of
/// [`LowRank1x1`]), with `u [ho·wo, r]` to fill: every output pixel reads only its own
/// input pixel and `u` row, so the engine's threads run it on runs of pixels.
#[allow(clippy::too_many_arguments)]
pub fn stream_conv1x1_i8_decoded(
    k: &crate::kernels::Kernels,
    g: &Geom,
    x: &[i8],
    w0: &[i8],
    ws: &[f32],
    bias: &[f32],
    (at, bt, r): (&[f32], &[f32], usize),
    u: &mut [f32],
    st: StreamI8,
    y: &mut [i8],
) {
    let cout = g.cout;
    (k.streaming.u_i8)(g, x, st.x, at, r, u);
    let epilogue = k.streaming.epilogue_i8;
    let mut e = EpilogueI8 {
        u,
        r,
        bt,
        ws: &ws[..cout],
        bias: &bias[..cout],
        st,
        y: &mut y[..g.ho * g.wo * cout],
    };
    (k.conv1x1_sums_i8)(g, x, st.x.zero_point, w0, &mut |t| epilogue(&t, &mut e));
}

/// What [`epilogue_i8`] needs besides the tile of sums.
pub struct EpilogueI8<'a> {
    /// `u [ho·wo, r]`.
    pub u: &'a [f32],
    /// Rank rows `r`.
    pub r: usize,
    /// `Bᵀ [r, Cout]`.
    pub bt: &'a [f32],
    /// Per-channel `W0` scales (`Cout`: its length is the channel count).
    pub ws: &'a [f32],
    /// Per-channel bias (`Cout`).
    pub bias: &'a [f32],
    /// Input / output quantisation, ReLU.
    pub st: StreamI8,
    /// The output `[ho·wo, Cout]`.
    pub y: &'a mut [i8],
}

/// `u = A·deq(x)` for int8 input: [`lowrank_u_gemm`] with [`QParams::dequantize`] (the
/// portable `Streaming::u_i8` slot).
#[inline(always)]
pub fn lowrank_u_i8(g: &Geom, x: &[i8], q: QParams, at: &[f32], r: usize, u: &mut [f32]) {
    lowrank_u_gemm(g, x, |v| q.dequantize(v), at, r, u)
}

/// `u = A·x` for f32 input: [`lowrank_u_gemm`] (the portable `Streaming::u_f32` slot).
#[inline(always)]
pub fn lowrank_u_f32(g: &Geom, x: &[f32], at: &[f32], r: usize, u: &mut [f32]) {
    lowrank_u_gemm(g, x, |v| v, at, r, u)
}

/// The streaming int8 epilogue of one tile of `W0` sums (the portable
/// `Streaming::epilogue_i8` slot), [`M`] blocks of 8 output channels of up to 4 pixels at a
/// time (one load of `Bᵀ` feeds the 4, one broadcast of `u` the `M`): [`corrected_lanes`] — `acc·(s_x·s_w[o]) + bias[o]`, then
/// `+ Bᵀ[j, o]·u[p, j]` for `j` in order, a product then an add, as the scalar spec — then
/// ReLU and [`quantize_row`]; channels past the last 8 one at a time with the same
/// arithmetic.
#[inline(always)]
pub fn epilogue_i8(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    let mut i = 0;
    while i + 4 <= t.np {
        epilogue_rows::<4>(t, e, i);
        i += 4;
    }
    while i < t.np {
        epilogue_rows::<1>(t, e, i);
        i += 1;
    }
}

/// Rows `i .. i + N` of the tile `t` for [`epilogue_i8`]: [`M`] lane blocks a pass, then
/// single ones, then the last channels one at a time; each block is quantised straight from
/// its lanes.
#[inline(always)]
fn epilogue_rows<const N: usize>(t: &SumTile<'_>, e: &mut EpilogueI8<'_>, i: usize) {
    let (r, cout, sx, st) = (e.r, e.ws.len(), e.st.x.scale, e.st);
    let ups: [&[f32]; N] = core::array::from_fn(|k| &e.u[(t.p0 + i + k) * r..][..r]);
    let accs: [&[i32]; N] = core::array::from_fn(|k| &t.acc[(i + k) * t.no..][..t.no]);
    let rows: [usize; N] = core::array::from_fn(|k| (t.p0 + i + k) * cout + t.o0);
    let mut c = 0;
    while c + M * L <= t.no {
        let blk = accs.map(|a| &a[c..]);
        let v = corrected_lanes::<N, M>(blk, sx, e.ws, e.bias, ups, e.bt, t.o0 + c);
        put_lanes(st, &v, rows.map(|r| r + c), e.y);
        c += M * L;
    }
    while c + L <= t.no {
        let blk = accs.map(|a| &a[c..]);
        let v = corrected_lanes::<N, 1>(blk, sx, e.ws, e.bias, ups, e.bt, t.o0 + c);
        put_lanes(st, &v, rows.map(|r| r + c), e.y);
        c += L;
    }
    if c < t.no {
        for ((up, acc), &row) in ups.iter().zip(&accs).zip(&rows) {
            let mut vals: Lanes = [0.0; L];
            for (jo, d) in vals.iter_mut().enumerate().take(t.no - c) {
                let o = t.o0 + c + jo;
                let mut v = acc[c + jo] as f32 * (sx * e.ws[o]) + e.bias[o];
                for (j, &uj) in up.iter().enumerate() {
                    v += e.bt[j * cout + o] * uj;
                }
                *d = v;
            }
            let n = t.no - c;
            quantize_row(st.y, st.relu, &vals[..n], &mut e.y[row + c..][..n]);
        }
    }
}

/// [`quantize_row`] of pixel `k`'s `B` lane blocks into `y` from `at[k]` on.
#[inline(always)]
fn put_lanes<const N: usize, const B: usize>(
    st: StreamI8,
    v: &[[Lanes; B]; N],
    at: [usize; N],
    y: &mut [i8],
) {
    for (vk, at) in v.iter().zip(at) {
        quantize_row(st.y, st.relu, vk.as_flattened(), &mut y[at..][..B * L]);
    }
}

/// The f32 values [`corrected_out`] quantises, for the `B·L` channels `o ..` of `N` pixels
/// (`B` lane blocks): `acc[k][l]·(sx·ws[o + l]) + bias[o + l]`, then `+ Bᵀ[j, o + l]·up[k][j]` for `j`
/// in order, each a product then an add (`acc[k]` from this block's first sum; `Bᵀ` is
/// `[r, Cout]` with `Cout = ws.len()`, `r` the length of every `up[k]`).
#[inline(always)]
fn corrected_lanes<const N: usize, const B: usize>(
    acc: [&[i32]; N],
    sx: f32,
    ws: &[f32],
    bias: &[f32],
    up: [&[f32]; N],
    bt: &[f32],
    o: usize,
) -> [[Lanes; B]; N] {
    let (cout, r) = (ws.len(), up[0].len());
    let (w8, b8) = (&ws[o..][..B * L], &bias[o..][..B * L]);
    let mut v = [[[0.0f32; L]; B]; N];
    for (vk, ak) in v.iter_mut().zip(&acc) {
        for (l, (vl, &a)) in vk
            .as_flattened_mut()
            .iter_mut()
            .zip(&ak[..B * L])
            .enumerate()
        {
            *vl = a as f32 * (sx * w8[l]) + b8[l];
        }
    }
    let up = up.map(|u| &u[..r]);
    for (j, brow) in bt[..r * cout].chunks_exact(cout).enumerate() {
        let b = &brow[o..][..B * L];
        for (vk, uk) in v.iter_mut().zip(&up) {
            let uj = uk[j];
            for (vl, &bl) in vk.as_flattened_mut().iter_mut().zip(b) {
                *vl += bl * uj;
            }
        }
    }
    v
}

/// Streaming f32 1x1 low-rank correction with both halves as GEMMs — the bits of
/// [`lowrank_u`] then [`lowrank_add_f32`] (the spec), from the table `k`'s
/// `Streaming::u_f32` and `Streaming::add_f32`: `y` holds the `W0` conv plus bias (no ReLU).
/// `scratch` as for [`stream_conv1x1_i8_gemm`]; `None` (nothing written) when `k ≠ 1`
/// or it is short.
pub fn stream_lowrank_f32(
    k: &crate::kernels::Kernels,
    g: &Geom,
    x: &[f32],
    d: &Delta<'_>,
    relu: bool,
    scratch: &mut [f32],
    y: &mut [f32],
) -> Option<()> {
    let lr = d.lowrank_1x1(scratch, g.ho * g.wo, k.streaming.decode)?;
    stream_lowrank_f32_decoded(k, g, x, (lr.at, lr.bt, lr.r), lr.u, relu, y);
    Some(())
}

/// [`stream_lowrank_f32`] once the factors are decoded, with `u [ho·wo, r]` to fill (pixel
/// by pixel, as [`stream_conv1x1_i8_decoded`]).
pub fn stream_lowrank_f32_decoded(
    k: &crate::kernels::Kernels,
    g: &Geom,
    x: &[f32],
    (at, bt, r): (&[f32], &[f32], usize),
    u: &mut [f32],
    relu: bool,
    y: &mut [f32],
) {
    (k.streaming.u_f32)(g, x, at, r, u);
    let y = &mut y[..g.ho * g.wo * g.cout];
    (k.streaming.add_f32)(u, bt, r, g.cout, relu, y);
}

/// `y[p, o] += Bᵀ[j, o]·u[p, j]` for `j` in order, 8 channels at a time, then ReLU if asked,
/// for every pixel `p < y.len() / cout` (the portable `Streaming::add_f32` slot; the bits of
/// [`lowrank_add_f32`]). `u [·, r]`, `Bᵀ [r, cout]`.
#[inline(always)]
pub fn lowrank_add_t_f32(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    let relu_of = |v: f32| if relu { v.max(0.0) } else { v };
    for (p, row) in y.chunks_exact_mut(cout.max(1)).enumerate() {
        let up = &u[p * r..][..r];
        for (b, yb) in row.chunks_exact_mut(L).enumerate() {
            let o = b * L;
            let mut v: Lanes = [0.0; L];
            v.copy_from_slice(yb);
            for (j, &uj) in up.iter().enumerate() {
                for (vl, &bl) in v.iter_mut().zip(&bt[j * cout + o..][..L]) {
                    *vl += bl * uj;
                }
            }
            for (yl, &vl) in yb.iter_mut().zip(&v) {
                *yl = relu_of(vl);
            }
        }
        for (o, yo) in row.iter_mut().enumerate().skip(cout / L * L) {
            let mut acc = *yo;
            for (j, &uj) in up.iter().enumerate() {
                acc += bt[j * cout + o] * uj;
            }
            *yo = relu_of(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::reference::requant_weights::quantize_weight;
    use crate::quant::round_f32;

    /// The switch's int8 rebuild (`materialize_i8_with`: the whole-expert slot, else the
    /// per-channel one, else `channel_into_i8` without zeroing and `requant_weights`) gives
    /// the bytes and scales of the reference's two passes over `channel_into`, in every
    /// kernel table this CPU runs, on `rebuild_check`'s random convs (dyadic ties, zeros of
    /// both signs, NaN/infinite entries, zero `W0` channels, f16 factors). Seed: `LORKD_SEED`.
    #[test]
    fn rebuild_without_zeroing_matches() {
        use super::materialize_i8_with;
        use crate::kernels::rebuild_check::Conv;
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::vec::Vec<_>>();
        for case in 0..400 {
            let c = Conv::draw(&mut rng, case);
            let (d, (want, want_s)) = (c.delta(), c.want());
            let n = d.channel_len();
            let mut scratch = std::vec![f32::NAN; n];
            for table in crate::kernels::Kernels::available().into_iter().flatten() {
                let (mut got, mut got_s) = (std::vec![0i8; c.cout * n], std::vec![0f32; c.cout]);
                materialize_i8_with(&table, &c.w0, &c.s0, &d, &mut scratch, &mut got, &mut got_s);
                let at = (table.isa, case, c.cout, c.cin, c.k, c.rank);
                assert_eq!(got, want, "{at:?}");
                assert_eq!(bits(&got_s), bits(&want_s), "{at:?}");
            }
        }
    }

    /// The one-pass rank-4 rebuild (the Cortex-M table's `rebuild_i8`) gives the bytes and
    /// scale bits of the reference's two passes (`channel_into`, then the reference
    /// `requant_weights`) on random f32 factors of random shapes, ranks 4 mostly (others
    /// must decline), with exact and negative zeros, NaN / infinite entries, zero `W0`
    /// channels and factor scales from tiny to large. Seed: `LORKD_SEED`.
    #[test]
    fn one_pass_rank4_rebuild_matches_the_reference() {
        use super::{rebuild_rank4_i8, Delta, Factor};
        use crate::format::DeltaDType;
        use crate::kernels::reference::requant_weights::requant_weights;
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        let mut next = move || rng.next_u64();
        let mut fused = 0;
        for case in 0..600 {
            let k = [1, 1, 1, 3][case % 4];
            let rank = if case % 5 == 4 {
                1 + next() as usize % 6
            } else {
                4
            };
            let (cout, cin) = (1 + next() as usize % 9, 1 + next() as usize % 40);
            let (rk, ck, n) = (rank * k, cin * k, cin * k * k);
            let scale = [1e-30f32, 1e-3, 0.05, 1.0, 1e30][case % 5];
            let zeros = [2u64, 3, 50, 1000][case % 4];
            let val = |next: &mut dyn FnMut() -> u64| -> f32 {
                let r = next();
                match r % zeros {
                    0 => 0.0,
                    1 => -0.0,
                    _ if r.is_multiple_of(997) => [f32::NAN, f32::INFINITY][(r >> 20) as usize % 2],
                    _ => ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale,
                }
            };
            let a: std::vec::Vec<f32> = (0..rk * ck).map(|_| val(&mut next)).collect();
            let b: std::vec::Vec<f32> = (0..cout * k * rk).map(|_| val(&mut next)).collect();
            let w0: std::vec::Vec<i8> = (0..cout * n)
                .map(|i| if (i / n) % 3 == 0 { 0 } else { next() as i8 })
                .collect();
            let s0: std::vec::Vec<f32> = (0..cout)
                .map(|o| [0.0, 1e-4, 0.01, 3.0][(o + case) % 4] * (1 + o) as f32)
                .collect();
            let fa = Factor::from_bytes(bytemuck::cast_slice(&a), DeltaDType::F32, rk, ck).unwrap();
            let fb = Factor::from_bytes(bytemuck::cast_slice(&b), DeltaDType::F32, cout * k, rk)
                .unwrap();
            let d = Delta {
                a: fa,
                b: fb,
                cout,
                cin,
                k,
            };
            for o in 0..cout {
                let (w0o, s0o) = (&w0[o * n..][..n], s0[o]);
                let mut scratch = std::vec![0f32; n];
                let mut want = std::vec![0i8; n];
                d.channel_into(o, &mut scratch);
                let want_s = requant_weights(&mut scratch, w0o, s0o, &mut want);
                let mut w = std::vec![0f32; n];
                let mut got = std::vec![0i8; n];
                let got_s = rebuild_rank4_i8(&d, o, w0o, s0o, &mut w, &mut got);
                assert_eq!(got_s.is_some(), rk == 4, "case {case}: rk {rk}");
                let Some(got_s) = got_s else { continue };
                fused += 1;
                let at = format!("case {case}: cout {cout} cin {cin} k {k} rank {rank} o {o}");
                assert_eq!(got, want, "{at}");
                assert_eq!(got_s.to_bits(), want_s.to_bits(), "{at}");
            }
        }
        assert!(fused > 1000, "only {fused} channels took the one-pass path");
    }

    /// A random streaming 1x1 problem: geometry (strided, a channel slice of a wider input,
    /// pixel and channel counts around the lane / chunk / tile sizes), factors of rank `r`
    /// encoded in `dt` (unaligned bytes, so the spec decodes per element).
    struct Problem {
        g: crate::kernels::Geom,
        r: usize,
        dt: crate::format::DeltaDType,
        a: std::vec::Vec<u8>,
        b: std::vec::Vec<u8>,
    }

    impl Problem {
        fn draw(rng: &mut crate::engine::testnet::Rng, case: usize) -> Self {
            use crate::format::{factor, DeltaDType};
            let dt = [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8][case % 3];
            let big = case.is_multiple_of(7);
            let cin = 1 + rng.below(if big { 300 } else { 70 });
            let cout = 1 + rng.below(if big { 150 } else { 40 });
            let r = 1 + rng.below(if case.is_multiple_of(5) { 40 } else { 12 });
            let (h, w, stride) = (1 + rng.below(11), 1 + rng.below(11), 1 + rng.below(2));
            let extra = rng.below(5);
            let g = crate::kernels::Geom {
                h,
                w,
                in_stride: cin + extra,
                c_off: rng.below(extra + 1),
                cin,
                ho: crate::kernels::Geom::out_dim(h, 1, stride, 0),
                wo: crate::kernels::Geom::out_dim(w, 1, stride, 0),
                cout,
                k: 1,
                stride,
                pad: 0,
            };
            let mut enc = |rows: usize, cols: usize| {
                let v = rng.vec(rows * cols, 0.5);
                let n = factor::factor_bytes(dt, rows, cols).unwrap();
                let mut out = std::vec![0u8; n + 1];
                factor::encode_into(&v, rows, cols, dt, &mut out[1..]).unwrap();
                out
            };
            let (a, b) = (enc(r, cin), enc(cout, r));
            Problem { g, r, dt, a, b }
        }

        fn delta(&self) -> super::Delta<'_> {
            let (g, r) = (&self.g, self.r);
            let a = super::Factor::from_bytes(&self.a[1..], self.dt, r, g.cin).unwrap();
            let b = super::Factor::from_bytes(&self.b[1..], self.dt, g.cout, r).unwrap();
            super::Delta {
                a,
                b,
                cout: g.cout,
                cin: g.cin,
                k: 1,
            }
        }

        /// The Streaming arena's low-rank scratch for this conv, with one spare element.
        fn scratch(&self, d: &super::Delta<'_>) -> std::vec::Vec<f32> {
            std::vec![f32::NAN; d.decoded_len() + self.g.ho * self.g.wo * self.r + 1]
        }
    }

    /// The streaming int8 1x1 path with both halves as GEMMs gives the bytes of the
    /// per-output spec (`stream_conv1x1_i8`, reference dot, factors decoded per element)
    /// with every kernel table's `W0` sums, on random shapes, ranks, factor dtypes, zero
    /// points (extremes included) and output scales (small ones saturate). The f32 path
    /// gives the bits of `lowrank_u` then `lowrank_add_f32`. Seed: `LORKD_SEED`.
    #[test]
    fn streaming_gemms_match_the_per_output_spec() {
        use super::{stream_conv1x1_i8, stream_conv1x1_i8_gemm, StreamI8};
        use crate::quant::QParams;
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        let tables: std::vec::Vec<_> = crate::kernels::Kernels::available()
            .into_iter()
            .flatten()
            .collect();
        for case in 0..240 {
            let p = Problem::draw(&mut rng, case);
            let (g, d) = (p.g, p.delta());
            let at = format!("case {case}: {:?} r {} {:?}", g, p.r, p.dt);
            let x: std::vec::Vec<i8> = (0..g.in_len()).map(|_| rng.next_u64() as i8).collect();
            let w0: std::vec::Vec<i8> = (0..g.cout * g.cin).map(|_| rng.next_u64() as i8).collect();
            let ws: std::vec::Vec<f32> = (0..g.cout).map(|_| 1e-3 + rng.uniform(1e-3)).collect();
            let bias = rng.vec(g.cout, 2.0);
            let zp = |rng: &mut crate::engine::testnet::Rng| match rng.below(8) {
                0 => i32::MAX,
                1 => i32::MIN,
                2 => (1 << 24) + rng.below(300) as i32 - 150,
                _ => rng.below(256) as i32 - 128,
            };
            let st = StreamI8 {
                x: QParams {
                    scale: 0.01 + rng.uniform(0.005),
                    zero_point: rng.below(256) as i32 - 128,
                },
                y: QParams {
                    scale: [1e-4, 0.02, 0.1, 3.0][case % 4],
                    zero_point: zp(&mut rng),
                },
                relu: case % 2 == 0,
            };
            let mut u = std::vec![0.0; g.ho * g.wo * p.r];
            let mut want = std::vec![0i8; g.out_len()];
            let dot = crate::kernels::reference::conv1x1::dot_i8;
            stream_conv1x1_i8(dot, &g, &x, &w0, &ws, &bias, &d, st, &mut u, &mut want);
            for k in &tables {
                let mut got = std::vec![0i8; g.out_len()];
                let mut scratch = p.scratch(&d);
                let done = stream_conv1x1_i8_gemm(
                    k,
                    &g,
                    &x,
                    &w0,
                    &ws,
                    &bias,
                    &d,
                    st,
                    &mut scratch,
                    &mut got,
                );
                assert!(done.is_some(), "{at}");
                assert_eq!(got, want, "{at} {k:?} {st:?}");
                assert!(
                    scratch.last().unwrap().is_nan(),
                    "{at}: wrote past the scratch"
                );
            }
            // The scratch the arena plans is enough; one element less is refused.
            let mut short = std::vec![0.0; d.decoded_len() + g.ho * g.wo * p.r - 1];
            let mut y = std::vec![0i8; g.out_len()];
            let none = stream_conv1x1_i8_gemm(
                &tables[0], &g, &x, &w0, &ws, &bias, &d, st, &mut short, &mut y,
            );
            assert!(none.is_none(), "{at}");

            // f32: the same input dequantised, the W0 conv stood in by random values.
            let xf = rng.vec(g.in_len(), 3.0);
            let y0 = rng.vec(g.out_len(), 1.0);
            let mut want = y0.clone();
            super::lowrank_u(&g, &xf, |v| v, &d.a, &mut u);
            super::lowrank_add_f32(&g, &u, &d.b, st.relu, &mut want);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::vec::Vec<_>>();
            for k in &tables {
                let mut got = y0.clone();
                let mut scratch = p.scratch(&d);
                super::stream_lowrank_f32(k, &g, &xf, &d, st.relu, &mut scratch, &mut got).unwrap();
                assert_eq!(bits(&got), bits(&want), "{at} {k:?}");
                assert!(
                    scratch.last().unwrap().is_nan(),
                    "{at}: wrote past the scratch"
                );
            }
        }
    }

    /// Every table's `Streaming::u_i8` slot gives `lowrank_u_i8`'s bits (`u = A·deq(x)`,
    /// each sum over the channels in order, a product then an add) and writes no element
    /// past `ho·wo·r`, on random shapes (pixel counts around the 16-lane groups, channel
    /// slices and strides), ranks 1–40, weights with both signs and zero points far past
    /// the int8 range. Checked before the epilogue, where a reordered sum would show in
    /// the last bit. Seed: `LORKD_SEED`.
    #[test]
    fn u_i8_slots_are_lowrank_u_i8() {
        use crate::quant::QParams;
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        for case in 0..300 {
            let p = Problem::draw(&mut rng, case);
            let (g, r) = (p.g, p.r);
            let x: std::vec::Vec<i8> = (0..g.in_len()).map(|_| rng.next_u64() as i8).collect();
            let at = rng.vec(r * g.cin, 1.0);
            let q = QParams {
                scale: [1e-3 + rng.uniform(0.01).abs(), 3.7, 1e-30][case % 3],
                zero_point: match case % 4 {
                    0 => (rng.next_u64() as i32) >> 2,
                    _ => rng.below(256) as i32 - 128,
                },
            };
            let n = g.ho * g.wo * r;
            let mut want = std::vec![f32::NAN; n + 1];
            super::lowrank_u_i8(&g, &x, q, &at, r, &mut want);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::vec::Vec<_>>();
            for k in crate::kernels::Kernels::available().into_iter().flatten() {
                let mut got = std::vec![f32::NAN; n + 1];
                (k.streaming.u_i8)(&g, &x, q, &at, r, &mut got);
                assert_eq!(
                    bits(&got[..n]),
                    bits(&want[..n]),
                    "case {case}: {g:?} r {r} {q:?} {k:?}"
                );
                assert!(got[n].is_nan(), "case {case}: {k:?} wrote past u");
            }
        }
    }

    /// The 8-channel epilogue's f32 values are the scalar spec's (`corrected_value`, what
    /// `corrected_out` quantises) bit for bit — checked before quantisation, where a
    /// reordered product or sum would show — on random sums over the whole i32 range,
    /// scales, ranks (0 included) and channel offsets. Seed: `LORKD_SEED`.
    #[test]
    fn corrected_lanes_are_the_scalar_values() {
        use crate::format::DeltaDType;
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        for case in 0..2000 {
            let (r, cout) = (rng.below(20), super::L + rng.below(60));
            let acc: std::vec::Vec<i32> = (0..cout)
                .map(|_| match case % 3 {
                    0 => rng.next_u64() as i32,
                    _ => (rng.next_u64() % 2_000_001) as i32 - 1_000_000,
                })
                .collect();
            let ws = rng.vec(cout, 1e-2);
            let bias = rng.vec(cout, 3.0);
            let up = rng.vec(r, 10.0);
            let b = rng.vec(cout * r, 0.5);
            let mut bt = std::vec![0.0; r * cout];
            for o in 0..cout {
                for j in 0..r {
                    bt[j * cout + o] = b[o * r + j];
                }
            }
            let sx = 0.001 + rng.uniform(1e-3).abs();
            let fb = super::Factor::from_bytes(bytemuck::cast_slice(&b), DeltaDType::F32, cout, r)
                .unwrap();
            let d = super::Delta {
                a: super::Factor::EMPTY,
                b: fb,
                cout,
                cin: 0,
                k: 1,
            };
            let o = rng.below(cout - super::L + 1);
            // 4 pixels at once: pixel `k` reads the sums shifted by `k` channels.
            let accs = [0, 1, 2, 3].map(|k| &acc[(o + k).min(cout - super::L)..]);
            let ups = [&up[..], &up[..], &up[..], &up[..]];
            let got4 = super::corrected_lanes::<4, 1>(accs, sx, &ws, &bias, ups, &bt, o);
            let [[got1]] =
                super::corrected_lanes::<1, 1>([&acc[o..]], sx, &ws, &bias, [&up[..]], &bt, o);
            for (l, v) in got1.iter().enumerate() {
                for b32 in [Some(&b[..]), None] {
                    let want =
                        super::corrected_value(acc[o + l], o + l, &ws, &bias, &d, b32, &up, sx);
                    assert_eq!(
                        v.to_bits(),
                        want.to_bits(),
                        "case {case}: r {r} o {o} l {l}"
                    );
                }
            }
            for (k, [vk]) in got4.iter().enumerate() {
                let ak = (o + k).min(cout - super::L);
                for (l, v) in vk.iter().enumerate() {
                    let b32 = Some(&b[..]);
                    let want =
                        super::corrected_value(acc[ak + l], o + l, &ws, &bias, &d, b32, &up, sx);
                    assert_eq!(
                        v.to_bits(),
                        want.to_bits(),
                        "case {case}: pixel {k} lane {l}"
                    );
                }
            }
            // `M` lane blocks a pass, where the channels from `o` hold them.
            let w = super::M * super::L;
            if o + w <= cout {
                let accs = [0, 1, 2, 3].map(|k| &acc[(o + k).min(cout - w)..]);
                let got =
                    super::corrected_lanes::<4, { super::M }>(accs, sx, &ws, &bias, ups, &bt, o);
                for (k, vk) in got.iter().enumerate() {
                    let ak = (o + k).min(cout - w);
                    for (l, v) in vk.as_flattened().iter().enumerate() {
                        let b32 = Some(&b[..]);
                        let want = super::corrected_value(
                            acc[ak + l],
                            o + l,
                            &ws,
                            &bias,
                            &d,
                            b32,
                            &up,
                            sx,
                        );
                        assert_eq!(v.to_bits(), want.to_bits(), "case {case}: {k} {l}");
                    }
                }
            }
        }
    }

    /// The row quantiser gives `QParams::quantize`'s byte, scale 1 and zero point 0 (where
    /// the byte shows the most of the rounding): every f32 within 40 steps of each multiple
    /// of 0.5 in ±300 and of ±2^22, and a sweep over the whole bit space (NaNs, infinities,
    /// subnormals included) with a random stride. Seed: `LORKD_SEED`.
    #[test]
    fn quantize_row_is_quantize_at_every_half() {
        use crate::quant::QParams;
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        let q = QParams {
            scale: 1.0,
            zero_point: 0,
        };
        let check = |vals: &[f32]| {
            let mut got = std::vec![0i8; vals.len()];
            super::quantize_row(q, false, vals, &mut got);
            for (&g, &x) in got.iter().zip(vals) {
                assert_eq!(g, q.quantize(x), "{x} ({:#x})", x.to_bits());
            }
        };
        let mut vals = std::vec::Vec::new();
        let centres = (-600..=600).map(|k| k as f32 * 0.5);
        for c in centres.chain([4_194_304.0, -4_194_304.0, 4_194_303.5, -4_194_303.5]) {
            for d in -40i32..=40 {
                let b = c.to_bits() as i32 + d;
                vals.push(f32::from_bits(b as u32));
                vals.push(-f32::from_bits(b as u32));
            }
        }
        check(&vals);
        vals.clear();
        // Values of every magnitude: small ones round to the centre or a neighbour, large
        // ones saturate; the clamp at ±2^22 and NaN take their own paths.
        let step = 2_000 + rng.below(2_000) as u64;
        let mut b = rng.below(2_000) as u64;
        while b <= u32::MAX as u64 {
            vals.push(f32::from_bits(b as u32));
            b += step;
        }
        check(&vals);
    }

    /// The `VCVT` form (32-bit Arm's quantiser, tested here on every target) gives
    /// `QParams::quantize`'s byte: every f32 within 300 steps of each multiple of 0.5 in
    /// ±400 and around ±2^22 (both signs), a sweep over the whole bit space with a random
    /// stride, under random scales and zero points out to ±2^31. Seed: `LORKD_SEED`.
    #[test]
    fn quantize_vcvt_is_quantize() {
        use crate::quant::QParams;
        let seed = crate::test_seed();
        let mut rng = crate::engine::testnet::Rng::new(seed);
        let mut vals = std::vec::Vec::new();
        let centres = (-800..=800).map(|k| k as f32 * 0.5);
        for c in centres.chain([4_194_304.0, 4_194_303.5, 4_194_304.5, 2_097_152.5]) {
            for d in -300i32..=300 {
                let b = f32::from_bits((c.to_bits() as i32 + d) as u32);
                vals.extend([b, -b]);
            }
        }
        let step = 20_000 + rng.below(20_000) as u64;
        let mut b = rng.below(20_000) as u64;
        while b <= u32::MAX as u64 {
            vals.push(f32::from_bits(b as u32));
            b += step;
        }
        let zps = [
            0,
            1,
            -128,
            127,
            -(1 << 22),
            1 << 22,
            (1 << 22) - 100,
            1 << 21,
            -(1 << 21),
            i32::MAX,
            i32::MIN,
        ];
        for case in 0..12 {
            let q = QParams {
                scale: if case < 4 {
                    1.0
                } else {
                    2f32.powf(rng.uniform(10.0)) * (1.0 + rng.uniform(0.5))
                },
                zero_point: if case % 3 == 0 {
                    rng.below(256) as i32 - 128
                } else {
                    zps[rng.below(zps.len())]
                },
            };
            for &x in &vals {
                let want = q.quantize(x);
                let what = || format!("seed {seed}: {x} ({:#x}) {q:?}", x.to_bits());
                assert_eq!(super::quantize_vcvt(q, x), want, "{}", what());
                if super::near_zero_point(q) {
                    let got = super::quantize_vcvt_with::<false>(q, x);
                    assert_eq!(got, want, "unclamped, {}", what());
                }
            }
        }
    }

    /// The row quantiser gives `QParams::quantize`'s byte (after ReLU when asked) on
    /// rounding edges, non-finite values, extreme zero points (and those around ±2^14,
    /// where aarch64's row changes form) and random values.
    #[test]
    fn quantize_row_is_quantize() {
        use crate::quant::QParams;
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        let edges = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            0.49999997,
            -0.49999997,
            127.5,
            -128.5,
            4_194_303.5,
            -4_194_304.5,
            // Around aarch64's i16 step (zero points within ±2^14 join after a narrow).
            16_000.0,
            -16_100.0,
            32_767.5,
            -32_768.5,
            40_000.0,
            -40_000.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1e-40,
        ];
        for case in 0..4000 {
            let zero_point = match case % 7 {
                0 => i32::MAX,
                1 => i32::MIN,
                2 => -(1 << 24) - 200 + rng.below(400) as i32,
                3 => (1 << 22) - 200 + rng.below(400) as i32,
                4 => [1 << 14, -(1 << 14)][rng.below(2)] - 200 + rng.below(400) as i32,
                _ => rng.below(512) as i32 - 256,
            };
            let q = QParams {
                scale: [1.0, 0.5, 0.1, 1e-3, 7.0][case % 5],
                zero_point,
            };
            let v: std::vec::Vec<f32> = (0..1 + rng.below(40))
                .map(|_| {
                    if rng.below(3) == 0 {
                        edges[rng.below(edges.len())] * q.scale
                    } else {
                        rng.uniform(300.0) * q.scale
                    }
                })
                .collect();
            for relu in [false, true] {
                let mut got = std::vec![0i8; v.len()];
                super::quantize_row(q, relu, &v, &mut got);
                for (&g, &x) in got.iter().zip(&v) {
                    let want = q.quantize(if relu { x.max(0.0) } else { x });
                    assert_eq!(g, want, "{x} {q:?} relu {relu}");
                }
            }
        }
    }

    #[test]
    fn quantize_weight_is_round_half_away_then_clamp() {
        let spec = |t: f32| round_f32(t).clamp(-127.0, 127.0) as i8;
        let edges = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            0.49999997,
            -0.49999997,
            126.5,
            -126.5,
            127.49,
            127.5,
            -127.5,
            128.0,
            1e9,
            -1e9,
            3e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            8_388_609.0,
        ];
        for t in edges {
            assert_eq!(quantize_weight(t), spec(t), "{t}");
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let t = (x as i32 as f32) / (1u32 << 23) as f32; // ±256
            assert_eq!(quantize_weight(t), spec(t), "{t}");
        }
    }
}
