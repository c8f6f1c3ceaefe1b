//! The int8 department rebuild's per-channel re-quantisation on the Cortex-M4F/M7 FPU:
//! the reference's first pass (`w += s0·W0q`, multiply then add, and `max|w|` on the bit
//! patterns, NaNs left to a second scan only when there is one), then the rounding
//! `round_half_away(w·inv)` as `(x + [x ≥ 0]) >> 1` of `x = trunc(2·w·inv)` (one
//! fixed-point `VCVT`, then halfword lanes: see [`round8`]) instead of the reference's
//! clamp / truncate / two-sided fraction compares — the same bits (host test
//! `round_lanes_match_quantize_weight`, board self-checks against the reference).
//! Single-precision f32 has no DSP-extension shortcut: `SMLAD` is integer only.
//! `rebuild_i8` fuses the delta row `B·A` into the first pass where the factors allow it
//! (`switch::rank4_pass`, rank 4: one store a weight instead of a store, a reload and a
//! second store; the row loop in `asm!` with `VLDM`/`VMLA`/`VSTM`), with the same f32
//! operations in the same order (host test of the portable row against the reference,
//! board self-check of this one); `rebuild_layer_i8` runs a whole channel (row, scale,
//! rounding) in one `asm!` block ([`channel8`], [`channel12`]).
use crate::switch::{quantize_from_amax_with, rank4_pass, rank4_row, round_row, Delta};
use core::arch::asm;
use core::mem::MaybeUninit;

/// Two weights of [`row8`]'s out-of-line max: `m = max(m, bits << 1)` of each.
macro_rules! max_pair {
    ($a:literal, $b:literal) => {
        concat!(
            "vmov {t}, {u}, ",
            $a,
            ", ",
            $b,
            "\n",
            "cmp {m}, {t}, lsl #1\n",
            "it lo\n",
            "lsllo {m}, {t}, #1\n",
            "cmp {m}, {u}, lsl #1\n",
            "it lo\n",
            "lsllo {m}, {u}, #1",
        )
    };
}

/// One block of [`row8`]'s loop (see there): eight f32 weights into `s8`–`s15` and
/// stored at `{pw}`; `{pa0}`–`{pa3}` the `A` rows, `{pq}` `W0q`, `{t}`/`{u}` scratch; `s0`–`s3`
/// hold the `B` row, `s4` `s0`.
macro_rules! row8_block {
    () => {
        concat!(
            "vldmia {pa0}!, {{s16-s23}}\n",
            "vmul.f32 s8, s0, s16\n",
            "vmul.f32 s9, s0, s17\n",
            "vmul.f32 s10, s0, s18\n",
            "vmul.f32 s11, s0, s19\n",
            "vmul.f32 s12, s0, s20\n",
            "vmul.f32 s13, s0, s21\n",
            "vmul.f32 s14, s0, s22\n",
            "vmul.f32 s15, s0, s23\n",
            "vldmia {pa1}!, {{s16-s23}}\n",
            "vmla.f32 s8, s1, s16\n",
            "vmla.f32 s9, s1, s17\n",
            "vmla.f32 s10, s1, s18\n",
            "vmla.f32 s11, s1, s19\n",
            "vmla.f32 s12, s1, s20\n",
            "vmla.f32 s13, s1, s21\n",
            "vmla.f32 s14, s1, s22\n",
            "vmla.f32 s15, s1, s23\n",
            "vldmia {pa2}!, {{s16-s23}}\n",
            "vmla.f32 s8, s2, s16\n",
            "vmla.f32 s9, s2, s17\n",
            "vmla.f32 s10, s2, s18\n",
            "vmla.f32 s11, s2, s19\n",
            "vmla.f32 s12, s2, s20\n",
            "vmla.f32 s13, s2, s21\n",
            "vmla.f32 s14, s2, s22\n",
            "vmla.f32 s15, s2, s23\n",
            "vldmia {pa3}!, {{s16-s23}}\n",
            "vmla.f32 s8, s3, s16\n",
            "vmla.f32 s9, s3, s17\n",
            "vmla.f32 s10, s3, s18\n",
            "vmla.f32 s11, s3, s19\n",
            "vmla.f32 s12, s3, s20\n",
            "vmla.f32 s13, s3, s21\n",
            "vmla.f32 s14, s3, s22\n",
            "vmla.f32 s15, s3, s23\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s24, s25, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s26, s27, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s28, s29, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s30, s31, {t}, {u}\n",
            "vcvt.f32.s32 s24, s24\n",
            "vcvt.f32.s32 s25, s25\n",
            "vcvt.f32.s32 s26, s26\n",
            "vcvt.f32.s32 s27, s27\n",
            "vcvt.f32.s32 s28, s28\n",
            "vcvt.f32.s32 s29, s29\n",
            "vcvt.f32.s32 s30, s30\n",
            "vcvt.f32.s32 s31, s31\n",
            "vmla.f32 s8, s4, s24\n",
            "vmla.f32 s9, s4, s25\n",
            "vmla.f32 s10, s4, s26\n",
            "vmla.f32 s11, s4, s27\n",
            "vmla.f32 s12, s4, s28\n",
            "vmla.f32 s13, s4, s29\n",
            "vmla.f32 s14, s4, s30\n",
            "vmla.f32 s15, s4, s31\n",
            "vstmia {pw}!, {{s8-s15}}",
        )
    };
}

