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
