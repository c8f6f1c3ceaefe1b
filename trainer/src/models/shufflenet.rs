//! ShuffleNetV2 (Ma et al., ECCV 2018) as the LoRKD student: torchvision's layout and
//! `state_dict` names, every ungrouped conv (stem, all 1x1, conv5) an [`EksConv2d`] with one
//! low-rank expert per department, depthwise convs and BatchNorm shared; per-department linear
//! heads on the pooled feature plus an optional unified head over all classes.
use tch::{nn, Tensor};

use super::{BatchNorm2d, HasBatchNorms};
use crate::config::Config;
use crate::eks_conv::{DeptSel, EksConv2d, ExpertConvMode, LoraSpec};

/// A conv followed by BatchNorm (and optionally ReLU), as in torchvision's `Sequential`s.
#[derive(Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: EksConv2d,
    /// Its BatchNorm.
    pub bn: BatchNorm2d,
    /// Whether a ReLU follows.
    pub relu: bool,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        conv_p: &nn::Path,
        bn_p: &nn::Path,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        groups: i64,
        relu: bool,
        lora: Option<LoraSpec>,
        eps: f64,
    ) -> Self {
        let conv = EksConv2d::new(conv_p, cin, cout, k, stride, k / 2, groups, lora);
        Self {
            conv,
            bn: BatchNorm2d::new(bn_p, cout, eps),
            relu,
        }
    }

    fn forward(&self, xs: &Tensor, sel: DeptSel, mode: ExpertConvMode, train: bool) -> Tensor {
        let ys = self.bn.forward_t(&self.conv.forward(xs, sel, mode), train);
        if self.relu {
            ys.relu()
        } else {
            ys
        }
    }
}

/// torchvision's `InvertedResidual`.
#[derive(Debug)]
pub struct InvertedResidual {
    /// `branch1` (stride 2 only): dw 3x3 + BN, 1x1 + BN + ReLU.
    pub branch1: Vec<ConvBn>,
    /// `branch2`: 1x1 + BN + ReLU, dw 3x3 + BN, 1x1 + BN + ReLU.
    pub branch2: Vec<ConvBn>,
    /// 1 or 2.
    pub stride: i64,
}

impl InvertedResidual {
    fn new(
        p: &nn::Path,
        inp: i64,
        oup: i64,
        stride: i64,
        lora: Option<LoraSpec>,
        eps: f64,
    ) -> Self {
        let bf = oup / 2;
        let b1 = p / "branch1";
        let b2 = p / "branch2";
        let branch1 = if stride > 1 {
            vec![
                ConvBn::new(
                    &(&b1 / "0"),
                    &(&b1 / "1"),
                    inp,
                    inp,
                    3,
                    stride,
                    inp,
                    false,
                    lora,
                    eps,
                ),
                ConvBn::new(
                    &(&b1 / "2"),
                    &(&b1 / "3"),
                    inp,
                    bf,
                    1,
                    1,
                    1,
                    true,
                    lora,
                    eps,
                ),
            ]
        } else {
            Vec::new()
        };
        let cin2 = if stride > 1 { inp } else { bf };
        let branch2 = vec![
            ConvBn::new(
                &(&b2 / "0"),
                &(&b2 / "1"),
                cin2,
                bf,
                1,
                1,
                1,
                true,
                lora,
                eps,
            ),
            ConvBn::new(
                &(&b2 / "3"),
                &(&b2 / "4"),
                bf,
                bf,
                3,
                stride,
                bf,
                false,
                lora,
                eps,
            ),
            ConvBn::new(&(&b2 / "5"), &(&b2 / "6"), bf, bf, 1, 1, 1, true, lora, eps),
        ];
        Self {
            branch1,
            branch2,
            stride,
        }
    }

    fn forward(&self, xs: &Tensor, sel: DeptSel, mode: ExpertConvMode, train: bool) -> Tensor {
        let run = |layers: &[ConvBn], x: &Tensor| {
            layers
                .iter()
                .fold(x.shallow_clone(), |x, l| l.forward(&x, sel, mode, train))
        };
        let out = if self.stride == 1 {
            let halves = xs.chunk(2, 1);
            Tensor::cat(
                &[halves[0].shallow_clone(), run(&self.branch2, &halves[1])],
                1,
            )
        } else {
            Tensor::cat(&[run(&self.branch1, xs), run(&self.branch2, xs)], 1)
        };
        channel_shuffle(&out, 2)
    }
}

/// torchvision's `channel_shuffle`.
pub fn channel_shuffle(xs: &Tensor, groups: i64) -> Tensor {
    let s = xs.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    xs.reshape([b, groups, c / groups, h, w])
        .transpose(1, 2)
        .contiguous()
        .reshape([b, c, h, w])
}

/// The ShuffleNetV2 backbone (everything but torchvision's `fc`).
#[derive(Debug)]
pub struct ShuffleNetV2 {
    /// `conv1.0` (3x3 stride 2, experts) + `conv1.1` + ReLU.
    pub conv1: ConvBn,
    /// `stage2`, `stage3`, `stage4`.
    pub stages: Vec<Vec<InvertedResidual>>,
    /// `conv5.0` (1x1, experts) + `conv5.1` + ReLU.
    pub conv5: ConvBn,
    /// Width of the pooled feature.
    pub feature_dim: i64,
}

