//! Bundle size: ShuffleNetV2 1.0x, 11 departments, r = 8, int8 shared weights and int8
//! deltas: the bundle is ≤ 2.6 MB while 11 separate int8 experts are ≥ 13.5 MB (ratio ≤ 0.19).
//! Departments are binary tasks (2 classes: the f32 heads are part of each delta).
//! MB is decimal (10^6 bytes), the stricter reading; the int8 factors' per-row scales are
//! IEEE halves, without which the bundle was 2.63 MB. Sizes do not depend on the input size,
//! so the checkpoint is 64 px to keep calibration quick.

use lorkd_runtime::format::{DeltaDType, Precision};
use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, PackOptions};

#[test]
fn shufflenet_1_0_eleven_departments_int8_sizes() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let classes = vec![2; 11];
    let spec = RandomSpec {
        arch: "shufflenet_v2_x1_0".into(),
        in_channels: 3,
        input_size: 64,
        rank: 8,
        classes,
        seed,
    };
    let ck = Checkpoint::from_bytes(&random_checkpoint(&spec).unwrap()).unwrap();
    let opts = PackOptions {
        weights: Precision::Int8,
        delta: DeltaDType::I8,
        calib_count: 1,
        calib_seed: seed,
        version: 1,
    };
    let bytes = pack(
        &ck,
        &opts,
        None,
        None,
        &lorkd_tools::calibrate::activation_ranges,
    )
    .unwrap();
    let r = lorkd_tools::cmd::inspect::report(&bytes, None).unwrap();
    let total = r["total_bytes"].as_u64().unwrap();
    let separate = r["separate_experts_bytes"].as_u64().unwrap();
    let ratio = r["ratio"].as_f64().unwrap();
    println!(
        "bundle {total} B, shared {} B, 11 separate experts {separate} B, ratio {ratio:.4}",
        r["shared_bytes"]
    );
    const MB: f64 = 1e6;
    println!(
        "= {:.3} MB vs {:.3} MB",
        total as f64 / MB,
        separate as f64 / MB
    );
    assert!(total as f64 <= 2.6 * MB, "bundle {total} > 2.6 MB");
    assert!(
        separate as f64 >= 13.5 * MB,
        "separate experts {separate} < 13.5 MB"
    );
    assert!(ratio <= 0.19, "ratio {ratio}");
}
