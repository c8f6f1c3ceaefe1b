//! NEON twin of the streaming experts' factor decode (`switch::decode_lowrank`): both factors
//! written transposed (`Aᵀ [Cin, r]`, `Bᵀ [r, Cout]`) by 4-row register tiles — each row's
//! values loaded and converted in lanes (int8: widened, `SCVTF`, times the row's f16 scale
//! with one `FMUL`, `q as f32 · s`; f16: `FCVTL`, exact; f32: as stored), 4×4 blocks
//! transposed with `TRN1`/`TRN2` and stored as 4-lane runs of the transposed rows, instead
//! of one scattered store per element. The same products as the spec, so the same bits.
use core::arch::aarch64::*;
use core::arch::asm;

use crate::format::factor::Factor;
use crate::format::DeltaDType;

/// [`crate::switch::decode_lowrank`] on NEON.
pub(crate) fn decode(a: &Factor<'_>, b: &Factor<'_>, at: &mut [f32], bt: &mut [f32]) {
    decode_t(a, at);
    decode_t(b, bt);
}

/// [`Factor::decode_transposed_into`]: whole 4-row × 4-column tiles in registers
/// ([`tiles`]); the rows past the last 4 and the columns past the last 4 by `get`.
fn decode_t(f: &Factor<'_>, out: &mut [f32]) {
    let (rows, cols) = (f.rows, f.cols);
    if rows < 4 || cols < 4 {
        return f.decode_transposed_into(out);
    }
    let out = &mut out[..rows * cols];
    let (bytes, dt) = f.raw();
    // SAFETY (each call): NEON is baseline on this target; `bytes` holds
    // `factor_bytes(dt, rows, cols)` (a `Factor` invariant), checked again by `tiles`'s
    // asserts, and `out` `rows·cols` values.
    match dt {
        DeltaDType::F32 => unsafe { tiles::<4>(bytes, &[], rows, cols, out) },
        DeltaDType::F16 => unsafe { tiles::<2>(bytes, &[], rows, cols, out) },
        DeltaDType::I8 => {
            let (q, sc) = bytes.split_at(rows * cols);
            unsafe { tiles::<1>(q, sc, rows, cols, out) };
        }
    }
    let (r4, c4) = (rows / 4 * 4, cols / 4 * 4);
    for j in 0..cols {
        // Columns of the tiles: only the rows past the last 4; the last columns: all rows.
        let i0 = if j < c4 { r4 } else { 0 };
        for i in i0..rows {
            out[j * rows + i] = f.get(i, j);
        }
    }
}

/// `FCVTL`: 4 f16 bit patterns to f32, exact (`core::arch`'s f16 vector types are not
/// stable; the instruction is baseline aarch64).
#[target_feature(enable = "neon")]
#[inline]
fn f16x4(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: a register-only conversion, no memory or flags touched.
    unsafe {
        asm!("fcvtl {r:v}.4s, {h:v}.4h", r = lateout(vreg) r, h = in(vreg) h,
             options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// Four values of one row at `p` as f32, before the int8 row scale: `W` bytes a value
/// (1: int8 codes, 2: f16, 4: f32).
///
/// # Safety
/// `p` points at `4·W` readable bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load4<const W: usize>(p: *const u8) -> float32x4_t {
    // SAFETY: the caller's `4·W` bytes at `p`; unaligned loads throughout.
    unsafe {
        match W {
            1 => {
                let b = vreinterpret_s8_u32(vdup_n_u32(p.cast::<u32>().read_unaligned()));
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b))))
            }
            2 => f16x4(vld1_u16(p.cast())),
            _ => vld1q_f32(p.cast()),
        }
    }
}

/// Eight values of one row at `p` as two f32 quads, before the int8 row scale.
///
/// # Safety
/// `p` points at `8·W` readable bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load8<const W: usize>(p: *const u8) -> [float32x4_t; 2] {
    // SAFETY: the caller's `8·W` bytes at `p`.
    unsafe {
        match W {
            1 => {
                let w = vmovl_s8(vld1_s8(p.cast()));
                [
                    vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))),
                    vcvtq_f32_s32(vmovl_high_s16(w)),
                ]
            }
            2 => {
                let h = vld1q_u16(p.cast());
                [f16x4(vget_low_u16(h)), f16x4(vget_high_u16(h))]
            }
            _ => [vld1q_f32(p.cast()), vld1q_f32(p.add(16).cast())],
        }
    }
}