/// [`row8`]'s loop over `{cnt}` blocks (labels 2–6 and 8), `{m}` the running
/// `max(bits << 1)`: each half block compared with it as one chain of `CMP`s conditional on
/// the previous ones (`IT HS`: HS while `m ≥ bits << 1` for every weight so far, a LO skips
/// the rest), one branch out of line to take the half's four one at a time where it holds
/// a new max.
macro_rules! row8_loop {
    () => {
        concat!(
            "2:\n",
            row8_block!(),
            "\n",
            "vmov {t}, {u}, s8, s9\n",
            "cmp {m}, {t}, lsl #1\n",
            "itttt hs\n",
            "cmphs {m}, {u}, lsl #1\n",
            "vmovhs {t}, {u}, s10, s11\n",
            "cmphs {m}, {t}, lsl #1\n",
            "cmphs {m}, {u}, lsl #1\n",
            "blo 5f\n",
            "3:\n",
            "vmov {t}, {u}, s12, s13\n",
            "cmp {m}, {t}, lsl #1\n",
            "itttt hs\n",
            "cmphs {m}, {u}, lsl #1\n",
            "vmovhs {t}, {u}, s14, s15\n",
            "cmphs {m}, {t}, lsl #1\n",
            "cmphs {m}, {u}, lsl #1\n",
            "blo 8f\n",
            "4:\n",
            "subs {cnt}, {cnt}, #1\n",
            "bne 2b\n",
            "b 6f\n",
            "5:\n",
            max_pair!("s8", "s9"),
            "\n",
            max_pair!("s10", "s11"),
            "\n",
            "b 3b\n",
            "8:\n",
            max_pair!("s12", "s13"),
            "\n",
            max_pair!("s14", "s15"),
            "\n",
            "b 4b\n",
            "6:",
        )
    };
}

