//! Untrusted bytes: ≥ 10 000 seeded mutations of valid bundles must give `Ok` or `Err`,
//! never a panic or a hang; what `parse` accepts must run blind in the engine. Plus named
//! rejection cases, one per validation phase.
//!
//! Most raw mutations die at a hash check, so half of them are "resealed": the mutated
//! manifest / table / blobs are reassembled with fresh hashes and base id, which drives the
//! structural validators themselves.
mod common;
use common::bundle::{reseal_with, seed_bundles, split, Parts};
use common::seed;

use lorkd_runtime::engine::testnet::{NetSpec, Rng, TestNet};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::header::{DeltaHeader, DELTA_HEADER_LEN, HEADER_LEN};
use lorkd_runtime::format::write::{write_blob, write_bundle};
use lorkd_runtime::format::*;
use lorkd_runtime::AlignedBytes;

fn bundles(seed: u64) -> Vec<Vec<u8>> {
    seed_bundles(NetSpec::small(), |_| seed)
}

/// Re-hashes everything and rebinds every blob to the (possibly changed) base id; None when
/// a blob no longer decodes.
fn reseal(p: &Parts) -> Option<Vec<u8>> {
    reseal_with(p, true)
}

fn interesting(rng: &mut Rng, len: usize) -> u32 {
    match rng.below(8) {
        0 => 0,
        1 => 1,
        2 => u32::MAX,
        3 => len as u32,
        4 => (len as u32).wrapping_add(1),
        5 => (len as u32).wrapping_sub(1),
        6 => 1 << rng.below(32),
        _ => rng.next_u64() as u32,
    }
}

fn flip(rng: &mut Rng, b: &mut [u8]) {
    if b.is_empty() {
        return;
    }
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(b.len());
        b[i] ^= 1 << rng.below(8);
    }
}

fn overwrite(rng: &mut Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        return;
    }
    match rng.below(3) {
        0 => {
            let i = rng.below(b.len());
            b[i] = [0, 0x7F, 0x80, 0xFF][rng.below(4)];
        }
        1 => {
            let i = rng.below(b.len());
            let v = interesting(rng, b.len()).to_le_bytes();
            for (j, x) in v.iter().enumerate() {
                if let Some(y) = b.get_mut(i + j) {
                    *y = *x;
                }
            }
        }
        _ => {
            let n = rng.below(b.len());
            b.truncate(n);
        }
    }
}

/// One mutation of `orig`.
fn mutate(rng: &mut Rng, orig: &[u8]) -> Vec<u8> {
    let mut b = orig.to_vec();
    match rng.below(10) {
        0 => flip(rng, &mut b),
        1 => b.truncate(rng.below(b.len())),
        2 => {
            // A header offset / length / count field.
            let off = 16 + 4 * rng.below(10);
            let v = interesting(rng, orig.len()).to_le_bytes();
            b[off..off + 4].copy_from_slice(&v);
        }
        3 => overwrite(rng, &mut b),
        _ => {
            // Structural: mutate one part, then reseal.
            let Some(mut p) = split(orig) else { return b };
            match rng.below(5) {
                0 | 1 => {
                    if rng.below(2) == 0 {
                        flip(rng, &mut p.manifest)
                    } else {
                        overwrite(rng, &mut p.manifest)
                    }
                }
                2 => flip(rng, &mut p.shared),
                _ => {
                    let i = rng.below(p.blobs.len());
                    let blob = &mut p.blobs[i].1;
                    // Target the blob's manifest most of the time.
                    let mlen = DeltaHeader::decode(blob)
                        .map(|h| h.manifest_len as usize)
                        .unwrap_or(0);
                    if mlen > 0 && rng.below(3) > 0 {
                        let mut m = blob[DELTA_HEADER_LEN..DELTA_HEADER_LEN + mlen].to_vec();
                        flip(rng, &mut m);
                        blob[DELTA_HEADER_LEN..DELTA_HEADER_LEN + mlen].copy_from_slice(&m);
                    } else {
                        let from = DELTA_HEADER_LEN.min(blob.len());
                        flip(rng, &mut blob[from..]);
                    }
                }
            }
            return reseal(&p).unwrap_or(b);
        }
    }
    b
}

/// What parse accepted must run without any check failing loudly (no panic).
fn exercise(bytes: &[u8]) {
    let aligned = AlignedBytes::new(bytes);
    let Ok(b) = Bundle::parse(aligned.as_slice()) else {
        return;
    };
    let m = b.manifest();
    assert_eq!(m.values.iter().count(), m.values.len());
    assert_eq!(m.ops.iter().count(), m.ops.len());
    let size = m.input.size as usize;
    let input = vec![0.25f32; m.input.channels as usize * size * size];
    for mode in [Mode::Materialized, Mode::Streaming] {
        let mut arena = AlignedBytes::zeroed(b.arena_bytes(mode));
        let Ok(mut e) = Engine::new(&b, arena.as_mut_slice(), mode) else {
            continue;
        };
        for i in 0..b.department_count() {
            let d = b.department(i).expect("validated department decodes");
            let mut logits = vec![0f32; d.classes()];
            if e.select(i).is_ok() {
                let _ = e.infer(&input, &mut logits);
            }
        }
    }
}

