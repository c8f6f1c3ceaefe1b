//! NEON int8 department rebuild (see `crate::switch`): one output channel's
//! `w = B·A + s0·W0q` in f32, `s = max|w| / 127`, `q = round(w · 1/s)` — the reference's
//! f32 operations in its order, 4 lanes at a time, so the same bits:
//! - `B·A` summed in rank order (`((b0·a0 + b1·a1) + b2·a2) + …`), then `+ s0·q`: every
//!   product a `FMUL` and every sum a `FADD` (no `FMLA`: it would round once where the
//!   reference rounds twice).
//! - `max|w|` over the non-NaN values as `FABS` + `FMAXNM` (a quiet NaN operand loses to a
//!   number; every NaN here is an arithmetic result, so quiet; Rust's default FP
//!   environment keeps subnormals): the value of the reference's fold over the bit patterns.
//! - The codes by `FCVTAS` (round to nearest, ties away from zero; NaN → 0; saturating),
//!   then saturating narrows to int8 and a max with −127: `quantize_weight`'s
//!   `clamp(round_half_away(t), −127, 127)` for every `t` (lib test
//!   `codes_are_quantize_weight` at every half and its neighbours).
//!
//! Slots: `rebuild_i8` (one channel, any `k` and rank, f32 factors; else `B·A` by
//! `Delta::channel_into_i8` and [`requant_weights`]), `rebuild_layer_i8` (whole experts of
//! up to [`LAYER_MAX`] weights a channel, the setup once an expert) and
//! `requant_weights`. Shared check: `kernels::rebuild_check`.
use core::arch::aarch64::*;

use crate::kernels::reference::requant_weights::quantize_weight;
use crate::switch::Delta;

/// NEON per-channel weight re-quantisation (`Kernels::requant_weights`); same contract and
/// bits as the reference (`w` too).
pub(crate) fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    // SAFETY: NEON is baseline on this target.
    unsafe { requant_neon(w, w0, s0, out) }
}

