//! The training pipeline end to end on tiny data: resume is exact, NaN
//! stops cleanly, teacher + distillation, the baselines, eval, and all three data sources.
//! One libtorch thread per test: spinning OpenMP pools on a busy 2-core machine are 10×
//! slower, and a fixed thread count keeps runs reproducible.

use std::path::Path;

use lorkd_data::Split;
use lorkd_trainer::testing::{cpu_control as ctl, Scratch};
use lorkd_trainer::train::eval::evaluate;
use lorkd_trainer::train::fit::{fit, resume, Control, EpochMetrics, FitConfig, Kd, Method};
use lorkd_trainer::train::io::load_tensors;
use lorkd_trainer::train::teacher::{train_teacher, TeacherConfig};
use lorkd_trainer::{Arch, Checkpoint, ResNetArch};
use tch::Device;

/// libtorch's RNG and thread settings are process-global: tests of this file that train run
/// one at a time, or a parallel one reseeds the RNG under another and resume cannot match.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny(data: &str, method: Method) -> FitConfig {
    let mut fc = FitConfig::new(data, method);
    fc.arch = Arch::ShuffleNetV2X0_5;
    fc.rank = 4;
    fc.lora_alpha = 4.0;
    fc.epochs = 2;
    fc.batch = 16;
    fc.seed = 7;
    fc
}

