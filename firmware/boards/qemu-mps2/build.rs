//! Puts the linker memory map where cortex-m-rt's link.x finds it (named memory-mps2.x in the
//! package so that it cannot shadow the copy, see RECIPE.md), and the self-check fixture
//! (`LORKD_FW_FIXTURE`, written by `firmware/run-qemu`) into OUT_DIR for `include_bytes!`,
//! and the vendor's ed25519 public key the firmware boots bundles signed by
//! (`LORKD_FW_PUBKEY`: a `lorkd keygen` `.pub` file; required — a firmware without a key
//! would have nothing to verify against).
use std::{env, fs, path::PathBuf};

/// The 32 key bytes of a `lorkd-ed25519-public-v1` file.
fn read_pubkey(path: &str) -> [u8; 32] {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("LORKD_FW_PUBKEY={path}: {e}"));
    let mut lines = text.lines();
    assert_eq!(
        lines.next().map(str::trim),
        Some("lorkd-ed25519-public-v1"),
        "LORKD_FW_PUBKEY={path}: not a lorkd public key file"
    );
    let hex = lines.next().unwrap_or("").trim();
    assert!(
        hex.len() == 64 && hex.is_ascii(),
        "LORKD_FW_PUBKEY={path}: key line is not 64 hex digits"
    );
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .unwrap_or_else(|_| panic!("LORKD_FW_PUBKEY={path}: bad hex"));
    }
    k
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory-mps2.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory-mps2.x");
    println!("cargo:rerun-if-env-changed=LORKD_FW_FIXTURE");
    let fixture = out.join("fixture.bin");
    match env::var_os("LORKD_FW_FIXTURE") {
        Some(p) => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&p).display());
            fs::copy(&p, &fixture).unwrap();
        }
        None => fs::write(&fixture, []).unwrap(),
    }
    println!("cargo:rerun-if-env-changed=LORKD_FW_PUBKEY");
    let path = env::var("LORKD_FW_PUBKEY").unwrap_or_else(|_| {
        panic!(
            "set LORKD_FW_PUBKEY to the vendor's public key file (`lorkd keygen`; \
             firmware/run-qemu passes the fixture's test key)"
        )
    });
    println!("cargo:rerun-if-changed={path}");
    fs::write(out.join("vendor_key.bin"), read_pubkey(&path)).unwrap();
}
