//! [`Op`]'s and [`DeltaRef`]'s postcard encodings read by hand: the engine walks the op list
//! at every inference and twice per department switch (looking up each rebuilt expert's
//! `DeltaRef` on the way), and serde's generic path took ~23 ns per op (1.7 µs a walk of a
//! 74-op ShuffleNetV2 0.5x, about 4 % of its inference at 32 px). Postcard stays
//! the format's authority: `Bundle::parse` validates every list with it, and the tests
//! check this reader against it on random ops and random bytes (same item, same rest, or
//! both refusing).
//!
//! The wire form (postcard 1.x): the variant index as a varint `u32`, then the fields in
//! order — `u8` as a byte, `bool` as a byte 0 or 1, `u16`/`u32` as LEB128 varints of at
//! most 3/5 bytes (the last byte bounded so the value fits), `Option` as a byte 0 (`None`)
//! or 1 followed by the value.
use super::manifest::{DeltaRef, Op, Slice, TensorRef};

/// A cursor over the bytes left.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A varint of at most `MAX` bytes whose last byte is at most `LAST` (postcard's
    /// `try_take_varint_u16`/`_u32`).
    #[inline(always)]
    fn varint<const MAX: usize, const LAST: u8>(&mut self) -> Option<u32> {
        // Most fields are below 128: one byte.
        if let Some((&b, rest)) = self.0.split_first() {
            if b < 0x80 {
                self.0 = rest;
                return Some(u32::from(b));
            }
        }
        let mut out = 0u32;
        for i in 0..MAX {
            let b = self.byte()?;
            out |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < MAX || b <= LAST).then_some(out);
            }
        }
        None
    }

    #[inline(always)]
    fn u16(&mut self) -> Option<u16> {
        // 16 bits: 3 bytes, 2 bits in the last.
        self.varint::<3, 0x03>().map(|v| v as u16)
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        // 32 bits: 5 bytes, 4 bits in the last.
        self.varint::<5, 0x0f>()
    }

    #[inline(always)]
    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    #[inline(always)]
    fn slice(&mut self) -> Option<Slice> {
        Some(Slice {
            value: self.u16()?,
            c_off: self.u16()?,
            c_len: self.u16()?,
        })
    }

    #[inline(always)]
    fn tensor(&mut self) -> Option<TensorRef> {
        Some(TensorRef {
            offset: self.u32()?,
            len: self.u32()?,
        })
    }
}

/// One [`Op`] from the front of `bytes` and the bytes after it, as
/// `postcard::take_from_bytes::<Op>` gives them; `None` where postcard refuses.
pub(crate) fn take_op(bytes: &[u8]) -> Option<(Op, &[u8])> {
    let mut r = Rd(bytes);
    let op = match r.u32()? {
        0 => Op::Conv {
            input: r.slice()?,
            output: r.u16()?,
            cout: r.u16()?,
            k: r.byte()?,
            stride: r.byte()?,
            pad: r.byte()?,
            relu: r.bool()?,
            weight: r.tensor()?,
            bias: r.tensor()?,
            wscale: r.tensor()?,
            expert: match r.byte()? {
                0 => None,
                1 => Some(r.u16()?),
                _ => return None,
            },
        },
        1 => Op::DwConv {
            input: r.slice()?,
            output: r.u16()?,
            stride: r.byte()?,
            relu: r.bool()?,
            weight: r.tensor()?,
            bias: r.tensor()?,
            wscale: r.tensor()?,
        },
        2 => Op::MaxPool {
            input: r.u16()?,
            output: r.u16()?,
        },
        3 => Op::ConcatShuffle {
            a: r.slice()?,
            b: r.slice()?,
            output: r.u16()?,
        },
        4 => Op::PoolHead { input: r.u16()? },
        _ => return None,
    };
    Some((op, r.0))
}