/// One block of [`channel12`]'s row loop: [`row8_block`] twelve weights wide (into
/// `s8`–`s19`, the `A` rows and `W0q` staged in `s20`–`s31`).
macro_rules! row12_block {
    () => {
        concat!(
            "vldmia {pa0}!, {{s20-s31}}\n",
            "vmul.f32 s8, s0, s20\n",
            "vmul.f32 s9, s0, s21\n",
            "vmul.f32 s10, s0, s22\n",
            "vmul.f32 s11, s0, s23\n",
            "vmul.f32 s12, s0, s24\n",
            "vmul.f32 s13, s0, s25\n",
            "vmul.f32 s14, s0, s26\n",
            "vmul.f32 s15, s0, s27\n",
            "vmul.f32 s16, s0, s28\n",
            "vmul.f32 s17, s0, s29\n",
            "vmul.f32 s18, s0, s30\n",
            "vmul.f32 s19, s0, s31\n",
            "vldmia {pa1}!, {{s20-s31}}\n",
            "vmla.f32 s8, s1, s20\n",
            "vmla.f32 s9, s1, s21\n",
            "vmla.f32 s10, s1, s22\n",
            "vmla.f32 s11, s1, s23\n",
            "vmla.f32 s12, s1, s24\n",
            "vmla.f32 s13, s1, s25\n",
            "vmla.f32 s14, s1, s26\n",
            "vmla.f32 s15, s1, s27\n",
            "vmla.f32 s16, s1, s28\n",
            "vmla.f32 s17, s1, s29\n",
            "vmla.f32 s18, s1, s30\n",
            "vmla.f32 s19, s1, s31\n",
            "vldmia {pa2}!, {{s20-s31}}\n",
            "vmla.f32 s8, s2, s20\n",
            "vmla.f32 s9, s2, s21\n",
            "vmla.f32 s10, s2, s22\n",
            "vmla.f32 s11, s2, s23\n",
            "vmla.f32 s12, s2, s24\n",
            "vmla.f32 s13, s2, s25\n",
            "vmla.f32 s14, s2, s26\n",
            "vmla.f32 s15, s2, s27\n",
            "vmla.f32 s16, s2, s28\n",
            "vmla.f32 s17, s2, s29\n",
            "vmla.f32 s18, s2, s30\n",
            "vmla.f32 s19, s2, s31\n",
            "vldmia {pa3}!, {{s20-s31}}\n",
            "vmla.f32 s8, s3, s20\n",
            "vmla.f32 s9, s3, s21\n",
            "vmla.f32 s10, s3, s22\n",
            "vmla.f32 s11, s3, s23\n",
            "vmla.f32 s12, s3, s24\n",
            "vmla.f32 s13, s3, s25\n",
            "vmla.f32 s14, s3, s26\n",
            "vmla.f32 s15, s3, s27\n",
            "vmla.f32 s16, s3, s28\n",
            "vmla.f32 s17, s3, s29\n",
            "vmla.f32 s18, s3, s30\n",
            "vmla.f32 s19, s3, s31\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s20, s21, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s22, s23, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s24, s25, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s26, s27, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s28, s29, {t}, {u}\n",
            "ldrsb {t}, [{pq}], #1\n",
            "ldrsb {u}, [{pq}], #1\n",
            "vmov s30, s31, {t}, {u}\n",
            "vcvt.f32.s32 s20, s20\n",
            "vcvt.f32.s32 s21, s21\n",
            "vcvt.f32.s32 s22, s22\n",
            "vcvt.f32.s32 s23, s23\n",
            "vcvt.f32.s32 s24, s24\n",
            "vcvt.f32.s32 s25, s25\n",
            "vcvt.f32.s32 s26, s26\n",
            "vcvt.f32.s32 s27, s27\n",
            "vcvt.f32.s32 s28, s28\n",
            "vcvt.f32.s32 s29, s29\n",
            "vcvt.f32.s32 s30, s30\n",
            "vcvt.f32.s32 s31, s31\n",
            "vmla.f32 s8, s4, s20\n",
            "vmla.f32 s9, s4, s21\n",
            "vmla.f32 s10, s4, s22\n",
            "vmla.f32 s11, s4, s23\n",
            "vmla.f32 s12, s4, s24\n",
            "vmla.f32 s13, s4, s25\n",
            "vmla.f32 s14, s4, s26\n",
            "vmla.f32 s15, s4, s27\n",
            "vmla.f32 s16, s4, s28\n",
            "vmla.f32 s17, s4, s29\n",
            "vmla.f32 s18, s4, s30\n",
            "vmla.f32 s19, s4, s31\n",
            "vstmia {pw}!, {{s8-s19}}",
        )
    };
}

/// [`channel12`]'s row loop over `{cnt}` blocks (labels 2–8, 22, 23): [`row8_loop`]'s
/// compare chains, three a block.
macro_rules! row12_loop {
    () => {
        concat!(
            "2:\n",
            row12_block!(),
            "\n",
            "vmov {t}, {u}, s8, s9\n",
            "cmp {m}, {t}, lsl #1\n",
            "itttt hs\n",
            "cmphs {m}, {u}, lsl #1\n",
            "vmovhs {t}, {u}, s10, s11\n",
            "cmphs {m}, {t}, lsl #1\n",
            "cmphs {m}, {u}, lsl #1\n",
            "blo 5f\n",
            "3:\n",
            "vmov {t}, {u}, s12, s13\n",
            "cmp {m}, {t}, lsl #1\n",
            "itttt hs\n",
            "cmphs {m}, {u}, lsl #1\n",
            "vmovhs {t}, {u}, s14, s15\n",
            "cmphs {m}, {t}, lsl #1\n",
            "cmphs {m}, {u}, lsl #1\n",
            "blo 8f\n",
            "4:\n",
            "vmov {t}, {u}, s16, s17\n",
            "cmp {m}, {t}, lsl #1\n",
            "itttt hs\n",
            "cmphs {m}, {u}, lsl #1\n",
            "vmovhs {t}, {u}, s18, s19\n",
            "cmphs {m}, {t}, lsl #1\n",
            "cmphs {m}, {u}, lsl #1\n",
            "blo 22f\n",
            "23:\n",
            "subs {cnt}, {cnt}, #1\n",
            "bne 2b\n",
            "b 6f\n",
            "5:\n",
            max_pair!("s8", "s9"),
            "\n",
            max_pair!("s10", "s11"),
            "\n",
            "b 3b\n",
            "8:\n",
            max_pair!("s12", "s13"),
            "\n",
            max_pair!("s14", "s15"),
            "\n",
            "b 4b\n",
            "22:\n",
            max_pair!("s16", "s17"),
            "\n",
            max_pair!("s18", "s19"),
            "\n",
            "b 23b\n",
            "6:",
        )
    };
}

