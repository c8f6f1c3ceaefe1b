//! `lorkd-train gradcam` end to end: a tiny run and teacher, test images written as PNG
//! files, one panel sheet per image (image | expert | shared | teacher) and gradcam.json.
use std::path::PathBuf;
use std::process::Command;

use lorkd_data::{Dataset, Split};
use lorkd_trainer::testing::cpu_control as ctl;
use lorkd_trainer::train::fit::{fit, FitConfig, Method};
use lorkd_trainer::train::teacher::{train_teacher, TeacherConfig};
use lorkd_trainer::{Arch, ResNetArch};

#[test]
fn gradcam_writes_one_panel_sheet_per_image() {
    let seed = lorkd_trainer::testing::seeded("gradcam-cli");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("lorkd-gradcam-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = "synthetic:departments=2,classes=2,size=16,per_class=8,seed=4";
    let teacher = dir.join("teacher");
    train_teacher(
        &TeacherConfig {
            data: data.into(),
            arch: ResNetArch::ResNet18,
            epochs: 1,
            batch: 16,
            lr: 0.05,
            seed,
            input_size: None,
            output: teacher.clone(),
        },
        &ctl(),
    )
    .unwrap();
    let mut fc = FitConfig::new(data, Method::Lorkd);
    fc.arch = Arch::ShuffleNetV2X0_5;
    fc.rank = 4;
    fc.epochs = 1;
    fc.batch = 16;
    fc.seed = seed;
    fc.teacher = Some(teacher.clone());
    let run = dir.join("run");
    fit(&fc, &run, &ctl()).unwrap();

    let ds = Dataset::open_str(data).unwrap();
    let mut images = Vec::new();
    for i in ds.indices_of(Split::Test, 1).into_iter().take(2) {
        let p = dir.join(format!("xray-{i}.png"));
        ds.raw_image(Split::Test, i).unwrap().save(&p).unwrap();
        images.push(p);
    }
    let out = dir.join("cams");
    let o = Command::new(env!("CARGO_BIN_EXE_lorkd-train"))
        .args([
            "gradcam",
            run.to_str().unwrap(),
            "--dept",
            "xray",
            "--panel",
            "40",
        ])
        .args(images.iter().map(|p| p.to_str().unwrap()))
        .args(["-o", out.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    for (row, p) in rows.as_array().unwrap().iter().zip(&images) {
        let models: Vec<&str> = row["explained"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["model"].as_str().unwrap())
            .collect();
        // The run's teacher is found through its run.json.
        assert_eq!(models, ["expert", "shared", "teacher"]);
        let png = image::open(row["png"].as_str().unwrap()).unwrap();
        // Four 40-px panels with 4-px gaps.
        assert_eq!((png.width(), png.height()), (4 * 40 + 3 * 4, 40));
        assert!(row["image"]
            .as_str()
            .unwrap()
            .ends_with(p.file_name().unwrap().to_str().unwrap()));
    }
    assert!(out.join("gradcam.json").exists());

    // An unknown department is one clear line and a non-zero exit.
    let o = Command::new(env!("CARGO_BIN_EXE_lorkd-train"))
        .args(["gradcam", run.to_str().unwrap(), "--dept", "nope"])
        .arg(&images[0])
        .args(["-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no department `nope`"));
    let _ = std::fs::remove_dir_all(&dir);
}
