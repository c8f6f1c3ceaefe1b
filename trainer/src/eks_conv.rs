//! EKS convolution: one convolution layer holding a shared weight and one low-rank expert per
//! department (LoRKD, CVPR 2024, section 3.2, Eq. 1).
//!
//! Department `t` uses `W_t = W0 + s · reshape(B_t · A_t, [Cout, Cin, k, k])` with
//! `A [T, r·k, Cin·k]`, `B [T, Cout·k, r·k]`, `s = lora_alpha / r` (row-major reshape, as
//! loralib's `ConvLoRA`). A training batch mixes departments; Eq. 1 is computed in one of
//! these exact ways ([`ExpertConvMode`]):
//!
//! - **EKS** (the paper): per-sample weights `W_b = W0 + Σ_t m_bt · s·ΔW_t` (gathered by the
//!   sample's department id, i.e. the one-hot mix `m`), then ONE grouped convolution with
//!   `groups = batch` over the input viewed as `[1, B·Cin, H, W]`.
//! - **Lowrank** (k = 1 only, padding 0): `y_b = W0 ⋆ x_b + s · B_t (A_t x_b)`: one shared
//!   convolution for the whole batch plus a per-sample rank-r correction computed with
//!   gathered factors and batched matmuls (fused into the conv output by `baddbmm`).
//!   Convs with k > 1 fall back to EKS.
//! - **Looped** (reference): each department's samples through its own fused `W_t`, results
//!   put back in the original order.
//!
//! In every mode each `A_t`, `B_t` gets gradient only from its own department's samples
//! (gathers scatter their gradient back to the selected rows only) and `W0` from all samples.
use std::fmt;
use std::str::FromStr;

use tch::{nn, Device, Kind, Tensor};

/// How a layer computes a mixed-department batch. Every mode gives the same function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpertConvMode {
    /// Per layer, the fastest exact path measured on CPU (BENCHMARKS.md, "Trainer step
    /// (CPU)"): `Lowrank` for k = 1 convs (2.2x faster than EKS per step at 0.5x@64), `Eks`
    /// for k > 1 (the stem: 3-35 % faster than `Looped` fwd+bwd at 64 and 224 px, T = 2 and
    /// 10); a batch holding one department takes the fused single-weight path.
    #[default]
    Auto,
    /// Per-sample aggregated weights and one grouped convolution (groups = batch), Eq. 1.
    Eks,
    /// Shared convolution plus per-sample low-rank correction (k = 1; EKS for k > 1).
    Lowrank,
    /// Reference: one fused convolution per present department, results re-ordered.
    Looped,
}

impl ExpertConvMode {
    /// All modes, for benchmarks and CLI help.
    pub const ALL: [ExpertConvMode; 4] = [Self::Auto, Self::Eks, Self::Lowrank, Self::Looped];

    /// The CLI spelling (`auto`, `eks`, `lowrank`, `looped`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Eks => "eks",
            Self::Lowrank => "lowrank",
            Self::Looped => "looped",
        }
    }
}

impl fmt::Display for ExpertConvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExpertConvMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown expert-conv mode `{s}` (auto|eks|lowrank|looped)"))
    }
}

/// Error for department ids that do not fit the model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeptError {
    /// A department id outside `0..departments`.
    #[error("department id {id} at sample {index} is out of range (model has {departments})")]
    OutOfRange {
        /// Sample position in the batch.
        index: usize,
        /// The offending id.
        id: i64,
        /// Number of departments of the model.
        departments: i64,
    },
    /// An empty batch.
    #[error("empty batch of department ids")]
    Empty,
}

/// Per-sample department ids of a mixed batch, validated once and shared by every layer:
/// the id tensor for gathers, and the per-department index groups plus the inverse
/// permutation for the looped path.
#[derive(Debug)]
pub struct DeptIds {
    ids: Tensor,
    host: Vec<i64>,
    /// `(department, sample indices)` for each present department, in department order.
    groups: Vec<(i64, Tensor)>,
    /// Inverse of the permutation that concatenates `groups`.
    inverse: Tensor,
    /// One-hot `[B, T]` f32 mix (`m` of Eq. 1), for [`EksMix::OneHot`].
    onehot: Tensor,
}

