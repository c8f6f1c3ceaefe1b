//! `lorkd`: the bundle tool. Only dispatches; the work lives in the library.
#![deny(unsafe_code)]
use clap::Parser;

fn main() {
    default_sigpipe();
    let cli = lorkd_tools::cmd::Cli::parse();
    if let Err(e) = lorkd_tools::cmd::run(cli) {
        eprintln!("lorkd: {e:#}");
        std::process::exit(1);
    }
}

/// A reader that goes away (`lorkd bench … | head -3`) ends the process quietly, as it does
/// any Unix filter, instead of `println!` panicking on `EPIPE`: the Rust runtime starts with
/// SIGPIPE ignored. Test: `cli_errors::closed_stdout_is_quiet`.
#[cfg(unix)]
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: sets one signal's disposition to the default before any thread exists; no
    // handler (Rust or other) is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}
