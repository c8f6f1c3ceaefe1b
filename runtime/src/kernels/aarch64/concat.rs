//! NEON int8 concat + 2-group channel shuffle with the rescale to the output's
//! quantisation (a side that already has it copied): 16 channels of each side a
//! step, the codes rescaled in lanes, or for big enough inputs through a 256-entry table
//! of those same lane results (`Lut`). In lanes: widened
//! to i32, `scale · (q − zp)` as f32, `/ scale_y`, `FCVTAS` — round half away from zero, the
//! spec's rounding — clamped to ±2^22 as the spec clamps, the zero point added saturating,
//! narrowed with saturation), then one `ST2` interleaves the two sides. Each step is the
//! spec's float operations in the same order (one `FMUL`, one `FDIV`), so the same bytes.
//! The last step overlaps the one before when `c` is not a multiple of 16 (the same bytes
//! again). Fewer than 16 channels, or an input zero point whose `q − zp` could leave i32,
//! are left to the engine's portable code.
use core::arch::aarch64::*;

use crate::kernels::reference::concat_shuffle::{fits, ConcatIn};
use crate::quant::QParams;

/// Channels a step.
const L: usize = 16;

/// Same contract as `Kernels::concat_shuffle_i8` (`reference::concat_shuffle::concat_shuffle_i8`).
pub(crate) fn concat_shuffle_i8(
    n: usize,
    c: usize,
    a: ConcatIn<'_>,
    b: ConcatIn<'_>,
    qy: QParams,
    y: &mut [i8],
) -> bool {
    let (ca, cb) = (a.q == qy, b.q == qy);
    let Some(len) = fits(n, c, &a, &b, qy, y.len()).filter(|_| c >= L) else {
        return false;
    };
    let y = &mut y[..len];
    // SAFETY: NEON is baseline on this target (the module is cfg'd on it); a rescaled side's
    // `|zp| ≤ 2^24` (`rescalable`), as `Rescale::apply` and `Lut::new` need. A copied side
    // (already in `qy`) passes its codes through; one loop per mix.
    unsafe {
        let (ra, rb) = (Rescale::new(a.q, qy), Rescale::new(b.q, qy));
        let lut = n * c >= LUT_MIN;
        match (ca, cb) {
            (true, true) => interleave(n, c, &a, &b, y, |va, vb| int8x16x2_t(va, vb)),
            (true, false) if lut => {
                let tb = Lut::new(&rb);
                interleave(n, c, &a, &b, y, |va, vb| int8x16x2_t(va, tb.apply(vb)))
            }
            (true, false) => interleave(n, c, &a, &b, y, |va, vb| int8x16x2_t(va, rb.apply(vb))),
            (false, true) if lut => {
                let ta = Lut::new(&ra);
                interleave(n, c, &a, &b, y, |va, vb| int8x16x2_t(ta.apply(va), vb))
            }
            (false, true) => interleave(n, c, &a, &b, y, |va, vb| int8x16x2_t(ra.apply(va), vb)),
            (false, false) if lut => {
                let (ta, tb) = (Lut::new(&ra), Lut::new(&rb));
                interleave(n, c, &a, &b, y, |va, vb| {
                    int8x16x2_t(ta.apply(va), tb.apply(vb))
                })
            }
            (false, false) => interleave(n, c, &a, &b, y, |va, vb| {
                int8x16x2_t(ra.apply(va), rb.apply(vb))
            }),
        }
    }
    true
}

/// Codes a side from which its rescale goes through a 256-entry table ([`Lut`]: 16 vector
/// rescales to build, then 7 instructions per 16 codes instead of ~40).
const LUT_MIN: usize = 512;

/// Every pixel's two `c`-channel slices, 16 channels a step through `f`, interleaved by
/// `ST2` into `out` (`n·2c`; the slices checked by the caller: `holds(n, c)`, `c ≥ 16`),
/// walked by pointers (bounds checks on every pixel's slices cost ~20 instructions a pixel).
#[inline(always)]
fn interleave(
    n: usize,
    c: usize,
    a: &ConcatIn<'_>,
    b: &ConcatIn<'_>,
    out: &mut [i8],
    f: impl Fn(int8x16_t, int8x16_t) -> int8x16x2_t,
) {
    let out = &mut out[..n * 2 * c];
    debug_assert!(c >= L && a.holds(n, c) && b.holds(n, c));
    let (mut pa, mut pb, mut po) = (a.x.as_ptr(), b.x.as_ptr(), out.as_mut_ptr());
    // SAFETY: pixel `p < n`'s slices `p·stride + off .. + c` lie in `a.x` and `b.x` (the
    // caller's `holds`) and its output `2c·p .. + 2c` in `out`; every step reads 16 codes
    // at `at + 16 ≤ c` of them (`c ≥ 16`) and writes 32 bytes at `2·at`; NEON is baseline.
    unsafe {
        (pa, pb) = (pa.add(a.off), pb.add(b.off));
        for p in 0..n {
            if p > 0 {
                (pa, pb, po) = (pa.add(a.stride), pb.add(b.stride), po.add(2 * c));
            }
            let step = |at: usize| {
                let (va, vb) = (vld1q_s8(pa.add(at)), vld1q_s8(pb.add(at)));
                vst2q_s8(po.add(2 * at), f(va, vb));
            };
            let mut at = 0;
            while at + L < c {
                step(at);
                at += L;
            }
            // The last 16 (overlapping the step before when `c` is not a multiple of 16).
            step(c - L);
        }
    }
}

