//! Folding eval-mode BatchNorm and the LoRA scaling into an expert conv (DESIGN.md,
//! "Deployment math"): with `g_o = γ_o / √(σ²_o + ε)`,
//! `g·(W0 + s·ΔW_t) = g·W0 + reshape(((g ⊗ 1_k)·s·B_t) · A_t)`, bias `β − μ·g`.
//! The folded delta keeps rank r·k, so the packer ships `A_t` unchanged and `B_t` with
//! its rows scaled; this module is the identity it relies on, checked against conv + BN.
use tch::Tensor;

use crate::eks_conv::EksConv2d;
use crate::models::BatchNorm2d;

/// An expert conv with BN and scaling folded in.
#[derive(Debug)]
pub struct FoldedExpertConv {
    /// `g · W0`, `[Cout, Cin/groups, k, k]`.
    pub w0: Tensor,
    /// `β − μ·g`, `[Cout]`, shared by all departments.
    pub bias: Tensor,
    /// `A` unchanged, `[T, r·k, Cin·k]` (absent for plain convs).
    pub a: Option<Tensor>,
    /// `(g ⊗ 1_k) · s · B`, `[T, Cout·k, r·k]` (absent for plain convs).
    pub b: Option<Tensor>,
    /// Kernel size.
    pub k: i64,
}

/// Folds `bn` (eval mode) and the conv's scaling.
pub fn fold_conv_bn(conv: &EksConv2d, bn: &BatchNorm2d) -> FoldedExpertConv {
    let g = bn.scale().detach();
    let w0 = &conv.weight.detach() * g.reshape([-1, 1, 1, 1]);
    let bias = &bn.bias.detach() - &bn.running_mean * &g;
    // Row o·k + kh of B belongs to output channel o (row-major reshape).
    let row_scale = g.repeat_interleave_self_int(conv.k, Some(0), None::<i64>) * conv.scaling;
    let b = conv
        .lora_b
        .as_ref()
        .map(|b| b.detach() * row_scale.reshape([1, -1, 1]));
    FoldedExpertConv {
        w0,
        bias,
        a: conv.lora_a.as_ref().map(Tensor::detach),
        b,
        k: conv.k,
    }
}

impl FoldedExpertConv {
    /// Folded weight of department `t` (`None`: shared only): `g·W0 + reshape(B'_t · A_t)`.
    pub fn weight(&self, t: Option<i64>) -> Tensor {
        match (t, &self.a, &self.b) {
            (Some(t), Some(a), Some(b)) => {
                &self.w0 + b.get(t).matmul(&a.get(t)).reshape(self.w0.size())
            }
            _ => self.w0.shallow_clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eks_conv::{DeptSel, ExpertConvMode, LoraSpec};
    use crate::testing::{randomize_all, seeded};
    use tch::{nn, Device, Kind};

    /// conv(x, folded W_t) + bias == BN_eval(conv(x, W_t)) for every department, k = 1 and 3.
    #[test]
    fn fold_equals_conv_bn() {
        let seed = seeded("fold_equals_conv_bn");
        for &(k, stride) in &[(1, 1), (3, 2), (3, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let lora = LoraSpec {
                departments: 3,
                rank: 2,
                alpha: 5.0,
            };
            let conv = EksConv2d::new(&(vs.root() / "c"), 6, 10, k, stride, k / 2, 1, Some(lora));
            let bn = BatchNorm2d::new(&(vs.root() / "bn"), 10, 1e-5);
            randomize_all(&vs, 1.0, seed + k as u64);
            tch::no_grad(|| {
                // Positive variances far from 1 and non-zero means, so the fold matters.
                bn.running_var
                    .shallow_clone()
                    .copy_(&(Tensor::rand([10], (Kind::Float, Device::Cpu)) * 3.0 + 0.1));
            });
            let xs = Tensor::randn([4, 6, 9, 9], (Kind::Float, Device::Cpu));
            let folded = fold_conv_bn(&conv, &bn);
            for t in 0..3 {
                let want = bn.forward_t(
                    &conv.forward(&xs, DeptSel::One(t), ExpertConvMode::Eks),
                    false,
                );
                let got = xs.conv2d(
                    &folded.weight(Some(t)),
                    Some(&folded.bias),
                    [stride, stride],
                    [k / 2, k / 2],
                    [1, 1],
                    1,
                );
                let err = crate::eks_conv::max_rel_err(&got, &want);
                assert!(err < 1e-5, "k={k} t={t} rel err {err}");
                // The delta matters: department output differs from the shared one.
                let shared = xs.conv2d(
                    &folded.weight(None),
                    Some(&folded.bias),
                    [stride, stride],
                    [k / 2, k / 2],
                    [1, 1],
                    1,
                );
                assert!(crate::eks_conv::max_rel_err(&shared, &want) > 1e-3);
            }
        }
    }
}