/// How EKS forms its per-sample weights `W_b = W0 + Σ_t m_bt·s·ΔW_t`.
///
/// Both are exact. `Gather` selects row `ids[b]` of the `[T, …]` deltas (`index_select`);
/// its backward is an `index_add` of B rows into T, which on CUDA is an atomic scatter with
/// B/T-way contention on every weight element. `OneHot` multiplies the one-hot mix `[B, T]`
/// by the deltas `[T, Cout·Cin·k²]`: a GEMM forward and backward (`mᵀ·grad`), no atomics.
/// `LORKD_EKS_MIX=onehot` selects it; `trainer/gpu-check.sh` times both on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EksMix {
    /// `index_select` of the department rows (default).
    Gather,
    /// One-hot matrix product.
    OneHot,
}

impl EksMix {
    /// From `LORKD_EKS_MIX` (`gather` or `onehot`; default gather).
    pub fn from_env() -> Self {
        match std::env::var("LORKD_EKS_MIX").as_deref() {
            Ok("onehot") => EksMix::OneHot,
            _ => EksMix::Gather,
        }
    }
}

impl DeptIds {
    /// Validates `ids` against `departments` and prepares them on `device`.
    pub fn new(ids: &[i64], departments: i64, device: Device) -> Result<Self, DeptError> {
        if ids.is_empty() {
            return Err(DeptError::Empty);
        }
        if let Some((index, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &d)| d < 0 || d >= departments)
        {
            return Err(DeptError::OutOfRange {
                index,
                id,
                departments,
            });
        }
        let mut order = Vec::with_capacity(ids.len());
        let mut groups = Vec::new();
        for t in 0..departments {
            let idx: Vec<i64> = ids
                .iter()
                .enumerate()
                .filter(|(_, &d)| d == t)
                .map(|(i, _)| i as i64)
                .collect();
            if !idx.is_empty() {
                order.extend_from_slice(&idx);
                groups.push((t, crate::upload(&idx, device)));
            }
        }
        let mut inverse = vec![0i64; ids.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i as usize] = pos as i64;
        }
        let ids_t = crate::upload(ids, device);
        Ok(Self {
            onehot: ids_t.one_hot(departments).to_kind(Kind::Float),
            ids: ids_t,
            host: ids.to_vec(),
            groups,
            inverse: crate::upload(&inverse, device),
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.host.len()
    }

    /// Always false (an empty batch is refused by [`DeptIds::new`]).
    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// The ids as given.
    pub fn as_slice(&self) -> &[i64] {
        &self.host
    }

    /// The ids as an int64 tensor on the model's device.
    pub fn tensor(&self) -> &Tensor {
        &self.ids
    }

    /// The single department of the batch, if all samples share one.
    pub fn single(&self) -> Option<i64> {
        match self.groups.as_slice() {
            [(t, _)] => Some(*t),
            _ => None,
        }
    }
}

/// Which experts a forward pass uses.
#[derive(Debug, Clone, Copy)]
pub enum DeptSel<'a> {
    /// Shared weights `W0` only (the model before decomposition, or plain MTL).
    Shared,
    /// One department for the whole batch: `W_t` is fused once, then a normal conv.
    One(i64),
    /// A mixed batch with per-sample department ids.
    Mixed(&'a DeptIds),
}

/// LoRA factor shape of an [`EksConv2d`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraSpec {
    /// Number of departments `T`.
    pub departments: i64,
    /// Rank `r`.
    pub rank: i64,
    /// `lora_alpha`; the scaling is `lora_alpha / r`.
    pub alpha: f64,
}

/// A bias-free 2-D convolution whose shared weight `W0` carries, when ungrouped and given a
/// [`LoraSpec`], one low-rank expert per department.
#[derive(Debug)]
pub struct EksConv2d {
    /// Shared weight `W0 [Cout, Cin/groups, k, k]` (torchvision's `<conv>.weight`).
    pub weight: Tensor,
    /// `A [T, r·k, Cin·k]` (`<conv>.lora_A`), Kaiming-uniform (a = √5) at init.
    pub lora_a: Option<Tensor>,
    /// `B [T, Cout·k, r·k]` (`<conv>.lora_B`), zero at init.
    pub lora_b: Option<Tensor>,
    /// Input channels.
    pub cin: i64,
    /// Output channels.
    pub cout: i64,
    /// Square kernel size.
    pub k: i64,
    /// Stride.
    pub stride: i64,
    /// Zero padding.
    pub padding: i64,
    /// Groups (factors only when 1).
    pub groups: i64,
    /// `s = lora_alpha / r` (0 without factors).
    pub scaling: f64,
    /// How EKS forms per-sample weights.
    pub mix: EksMix,
}

