//! The Armv7E-M DSP instructions the kernels need, as stable `asm!` (the `core::arch::arm`
//! DSP intrinsics are unstable). Each is one instruction on registers only: no memory, no
//! stack, inlined into the caller's loop so LLVM schedules and allocates around it.
use core::arch::asm;

/// `SXTB16`: bytes 0 and 2 of `x`, sign-extended into the two halfwords.
#[inline(always)]
pub(super) fn sxtb16(x: u32) -> u32 {
    let r;
    // SAFETY: a register-only ALU instruction of Armv7E-M (this module is cfg'd on the DSP
    // extension); it reads and writes no memory and leaves the flags alone.
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SXTB16 …, ROR #8`: bytes 1 and 3 of `x`, sign-extended into the two halfwords.
#[inline(always)]
pub(super) fn sxtb16_ror8(x: u32) -> u32 {
    let r;
    // SAFETY: as `sxtb16`.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SXTAB16`: `a + sxtb16(x)` per halfword (wrapping in 16 bits).
#[inline(always)]
pub(super) fn sxtab16(a: u32, x: u32) -> u32 {
    let r;
    // SAFETY: as `sxtb16`.
    unsafe {
        asm!("sxtab16 {r}, {a}, {x}", r = lateout(reg) r, a = in(reg) a, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SXTAB16 …, ROR #8`: `a + sxtb16_ror8(x)` per halfword.
#[inline(always)]
pub(super) fn sxtab16_ror8(a: u32, x: u32) -> u32 {
    let r;
    // SAFETY: as `sxtb16`.
    unsafe {
        asm!("sxtab16 {r}, {a}, {x}, ror #8", r = lateout(reg) r, a = in(reg) a, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SMLAD`: `acc + a.lo·b.lo + a.hi·b.hi` (signed halfwords; the sum wraps like the
/// reference's i32 accumulator and sets only the sticky Q flag, which nothing reads).
#[inline(always)]
pub(super) fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let r;
    // SAFETY: a register-only multiply-accumulate of Armv7E-M; no memory access. It may set
    // APSR.Q, so `preserves_flags` is not claimed.
    unsafe {
        asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
             c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// `SMLABB`: `acc + a.lo·b.lo`.
#[inline(always)]
pub(super) fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
    let r;
    // SAFETY: as `smlad`.
    unsafe {
        asm!("smlabb {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
             c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// `SMLATT`: `acc + a.hi·b.hi`.
#[inline(always)]
pub(super) fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
    let r;
    // SAFETY: as `smlad`.
    unsafe {
        asm!("smlatt {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
             c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// Both halfwords set to `v` (as i16).
#[inline(always)]
pub(super) fn pair(v: i32) -> u32 {
    (v as u16 as u32) * 0x0001_0001
}

/// `rq.apply(a)`: [`requant2`]'s sequence for one output (the depthwise conv's outputs are
/// one per channel and pixel), 17 instructions with the constants in registers.
#[inline(always)]
pub(super) fn requant1(rq: &crate::kernels::fixed::Rq, a: i32) -> i8 {
    let Some([bias, mult, lsh, rsh, mask, zp, lo]) = rq.regs() else {
        return rq.apply(a);
    };
    let mut a = a;
    // SAFETY: as `requant2` (register-only Armv7E-M instructions; flags changed).
    unsafe {
        asm!(
            "add {a}, {a}, {bias}",
            "lsl {a}, {a}, {lsh}",
            "mov {lo_}, #0x40000000",
            "mov {hi_}, #0",
            "smlal {lo_}, {hi_}, {a}, {mult}",
            "lsr {lo_}, {lo_}, #31",
            "orr {a}, {lo_}, {hi_}, lsl #1",
            "and {lo_}, {a}, {mask}",
            "asr {hi_}, {a}, #31",
            "rsb {hi_}, {hi_}, {mask}, lsr #1",
            "asr {a}, {a}, {rsh}",
            "cmp {lo_}, {hi_}",
            "it gt",
            "addgt {a}, {a}, #1",
            "qadd {a}, {a}, {zp}",
            "ssat {a}, #8, {a}",
            "cmp {a}, {lo}",
            "it lt",
            "movlt {a}, {lo}",
            a = inout(reg) a,
            bias = in(reg) bias,
            mult = in(reg) mult,
            lsh = in(reg) lsh,
            rsh = in(reg) rsh,
            mask = in(reg) mask,
            zp = in(reg) zp,
            lo = in(reg) lo,
            lo_ = out(reg) _,
            hi_ = out(reg) _,
            options(pure, nomem, nostack),
        );
    }
    a as i8
}

/// `[rq.apply(a), rq.apply(b)]`: two outputs of one channel (a 2x2 tile's pixel pair) with
/// the channel's constants held in registers across both — `Rq::apply`'s steps as one
/// sequence of 19 instructions an output (LLVM reloaded the constants per output):
/// `ADD` bias, `LSL` lsh; `SMLAL` onto `2^30` and `LSR`/`ORR` take bits 31..62 (the high
/// multiply, `mult ≠ MIN`); `AND` mask, `ASR`/`RSB` the threshold `(mask >> 1) − (v >> 31)`,
/// `ASR` rsh and a conditional `+1` (round half away); `QADD` the zero point (saturating);
/// `SSAT #8` and a conditional move to `lo` (`−128 ≤ lo ≤ 127` for a non-exotic channel).
#[inline(always)]
pub(super) fn requant2(rq: &crate::kernels::fixed::Rq, a: i32, b: i32) -> [i8; 2] {
    let Some([bias, mult, lsh, rsh, mask, zp, lo]) = rq.regs() else {
        return [rq.apply(a), rq.apply(b)];
    };
    let (mut a, mut b) = (a, b);
    // SAFETY: register-only ALU and multiply instructions of Armv7E-M (this module is cfg'd
    // on the DSP extension); no memory, no stack. The scratch registers are declared
    // clobbered outputs; `CMP` and `QADD` change the flags (N/Z/C/V, Q), so
    // `preserves_flags` is not claimed.
    unsafe {
        asm!(
            "add {a}, {a}, {bias}",
            "lsl {a}, {a}, {lsh}",
            "mov {lo_}, #0x40000000",
            "mov {hi_}, #0",
            "smlal {lo_}, {hi_}, {a}, {mult}",
            "lsr {lo_}, {lo_}, #31",
            "orr {a}, {lo_}, {hi_}, lsl #1",
            "and {lo_}, {a}, {mask}",
            "asr {hi_}, {a}, #31",
            "rsb {hi_}, {hi_}, {mask}, lsr #1",
            "asr {a}, {a}, {rsh}",
            "cmp {lo_}, {hi_}",
            "it gt",
            "addgt {a}, {a}, #1",
            "qadd {a}, {a}, {zp}",
            "ssat {a}, #8, {a}",
            "cmp {a}, {lo}",
            "it lt",
            "movlt {a}, {lo}",
            "add {b}, {b}, {bias}",
            "lsl {b}, {b}, {lsh}",
            "mov {lo_}, #0x40000000",
            "mov {hi_}, #0",
            "smlal {lo_}, {hi_}, {b}, {mult}",
            "lsr {lo_}, {lo_}, #31",
            "orr {b}, {lo_}, {hi_}, lsl #1",
            "and {lo_}, {b}, {mask}",
            "asr {hi_}, {b}, #31",
            "rsb {hi_}, {hi_}, {mask}, lsr #1",
            "asr {b}, {b}, {rsh}",
            "cmp {lo_}, {hi_}",
            "it gt",
            "addgt {b}, {b}, #1",
            "qadd {b}, {b}, {zp}",
            "ssat {b}, #8, {b}",
            "cmp {b}, {lo}",
            "it lt",
            "movlt {b}, {lo}",
            a = inout(reg) a,
            b = inout(reg) b,
            bias = in(reg) bias,
            mult = in(reg) mult,
            lsh = in(reg) lsh,
            rsh = in(reg) rsh,
            mask = in(reg) mask,
            zp = in(reg) zp,
            lo = in(reg) lo,
            lo_ = out(reg) _,
            hi_ = out(reg) _,
            options(pure, nomem, nostack),
        );
    }
    [a as i8, b as i8]
}