/// [`scale_trunc8`] for `s8`–`s19`.
macro_rules! scale_trunc12 {
    () => {
        concat!(
            "vmul.f32 s8, s8, s0\n",
            "vmul.f32 s9, s9, s0\n",
            "vmul.f32 s10, s10, s0\n",
            "vmul.f32 s11, s11, s0\n",
            "vmul.f32 s12, s12, s0\n",
            "vmul.f32 s13, s13, s0\n",
            "vmul.f32 s14, s14, s0\n",
            "vmul.f32 s15, s15, s0\n",
            "vmul.f32 s16, s16, s0\n",
            "vmul.f32 s17, s17, s0\n",
            "vmul.f32 s18, s18, s0\n",
            "vmul.f32 s19, s19, s0\n",
            "vcvt.s32.f32 s8, s8, #1\n",
            "vcvt.s32.f32 s9, s9, #1\n",
            "vcvt.s32.f32 s10, s10, #1\n",
            "vcvt.s32.f32 s11, s11, #1\n",
            "vcvt.s32.f32 s12, s12, #1\n",
            "vcvt.s32.f32 s13, s13, #1\n",
            "vcvt.s32.f32 s14, s14, #1\n",
            "vcvt.s32.f32 s15, s15, #1\n",
            "vcvt.s32.f32 s16, s16, #1\n",
            "vcvt.s32.f32 s17, s17, #1\n",
            "vcvt.s32.f32 s18, s18, #1\n",
            "vcvt.s32.f32 s19, s19, #1",
        )
    };
}

/// One quad of [`round8`]: `x` (the `VCVT`s' `trunc(2t)`) in four S registers to four code
/// bytes at `{po}` (see there), with the scratch registers `t0`–`t3` and `k` = `0x00010001`
/// named by the caller.
macro_rules! round_quad {
    ($a:literal, $b:literal, $c:literal, $d:literal;
     $t0:literal, $t1:literal, $t2:literal, $t3:literal, $k:literal) => {
        concat!(
            "vmov {",
            $t0,
            "}, {",
            $t1,
            "}, ",
            $a,
            ", ",
            $b,
            "\n",
            "vmov {",
            $t2,
            "}, {",
            $t3,
            "}, ",
            $c,
            ", ",
            $d,
            "\n",
            // [x2:x0], [x3:x1] as halfword lanes (|x| ≤ 255).
            "pkhbt {",
            $t0,
            "}, {",
            $t0,
            "}, {",
            $t2,
            "}, lsl #16\n",
            "pkhbt {",
            $t1,
            "}, {",
            $t1,
            "}, {",
            $t3,
            "}, lsl #16\n",
            "bic {",
            $t2,
            "}, {",
            $k,
            "}, {",
            $t0,
            "}, lsr #15\n",
            "bic {",
            $t3,
            "}, {",
            $k,
            "}, {",
            $t1,
            "}, lsr #15\n",
            "shadd16 {",
            $t0,
            "}, {",
            $t0,
            "}, {",
            $t2,
            "}\n",
            "shadd16 {",
            $t1,
            "}, {",
            $t1,
            "}, {",
            $t3,
            "}\n",
            "lsl {",
            $t1,
            "}, {",
            $t1,
            "}, #8\n",
            "sel {",
            $t0,
            "}, {",
            $t0,
            "}, {",
            $t1,
            "}\n",
            "str {",
            $t0,
            "}, [{po}], #4",
        )
    };
}

/// [`round8`]'s eight multiplies by `inv` (in `s0`) and fixed-point `VCVT`s of `s8`–`s15`.
macro_rules! scale_trunc8 {
    () => {
        concat!(
            "vmul.f32 s8, s8, s0\n",
            "vmul.f32 s9, s9, s0\n",
            "vmul.f32 s10, s10, s0\n",
            "vmul.f32 s11, s11, s0\n",
            "vmul.f32 s12, s12, s0\n",
            "vmul.f32 s13, s13, s0\n",
            "vmul.f32 s14, s14, s0\n",
            "vmul.f32 s15, s15, s0\n",
            "vcvt.s32.f32 s8, s8, #1\n",
            "vcvt.s32.f32 s9, s9, #1\n",
            "vcvt.s32.f32 s10, s10, #1\n",
            "vcvt.s32.f32 s11, s11, #1\n",
            "vcvt.s32.f32 s12, s12, #1\n",
            "vcvt.s32.f32 s13, s13, #1\n",
            "vcvt.s32.f32 s14, s14, #1\n",
            "vcvt.s32.f32 s15, s15, #1",
        )
    };
}

/// Same contract and bits as `reference::requant_weights::requant_weights`.
pub(crate) fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let (w0, out) = (&w0[..n], &mut out[..n]);
    let mut amax_bits = 0u32;
    for (v, &q) in w.iter_mut().zip(w0) {
        *v += s0 * q as f32;
        amax_bits = amax_bits.max(v.to_bits() & 0x7fff_ffff);
    }
    quantize_from_amax_with(round8, w, amax_bits, out)
}