#[target_feature(enable = "neon")]
fn requant_neon(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let (w0, out) = (&w0[..n], &mut out[..n]);
    let s0v = vdupq_n_f32(s0);
    let mut mx = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 ≤ n`: 8 f32 of `w` read and written, 8 bytes of `w0` read.
        unsafe {
            let p = w.as_mut_ptr().add(i);
            let [q0, q1] = widen8(vld1_s8(w0.as_ptr().add(i)));
            let v0 = add_w0(vld1q_f32(p), q0, s0v);
            let v1 = add_w0(vld1q_f32(p.add(4)), q1, s0v);
            vst1q_f32(p, v0);
            vst1q_f32(p.add(4), v1);
            mx = max_abs(max_abs(mx, v0), v1);
        }
        i += 8;
    }
    let mut amax = vmaxnmvq_f32(mx);
    for (v, &q) in w[i..].iter_mut().zip(&w0[i..]) {
        *v += s0 * q as f32;
        amax = amax.max(v.abs());
    }
    quantise(w, amax, out)
}

/// The `Kernels::rebuild_i8` slot: with f32 factors ([`factors`]) one channel by
/// [`channel`]; other factors: `Delta::channel_into_i8`, then [`requant_weights`].
pub(crate) fn rebuild_i8(
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> f32 {
    // SAFETY: NEON is baseline on this target.
    unsafe { rebuild_neon(d, o, w0, s0, w, out) }
}

#[target_feature(enable = "neon")]
fn rebuild_neon(d: &Delta<'_>, o: usize, w0: &[i8], s0: f32, w: &mut [f32], out: &mut [i8]) -> f32 {
    let n = d.channel_len();
    let (w0, w, out) = (&w0[..n], &mut w[..n], &mut out[..n]);
    if let Some((a, b)) = d.f32_factors() {
        let kr = d.k * d.a.rows;
        if o < d.cout {
            return channel(a, &b[o * kr..][..kr], d.k, w0, s0, w, out);
        }
    }
    d.channel_into_i8(o, w);
    requant_weights(w, w0, s0, out)
}

/// Longest channel [`rebuild_layer_i8`] takes: its two f32 rows live on the stack (2 KiB).
const LAYER_MAX: usize = 256;

/// The `Kernels::rebuild_layer_i8` slot: every channel of an expert with f32 factors and
/// at most [`LAYER_MAX`] weights a channel by [`channel`], the factor checks and slicing
/// done once (they cost more than a 24-weight channel's arithmetic when done per
/// channel), the f32 rows in a stack buffer; rank-4 1x1 experts two channels at a time
/// ([`layer_1x1`]). `false` for other experts.
pub(crate) fn rebuild_layer_i8(
    d: &Delta<'_>,
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) -> bool {
    // SAFETY: NEON is baseline on this target.
    unsafe { layer_neon(d, w0, s0, out, out_scale) }
}

#[target_feature(enable = "neon")]
fn layer_neon(d: &Delta<'_>, w0: &[i8], s0: &[f32], out: &mut [i8], out_scale: &mut [f32]) -> bool {
    let (n, cout) = (d.channel_len(), d.cout);
    let Some((a, b)) = d.f32_factors() else {
        return false;
    };
    if n == 0 || n > LAYER_MAX || !d.layer_fits(w0, s0, out, out_scale) {
        return false;
    }
    // Two rows: [`layer_1x1`] forms two channels at a time.
    let mut buf = [0f32; 2 * LAYER_MAX];
    let (w0, out) = (&w0[..cout * n], &mut out[..cout * n]);
    let (s0, out_scale) = (&s0[..cout], &mut out_scale[..cout]);
    match (d.k, d.a.rows) {
        (1, 4) => layer_1x1::<4>(a, b, w0, s0, &mut buf[..2 * n], out, out_scale),
        (k, rk) => {
            let w = &mut buf[..n];
            let chans = w0.chunks_exact(n).zip(out.chunks_exact_mut(n));
            let chans = chans.zip(b.chunks_exact(k * rk));
            for (((q, o), b), (s, &s0)) in chans.zip(out_scale.iter_mut().zip(s0)) {
                *s = channel(a, b, k, q, s0, w, o);
            }
        }
    }
    true
}

/// [`layer_neon`]'s loop for 1x1 experts of `R` rank rows: channels in pairs by
/// [`row_pair`] (each `A` vector loaded once for both, one loop's overhead for both),
/// an odd last one by [`row`], each then by [`quantise`], inlined into this loop: the
/// per-channel setup (saved registers, constants, the segment loop of [`channel`]) is
/// paid once an expert. `w`: two rows of `n` f32.
#[target_feature(enable = "neon")]
fn layer_1x1<const R: usize>(
    a: &[f32],
    b: &[f32],
    w0: &[i8],
    s0: &[f32],
    w: &mut [f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) {
    let n = w.len() / 2;
    let (wa, wb) = w.split_at_mut(n);
    let chans = w0
        .chunks_exact(2 * n)
        .zip(out.chunks_exact_mut(2 * n))
        .zip(b.chunks_exact(2 * R))
        .zip(out_scale.chunks_exact_mut(2).zip(s0.chunks_exact(2)));
    for (((q, o), b), (s, s0)) in chans {
        let (q, b) = ([&q[..n], &q[n..]], [&b[..R], &b[R..]]);
        let [ma, mb] = row_pair::<R>(a, b, q, [s0[0], s0[1]], [&mut *wa, &mut *wb]);
        let (oa, ob) = o.split_at_mut(n);
        s[0] = quantise(wa, ma, oa);
        s[1] = quantise(wb, mb, ob);
    }
    if !s0.len().is_multiple_of(2) {
        let last = s0.len() - 1;
        let amax = row::<R>(a, &b[last * R..][..R], &w0[last * n..][..n], s0[last], wa);
        out_scale[last] = quantise(wa, amax, &mut out[last * n..][..n]);
    }
}

/// [`row`] (rank `R > 0` known) for two channels of one 1x1 expert: the same operations
/// on every weight of each, each `A` vector loaded once for both.
#[inline]
#[target_feature(enable = "neon")]
fn row_pair<const R: usize>(
    a: &[f32],
    b: [&[f32]; 2],
    q: [&[i8]; 2],
    s0: [f32; 2],
    w: [&mut [f32]; 2],
) -> [f32; 2] {
    let [wa, wb] = w;
    let n = wa.len();
    let (a, wb) = (&a[..R * n], &mut wb[..n]);
    let (b, q) = ([&b[0][..R], &b[1][..R]], [&q[0][..n], &q[1][..n]]);
    // Plain loops: `array::from_fn` here stays an out-of-line closure call per lane.
    let mut c = [[vdupq_n_f32(0.0); R]; 2];
    for (cm, bm) in c.iter_mut().zip(b) {
        for (cj, &bj) in cm.iter_mut().zip(bm) {
            *cj = vdupq_n_f32(bj);
        }
    }
    let s0v = s0.map(|v| vdupq_n_f32(v));
    let mut mx = [vdupq_n_f32(0.0); 2];
    let mut pa: [*const f32; R] = core::array::from_fn(|j| a[j * n..].as_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 ≤ n`: each `pa[j]` is at `j·n + i` of `a` (`R·n` long); `q[m]`,
        // `wa`, `wb` are `n` long: 8 elements read (written) at `i` each.
        unsafe {
            let x: [[float32x4_t; 2]; R] =
                core::array::from_fn(|j| [vld1q_f32(pa[j]), vld1q_f32(pa[j].add(4))]);
            for (m, pw) in [wa.as_mut_ptr(), wb.as_mut_ptr()].into_iter().enumerate() {
                let (cm, mut t0, mut t1) = (&c[m], vdupq_n_f32(0.0), vdupq_n_f32(0.0));
                for j in 0..R {
                    let (p0, p1) = (vmulq_f32(cm[j], x[j][0]), vmulq_f32(cm[j], x[j][1]));
                    (t0, t1) = if j == 0 {
                        (p0, p1)
                    } else {
                        (vaddq_f32(t0, p0), vaddq_f32(t1, p1))
                    };
                }
                let [q0, q1] = widen8(vld1_s8(q[m].as_ptr().add(i)));
                let (v0, v1) = (add_w0(t0, q0, s0v[m]), add_w0(t1, q1, s0v[m]));
                vst1q_f32(pw.add(i), v0);
                vst1q_f32(pw.add(i + 4), v1);
                mx[m] = max_abs(max_abs(mx[m], v0), v1);
            }
            pa.iter_mut().for_each(|p| *p = p.add(8));
        }
        i += 8;
    }
    let mut amax = mx.map(|m| vmaxnmvq_f32(m));
    for (m, w) in [wa, wb].into_iter().enumerate() {
        for c in i..n {
            let mut t = b[m][0] * a[c];
            for (j, &bj) in b[m].iter().enumerate().skip(1) {
                t += bj * a[j * n + c];
            }
            w[c] = t + s0[m] * q[m][c] as f32;
            amax[m] = amax[m].max(w[c].abs());
        }
    }
    amax
}

