//! SGD with momentum and weight decay (PyTorch's `torch.optim.SGD` update, dampening 0,
//! no Nesterov) and cosine annealing, written out so that the momentum buffers can be saved
//! and a resumed run continues exactly.
//!
//! `d = g + λ·p;  m ← μ·m + d;  p ← p − η_k·m`,  `η_k = η/2 · (1 + cos(π·k/K))` at step k of K.

use std::collections::BTreeMap;

use tch::{nn, Tensor};

/// Learning rate of step `step` of `total` under cosine annealing from `base` to 0.
pub fn cosine_lr(base: f64, step: u64, total: u64) -> f64 {
    if total == 0 {
        return base;
    }
    let x = (step.min(total) as f64) / total as f64;
    0.5 * base * (1.0 + (std::f64::consts::PI * x).cos())
}

/// [`cosine_lr`] after `warmup` steps of a linear ramp from `base / warmup` to `base`; the
/// cosine then runs over the remaining `total − warmup` steps. `warmup == 0` is [`cosine_lr`].
pub fn warmup_cosine_lr(base: f64, step: u64, total: u64, warmup: u64) -> f64 {
    if warmup == 0 {
        return cosine_lr(base, step, total);
    }
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    cosine_lr(base, step - warmup, total.saturating_sub(warmup))
}

/// The optimiser over a VarStore's trainable variables (sorted by name).
pub struct Sgd {
    params: Vec<(String, Tensor)>,
    momentum_buffers: Vec<Tensor>,
    /// Momentum μ.
    pub momentum: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
}

impl Sgd {
    /// Trainable variables of `vs`, zero momentum.
    pub fn new(vs: &nn::VarStore, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let momentum_buffers = params
            .iter()
            .map(|(_, p)| p.zeros_like().detach())
            .collect();
        Sgd {
            params,
            momentum_buffers,
            momentum,
            weight_decay,
        }
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr` (variables without a gradient are left alone).
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for ((_, p), m) in self.params.iter_mut().zip(&mut self.momentum_buffers) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let d = &g + &*p * self.weight_decay;
                m.copy_(&(&*m * self.momentum + d));
                p.copy_(&(&*p - &*m * lr));
            }
        });
    }

    /// Momentum buffers named `momentum.<variable>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.momentum_buffers)
            .map(|((n, _), m)| (format!("momentum.{n}"), m.shallow_clone()))
            .collect()
    }

    /// Restores buffers saved by [`Sgd::state`]; every one must be present.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        for ((n, p), m) in self.params.iter().zip(&mut self.momentum_buffers) {
            let key = format!("momentum.{n}");
            let src = tensors
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("optimizer state {key} missing"))?;
            anyhow::ensure!(
                src.size() == p.size(),
                "optimizer state {key}: shape {:?}",
                src.size()
            );
            tch::no_grad(|| m.copy_(&src.to_device(m.device())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_pytorch_sgd_recurrence() {
        let seed = crate::testing::seeded("sgd");
        let _ = seed;
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var(
            "w",
            &[5],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let mut opt = Sgd::new(&vs, 0.9, 1e-4);
        let target = Tensor::randn([5], (Kind::Float, Device::Cpu));
        // Reference by hand in f64.
        let mut p: Vec<f64> = Vec::<f32>::try_from(&w.detach())
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let tv: Vec<f64> = Vec::<f32>::try_from(&target)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let mut m = [0f64; 5];
        for k in 0..6u64 {
            let lr = cosine_lr(0.05, k, 6);
            opt.zero_grad();
            (&w - &target).square().sum(Kind::Float).backward();
            opt.step(lr);
            for i in 0..5 {
                let g = 2.0 * (p[i] - tv[i]) + 1e-4 * p[i];
                m[i] = 0.9 * m[i] + g;
                p[i] -= lr * m[i];
            }
        }
        let got = Vec::<f32>::try_from(&w.detach()).unwrap();
        for i in 0..5 {
            assert!(
                (got[i] as f64 - p[i]).abs() < 1e-5,
                "{i}: {} vs {}",
                got[i],
                p[i]
            );
        }
        assert_eq!(cosine_lr(0.05, 0, 10), 0.05);
        assert!(cosine_lr(0.05, 10, 10).abs() < 1e-12);
        assert!((cosine_lr(0.05, 5, 10) - 0.025).abs() < 1e-12);
        assert_eq!(warmup_cosine_lr(0.05, 3, 10, 0), cosine_lr(0.05, 3, 10));
        assert!((warmup_cosine_lr(0.04, 0, 10, 4) - 0.01).abs() < 1e-12);
        assert!((warmup_cosine_lr(0.04, 3, 10, 4) - 0.04).abs() < 1e-12);
        assert_eq!(warmup_cosine_lr(0.04, 4, 10, 4), 0.04);
        assert!(warmup_cosine_lr(0.04, 10, 10, 4).abs() < 1e-12);
    }
}
