//! Embeds an rpath to libtorch's folder so `lorkd-train` runs without LD_LIBRARY_PATH, and
//! links `libtorch_cuda.so` with `--no-as-needed`: otherwise the linker drops it (no symbol
//! is referenced directly) and CUDA looks unavailable on a GPU machine.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .map(PathBuf::from);
    let Some(lib) = lib else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