#[test]
fn ten_thousand_mutations_give_ok_or_err() {
    let s = seed();
    let originals = bundles(s);
    for o in &originals {
        assert!(Bundle::parse(o).is_ok());
        assert!(
            Bundle::parse(&reseal(&split(o).unwrap()).unwrap()).is_ok(),
            "reseal of a valid bundle"
        );
    }
    let mut rng = Rng::new(s);
    let (mut ok, mut n) = (0usize, 0usize);
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    while n < 10_000 {
        let o = &originals[n % originals.len()];
        let m = mutate(&mut rng, o);
        match Bundle::parse(&m) {
            Ok(_) => {
                ok += 1;
                exercise(&m);
            }
            Err(e) => *kinds.entry(format!("{e:?}")).or_default() += 1,
        }
        n += 1;
    }
    println!("{n} mutations: {ok} still valid; errors by phase: {kinds:?}");
    // The structural validators were reached, not only the hashes.
    assert!(kinds.len() >= 8, "too few distinct error phases: {kinds:?}");
}

// ---------------------------------------------------------------------------------------
// Named rejection cases.

fn small() -> Vec<u8> {
    TestNet::random(NetSpec::small(), 3).bundle_f32()
}

fn with_manifest<'a>(bytes: &[u8], f: impl FnOnce(&mut Manifest<'a>)) -> Vec<u8> {
    let p = split(bytes).unwrap();
    let mb: &'static [u8] = Box::leak(p.manifest.clone().into_boxed_slice());
    let (mut m, _) = postcard::take_from_bytes::<Manifest<'a>>(mb).unwrap();
    f(&mut m);
    let q = Parts {
        manifest: postcard::to_allocvec(&m).unwrap(),
        shared: p.shared.clone(),
        blobs: p.blobs.clone(),
    };
    reseal(&q).unwrap()
}

#[test]
fn rejects_header_problems() {
    let b = small();
    assert_eq!(
        Bundle::parse(&b[..100]).unwrap_err(),
        FormatError::HeaderTruncated
    );
    let mut x = b.clone();
    x[0] = b'X';
    assert_eq!(Bundle::parse(&x).unwrap_err(), FormatError::HeaderBadMagic);
    let mut x = b.clone();
    x[8] = 2;
    assert_eq!(
        Bundle::parse(&x).unwrap_err(),
        FormatError::HeaderUnsupportedVersion
    );
    let mut x = b.clone();
    x[10] = 4;
    assert_eq!(Bundle::parse(&x).unwrap_err(), FormatError::HeaderBadField);
    assert_eq!(
        Bundle::parse(&b[..b.len() - 1]).unwrap_err(),
        FormatError::HeaderBadLength
    );
    let mut x = b.clone();
    let last = x.len() - 1;
    x[last] ^= 1;
    assert_eq!(
        Bundle::parse(&x).unwrap_err(),
        FormatError::FileHashMismatch
    );
    let mut x = b.clone();
    x[HEADER_LEN] ^= 1; // manifest byte, whole-file hash recomputed
    let h = lorkd_runtime::format::view::file_hash(&x);
    x[192..224].copy_from_slice(&h);
    assert_eq!(
        Bundle::parse(&x).unwrap_err(),
        FormatError::SectionHashMismatch
    );
}

#[test]
fn rejects_arena_plans_that_do_not_fit() {
    let b = small();
    let x = with_manifest(&b, |m| m.arena.materialized_bytes -= 1);
    assert_eq!(Bundle::parse(&x).unwrap_err(), FormatError::ArenaTooSmall);
    let x = with_manifest(&b, |m| m.arena.activation_bytes = 16);
    assert_eq!(Bundle::parse(&x).unwrap_err(), FormatError::ManifestValue);
}

#[test]
fn rejects_live_values_sharing_bytes() {
    // Put every value at offset 0: an op's output then overlaps its input.
    let b = small();
    let p = split(&b).unwrap();
    let (m, _) = postcard::take_from_bytes::<Manifest<'_>>(&p.manifest).unwrap();
    let vals: Vec<ValueDesc> = m
        .values
        .iter()
        .map(|v| ValueDesc { offset: 0, ..v })
        .collect();
    let (n, enc) = write::encode_seq(&vals).unwrap();
    let x = with_manifest(&b, |m| m.values = Seq::from_encoded(n, &enc));
    assert_eq!(Bundle::parse(&x).unwrap_err(), FormatError::ArenaOverlap);
}

