//! Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): removes every 0x00 from a
//! frame so that 0x00 can delimit frames on the wire. A receiver that joins mid-stream or
//! loses bytes resynchronises at the next 0x00.

/// A COBS decoding failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CobsError {
    /// A code byte points past the end of the frame (the frame was cut short).
    Truncated,
    /// A 0x00 inside the encoded frame.
    ZeroByte,
    /// The output buffer is too small.
    NoSpace,
}

/// Largest encoding of `n` bytes (without the 0x00 delimiter).
pub const fn max_encoded_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Encodes `src` into `dst` (no delimiter); returns the encoded length.
pub fn encode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    if dst.len() < max_encoded_len(src.len()) {
        return Err(CobsError::NoSpace);
    }
    let mut code_at = 0;
    let mut out = 1;
    let mut code = 1u8;
    for (idx, &b) in src.iter().enumerate() {
        if b == 0 {
            dst[code_at] = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            dst[out] = b;
            out += 1;
            code += 1;
            // A full block ends without an implied zero; open the next only if data follows.
            if code == 0xFF && idx + 1 < src.len() {
                dst[code_at] = code;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
    }
    dst[code_at] = code;
    Ok(out)
}

/// Decodes a frame (delimiter removed) in place; returns the decoded length. Decoding never
/// grows the data, so the write position always trails the read position.
pub fn decode_in_place(buf: &mut [u8]) -> Result<usize, CobsError> {
    let n = buf.len();
    let (mut i, mut out) = (0, 0);
    while i < n {
        let code = buf[i];
        if code == 0 {
            return Err(CobsError::ZeroByte);
        }
        i += 1;
        for _ in 1..code {
            if i >= n {
                return Err(CobsError::Truncated);
            }
            let b = buf[i];
            if b == 0 {
                return Err(CobsError::ZeroByte);
            }
            buf[out] = b;
            out += 1;
            i += 1;
        }
        if code != 0xFF && i < n {
            buf[out] = 0;
            out += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(src: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; max_encoded_len(src.len())];
        let n = encode(src, &mut d).unwrap();
        d.truncate(n);
        d
    }

    #[test]
    fn paper_and_wikipedia_examples() {
        assert_eq!(enc(&[0x00]), [0x01, 0x01]);
        assert_eq!(enc(&[0x00, 0x00]), [0x01, 0x01, 0x01]);
        assert_eq!(
            enc(&[0x11, 0x22, 0x00, 0x33]),
            [0x03, 0x11, 0x22, 0x02, 0x33]
        );
        assert_eq!(
            enc(&[0x11, 0x22, 0x33, 0x44]),
            [0x05, 0x11, 0x22, 0x33, 0x44]
        );
        assert_eq!(
            enc(&[0x11, 0x00, 0x00, 0x00]),
            [0x02, 0x11, 0x01, 0x01, 0x01]
        );
        let run: Vec<u8> = (1..=254).collect();
        let e = enc(&run);
        assert_eq!(e.len(), 255);
        assert_eq!(e[0], 0xFF);
        let run255: Vec<u8> = (1..=255).collect();
        let e = enc(&run255);
        assert_eq!(&e[255..], [0x02, 0xFF]);
    }

    #[test]
    fn roundtrip_random() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..300 {
            let n = rng.gen_range(0..1200);
            let zeros = rng.gen_range(0.0..1.0);
            let src: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.gen_bool(zeros) {
                        0
                    } else {
                        rng.gen_range(1..=255)
                    }
                })
                .collect();
            let mut e = enc(&src);
            assert!(!e.contains(&0));
            let m = decode_in_place(&mut e).unwrap();
            assert_eq!(&e[..m], &src[..]);
        }
    }

    #[test]
    fn damaged_frames_are_errors() {
        assert_eq!(
            decode_in_place(&mut [0x05, 0x11, 0x22]),
            Err(CobsError::Truncated)
        );
        assert_eq!(
            decode_in_place(&mut [0x03, 0x11, 0x00]),
            Err(CobsError::ZeroByte)
        );
        assert_eq!(decode_in_place(&mut [0x00]), Err(CobsError::ZeroByte));
        assert_eq!(decode_in_place(&mut []), Ok(0));
        let mut small = [0u8; 2];
        assert_eq!(encode(&[1, 2, 3], &mut small), Err(CobsError::NoSpace));
    }
}
