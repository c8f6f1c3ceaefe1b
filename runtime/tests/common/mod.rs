//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

pub mod bundle;

/// The test's seed: `LORKD_SEED` when set, else fresh; printed so a failure can be replayed.
pub fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed = {s} (replay with LORKD_SEED={s})");
    s
}
