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

/// One output channel's requantisation constants as [`requant2k`] / [`requant1k`] load them
/// (`LDRD` pairs at fixed offsets, inside the `asm!`): prepared once per channel, so a
/// tile's output stage costs its loads, not a rebuild of the constants per call.
/// `mode` 0: a rounding shift `rsh ≥ 1` (`rsh1 = rsh − 1`); 1: none (`rsh = 0`); 2: an
/// exotic channel (`Rq`'s: `mult = MIN` or `lo > 127`), which takes `quant::requant`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
pub(super) struct Kq {
    bias: i32,
    lsh: u32,
    mult: i32,
    rsh1: u32,
    zp: i32,
    lo: i32,
    mode: u32,
    shift: i32,
}

impl Kq {
    #[inline(always)]
    pub(super) fn new(rq: [i32; 3], q: crate::kernels::OutQ) -> Self {
        let [bias, mult, shift] = rq;
        if mult == i32::MIN || q.lo > 127 {
            return Kq {
                bias,
                mult,
                shift,
                zp: q.zero_point,
                lo: q.lo,
                mode: 2,
                ..Kq::default()
            };
        }
        // `fixed::Rq::new`'s shifts: the left one mod 32 (`wrapping_shl`), the right one
        // `−shift` clamped to 0..=31 (MIN wraps, then clamps to 0).
        let (lsh, rsh) = if shift > 0 {
            (shift as u32 & 31, 0)
        } else {
            (0, shift.wrapping_neg().clamp(0, 31) as u32)
        };
        Kq {
            bias,
            lsh,
            mult,
            rsh1: rsh.saturating_sub(1),
            zp: q.zero_point,
            lo: q.lo.max(-128),
            mode: u32::from(rsh == 0),
            shift,
        }
    }

    /// `quant::requant` itself (exotic channels).
    #[inline(never)]
    fn slow(&self, a: i32) -> i8 {
        let q = crate::kernels::OutQ {
            zero_point: self.zp,
            lo: self.lo,
        };
        crate::quant::requant(a, [self.bias, self.mult, self.shift], q)
    }
}

/// The output stage's steps for two outputs of one channel, the constants loaded from `k`
/// by `LDRD` as they are needed: `ADD` bias, `LSL` lsh; `SMLAL` onto `2^30` and `LSR`/`ORR`
/// take bits 31..62 (the doubling high multiply, `mult ≠ MIN`); when `round`, the rounding
/// shift (half away from zero) by `e = rsh1 + 1 ≥ 1` — `lsh` is 0 there, so no `LSL` — as
/// `v' = v − (v < 0)` (`SUB … LSR #31`: `|x·mult| ≤ 2^31·(2^31 − 1)` keeps `v ≥ MIN + 1`,
/// so it cannot wrap), then `⌊(v' + 2^(e−1)) / 2^e⌋ = ((v' >> (e − 1)) >> 1) + carry`
/// (`ASRS #1` leaves the rounding bit in C, `ADC` adds it: no overflow); `QADD` the zero
/// point, `SSAT #8`, and the floor `lo` as a byte max (`SSUB8` sets GE0 from the low bytes,
/// `SEL` picks): 14 instructions an output either way, plus 4 loads a pair.
macro_rules! requant_pair_asm {
    ($k:expr, $a:expr, $b:expr, round) => {
        requant_pair_asm!(@emit $k, $a, $b,
            [
                "ldr {t0}, [{p}]",
                "add {a}, {a}, {t0}",
                "add {b}, {b}, {t0}",
            ],
            [
                "ldr {t2}, [{p}, #12]",
                "sub {a}, {a}, {a}, lsr #31",
                "asr {a}, {a}, {t2}",
                "asrs {a}, {a}, #1",
                "adc {a}, {a}, #0",
                "sub {b}, {b}, {b}, lsr #31",
                "asr {b}, {b}, {t2}",
                "asrs {b}, {b}, #1",
                "adc {b}, {b}, #0",
            ]
        )
    };
    ($k:expr, $a:expr, $b:expr, exact) => {
        requant_pair_asm!(@emit $k, $a, $b,
            [
                "ldrd {t0}, {t1}, [{p}]",
                "add {a}, {a}, {t0}",
                "lsl {a}, {a}, {t1}",
                "add {b}, {b}, {t0}",
                "lsl {b}, {b}, {t1}",
            ],
            []
        )
    };
    (@emit $k:expr, $a:expr, $b:expr, [$($pre:literal,)*], [$($round:literal,)*]) => {{
        let (mut a, mut b) = ($a, $b);
        // SAFETY: `p` points at a live `Kq` (a reference), `repr(C, align(8))`: the loads
        // read its fields at offsets 0..24, 8-aligned as `LDRD` needs, and nothing else; no
        // stores, no stack. Register-only Armv7E-M DSP instructions otherwise; the scratch
        // registers are clobbered outputs; `ASRS`/`ADC`/`SSUB8` change N/Z/C/V/GE and
        // `QADD`/`SSAT` perhaps Q, so `preserves_flags` is not claimed.
        unsafe {
            asm!(
                $($pre,)*
                "ldr {t2}, [{p}, #8]",
                "mov {t0}, #0x40000000",
                "mov {t1}, #0",
                "smlal {t0}, {t1}, {a}, {t2}",
                "lsr {t0}, {t0}, #31",
                "orr {a}, {t0}, {t1}, lsl #1",
                "mov {t0}, #0x40000000",
                "mov {t1}, #0",
                "smlal {t0}, {t1}, {b}, {t2}",
                "lsr {t0}, {t0}, #31",
                "orr {b}, {t0}, {t1}, lsl #1",
                $($round,)*
                "ldrd {t0}, {t1}, [{p}, #16]",
                "qadd {a}, {a}, {t0}",
                "ssat {a}, #8, {a}",
                "ssub8 {t2}, {a}, {t1}",
                "sel {a}, {a}, {t1}",
                "qadd {b}, {b}, {t0}",
                "ssat {b}, #8, {b}",
                "ssub8 {t2}, {b}, {t1}",
                "sel {b}, {b}, {t1}",
                p = in(reg) $k as *const Kq,
                a = inout(reg) a,
                b = inout(reg) b,
                t0 = out(reg) _,
                t1 = out(reg) _,
                t2 = out(reg) _,
                options(pure, readonly, nostack),
            );
        }
        [a as i8, b as i8]
    }};
}

