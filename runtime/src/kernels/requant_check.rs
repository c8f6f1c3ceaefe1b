//! The bit-exactness check of the SIMD twins of `quant::requant_table` (the
//! `Kernels::requant_table` slot), shared by the x86_64 and aarch64 tables' unit tests.

/// `table` gives `quant::requant_table`'s triples bit for bit: random scales across many
/// binades, biases from 0 to past the i32 codes, multipliers whose mantissa rounds up to
/// 2^31, halves exactly on the rounding boundary, and the special values (0, −0, negative,
/// subnormal, infinite, NaN scales and biases) that may send a block to the scalar path.
/// `block` is the twin's vector step over `width` (≤ 8) channels, `false` when it left them
/// to the scalar spec: most blocks must take the vector path, or the check proves little.
/// Seed: `LORKD_SEED`.
pub(crate) fn requant_table_is_bit_exact(
    table: crate::kernels::RequantTable,
    width: usize,
    block: impl Fn(&[f32], f32, &[f32], f32, &mut [[i32; 3]]) -> bool,
) {
    assert!((1..=8).contains(&width));
    let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
    let special = [
        0.0,
        -0.0,
        -1.0,
        f32::MIN_POSITIVE / 4.0,
        f32::INFINITY,
        f32::NAN,
        f32::MAX,
        1e-30,
    ];
    let (mut scalar_only, mut blocks) = (0usize, 0usize);
    for case in 0..20_000 {
        let n = 1 + r.next_u64() as usize % 13;
        // A scale in 2^lo .. 2^(lo + span) (lo counted from 2^-30): random mantissa, or
        // all ones (the multiplier then rounds up to 2^31 for some products); rarely a
        // special value.
        let scale = |r: &mut crate::engine::testnet::Rng, lo: u32, span: u64| -> f32 {
            let v = r.next_u64();
            let e = (97 + lo + ((v >> 20) % span) as u32) << 23;
            if v.is_multiple_of(211) {
                special[(v >> 8) as usize % special.len()]
            } else if v.is_multiple_of(13) {
                f32::from_bits(e | 0x7f_ffff)
            } else {
                f32::from_bits(e | (v >> 40) as u32 & 0x7f_ffff)
            }
        };
        // Activation scales 2^-12 .. 2^2, weight scales 2^-16 .. 2^-2.
        let (mut s_x, mut s_y) = (scale(&mut r, 18, 15), scale(&mut r, 18, 15));
        let mut ws: std::vec::Vec<f32> = (0..n).map(|_| scale(&mut r, 14, 15)).collect();
        let pow2 = |v: f32| f32::from_bits(v.to_bits() & 0xff80_0000);
        match case % 4 {
            // Powers of two: the half-step biases below are exact quotients.
            0 => {
                s_x = pow2(s_x);
                ws.iter_mut().for_each(|w| *w = pow2(*w));
            }
            // One weight scale, `s_y` the f32 just above `s_x·s_w`: multipliers a hair
            // under a power of two, some of which round up to 2^31.
            1 => {
                let w = ws[0];
                ws.iter_mut().for_each(|v| *v = w);
                let p = s_x as f64 * w as f64;
                let y = p as f32;
                s_y = if (y as f64) < p {
                    f32::from_bits(y.to_bits() + 1)
                } else {
                    y
                };
            }
            // Multipliers around 2^-31, where the spec gives (0, 0).
            2 => {
                s_x = scale(&mut r, 14, 4);
                s_y = scale(&mut r, 36, 8);
            }
            _ => {}
        }
        let bias: std::vec::Vec<f32> = (0..n)
            .map(|j| {
                let v = r.next_u64();
                let sxw = s_x * ws[j];
                match v % 64 {
                    0 => special[(v >> 8) as usize % special.len()],
                    // Past the i32 codes.
                    1 => ((v >> 8) as f32 / (1u64 << 56) as f32 - 0.5) * 1e10,
                    // A half step exactly (where representable): the rounding boundary.
                    2..=12 => ((v >> 8) % 2001) as f32 - 1000.5,
                    13..=30 => (((v >> 8) % 4001) as f32 - 2000.0 + 0.5) * sxw,
                    _ => ((v >> 8) as f32 / (1u64 << 56) as f32 - 0.5) * 20.0,
                }
            })
            .collect();
        let (mut got, mut want) = (std::vec![[0i32; 3]; n], std::vec![[0i32; 3]; n]);
        table(&bias, s_x, &ws, s_y, &mut got);
        crate::quant::requant_table(&bias, s_x, &ws, s_y, &mut want);
        assert_eq!(
            got, want,
            "case {case}: bias {bias:?} s_x {s_x:e} ws {ws:?} s_y {s_y:e}"
        );
        if n >= width {
            blocks += 1;
            let mut o = [[0i32; 3]; 8];
            if !block(&bias[..width], s_x, &ws[..width], s_y, &mut o[..width]) {
                scalar_only += 1;
            } else {
                assert_eq!(o[..width], want[..width], "case {case}: the vector step");
            }
        }
    }
    // The vector path must carry most blocks, or the check above proves little.
    println!("blocks sent to the scalar path: {scalar_only} of {blocks}");
    assert!(scalar_only * 2 < blocks, "{scalar_only} of {blocks}");
}
