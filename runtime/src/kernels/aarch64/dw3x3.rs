//! NEON depthwise 3x3 (padding 1) over NHWC, vectorised across channels.
//!
//! f32: per output pixel the taps inside the image are listed once (row slices), then each
//! 4-channel block runs `vfmaq_f32` in the reference's tap order — FMA's single rounding
//! only (`|Δ| ≤ 2·9·ε·(|b| + Σ|w·x|)`).
//!
//! int8, exact: 16-channel blocks (then 8) outermost, their 9 weight vectors and
//! output-stage constants in registers for every pixel; the zero point folded into the
//! bias, so each pixel is 9 raw-byte products (`SMULL`/`SMLAL`, pairs summed in i16) and the
//! padding reads `zx`. A 16-channel block shares each tap's address arithmetic and the
//! loop between twice the channels of an 8-channel one. Channel tails (< 8) run the
//! reference's scalar arithmetic.
use core::arch::aarch64::*;

use super::requant::Rq4;
use crate::kernels::reference::dwconv3x3::taps;
use crate::kernels::{reference, Geom, OutQ};
use crate::quant::requant;

/// NEON f32 depthwise 3x3; same contract as `reference::dwconv3x3::dwconv3x3_f32`.
pub(crate) fn dwconv3x3_f32(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let c = g.cout;
    let bias = &bias[..c];
    let mut t: [(&[f32], &[f32]); 9] = [(&[], &[]); 9];
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let nt = taps(g, x, w, oy, ox, &mut t);
            let t = &t[..nt];
            let out = &mut y[(oy * g.wo + ox) * c..][..c];
            // SAFETY: NEON is baseline on this target (the module is cfg'd on it); `bias`,
            // `out` and every tap row hold `c` elements.
            let c0 = unsafe { blocks_f32(t, bias, relu, out) };
            for ch in c0..c {
                let mut a = bias[ch];
                for &(wr, xr) in t {
                    a += wr[ch] * xr[ch];
                }
                out[ch] = if relu { a.max(0.0) } else { a };
            }
        }
    }
}

/// NEON int8 depthwise 3x3; bit-exact twin of `reference::dwconv3x3::dwconv3x3_i8`.
/// Shapes it does not cover (under 8 channels, `zx` outside i8, `q.lo > 127`, short
/// slices) go to the reference, which panics where its contract is broken.
pub(crate) fn dwconv3x3_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let c = g.cout;
    // The last byte any tap reads: the last pixel's channel `c − 1`.
    let x_need = match (g.h * g.w).checked_sub(1) {
        None => 0,
        Some(last) => last * g.in_stride + g.c_off + c,
    };
    let fits = c >= 8
        && q.lo <= 127
        && w.len() >= 9 * c
        && rq.len() >= c
        && y.len() >= g.ho * g.wo * c
        && x.len() >= x_need;
    let Ok(zb) = i8::try_from(zx) else {
        return reference::dwconv3x3::dwconv3x3_i8(g, x, zx, w, rq, q, y);
    };
    if !fits {
        return reference::dwconv3x3::dwconv3x3_i8(g, x, zx, w, rq, q, y);
    }
    let (cb16, cb) = (c & !15, c & !7);
    let zs = [zb; 16];
    for c0 in (0..cb16).step_by(16) {
        // SAFETY: NEON is baseline on this target; `fits` bounds every read and write of
        // channels `c0 .. c0 + 16 ≤ c` (see `block16`).
        unsafe { block16(g, x, &zs, w, rq, q, y, c0) };
    }
    for c0 in (cb16..cb).step_by(8) {
        // SAFETY: as above, channels `c0 .. c0 + 8 ≤ c` (see `block`).
        unsafe { block(g, x, &zs, w, rq, q, y, c0) };
    }
    if cb < c {
        tail(g, x, zx, w, rq, q, y, cb);
    }
}