/// One output channel with f32 factors: `A` (`rk` rows of `ck`), the channel's `k` rows
/// of `B` (`b`, `k·rk`), its `W0q` and `s0`; `w` (`k·ck` f32) gets the weights, `out` the
/// codes; returns the scale. Each of the `k` segments of `ck` weights is one [`row`] pass
/// (`B·A` for 8 weights at a time in registers, `+ s0·W0q`, `max|w|`, one store a weight,
/// where `Delta::channel_into_i8` then [`requant_weights`] store, reload and store again),
/// then [`quantise`].
#[inline]
#[target_feature(enable = "neon")]
fn channel(
    a: &[f32],
    b: &[f32],
    k: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> f32 {
    let (n, rk) = (w.len(), b.len() / k);
    let ck = n / k;
    let mut amax = 0.0f32;
    for r in 0..k {
        let br = &b[r * rk..][..rk];
        let (qr, wr) = (&w0[r * ck..][..ck], &mut w[r * ck..][..ck]);
        amax = amax.max(if rk == 4 {
            row::<4>(a, br, qr, s0, wr)
        } else {
            row::<0>(a, br, qr, s0, wr)
        });
    }
    quantise(w, amax, out)
}

/// One row of `n = w.len()` weights: `w[i] = Σ_j b[j]·a[j·n + i] + s0·q[i]` (`j` in order,
/// `rk = b.len()` rows, the first product not added to a zero: the sums of
/// `Delta::channel_into_i8`, whose all-zero sums may be −0 as here) with their
/// `max|w|` (non-NaN) returned. `R`: the rank row count if known (4: unrolled), else 0.
#[inline]
#[target_feature(enable = "neon")]
fn row<const R: usize>(a: &[f32], b: &[f32], q: &[i8], s0: f32, w: &mut [f32]) -> f32 {
    let (n, rk) = (w.len(), if R > 0 { R } else { b.len() });
    let (a, b, q) = (&a[..rk * n], &b[..rk], &q[..n]);
    let s0v = vdupq_n_f32(s0);
    let mut mx = vdupq_n_f32(0.0);
    let mut i = 0;
    if R > 0 {
        // One pointer a row, each moved on by 8 (post-indexed loads, no index arithmetic).
        let mut pa: [*const f32; R] = core::array::from_fn(|j| a[j * n..].as_ptr());
        let c: [float32x4_t; R] = core::array::from_fn(|j| vdupq_n_f32(b[j]));
        let (mut pq, mut pw) = (q.as_ptr(), w.as_mut_ptr());
        while i + 8 <= n {
            // SAFETY: `i + 8 ≤ n`: each `pa[j]` is at `j·n + i` of `a` (`rk·n` long), `pq` at
            // `i` of `q` and `pw` at `i` of `w` (`n` long): 8 elements read (written) each.
            unsafe {
                let ld = |p: *const f32| [vld1q_f32(p), vld1q_f32(p.add(4))];
                let [x0, x1] = ld(pa[0]);
                let (mut t0, mut t1) = (vmulq_f32(c[0], x0), vmulq_f32(c[0], x1));
                for j in 1..R {
                    let [x0, x1] = ld(pa[j]);
                    t0 = vaddq_f32(t0, vmulq_f32(c[j], x0));
                    t1 = vaddq_f32(t1, vmulq_f32(c[j], x1));
                }
                let [q0, q1] = widen8(vld1_s8(pq));
                let (v0, v1) = (add_w0(t0, q0, s0v), add_w0(t1, q1, s0v));
                vst1q_f32(pw, v0);
                vst1q_f32(pw.add(4), v1);
                mx = max_abs(max_abs(mx, v0), v1);
                pa.iter_mut().for_each(|p| *p = p.add(8));
                (pq, pw) = (pq.add(8), pw.add(8));
            }
            i += 8;
        }
    }
    while i + 8 <= n {
        // SAFETY: `i + 8 ≤ n`: 8 f32 of each `a` row (`j·n + i + 8 ≤ rk·n`), of `w`, 8 bytes
        // of `q`.
        unsafe {
            let p = a.as_ptr().add(i);
            let ld = |j: usize| [vld1q_f32(p.add(j * n)), vld1q_f32(p.add(j * n + 4))];
            let c = vdupq_n_f32(b[0]);
            let [x0, x1] = ld(0);
            let (mut t0, mut t1) = (vmulq_f32(c, x0), vmulq_f32(c, x1));
            for (j, &bj) in b.iter().enumerate().skip(1) {
                let c = vdupq_n_f32(bj);
                let [x0, x1] = ld(j);
                t0 = vaddq_f32(t0, vmulq_f32(c, x0));
                t1 = vaddq_f32(t1, vmulq_f32(c, x1));
            }
            let [q0, q1] = widen8(vld1_s8(q.as_ptr().add(i)));
            let (v0, v1) = (add_w0(t0, q0, s0v), add_w0(t1, q1, s0v));
            let pw = w.as_mut_ptr().add(i);
            vst1q_f32(pw, v0);
            vst1q_f32(pw.add(4), v1);
            mx = max_abs(max_abs(mx, v0), v1);
        }
        i += 8;
    }
    let mut amax = vmaxnmvq_f32(mx);
    for c in i..n {
        let mut t = b[0] * a[c];
        for (j, &bj) in b.iter().enumerate().skip(1) {
            t += bj * a[j * n + c];
        }
        w[c] = t + s0 * q[c] as f32;
        amax = amax.max(w[c].abs());
    }
    amax
}

/// 8 int8 codes as two vectors of f32 lanes (exact).
#[inline]
#[target_feature(enable = "neon")]
fn widen8(q: int8x8_t) -> [float32x4_t; 2] {
    let h = vmovl_s8(q);
    [
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(h))),
        vcvtq_f32_s32(vmovl_high_s16(h)),
    ]
}

