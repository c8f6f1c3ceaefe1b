//! The training pipeline: data from `lorkd-data`, the LoRKD loss, SGD with cosine
//! annealing, resumable runs, the teacher, evaluation.
//!
//! - [`loss`]: CE on department heads + β·α²·KL(teacher ‖ student) (the paper's objective);
//! - [`sgd`]: SGD momentum / weight decay / cosine with savable state;
//! - [`run`]: what the commands share: [`run::Control`], Ctrl-C, one epoch's bookkeeping
//!   (progress, device-side sums, NaN stop), `metrics.jsonl` lines, the one accuracy loop;
//! - [`fit`]: `lorkd|mtl|mtl-kd|stl|stl-kd` runs, checkpoints, `--resume`;
//! - [`finetune`]: one department's factors and head retrained, the rest bit-identical;
//! - [`teacher`]: ResNet teacher training, TorchScript teachers; [`teacher_cache`]: its
//!   logits computed once per image and flip;
//! - [`transfer`]: a downstream task from a department's fused expert, the shared backbone
//!   or scratch (new head, whole network fine-tuned with AdamW);
//! - [`eval`]: per-department top-1, experts vs shared weights, confusion, AUC;
//! - [`input`]: splits prepared once as `uint8`, batches gathered by index, flipped and
//!   normalised on the device;
//! - [`data`]: the bridge from `lorkd-data` batches to tensors; [`io`]: safetensors helpers.
pub mod data;
pub mod eval;
pub mod finetune;
pub mod fit;
pub mod input;
pub mod io;
pub mod loss;
pub mod run;
pub mod sgd;
pub mod teacher;
pub mod teacher_cache;
pub mod transfer;