/// Channels `c0 .. c0 + 16` of every output pixel, as [`block`] does 8: one vector a tap
/// for 16 channels, the products in pairs (`SMULL`/`SMLAL` and their `2` forms), one
/// 16-byte output stage ([`Rq4::apply16`]). A block with a −128 weight (two products may
/// then reach 2^15) is two [`block`]s.
///
/// # Safety
/// [`block`]'s, with `c0 + 16 ≤ g.cout`.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn block16(
    g: &Geom,
    x: &[i8],
    zb: &[i8; 16],
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
    c0: usize,
) {
    let c = g.cout;
    // SAFETY: tap `t`'s weights `t·c + c0 .. + 16` lie in `w` (`c0 + 16 ≤ c`, 9·c held).
    let wv: [int8x16_t; 9] =
        core::array::from_fn(|t| unsafe { vld1q_s8(w.as_ptr().add(t * c + c0)) });
    let min = wv.iter().fold(vdupq_n_s8(127), |m, &v| vminq_s8(m, v));
    if vminvq_s8(min) == i8::MIN {
        // SAFETY: the contract is this function's, so `block`'s for both halves.
        unsafe {
            block(g, x, zb, w, rq, q, y, c0);
            block(g, x, zb, w, rq, q, y, c0 + 8);
        }
        return;
    }
    // Σw fits i16 (9·128); −zx·Σw in i32 joins the bias.
    let (lo, hi) = wv
        .iter()
        .fold((vdupq_n_s16(0), vdupq_n_s16(0)), |(l, h), &v| {
            (vaddw_s8(l, vget_low_s8(v)), vaddw_high_s8(h, v))
        });
    let nz = -(zb[0] as i32);
    let corr = [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ];
    let add = corr.map(|c| vmulq_n_s32(c, nz));
    if g.ho > 0 && g.wo > 0 && (g.h + 2) * (g.w + 2) <= PAD_MAX {
        // The sums start from the bias; the short output stage's constants straight from
        // the rows where every channel has it (the usual multipliers below ½).
        if let Some((init, k)) = Rq4::short_rows::<4>(&rq[c0..], q, add) {
            // SAFETY: the contract is this function's; no weight is −128 (checked above);
            // every group short; the padded input fits the stack buffer.
            unsafe { padded16(g, x, zb, &wv, &k, &init, y, c0) };
            return;
        }
    }
    let mut r: [Rq4; 4] =
        core::array::from_fn(|k| Rq4::new(&rq[c0 + 4 * k..], q).with_bias(add[k]));
    // The sums start from the bias, so the output stage takes its short form where the
    // shifts allow it (the usual multipliers below ½): 3 operations a vector, not 7.
    let init: [int32x4_t; 4] = core::array::from_fn(|k| r[k].take_bias());
    let short = r.iter().all(|r| r.short());
    if short {
        // SAFETY: the contract is this function's.
        unsafe { rows16::<true>(g, x, zb, &wv, &r, init, y, c0) }
    } else {
        // SAFETY: as above.
        unsafe { rows16::<false>(g, x, zb, &wv, &r, init, y, c0) }
    }
}

/// Most padded input pixels (16 bytes each) [`padded16`] copies to the stack: ShuffleNet's
/// depthwise inputs up to 18×18 with their padding (16×16 and smaller images).
const PAD_MAX: usize = 400;

/// Two taps `xa`, `xb` (registers `v19`, `v20`) against weights `wa`, `wb`: the products in
/// i16 pairs (`v17`: channels 0..8, `v18`: 8..16), added to the sums `v13 .. v16` (from
/// `sa .. sd`: the start `v9 .. v12` for the first pair, else the sums themselves).
#[rustfmt::skip]
macro_rules! dw_pair {
    ($wa:literal, $wb:literal, $sa:literal, $sb:literal, $sc:literal, $sd:literal) => {
        concat!(
            "smull v17.8h, v19.8b, v", $wa, ".8b\n",
            "smull2 v18.8h, v19.16b, v", $wa, ".16b\n",
            "smlal v17.8h, v20.8b, v", $wb, ".8b\n",
            "smlal2 v18.8h, v20.16b, v", $wb, ".16b\n",
            "saddw v13.4s, v", $sa, ".4s, v17.4h\n",
            "saddw2 v14.4s, v", $sb, ".4s, v17.8h\n",
            "saddw v15.4s, v", $sc, ".4s, v18.4h\n",
            "saddw2 v16.4s, v", $sd, ".4s, v18.8h\n",
        )
    };
}

