//! One module per `lorkd-train` subcommand, each with clap `Args` and `run`.
pub mod bench;
pub mod describe;
pub mod eval;
pub mod eval_bundle;
pub mod finetune;
pub mod fit;
pub mod init;
pub mod teacher;

/// Run controls shared by the training commands (`fit`, `teacher`, `finetune`).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Mixed precision on CUDA: bf16 autocast of the forward passes (default), or off.
    /// Ignored on the CPU. Untested on a GPU (docs/training.md).
    #[arg(long, value_enum, default_value = "bf16")]
    pub amp: crate::amp::Amp,
    /// libtorch threads (default: one per core; 1 is faster on a busy machine).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Data loader threads (default: cores, up to 8).
    #[arg(long)]
    pub workers: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// The training `Control` these flags ask for (announces autocast when it is on).
    pub fn control(&self) -> crate::train::fit::Control {
        let mut ctl = crate::train::fit::Control {
            progress: !self.quiet,
            threads: self.threads,
            ..Default::default()
        };
        if let Some(w) = self.workers {
            ctl.workers = w.max(1);
        }
        ctl.amp = self.amp.enabled(ctl.device);
        if ctl.amp {
            eprintln!("mixed precision: bf16 autocast on {:?}", ctl.device);
        }
        ctl
    }
}
