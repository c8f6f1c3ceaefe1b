//! ResNet-18 / ResNet-50 teachers (He et al., CVPR 2016; torchvision v1.5 layout: stride on
//! the 3x3 of the bottleneck), plain convolutions, torchvision `state_dict` names
//! (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, `fc`), configurable input
//! channels and classes.
use std::fmt;
use std::str::FromStr;

use tch::{nn, Tensor};

use super::{BatchNorm2d, HasBatchNorms};

/// Teacher depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetArch {
    /// `resnet18`: BasicBlock, [2, 2, 2, 2].
    ResNet18,
    /// `resnet50`: Bottleneck, [3, 4, 6, 3].
    ResNet50,
}

impl ResNetArch {
    /// torchvision's model function name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ResNet18 => "resnet18",
            Self::ResNet50 => "resnet50",
        }
    }

    fn blocks(self) -> ([usize; 4], bool) {
        match self {
            Self::ResNet18 => ([2, 2, 2, 2], false),
            Self::ResNet50 => ([3, 4, 6, 3], true),
        }
    }
}

impl fmt::Display for ResNetArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ResNetArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "resnet18" => Ok(Self::ResNet18),
            "resnet50" => Ok(Self::ResNet50),
            _ => Err(format!("unknown teacher arch `{s}` (resnet18|resnet50)")),
        }
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, BatchNorm2d)>,
    downsample: Option<(nn::Conv2D, BatchNorm2d)>,
}

impl Block {
    fn new(
        p: &nn::Path,
        cin: i64,
        planes: i64,
        stride: i64,
        bottleneck: bool,
        eps: f64,
    ) -> (Self, i64) {
        let (shapes, cout): (Vec<(i64, i64, i64, i64)>, i64) = if bottleneck {
            let out = planes * 4;
            (
                vec![
                    (cin, planes, 1, 1),
                    (planes, planes, 3, stride),
                    (planes, out, 1, 1),
                ],
                out,
            )
        } else {
            (
                vec![(cin, planes, 3, stride), (planes, planes, 3, 1)],
                planes,
            )
        };
        let convs = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (ci, co, k, s))| {
                (
                    conv(p / format!("conv{}", i + 1), ci, co, k, s),
                    BatchNorm2d::new(&(p / format!("bn{}", i + 1)), co, eps),
                )
            })
            .collect();
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = p / "downsample";
            (
                conv(&d / "0", cin, cout, 1, stride),
                BatchNorm2d::new(&(&d / "1"), cout, eps),
            )
        });
        (Self { convs, downsample }, cout)
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let n = self.convs.len();
        let mut y = xs.shallow_clone();
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            y = bn.forward_t(&xs_apply(&y, c), train);
            if i + 1 < n {
                y = y.relu();
            }
        }
        let id = match &self.downsample {
            Some((c, bn)) => bn.forward_t(&xs_apply(xs, c), train),
            None => xs.shallow_clone(),
        };
        (y + id).relu()
    }
}

fn xs_apply(xs: &Tensor, c: &nn::Conv2D) -> Tensor {
    xs.apply(c)
}

/// A ResNet classifier.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Block>>,
    /// Final linear layer (`fc`).
    pub fc: nn::Linear,
    /// Pooled feature width (512 or 2048).
    pub feature_dim: i64,
}

impl ResNet {
    /// Builds `arch` under `p` for `in_channels` inputs and `classes` outputs.
    pub fn new(
        p: &nn::Path,
        arch: ResNetArch,
        in_channels: i64,
        classes: i64,
        bn_eps: f64,
    ) -> Self {
        let (repeats, bottleneck) = arch.blocks();
        let conv1 = nn::conv2d(
            p / "conv1",
            in_channels,
            64,
            7,
            nn::ConvConfig {
                stride: 2,
                padding: 3,
                bias: false,
                ..Default::default()
            },
        );
        let bn1 = BatchNorm2d::new(&(p / "bn1"), 64, bn_eps);
        let mut cin = 64;
        let mut layers = Vec::new();
        for (l, &n) in repeats.iter().enumerate() {
            let lp = p / format!("layer{}", l + 1);
            let planes = 64 << l;
            let mut blocks = Vec::new();
            for i in 0..n {
                let stride = if i == 0 && l > 0 { 2 } else { 1 };
                let (b, cout) = Block::new(&(&lp / i), cin, planes, stride, bottleneck, bn_eps);
                blocks.push(b);
                cin = cout;
            }
            layers.push(blocks);
        }
        let fc = nn::linear(p / "fc", cin, classes, Default::default());
        Self {
            conv1,
            bn1,
            layers,
            fc,
            feature_dim: cin,
        }
    }

    /// Pooled features `[B, feature_dim]`.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.feature_map_t(xs, train)
            .mean_dim([2i64, 3].as_slice(), false, None)
    }

    /// The last stage's output before global pooling, `[B, feature_dim, h, w]`.
    pub fn feature_map_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.bn1.forward_t(&xs.apply(&self.conv1), train).relu();
        x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for b in self.layers.iter().flatten() {
            x = b.forward_t(&x, train);
        }
        x
    }

    /// Logits from pooled features (the classifier alone).
    pub fn classify(&self, features: &Tensor) -> Tensor {
        features.apply(&self.fc)
    }

    /// Logits `[B, classes]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features_t(xs, train).apply(&self.fc)
    }
}

impl HasBatchNorms for ResNet {
    fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let mut v = vec![&self.bn1];
        for b in self.layers.iter().flatten() {
            v.extend(b.convs.iter().map(|(_, bn)| bn));
            v.extend(b.downsample.iter().map(|(_, bn)| bn));
        }
        v
    }
}
