//! Issue 6 item 6: on the synthetic departments, a few epochs of LoRKD reduce the loss, learn
//! every department above chance (histology's frequency cue included since the generator made
//! it visible), and give a higher mean per-department test accuracy than MTL (one shared
//! network with department heads) at equal epochs. Fixed seed; the measured numbers are printed.
//!
//! Setting (also the README's command): `synthetic:size=32,per_class=100`, ShuffleNetV2 0.5×,
//! 6 epochs, batch 32, lr 0.01, rank 8, lora_alpha 8, seed 0, one libtorch thread.
//! Measured when written: LoRKD 0.767, MTL 0.713 mean test top-1 (chance 0.333; LoRKD per
//! department 0.547 / 0.693 / 0.973 / 0.853); the test asserts a margin of at least 0.03 and
//! every department at least 0.1 above chance. The margin is seed-sensitive: seed 1 measured
//! 0.777 vs 0.750 (docs/training.md).

use lorkd_data::Split;
use lorkd_trainer::train::eval::evaluate;
use lorkd_trainer::train::fit::{fit, Control, EpochMetrics, FitConfig, Method};
use lorkd_trainer::Arch;
use tch::Device;

const DATA: &str = "synthetic:size=32,per_class=100";

fn run(method: Method, root: &std::path::Path) -> (Vec<EpochMetrics>, f64, Vec<f64>) {
    let mut fc = FitConfig::new(DATA, method);
    fc.arch = Arch::ShuffleNetV2X0_5;
    fc.epochs = 6;
    fc.batch = 32;
    fc.lr = 0.01;
    fc.rank = 8;
    fc.lora_alpha = 8.0;
    fc.seed = 0;
    let ctl = Control {
        device: Device::Cpu,
        progress: false,
        workers: 1,
        stop_after_steps: None,
        threads: Some(1),
        amp: false,
        ..Control::default()
    };
    let dir = root.join(method.name());
    fit(&fc, &dir, &ctl).unwrap();
    let m: Vec<EpochMetrics> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = evaluate(&dir, DATA, Split::Test, 128, &ctl).unwrap();
    print!("{}", r.table());
    (
        m,
        r.mean_experts,
        r.departments.iter().map(|d| d.experts).collect(),
    )
}

#[test]
fn lorkd_learns_and_beats_mtl_on_synthetic_departments() {
    let root = std::env::temp_dir().join(format!("lorkd-vs-mtl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (lm, lorkd, per_dept) = run(Method::Lorkd, &root);
    let (_, mtl, _) = run(Method::Mtl, &root);
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "mean test top-1: LoRKD {lorkd:.4}, MTL {mtl:.4}, margin {:.4}",
        lorkd - mtl
    );
    assert!(
        lm.last().unwrap().loss < lm[0].loss,
        "the loss must go down"
    );
    assert!(lorkd > 1.0 / 3.0 + 0.3, "LoRKD must beat chance clearly");
    assert!(
        per_dept.iter().all(|&a| a >= 1.0 / 3.0 + 0.1),
        "every department must be learnt: {per_dept:?}"
    );
    assert!(
        lorkd > mtl + 0.03,
        "LoRKD {lorkd} must beat MTL {mtl} by 0.03"
    );
}