/// The `Kernels::rebuild_i8` slot: one pass for rank-4 f32 factors, else `B·A` then
/// [`requant_weights`].
pub(crate) fn rebuild_i8(
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> f32 {
    let n = d.channel_len();
    match rank4_pass(row8, d, o, w0, s0, w) {
        Some(amax) => quantize_from_amax_with(round8, &w[..n], amax, &mut out[..n]),
        None => {
            let w = &mut w[..d.channel_len()];
            d.channel_into_i8(o, w);
            requant_weights(w, w0, s0, out)
        }
    }
}

/// Longest channel [`rebuild_layer_i8`] takes: its f32 row lives on the stack (1 KiB).
const LAYER_MAX: usize = 256;

/// The `Kernels::rebuild_layer_i8` slot: every channel of a rank-4 1x1 expert with f32
/// factors (the common expert) as [`rebuild_i8`] forms it — [`row8`] then the rounding
/// ([`round8`]), or both in one block ([`channel8`], [`channel12`]) where the row length
/// is a multiple of 8 — with the factor checks and slicing done once a layer instead of
/// once a channel (they cost ~200 instructions a channel there, as much as a 24-weight
/// channel's rounding pass). The same operations on the same values, so the same bytes
/// and scales.
/// `false` (nothing written) for other experts, which go channel by channel.
pub(crate) fn rebuild_layer_i8(
    d: &Delta<'_>,
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) -> bool {
    let (n, cout) = (d.channel_len(), d.cout);
    let Some((a, b)) = d.f32_factors() else {
        return false;
    };
    let fits = d.k == 1
        && d.a.rows == 4
        && (1..=LAYER_MAX).contains(&n)
        && d.layer_fits(w0, s0, out, out_scale);
    if !fits {
        return false;
    }
    let (a0, rest) = a[..4 * n].split_at(n);
    let (a1, rest) = rest.split_at(n);
    let (a2, a3) = rest.split_at(n);
    let a = [a0, a1, a2, a3];
    let (w0, out) = (&w0[..cout * n], &mut out[..cout * n]);
    let (b, s0, out_scale) = (&b[..4 * cout], &s0[..cout], &mut out_scale[..cout]);
    if n % 12 == 0 {
        layer_with(channel12, a, b, w0, s0, out, out_scale);
    } else if n % 8 == 0 {
        layer_with(channel8, a, b, w0, s0, out, out_scale);
    } else {
        let mut buf = [0f32; LAYER_MAX];
        let w = &mut buf[..n];
        for ((q, o), (br, (&s0, scale))) in channels(b, w0, s0, out, out_scale, n) {
            let m2 = row8(br, a, q, s0, w, 0);
            *scale = quantize_from_amax_with(round8, w, m2 >> 1, o);
        }
    }
    true
}

/// Each channel's `W0q` and codes, `B` row, `s0` and scale (rows of `n = a[0].len()`).
#[allow(clippy::type_complexity)]
#[inline(always)]
fn channels<'a>(
    b: &'a [f32],
    w0: &'a [i8],
    s0: &'a [f32],
    out: &'a mut [i8],
    out_scale: &'a mut [f32],
    n: usize,
) -> impl Iterator<
    Item = (
        (&'a [i8], &'a mut [i8]),
        (&'a [f32; 4], (&'a f32, &'a mut f32)),
    ),
> {
    let chans = w0.chunks_exact(n).zip(out.chunks_exact_mut(n));
    let rows = b.as_chunks::<4>().0.iter();
    chans.zip(rows.zip(s0.iter().zip(out_scale)))
}

/// [`rebuild_layer_i8`]'s loop with a whole-channel `asm!` kernel ([`channel8`] or
/// [`channel12`], inlined here, so the FP registers are saved once a layer), the portable
/// rounding where the kernel leaves it (`s` = 0).
#[inline(always)]
fn layer_with<F>(
    channel: F,
    a: [&[f32]; 4],
    b: &[f32],
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) where
    F: Fn(&[f32; 4], [&[f32]; 4], &[i8], f32, &mut [MaybeUninit<f32>], &mut [i8]) -> (u32, u32),
{
    let n = a[0].len();
    // Written by `channel` before it is read: not zeroed (1 KiB a layer).
    let mut buf = [MaybeUninit::<f32>::uninit(); LAYER_MAX];
    let w = &mut buf[..n];
    for ((q, o), (br, (&s0, scale))) in channels(b, w0, s0, out, out_scale, n) {
        let (amax, s) = channel(br, a, q, s0, w, o);
        *scale = match s {
            0 => {
                // SAFETY: `channel` wrote all `n` f32 of `w` (its row loop stores every
                // weight before the scale is formed); `MaybeUninit<f32>` has the layout of
                // `f32`.
                let w = unsafe { core::slice::from_raw_parts(w.as_ptr().cast::<f32>(), n) };
                quantize_from_amax_with(round_row, w, amax, o)
            }
            _ => f32::from_bits(s),
        };
    }
}

/// `amax` bits from which [`channel8`] rounds in its `asm!` (`2^−64`; below `0x7f80_0000`,
/// infinity): then `s = amax / 127` is a normal float, `inv = 1/s` is in `(0, 2^71]` and
/// every `|w·inv|` stays below `127·(1 + 2^−22)`, as [`round8`]'s lanes need.
const AMAX_LO: u32 = 0x1f80_0000;

/// The whole-channel kernels: one `asm!` block per channel, `W` weights a pass (`W | len`,
/// `len ≥ W`): the row loop into `w` (`$block` for the first block, whose max needs no
/// compare chain, then `$row_loop`), then `s = amax / 127` (`quant::weight_scale` for
/// `amax > 0`) and `inv = 1/s` by `VDIV`, then the rounding loop into `out` (`$trunc`, then
/// one [`round_quad`] per 4 weights) — the same operations as [`row8`] and [`round8`],
/// without the Rust between them (~80 instructions a channel of register moves, slicing and
/// the scale's compares). Returns `(amax bits, s bits)`, `s` 0 where `amax` is out of
/// `[AMAX_LO, ∞)` (zero, tiny, infinite or NaN: nothing rounded; the caller takes the
/// portable rounding).
macro_rules! channel_kernel {
    ($(#[$doc:meta])* $name:ident, $w:literal, $block:ident, $row_loop:ident, $regs:literal,
     $trunc:ident, [$(($m0:literal, $m1:literal)),*],
     [$(($q0:literal, $q1:literal, $q2:literal, $q3:literal)),*]) => {
        $(#[$doc])*
        #[inline(always)]
        fn $name(
            b: &[f32; 4],
            a: [&[f32]; 4],
            q: &[i8],
            s0: f32,
            w: &mut [MaybeUninit<f32>],
            out: &mut [i8],
        ) -> (u32, u32) {
            let n = w.len();
            let [a0, a1, a2, a3] = a;
            let (a0, a1, a2, a3, q, out) = (
                &a0[..n],
                &a1[..n],
                &a2[..n],
                &a3[..n],
                &q[..n],
                &mut out[..n],
            );
            let blocks = n / $w;
            assert!(blocks > 0 && n % $w == 0);
            let (mut amax, mut sbits) = (0u32, 0u32);
            // SAFETY: as in `row8` and `round8`: every pointer reads (or `w`, `out` write) the
            // `n = W·blocks` elements of its slice of length `n` (checked by the reslicing above;
            // `blocks ≥ 1`); the round loop reads `w` back from its start (kept in `s5`) to where
            // the row loop stopped, after the row loop wrote it all (so `w` may start
            // uninitialised). `VLDM`/`VSTM` on 4-aligned f32 (`MaybeUninit<f32>` has `f32`'s
            // layout); `W0q` by bytes; the codes by
            // unaligned `STR` (allowed: CCR.UNALIGN_TRP is clear). The clobbered FP registers and
            // the APSR (flags, GE) are declared; no stack use.
            unsafe {
                asm!(
                    "vldmia {t}, {{s0-s3}}",
                    "vmov s4, {u}",
                    "vmov s5, {pw}",
                    // 127.0
                    "movw {t}, #0",
                    "movt {t}, #0x42fe",
                    "vmov s7, {t}",
                    // The first block always holds a new max (`m` = 0): no compare chain.
                    $block!(),
                    $(max_pair!($m0, $m1),)*
                    "subs {cnt}, {cnt}, #1",
                    "beq 6f",
                    $row_loop!(),
                    "lsr {m}, {m}, #1",
                    "mov {u}, #0",
                    "sub {t}, {m}, #{lo}",
                    "cmp {t}, #{span}",
                    "bhs 9f",
                    "vmov s6, {m}",
                    "vdiv.f32 s6, s6, s7",
                    "vmov.f32 s1, #1.0",
                    "vdiv.f32 s0, s1, s6",
                    "vmov {u}, s6",
                    // The round loop: `{cnt}` reads `w` from its start up to `{pw}`; `{pa0}`–`{pa3}`
                    // and `{pq}` (k = 0x00010001) are its scratch.
                    "vmov {cnt}, s5",
                    "mov {pq}, #0x00010001",
                    // GE = 0b0101: `SEL` takes bytes 0 and 2 from its first operand.
                    "lsl {pa0}, {pq}, #8",
                    "usub8 {pa0}, {pq}, {pa0}",
                    "7:",
                    concat!("vldmia {cnt}!, {{", $regs, "}}"),
                    $trunc!(),
                    $(round_quad!($q0, $q1, $q2, $q3; "pa0", "pa1", "pa2", "pa3", "pq"),)*
                    "cmp {cnt}, {pw}",
                    "bne 7b",
                    "9:",
                    pa0 = inout(reg) a0.as_ptr() => _,
                    pa1 = inout(reg) a1.as_ptr() => _,
                    pa2 = inout(reg) a2.as_ptr() => _,
                    pa3 = inout(reg) a3.as_ptr() => _,
                    pq = inout(reg) q.as_ptr() => _,
                    pw = inout(reg) w.as_mut_ptr() => _,
                    po = inout(reg) out.as_mut_ptr() => _,
                    cnt = inout(reg) blocks => _,
                    m = inout(reg) amax,
                    t = inout(reg) b.as_ptr() => _,
                    u = inout(reg) s0.to_bits() => sbits,
                    lo = const AMAX_LO,
                    span = const 0x7f80_0000 - AMAX_LO,
                    out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _,
                    out("s5") _, out("s6") _, out("s7") _,
                    out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                    out("s12") _, out("s13") _, out("s14") _, out("s15") _,
                    out("s16") _, out("s17") _, out("s18") _, out("s19") _,
                    out("s20") _, out("s21") _, out("s22") _, out("s23") _,
                    out("s24") _, out("s25") _, out("s26") _, out("s27") _,
                    out("s28") _, out("s29") _, out("s30") _, out("s31") _,
                    options(nostack),
                );
            }
            (amax, sbits)
        }
    };
}

channel_kernel!(
    /// Eight weights a pass (`8 | len`): [`row8_block`], [`row8_loop`], [`scale_trunc8`].
    channel8, 8, row8_block, row8_loop, "s8-s15", scale_trunc8,
    [("s8", "s9"), ("s10", "s11"), ("s12", "s13"), ("s14", "s15")],
    [("s8", "s9", "s10", "s11"), ("s12", "s13", "s14", "s15")]
);

channel_kernel!(
    /// Twelve weights a pass (`12 | len`): a quarter fewer `VLDM`s of `A`, `VSTM`s and
    /// loop branches a weight (every pointwise row of the 0.5x ShuffleNet is 24, 48, 96 or
    /// 192 long), the same operations on each weight.
    channel12, 12, row12_block, row12_loop, "s8-s19", scale_trunc12,
    [("s8", "s9"), ("s10", "s11"), ("s12", "s13"), ("s14", "s15"), ("s16", "s17"), ("s18", "s19")],
    [("s8", "s9", "s10", "s11"), ("s12", "s13", "s14", "s15"), ("s16", "s17", "s18", "s19")]
);

/// `switch::rank4_row` with eight weights per pass in one `asm!` block: `VLDM` of eight
/// values from each `A` row (into one staging block: the count is instructions, not
/// cycles), `VMUL` then three `VMLA` (the ARMv7 VFP multiply-accumulate rounds the
/// product, then the sum: exactly `acc + b·a` as two instructions would, so the sums keep
/// their order and bits), `W0q` by `LDRSB` (two to an S-register pair) and `VCVT`, one
/// `VMLA` of `s0·q`, one `VSTM`. `max(bits << 1)`: each half block compared with the
/// running max as one chain of `CMP`s conditional on the previous ones (`IT HS`), so one
/// branch leaves a half with no new max (2 instructions a weight, not 3.5); a half with
/// one takes its four again one at a time out of line. 83 instructions per 8 weights
/// instead of 108. The tail (`len % 8`) goes to the portable row.
#[inline(always)]
fn row8(b: &[f32; 4], a: [&[f32]; 4], q: &[i8], s0: f32, w: &mut [f32], m2: u32) -> u32 {
    let n = w.len();
    let [a0, a1, a2, a3] = a;
    let (a0, a1, a2, a3, q) = (&a0[..n], &a1[..n], &a2[..n], &a3[..n], &q[..n]);
    let blocks = n / 8;
    let mut m2 = m2;
    if blocks > 0 {
        // SAFETY: every pointer reads (or `w` writes) `8·blocks ≤ n` elements of a slice of
        // length `n` (checked by the reslicing above); `VLDM`/`VSTM` need 4-aligned f32,
        // which `&[f32]` is; `W0q` is read a byte at a time. The clobbered FP registers are
        // declared (flags are clobbered by default); no stack use.
        unsafe {
            asm!(
                "vldmia {t}, {{s0-s3}}",
                "vmov s4, {u}",
                row8_loop!(),
                pa0 = inout(reg) a0.as_ptr() => _,
                pa1 = inout(reg) a1.as_ptr() => _,
                pa2 = inout(reg) a2.as_ptr() => _,
                pa3 = inout(reg) a3.as_ptr() => _,
                pq = inout(reg) q.as_ptr() => _,
                pw = inout(reg) w.as_mut_ptr() => _,
                cnt = inout(reg) blocks => _,
                m = inout(reg) m2,
                t = inout(reg) b.as_ptr() => _,
                u = inout(reg) s0.to_bits() => _,
                out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _,
                out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                out("s12") _, out("s13") _, out("s14") _, out("s15") _,
                out("s16") _, out("s17") _, out("s18") _, out("s19") _,
                out("s20") _, out("s21") _, out("s22") _, out("s23") _,
                out("s24") _, out("s25") _, out("s26") _, out("s27") _,
                out("s28") _, out("s29") _, out("s30") _, out("s31") _,
                options(nostack),
            );
        }
    }
    let k = 8 * blocks;
    if k == n {
        // The common row (a multiple of 8): no call for an empty tail.
        return m2;
    }
    rank4_row(
        b,
        [&a0[k..], &a1[k..], &a2[k..], &a3[k..]],
        &q[k..],
        s0,
        &mut w[k..],
        m2,
    )
}

/// `inv` up to which [`round8`] takes its `asm!` loop: then `s = 1/inv ≥ 2^−100` is a normal
/// float, `max|w| = 127·s` up to rounding, and every `|w·inv|` stays below `127·(1 + 2^−22)`.
const ROUND_INV_MAX: f32 = 1.2676506e30; // 2^100

/// `switch::round_row` eight weights per pass in one `asm!` block, for `inv = 1/s` with
/// `s = max|w| / 127` of these `w` (the one caller, `quantize_from_amax_with`): `VLDM`,
/// `VMUL` by `inv`, then `x = trunc(2t)` by the fixed-point `VCVT` with one fraction bit
/// (exact scaling, toward zero, NaN → 0); `round_half_away(t) = (x + [x ≥ 0]) >> 1` (floor),
/// done two lanes at a time: `PKHBT` pairs the halfwords, `BIC` of `x >> 15` from `0x00010001`
/// gives `[x ≥ 0]` per lane, `SHADD16` adds and halves, `SEL` (GE = 0b0101, set once) merges
/// two pairs into the four code bytes of one `STR`: 41 instructions per 8 weights instead of 78.
/// Equal to `fixed::quantize_weight_fast(t)` for every `|t| < 127.5` and NaN (host test
/// `round_lanes_match_quantize_weight` near every rounding edge and on a stride of all
/// patterns; once on all 2^31 such floats, 0 differ); with `inv` in
/// `(0, 2^100]` (see [`ROUND_INV_MAX`]) no `|t|` comes near 127.5, so no clamp is needed.
/// Other `inv` (all-zero, subnormal, infinite channels) and the tail (`len % 8`) take the
/// portable loop.
#[inline(always)]
fn round8(w: &[f32], inv: f32, out: &mut [i8]) {
    let n = w.len().min(out.len());
    let (w, out) = (&w[..n], &mut out[..n]);
    let blocks = if inv > 0.0 && inv <= ROUND_INV_MAX {
        n / 8
    } else {
        0
    };
    if blocks > 0 {
        // SAFETY: reads `8·blocks ≤ n` f32 of `w` (4-aligned as every `&[f32]`) and writes
        // as many bytes of `out` (`STR` of 4 codes: unaligned stores are allowed on
        // Armv7-M, the firmware leaves CCR.UNALIGN_TRP clear), both of length `n`; the
        // clobbered FP registers and the APSR (GE bits) are declared (flags are clobbered
        // by default); no stack use.
        unsafe {
            asm!(
                "vmov s0, {t0}",
                // GE = 0b0101: `SEL` takes bytes 0 and 2 from its first operand.
                "lsl {t0}, {k}, #8",
                "usub8 {t0}, {k}, {t0}",
                "2:",
                "vldmia {pw}!, {{s8-s15}}",
                scale_trunc8!(),
                round_quad!("s8", "s9", "s10", "s11"; "t0", "t1", "t2", "t3", "k"),
                round_quad!("s12", "s13", "s14", "s15"; "t0", "t1", "t2", "t3", "k"),
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                pw = inout(reg) w.as_ptr() => _,
                po = inout(reg) out.as_mut_ptr() => _,
                cnt = inout(reg) blocks => _,
                k = in(reg) 0x0001_0001u32,
                t0 = inout(reg) inv.to_bits() => _,
                t1 = out(reg) _,
                t2 = out(reg) _,
                t3 = out(reg) _,
                out("s0") _,
                out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                out("s12") _, out("s13") _, out("s14") _, out("s15") _,
                options(nostack),
            );
        }
    }
    let k = 8 * blocks;
    if k < n {
        round_row(&w[k..], inv, &mut out[k..]);
    }
}
