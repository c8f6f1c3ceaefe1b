//! The ShuffleNetV2 graph (torchvision's layout: Ma et al., ECCV 2018) as the bundle's op
//! list, with checkpoint key names for every conv and BatchNorm.
//!
//! Values are numbered in definition order (value 0 is the input), as `Bundle::parse`
//! requires. A stride-1 unit is `shuffle(concat(x[:c/2], branch2(x[c/2:])))`, a stride-2 unit
//! `shuffle(concat(branch1(x), branch2(x)))`; the channel split is a `Slice`, never a copy.

use anyhow::{bail, Result};
use lorkd_runtime::format::Slice;

/// One convolution of the graph and where its tensors live in the checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    /// Checkpoint prefix of the conv (`stage2.0.branch2.0`): `<name>.weight`, `.lora_A`, ….
    pub name: String,
    /// Checkpoint prefix of the BatchNorm that follows (`stage2.0.branch2.1`).
    pub bn: String,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// Depthwise (groups == channels): shared, no department factors.
    pub depthwise: bool,
    pub relu: bool,
    /// Index among the expert (EKS) convs, in graph order.
    pub expert: Option<usize>,
}

/// One op of the graph; `conv` indexes [`Graph::convs`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Node {
    Conv {
        conv: usize,
        input: Slice,
        output: u16,
    },
    DwConv {
        conv: usize,
        input: Slice,
        output: u16,
    },
    MaxPool {
        input: u16,
        output: u16,
    },
    ConcatShuffle {
        a: Slice,
        b: Slice,
        output: u16,
    },
    PoolHead {
        input: u16,
    },
}

/// The whole graph: convs, value shapes `(h, w, c)` and ops in execution order.
#[derive(Clone, Debug)]
pub struct Graph {
    pub arch: String,
    pub convs: Vec<ConvSpec>,
    pub values: Vec<(usize, usize, usize)>,
    pub nodes: Vec<Node>,
    pub features: usize,
    pub experts: usize,
}

/// torchvision's `stages_out_channels` for a ShuffleNetV2 width.
pub fn stage_channels(arch: &str) -> Option<[usize; 5]> {
    Some(match arch {
        "shufflenet_v2_x0_5" => [24, 48, 96, 192, 1024],
        "shufflenet_v2_x1_0" => [24, 116, 232, 464, 1024],
        "shufflenet_v2_x1_5" => [24, 176, 352, 704, 1024],
        "shufflenet_v2_x2_0" => [24, 244, 488, 976, 2048],
        _ => return None,
    })
}

struct Builder {
    g: Graph,
}

fn full(value: u16, c: usize) -> Slice {
    Slice {
        value,
        c_off: 0,
        c_len: c as u16,
    }
}

fn out_hw(n: usize, k: usize, s: usize, p: usize) -> usize {
    (n + 2 * p - k) / s + 1
}

impl Builder {
    fn value(&mut self, h: usize, w: usize, c: usize) -> u16 {
        self.g.values.push((h, w, c));
        (self.g.values.len() - 1) as u16
    }

