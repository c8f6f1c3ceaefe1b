//! lorkd-trainer: LoRKD (CVPR 2024) department experts on ShuffleNetV2 with libtorch.
//!
//! # API (for the fit / eval / teacher commands)
//!
//! ```text
//! let cfg = Config::numbered(Arch::ShuffleNetV2X1_0, 3, /*T*/ 11, /*classes*/ 5);  // or Config::new(.., departments)
//! let vs = nn::VarStore::new(device);
//! let mut model = ShuffleNetLoRKD::new(&vs.root(), &cfg);      // names = torchvision keys
//! model.set_expert_conv_mode(ExpertConvMode::Auto);            // Auto | Eks | Lowrank | Looped
//! let ids = DeptIds::new(&[0, 2, 2, 1], cfg.num_departments(), device)?;  // once per batch
//! let f = model.forward_t(&xs, DeptSel::Mixed(&ids), /*train*/ true);     // [B, feature_dim]
//! let logits_t = model.head_logits(&f.index_select(0, &idx_t), t);        // heads.<t>
//! let unified = model.unified_logits(&f);                                 // head (Option)
//! // DeptSel::One(t): whole batch one department (fused W_t); DeptSel::Shared: W0 only.
//! Checkpoint::from_var_store(&cfg, &vs).save(path)?;
//! let (vs, model) = Checkpoint::load(path)?.into_model(device)?;
//! calibrate_bn(&model, |m| { m.forward_t(&xs, sel, true); });             // BN stats from a batch
//! let teacher = ResNet::new(&vs.root(), ResNetArch::ResNet50, 3, classes, 1e-5);
//! ```
//!
//! Modules: [`eks_conv`] (Eq. 1, all exact modes), [`models`] (student, teachers, BN),
//! [`params`] (Table 4 accounting), [`checkpoint`] (docs/checkpoint-format.md), [`fold`]
//! (BN + scaling folding identity), [`gradcam`] (Fig. 3 heat maps), [`bench`] (training-step timing), [`cmd`] (CLI subcommands).
#![deny(unsafe_code)]
// libtorch's autocast/TF32 switches are C calls tch does not wrap (each block: SAFETY).
#[allow(unsafe_code)]
pub mod amp;
pub mod bench;
pub mod checkpoint;
pub mod cmd;
pub mod config;
pub mod eks_conv;
pub mod fold;
pub mod gradcam;
pub mod models;
pub mod params;
pub mod testing;
pub mod train;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use config::{Arch, Config, Department};
pub use eks_conv::{DeptIds, DeptSel, EksConv2d, ExpertConvMode};
pub use models::resnet::{ResNet, ResNetArch};
pub use models::shufflenet::ShuffleNetLoRKD;
pub use models::{calibrate_bn, BatchNorm2d, HasBatchNorms};

/// The device the trainer uses: CUDA when libtorch sees one, else CPU.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// `data` as a 1-d tensor on `device`, without making the host wait for the device. A
/// blocking host-to-CUDA copy synchronises the stream: the per-step index, label and flip
/// tensors did that several times a step. A non-blocking copy from pageable memory is staged
/// by the driver before `cudaMemcpyAsync` returns (so `data` may go at once) and is queued on
/// the stream without a device synchronisation. (Pinning first would cost the same host copy
/// and makes libtorch 2.11 print a deprecation warning per call through tch's API.) A copy
/// larger than the driver's staging space (the image batch: 38.5 MB at 256 × 224²) may
/// still wait for earlier staged chunks; on the H200 this was not measured apart.
pub fn upload<T: tch::kind::Element>(data: &[T], device: tch::Device) -> tch::Tensor {
    let host = tch::Tensor::from_slice(data);
    if device.is_cuda() {
        host.to_device_(device, host.kind(), true, false)
    } else {
        host.to_device(device)
    }
}