/// [`block16`] on a copy of its 16 channels padded with the zero point on every side
/// (`(h + 2)·(w + 2)` vectors on the stack), so every output pixel is the same 9 taps with
/// no edge cases: one `asm!` loop over the output rows and pixels, the 9 weights, the
/// sums' starts and the short output stage's constants (`k`: [`Rq4::short_consts16`]) in
/// registers; per pixel 9 loads (3 row pointers, each moved on by the stride), the taps
/// in i16 pairs ([`dw_pair`], no weight −128) and 16 output bytes. Against [`walk`] per
/// pixel: ~70 instructions instead of ~93 inside and ~140 on the edges.
///
/// # Safety
/// [`block16`]'s contract; no weight in `w` is −128; every group short; `ho, wo ≥ 1`;
/// `(h + 2)·(w + 2) ≤ PAD_MAX`.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn padded16(
    g: &Geom,
    x: &[i8],
    zb: &[i8; 16],
    w: &[int8x16_t; 9],
    k: &[int32x4_t; 10],
    init: &[int32x4_t; 4],
    y: &mut [i8],
    c0: usize,
) {
    let (hp, wp) = (g.h + 2, g.w + 2);
    let mut buf = [core::mem::MaybeUninit::<int8x16_t>::uninit(); PAD_MAX];
    let bp = buf.as_mut_ptr() as *mut int8x16_t;
    // SAFETY: `(hp·wp) ≤ PAD_MAX` vectors at `bp`; input pixel `(iy, ix)` holds channels
    // `c_off + c0 .. + 16` in `x` (the contract); every vector the loop reads is written
    // here first (the whole padded image).
    unsafe {
        let z = vld1q_s8(zb.as_ptr());
        for i in 0..wp {
            bp.add(i).write(z);
            bp.add((hp - 1) * wp + i).write(z);
        }
        for iy in 0..g.h {
            let row = bp.add((iy + 1) * wp);
            row.write(z);
            row.add(wp - 1).write(z);
            let src = x.as_ptr().add(iy * g.w * g.in_stride + g.c_off + c0);
            for ix in 0..g.w {
                row.add(ix + 1).write(vld1q_s8(src.add(ix * g.in_stride)));
            }
        }
    }
    let s = g.stride;
    // Bytes: a row of the padded image, a pixel step, and the row pointers' move from the
    // end of one output row to the start of the next.
    let rs = 16 * wp;
    let adj = s * rs - g.wo * s * 16;
    let b0 = bp as *const i8;
    // SAFETY: output pixel `(oy, ox)` reads padded rows `oy·s + ky ≤ (ho − 1)·s + 2 ≤
    // h + 1` and columns `ox·s + kx ≤ w + 1` (the padded image, `Geom::out_dim`), and
    // writes 16 bytes at `y + (oy·wo + ox)·cout + c0` (inside `y`: the contract); the
    // block writes only its register operands and clobbers; NEON is baseline.
    unsafe {
        core::arch::asm!(
            "2:",
            "mov {cnt}, {wo}",
            "3:",
            "ldr q19, [{p0}, #16]",
            "ldr q20, [{p0}, #32]",
            dw_pair!(1, 2, 9, 10, 11, 12),
            "ld1 {{v19.16b}}, [{p0}], {sx}",
            "ldr q20, [{p1}, #16]",
            dw_pair!(0, 4, 13, 14, 15, 16),
            "ldr q19, [{p1}, #32]",
            "ld1 {{v20.16b}}, [{p1}], {sx}",
            dw_pair!(5, 3, 13, 14, 15, 16),
            "ldr q19, [{p2}, #16]",
            "ldr q20, [{p2}, #32]",
            dw_pair!(7, 8, 13, 14, 15, 16),
            "ld1 {{v19.16b}}, [{p2}], {sx}",
            "smull v17.8h, v19.8b, v6.8b",
            "smull2 v18.8h, v19.16b, v6.16b",
            "saddw v13.4s, v13.4s, v17.4h",
            "saddw2 v14.4s, v14.4s, v17.8h",
            "saddw v15.4s, v15.4s, v18.4h",
            "saddw2 v16.4s, v16.4s, v18.8h",
            // The short output stage (`Rq4::apply16_short`).
            "sqrdmulh v13.4s, v13.4s, v21.4s",
            "sqrdmulh v14.4s, v14.4s, v22.4s",
            "sqrdmulh v15.4s, v15.4s, v23.4s",
            "sqrdmulh v16.4s, v16.4s, v24.4s",
            "ssra v13.4s, v13.4s, #31",
            "ssra v14.4s, v14.4s, #31",
            "ssra v15.4s, v15.4s, #31",
            "ssra v16.4s, v16.4s, #31",
            "srshl v13.4s, v13.4s, v25.4s",
            "srshl v14.4s, v14.4s, v26.4s",
            "srshl v15.4s, v15.4s, v27.4s",
            "srshl v16.4s, v16.4s, v28.4s",
            "sqxtn v13.4h, v13.4s",
            "sqxtn2 v13.8h, v14.4s",
            "sqxtn v15.4h, v15.4s",
            "sqxtn2 v15.8h, v16.4s",
            "sqadd v13.8h, v13.8h, v29.8h",
            "sqadd v15.8h, v15.8h, v29.8h",
            "sqxtn v13.8b, v13.8h",
            "sqxtn2 v13.16b, v15.8h",
            "smax v13.16b, v13.16b, v30.16b",
            "st1 {{v13.16b}}, [{yp}], {cout}",
            "subs {cnt}, {cnt}, #1",
            "b.ne 3b",
            "add {p0}, {p0}, {adj}",
            "add {p1}, {p1}, {adj}",
            "add {p2}, {p2}, {adj}",
            "subs {rows}, {rows}, #1",
            "b.ne 2b",
            p0 = inout(reg) b0 => _,
            p1 = inout(reg) b0.add(rs) => _,
            p2 = inout(reg) b0.add(2 * rs) => _,
            yp = inout(reg) y.as_mut_ptr().add(c0) => _,
            rows = inout(reg) g.ho => _,
            cnt = out(reg) _,
            wo = in(reg) g.wo,
            sx = in(reg) 16 * s,
            adj = in(reg) adj,
            cout = in(reg) g.cout,
            in("v0") w[0],
            in("v1") w[1],
            in("v2") w[2],
            in("v3") w[3],
            in("v4") w[4],
            in("v5") w[5],
            in("v6") w[6],
            in("v7") w[7],
            in("v8") w[8],
            in("v9") init[0],
            in("v10") init[1],
            in("v11") init[2],
            in("v12") init[3],
            out("v13") _,
            out("v14") _,
            out("v15") _,
            out("v16") _,
            out("v17") _,
            out("v18") _,
            out("v19") _,
            out("v20") _,
            in("v21") k[0],
            in("v22") k[1],
            in("v23") k[2],
            in("v24") k[3],
            in("v25") k[4],
            in("v26") k[5],
            in("v27") k[6],
            in("v28") k[7],
            in("v29") k[8],
            in("v30") k[9],
            options(nostack),
        );
    }
}