    /// Adds a conv (+BN, + optional ReLU) reading `input`; returns the output value.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        bn: &str,
        input: Slice,
        cout: usize,
        k: usize,
        s: usize,
        dw: bool,
        relu: bool,
    ) -> u16 {
        let (h, w, _) = self.g.values[input.value as usize];
        let pad = k / 2;
        let expert = if dw {
            None
        } else {
            self.g.experts += 1;
            Some(self.g.experts - 1)
        };
        self.g.convs.push(ConvSpec {
            name: name.into(),
            bn: bn.into(),
            cin: input.c_len as usize,
            cout,
            k,
            stride: s,
            pad,
            depthwise: dw,
            relu,
            expert,
        });
        let conv = self.g.convs.len() - 1;
        let output = self.value(out_hw(h, k, s, pad), out_hw(w, k, s, pad), cout);
        self.g.nodes.push(if dw {
            Node::DwConv {
                conv,
                input,
                output,
            }
        } else {
            Node::Conv {
                conv,
                input,
                output,
            }
        });
        output
    }

    fn unit(&mut self, p: &str, x: u16, inp: usize, oup: usize, stride: usize) -> u16 {
        let bf = oup / 2;
        let (a, b2_in) = if stride == 1 {
            (
                Slice {
                    value: x,
                    c_off: 0,
                    c_len: bf as u16,
                },
                Slice {
                    value: x,
                    c_off: bf as u16,
                    c_len: bf as u16,
                },
            )
        } else {
            let d = self.conv(
                &format!("{p}.branch1.0"),
                &format!("{p}.branch1.1"),
                full(x, inp),
                inp,
                3,
                stride,
                true,
                false,
            );
            let y = self.conv(
                &format!("{p}.branch1.2"),
                &format!("{p}.branch1.3"),
                full(d, inp),
                bf,
                1,
                1,
                false,
                true,
            );
            (full(y, bf), full(x, inp))
        };
        let y = self.conv(
            &format!("{p}.branch2.0"),
            &format!("{p}.branch2.1"),
            b2_in,
            bf,
            1,
            1,
            false,
            true,
        );
        let y = self.conv(
            &format!("{p}.branch2.3"),
            &format!("{p}.branch2.4"),
            full(y, bf),
            bf,
            3,
            stride,
            true,
            false,
        );
        let y = self.conv(
            &format!("{p}.branch2.5"),
            &format!("{p}.branch2.6"),
            full(y, bf),
            bf,
            1,
            1,
            false,
            true,
        );
        let (h, w, _) = self.g.values[y as usize];
        let output = self.value(h, w, 2 * bf);
        self.g.nodes.push(Node::ConcatShuffle {
            a,
            b: full(y, bf),
            output,
        });
        output
    }
}

/// The ShuffleNetV2 graph of `arch` for `in_channels` × `size` × `size` inputs.
pub fn shufflenet_v2(arch: &str, in_channels: usize, size: usize) -> Result<Graph> {
    let Some(ch) = stage_channels(arch) else {
        bail!(
            "metadata key `lorkd.arch`: unknown arch `{arch}` (shufflenet_v2_x0_5|x1_0|x1_5|x2_0)"
        )
    };
    if !(1..=3).contains(&in_channels) {
        bail!("metadata key `lorkd.in_channels`: {in_channels} (the bundle takes 1..=3)");
    }
    if !(32..=4096).contains(&size) {
        bail!("metadata key `lorkd.input_size`: {size} (the bundle takes 32..=4096)");
    }
    let mut b = Builder {
        g: Graph {
            arch: arch.into(),
            convs: vec![],
            values: vec![],
            nodes: vec![],
            features: ch[4],
            experts: 0,
        },
    };
    let x = b.value(size, size, in_channels);
    let x = b.conv(
        "conv1.0",
        "conv1.1",
        full(x, in_channels),
        ch[0],
        3,
        2,
        false,
        true,
    );
    let (h, w, c) = b.g.values[x as usize];
    let mp = b.value(out_hw(h, 3, 2, 1), out_hw(w, 3, 2, 1), c);
    b.g.nodes.push(Node::MaxPool {
        input: x,
        output: mp,
    });
    let (mut x, mut inp) = (mp, ch[0]);
    for (s, &oup) in ch[1..4].iter().enumerate() {
        for i in 0..[4, 8, 4][s] {
            x = b.unit(
                &format!("stage{}.{i}", s + 2),
                x,
                inp,
                oup,
                if i == 0 { 2 } else { 1 },
            );
            inp = oup;
        }
    }
    let x = b.conv("conv5.0", "conv5.1", full(x, inp), ch[4], 1, 1, false, true);
    b.g.nodes.push(Node::PoolHead { input: x });
    if b.g.values.len() > lorkd_runtime::format::view::MAX_VALUES {
        bail!("graph too large");
    }
    Ok(b.g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shufflenet_1_0_matches_torchvision_counts() {
        let g = shufflenet_v2("shufflenet_v2_x1_0", 3, 224).unwrap();
        // stem + 3 stride-2 units × 3 + 13 stride-1 units × 2 + conv5
        assert_eq!(g.experts, 1 + 3 * 3 + 13 * 2 + 1);
        let params: usize = g
            .convs
            .iter()
            .map(|c| c.cout * if c.depthwise { 9 } else { c.cin * c.k * c.k })
            .sum();
        let bn: usize = g.convs.iter().map(|c| 2 * c.cout).sum();
        // torchvision backbone (fc excluded) = 1,253,604 parameters, BN affine included.
        assert_eq!(params + bn, 1_253_604);
        assert_eq!(g.values[g.values.len() - 1], (7, 7, 1024));
    }
}