/// `t + s0·q`: the product, then the sum (two roundings, as the reference).
#[inline]
#[target_feature(enable = "neon")]
fn add_w0(t: float32x4_t, q: float32x4_t, s0v: float32x4_t) -> float32x4_t {
    vaddq_f32(t, vmulq_f32(s0v, q))
}

/// `mx` lane-wise max with `|v|`, a NaN lane of `v` leaving `mx` as it was (`FMAXNM`).
#[inline]
#[target_feature(enable = "neon")]
fn max_abs(mx: float32x4_t, v: float32x4_t) -> float32x4_t {
    vmaxnmq_f32(mx, vabsq_f32(v))
}

/// The reference's scale and codes of the finished row `w`, given its non-NaN `max|w|`
/// `amax` (0 for none): `s = amax / 127` (1 for 0), `out = quantize_weight(w · 1/s)`.
#[inline]
#[target_feature(enable = "neon")]
fn quantise(w: &[f32], amax: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let out = &mut out[..n];
    let s = crate::quant::weight_scale(amax);
    let inv = 1.0 / s;
    let invv = vdupq_n_f32(inv);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 ≤ n`: 16 f32 read, 16 bytes written.
        unsafe {
            let p = w.as_ptr().add(i);
            let v = [0, 4, 8, 12].map(|j| vld1q_f32(p.add(j)));
            vst1q_s8(out.as_mut_ptr().add(i), codes16(v, invv));
        }
        i += 16;
    }
    while i + 8 <= n {
        // SAFETY: `i + 8 ≤ n`: 8 f32 read, 8 bytes written.
        unsafe {
            let p = w.as_ptr().add(i);
            let c = codes8([vld1q_f32(p), vld1q_f32(p.add(4))], invv);
            vst1_s8(out.as_mut_ptr().add(i), c);
        }
        i += 8;
    }
    for (q, &v) in out[i..].iter_mut().zip(&w[i..]) {
        *q = quantize_weight(v * inv);
    }
    s
}

/// `w · inv` rounded half away from zero (`FCVTAS`, NaN → 0, saturating).
#[inline]
#[target_feature(enable = "neon")]
fn round4(v: float32x4_t, invv: float32x4_t) -> int32x4_t {
    vcvtaq_s32_f32(vmulq_f32(v, invv))
}

/// [`quantise`]'s codes of 8 weights: rounded, narrowed with saturation (±127 beyond, as
/// `quantize_weight` clamps), −128 raised to −127.
#[inline]
#[target_feature(enable = "neon")]
fn codes8(v: [float32x4_t; 2], invv: float32x4_t) -> int8x8_t {
    let h = vqmovn_high_s32(vqmovn_s32(round4(v[0], invv)), round4(v[1], invv));
    vmax_s8(vqmovn_s16(h), vdup_n_s8(-127))
}

/// [`codes8`] of 16 weights.
#[inline]
#[target_feature(enable = "neon")]
fn codes16(v: [float32x4_t; 4], invv: float32x4_t) -> int8x16_t {
    let h0 = vqmovn_high_s32(vqmovn_s32(round4(v[0], invv)), round4(v[1], invv));
    let h1 = vqmovn_high_s32(vqmovn_s32(round4(v[2], invv)), round4(v[3], invv));
    vmaxq_s8(vqmovn_high_s16(vqmovn_s16(h0), h1), vdupq_n_s8(-127))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rebuild_check::rebuild_is_bit_exact;

    /// [`rebuild_i8`], [`rebuild_layer_i8`] (taking most experts) and [`requant_weights`]
    /// (after `channel_into_i8`, as a table without the rebuild slots runs it) give the
    /// reference's codes and scale bits on random convs: every multiple of 8 to 96, 192,
    /// 1..40 weights a row, `k` 1 and 3, ranks 1..9, ties of the rounding, zeros, NaN /
    /// infinite entries, f16 factors (`kernels::rebuild_check`). A rounding to even, a
    /// dropped rank term, an `FMLA` for `+ s0·q` or a max without `FABS` fail it.
    /// Seed: `LORKD_SEED`.
    #[test]
    fn rebuild_matches_the_reference() {
        fn two_pass(
            d: &Delta<'_>,
            o: usize,
            w0: &[i8],
            s0: f32,
            w: &mut [f32],
            out: &mut [i8],
        ) -> f32 {
            let w = &mut w[..d.channel_len()];
            d.channel_into_i8(o, w);
            requant_weights(w, w0, s0, out)
        }
        let (channels, whole) =
            rebuild_is_bit_exact(rebuild_i8, Some(rebuild_layer_i8), 1500).unwrap();
        assert!(
            channels > 5000 && whole > channels / 2,
            "{channels} {whole}"
        );
        rebuild_is_bit_exact(two_pass, None, 1500).unwrap();
    }

    /// The codes of [`codes16`] (`FCVTAS`, saturating narrows, max with −127) are
    /// `quantize_weight`'s at every half and integer from −140 to 140 and their 4 nearest
    /// floats each side, on 400k random bit patterns and on the special values. Seed:
    /// `LORKD_SEED`.
    #[test]
    fn codes_are_quantize_weight() {
        let mut t: std::vec::Vec<f32> = std::vec![
            0.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::from_bits(1),
            2147483648.0,
            -2147483648.0,
            4294967296.0,
        ];
        for h in -280..=280 {
            let mut up = h as f32 * 0.5;
            let mut down = up;
            t.push(up);
            for _ in 0..4 {
                (up, down) = (up.next_up(), down.next_down());
                t.extend([up, down]);
            }
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        t.extend((0..400_000).map(|_| f32::from_bits(r.next_u64() as u32)));
        t.extend((0..400_000).map(|_| r.uniform(160.0)));
        while t.len() % 16 != 0 {
            t.push(0.5);
        }
        for x in t.chunks_exact(16) {
            let mut got = [0i8; 16];
            // SAFETY: NEON is baseline here; `x` holds 16 f32, `got` 16 bytes.
            unsafe {
                let v = [0, 4, 8, 12].map(|j| vld1q_f32(x.as_ptr().add(j)));
                vst1q_s8(got.as_mut_ptr(), codes16(v, vdupq_n_f32(1.0)));
            }
            for (&g, &v) in got.iter().zip(x) {
                assert_eq!(g, quantize_weight(v), "{v:e} ({:#x})", v.to_bits());
            }
        }
    }
}
