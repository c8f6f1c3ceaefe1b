//! The whole product on tiny data, end to end: a teacher and a LoRKD student trained
//! (`fit`) → packed int8 (per-department calibration) → every department through the no_std
//! runtime → one department fine-tuned (`finetune`: only its factors and head move) → a
//! signed delta (`delta make`; a checkpoint with a changed `W0` is refused) → applied to a
//! device flash image → the booted image's department answers with v2, and its outputs equal
//! those of a bundle packed from the fine-tuned checkpoint; the other departments still answer
//! with v1, equal to the base bundle.
//!
//! The data seed and the fine-tune seed are fresh each run (printed; replay with LORKD_SEED):
//! nothing asserted here depends on how well the tiny models learn.

mod common;
use common::{bits, ctl, scratch, seed, tensors, test_inputs};

use lorkd_data::{Dataset, Split};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, DeltaDType, Mode, Precision};
use lorkd_tools::checkpoint::Checkpoint as PackCheckpoint;
use lorkd_tools::cmd::run::{score, score_image};
use lorkd_tools::delta;
use lorkd_tools::pack::{dataset_images, pack, PackOptions};
use lorkd_trainer::train::finetune::{finetune, trainable, FinetuneConfig};
use lorkd_trainer::train::fit::{fit, FitConfig, Method};
use lorkd_trainer::train::teacher::{train_teacher, TeacherConfig};
use lorkd_trainer::{Arch, ResNetArch};
use tch::{Device, Tensor};

