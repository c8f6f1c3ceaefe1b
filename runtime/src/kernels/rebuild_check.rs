//! The bit-exactness check of the int8 rebuild slots (`Kernels::rebuild_i8`,
//! `Kernels::rebuild_layer_i8`) against the reference's two passes (`Delta::channel_into`,
//! then `reference::requant_weights`), shared by the kernel tables' unit tests.
use crate::engine::testnet::Rng;
use crate::format::DeltaDType;
use crate::kernels::reference::requant_weights::requant_weights;
use crate::kernels::{RebuildI8, RebuildLayerI8};
use crate::switch::{Delta, Factor};
use std::vec::Vec;

/// One random expert conv: `A [rank·k, cin·k]`, `B [cout·k, rank·k]` (f32, or encoded as
/// `dt`), `W0q` and its per-channel scales.
pub(crate) struct Conv {
    pub(crate) cout: usize,
    pub(crate) cin: usize,
    pub(crate) k: usize,
    pub(crate) rank: usize,
    dt: DeltaDType,
    a: Vec<f32>,
    b: Vec<f32>,
    /// `a`, `b` encoded as `dt` (when not f32).
    enc: (Vec<u8>, Vec<u8>),
    pub(crate) w0: Vec<i8>,
    pub(crate) s0: Vec<f32>,
}

