//! One module per `lorkd-train` subcommand, each with clap `Args` and `run`.
pub mod add_department;
pub mod bench;
pub mod describe;
pub mod eval;
pub mod eval_bundle;
pub mod finetune;
pub mod fit;
pub mod gradcam;
pub mod init;
pub mod teacher;
pub mod transfer;

/// Run controls shared by the training commands (`fit`, `teacher`, `finetune`, `transfer`).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Numeric format on CUDA: f32 (`off`, default: measured fastest for this trainer so
    /// far), bf16 autocast (`bf16`), or bf16 autocast with channels_last (`bf16-cl`, what
    /// PyTorch is fastest with). Ignored on the CPU (docs/training.md).
    #[arg(long, value_enum, default_value = "off")]
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
    /// Where each split is prepared once as uint8 at the training size: a directory
    /// (default: $LORKD_CACHE_DIR/images or ~/.cache/lorkd/images, reused across runs),
    /// `memory`, or `off` (decode and resize every epoch).
    #[arg(long)]
    pub data_cache: Option<String>,
    /// Teacher logits computed once per image and flip (fp16, in the run's cache/) and
    /// reused every epoch (`on`), or the teacher run every step (`off`).
    #[arg(long, value_enum, default_value = "on")]
    pub teacher_cache: OnOff,
}

/// A switch on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl RunArgs {
    /// The training `Control` these flags ask for (announces autocast when it is on).
    pub fn control(&self) -> crate::train::run::Control {
        let mut ctl = crate::train::run::Control {
            progress: !self.quiet,
            threads: self.threads,
            ..Default::default()
        };
        if let Some(w) = self.workers {
            ctl.workers = w.max(1);
        }
        if let Some(c) = &self.data_cache {
            ctl.data_cache = lorkd_data::CacheMode::parse(c);
        }
        ctl.teacher_cache = self.teacher_cache == OnOff::On;
        ctl.amp = self.amp.enabled(ctl.device);
        ctl.channels_last = self.amp.channels_last(ctl.device);
        if ctl.amp {
            eprintln!(
                "mixed precision: bf16 autocast{} on {:?}",
                if ctl.channels_last {
                    ", channels_last"
                } else {
                    ""
                },
                ctl.device
            );
        }
        ctl
    }
}