#[test]
fn rejects_inconsistent_shapes_and_refs() {
    let b = small();
    let p = split(&b).unwrap();
    let (m, _) = postcard::take_from_bytes::<Manifest<'_>>(&p.manifest).unwrap();
    let ops: Vec<Op> = m.ops.iter().collect();
    let edit = |f: &dyn Fn(&mut Vec<Op>)| {
        let mut o = ops.clone();
        f(&mut o);
        let (n, enc) = write::encode_seq(&o).unwrap();
        Bundle::parse(&with_manifest(&b, |m| m.ops = Seq::from_encoded(n, &enc))).unwrap_err()
    };
    assert_eq!(
        edit(&|o| if let Op::Conv { stride, .. } = &mut o[0] {
            *stride = 1
        }),
        FormatError::ManifestShape
    );
    assert_eq!(
        edit(&|o| if let Op::Conv { weight, .. } = &mut o[0] {
            weight.len -= 4
        }),
        FormatError::TensorBounds
    );
    assert_eq!(
        edit(&|o| if let Op::Conv { weight, .. } = &mut o[0] {
            weight.offset += 4
        }),
        FormatError::TensorBounds
    );
    assert_eq!(
        edit(&|o| if let Op::Conv { input, .. } = &mut o[0] {
            input.c_len += 1
        }),
        FormatError::ManifestIndex
    );
    assert_eq!(edit(&|o| o.swap(0, 1)), FormatError::ManifestIndex);
    assert_eq!(
        edit(&|o| {
            o.pop();
        }),
        FormatError::ManifestHead
    );
    assert_eq!(
        edit(&|o| if let Op::Conv { expert, .. } = &mut o[0] {
            *expert = Some(1)
        }),
        FormatError::ManifestExperts
    );
}

#[test]
fn department_blobs_are_bound_to_their_base() {
    let a = small();
    let other = TestNet::random(NetSpec::small(), 4).bundle_f32();
    let ba = Bundle::parse(&a).unwrap();
    let bo = Bundle::parse(&other).unwrap();
    let blob = bo.department_blob(0).unwrap();
    assert_eq!(
        Dept::parse_blob(blob, ba.manifest(), ba.base_id()).unwrap_err(),
        FormatError::DeptBaseMismatch
    );
    let own = ba.department_blob(1).unwrap();
    let d = Dept::parse_blob(own, ba.manifest(), ba.base_id()).unwrap();
    assert_eq!(d.manifest.name, "dept1");
    let mut bad = own.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        Dept::parse_blob(&bad, ba.manifest(), ba.base_id()).unwrap_err(),
        FormatError::SectionHashMismatch
    );
    // A blob for a graph with other shapes (same base id forged) is refused by shape.
    let spec = NetSpec {
        cb: 8,
        ..NetSpec::small()
    };
    let wide = TestNet::random(spec, 3).bundle_f32();
    let bw = Bundle::parse(&wide).unwrap();
    let p = split(&wide).unwrap();
    let (name, blob) = &p.blobs[0];
    let h = DeltaHeader::decode(blob).unwrap();
    let (mut m, _) =
        postcard::take_from_bytes::<DeptManifest<'_>>(&blob[64..64 + h.manifest_len as usize])
            .unwrap();
    m.base_id = *ba.base_id();
    let forged = write_blob(&m, &blob[h.payload_offset as usize..]).unwrap();
    assert_eq!(
        Dept::parse_blob(&forged, ba.manifest(), ba.base_id()).unwrap_err(),
        FormatError::DeptShape
    );
    let _ = (name, bw);
}

#[test]
fn signatures() {
    use ed25519_dalek::{Signer, SigningKey};
    let net = TestNet::random(NetSpec::small(), 5);
    let unsigned = net.bundle_f32();
    let p = split(&unsigned).unwrap();
    let blobs: Vec<(&str, Vec<u8>)> = p
        .blobs
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    let mut signed = write_bundle(&p.manifest, &p.shared, &blobs, true).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let sig = key.sign(&signed);
    signed.extend_from_slice(&sig.to_bytes());
    let pk = key.verifying_key().to_bytes();
    let b = Bundle::parse_signed(&signed, &pk).unwrap();
    assert!(b.is_signed());
    assert!(Bundle::parse(&signed).unwrap().is_signed());
    assert_eq!(
        Bundle::parse_signed(&unsigned, &pk).unwrap_err(),
        FormatError::SignatureMissing
    );
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
    assert_eq!(
        Bundle::parse_signed(&signed, &other).unwrap_err(),
        FormatError::SignatureInvalid
    );
    let mut x = signed.clone();
    let last = x.len() - 1;
    x[last] ^= 1;
    assert_eq!(
        Bundle::parse_signed(&x, &pk).unwrap_err(),
        FormatError::SignatureInvalid
    );
    // Signature present but the flag cleared: the length no longer matches.
    let mut x = signed.clone();
    x[10] = 0;
    assert_eq!(Bundle::parse(&x).unwrap_err(), FormatError::HeaderBadLength);
}
