//! The int8 department rebuild's per-channel re-quantisation on the Cortex-M4F/M7 FPU:
//! the reference's first pass (`w += s0·W0q`, multiply then add, and `max|w|` on the bit
//! patterns, NaNs left to a second scan only when there is one), then the rounding as
//! `trunc(|t| + (½ − 2^−25))` without a branch (`fixed::quantize_weight_fast`) instead of
//! the reference's clamp / truncate / two-sided fraction compares — the same bits (host
//! test `quantize_weight_fast_matches_reference`, board self-check against the reference).
//! Single-precision f32 has no DSP-extension shortcut: `SMLAD` is integer only.
//! `rebuild_i8` fuses the delta row `B·A` into the first pass where the factors allow it
//! (`switch::rebuild_rank4_i8_with`, rank 4: one store a weight instead of a store, a
//! reload and a second store; the row loop in `asm!` with `VLDM`/`VMLA`/`VSTM`), with the
//! same f32 operations in the same order (host test of the portable row against the
//! reference, board self-check of this one).
use crate::switch::{quantize_from_amax_with, rank4_pass, rank4_row, round_row, Delta};
use core::arch::asm;

/// Same contract and bits as `reference::requant_weights::requant_weights`.
pub(crate) fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let (w0, out) = (&w0[..n], &mut out[..n]);
    let mut amax_bits = 0u32;
    for (v, &q) in w.iter_mut().zip(w0) {
        *v += s0 * q as f32;
        amax_bits = amax_bits.max(v.to_bits() & 0x7fff_ffff);
    }
    quantize_from_amax_with(round4, w, amax_bits, out)
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
    match rank4_pass(row4, d, o, w0, s0, w) {
        Some(amax) => quantize_from_amax_with(round4, &w[..n], amax, &mut out[..n]),
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
/// factors (the common expert) as [`rebuild_i8`] forms it — [`row4`] then the rounding
/// ([`round4`]) — with the factor checks and slicing done once a layer instead of once a
/// channel (they cost ~200 instructions a channel there, as much as a 24-weight channel's
/// rounding pass). The same operations on the same values, so the same bytes and scales.
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
    let mut buf = [0f32; LAYER_MAX];
    let w = &mut buf[..n];
    let chans = w0[..cout * n]
        .chunks_exact(n)
        .zip(out[..cout * n].chunks_exact_mut(n));
    let rows = b[..4 * cout].as_chunks::<4>().0.iter();
    let rows = rows.zip(s0[..cout].iter().zip(&mut out_scale[..cout]));
    for ((q, o), (br, (&s0, scale))) in chans.zip(rows) {
        let m2 = row4(br, [a0, a1, a2, a3], q, s0, w, 0);
        *scale = quantize_from_amax_with(round4, w, m2 >> 1, o);
    }
    true
}