/// A side's rescale as a table of its 256 codes (indexed by the code's byte), looked up
/// 16 at a time: `TBL` on entries 0..64, then `TBX` (out-of-range lanes keep what they
/// have) on 64..128, 128..192 and 192..256 with the index moved down 64 each time.
struct Lut([int8x16x4_t; 4]);

impl Lut {
    /// # Safety
    /// NEON; `r`'s `|zp| ≤ 2^24`.
    #[inline(always)]
    unsafe fn new(r: &Rescale) -> Self {
        let mut t = [0i8; 256];
        // SAFETY: NEON; `t` holds 16 steps of 16 bytes; `r.apply`'s contract is ours.
        unsafe {
            let lanes = vld1q_u8([0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15].as_ptr());
            for k in 0..16 {
                let codes = vreinterpretq_s8_u8(vaddq_u8(lanes, vdupq_n_u8(16 * k as u8)));
                vst1q_s8(t.as_mut_ptr().add(16 * k), r.apply(codes));
            }
            Lut(core::array::from_fn(|q| {
                vld1q_s8_x4(t.as_ptr().add(64 * q))
            }))
        }
    }

    /// `apply`'s result for the 16 codes of `v`.
    ///
    /// # Safety
    /// NEON.
    #[inline(always)]
    unsafe fn apply(&self, v: int8x16_t) -> int8x16_t {
        let d = vdupq_n_u8(64);
        let u0 = vreinterpretq_u8_s8(v);
        let u1 = vsubq_u8(u0, d);
        let u2 = vsubq_u8(u1, d);
        let u3 = vsubq_u8(u2, d);
        let r = vqtbl4q_s8(self.0[0], u0);
        let r = vqtbx4q_s8(r, self.0[1], u1);
        let r = vqtbx4q_s8(r, self.0[2], u2);
        vqtbx4q_s8(r, self.0[3], u3)
    }
}

/// One side's rescale `qy.quantize(q.dequantize(v))` in lanes.
struct Rescale {
    zp: int32x4_t,
    scale: float32x4_t,
    scale_y: float32x4_t,
    zp_y: int32x4_t,
    lim: int32x4_t,
}

impl Rescale {
    /// # Safety
    /// NEON.
    #[inline(always)]
    unsafe fn new(q: QParams, qy: QParams) -> Self {
        Rescale {
            zp: vdupq_n_s32(q.zero_point),
            scale: vdupq_n_f32(q.scale),
            scale_y: vdupq_n_f32(qy.scale),
            zp_y: vdupq_n_s32(qy.zero_point),
            lim: vdupq_n_s32(1 << 22),
        }
    }

    /// 16 codes rescaled: per lane `t = (scale · (v − zp)) / scale_y`, rounded half away
    /// from zero (`FCVTAS`: saturating, NaN → 0 as the spec's `as`), clamped to ±2^22 (the
    /// spec clamps `t` there; rounding is monotone and ±2^22 are integers), `+ zp_y`
    /// saturating, narrowed with saturation (the clamp to −128..127).
    ///
    /// # Safety
    /// NEON; `|zp| ≤ 2^24` (so `v − zp` is exact).
    #[inline(always)]
    unsafe fn apply(&self, v: int8x16_t) -> int8x16_t {
        let (h0, h1) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
        let w = [
            vmovl_s16(vget_low_s16(h0)),
            vmovl_high_s16(h0),
            vmovl_s16(vget_low_s16(h1)),
            vmovl_high_s16(h1),
        ];
        let q = w.map(|w| {
            let d = vcvtq_f32_s32(vsubq_s32(w, self.zp));
            let t = vdivq_f32(vmulq_f32(self.scale, d), self.scale_y);
            let r = vcvtaq_s32_f32(t);
            let r = vminq_s32(vmaxq_s32(r, vnegq_s32(self.lim)), self.lim);
            vqaddq_s32(r, self.zp_y)
        });
        let n0 = vqmovn_high_s32(vqmovn_s32(q[0]), q[1]);
        let n1 = vqmovn_high_s32(vqmovn_s32(q[2]), q[3]);
        vqmovn_high_s16(vqmovn_s16(n0), n1)
    }
}