fn metrics(dir: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn resume_after_interruption_gives_the_same_checkpoint() {
    let _serial = serial();
    let s = Scratch::new("resume");
    let fc = tiny(
        "synthetic:departments=2,classes=2,size=16,per_class=12,seed=1",
        Method::Lorkd,
    );
    // 2 departments × 2 classes × 12 = 48 images = 3 steps per epoch, 2 epochs.
    let whole = s.path().join("whole");
    let o = fit(&fc, &whole, &ctl()).unwrap();
    assert_eq!((o.epochs_done, o.interrupted), (2, false));

    // Interrupted in the middle of epoch 2 (after 4 steps), then resumed.
    let cut = s.path().join("cut");
    let o = fit(
        &fc,
        &cut,
        &Control {
            stop_after_steps: Some(4),
            ..ctl()
        },
    )
    .unwrap();
    assert!(o.interrupted);
    assert_eq!(o.epochs_done, 1);
    // What Ctrl-C leaves is a usable checkpoint of the last epoch.
    let ck = Checkpoint::load(cut.join("model.safetensors")).unwrap();
    ck.into_model(Device::Cpu).unwrap();
    assert!(
        fit(&fc, &cut, &ctl()).is_err(),
        "a second fit into the same run must refuse"
    );
    let o = resume(&cut, &ctl()).unwrap();
    assert_eq!((o.epochs_done, o.interrupted), (2, false));

    let (_, a) = load_tensors(&whole.join("state.safetensors")).unwrap();
    let (_, b) = load_tensors(&cut.join("state.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(
        a.keys().any(|k| k.starts_with("momentum.")),
        "optimizer state is saved"
    );
    // Bit-exact when nothing else in the process touches libtorch (see `serial`); allow
    // rounding-level differences only, in case another test binary's thread settings leak in.
    let mut worst = 0f64;
    for (k, x) in &a {
        let y = &b[k];
        let d = (x - y).abs().max().double_value(&[]);
        let scale = x.abs().max().double_value(&[]).max(1.0);
        assert!(d <= 1e-4 * scale, "{k} differs by {d} after resume");
        worst = worst.max(d);
    }
    println!("largest difference after resume: {worst:e}");
    // The experts moved away from B = 0.
    let lb = a.iter().find(|(k, _)| k.ends_with("lora_B")).unwrap().1;
    assert!(lb.abs().max().double_value(&[]) > 0.0);
    assert_eq!(metrics(&cut).len(), 2);
    // Resuming a finished run does nothing.
    assert_eq!(resume(&cut, &ctl()).unwrap().epochs_done, 2);
}

#[test]
fn nan_loss_stops_and_leaves_the_last_good_checkpoint() {
    let _serial = serial();
    let s = Scratch::new("nan");
    let mut fc = tiny(
        "synthetic:departments=2,classes=2,size=16,per_class=8",
        Method::Mtl,
    );
    fc.lr = 1e12;
    fc.epochs = 3;
    let dir = s.path().join("run");
    let e = fit(&fc, &dir, &ctl())
        .expect_err("must stop on a non-finite loss")
        .to_string();
    println!("{e}");
    assert!(
        e.contains("loss is") && e.contains("last good checkpoint"),
        "{e}"
    );
    let ck = Checkpoint::load(dir.join("model.safetensors")).unwrap();
    for (k, t) in &ck.tensors {
        assert!(
            t.isfinite().all().int64_value(&[]) == 1,
            "{k} not finite in the kept checkpoint"
        );
    }
}

#[test]
fn teacher_distillation_baselines_and_eval() {
    let _serial = serial();
    let s = Scratch::new("teacher");
    let data = "synthetic:departments=2,classes=2,size=16,per_class=8,seed=3";
    let teacher = s.path().join("teacher.safetensors");
    let tc = TeacherConfig {
        data: data.into(),
        arch: ResNetArch::ResNet18,
        epochs: 1,
        batch: 16,
        lr: 0.05,
        seed: 1,
        input_size: None,
        output: teacher.clone(),
    };
    let val = train_teacher(&tc, &ctl()).unwrap();
    assert!((0.0..=1.0).contains(&val));

    // The teacher is scored both ways: per-department slice, and over all classes (paper).
    let r = evaluate(&teacher, data, Split::Test, 32, &ctl()).unwrap();
    assert_eq!(r.method.as_deref(), Some("teacher"));
    let unified = r
        .unified_top1
        .expect("a teacher reports its unified-head top-1");
    assert!((0.0..=1.0).contains(&unified));
    // Restricting the argmax to the right slice can only remove wrong candidates: the slice
    // score is at least the all-classes score on every image, so also on average.
    let slice_correct: f64 = r
        .departments
        .iter()
        .map(|d| d.experts * d.images as f64)
        .sum();
    let images: usize = r.departments.iter().map(|d| d.images).sum();
    assert!(slice_correct / images as f64 >= unified - 1e-9);

    for method in [Method::Lorkd, Method::MtlKd] {
        let mut fc = tiny(data, method);
        fc.epochs = 1;
        fc.teacher = Some(teacher.clone());
        let dir = s.path().join(method.name());
        fit(&fc, &dir, &ctl()).unwrap();
        let m = metrics(&dir);
        assert!(
            m[0].kd > 0.0,
            "{method:?}: the distillation term must be active"
        );
        let ck = Checkpoint::load(dir.join("model.safetensors")).unwrap();
        assert!(ck.config.unified_head);
        assert_eq!(ck.config.rank, if method == Method::Lorkd { 4 } else { 0 });
    }
    // Feature-level KD: a learned projection onto the teacher's pooled features; the
    // projection is trained (kept for --resume in state.safetensors) but never enters the
    // checkpoint, and the student carries no unified head.
    let mut fc = tiny(data, Method::Lorkd);
    fc.epochs = 1;
    fc.teacher = Some(teacher.clone());
    fc.kd = Kd::Features;
    fc.beta = 1.0;
    let dir = s.path().join("lorkd-features");
    fit(&fc, &dir, &ctl()).unwrap();
    let m = metrics(&dir);
    assert!(
        m[0].kd > 0.0 && m[0].kd <= 4.0,
        "feature KD lies in (0, 4]: {}",
        m[0].kd
    );
    let ck = Checkpoint::load(dir.join("model.safetensors")).unwrap();
    assert!(!ck.config.unified_head);
    assert!(ck.tensors.keys().all(|k| !k.starts_with("kd_proj")));
    let (_, state) = load_tensors(&dir.join("state.safetensors")).unwrap();
    assert!(state.contains_key("model.kd_proj.weight"));

    // A teacher for other classes is refused.
    let mut fc = tiny(
        "synthetic:departments=3,classes=2,size=16,per_class=4",
        Method::Lorkd,
    );
    fc.teacher = Some(teacher.clone());
    let e = fit(&fc, &s.path().join("bad"), &ctl())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("classes"), "{e}");

    // stl: one model per department, scored one by one.
    let mut fc = tiny(data, Method::Stl);
    fc.epochs = 1;
    let dir = s.path().join("stl");
    fit(&fc, &dir, &ctl()).unwrap();
    assert!(
        dir.join("stl/0/model.safetensors").exists()
            && dir.join("stl/1/model.safetensors").exists()
    );
    let r = evaluate(&dir, data, Split::Test, 32, &ctl()).unwrap();
    assert_eq!(r.method.as_deref(), Some("stl"));
    assert_eq!(r.departments.len(), 2);

    // stl-kd: one model per department, each distilled on its slice of the teacher's logits;
    // the per-department models carry no unified head.
    let mut fc = tiny(data, Method::StlKd);
    fc.epochs = 1;
    fc.teacher = Some(teacher.clone());
    let dir = s.path().join("stl-kd");
    fit(&fc, &dir, &ctl()).unwrap();
    let m = metrics(&dir);
    assert_eq!(m.len(), 2, "one metrics line per department model");
    for line in &m {
        assert!(line.kd > 0.0, "stl-kd must distill: {line:?}");
    }
    for t in 0..2 {
        let ck = Checkpoint::load(dir.join(format!("stl/{t}/model.safetensors"))).unwrap();
        assert!(!ck.config.unified_head && ck.config.departments.len() == 1);
    }
    let r = evaluate(&dir, data, Split::Test, 32, &ctl()).unwrap();
    assert_eq!(r.method.as_deref(), Some("stl-kd"));

    // eval of a LoRKD run: experts and shared weights, table and JSON.
    let r = evaluate(&s.path().join("lorkd"), data, Split::Test, 32, &ctl()).unwrap();
    print!("{}", r.table());
    assert_eq!(r.departments.len(), 2);
    assert_eq!(r.departments[0].images, 4);
    for d in &r.departments {
        assert!((0.0..=1.0).contains(&d.experts) && (0.0..=1.0).contains(&d.shared));
        // The confusion matrix counts every image once, its diagonal is top-1.
        let m = &d.metrics;
        assert_eq!(m.confusion.iter().flatten().sum::<usize>(), d.images);
        let diag: usize = (0..m.confusion.len()).map(|c| m.confusion[c][c]).sum();
        assert!((diag as f64 / d.images as f64 - d.experts).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&m.balanced_accuracy));
        assert!(m.auc.is_nan() || (0.0..=1.0).contains(&m.auc));
    }
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert!(json["mean_experts"].is_number());
    assert!(json["departments"][0]["metrics"]["confusion"].is_array());
    assert!(
        json.get("unified_top1").is_none(),
        "students have no unified-head score"
    );
    // Data with other departments is refused.
    let e = evaluate(
        &s.path().join("lorkd"),
        "synthetic:departments=3,size=16,per_class=4",
        Split::Test,
        32,
        &ctl(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("do not match"), "{e}");
}

fn write_npz(path: &Path, n: usize, side: usize, rgb: bool, classes: u8) {
    use npyz::WriterBuilder;
    let opts =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    for split in ["train", "val", "test"] {
        let c = if rgb { 3 } else { 1 };
        let mut shape = vec![n as u64, side as u64, side as u64];
        if rgb {
            shape.push(3);
        }
        // The class sets the brightness: learnable.
        let labels: Vec<u8> = (0..n).map(|i| (i % classes as usize) as u8).collect();
        let px: Vec<u8> = (0..n * side * side * c)
            .map(|q| labels[q / (side * side * c)] * 30 + (q % 17) as u8)
            .collect();
        let mut w = npz
            .array::<u8>(&format!("{split}_images"), opts)
            .unwrap()
            .default_dtype()
            .shape(&shape)
            .begin_nd()
            .unwrap();
        w.extend(px).unwrap();
        w.finish().unwrap();
        let mut w = npz
            .array::<u8>(&format!("{split}_labels"), opts)
            .unwrap()
            .default_dtype()
            .shape(&[n as u64, 1])
            .begin_nd()
            .unwrap();
        w.extend(labels).unwrap();
        w.finish().unwrap();
    }
    npz.zip_writer().finish().unwrap();
}

#[test]
fn medmnist_and_folder_sources_train_and_evaluate() {
    let _serial = serial();
    let s = Scratch::new("sources");
    let mm = s.path().join("mm");
    std::fs::create_dir_all(&mm).unwrap();
    write_npz(&mm.join("breastmnist.npz"), 12, 16, false, 2);
    write_npz(&mm.join("bloodmnist.npz"), 16, 16, true, 8);
    let data = format!("medmnist:{}:breastmnist,bloodmnist", mm.display());
    let mut fc = tiny(&data, Method::Lorkd);
    fc.epochs = 1;
    let dir = s.path().join("mm-run");
    fit(&fc, &dir, &ctl()).unwrap();
    let ck = Checkpoint::load(dir.join("model.safetensors")).unwrap();
    assert_eq!(ck.config.departments[1].classes[0], "basophil");
    assert_eq!(ck.config.input_size, 16);
    let r = evaluate(&dir, &data, Split::Test, 8, &ctl()).unwrap();
    assert_eq!(
        r.departments.iter().map(|d| d.images).collect::<Vec<_>>(),
        [12, 16]
    );

    let root = s.path().join("folder");
    for (d, classes) in [("lung", ["a", "b"]), ("skin", ["c", "d"])] {
        for (k, c) in classes.iter().enumerate() {
            for i in 0..10u8 {
                let p = root.join(d).join(c).join(format!("{i}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                image::RgbImage::from_pixel(20, 12, image::Rgb([k as u8 * 200, i * 9, 50]))
                    .save(&p)
                    .unwrap();
            }
        }
    }
    let data = format!("folder:{}", root.display());
    let mut fc = tiny(&data, Method::Mtl);
    fc.epochs = 1;
    fc.input_size = Some(16);
    let dir = s.path().join("folder-run");
    fit(&fc, &dir, &ctl()).unwrap();
    let r = evaluate(
        &dir.join("model.safetensors"),
        &data,
        Split::Train,
        8,
        &ctl(),
    )
    .unwrap();
    assert_eq!(r.departments.len(), 2);
    assert!(r.departments.iter().all(|d| d.images > 0));
}