/// One [`DeltaRef`] (two tensors) from the front of `bytes`, as postcard gives it: the
/// switch looks up every rebuilt expert's factors in the department's list.
pub(crate) fn take_delta_ref(bytes: &[u8]) -> Option<(DeltaRef, &[u8])> {
    let mut r = Rd(bytes);
    let d = DeltaRef {
        a: r.tensor()?,
        b: r.tensor()?,
    };
    Some((d, r.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testnet::Rng;

    /// A `u16` of one, two or three varint bytes.
    fn any_u16(r: &mut Rng) -> u16 {
        match r.next_u64() % 4 {
            0 => (r.next_u64() % 128) as u16,
            1 => (r.next_u64() % 16384) as u16,
            _ => r.next_u64() as u16,
        }
    }

    fn any_slice(r: &mut Rng) -> Slice {
        Slice {
            value: any_u16(r),
            c_off: any_u16(r),
            c_len: any_u16(r),
        }
    }

    /// A `u32` of any varint length.
    fn any_u32(r: &mut Rng) -> u32 {
        (r.next_u64() >> (r.next_u64() % 64)) as u32
    }

    fn any_tensor(r: &mut Rng) -> TensorRef {
        TensorRef {
            offset: any_u32(r),
            len: any_u32(r),
        }
    }

    fn any_op(r: &mut Rng) -> Op {
        match r.next_u64() % 5 {
            0 => Op::Conv {
                input: any_slice(r),
                output: any_u16(r),
                cout: any_u16(r),
                k: r.next_u64() as u8,
                stride: r.next_u64() as u8,
                pad: r.next_u64() as u8,
                relu: r.next_u64().is_multiple_of(2),
                weight: any_tensor(r),
                bias: any_tensor(r),
                wscale: any_tensor(r),
                expert: r.next_u64().is_multiple_of(2).then(|| any_u16(r)),
            },
            1 => Op::DwConv {
                input: any_slice(r),
                output: any_u16(r),
                stride: r.next_u64() as u8,
                relu: r.next_u64().is_multiple_of(2),
                weight: any_tensor(r),
                bias: any_tensor(r),
                wscale: any_tensor(r),
            },
            2 => Op::MaxPool {
                input: any_u16(r),
                output: any_u16(r),
            },
            3 => Op::ConcatShuffle {
                a: any_slice(r),
                b: any_slice(r),
                output: any_u16(r),
            },
            _ => Op::PoolHead { input: any_u16(r) },
        }
    }

    /// The hand reader and postcard agree: on the encodings of random ops (followed by
    /// random bytes), and on those encodings with a byte changed, cut short, or replaced
    /// by random bytes — the same op and rest, or both refusing. Seed: `LORKD_SEED`.
    #[test]
    fn take_op_is_postcard() {
        let mut r = Rng::new(crate::test_seed());
        let (mut ok, mut refused) = (0, 0);
        for case in 0..200_000 {
            let mut b = postcard::to_allocvec(&any_op(&mut r)).unwrap();
            let n = b.len();
            match case % 4 {
                0 => {}
                1 => {
                    let i = r.next_u64() as usize % n;
                    b[i] = r.next_u64() as u8;
                }
                2 => b.truncate(r.next_u64() as usize % n),
                _ => b.iter_mut().for_each(|v| {
                    *v =
                        (r.next_u64() % 6) as u8 | (0x80 * u8::from(r.next_u64().is_multiple_of(3)))
                }),
            }
            b.extend((0..r.next_u64() % 4).map(|_| r.next_u64() as u8));
            let want = postcard::take_from_bytes::<Op>(&b).ok();
            assert_eq!(take_op(&b), want, "case {case}: {b:02x?}");
            match want {
                Some(_) => ok += 1,
                None => refused += 1,
            }
        }
        assert!(ok > 80_000 && refused > 20_000, "{ok} / {refused}");
    }

    /// [`take_delta_ref`] and postcard agree as in [`take_op_is_postcard`]: random refs,
    /// a byte changed, cut short, random bytes. Seed: `LORKD_SEED`.
    #[test]
    fn take_delta_ref_is_postcard() {
        let mut r = Rng::new(crate::test_seed());
        let (mut ok, mut refused) = (0, 0);
        for case in 0..100_000 {
            let d = DeltaRef {
                a: any_tensor(&mut r),
                b: any_tensor(&mut r),
            };
            let mut b = postcard::to_allocvec(&d).unwrap();
            let n = b.len();
            match case % 4 {
                0 => {}
                1 => b[r.next_u64() as usize % n] = r.next_u64() as u8,
                2 => b.truncate(r.next_u64() as usize % n),
                _ => b.iter_mut().for_each(|v| *v = r.next_u64() as u8),
            }
            b.extend((0..r.next_u64() % 4).map(|_| r.next_u64() as u8));
            let want = postcard::take_from_bytes::<DeltaRef>(&b).ok();
            assert_eq!(take_delta_ref(&b), want, "case {case}: {b:02x?}");
            match want {
                Some(_) => ok += 1,
                None => refused += 1,
            }
        }
        assert!(ok > 40_000 && refused > 10_000, "{ok} / {refused}");
    }
}
