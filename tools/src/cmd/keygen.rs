//! `lorkd keygen -o KEY`: an ed25519 key pair for signing bundles and updates.

use std::path::PathBuf;

use anyhow::Result;

/// Generate a signing key (KEY, mode 0600) and its public key (KEY.pub).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing KEY / KEY.pub (devices that trust the old key will refuse what
    /// the new one signs).
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    crate::keys::generate_with(&a.output, a.force)?;
    eprintln!(
        "wrote {} and {}.pub",
        a.output.display(),
        a.output.display()
    );
    Ok(())
}