/// [`dw_pair`] for 8 channels: taps `v19`, `v20` (8 bytes) against weights `wa`, `wb`, the
/// pair in `v17`'s i16 lanes, added to the sums `v13, v14` (from `sa, sb`).
#[rustfmt::skip]
macro_rules! dw_pair8 {
    ($wa:literal, $wb:literal, $sa:literal, $sb:literal) => {
        concat!(
            "smull v17.8h, v19.8b, v", $wa, ".8b\n",
            "smlal v17.8h, v20.8b, v", $wb, ".8b\n",
            "saddw v13.4s, v", $sa, ".4s, v17.4h\n",
            "saddw2 v14.4s, v", $sb, ".4s, v17.8h\n",
        )
    };
}

/// [`padded16`] for an 8-channel block ([`block`]): the copy 8 bytes a pixel (at 16-byte
/// steps, the layout [`padded16`] reads), 8-byte taps, 2 sums, 8 output bytes a pixel
/// ([`Rq4::apply8_short`]; `k` holds the 2 groups' multipliers at 0, 1 and `−shift`s at 4,
/// 5).
///
/// # Safety
/// [`block`]'s contract; no weight in `w` is −128; both groups short; `ho, wo ≥ 1`;
/// `(h + 2)·(w + 2) ≤ PAD_MAX`.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn padded8(
    g: &Geom,
    x: &[i8],
    zb: &[i8; 16],
    w: &[int8x8_t; 9],
    k: &[int32x4_t; 10],
    init: &[int32x4_t; 2],
    y: &mut [i8],
    c0: usize,
) {
    let (hp, wp) = (g.h + 2, g.w + 2);
    let mut buf = [core::mem::MaybeUninit::<int8x16_t>::uninit(); PAD_MAX];
    let bp = buf.as_mut_ptr() as *mut i8;
    // SAFETY: `(hp·wp) ≤ PAD_MAX` vectors at `bp`, each written in its first 8 bytes, the
    // ones the loop reads; input pixel `(iy, ix)` holds channels `c_off + c0 .. + 8` in `x`
    // (the contract).
    unsafe {
        let z = vld1_s8(zb.as_ptr());
        for i in 0..wp {
            vst1_s8(bp.add(16 * i), z);
            vst1_s8(bp.add(16 * ((hp - 1) * wp + i)), z);
        }
        for iy in 0..g.h {
            let row = bp.add(16 * (iy + 1) * wp);
            vst1_s8(row, z);
            vst1_s8(row.add(16 * (wp - 1)), z);
            let src = x.as_ptr().add(iy * g.w * g.in_stride + g.c_off + c0);
            for ix in 0..g.w {
                vst1_s8(row.add(16 * (ix + 1)), vld1_s8(src.add(ix * g.in_stride)));
            }
        }
    }
    let s = g.stride;
    let rs = 16 * wp;
    let adj = s * rs - g.wo * s * 16;
    let b0 = bp as *const i8;
    // SAFETY: as in `padded16`, with 8 bytes a tap and 8 output bytes a pixel.
    unsafe {
        core::arch::asm!(
            "2:",
            "mov {cnt}, {wo}",
            "3:",
            "ldr d19, [{p0}, #16]",
            "ldr d20, [{p0}, #32]",
            dw_pair8!(1, 2, 9, 10),
            "ld1 {{v19.8b}}, [{p0}], {sx}",
            "ldr d20, [{p1}, #16]",
            dw_pair8!(0, 4, 13, 14),
            "ldr d19, [{p1}, #32]",
            "ld1 {{v20.8b}}, [{p1}], {sx}",
            dw_pair8!(5, 3, 13, 14),
            "ldr d19, [{p2}, #16]",
            "ldr d20, [{p2}, #32]",
            dw_pair8!(7, 8, 13, 14),
            "ld1 {{v19.8b}}, [{p2}], {sx}",
            "smull v17.8h, v19.8b, v6.8b",
            "saddw v13.4s, v13.4s, v17.4h",
            "saddw2 v14.4s, v14.4s, v17.8h",
            // The short output stage (`Rq4::apply8_short`).
            "sqrdmulh v13.4s, v13.4s, v21.4s",
            "sqrdmulh v14.4s, v14.4s, v22.4s",
            "ssra v13.4s, v13.4s, #31",
            "ssra v14.4s, v14.4s, #31",
            "srshl v13.4s, v13.4s, v25.4s",
            "srshl v14.4s, v14.4s, v26.4s",
            "sqxtn v13.4h, v13.4s",
            "sqxtn2 v13.8h, v14.4s",
            "sqadd v13.8h, v13.8h, v29.8h",
            "sqxtn v13.8b, v13.8h",
            "smax v13.8b, v13.8b, v30.8b",
            "st1 {{v13.8b}}, [{yp}], {cout}",
            "subs {cnt}, {cnt}, #1",
            "b.ne 3b",
            "add {p0}, {p0}, {adj}",
            "add {p1}, {p1}, {adj}",
            "add {p2}, {p2}, {adj}",
            "subs {rows}, {rows}, #1",
            "b.ne 2b",
            p0 = inout(reg) b0 => _,
            p1 = inout(reg) b0.add(rs) => _,
            p2 = inout(reg) b0.add(2 * rs) => _,
            yp = inout(reg) y.as_mut_ptr().add(c0) => _,
            rows = inout(reg) g.ho => _,
            cnt = out(reg) _,
            wo = in(reg) g.wo,
            sx = in(reg) 16 * s,
            adj = in(reg) adj,
            cout = in(reg) g.cout,
            in("v0") w[0],
            in("v1") w[1],
            in("v2") w[2],
            in("v3") w[3],
            in("v4") w[4],
            in("v5") w[5],
            in("v6") w[6],
            in("v7") w[7],
            in("v8") w[8],
            in("v9") init[0],
            in("v10") init[1],
            out("v13") _,
            out("v14") _,
            out("v17") _,
            out("v19") _,
            out("v20") _,
            in("v21") k[0],
            in("v22") k[1],
            in("v25") k[4],
            in("v26") k[5],
            in("v29") k[8],
            in("v30") k[9],
            options(nostack),
        );
    }
}

