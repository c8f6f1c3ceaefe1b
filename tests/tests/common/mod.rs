//! Helpers shared by the end-to-end tests (each test binary uses some of them).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lorkd_data::{Dataset, Split};
use lorkd_runtime::format::Bundle;
use lorkd_trainer::Checkpoint;
use tch::{Kind, Tensor};

/// The test's seed: `LORKD_SEED` when set, else fresh; printed so a failure can be replayed.
pub fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {s} (replay with LORKD_SEED={s})");
    s
}

/// A fresh, empty scratch directory named after the test, the process and the seed.
pub fn scratch(name: &str, seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lorkd-{name}-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Training control for tests: CPU, one thread, one worker, no progress bars, no AMP.
#[allow(unused_imports)]
pub use lorkd_trainer::testing::cpu_control as ctl;

/// A tensor's values as f32.
pub fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

/// A tensor's f32 bit patterns (for bit-identity checks).
pub fn bits(t: &Tensor) -> Vec<u32> {
    to_vec(t).iter().map(|x| x.to_bits()).collect()
}

/// A trainer checkpoint's tensors by name.
pub fn tensors(p: &Path) -> BTreeMap<String, Tensor> {
    Checkpoint::load(p).unwrap().tensors
}

/// Test images of every data department, normalised as the bundle's input spec says.
pub fn test_inputs(
    ds: &Dataset,
    bundle: &Bundle<'_>,
    per_dept: usize,
) -> Vec<Vec<(String, Vec<f32>)>> {
    let t = lorkd_data::score::transform(&bundle.manifest().input);
    (0..ds.departments().len())
        .map(|d| {
            ds.indices_of(Split::Test, d)
                .into_iter()
                .take(per_dept)
                .map(|i| {
                    let s = ds.sample(Split::Test, i, &t, false).unwrap();
                    (i.to_string(), s.into_chw())
                })
                .collect()
        })
        .collect()
}

/// Writes `ck_path`'s checkpoint to `out` with one shared expert weight `W0` (the first conv
/// that has LoRA factors) scaled by 1.001: a checkpoint whose base no longer matches the
/// bundle, which `delta make` must refuse. Returns the tensor's name.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn save_with_changed_w0(ck_path: &Path, out: &Path) -> String {
    let mut ck = Checkpoint::load(ck_path).unwrap();
    let w0 = ck
        .tensors
        .keys()
        .find(|k| {
            k.ends_with(".weight") && ck.tensors.contains_key(&k.replace(".weight", ".lora_A"))
        })
        .unwrap()
        .clone();
    let w = ck.tensors[&w0].shallow_clone() * 1.001;
    ck.tensors.insert(w0.clone(), w);
    ck.save(out).unwrap();
    w0
}
