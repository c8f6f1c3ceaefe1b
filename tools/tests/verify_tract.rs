//! `lorkd verify` as a test: packed random checkpoints (activations near unit scale, every
//! department different) checked against tract on the exported ONNX, for every delta storage;
//! signatures; tampering; and that the comparison really detects a wrong expert.
use ed25519_dalek::SigningKey;
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::Dept;
use lorkd_runtime::format::{Bundle, DeltaDType, Mode, Precision};
use lorkd_runtime::AlignedBytes;
use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, PackOptions};
use lorkd_tools::verify::TractExpert;
use lorkd_tools::verify::{verify, REL_TOL};

fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {s}");
    s
}

fn bundle(seed: u64, weights: Precision, delta: DeltaDType, key: Option<&SigningKey>) -> Vec<u8> {
    let spec = RandomSpec {
        arch: "shufflenet_v2_x0_5".into(),
        in_channels: 3,
        input_size: 32,
        rank: 2,
        classes: vec![3, 4, 5],
        seed,
    };
    let ck = Checkpoint::from_bytes(&random_checkpoint(&spec).unwrap()).unwrap();
    let opts = PackOptions {
        weights,
        delta,
        calib_count: 4,
        ..PackOptions::default()
    };
    pack(&ck, &opts, key, None, &|b, imgs| {
        lorkd_tools::calibrate::activation_ranges(b, imgs)
    })
    .unwrap()
}

#[test]
fn f32_bundles_agree_with_tract_for_every_delta_storage() {
    let seed = seed();
    for delta in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
        let b = bundle(seed, Precision::F32, delta, None);
        let r = verify("test", &b, None, 3, seed).unwrap();
        println!("{delta:?}\n{}", lorkd_tools::verify::render(&r));
        assert!(r.ok, "{delta:?}");
        assert_eq!(r.departments.len(), 3);
        for d in &r.departments {
            // Not a collapsed network: the logits have a real scale.
            assert!(
                d.logit_scale > 0.05,
                "{}: logit scale {}",
                d.name,
                d.logit_scale
            );
            assert_eq!(d.modes.len(), Mode::ALL.len());
            for m in &d.modes {
                assert!(m.rel_err < REL_TOL, "{} {}: {}", d.name, m.mode, m.rel_err);
                assert_eq!(m.top1_agreement, 1.0);
            }
        }
        assert_eq!(r.signature, "unsigned");
    }
}

#[test]
fn the_comparison_detects_an_expert_without_its_deltas() {
    let seed = seed();
    let b = bundle(seed, Precision::F32, DeltaDType::F32, None);
    let al = AlignedBytes::new(&b);
    let bundle = Bundle::parse(al.as_slice()).unwrap();
    let m = bundle.manifest();
    let (c, hw) = (m.input.channels as usize, m.input.size as usize);
    let x: Vec<f32> = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..c * hw * hw)
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect()
    };
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(Mode::Materialized));
    let mut e = Engine::new(&bundle, arena.as_mut_slice(), Mode::Materialized).unwrap();
    for d in 0..bundle.department_count() {
        let dept = bundle.department(d).unwrap();
        e.select(d).unwrap();
        let mut got = vec![0f32; dept.classes()];
        e.infer(&x, &mut got).unwrap();
        let run = |payload: &[u8]| {
            let d = Dept {
                manifest: dept.manifest,
                payload,
            };
            let onnx = lorkd_tools::onnx::export(&bundle, &d).unwrap();
            TractExpert::load(&onnx, 1, c, hw).unwrap().run(&x).unwrap()
        };
        let want = run(dept.payload);
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(
            err < REL_TOL * scale,
            "department {d}: {err} vs scale {scale}"
        );
        // The same expert with its `A` factors zeroed (W0 only, same head): the oracle now
        // disagrees with the runtime far beyond the tolerance — the deltas matter and the
        // comparison sees them.
        let mut p = dept.payload.to_vec();
        for dr in dept.manifest.deltas.iter() {
            p[dr.a.offset as usize..(dr.a.offset + dr.a.len) as usize].fill(0);
        }
        let shared_only = run(&p);
        let diff = got
            .iter()
            .zip(&shared_only)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(
            diff > 100.0 * REL_TOL * scale,
            "department {d}: deltas change the logits by only {diff}"
        );
    }
}

#[test]
fn signatures_and_tampering_are_checked() {
    let seed = seed();
    let key = SigningKey::from_bytes(&[seed as u8; 32]);
    let b = bundle(seed, Precision::F32, DeltaDType::F16, Some(&key));
    let r = verify("signed", &b, Some(&key.verifying_key()), 2, seed).unwrap();
    assert!(r.ok);
    assert_eq!(r.signature, "verified");
    let r = verify("signed", &b, None, 1, seed).unwrap();
    assert!(r.signature.starts_with("present"));
    let other = SigningKey::from_bytes(&[seed as u8 ^ 0xFF; 32]);
    let e = verify("signed", &b, Some(&other.verifying_key()), 1, seed).unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
    // A flipped byte anywhere in the covered part is refused (hash or structure).
    for i in [300, b.len() / 2, b.len() - 100] {
        let mut t = b.clone();
        t[i] ^= 0x20;
        assert!(
            verify("tampered", &t, None, 1, seed).is_err(),
            "flip at {i} accepted"
        );
    }
}

#[test]
fn int8_bundles_are_reported_against_the_float_oracle() {
    let seed = seed();
    let b = bundle(seed, Precision::Int8, DeltaDType::I8, None);
    let r = verify("int8", &b, None, 4, seed).unwrap();
    println!("{}", lorkd_tools::verify::render(&r));
    assert_eq!(r.precision, "int8");
    // No verdict asserted here: this bundle is calibrated on four noise images, so its
    // clipped activations fail the int8 budget on some seeds (1 in 6 measured).
    // `verify_int8.rs` judges a properly calibrated bundle and broken ones.
    for d in &r.departments {
        for m in &d.modes {
            // int8 noise on a random net calibrated on four images: measured 0.07–0.49 of the
            // (small, ~0.2–1.2) logit scale over a dozen seeds, so 0.5 was flaky. A broken
            // graph or a wrong scale gives errors of the logit scale or more.
            assert!(
                m.rel_err.is_finite() && m.rel_err < 1.0,
                "{} {}: {}",
                d.name,
                m.mode,
                m.rel_err
            );
        }
    }
}