/// Rows `r` of a 4×4 tile → its 4 columns (`TRN1`/`TRN2` on 32-bit, then 64-bit lanes).
#[target_feature(enable = "neon")]
#[inline]
fn transpose4(r: [float32x4_t; 4]) -> [float32x4_t; 4] {
    let (t0, t1) = (vtrn1q_f32(r[0], r[1]), vtrn2q_f32(r[0], r[1]));
    let (t2, t3) = (vtrn1q_f32(r[2], r[3]), vtrn2q_f32(r[2], r[3]));
    let (t0, t1) = (vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t1));
    let (t2, t3) = (vreinterpretq_f64_f32(t2), vreinterpretq_f64_f32(t3));
    [
        vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)),
        vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)),
    ]
}

/// The whole 4-row blocks of [`decode_t`], by 4×8 tiles then one 4×4 tile where 4 columns
/// are left: `W` bytes a value (1: int8 codes with the f16 row scales `sc`, 2: f16, 4: f32).
/// The int8 products are the spec's `q as f32 · s` (one `FMUL` a lane, no fusing).
///
/// # Safety
/// NEON available.
#[target_feature(enable = "neon")]
unsafe fn tiles<const W: usize>(v: &[u8], sc: &[u8], rows: usize, cols: usize, out: &mut [f32]) {
    assert!(v.len() == W * rows * cols && out.len() == rows * cols);
    assert!(W != 1 || sc.len() == 2 * rows);
    let (vp, op) = (v.as_ptr(), out.as_mut_ptr());
    let (c8, c4) = (cols / 8 * 8, cols / 4 * 4);
    for i0 in (0..rows / 4 * 4).step_by(4) {
        // The 4 rows' scales, each in every lane (int8 only; exact f16 → f32).
        let s: [float32x4_t; 4] = if W == 1 {
            // SAFETY: `i0 + 4 ≤ rows`: the 8 bytes of 4 f16 scales lie inside `sc`.
            let q = f16x4(unsafe { vld1_u16(sc.as_ptr().add(2 * i0).cast()) });
            [
                vdupq_laneq_f32::<0>(q),
                vdupq_laneq_f32::<1>(q),
                vdupq_laneq_f32::<2>(q),
                vdupq_laneq_f32::<3>(q),
            ]
        } else {
            [vdupq_n_f32(1.0); 4]
        };
        // SAFETY (both loops): `i0 + 4 ≤ rows` and `c0 + 8 ≤ c8` (`c0 + 4 ≤ c4`) ≤ cols, so
        // each row's values at `W·((i0 + k)·cols + c0)` lie inside `v` (`W·rows·cols`
        // bytes) and each 4-float run at `(c0 + j)·rows + i0` inside `out`.
        for c0 in (0..c8).step_by(8) {
            let mut r = [[vdupq_n_f32(0.0); 2]; 4];
            for (k, rk) in r.iter_mut().enumerate() {
                *rk = unsafe { load8::<W>(vp.add(W * ((i0 + k) * cols + c0))) };
                if W == 1 {
                    *rk = [vmulq_f32(rk[0], s[k]), vmulq_f32(rk[1], s[k])];
                }
            }
            let halves = [
                [r[0][0], r[1][0], r[2][0], r[3][0]],
                [r[0][1], r[1][1], r[2][1], r[3][1]],
            ];
            for (h, q) in halves.into_iter().enumerate() {
                for (j, t) in transpose4(q).into_iter().enumerate() {
                    unsafe { vst1q_f32(op.add((c0 + 4 * h + j) * rows + i0), t) };
                }
            }
        }
        if c4 > c8 {
            let c0 = c8;
            let mut r = [vdupq_n_f32(0.0); 4];
            for (k, rk) in r.iter_mut().enumerate() {
                *rk = unsafe { load4::<W>(vp.add(W * ((i0 + k) * cols + c0))) };
                if W == 1 {
                    *rk = vmulq_f32(*rk, s[k]);
                }
            }
            for (j, t) in transpose4(r).into_iter().enumerate() {
                unsafe { vst1q_f32(op.add((c0 + j) * rows + i0), t) };
            }
        }
    }
}
