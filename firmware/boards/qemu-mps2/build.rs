//! Puts the linker memory map where cortex-m-rt's link.x finds it (named memory-mps2.x in the
//! package so that it cannot shadow the copy, see RECIPE.md), and the self-check fixture
//! (`LORKD_FW_FIXTURE`, written by `firmware/run-qemu`) into OUT_DIR for `include_bytes!`.
use std::{env, fs, path::PathBuf};

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
}