impl Conv {
    /// Case `case`'s family: row widths around the 4- and 8-lane blocks (every multiple of 8
    /// up to 96, then 192, and 1..40; stems of 1..5 inputs), `k` 1 or 3, ranks 1..9 (4 half the time), values
    /// - on a dyadic grid with one weight of each channel at exactly `max|w|`, so that
    ///   `s` is a power of two, the sums are exact and `w·(1/s)` lands on many halves (the
    ///   rounding's ties),
    /// - of random magnitudes from 1e-30 to 1e30 with exact and negative zeros, NaN and
    ///   infinite entries,
    /// - or an all-zero delta;
    ///
    /// zero `W0` channels, `s0` from 0 up; every 16th case with f16 factors (the fallback).
    pub(crate) fn draw(r: &mut Rng, case: usize) -> Self {
        let k = [1, 1, 3][case % 3];
        let cin = match case % 4 {
            0 => 8 * (1 + (case / 4) % 12),
            1 if case % 20 == 1 => 192,
            // Stems: rows of `Cin·k ≤ 16` (the x86 table's `kxk_rows`).
            2 if k > 1 => 1 + r.below(5),
            _ => 1 + r.below(40),
        };
        let rank = if case.is_multiple_of(2) {
            4
        } else {
            1 + r.below(9)
        };
        let cout = 1 + r.below(9);
        let (rk, ck, n) = (rank * k, cin * k, cin * k * k);
        let family = case % 5;
        let zeros = [2u64, 3, 50, 1000][case % 4];
        let scale = [1e-30f32, 1e-3, 0.05, 1.0, 1e30][(case / 5) % 5];
        let val = |r: &mut Rng| -> f32 {
            let v = r.next_u64();
            match family {
                // Halves: products are multiples of 1/4.
                0 => (v % 5) as f32 * 0.5 - 1.0,
                4 => 0.0,
                _ => match v % zeros {
                    0 => 0.0,
                    1 => -0.0,
                    _ if v.is_multiple_of(997) && family == 3 => {
                        [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][(v >> 20) as usize % 3]
                    }
                    _ => ((v >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale,
                },
            }
        };
        let mut a: Vec<f32> = (0..rk * ck).map(|_| val(r)).collect();
        let b: Vec<f32> = (0..cout * k * rk).map(|_| val(r)).collect();
        let mut w0: Vec<i8> = (0..cout * n)
            .map(|i| {
                let q = r.next_u64() as i8;
                match family {
                    _ if (i / n) % 3 == 2 => 0,
                    0 => q / 4,
                    _ => q,
                }
            })
            .collect();
        let mut s0: Vec<f32> = (0..cout)
            .map(|o| [0.0, 1e-4, 0.01, 3.0][(o + case) % 4] * (1 + o) as f32)
            .collect();
        if family == 0 {
            // Column `c` of `A` zero: `ΔW` is 0 at `r·ck + c`; there `W0q = ±127` with
            // `s0 = ½` gives `|w| = 63.5`, above every other `|ΔW + s0·q| ≤ 27 + 16`.
            let c = r.below(ck);
            for j in 0..rk {
                a[j * ck + c] = 0.0;
            }
            for (o, s) in s0.iter_mut().enumerate() {
                *s = 0.5;
                let at = o * n + r.below(k) * ck + c;
                w0[at] = if r.next_u64().is_multiple_of(2) {
                    127
                } else {
                    -127
                };
            }
        }
        let dt = if case % 16 == 15 {
            DeltaDType::F16
        } else {
            DeltaDType::F32
        };
        let enc = match dt {
            DeltaDType::F32 => (Vec::new(), Vec::new()),
            _ => (
                crate::format::factor::encode(&a, rk, ck, dt).unwrap(),
                crate::format::factor::encode(&b, cout * k, rk, dt).unwrap(),
            ),
        };
        Conv {
            cout,
            cin,
            k,
            rank,
            dt,
            a,
            b,
            enc,
            w0,
            s0,
        }
    }

    /// The factors as the switch sees them.
    pub(crate) fn delta(&self) -> Delta<'_> {
        let (rk, ck) = (self.rank * self.k, self.cin * self.k);
        let (a, b): (&[u8], &[u8]) = match self.dt {
            DeltaDType::F32 => (bytemuck::cast_slice(&self.a), bytemuck::cast_slice(&self.b)),
            _ => (&self.enc.0, &self.enc.1),
        };
        Delta {
            a: Factor::from_bytes(a, self.dt, rk, ck).unwrap(),
            b: Factor::from_bytes(b, self.dt, self.cout * self.k, rk).unwrap(),
            cout: self.cout,
            cin: self.cin,
            k: self.k,
        }
    }

    /// The reference's codes and scales of every channel.
    pub(crate) fn want(&self) -> (Vec<i8>, Vec<f32>) {
        let d = self.delta();
        let n = d.channel_len();
        let (mut q, mut s) = (std::vec![0i8; self.cout * n], std::vec![0f32; self.cout]);
        let mut w = std::vec![0f32; n];
        for o in 0..self.cout {
            d.channel_into(o, &mut w);
            s[o] = requant_weights(
                &mut w,
                &self.w0[o * n..][..n],
                self.s0[o],
                &mut q[o * n..][..n],
            );
        }
        (q, s)
    }
}

/// `rebuild` (and `layer`, where it takes the shape) give the reference's codes and scale
/// bits on `cases` random convs ([`Conv::draw`]), `rebuild` from a scratch row full of
/// NaNs and `layer` writing nothing when it declines. `Err` names the first case that
/// differs (a test asserts `Ok`; the checker's own test feeds it wrong kernels); `Ok` holds
/// the channels checked and those the whole-expert slot took. Seed: `LORKD_SEED`.
pub(crate) fn rebuild_is_bit_exact(
    rebuild: RebuildI8,
    layer: Option<RebuildLayerI8>,
    cases: usize,
) -> Result<(usize, usize), std::string::String> {
    let mut r = Rng::new(crate::test_seed());
    let (mut channels, mut whole) = (0, 0);
    for case in 0..cases {
        let c = Conv::draw(&mut r, case);
        let d = c.delta();
        let n = d.channel_len();
        let (want, want_s) = c.want();
        let at = |what: &str| {
            std::format!(
                "{what}, case {case}: cout {} cin {} k {} rank {} {:?}",
                c.cout,
                c.cin,
                c.k,
                c.rank,
                c.dt
            )
        };
        let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut scratch = std::vec![f32::NAN; n];
        let (mut got, mut got_s) = (std::vec![0i8; c.cout * n], std::vec![0f32; c.cout]);
        for o in 0..c.cout {
            scratch.fill(f32::NAN);
            let out = &mut got[o * n..][..n];
            got_s[o] = rebuild(&d, o, &c.w0[o * n..][..n], c.s0[o], &mut scratch, out);
        }
        channels += c.cout;
        if got != want || bits(&got_s) != bits(&want_s) {
            return Err(at("rebuild_i8"));
        }
        if let Some(f) = layer {
            let (mut got, mut got_s) = (std::vec![55i8; c.cout * n], std::vec![5.5f32; c.cout]);
            if f(&d, &c.w0, &c.s0, &mut got, &mut got_s) {
                whole += c.cout;
                if got != want || bits(&got_s) != bits(&want_s) {
                    return Err(at("rebuild_layer_i8"));
                }
            } else if got.iter().any(|&v| v != 55) || got_s.iter().any(|&v| v != 5.5) {
                return Err(at("rebuild_layer_i8 declined but wrote"));
            }
        }
    }
    Ok((channels, whole))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_weight;

    /// `Delta::channel_into_i8`, `+ s0·q`, then `round` of `w · (1/s)`: the reference with
    /// the rounding swapped.
    fn with_rounding(
        d: &Delta<'_>,
        o: usize,
        w0: &[i8],
        s0: f32,
        w: &mut [f32],
        out: &mut [i8],
        round: fn(f32) -> i8,
    ) -> f32 {
        let n = d.channel_len();
        d.channel_into_i8(o, w);
        let mut amax = 0f32;
        for (v, &q) in w[..n].iter_mut().zip(w0) {
            *v += s0 * q as f32;
            amax = amax.max(v.abs());
        }
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        for (q, &v) in out[..n].iter_mut().zip(&w[..n]) {
            *q = round(v * (1.0 / s));
        }
        s
    }

    fn reference(
        d: &Delta<'_>,
        o: usize,
        w0: &[i8],
        s0: f32,
        w: &mut [f32],
        out: &mut [i8],
    ) -> f32 {
        with_rounding(d, o, w0, s0, w, out, quantize_weight)
    }

    fn ties_even(
        d: &Delta<'_>,
        o: usize,
        w0: &[i8],
        s0: f32,
        w: &mut [f32],
        out: &mut [i8],
    ) -> f32 {
        with_rounding(d, o, w0, s0, w, out, |t| {
            t.round_ties_even().clamp(-127.0, 127.0) as i8
        })
    }

    /// The reference without the last rank row's term.
    fn dropped_term(
        d: &Delta<'_>,
        o: usize,
        w0: &[i8],
        s0: f32,
        w: &mut [f32],
        out: &mut [i8],
    ) -> f32 {
        let mut e = *d;
        let rk = d.a.rows;
        if rk < 2 || d.k != 1 {
            return reference(d, o, w0, s0, w, out);
        }
        let (Some(a), Some(b)) = (d.a.as_f32(), d.b.as_f32()) else {
            return reference(d, o, w0, s0, w, out);
        };
        let a2 = &a[..(rk - 1) * d.a.cols];
        let b2: Vec<f32> = b
            .chunks(rk)
            .flat_map(|r| r[..rk - 1].iter().copied())
            .collect();
        e.a = Factor::from_bytes(bytemuck::cast_slice(a2), DeltaDType::F32, rk - 1, d.a.cols)
            .unwrap();
        e.b = Factor::from_bytes(bytemuck::cast_slice(&b2), DeltaDType::F32, d.b.rows, rk - 1)
            .unwrap();
        reference(&e, o, w0, s0, w, out)
    }

    /// The checker passes the reference (rebuilt from its parts) and fails a rounding to
    /// even at ties and a rebuild that drops one rank term. Seed: `LORKD_SEED`.
    #[test]
    fn rebuild_check_catches_wrong_kernels() {
        let (channels, _) = rebuild_is_bit_exact(reference, None, 300).unwrap();
        assert!(channels > 1000);
        assert!(rebuild_is_bit_exact(ties_even, None, 300).is_err());
        assert!(rebuild_is_bit_exact(dropped_term, None, 300).is_err());
    }

    /// Every kernel table's rebuild slots (the reference's `None`s as `materialize_i8_with`
    /// runs them) give the reference's bytes. Seed: `LORKD_SEED`.
    #[test]
    fn every_table_rebuilds_the_reference_bytes() {
        for t in crate::kernels::Kernels::available().into_iter().flatten() {
            if let Some(f) = t.rebuild_i8 {
                rebuild_is_bit_exact(f, t.rebuild_layer_i8, 400)
                    .unwrap_or_else(|e| panic!("{}: {e}", t.isa));
            }
        }
    }
}