fn uniform(bound: f64) -> nn::Init {
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

impl EksConv2d {
    /// Creates `weight` (and `lora_A`, `lora_B` when `groups == 1` and `lora` is given) under `p`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &nn::Path,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        padding: i64,
        groups: i64,
        lora: Option<LoraSpec>,
    ) -> Self {
        // PyTorch's Conv2d default init: kaiming_uniform(a = √5) => bound 1/√fan_in.
        let fan_in = (cin / groups) * k * k;
        let weight = p.var(
            "weight",
            &[cout, cin / groups, k, k],
            uniform(1.0 / (fan_in as f64).sqrt()),
        );
        let (lora_a, lora_b, scaling) = match lora {
            Some(l) if groups == 1 && l.departments > 0 && l.rank > 0 => {
                // Each A_t is a [r·k, Cin·k] matrix: fan_in = Cin·k, same bound rule.
                let a = p.var(
                    "lora_A",
                    &[l.departments, l.rank * k, cin * k],
                    uniform(1.0 / ((cin * k) as f64).sqrt()),
                );
                let b = p.var(
                    "lora_B",
                    &[l.departments, cout * k, l.rank * k],
                    nn::Init::Const(0.0),
                );
                (Some(a), Some(b), l.alpha / l.rank as f64)
            }
            _ => (None, None, 0.0),
        };
        Self {
            weight,
            lora_a,
            lora_b,
            cin,
            cout,
            k,
            stride,
            padding,
            groups,
            scaling,
            mix: EksMix::from_env(),
        }
    }

    /// Whether this conv carries department factors.
    pub fn has_experts(&self) -> bool {
        self.lora_a.is_some()
    }

    /// Number of departments (0 without factors).
    pub fn departments(&self) -> i64 {
        self.lora_a.as_ref().map_or(0, |a| a.size()[0])
    }

    fn factors(&self) -> Option<(&Tensor, &Tensor)> {
        self.lora_a.as_ref().zip(self.lora_b.as_ref())
    }

    /// `s · ΔW` for every department, `[T, Cout, Cin, k, k]`.
    pub fn scaled_deltas(&self) -> Option<Tensor> {
        let (a, b) = self.factors()?;
        let t = a.size()[0];
        Some((b.matmul(a) * self.scaling).reshape([t, self.cout, self.cin, self.k, self.k]))
    }

    /// The fused department weight `W_t = W0 + s·ΔW_t` (`W0` without factors).
    pub fn fused_weight(&self, t: i64) -> Tensor {
        match self.factors() {
            Some((a, b)) => {
                let delta = b
                    .get(t)
                    .matmul(&a.get(t))
                    .reshape([self.cout, self.cin, self.k, self.k]);
                &self.weight + delta * self.scaling
            }
            None => self.weight.shallow_clone(),
        }
    }

    fn conv(&self, xs: &Tensor, w: &Tensor) -> Tensor {
        xs.conv2d(
            w,
            None::<Tensor>,
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            self.groups,
        )
    }

    /// The path `mode` takes on this layer (`Auto` resolved; `Lowrank` only for k = 1, pad 0).
    pub fn resolve(&self, mode: ExpertConvMode) -> ExpertConvMode {
        let lowrank_ok = self.k == 1 && self.padding == 0;
        match mode {
            ExpertConvMode::Auto if lowrank_ok => ExpertConvMode::Lowrank,
            ExpertConvMode::Auto => ExpertConvMode::Eks,
            ExpertConvMode::Lowrank if !lowrank_ok => ExpertConvMode::Eks,
            m => m,
        }
    }

    /// Forward pass with the given experts and mixed-batch mode.
    pub fn forward(&self, xs: &Tensor, sel: DeptSel, mode: ExpertConvMode) -> Tensor {
        if !self.has_experts() {
            return self.conv(xs, &self.weight);
        }
        match sel {
            DeptSel::Shared => self.conv(xs, &self.weight),
            DeptSel::One(t) => self.conv(xs, &self.fused_weight(t)),
            DeptSel::Mixed(ids) => match self.resolve(mode) {
                // Auto takes the fast path when the batch holds one department only.
                _ if mode == ExpertConvMode::Auto && ids.single().is_some() => {
                    self.conv(xs, &self.fused_weight(ids.single().unwrap_or(0)))
                }
                ExpertConvMode::Eks | ExpertConvMode::Auto => self.forward_eks(xs, ids),
                ExpertConvMode::Lowrank => self.forward_lowrank(xs, ids),
                ExpertConvMode::Looped => self.forward_looped(xs, ids),
            },
        }
    }

    /// EKS (Eq. 1): per-sample weights and one grouped convolution with groups = batch.
    pub fn forward_eks(&self, xs: &Tensor, ids: &DeptIds) -> Tensor {
        let Some(deltas) = self.scaled_deltas() else {
            return self.conv(xs, &self.weight);
        };
        let n = xs.size()[0];
        let (h, w) = (xs.size()[2], xs.size()[3]);
        // W_b = W0 + Σ_t m_bt·s·ΔW_t: gathering row ids[b] is the one-hot mix.
        let mixed = match self.mix {
            EksMix::Gather => deltas.index_select(0, ids.tensor()),
            EksMix::OneHot => {
                let t = deltas.size()[0];
                ids.onehot
                    .to_kind(deltas.kind())
                    .matmul(&deltas.reshape([t, -1]))
                    .reshape([n, self.cout, self.cin, self.k, self.k])
            }
        };
        let per_sample = mixed + self.weight.unsqueeze(0);
        let ys = xs.reshape([1, n * self.cin, h, w]).conv2d(
            &per_sample.reshape([n * self.cout, self.cin, self.k, self.k]),
            None::<Tensor>,
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            n,
        );
        let (ho, wo) = (ys.size()[2], ys.size()[3]);
        ys.reshape([n, self.cout, ho, wo])
    }

    /// Shared conv plus `s · B_t (A_t x)` per sample (k = 1, padding 0; else EKS).
    pub fn forward_lowrank(&self, xs: &Tensor, ids: &DeptIds) -> Tensor {
        let Some((a, b)) = self.factors() else {
            return self.conv(xs, &self.weight);
        };
        if self.k != 1 || self.padding != 0 {
            return self.forward_eks(xs, ids);
        }
        let base = self.conv(xs, &self.weight);
        let size = base.size();
        let (n, ho, wo) = (size[0], size[2], size[3]);
        // A 1x1 conv with stride s reads every s-th pixel.
        let xs = if self.stride > 1 {
            xs.slice(2, 0, None, self.stride)
                .slice(3, 0, None, self.stride)
        } else {
            xs.shallow_clone()
        };
        let u = a
            .index_select(0, ids.tensor())
            .bmm(&xs.reshape([n, self.cin, ho * wo]));
        base.reshape([n, self.cout, ho * wo])
            .baddbmm(&b.index_select(0, ids.tensor()), &u, 1.0, self.scaling)
            .reshape([n, self.cout, ho, wo])
    }

    /// Reference: each present department's samples through its fused `W_t`, re-ordered.
    pub fn forward_looped(&self, xs: &Tensor, ids: &DeptIds) -> Tensor {
        let parts: Vec<Tensor> = ids
            .groups
            .iter()
            .map(|(t, idx)| self.conv(&xs.index_select(0, idx), &self.fused_weight(*t)))
            .collect();
        Tensor::cat(&parts, 0).index_select(0, &ids.inverse)
    }
}

