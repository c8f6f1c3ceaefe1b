//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

pub mod bundle;

use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::AlignedBytes;

/// The test's seed: `LORKD_SEED` when set, else fresh; printed so a failure can be replayed.
pub fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed = {s} (replay with LORKD_SEED={s})");
    s
}

/// Per-department, per-value (min, max) of the f32 engine over `xs`: the calibration the
/// packer does with `tools::calibrate`, for writing a test net's int8 bundle.
pub fn ranges(bundle: &Bundle<'_>, depts: usize, xs: &[Vec<f32>]) -> Vec<Vec<(f32, f32)>> {
    let n = bundle.manifest().values.len();
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(Mode::Materialized));
    let mut e = Engine::new(bundle, arena.as_mut_slice(), Mode::Materialized).unwrap();
    (0..depts)
        .map(|t| {
            e.select(t).unwrap();
            let mut r = vec![(f32::MAX, f32::MIN); n];
            let mut logits = [0.0; 16];
            for x in xs {
                e.infer_observe(x, &mut logits, |v, d| {
                    for &z in d {
                        r[v].0 = r[v].0.min(z);
                        r[v].1 = r[v].1.max(z);
                    }
                })
                .unwrap();
            }
            r
        })
        .collect()
}
