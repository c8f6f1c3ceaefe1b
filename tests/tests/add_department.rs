//! A department the factory bundle never had, added in the field, end to end at tiny size: a
//! LoRKD student trained on four departments (`fit`) → a signed int8 bundle → a device flash
//! image → `add_department` trains a fifth department's factors and head (everything the
//! checkpoint had stays bit-identical) → `delta make` writes a signed *add* package (refused
//! for the wrong key and a changed `W0`) → applied to the image → the booted image lists five
//! departments; the fifth answers from its slot with int8 logits that agree with the float
//! expert within the bound `lorkd verify` states (top-1 agreement ≥ `INT8_MIN_TOP1`, every
//! logit within `int8_budget`); the four factory departments answer byte for byte as before.
//!
//! The data and training seeds are fresh each run (printed; replay with LORKD_SEED): nothing
//! asserted depends on how well the tiny models learn.

mod common;
use common::{bits, ctl, scratch, seed, tensors, test_inputs};

use lorkd_data::{Dataset, Split};
use lorkd_runtime::engine::AlignedBytes;
use lorkd_runtime::format::{Bundle, DeltaDType, Mode, Precision};
use lorkd_tools::checkpoint::Checkpoint as PackCheckpoint;
use lorkd_tools::cmd::run::{score, score_image};
use lorkd_tools::delta;
use lorkd_tools::pack::{dataset_images, pack, PackOptions};
use lorkd_tools::verify::{int8_budget, INT8_MIN_TOP1};
use lorkd_trainer::train::finetune::{add_department, trainable, FinetuneConfig};
use lorkd_trainer::train::fit::{fit, FitConfig, Method};
use lorkd_trainer::Arch;