/// `[rq.apply(a), rq.apply(b)]` for the channel of `k` (two pixels of a 2x2 tile).
#[inline(always)]
pub(super) fn requant2k(k: &Kq, a: i32, b: i32) -> [i8; 2] {
    match k.mode {
        0 => requant_pair_asm!(k, a, b, round),
        1 => requant_pair_asm!(k, a, b, exact),
        _ => [k.slow(a), k.slow(b)],
    }
}

/// `rq.apply(a)` for the channel of `k`: [`requant2k`]'s sequence for one output.
#[inline(always)]
pub(super) fn requant1k(k: &Kq, a: i32) -> i8 {
    let mut a = a;
    macro_rules! one {
        ([$($pre:literal,)*], [$($round:literal,)*]) => {
            // SAFETY: as `requant_pair_asm` (the same loads of a live `Kq`, register-only
            // instructions otherwise, flags changed).
            unsafe {
                asm!(
                    $($pre,)*
                    "ldr {t2}, [{p}, #8]",
                    "mov {t0}, #0x40000000",
                    "mov {t1}, #0",
                    "smlal {t0}, {t1}, {a}, {t2}",
                    "lsr {t0}, {t0}, #31",
                    "orr {a}, {t0}, {t1}, lsl #1",
                    $($round,)*
                    "ldrd {t0}, {t1}, [{p}, #16]",
                    "qadd {a}, {a}, {t0}",
                    "ssat {a}, #8, {a}",
                    "ssub8 {t2}, {a}, {t1}",
                    "sel {a}, {a}, {t1}",
                    p = in(reg) k as *const Kq,
                    a = inout(reg) a,
                    t0 = out(reg) _,
                    t1 = out(reg) _,
                    t2 = out(reg) _,
                    options(pure, readonly, nostack),
                )
            }
        };
    }
    match k.mode {
        0 => one!(
            ["ldr {t0}, [{p}]", "add {a}, {a}, {t0}",],
            [
                "ldr {t2}, [{p}, #12]",
                "sub {a}, {a}, {a}, lsr #31",
                "asr {a}, {a}, {t2}",
                "asrs {a}, {a}, #1",
                "adc {a}, {a}, #0",
            ]
        ),
        1 => one!(
            [
                "ldrd {t0}, {t1}, [{p}]",
                "add {a}, {a}, {t0}",
                "lsl {a}, {a}, {t1}",
            ],
            []
        ),
        _ => return k.slow(a),
    }
    a as i8
}
