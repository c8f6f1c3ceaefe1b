//! Architectures: the ShuffleNetV2 student with department experts and ResNet teachers,
//! both named like torchvision's `state_dict` so weights move between the two as-is.
use std::cell::Cell;

use tch::{nn, Tensor};

pub mod resnet;
pub mod shufflenet;

/// torchvision's BatchNorm momentum.
pub const BN_MOMENTUM: f64 = 0.1;

/// BatchNorm2d with torchvision's init (γ = 1, β = 0, μ = 0, σ² = 1) and names
/// (`weight`, `bias`, `running_mean`, `running_var`). The running-statistics momentum can be
/// raised to 1 to copy one batch's statistics (see [`calibrate_bn`]).
#[derive(Debug)]
pub struct BatchNorm2d {
    /// γ.
    pub weight: Tensor,
    /// β.
    pub bias: Tensor,
    /// μ (running).
    pub running_mean: Tensor,
    /// σ² (running).
    pub running_var: Tensor,
    /// ε.
    pub eps: f64,
    momentum: Cell<f64>,
}

impl BatchNorm2d {
    /// Creates the four tensors under `p`.
    pub fn new(p: &nn::Path, c: i64, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[c], nn::Init::Const(1.0)),
            bias: p.var("bias", &[c], nn::Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[c]),
            running_var: p.ones_no_train("running_var", &[c]),
            eps,
            momentum: Cell::new(BN_MOMENTUM),
        }
    }

    /// Batch statistics (and running-stat update) when `train`, running statistics otherwise.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::batch_norm(
            xs,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum.get(),
            self.eps,
            true,
        )
    }

    /// Sets the running-statistics momentum (1.0: the next training batch replaces them).
    pub fn set_momentum(&self, m: f64) {
        self.momentum.set(m);
    }

    /// Per-channel scale `γ / √(σ² + ε)` of the eval-mode BN.
    pub fn scale(&self) -> Tensor {
        &self.weight / (&self.running_var + self.eps).sqrt()
    }
}

/// Implemented by models holding [`BatchNorm2d`] layers.
pub trait HasBatchNorms {
    /// Every BatchNorm of the model.
    fn batch_norms(&self) -> Vec<&BatchNorm2d>;
}

/// Sets every BN's running statistics to the statistics of one forward pass (`forward` runs
/// the model in training mode), without touching parameters. Keeps an untrained network from
/// collapsing in eval mode (DESIGN.md, "Beware collapsed test networks").
pub fn calibrate_bn<M: HasBatchNorms>(model: &M, forward: impl FnOnce(&M)) {
    for bn in model.batch_norms() {
        bn.set_momentum(1.0);
    }
    tch::no_grad(|| forward(model));
    for bn in model.batch_norms() {
        bn.set_momentum(BN_MOMENTUM);
    }
}