/// [`block16`]'s pixels ([`walk`]): per pixel [`sum9_16`] and the output stage, `SHORT`
/// its short form ([`Rq4::apply16_short`]).
///
/// # Safety
/// [`block16`]'s contract; `init` the sums' start (the bias taken out of `r`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows16<const SHORT: bool>(
    g: &Geom,
    x: &[i8],
    zb: &[i8; 16],
    wv: &[int8x16_t; 9],
    r: &[Rq4; 4],
    init: [int32x4_t; 4],
    y: &mut [i8],
    c0: usize,
) {
    // Local copies: the output stage's constants, not reads through `r` at every pixel.
    let [r0, r1, r2, r3] = *r;
    // SAFETY: this function's contract is `walk`' with 16 bytes a tap (`c0 + 16 ≤ cout`,
    // `zb` 16 bytes); each output pixel holds channels `c0 .. c0 + 16`.
    unsafe {
        walk(
            g,
            x,
            zb,
            y,
            c0,
            |p| vld1q_s8(p),
            |xv, out| {
                let a = sum9_16(&init, &xv, wv);
                let rs = [&r0, &r1, &r2, &r3];
                let b = if SHORT {
                    Rq4::apply16_short(rs, a)
                } else {
                    Rq4::apply16(rs, a)
                };
                vst1q_s8(out, b);
            },
        )
    }
}