#[test]
fn a_fifth_department_trained_after_flashing_is_added_in_the_field() {
    let started = std::time::Instant::now();
    let seed = seed();
    let spec = |n: usize| {
        format!(
            "synthetic:departments={n},classes=3,size=32,per_class=12,seed={}",
            seed % 10_000
        )
    };
    let (data4, data5) = (spec(4), spec(5));
    let dir = scratch("add", seed);
    let ctl = ctl();

    // 1. The factory model: four departments.
    let mut fc = FitConfig::new(&data4, Method::Lorkd);
    fc.arch = Arch::ShuffleNetV2X0_5;
    fc.epochs = 1;
    fc.batch = 16;
    fc.lr = 0.01;
    fc.rank = 4;
    fc.lora_alpha = 8.0;
    fc.seed = seed;
    fit(&fc, &dir.join("lorkd"), &ctl).unwrap();
    let ck_path = dir.join("lorkd").join("model.safetensors");

    // 2. Signed int8 bundle, calibrated per department; the factory image.
    let cal = |b: &[u8], imgs: &[Vec<Vec<f32>>]| lorkd_tools::calibrate::activation_ranges(b, imgs);
    let opts = |weights, delta| PackOptions {
        weights,
        delta,
        calib_count: 16,
        calib_seed: 0,
        version: 1,
    };
    let key = lorkd_tools::keys::generate(dir.join("key")).unwrap();
    let pubkey = key.verifying_key();
    let base_ck = PackCheckpoint::load(&ck_path).unwrap();
    let base_images = dataset_images(&base_ck, &data4, 16).unwrap();
    let base = pack(
        &base_ck,
        &opts(Precision::Int8, DeltaDType::I8),
        Some(&key),
        Some(base_images),
        &cal,
    )
    .unwrap();
    let base_al = AlignedBytes::new(&base);
    let base_bundle = Bundle::parse_signed(base_al.as_slice(), pubkey.as_bytes()).unwrap();
    assert_eq!(base_bundle.department_count(), 4);
    let mut img = delta::image(&base).unwrap();
    let ds5 = Dataset::open_str(&data5).unwrap();
    let inputs = test_inputs(&ds5, &base_bundle, 6);
    let names = ["ultrasound", "xray", "dermoscopy", "histology"];
    let booted = delta::boot(&img, &pubkey).unwrap();
    assert_eq!(booted.status.len(), 4);
    let before: Vec<Vec<Vec<f32>>> = names
        .iter()
        .enumerate()
        .flat_map(|(d, n)| {
            [Mode::Materialized, Mode::Streaming].map(|mode| {
                let r = score_image(&booted, n, mode, &inputs[d]).unwrap();
                r.results.into_iter().map(|x| x.logits).collect()
            })
        })
        .collect();

    // 3. Train the fifth department; everything the checkpoint had stays bit-identical.
    let new_name = ds5.departments()[4].name.clone();
    let mut ac = FinetuneConfig::new(&ck_path, "", &data5);
    ac.epochs = 1;
    ac.batch = 16;
    ac.seed = seed ^ 0xadd;
    let o = add_department(&ac, &dir.join("add"), &ctl, false).unwrap();
    assert!(!o.interrupted && o.last.is_some());
    let add_path = dir.join("add").join("model.safetensors");
    let (old, new) = (tensors(&ck_path), tensors(&add_path));
    let grown: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    assert!(
        !grown.is_empty() && grown.iter().all(|k| k.starts_with("heads.4.")),
        "{grown:?}"
    );
    let mut moved = 0;
    for (name, a) in &old {
        let b = &new[name];
        let n = a.size()[0];
        // The checkpoint's tensors are the leading rows of the grown ones, bit for bit.
        assert!(
            bits(a) == bits(&b.narrow(0, 0, n)),
            "{name} changed (only department 4 trains)"
        );
        if trainable(name, 4) == Some(Some(4)) {
            assert_eq!(b.size()[0], 5, "{name}");
            moved += usize::from(bits(&b.narrow(0, 4, 1)).iter().any(|&x| x != 0));
        }
    }
    assert!(moved > 0, "the new department's factors did not train");
    let add_ck = PackCheckpoint::load(&add_path).unwrap();
    assert_eq!(add_ck.meta.departments.len(), 5);

    // 4. The signed add package; refused with a changed W0, and under another key.
    let add_images = dataset_images(&add_ck, &data5, 16).unwrap();
    let pkg = delta::make_calibrated(
        &base,
        &add_ck,
        &new_name,
        1,
        0,
        &key,
        Some(add_images.clone()),
    )
    .unwrap();
    let info = delta::verify(&pkg, &base, &pubkey).unwrap();
    assert!(info.added);
    assert_eq!(
        (info.department.as_str(), info.version, info.classes),
        (new_name.as_str(), 1, 3)
    );
    let other = lorkd_tools::keys::generate(dir.join("other")).unwrap();
    assert!(delta::verify(&pkg, &base, &other.verifying_key()).is_err());
    let mut wrong = img.clone();
    assert!(delta::apply(&pkg, &mut wrong, &other.verifying_key()).is_err());
    assert!(wrong == img, "a refused package changed the image");
    let bad = dir.join("bad.safetensors");
    common::save_with_changed_w0(&add_path, &bad);
    let err = delta::make(
        &base,
        &PackCheckpoint::load(&bad).unwrap(),
        &new_name,
        1,
        0,
        &key,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shared weights differ"), "{err}");

    // 5. Applied to the image: five departments; the factory four answer byte for byte as
    // before, in both switching modes.
    let st = delta::apply(&pkg, &mut img, &pubkey).unwrap();
    assert_eq!(
        (st.department.as_str(), st.added, st.version),
        (new_name.as_str(), true, Some(1))
    );
    let booted = delta::boot(&img, &pubkey).unwrap();
    let listed: Vec<(&str, bool, &str)> = booted
        .status
        .iter()
        .map(|s| (s.department.as_str(), s.added, s.source.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("ultrasound", false, "factory"),
            ("xray", false, "factory"),
            ("dermoscopy", false, "factory"),
            ("histology", false, "factory"),
            (new_name.as_str(), true, "slot A"),
        ]
    );
    let after: Vec<Vec<Vec<f32>>> = names
        .iter()
        .enumerate()
        .flat_map(|(d, n)| {
            [Mode::Materialized, Mode::Streaming].map(|mode| {
                let r = score_image(&booted, n, mode, &inputs[d]).unwrap();
                r.results.into_iter().map(|x| x.logits).collect()
            })
        })
        .collect();
    let same = before
        .iter()
        .flatten()
        .flatten()
        .zip(after.iter().flatten().flatten())
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "a factory department's answers changed");

    // 6. The fifth answers from its slot; int8 vs the float expert within the stated bound.
    let f32_bundle = pack(
        &add_ck,
        &opts(Precision::F32, DeltaDType::F32),
        None,
        None,
        &cal,
    )
    .unwrap();
    let f32_al = AlignedBytes::new(&f32_bundle);
    let f32_b = Bundle::parse(f32_al.as_slice()).unwrap();
    let bundle = booted.bundle().unwrap();
    let d5 = booted.department(&bundle, 4).unwrap();
    let budget = int8_budget(&bundle, &d5).expect("an int8 budget");
    for mode in [Mode::Materialized, Mode::Streaming] {
        let got = score_image(&booted, &new_name, mode, &inputs[4]).unwrap();
        assert_eq!((got.version, got.source.as_str()), (1, "slot A"));
        let want = score(&f32_b, &new_name, mode, &inputs[4]).unwrap();
        let (mut agree, mut worst) = (0usize, 0f32);
        for (g, w) in got.results.iter().zip(&want.results) {
            agree += usize::from(g.top1 == w.top1);
            for (a, b) in g.logits.iter().zip(&w.logits) {
                worst = worst.max((a - b).abs());
            }
        }
        let top1 = agree as f32 / got.results.len() as f32;
        eprintln!("{mode:?}: {new_name} int8 vs f32: top-1 agreement {top1:.3}, max |Δlogit| {worst:.4} (budget {budget:.4})");
        assert!(top1 >= INT8_MIN_TOP1, "{mode:?}: top-1 agreement {top1}");
        assert!(worst <= budget, "{mode:?}: {worst} > {budget}");
    }
    // `lorkd eval --image`'s scoring lists and scores it beside the others.
    let ev = lorkd_tools::cmd::eval::evaluate(
        &bundle,
        Some(&booted),
        None,
        &ds5,
        Split::Test,
        Mode::Materialized,
        Some(6),
        false,
        None,
    )
    .unwrap();
    let got: Vec<(&str, &str, usize)> = ev
        .iter()
        .map(|d| (d.name.as_str(), d.source.as_str(), d.images))
        .collect();
    assert_eq!(got.len(), 5);
    assert_eq!(got[4], (new_name.as_str(), "slot A", 6));
    // `lorkd eval --threads 2`: the same scores as one thread.
    let ev2 = lorkd_tools::cmd::eval::evaluate(
        &bundle,
        Some(&booted),
        None,
        &ds5,
        Split::Test,
        lorkd_tools::cmd::run::Exec {
            mode: Mode::Materialized,
            threads: 2,
        },
        Some(6),
        false,
        None,
    )
    .unwrap();
    let acc = |e: &[lorkd_tools::cmd::eval::DeptAccuracy]| {
        e.iter().map(|d| d.accuracy.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(acc(&ev), acc(&ev2));
    std::fs::remove_dir_all(&dir).ok();
    eprintln!(
        "add-department test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