/// `switch::rank4_row` with four weights per pass in one `asm!` block: `VLDM` of four
/// values from each `A` row, `VMUL` then three `VMLA` (the ARMv7 VFP multiply-accumulate
/// rounds the product, then the sum: exactly `acc + b·a` as two instructions would, so the
/// sums keep their order and bits), `W0q` read a word at a time and widened with `SXTB16`,
/// one `VMLA` of `s0·q`, one `VSTM`, `max(bits << 1)` in the core registers. The tail
/// (`len % 4`) goes to the portable row.
fn row4(b: &[f32; 4], a: [&[f32]; 4], q: &[i8], s0: f32, w: &mut [f32], m2: u32) -> u32 {
    let n = w.len();
    let [a0, a1, a2, a3] = a;
    let (a0, a1, a2, a3, q) = (&a0[..n], &a1[..n], &a2[..n], &a3[..n], &q[..n]);
    let blocks = n / 4;
    let mut m2 = m2;
    if blocks > 0 {
        // SAFETY: every pointer reads (or `w` writes) `4·blocks ≤ n` elements of a slice of
        // length `n` (checked by the reslicing above); `W0q` is read as `blocks` unaligned
        // words (`LDR` allows unaligned access on Armv7-M: the firmware leaves
        // CCR.UNALIGN_TRP clear); `VLDM`/`VSTM` need 4-aligned f32, which `&[f32]` is. The
        // clobbered FP registers are declared; no stack use.
        unsafe {
            asm!(
                "vldmia {pb}, {{s0-s3}}",
                "vmov s4, {s0}",
                "2:",
                "vldmia {pa0}!, {{s16-s19}}",
                "vldmia {pa1}!, {{s20-s23}}",
                "vldmia {pa2}!, {{s24-s27}}",
                "vldmia {pa3}!, {{s28-s31}}",
                "vmul.f32 s8, s0, s16",
                "vmul.f32 s9, s0, s17",
                "vmul.f32 s10, s0, s18",
                "vmul.f32 s11, s0, s19",
                "vmla.f32 s8, s1, s20",
                "vmla.f32 s9, s1, s21",
                "vmla.f32 s10, s1, s22",
                "vmla.f32 s11, s1, s23",
                "vmla.f32 s8, s2, s24",
                "vmla.f32 s9, s2, s25",
                "vmla.f32 s10, s2, s26",
                "vmla.f32 s11, s2, s27",
                "vmla.f32 s8, s3, s28",
                "vmla.f32 s9, s3, s29",
                "vmla.f32 s10, s3, s30",
                "vmla.f32 s11, s3, s31",
                // `W0q` to f32: bytes 0 and 2 (1 and 3) as halfwords by `SXTB16`, the low
                // halfwords converted as fixed-point s16 with no fraction bits, the high ones
                // after an `ASR #16`: 11 instructions for 4 weights instead of 13.
                "ldr {t}, [{pq}], #4",
                "sxtb16 {u}, {t}",
                "sxtb16 {t}, {t}, ror #8",
                "vmov s12, s13, {u}, {t}",
                "asr {u}, {u}, #16",
                "asr {t}, {t}, #16",
                "vmov s14, s15, {u}, {t}",
                "vcvt.f32.s16 s12, s12, #0",
                "vcvt.f32.s16 s13, s13, #0",
                "vcvt.f32.s32 s14, s14",
                "vcvt.f32.s32 s15, s15",
                "vmla.f32 s8, s4, s12",
                "vmla.f32 s9, s4, s13",
                "vmla.f32 s10, s4, s14",
                "vmla.f32 s11, s4, s15",
                "vstmia {pw}!, {{s8-s11}}",
                "vmov {t}, {u}, s8, s9",
                "cmp {m}, {t}, lsl #1",
                "it lo",
                "lsllo {m}, {t}, #1",
                "cmp {m}, {u}, lsl #1",
                "it lo",
                "lsllo {m}, {u}, #1",
                "vmov {t}, {u}, s10, s11",
                "cmp {m}, {t}, lsl #1",
                "it lo",
                "lsllo {m}, {t}, #1",
                "cmp {m}, {u}, lsl #1",
                "it lo",
                "lsllo {m}, {u}, #1",
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                pa0 = inout(reg) a0.as_ptr() => _,
                pa1 = inout(reg) a1.as_ptr() => _,
                pa2 = inout(reg) a2.as_ptr() => _,
                pa3 = inout(reg) a3.as_ptr() => _,
                pq = inout(reg) q.as_ptr() => _,
                pw = inout(reg) w.as_mut_ptr() => _,
                cnt = inout(reg) blocks => _,
                m = inout(reg) m2,
                t = out(reg) _,
                u = out(reg) _,
                pb = in(reg) b.as_ptr(),
                s0 = in(reg) s0.to_bits(),
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
    let k = 4 * blocks;
    rank4_row(
        b,
        [&a0[k..], &a1[k..], &a2[k..], &a3[k..]],
        &q[k..],
        s0,
        &mut w[k..],
        m2,
    )
}

/// `switch::round_row` four weights per pass in one `asm!` block: `VLDM`, `VMUL` by
/// `1/s`, `VABS`, `VADD` of `½ − 2^−25`, `VCVT` (toward zero; NaN → 0, saturating),
/// `USAT #7`, the sign of `w·inv` put back with `EOR`/`SUB` of its `ASR #31` — the steps of
/// `fixed::quantize_weight_fast`. The tail (`len % 4`) goes to the portable loop.
fn round4(w: &[f32], inv: f32, out: &mut [i8]) {
    let n = w.len().min(out.len());
    let (w, out) = (&w[..n], &mut out[..n]);
    let blocks = n / 4;
    if blocks > 0 {
        // SAFETY: reads `4·blocks ≤ n` f32 of `w` (4-aligned as every `&[f32]`) and writes
        // as many bytes of `out`, both of length `n`; the clobbered FP registers are declared;
        // no stack use.
        unsafe {
            asm!(
                "vmov s0, {inv}",
                "vmov s1, {half}",
                "2:",
                "vldmia {pw}!, {{s8-s11}}",
                "vmul.f32 s8, s8, s0",
                "vmul.f32 s9, s9, s0",
                "vmul.f32 s10, s10, s0",
                "vmul.f32 s11, s11, s0",
                "vmov {t0}, {t1}, s8, s9",
                "vmov {t2}, {t3}, s10, s11",
                "vabs.f32 s8, s8",
                "vabs.f32 s9, s9",
                "vabs.f32 s10, s10",
                "vabs.f32 s11, s11",
                "vadd.f32 s8, s8, s1",
                "vadd.f32 s9, s9, s1",
                "vadd.f32 s10, s10, s1",
                "vadd.f32 s11, s11, s1",
                "vcvt.s32.f32 s8, s8",
                "vcvt.s32.f32 s9, s9",
                "vcvt.s32.f32 s10, s10",
                "vcvt.s32.f32 s11, s11",
                "vmov {r0}, {r1}, s8, s9",
                "usat {r0}, #7, {r0}",
                "usat {r1}, #7, {r1}",
                "eor {r0}, {r0}, {t0}, asr #31",
                "sub {r0}, {r0}, {t0}, asr #31",
                "eor {r1}, {r1}, {t1}, asr #31",
                "sub {r1}, {r1}, {t1}, asr #31",
                "strb {r0}, [{po}], #1",
                "strb {r1}, [{po}], #1",
                "vmov {r0}, {r1}, s10, s11",
                "usat {r0}, #7, {r0}",
                "usat {r1}, #7, {r1}",
                "eor {r0}, {r0}, {t2}, asr #31",
                "sub {r0}, {r0}, {t2}, asr #31",
                "eor {r1}, {r1}, {t3}, asr #31",
                "sub {r1}, {r1}, {t3}, asr #31",
                "strb {r0}, [{po}], #1",
                "strb {r1}, [{po}], #1",
                "subs {cnt}, {cnt}, #1",
                "bne 2b",
                pw = inout(reg) w.as_ptr() => _,
                po = inout(reg) out.as_mut_ptr() => _,
                cnt = inout(reg) blocks => _,
                inv = in(reg) inv.to_bits(),
                half = in(reg) 0x3eff_ffffu32,
                t0 = out(reg) _,
                t1 = out(reg) _,
                t2 = out(reg) _,
                t3 = out(reg) _,
                r0 = out(reg) _,
                r1 = out(reg) _,
                out("s0") _, out("s1") _,
                out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                options(nostack),
            );
        }
    }
    let k = 4 * blocks;
    round_row(&w[k..], inv, &mut out[k..]);
}