/// Max relative error `max|a − b| / max(max|b|, 1e-30)`, the comparison used by the tests.
pub fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().to_kind(Kind::Double).double_value(&[]);
    let scale = b.abs().max().to_kind(Kind::Double).double_value(&[]);
    diff / scale.max(1e-30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn one_hot_mix_equals_gather_forward_and_gradients() {
        let seed = crate::testing::seeded("eks-mix");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        tch::manual_seed(seed as i64);
        let t = 4;
        let vs = nn::VarStore::new(Device::Cpu);
        let lora = LoraSpec {
            departments: t,
            rank: 2,
            alpha: 4.0,
        };
        let mut conv = EksConv2d::new(&vs.root(), 6, 5, 3, 1, 1, 1, Some(lora));
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                v.copy_(&v.randn_like());
            }
        });
        let ids: Vec<i64> = (0..7).map(|_| rng.gen_range(0..t)).collect();
        let ids = DeptIds::new(&ids, t, Device::Cpu).unwrap();
        let xs = Tensor::randn([7, 6, 8, 8], (Kind::Float, Device::Cpu));
        let mut run = |mix| {
            conv.mix = mix;
            for (_, v) in vs.variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let y = conv.forward_eks(&xs, &ids);
            (y * 0.5).sum(Kind::Float).backward();
            let mut grads: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .map(|(n, v)| (n, v.grad().copy()))
                .collect();
            grads.sort_by(|a, b| a.0.cmp(&b.0));
            (conv.forward_eks(&xs, &ids).detach(), grads)
        };
        let (ya, ga) = run(EksMix::Gather);
        let (yb, gb) = run(EksMix::OneHot);
        assert!(max_rel_err(&yb, &ya) < 1e-5);
        for ((n, a), (_, b)) in ga.iter().zip(&gb) {
            assert!(max_rel_err(b, a) < 1e-5, "{n}");
        }
    }
}
