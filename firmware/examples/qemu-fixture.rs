//! Writes the QEMU board's self-check fixture (format: `lorkd_firmware::fixture`; what it
//! holds: `tests/fakes/gen.rs`).
//!
//! Regenerate: `cargo run -p lorkd-firmware --example qemu-fixture -- OUT.bin [SIZE]` (run by
//! `firmware/run-qemu`; deterministic: same bytes every run). SIZE (default 32) is the input
//! side; `run-qemu --bench` also counts a 64 px model. Also writes `OUT.bin.pub`, the
//! public key the fixture's bundle and update are signed with, which the board build takes
//! as its vendor key (`LORKD_FW_PUBKEY`).
#[path = "../tests/fakes/gen.rs"]
mod gen;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: qemu-fixture OUT.bin [SIZE]")?;
    let (bytes, summary) = match std::env::args().nth(2) {
        Some(s) => gen::fixture_at(s.parse().context("SIZE: an integer")?)?,
        None => gen::fixture()?,
    };
    std::fs::write(&out, &bytes)?;
    std::fs::write(format!("{out}.pub"), gen::public_key_text())?;
    eprintln!("qemu-fixture: {out}: {summary}");
    Ok(())
}
