//! Helpers shared by tests, `init --random-factors` and `bench`: seeded RNG, non-zero
//! department factors and non-trivial BatchNorm, so comparisons run on a non-collapsed network;
//! a quiet one-thread CPU [`Control`] and a self-removing scratch directory for tests.
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::train::run::Control;

use tch::{nn, Kind, Tensor};

/// A fresh seed per run (or `LORKD_SEED` when set), printed so a failure can be replayed;
/// also seeds libtorch.
pub fn seeded(test: &str) -> u64 {
    let seed = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 & 0xffff_ffff)
                .unwrap_or(1)
        });
    println!("{test}: seed {seed} (LORKD_SEED={seed} to replay)");
    tch::manual_seed(seed as i64);
    seed
}

/// The training controls tests use: CPU, no progress bar, one loader worker and one libtorch
/// thread (spinning OpenMP pools on a busy small machine are 10× slower; a fixed count keeps
/// runs reproducible).
pub fn cpu_control() -> Control {
    Control {
        device: tch::Device::Cpu,
        progress: false,
        workers: 1,
        stop_after_steps: None,
        threads: Some(1),
        amp: false,
        ..Control::default()
    }
}

/// A fresh directory under the system's temp dir, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `lorkd-<tag>-<pid>`, emptied first.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("lorkd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::create_dir_all(&p);
        Scratch(p)
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Variables in name order (a HashMap's order would make seeded fills irreproducible).
fn sorted_vars(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Fills every `lora_B` with N(0, σ), σ = `rel / (s·√(r·k))`, so that each expert changes its
/// conv's weight by roughly `rel` of `W0`'s typical magnitude (A is Kaiming-uniform like W0).
pub fn randomize_factors(vs: &nn::VarStore, scaling: f64, rel: f64, seed: u64) {
    tch::manual_seed(seed as i64);
    tch::no_grad(|| {
        for (name, mut t) in sorted_vars(vs) {
            if name.ends_with(".lora_B") {
                let rk = t.size()[2] as f64;
                let sigma = rel / (scaling.max(1e-12) * rk.sqrt());
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, t.device())) * sigma));
            }
        }
    });
}

/// Like [`randomize_factors`] and also randomises BN (γ ∈ [0.5, 1.5], β, μ ~ N(0, 0.1),
/// σ² ∈ [0.5, 1.5]) and heads, for identity tests that must not pass trivially.
pub fn randomize_all(vs: &nn::VarStore, rel: f64, seed: u64) {
    randomize_factors(vs, 1.0, rel, seed);
    tch::no_grad(|| {
        for (name, mut t) in sorted_vars(vs) {
            let opts = (Kind::Float, t.device());
            let r = if name.ends_with("running_var") || (name.ends_with(".weight") && t.dim() == 1)
            {
                Some(Tensor::rand(t.size(), opts) + 0.5)
            } else if name.ends_with("running_mean") || (name.ends_with(".bias") && t.dim() == 1) {
                Some(Tensor::randn(t.size(), opts) * 0.1)
            } else {
                None
            };
            if let Some(r) = r {
                t.copy_(&r);
            }
        }
    });
}
