//! `cargo fuzz run parse_bundle`: arbitrary bytes into `Bundle::parse` and
//! `Dept::parse_blob`; whatever parses must also run blind in the engine.
//!
//! The hashes make random bytes fail early, so the input is also treated as a mutation of a
//! seed bundle and resealed (fresh hashes), which reaches the structural validators. Seed
//! corpus: `cargo test -p lorkd-runtime --test format_mutation` bundles, or any `.lorkd`.
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
