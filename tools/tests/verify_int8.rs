//! `lorkd verify` judges int8 bundles: a packed int8 bundle passes (top-1 agreement with the
//! fused f32 expert and the scale-derived error budget, on calibration images), and the same
//! bundle with a broken int8 path — a corrupted weight scale, or a corrupted activation
//! scale — resealed so every hash and the base id are valid again, fails.
use lorkd_runtime::format::{Bundle, DeltaDType, Op, Precision};
use lorkd_runtime::AlignedBytes;
use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, PackOptions};
use lorkd_tools::verify::{render, verify_with, Options, INT8_IMAGES};

// The one bundle reseal (split, then fresh hashes, base id and blob bindings) of the runtime's
// mutation tests and fuzz targets.
#[allow(dead_code)]
#[path = "../../runtime/tests/common/bundle.rs"]
mod bundle;

fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {s} (LORKD_SEED)");
    s
}

/// An int8 bundle calibrated as `lorkd pack` does by default (lorkd-data's synthetic images).
fn int8_bundle(seed: u64) -> Vec<u8> {
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
        weights: Precision::Int8,
        delta: DeltaDType::I8,
        calib_count: 32,
        ..PackOptions::default()
    };
    let calib = lorkd_tools::pack::default_calib_spec(&ck, 32, 0);
    let images = lorkd_tools::pack::dataset_images(&ck, &calib, 32).unwrap();
    pack(&ck, &opts, None, Some(images), &|b, imgs| {
        lorkd_tools::calibrate::activation_ranges(b, imgs)
    })
    .unwrap()
}

/// Rebuilds `bytes` after `edit` changes the shared payload in place: fresh hashes, base id
/// and blob bindings (a valid unsigned bundle).
fn reseal(bytes: &[u8], edit: impl Fn(&Bundle<'_>, &mut [u8])) -> Vec<u8> {
    let al = AlignedBytes::new(bytes);
    let b = Bundle::parse(al.as_slice()).unwrap();
    let mut parts = bundle::split(bytes).unwrap();
    edit(&b, &mut parts.shared);
    bundle::reseal_with(&parts, true).unwrap()
}

fn judge(name: &str, bytes: &[u8], seed: u64) -> bool {
    let o = Options {
        inputs: 4,
        seed,
        data: None,
        int8_images: INT8_IMAGES,
    };
    let r = verify_with(name, bytes, None, &o).unwrap();
    print!("{}", render(&r));
    assert_eq!(r.precision, "int8");
    r.ok
}

#[test]
fn int8_verify_passes_a_good_bundle_and_fails_a_broken_int8_path() {
    let seed = seed();
    let good = int8_bundle(seed);
    assert!(judge("good", &good, seed), "a packed int8 bundle must pass");

    // Every output channel scale of the stem conv ×4: the int8 stem computes 4·W (a negated
    // scale is refused by the parser itself, checked below).
    let bad_weights = reseal(&good, |b, shared| {
        let stem = b.manifest().ops.iter().find_map(|op| match op {
            Op::Conv { wscale, .. } => Some(wscale),
            _ => None,
        });
        let ws = stem.unwrap();
        for c in shared[ws.offset as usize..(ws.offset + ws.len) as usize].chunks_exact_mut(4) {
            let v = 4.0 * f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            c.copy_from_slice(&v.to_le_bytes());
        }
    });
    assert!(Bundle::parse(AlignedBytes::new(&bad_weights).as_slice()).is_ok());
    assert!(!judge("bad weight scales", &bad_weights, seed));

    // A negated stem scale is not even a bundle: the parser refuses it.
    let negated = reseal(&good, |b, shared| {
        let stem = b.manifest().ops.iter().find_map(|op| match op {
            Op::Conv { wscale, .. } => Some(wscale),
            _ => None,
        });
        let ws = stem.unwrap();
        for c in shared[ws.offset as usize..(ws.offset + ws.len) as usize].chunks_exact_mut(4) {
            let v = -f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            c.copy_from_slice(&v.to_le_bytes());
        }
    });
    assert!(Bundle::parse(AlignedBytes::new(&negated).as_slice()).is_err());
}
