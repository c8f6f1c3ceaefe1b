//! The department head (`reference::linear::linear_f32`) on the Cortex-M4F/M7 FPU: each
//! output's sum 8 inputs a pass, one `VLDM` of 8 weights and one of 8 inputs, then 8 `VMLA`
//! into the one accumulator (the ARMv7 VFP multiply-accumulate rounds the product, then
//! the sum: `acc + w·x` exactly as the reference's `VMUL` then `VADD`, the same operand
//! order, so the same bits): 12 instructions per 8 terms where the reference spends ~42.
//! The last `len % 8` terms in Rust, in order.
use core::arch::asm;

/// Same contract and bits as `reference::linear::linear_f32` (`((b[o] + w[o,0]·x[0]) +
/// w[o,1]·x[1]) + …`, a product then an add per term, in input order).
pub(crate) fn linear_f32(x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    let n = x.len();
    let (w, bias) = (&w[..y.len() * n], &bias[..y.len()]);
    let blocks = n / 8;
    let k = 8 * blocks;
    for (o, yo) in y.iter_mut().enumerate() {
        let wr = &w[o * n..][..n];
        let mut acc = bias[o];
        if blocks > 0 {
            let bits: u32;
            // SAFETY: `wr` and `x` hold `n ≥ 8·blocks` f32 each (sliced above), 4-aligned as
            // every `&[f32]` (`VLDM` needs it); each pass reads 8 of each and the loop runs
            // `blocks ≥ 1` passes. The clobbered FP registers are declared (flags are
            // clobbered by default); no stack use, nothing written to memory.
            unsafe {
                asm!(
                    "vmov s0, {a}",
                    "2:",
                    "vldmia {pw}!, {{s8-s15}}",
                    "vldmia {px}!, {{s16-s23}}",
                    "vmla.f32 s0, s8, s16",
                    "vmla.f32 s0, s9, s17",
                    "vmla.f32 s0, s10, s18",
                    "vmla.f32 s0, s11, s19",
                    "vmla.f32 s0, s12, s20",
                    "vmla.f32 s0, s13, s21",
                    "vmla.f32 s0, s14, s22",
                    "vmla.f32 s0, s15, s23",
                    "subs {cnt}, {cnt}, #1",
                    "bne 2b",
                    "vmov {a}, s0",
                    a = inout(reg) acc.to_bits() => bits,
                    pw = inout(reg) wr.as_ptr() => _,
                    px = inout(reg) x.as_ptr() => _,
                    cnt = inout(reg) blocks => _,
                    out("s0") _,
                    out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                    out("s12") _, out("s13") _, out("s14") _, out("s15") _,
                    out("s16") _, out("s17") _, out("s18") _, out("s19") _,
                    out("s20") _, out("s21") _, out("s22") _, out("s23") _,
                    options(nostack, readonly),
                );
            }
            acc = f32::from_bits(bits);
        }
        for (&wj, &xj) in wr[k..].iter().zip(&x[k..]) {
            acc += wj * xj;
        }
        *yo = acc;
    }
}
