//! The Armv7E-M DSP instructions the kernels need, as stable `asm!` (the `core::arch::arm`
//! DSP intrinsics are unstable). Each is one instruction on registers only: no memory, no
//! stack, inlined into the caller's loop so LLVM schedules and allocates around it.
pub(super) use crate::kernels::fixed::ShortStage;
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

/// One output channel's requantisation constants as [`requant_run`] / [`requant1k`] read them
/// (`LDRD` pairs at fixed offsets, inside the `asm!`): prepared once per channel, so a
/// tile's output stage costs its loads, not a rebuild of the constants per call.
/// `mode` 0: a rounding shift `rsh ≥ 1` (`rsh1 = rsh − 1`); 1: none (`rsh = 0`); 2: an
/// exotic channel (`Rq`'s: `mult = MIN` or `lo > 127`), which takes `quant::requant`;
/// 3 ([`SHORT`]): the short form ([`short_asm`], where `ShortStage::channel` takes the
/// channel), 4 ([`SHORT_FLOOR`]): the same with a floor `lo > −128`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
pub(super) struct Kq {
    bias: i32,
    mult: i32,
    /// The short form's `zp·2^rsh + 2^(rsh − 1)`: the zero point and the rounding half,
    /// added by the high multiply's accumulate.
    kz: i32,
    rsh: u32,
    zp: i32,
    lo: i32,
    lsh: u32,
    rsh1: u32,
    mode: u32,
    shift: i32,
}

/// [`Kq::mode`] of the short form without a floor (`lo = −128`: `SSAT` is the clamp).
const SHORT: u32 = 3;
/// [`Kq::mode`] of the short form with a floor `lo > −128`.
const SHORT_FLOOR: u32 = 4;

