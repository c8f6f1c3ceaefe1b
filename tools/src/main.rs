//! `lorkd`: the bundle tool. Only dispatches; the work lives in the library.
#![deny(unsafe_code)]
use clap::Parser;

fn main() {
    let cli = lorkd_tools::cmd::Cli::parse();
    if let Err(e) = lorkd_tools::cmd::run(cli) {
        eprintln!("lorkd: {e:#}");
        std::process::exit(1);
    }
}
