//! `cargo fuzz run parse_bundle`: arbitrary bytes into `Bundle::parse` and
//! `Dept::parse_blob`; whatever parses must also run blind in the engine.
//!
//! The hashes make random bytes fail early, so each input is tried three ways: as is; split
//! into its parts and resealed (every section hash, the base id, each blob's base id and
//! hash refreshed: `lorkd_runtime_fuzz::reseal`); and as a mutation script applied to one
//! of the in-memory seed bundles, then resealed — which reaches the manifest, table and blob
//! validators, the engine and the switch without a seed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::header::Header;
use lorkd_runtime::format::view::file_hash;
use lorkd_runtime::format::{Bundle, Dept, Mode};

fn exercise(bytes: &[u8]) {
    let aligned = AlignedBytes::new(bytes);
    let Ok(b) = Bundle::parse(aligned.as_slice()) else {
        return;
    };
    for i in 0..b.department_count() {
        let blob = b.department_blob(i).expect("validated blob");
        Dept::parse_blob(blob, b.manifest(), b.base_id()).expect("validated blob reparses");
    }
    let m = b.manifest();
    let n = m.input.channels as usize * m.input.size as usize * m.input.size as usize;
    let input = vec![0.5f32; n];
    for mode in [Mode::Materialized, Mode::Streaming] {
        let mut arena = AlignedBytes::zeroed(b.arena_bytes(mode));
        let Ok(mut e) = Engine::new(&b, arena.as_mut_slice(), mode) else {
            continue;
        };
        for i in 0..b.department_count() {
            let classes = b.department(i).expect("validated department").classes();
            let mut logits = vec![0f32; classes];
            if e.select(i).is_ok() {
                let _ = e.infer(&input, &mut logits);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if let Some(v) = lorkd_runtime_fuzz::split(data).and_then(|p| lorkd_runtime_fuzz::reseal(&p)) {
        exercise(&v);
    }
    if let Some((&pick, script)) = data.split_first() {
        let seeds = lorkd_runtime_fuzz::seeds();
        if let Some(mut p) = lorkd_runtime_fuzz::split(&seeds[pick as usize % seeds.len()]) {
            lorkd_runtime_fuzz::mutate(&mut p, script);
            if let Some(v) = lorkd_runtime_fuzz::reseal(&p) {
                exercise(&v);
            }
        }
    }
    // Reseal the whole-file hash so header and section checks past it are reached.
    if let Ok(h) = Header::decode(data) {
        let n = (h.file_len as usize).min(data.len());
        if n >= 224 {
            let mut v = data.to_vec();
            let fh = file_hash(&v[..n]);
            v[192..224].copy_from_slice(&fh);
            exercise(&v);
        }
    }
});
