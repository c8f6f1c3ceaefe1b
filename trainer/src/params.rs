//! Exact parameter and MAC accounting (the paper's Table 4), by arithmetic over the same
//! layer plan the model builds; a test checks it against a built model's tensors.
//!
//! Each expert conv adds `T · r · k² · (Cin + Cout)` (A: `T·r·k·Cin·k`, B: `T·Cout·k·r·k`).
//! Training parameters = backbone + LoRA (heads excluded, as the paper counts); a deployed
//! expert is one fused backbone, so it has exactly the backbone's parameters.
use serde::Serialize;

use crate::config::Arch;

/// One convolution of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvInfo {
    /// torchvision name of the conv module (`stage2.0.branch2.0`).
    pub name: String,
    /// Input channels.
    pub cin: i64,
    /// Output channels.
    pub cout: i64,
    /// Kernel size.
    pub k: i64,
    /// Stride.
    pub stride: i64,
    /// Groups.
    pub groups: i64,
    /// Output height = width for a square input.
    pub out_hw: i64,
}

impl ConvInfo {
    /// Weight parameters `Cout · Cin/groups · k²`.
    pub fn weight_params(&self) -> i64 {
        self.cout * (self.cin / self.groups) * self.k * self.k
    }

    /// Multiply-accumulates for one image.
    pub fn macs(&self) -> i64 {
        self.weight_params() * self.out_hw * self.out_hw
    }

    /// LoRA parameters `T · r · k² · (Cin + Cout)` (0 for grouped convs).
    pub fn lora_params(&self, departments: i64, rank: i64) -> i64 {
        if self.groups == 1 {
            departments * rank * self.k * self.k * (self.cin + self.cout)
        } else {
            0
        }
    }
}

fn out_size(h: i64, k: i64, stride: i64) -> i64 {
    (h + 2 * (k / 2) - k) / stride + 1
}

/// Every conv of ShuffleNetV2 `arch` for a square `input`, in forward order; each is followed
/// by a BatchNorm of `cout` channels.
pub fn shufflenet_convs(arch: Arch, in_channels: i64, input: i64) -> Vec<ConvInfo> {
    let ch = arch.stage_out_channels();
    let mut v = Vec::new();
    let mut push = |name: String, cin, cout, k, stride, groups, h: &mut i64| {
        *h = out_size(*h, k, stride);
        v.push(ConvInfo {
            name,
            cin,
            cout,
            k,
            stride,
            groups,
            out_hw: *h,
        });
    };
    let mut h = input;
    push("conv1.0".into(), in_channels, ch[0], 3, 2, 1, &mut h);
    h = out_size(h, 3, 2); // max pool 3/2/1
    let mut inp = ch[0];
    for (s, (&repeats, &oup)) in arch.stage_repeats().iter().zip(&ch[1..4]).enumerate() {
        let bf = oup / 2;
        for i in 0..repeats {
            let p = format!("stage{}.{i}", s + 2);
            if i == 0 {
                let mut h1 = h;
                push(format!("{p}.branch1.0"), inp, inp, 3, 2, inp, &mut h1);
                push(format!("{p}.branch1.2"), inp, bf, 1, 1, 1, &mut h1);
                push(format!("{p}.branch2.0"), inp, bf, 1, 1, 1, &mut h);
                push(format!("{p}.branch2.3"), bf, bf, 3, 2, bf, &mut h);
            } else {
                push(format!("{p}.branch2.0"), bf, bf, 1, 1, 1, &mut h);
                push(format!("{p}.branch2.3"), bf, bf, 3, 1, bf, &mut h);
            }
            push(format!("{p}.branch2.5"), bf, bf, 1, 1, 1, &mut h);
        }
        inp = oup;
    }
    push("conv5.0".into(), inp, ch[4], 1, 1, 1, &mut h);
    v
}

/// The numbers `lorkd-train describe` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamReport {
    /// Architecture name.
    pub arch: String,
    /// Departments `T`.
    pub departments: i64,
    /// Rank `r`.
    pub rank: i64,
    /// Input size for the MAC count.
    pub input: i64,
    /// Shared backbone: conv weights + BN γ, β (torchvision total minus `fc`).
    pub backbone_params: i64,
    /// All department factors.
    pub lora_params: i64,
    /// backbone + lora (heads excluded, as the paper counts).
    pub training_params: i64,
    /// One fused expert (heads excluded) = backbone.
    pub deployed_params: i64,
    /// Conv MACs of one image at `input`.
    pub deployed_macs: i64,
    /// Number of convs carrying experts.
    pub expert_convs: usize,
}

/// Exact accounting for ShuffleNetV2 `arch`.
pub fn shufflenet_report(
    arch: Arch,
    in_channels: i64,
    departments: i64,
    rank: i64,
    input: i64,
) -> ParamReport {
    let convs = shufflenet_convs(arch, in_channels, input);
    let backbone: i64 = convs.iter().map(|c| c.weight_params() + 2 * c.cout).sum();
    let lora: i64 = convs.iter().map(|c| c.lora_params(departments, rank)).sum();
    ParamReport {
        arch: arch.name().into(),
        departments,
        rank,
        input,
        backbone_params: backbone,
        lora_params: lora,
        training_params: backbone + lora,
        deployed_params: backbone,
        deployed_macs: convs.iter().map(ConvInfo::macs).sum(),
        expert_convs: convs.iter().filter(|c| c.groups == 1).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table 4 of the paper, to the unit (ShuffleNetV2 1.0x, 3-channel input).
    #[test]
    fn reproduces_paper_table4() {
        let r = |t, rank| shufflenet_report(Arch::ShuffleNetV2X1_0, 3, t, rank, 224);
        let base = r(11, 8);
        assert_eq!(base.backbone_params, 2_278_604 - (1024 * 1000 + 1000));
        assert_eq!(base.backbone_params, 1_253_604);
        assert_eq!(base.deployed_params, 1_253_604);
        // Exact integers; the paper rounds to 1.73 M, 2.21 M, 3.16 M, 2.12 M, 1.95 M.
        let cases = [
            (11, 4, 1_729_992, 1.73),
            (11, 8, 2_206_380, 2.21),
            (11, 16, 3_159_156, 3.16),
            (10, 8, 2_119_764, 2.12),
            (8, 8, 1_946_532, 1.95),
        ];
        for (t, rank, want, paper_m) in cases {
            let got = r(t, rank);
            assert_eq!(got.training_params, want, "T={t} r={rank}");
            assert_eq!(got.lora_params, want - 1_253_604);
            assert_eq!(
                format!("{:.2}", got.training_params as f64 / 1e6),
                format!("{paper_m:.2}")
            );
        }
        // Conv MACs at 224 (torchvision lists 0.14 GFLOPS; the paper about 0.15 G).
        assert_eq!(base.deployed_macs, 143_883_992);
        // Stem + conv5 + per stage 3 in the first block and 2 in each other one.
        assert_eq!(
            base.expert_convs,
            2 + (3 + 3 * 2) + (3 + 7 * 2) + (3 + 3 * 2)
        );
    }
}