impl ShuffleNetV2 {
    /// Builds the backbone under `p` (factors when `cfg.rank > 0`).
    pub fn new(p: &nn::Path, cfg: &Config) -> Self {
        let ch = cfg.arch.stage_out_channels();
        let lora = (cfg.rank > 0).then(|| LoraSpec {
            departments: cfg.num_departments(),
            rank: cfg.rank,
            alpha: cfg.lora_alpha,
        });
        let eps = cfg.bn_eps;
        let c1 = p / "conv1";
        let conv1 = ConvBn::new(
            &(&c1 / "0"),
            &(&c1 / "1"),
            cfg.in_channels,
            ch[0],
            3,
            2,
            1,
            true,
            lora,
            eps,
        );
        let mut inp = ch[0];
        let mut stages = Vec::new();
        for (s, (&repeats, &oup)) in cfg.arch.stage_repeats().iter().zip(&ch[1..4]).enumerate() {
            let sp = p / format!("stage{}", s + 2);
            let mut blocks = vec![InvertedResidual::new(&(&sp / "0"), inp, oup, 2, lora, eps)];
            for i in 1..repeats {
                blocks.push(InvertedResidual::new(&(&sp / i), oup, oup, 1, lora, eps));
            }
            stages.push(blocks);
            inp = oup;
        }
        let c5 = p / "conv5";
        let conv5 = ConvBn::new(
            &(&c5 / "0"),
            &(&c5 / "1"),
            inp,
            ch[4],
            1,
            1,
            1,
            true,
            lora,
            eps,
        );
        Self {
            conv1,
            stages,
            conv5,
            feature_dim: ch[4],
        }
    }

    /// Pooled features `[B, feature_dim]`.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        sel: DeptSel,
        mode: ExpertConvMode,
        train: bool,
    ) -> Tensor {
        self.feature_map_t(xs, sel, mode, train)
            .mean_dim([2i64, 3].as_slice(), false, None)
    }

    /// conv5's output before global pooling, `[B, feature_dim, h, w]` (Grad-CAM's layer).
    pub fn feature_map_t(
        &self,
        xs: &Tensor,
        sel: DeptSel,
        mode: ExpertConvMode,
        train: bool,
    ) -> Tensor {
        let mut x = self.conv1.forward(xs, sel, mode, train);
        x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in self.stages.iter().flatten() {
            x = block.forward(&x, sel, mode, train);
        }
        self.conv5.forward(&x, sel, mode, train)
    }

    /// Every conv+BN pair in forward order.
    pub fn layers(&self) -> Vec<&ConvBn> {
        let mut v = vec![&self.conv1];
        for b in self.stages.iter().flatten() {
            v.extend(b.branch1.iter());
            v.extend(b.branch2.iter());
        }
        v.push(&self.conv5);
        v
    }
}

/// The LoRKD student: backbone with department experts, per-department heads
/// (`heads.<t>`), optional unified head (`head`).
#[derive(Debug)]
pub struct ShuffleNetLoRKD {
    /// The backbone.
    pub backbone: ShuffleNetV2,
    /// One linear head per department.
    pub heads: Vec<nn::Linear>,
    /// Linear head over all departments' classes (for distillation), if configured.
    pub head: Option<nn::Linear>,
    /// The configuration it was built from.
    pub config: Config,
    mode: ExpertConvMode,
}

impl ShuffleNetLoRKD {
    /// Builds the student under `p` (use the VarStore root so names match the checkpoint).
    pub fn new(p: &nn::Path, cfg: &Config) -> Self {
        let backbone = ShuffleNetV2::new(p, cfg);
        let d = backbone.feature_dim;
        let hp = p / "heads";
        let heads = cfg
            .departments
            .iter()
            .enumerate()
            .map(|(t, dep)| nn::linear(&hp / t, d, dep.classes.len() as i64, Default::default()))
            .collect();
        let head = cfg
            .unified_head
            .then(|| nn::linear(p / "head", d, cfg.total_classes(), Default::default()));
        Self {
            backbone,
            heads,
            head,
            config: cfg.clone(),
            mode: ExpertConvMode::Auto,
        }
    }

    /// Selects how mixed batches are computed (same function, different speed).
    pub fn set_expert_conv_mode(&mut self, mode: ExpertConvMode) {
        self.mode = mode;
    }

    /// The current mixed-batch mode.
    pub fn expert_conv_mode(&self) -> ExpertConvMode {
        self.mode
    }

    /// Pooled backbone features with the selected experts; BN in training mode when `train`.
    pub fn forward_t(&self, xs: &Tensor, depts: DeptSel, train: bool) -> Tensor {
        self.backbone.forward_t(xs, depts, self.mode, train)
    }

    /// The last feature map before pooling (`forward_t` is its spatial mean).
    pub fn feature_map_t(&self, xs: &Tensor, depts: DeptSel, train: bool) -> Tensor {
        self.backbone.feature_map_t(xs, depts, self.mode, train)
    }

    /// Logits of department `t`'s head.
    pub fn head_logits(&self, features: &Tensor, t: usize) -> Tensor {
        features.apply(&self.heads[t])
    }

    /// Logits of the unified head (`None` when the model has none).
    pub fn unified_logits(&self, features: &Tensor) -> Option<Tensor> {
        self.head.as_ref().map(|h| features.apply(h))
    }
}

impl HasBatchNorms for ShuffleNetLoRKD {
    fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        self.backbone.layers().into_iter().map(|l| &l.bn).collect()
    }
}
