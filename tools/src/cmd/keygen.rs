//! `lorkd keygen -o KEY`: an ed25519 key pair for signing bundles and updates.

use std::path::PathBuf;

use anyhow::Result;

/// Generate a signing key (KEY, mode 0600) and its public key (KEY.pub).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    crate::keys::generate(&a.output)?;
    eprintln!(
        "wrote {} and {}.pub",
        a.output.display(),
        a.output.display()
    );
    Ok(())
}
