//! Helpers of the fuzz targets: seed bundles made in memory (no corpus needed to reach the
//! validators) and a reseal that refreshes every hash and the base id after a mutation, so
//! mutated manifests, tables and blobs get past the integrity checks to the structural
//! validators, the engine and the switch.
use std::sync::OnceLock;

use lorkd_runtime::engine::testnet::NetSpec;
use lorkd_runtime::format::DeltaDType;

// The runtime tests' bundle helpers, one definition for both.
#[path = "../../tests/common/bundle.rs"]
mod bundle;
pub use bundle::{split, Parts};

/// Valid bundles of tiny random nets (8×8 inputs, so a mutated bundle that still parses
/// runs through the engine in microseconds): f32 and int8, each delta type.
pub fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let tiny = NetSpec {
            size: 8,
            c0: 4,
            cb: 2,
            features: 4,
            rank: 1,
            classes: &[2, 3],
            delta_dtype: DeltaDType::F32,
        };
        bundle::seed_bundles(tiny, |i| i as u64)
    })
}

/// Reassembles `p` with fresh hashes and base id (a blob that no longer decodes is kept as
/// it is, hashes and all).
pub fn reseal(p: &Parts) -> Option<Vec<u8>> {
    bundle::reseal_with(p, false)
}

/// Applies a mutation script to `p`: 4 bytes per edit — part (manifest, shared, blob i), a
/// little-endian 16-bit position (wrapped to the part), and a byte XORed into it; a part
/// byte with the top bit set truncates or extends the part instead.
pub fn mutate(p: &mut Parts, script: &[u8]) {
    for op in script.chunks_exact(4) {
        let nparts = 2 + p.blobs.len();
        let which = (op[0] & 0x7F) as usize % nparts;
        let part: &mut Vec<u8> = match which {
            0 => &mut p.manifest,
            1 => &mut p.shared,
            i => &mut p.blobs[i - 2].1,
        };
        let at = u16::from_le_bytes([op[1], op[2]]) as usize;
        if op[0] & 0x80 != 0 {
            if op[3] & 1 == 0 {
                part.truncate(at % (part.len() + 1));
            } else {
                part.extend(std::iter::repeat_n(op[3], at % 64));
            }
        } else if !part.is_empty() {
            let n = part.len();
            part[at % n] ^= op[3];
        }
    }
}
