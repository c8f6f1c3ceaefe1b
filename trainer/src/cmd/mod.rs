//! One module per `lorkd-train` subcommand, each with clap `Args` and `run`.
pub mod bench;
pub mod describe;
pub mod eval;
pub mod eval_bundle;
pub mod finetune;
pub mod fit;
pub mod init;
pub mod teacher;