#[test]
fn train_pack_run_finetune_delta_flash_image() {
    let started = std::time::Instant::now();
    let seed = seed();
    let data = format!(
        "synthetic:departments=3,classes=3,size=32,per_class=12,seed={}",
        seed % 10_000
    );
    let dir = scratch("pipeline", seed);
    let ctl = ctl();

    // 1. Train: a teacher over all classes, then the LoRKD student distilled from it.
    let teacher = dir.join("teacher");
    train_teacher(
        &TeacherConfig {
            data: data.clone(),
            arch: ResNetArch::ResNet18,
            epochs: 1,
            batch: 16,
            lr: 0.01,
            seed,
            input_size: None,
            output: teacher.clone(),
        },
        &ctl,
    )
    .unwrap();
    // The teacher's metrics (one line per epoch, per-department validation accuracy) and its
    // per-department score: the argmax restricted to a department's class slice is right
    // whenever the argmax over all classes is, so it can only be higher.
    let lines = std::fs::read_to_string(teacher.join("metrics.jsonl")).unwrap();
    let m: lorkd_trainer::train::fit::EpochMetrics =
        serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!((lines.lines().count(), m.epoch, m.val_acc.len()), (1, 1, 3));
    let rep = lorkd_trainer::train::eval::evaluate(&teacher, &data, Split::Test, 64, &ctl).unwrap();
    assert_eq!(rep.method.as_deref(), Some("teacher"));
    {
        let tds = std::sync::Arc::new(Dataset::open_str(&data).unwrap());
        let tt = lorkd_trainer::train::teacher::Teacher::load(&teacher, Device::Cpu, 9).unwrap();
        let tf = {
            let mut c = lorkd_trainer::Config::new(
                Arch::ShuffleNetV2X1_0,
                3,
                lorkd_trainer::train::data::departments(&tds),
            );
            c.input_size = 32;
            lorkd_trainer::train::data::transform(&c)
        };
        for (d, score) in rep.departments.iter().enumerate() {
            let (mut ok, mut n) = (0usize, 0usize);
            for i in tds.indices_of(Split::Test, d) {
                let s = tds.sample(Split::Test, i, &tf, false).unwrap();
                let x = Tensor::from_slice(&lorkd_data::flat(&s.image)).reshape([1, 3, 32, 32]);
                let z = tt.logits(&x).unwrap();
                ok +=
                    usize::from(z.argmax(-1, false).int64_value(&[0]) as usize == 3 * d + s.class);
                n += 1;
            }
            let unified = ok as f64 / n as f64;
            eprintln!(
                "teacher {}: department slice {:.3}, all classes {unified:.3}",
                score.name, score.experts
            );
            assert!(
                score.experts >= unified,
                "{}: {} < {unified}",
                score.name,
                score.experts
            );
        }
    }
    let mut fc = FitConfig::new(&data, Method::Lorkd);
    fc.arch = Arch::ShuffleNetV2X0_5;
    fc.epochs = 1;
    fc.batch = 16;
    fc.lr = 0.01;
    fc.rank = 4;
    fc.lora_alpha = 8.0;
    fc.seed = seed;
    fc.teacher = Some(teacher.clone());
    fit(&fc, &dir.join("lorkd"), &ctl).unwrap();
    let ck_path = dir.join("lorkd").join("model.safetensors");
    eprintln!("trained in {:.1} s", started.elapsed().as_secs_f64());

    // 2. Pack int8 with per-department calibration on the data's training images.
    let cal = |b: &[u8], imgs: &[Vec<Vec<f32>>]| lorkd_tools::calibrate::activation_ranges(b, imgs);
    let opts = |version| PackOptions {
        weights: Precision::Int8,
        delta: DeltaDType::I8,
        calib_count: 16,
        calib_seed: 0,
        version,
    };
    let base_ck = PackCheckpoint::load(&ck_path).unwrap();
    let base_images = dataset_images(&base_ck, &data, 16).unwrap();
    let base = pack(&base_ck, &opts(1), None, Some(base_images), &cal).unwrap();
    let base_al = AlignedBytes::new(&base);
    let base_bundle = Bundle::parse(base_al.as_slice()).unwrap();
    assert_eq!(base_bundle.department_count(), 3);

    // 3. Every department through the runtime, both switching modes.
    let ds = Dataset::open_str(&data).unwrap();
    let inputs = test_inputs(&ds, &base_bundle, 6);
    for mode in [Mode::Materialized, Mode::Streaming] {
        let mut arena = AlignedBytes::zeroed(base_bundle.arena_bytes(mode));
        let mut engine = Engine::new(&base_bundle, arena.as_mut_slice(), mode).unwrap();
        for (d, xs) in inputs.iter().enumerate() {
            engine.select(d).unwrap();
            let mut logits = [0f32; 3];
            for (_, x) in xs {
                assert_eq!(engine.infer(x, &mut logits).unwrap(), 3);
                assert!(
                    logits.iter().all(|v| v.is_finite()),
                    "{mode:?} dept {d}: {logits:?}"
                );
            }
        }
    }

    // 4. Fine-tune one department.
    let dept = "xray";
    let t = 1usize;
    let mut ft = FinetuneConfig::new(&ck_path, dept, &data);
    ft.teacher = Some(teacher.clone());
    ft.epochs = 1;
    ft.batch = 16;
    // The KD term is α²·KL (≈ 30 against a CE of ≈ 1.3 with this 1-epoch teacher): at the
    // default lr 0.01 the fine-tune diverged for LORKD_SEED=1796014195545980355 (loss 6.7e18,
    // factors too large for an f16 scale, so `delta make` refused them). This test is about
    // the plumbing, so it fine-tunes gently.
    ft.lr = 0.001;
    ft.seed = seed ^ 0x5eed;
    let o = finetune(&ft, &dir.join("ft"), &ctl).unwrap();
    assert!(!o.interrupted && o.last.is_some());
    let ft_path = dir.join("ft").join("model.safetensors");

    // Only the department's factor slices and its head changed; all else is bit-identical,
    // BatchNorm running statistics and the unified head included.
    let (before, after) = (tensors(&ck_path), tensors(&ft_path));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert!(before.keys().any(|k| k.ends_with("running_var")));
    assert!(
        before.keys().any(|k| k.starts_with("head.")),
        "no unified head"
    );
    let (mut factors_changed, mut head_changed) = (0, 0);
    for (name, a) in &before {
        let b = &after[name];
        match trainable(name, t) {
            Some(Some(slice)) => {
                let n = a.size()[0];
                for s in 0..n {
                    let same = bits(&a.narrow(0, s, 1)) == bits(&b.narrow(0, s, 1));
                    if s == slice {
                        factors_changed += usize::from(!same);
                    } else {
                        assert!(same, "{name}[{s}] changed (department {t} was fine-tuned)");
                    }
                }
            }
            Some(None) => head_changed += usize::from(bits(a) != bits(b)),
            None => assert!(bits(a) == bits(b), "{name} changed"),
        }
    }
    assert!(
        factors_changed > 0,
        "the department's factors did not change"
    );
    assert!(head_changed > 0, "the department's head did not change");

    // 5. A signed delta of the fine-tuned department; the same with a changed W0 is refused.
    let key = lorkd_tools::keys::generate(dir.join("key")).unwrap();
    let pubkey = key.verifying_key();
    let ft_ck = PackCheckpoint::load(&ft_path).unwrap();
    let ft_images = dataset_images(&ft_ck, &data, 16).unwrap();
    let pkg =
        delta::make_calibrated(&base, &ft_ck, dept, 2, 0, &key, Some(ft_images.clone())).unwrap();
    let info = delta::verify(&pkg, &base, &pubkey).unwrap();
    assert_eq!((info.department.as_str(), info.version), (dept, 2));
    let bad = dir.join("bad.safetensors");
    let w0 = common::save_with_changed_w0(&ft_path, &bad);
    let err = delta::make(
        &base,
        &PackCheckpoint::load(&bad).unwrap(),
        dept,
        2,
        0,
        &key,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shared weights differ"), "{w0} changed: {err}");

    // 6. Apply to a flash image and boot it like a device.
    let mut img = delta::image(&base).unwrap();
    let st = delta::apply(&pkg, &mut img, &pubkey).unwrap();
    assert_eq!(st.version, Some(2));
    let booted = delta::boot(&img, &pubkey).unwrap();
    let reference = pack(&ft_ck, &opts(2), None, Some(ft_images), &cal).unwrap();
    let ref_al = AlignedBytes::new(&reference);
    let ref_bundle = Bundle::parse(ref_al.as_slice()).unwrap();
    for (d, name) in ["ultrasound", "xray", "dermoscopy"].iter().enumerate() {
        let xs = &inputs[d];
        for mode in [Mode::Materialized, Mode::Streaming] {
            let got = score_image(&booted, name, mode, xs).unwrap();
            let want = if *name == dept {
                assert_eq!((got.version, got.source.as_str()), (2, "slot A"));
                score(&ref_bundle, name, mode, xs).unwrap()
            } else {
                assert_eq!((got.version, got.source.as_str()), (1, "factory"));
                score(&base_bundle, name, mode, xs).unwrap()
            };
            for (g, w) in got.results.iter().zip(&want.results) {
                assert_eq!(g.logits, w.logits, "{mode:?} {name} image {}", g.input);
            }
        }
    }
    // `lorkd eval --image`'s scoring: every department with the version the device runs.
    let ev = lorkd_tools::cmd::eval::evaluate(
        &booted.bundle().unwrap(),
        Some(&booted),
        None,
        &ds,
        Split::Test,
        Mode::Materialized,
        Some(6),
        false,
        None,
    )
    .unwrap();
    let got: Vec<(&str, u32, &str, usize)> = ev
        .iter()
        .map(|d| (d.name.as_str(), d.version, d.source.as_str(), d.images))
        .collect();
    assert_eq!(
        got,
        vec![
            ("ultrasound", 1, "factory", 6),
            ("xray", 2, "slot A", 6),
            ("dermoscopy", 1, "factory", 6)
        ]
    );
    // The update changed what the department answers.
    let old = score(&base_bundle, dept, Mode::Materialized, &inputs[t]).unwrap();
    let new = score_image(&booted, dept, Mode::Materialized, &inputs[t]).unwrap();
    assert!(
        old.results
            .iter()
            .zip(&new.results)
            .any(|(a, b)| a.logits != b.logits),
        "v2 answers exactly like v1"
    );
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("pipeline test: {:.1} s", started.elapsed().as_secs_f64());
}