impl Kq {
    /// The constants of `rq` and `q`; `short`: `q`'s short form, for the sums the caller
    /// will hand over.
    #[inline(always)]
    pub(super) fn new(rq: [i32; 3], q: crate::kernels::OutQ, short: &ShortStage) -> Self {
        let [bias, mult, shift] = rq;
        let lo = q.lo.max(-128);
        // The usual channel first, with only the fields its forms read.
        if let Some((kz, rsh)) = short.channel(rq) {
            return Kq {
                bias,
                mult,
                kz,
                rsh,
                lo,
                mode: if lo > -128 { SHORT_FLOOR } else { SHORT },
                ..Kq::default()
            };
        }
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
            mult,
            kz: 0,
            rsh,
            zp: q.zero_point,
            lo,
            lsh,
            rsh1: rsh.saturating_sub(1),
            mode: u32::from(rsh == 0),
            shift,
        }
    }

    /// The short form without a floor ([`short1k`] is exact for this channel).
    #[inline(always)]
    pub(super) fn is_short(&self) -> bool {
        self.mode == SHORT
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

/// The short form of one output's steps as `asm!` template text, from the sum `s = acc + bias`
/// in `{$s}` to the saturated byte in `{$s}`; `mult`, `kz` and `rsh` in `$m`, `$kz`, `$e`;
/// scratch `$t`. Five instructions where the general form took eight (`LSL`, `SMMULR`,
/// [`round_asm`]'s four, `QADD`, `SSAT`). Exact where `ShortStage::channel` takes the
/// channel (`|s| < 2^30`, `mult ≥ 0`, `1 ≤ rsh ≤ 23`, `|zp| ≤ 128`; its host test checks a
/// model of these instructions):
/// - `LSL #1`: `t = 2s`;
/// - `SMMLAR`: `kz + ⌊(t·mult + 2^31) / 2^32⌋ = kz + v`, `v` the doubling high multiply
///   (the accumulate adds `kz·2^32` to the 64-bit sum: no rounding, and no wrap as
///   `|kz·2^32|`, `|t·mult| < 2^62`);
/// - `SUB … LSR #31`: minus `[s < 0]`, the rounding's half-away-from-zero fix-up `−[v < 0]`:
///   `v` has the sign of `s` (`mult ≥ 0`) or is 0, and where `s < 0` and `v = 0` both give
///   `⌊(2^(e−1) − 1 or 2^(e−1)) / 2^e⌋ = 0`;
/// - `ASR rsh`: the rounded value plus the zero point, `kz` being `zp·2^e` (a multiple of
///   `2^e`) plus the rounding half; no wrap for `e ≤ 23` (`|v| ≤ 2^30`,
///   `|kz| ≤ 2^30 − 2^22`);
/// - `SSAT #8`.
#[rustfmt::skip]
macro_rules! short_asm {
    ($s:literal, $m:literal, $kz:literal, $e:literal, $t:literal) => {
        concat!(
            "lsl ", $s, ", ", $s, ", #1\n",
            "smmlar ", $t, ", ", $s, ", ", $m, ", ", $kz, "\n",
            "sub ", $t, ", ", $t, ", ", $s, ", lsr #31\n",
            "asr ", $t, ", ", $t, ", ", $e, "\n",
            "ssat ", $s, ", #8, ", $t,
        )
    };
}
pub(super) use short_asm;

/// The doubling high multiply of the output stage as `asm!` template text, `mult` in operand
/// `$m` (`"{m}"`, `"{t2}"`): `SMLAL` onto `2^30`, then `LSR`/`ORR` take bits 31..62 of the
/// 64-bit sum (`mult ≠ MIN`); scratch `{t0}`, `{t1}`. One home for [`requant_run`] and
/// [`requant1k`].
macro_rules! high_mul_asm {
    ($m:literal) => {
        concat!(
            "mov {t0}, #0x40000000\n",
            "mov {t1}, #0\n",
            "smlal {t0}, {t1}, {a}, ",
            $m,
            "\n",
            "lsr {t0}, {t0}, #31\n",
            "orr {a}, {t0}, {t1}, lsl #1",
        )
    };
}

/// The rounding right shift by `e = sh + 1 ≥ 1` (half away from zero) as `asm!` template
/// text, `sh` in operand `$sh`: `v' = v − (v < 0)` as `SUB … LSR #31` (the high product is
/// at least `MIN + 1`: no wrap), then `⌊(v' + 2^(e−1)) / 2^e⌋ = ((v' >> (e − 1)) >> 1) +
/// carry` (`ASRS #1` leaves the rounding bit in C, `ADC` adds it: no overflow).
macro_rules! round_asm {
    ($sh:literal) => {
        concat!(
            "sub {a}, {a}, {a}, lsr #31\n",
            "asr {a}, {a}, ",
            $sh,
            "\n",
            "asrs {a}, {a}, #1\n",
            "adc {a}, {a}, #0",
        )
    };
}

/// The end of one output's steps as `asm!` template text: `QADD` the zero point, `SSAT #8`,
/// the floor `lo` as a byte max (`SSUB8` sets GE0 from the low bytes, `SEL` picks), `STRB`
/// at `py` and `py += stride`.
macro_rules! clamp_store_asm {
    () => {
        concat!(
            "qadd {a}, {a}, {zp}\n",
            "ssat {a}, #8, {a}\n",
            "ssub8 {t0}, {a}, {lo}\n",
            "sel {a}, {a}, {lo}\n",
            "strb {a}, [{py}]\n",
            "add {py}, {py}, {st}",
        )
    };
}

/// `y[i·stride] = requant(s[i])` for every `i` of a run of one channel's sums, each sum
/// already `acc + bias` (wrapping, as `quant::requant` adds it): one `asm!` loop with the
/// channel's constants in registers. The short forms ([`SHORT`], [`SHORT_FLOOR`]) take
/// [`requant_pairs`]. Otherwise the steps per output: `LSL` lsh (no rounding shift only:
/// with a right shift the left one is 0); the high multiply ([`high_mul_asm`]); with a right
/// shift, the rounding shift ([`round_asm`]); `QADD` the zero point, `SSAT #8`, and the floor
/// `lo` as a byte max (`SSUB8` sets GE0 from the low bytes, `SEL` picks); `STRB`. 18
/// instructions an output with the loop. Exotic channels (mode 2) take `quant::requant`.
#[inline(always)]
pub(super) fn requant_run(k: &Kq, s: &[i32], y: &mut [i8], stride: usize) {
    let len = s.len();
    if len == 0 {
        return;
    }
    assert!((len - 1) * stride < y.len());
    // One loop for the general forms: `$mul` the high multiply (and `LSL` lsh), `$round` the
    // rounding shift.
    macro_rules! run {
        ($sh:expr, $mul:expr, $round:expr) => {
            // SAFETY: the loop runs `len ≥ 1` times; pass `i` loads the word at `s + 4i`
            // (inside `s`) and stores one byte at `y + i·stride` (`(len − 1)·stride <
            // y.len()`, asserted above), so every access is inside the slices; no stack.
            // Register-only Armv7E-M instructions otherwise; pointers, counter and scratch
            // are clobbered outputs; `ASRS`/`ADC`/`SSUB8`/`SUBS` change N/Z/C/V/GE and
            // `QADD`/`SSAT` perhaps Q, so `preserves_flags` is not claimed.
            unsafe {
                asm!(
                    "2:",
                    "ldr {a}, [{ps}], #4",
                    $mul,
                    $round,
                    clamp_store_asm!(),
                    "subs {n}, {n}, #1",
                    "bne 2b",
                    ps = inout(reg) s.as_ptr() => _,
                    py = inout(reg) y.as_mut_ptr() => _,
                    st = in(reg) stride,
                    n = inout(reg) len => _,
                    m = in(reg) k.mult,
                    sh = in(reg) $sh,
                    zp = in(reg) k.zp,
                    lo = in(reg) k.lo,
                    a = out(reg) _,
                    t0 = out(reg) _,
                    t1 = out(reg) _,
                    options(nostack),
                );
            }
        };
    }
    match k.mode {
        SHORT => requant_pairs::<false>(k, s, y, stride),
        SHORT_FLOOR => requant_pairs::<true>(k, s, y, stride),
        0 => run!(k.rsh1, high_mul_asm!("{m}"), round_asm!("{sh}")),
        1 => run!(
            k.lsh,
            concat!("lsl {a}, {a}, {sh}\n", high_mul_asm!("{m}")),
            ""
        ),
        _ => {
            for (i, &v) in s.iter().enumerate() {
                y[i * stride] = k.slow(v.wrapping_sub(k.bias));
            }
        }
    }
}

/// [`requant_run`]'s short forms ([`short_asm`]) two outputs a pass: one `LDRD` of two sums,
/// the second byte stored at `[y, stride]` and one `ADD` of `2·stride` — 8 instructions an
/// output (10 with the floor `FLOOR`: `SSUB8` + `SEL`) —, an odd first output alone.
#[inline(always)]
fn requant_pairs<const FLOOR: bool>(k: &Kq, s: &[i32], y: &mut [i8], stride: usize) {
    let len = s.len();
    assert!(len >= 1 && (len - 1) * stride < y.len());
    macro_rules! pairs {
        ($($floor_a:literal, $floor_b:literal, $lo:ident)?) => {
            // SAFETY: an odd `len` first runs one output: the word at `s`, the byte at `y`.
            // Then the pair loop runs `len / 2` times (not at all for `len = 1`): each pass
            // loads the next two words of `s` (a 4-aligned `&[i32]` as `LDRD` needs) and
            // stores the bytes of the next two outputs at `y + i·stride` and `y + (i +
            // 1)·stride`: with `len` outputs in all, every load is inside `s` and every store
            // at most `(len − 1)·stride < y.len()` (asserted above); no stack. Register-only
            // Armv7E-M instructions otherwise; pointers, counter and scratch are clobbered
            // outputs; the flags (N/Z/C/V/GE) and perhaps Q change, so `preserves_flags` is
            // not claimed. The short form's bounds hold by `Kq::new`'s mode.
            unsafe {
                asm!(
                    "tst {n}, #1",
                    "beq 2f",
                    "ldr {a}, [{ps}], #4",
                    short_asm!("{a}", "{m}", "{kz}", "{e}", "{t0}"),
                    $($floor_a,)?
                    "strb {a}, [{py}]",
                    "add {py}, {py}, {st}",
                    "subs {n}, {n}, #1",
                    "beq 3f",
                    "2:",
                    "ldrd {a}, {b}, [{ps}], #8",
                    short_asm!("{a}", "{m}", "{kz}", "{e}", "{t0}"),
                    $($floor_a,)?
                    short_asm!("{b}", "{m}", "{kz}", "{e}", "{t0}"),
                    $($floor_b,)?
                    "strb {a}, [{py}]",
                    "strb {b}, [{py}, {st}]",
                    "add {py}, {py}, {st}, lsl #1",
                    "subs {n}, {n}, #2",
                    "bne 2b",
                    "3:",
                    ps = inout(reg) s.as_ptr() => _,
                    py = inout(reg) y.as_mut_ptr() => _,
                    st = in(reg) stride,
                    n = inout(reg) len => _,
                    m = in(reg) k.mult,
                    kz = in(reg) k.kz,
                    e = in(reg) k.rsh,
                    $($lo = in(reg) k.lo,)?
                    a = out(reg) _,
                    b = out(reg) _,
                    t0 = out(reg) _,
                    options(nostack),
                );
            }
        };
    }
    if FLOOR {
        pairs!(
            "ssub8 {t0}, {a}, {lo}\nsel {a}, {a}, {lo}",
            "ssub8 {t0}, {b}, {lo}\nsel {b}, {b}, {lo}",
            lo
        );
    } else {
        pairs!();
    }
}

/// [`requant1k`] for a channel in the short form without a floor ([`Kq::is_short`]; any
/// other channel gets a wrong byte, nothing worse): 8 instructions with the loads, no
/// dispatch.
#[inline(always)]
pub(super) fn short1k(k: &Kq, a: i32) -> i8 {
    let mut a = a;
    // SAFETY: `p` points at a live `Kq` (a reference), `repr(C, align(8))`: the loads read
    // its fields at offsets 0..16, 8-aligned as `LDRD` needs, and nothing else; no stores,
    // no stack. Register-only instructions otherwise, flags changed.
    unsafe {
        asm!(
            "ldrd {t0}, {t1}, [{p}]",
            "add {a}, {a}, {t0}",
            "ldrd {t0}, {t2}, [{p}, #8]",
            short_asm!("{a}", "{t1}", "{t0}", "{t2}", "{t1}"),
            p = in(reg) k as *const Kq,
            a = inout(reg) a,
            t0 = out(reg) _,
            t1 = out(reg) _,
            t2 = out(reg) _,
            options(pure, readonly, nostack),
        )
    }
    a as i8
}

/// `quant::requant(acc, row, q)` for a channel in the short form without a floor (a row
/// `[bias, mult, shift]` that `ShortStage::channel` takes, `q.zero_point = zp`, `q.lo =
/// −128`; any other row gets a wrong byte, nothing worse), its constants from the row
/// itself: 11 instructions, where a `Kq` costs ~30 to prepare for one output (lone pixels).
#[inline(always)]
pub(super) fn short_row([bias, mult, shift]: [i32; 3], zp: i32, acc: i32) -> i8 {
    let e = shift.wrapping_neg();
    let kz = (zp << (e & 31)).wrapping_add(1 << (e.wrapping_sub(1) & 31));
    let mut a = acc.wrapping_add(bias);
    // SAFETY: register-only Armv7E-M instructions; no memory, no stack; flags changed.
    unsafe {
        asm!(
            short_asm!("{a}", "{m}", "{kz}", "{e}", "{t}"),
            a = inout(reg) a,
            m = in(reg) mult,
            kz = in(reg) kz,
            e = in(reg) e,
            t = out(reg) _,
            options(pure, nomem, nostack),
        )
    }
    a as i8
}

/// [`short_row`] with the zero point as `zp2 = 2·zp + 1` (once a layer): `kz = zp·2^e +
/// 2^(e−1) = zp2·2^(e−1)` and `e − 1 = !shift`, so the constants cost `MVN`, `LSL` and an
/// `ADD` of 1 (`e`) instead of six instructions and two masks. The same contract: a row that
/// `ShortStage::channel` takes (`e − 1 ∈ 0..=22`, so no shift is by 32 or more), `lo = −128`;
/// any other row gets a wrong byte, nothing worse.
#[inline(always)]
pub(super) fn short_z([bias, mult, shift]: [i32; 3], zp2: i32, acc: i32) -> i8 {
    let mut a = acc.wrapping_add(bias);
    // SAFETY: register-only Armv7E-M instructions; no memory, no stack; flags changed.
    unsafe {
        asm!(
            "mvn {e}, {e}",
            "lsl {kz}, {z2}, {e}",
            "add {e}, {e}, #1",
            short_asm!("{a}", "{m}", "{kz}", "{e}", "{t}"),
            a = inout(reg) a,
            m = in(reg) mult,
            z2 = in(reg) zp2,
            e = inout(reg) shift => _,
            kz = out(reg) _,
            t = out(reg) _,
            options(pure, nomem, nostack),
        )
    }
    a as i8
}

/// `rq.apply(a)` for the channel of `k` (`a` before the bias): [`requant_run`]'s steps, the
/// constants loaded from `k` by `LDRD` as they are needed (`ADD` bias first); the short forms
/// by [`short1k`] (and the floor as a byte max).
#[inline(always)]
pub(super) fn requant1k(k: &Kq, a: i32) -> i8 {
    let mut a = a;
    macro_rules! one {
        ([$($pre:literal,)*], [$($round:expr,)*]) => {
            // SAFETY: `p` points at a live `Kq` (a reference), `repr(C, align(8))`: the loads
            // read its fields at offsets 0..32, 8-aligned as `LDRD` needs, and nothing else;
            // no stores, no stack. Register-only instructions otherwise, flags changed.
            unsafe {
                asm!(
                    $($pre,)*
                    "ldr {t2}, [{p}, #4]",
                    high_mul_asm!("{t2}"),
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
        SHORT => return short1k(k, a),
        // `lo ∈ −127..=127` (`ShortStage` refuses `lo > 127`).
        SHORT_FLOOR => return short1k(k, a).max(k.lo as i8),
        0 => one!(
            ["ldr {t0}, [{p}]", "add {a}, {a}, {t0}",],
            ["ldr {t2}, [{p}, #28]", round_asm!("{t2}"),]
        ),
        1 => one!(
            [
                "ldr {t0}, [{p}]",
                "add {a}, {a}, {t0}",
                "ldr {t1}, [{p}, #24]",
                "lsl {a}, {a}, {t1}",
            ],
            []
        ),
        _ => return k.slow(a),
    }
    a as i8
}

/// `half::f16::from_bits(h).to_f32()` by the FPU's half-precision convert (`VCVTB.F32.F16`,
/// FPv4-SP on the M4F, FPv5 on the M7: the target's `vfp4d16sp` implies `fp16`): exact for
/// every number (subnormal halves are normal floats, FPSCR.FZ only flushes f32 inputs and
/// is clear; AHP clear: IEEE halves); a NaN keeps its sign and payload with the quiet bit set
/// (FPSCR.DN clear, as the firmware leaves it), which is `half`'s software conversion too.
/// The board self-check compares all 65,536 patterns with an integer oracle. One `VMOV` in,
/// the convert, one `VMOV` out, where `half` branches over the classes (~20 instructions).
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let r: u32;
    // SAFETY: register-only VFP instructions (the module's Cortex-M4F/M7 target has the
    // FPU and its half-precision extension); `s0` is declared clobbered (an `sreg` operand
    // would need the double-precision `vfp2` feature); no memory, no stack, no flags (APSR)
    // touched (FPSCR's cumulative exception bits may be set for a signalling NaN, which
    // nothing reads).
    unsafe {
        asm!("vmov s0, {h}", "vcvtb.f32.f16 s0, s0", "vmov {r}, s0",
             h = in(reg) h as u32, r = lateout(reg) r, out("s0") _,
             options(pure, nomem, nostack, preserves_flags))
    };
    f32::from_bits(r)
}