/// `init + Σ_t x[t]·w[t]` per channel over 16 channels, exact (wrapping as the
/// reference's bias add), as four i32x4 (channels 0..4, …, 12..16): taps in pairs summed
/// in i16 (no weight is −128: [`block16`]). One `asm!` block that streams the 9 weight
/// vectors from `w` (in pairs) next to the pixel's inputs: held in registers across the
/// pixels, as LLVM did, they crowd out the output stage's constants, which it then
/// reloaded from the stack at every pixel.
#[inline(always)]
#[rustfmt::skip]
fn sum9_16(init: &[int32x4_t; 4], x: &[int8x16_t; 9], w: &[int8x16_t; 9]) -> [int32x4_t; 4] {
    let (a0, a1, a2, a3): (int32x4_t, int32x4_t, int32x4_t, int32x4_t);
    // SAFETY: the block reads the 4 vectors of `init` (64 bytes) and the 9 of `w` (144
    // bytes) and writes only its register operands; NEON is baseline on this target.
    unsafe {
        core::arch::asm!(
            "ldp {a0:q}, {a1:q}, [{ip}]",
            "ldp {a2:q}, {a3:q}, [{ip}, #32]",
            "ldp {w0:q}, {w1:q}, [{wp}]",
            "smull {l:v}.8h, {x0:v}.8b, {w0:v}.8b",
            "smull2 {h:v}.8h, {x0:v}.16b, {w0:v}.16b",
            "smlal {l:v}.8h, {x1:v}.8b, {w1:v}.8b",
            "smlal2 {h:v}.8h, {x1:v}.16b, {w1:v}.16b",
            "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
            "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
            "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
            "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
            "ldp {w0:q}, {w1:q}, [{wp}, #32]",
            "smull {l:v}.8h, {x2:v}.8b, {w0:v}.8b",
            "smull2 {h:v}.8h, {x2:v}.16b, {w0:v}.16b",
            "smlal {l:v}.8h, {x3:v}.8b, {w1:v}.8b",
            "smlal2 {h:v}.8h, {x3:v}.16b, {w1:v}.16b",
            "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
            "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
            "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
            "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
            "ldp {w0:q}, {w1:q}, [{wp}, #64]",
            "smull {l:v}.8h, {x4:v}.8b, {w0:v}.8b",
            "smull2 {h:v}.8h, {x4:v}.16b, {w0:v}.16b",
            "smlal {l:v}.8h, {x5:v}.8b, {w1:v}.8b",
            "smlal2 {h:v}.8h, {x5:v}.16b, {w1:v}.16b",
            "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
            "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
            "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
            "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
            "ldp {w0:q}, {w1:q}, [{wp}, #96]",
            "smull {l:v}.8h, {x6:v}.8b, {w0:v}.8b",
            "smull2 {h:v}.8h, {x6:v}.16b, {w0:v}.16b",
            "smlal {l:v}.8h, {x7:v}.8b, {w1:v}.8b",
            "smlal2 {h:v}.8h, {x7:v}.16b, {w1:v}.16b",
            "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
            "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
            "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
            "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
            "ldr {w0:q}, [{wp}, #128]",
            "smull {l:v}.8h, {x8:v}.8b, {w0:v}.8b",
            "smull2 {h:v}.8h, {x8:v}.16b, {w0:v}.16b",
            "saddw {a0:v}.4s, {a0:v}.4s, {l:v}.4h",
            "saddw2 {a1:v}.4s, {a1:v}.4s, {l:v}.8h",
            "saddw {a2:v}.4s, {a2:v}.4s, {h:v}.4h",
            "saddw2 {a3:v}.4s, {a3:v}.4s, {h:v}.8h",
            wp = in(reg) w.as_ptr(),
            ip = in(reg) init.as_ptr(),
            x0 = in(vreg) x[0],
            x1 = in(vreg) x[1],
            x2 = in(vreg) x[2],
            x3 = in(vreg) x[3],
            x4 = in(vreg) x[4],
            x5 = in(vreg) x[5],
            x6 = in(vreg) x[6],
            x7 = in(vreg) x[7],
            x8 = in(vreg) x[8],
            a0 = out(vreg) a0,
            a1 = out(vreg) a1,
            a2 = out(vreg) a2,
            a3 = out(vreg) a3,
            w0 = out(vreg) _,
            w1 = out(vreg) _,
            l = out(vreg) _,
            h = out(vreg) _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    [a0, a1, a2, a3]
}

/// Channels `c0 .. c0 + 8` of every output pixel. The zero point is folded into the bias
/// (`Σ w·(x − zx) = Σ w·x − zx·Σw`), so a tap in the padding reads `zb` (`zx` in 8 bytes)
/// and adds `w·zx`, which the fold takes back: every pixel runs the same 9 products.
///
/// # Safety
/// NEON available; `c0 + 8 ≤ g.cout`, `w` holds `9·cout`, `rq` `cout`, `y` every output,
/// `x` every input pixel's channels `c_off .. c_off + cout`; `q.lo ≤ 127`.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    g: &Geom,
    x: &[i8],
    zb: &[i8; 16],
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
    c0: usize,
) {
    let c = g.cout;
    // SAFETY: tap `t`'s weights `t·c + c0 .. + 8` lie in `w` (`c0 + 8 ≤ c`, 9·c held).
    let wv: [int8x8_t; 9] =
        core::array::from_fn(|t| unsafe { vld1_s8(w.as_ptr().add(t * c + c0)) });
    // Σw fits i16 (9·128); −zx·Σw in i32 joins the bias.
    let ws = wv.iter().fold(vdupq_n_s16(0), |a, &v| vaddw_s8(a, v));
    let nz = -(zb[0] as i32);
    let r = [
        Rq4::new(&rq[c0..], q).with_bias(vmulq_n_s32(vmovl_s16(vget_low_s16(ws)), nz)),
        Rq4::new(&rq[c0 + 4..], q).with_bias(vmulq_n_s32(vmovl_high_s16(ws), nz)),
    ];
    // Two products sum in i16 unless a weight is −128 (then two can reach 2^15).
    let min = wv.iter().fold(vdup_n_s8(127), |m, &v| vmin_s8(m, v));
    let pair = vminv_s8(min) > i8::MIN;
    if pair && g.ho > 0 && g.wo > 0 && (g.h + 2) * (g.w + 2) <= PAD_MAX {
        // The sums start from the bias; the short output stage where every channel has it.
        let mut rs = r;
        let init = [rs[0].take_bias(), rs[1].take_bias()];
        if Rq4::all_short(&rs) {
            let k = Rq4::short_consts16(&[rs[0], rs[1], rs[0], rs[1]]);
            // SAFETY: the contract is this function's; no weight is −128; both groups
            // `short()`; the padded input fits the stack buffer.
            unsafe { padded8(g, x, zb, &wv, &k, &init, y, c0) };
            return;
        }
    }
    // SAFETY: the contract is this function's.
    unsafe {
        if pair {
            rows::<true>(g, x, zb, &wv, &r, y, c0)
        } else {
            rows::<false>(g, x, zb, &wv, &r, y, c0)
        }
    }
}

/// The pixel walk both block widths share: per output row its 3 input rows (a row in the
/// padding reads `zb` with pixel step 0), then per output pixel its 9 taps loaded by `load`
/// (a column in the padding reads `zb` too) and handed to `px` with the pixel's output
/// pointer at channel `c0`.
///
/// # Safety
/// `load` reads at most 16 bytes; every input pixel holds channels `c_off + c0` and the
/// `load`'s bytes after them inside `x`, and every output pixel `y[p·cout + c0 ..]` the
/// bytes `px` stores; `zb` is the zero point in 16 bytes.
#[inline(always)]
unsafe fn walk<T>(
    g: &Geom,
    x: &[i8],
    zb: &[i8; 16],
    y: &mut [i8],
    c0: usize,
    load: impl Fn(*const i8) -> T,
    mut px: impl FnMut([T; 9], *mut i8),
) {
    let (c, s, zp) = (g.cout, g.stride, zb.as_ptr());
    for oy in 0..g.ho {
        let (mut base, mut st) = ([zp; 3], [0usize; 3]);
        for ky in 0..3 {
            if let Some(iy) = Geom::tap(oy, ky, s, 1, g.h) {
                // SAFETY: row `iy < h`, channel `c_off + c0`: inside `x` (the contract).
                base[ky] = unsafe { x.as_ptr().add(iy * g.w * g.in_stride + g.c_off + c0) };
                st[ky] = g.in_stride;
            }
        }
        // SAFETY: pixel `oy·wo` channel `c0` of the output (the contract).
        let out = unsafe { y.as_mut_ptr().add(oy * g.wo * c + c0) };
        for ox in 0..g.wo {
            let ix = ox * s;
            // SAFETY: every tap reads at a column `< w` of a row inside `x`, or `zb` (the
            // padding); the output pixel `ox < wo` is inside `y` (the contract).
            unsafe {
                let xv: [T; 9] = if ix >= 1 && ix + 1 < g.w {
                    core::array::from_fn(|t| load(base[t / 3].add((ix - 1 + t % 3) * st[t / 3])))
                } else {
                    let inside = [ix >= 1, ix < g.w, ix + 1 < g.w];
                    core::array::from_fn(|t| {
                        let (ky, kx) = (t / 3, t % 3);
                        load(if inside[kx] {
                            base[ky].add((ix + kx - 1) * st[ky])
                        } else {
                            zp
                        })
                    })
                };
                px(xv, out.add(ox * c));
            }
        }
    }
}

/// [`block`]'s pixels ([`walk`]): per pixel [`sum9`] and the output stage.
///
/// # Safety
/// [`block`]'s contract.
#[inline(always)]
unsafe fn rows<const PAIR: bool>(
    g: &Geom,
    x: &[i8],
    zb: &[i8; 16],
    wv: &[int8x8_t; 9],
    r: &[Rq4; 2],
    y: &mut [i8],
    c0: usize,
) {
    // SAFETY: this function's contract is `walk`' with 8 bytes a tap (`c0 + 8 ≤ cout`);
    // each output pixel holds channels `c0 .. c0 + 8`.
    unsafe {
        walk(
            g,
            x,
            zb,
            y,
            c0,
            |p| vld1_s8(p),
            |xv, out| {
                let (lo, hi) = sum9::<PAIR>(&xv, wv);
                vst1_s8(out, Rq4::apply8(r, lo, hi));
            },
        )
    }
}

/// `Σ_t x[t]·w[t]` per channel, exact, as two i32x4 (channels 0..4, 4..8). `PAIR`: taps
/// go in pairs summed in i16 (`SMULL` + `SMLAL`, exact when no weight is −128), 26
/// instructions for 72 products with the loads.
#[inline(always)]
fn sum9<const PAIR: bool>(x: &[int8x8_t; 9], w: &[int8x8_t; 9]) -> (int32x4_t, int32x4_t) {
    // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
    unsafe {
        if PAIR {
            let p = |a: usize| vmlal_s8(vmull_s8(x[a], w[a]), x[a + 1], w[a + 1]);
            let (s0, s1, s2, s3, s4) = (p(0), p(2), p(4), p(6), vmull_s8(x[8], w[8]));
            let mut lo = vaddl_s16(vget_low_s16(s0), vget_low_s16(s1));
            let mut hi = vaddl_high_s16(s0, s1);
            for s in [s2, s3, s4] {
                lo = vaddw_s16(lo, vget_low_s16(s));
                hi = vaddw_high_s16(hi, s);
            }
            (lo, hi)
        } else {
            let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
            for t in 0..9 {
                let p = vmull_s8(x[t], w[t]);
                lo = vaddw_s16(lo, vget_low_s16(p));
                hi = vaddw_high_s16(hi, p);
            }
            (lo, hi)
        }
    }
}

/// Channels `cb .. cout` (fewer than 8) the reference's way.
#[allow(clippy::too_many_arguments)]
fn tail(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8], cb: usize) {
    let c = g.cout;
    let mut t: [(&[i8], &[i8]); 9] = [(&[], &[]); 9];
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let nt = taps(g, x, w, oy, ox, &mut t);
            let out = &mut y[(oy * g.wo + ox) * c..][..c];
            for ch in cb..c {
                let mut a = 0i32;
                for &(wr, xr) in &t[..nt] {
                    a += wr[ch] as i32 * (xr[ch] as i32 - zx);
                }
                out[ch] = requant(a, rq[ch], q);
            }
        }
    }
}

/// The whole 4-channel blocks of one f32 output pixel: `out = bias + Σ_taps w·x` (then
/// ReLU); returns where the scalar tail starts.
///
/// # Safety
/// NEON available; `bias` and every tap row at least `out.len()` long.
#[target_feature(enable = "neon")]
unsafe fn blocks_f32(t: &[(&[f32], &[f32])], bias: &[f32], relu: bool, out: &mut [f32]) -> usize {
    let c = out.len();
    let mut c0 = 0;
    while c0 + 4 <= c {
        // SAFETY: `c0 + 4 <= c` and every slice holds at least `c`.
        unsafe {
            let mut acc = vld1q_f32(bias.as_ptr().add(c0));
            for &(wr, xr) in t {
                acc = vfmaq_f32(
                    acc,
                    vld1q_f32(wr.as_ptr().add(c0)),
                    vld1q_f32(xr.as_ptr().add(c0)),
                );
            }
            if relu {
                acc = vmaxq_f32(acc, vdupq_n_f32(0.0));
            }
            vst1q_f32(out.as_mut_ptr().add(c0), acc);
        }
        c0 += 4;
    }
    c0
}
