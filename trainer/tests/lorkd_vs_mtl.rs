//! On the synthetic departments, a few epochs of LoRKD reduce the loss, learn all departments
//! but at most one above chance, and its department experts beat the shared weights alone
//! (the factors carry department knowledge); MTL (one shared network with department heads)
//! is trained at equal epochs and printed for comparison. Fixed seed.
//!
//! Setting (also the README's command): `synthetic:size=32,per_class=100`, ShuffleNetV2 0.5×,
//! 6 epochs, batch 32, lr 0.01, rank 8, lora_alpha 8, seed 0, one libtorch thread.
//! Measured: on an AVX-512 machine LoRKD 0.767 (shared weights only 0.483), MTL 0.713; on an
//! AVX2-only machine (libtorch's kernels differ, so does the trajectory) LoRKD 0.597 (shared
//! 0.440, ultrasound at chance), MTL 0.633. Whether LoRKD beats MTL is therefore not asserted
//! here: `scripts/experiments.sh` measures it over seeds (docs/results.md), and what it found
//! — LoRKD ahead of MTL by a few points in most seeds, by less than the seeds' spread — does
//! not support a margin a single-seed CI test could assert.

use lorkd_data::Split;
use lorkd_trainer::train::eval::evaluate;
use lorkd_trainer::train::fit::{fit, Control, EpochMetrics, FitConfig, Method};
use lorkd_trainer::Arch;
use tch::Device;

const DATA: &str = "synthetic:size=32,per_class=100";

fn run(method: Method, root: &std::path::Path) -> (Vec<EpochMetrics>, f64, f64, Vec<f64>) {
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
        r.mean_shared,
        r.departments.iter().map(|d| d.experts).collect(),
    )
}

#[test]
fn lorkd_experts_learn_and_beat_their_shared_weights() {
    let root = std::env::temp_dir().join(format!("lorkd-vs-mtl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (lm, lorkd, shared, per_dept) = run(Method::Lorkd, &root);
    let (_, mtl, _, _) = run(Method::Mtl, &root);
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "mean test top-1: LoRKD {lorkd:.4}, MTL {mtl:.4}, margin {:.4}",
        lorkd - mtl
    );
    assert!(
        lm.last().unwrap().loss < lm[0].loss,
        "the loss must go down"
    );
    // What holds on every machine measured: the experts learn, and the per-department factors
    // carry knowledge the shared weights alone do not. Single-seed LoRKD-vs-MTL margins are not
    // asserted: they flip with the seed and with the CPU's instruction set (AVX-512: LoRKD 0.767
    // vs MTL 0.713; AVX2-only: 0.597 vs 0.633, ultrasound at chance) — a multi-seed claim
    // belongs to the experiments script, not to a one-seed test.
    assert!(
        lorkd > 1.0 / 3.0 + 0.15,
        "LoRKD {lorkd} must beat chance clearly"
    );
    assert!(
        per_dept.iter().filter(|&&a| a >= 1.0 / 3.0 + 0.1).count() + 1 >= per_dept.len(),
        "all departments but at most one must be learnt: {per_dept:?}"
    );
    assert!(
        lorkd > shared + 0.1,
        "the experts ({lorkd}) must beat the shared weights alone ({shared}) by 0.1"
    );
}
