//! The training pipeline: data from `lorkd-data`, the LoRKD loss, SGD with cosine
//! annealing, resumable runs, the teacher, evaluation.
//!
//! - [`loss`]: CE on department heads + β·α²·KL(teacher ‖ student) (the paper's objective);
//! - [`sgd`]: SGD momentum / weight decay / cosine with savable state;
//! - [`fit`]: `lorkd|mtl|mtl-kd|stl` runs, checkpoints, `--resume`, NaN and Ctrl-C handling;
//! - [`finetune`]: one department's factors and head retrained, the rest bit-identical;
//! - [`teacher`]: ResNet teacher training, TorchScript teachers;
//! - [`eval`]: per-department top-1, experts vs shared weights;
//! - [`data`]: the bridge from `lorkd-data` batches to tensors; [`io`]: safetensors helpers.
pub mod data;
pub mod eval;
pub mod finetune;
pub mod fit;
pub mod io;
pub mod loss;
pub mod sgd;
pub mod teacher;
