//! Helpers of the fuzz targets: seed bundles made in memory (no corpus needed to reach the
//! validators) and a reseal that refreshes every hash and the base id after a mutation, so
//! mutated manifests, tables and blobs get past the integrity checks to the structural
//! validators, the engine and the switch.
use std::sync::OnceLock;

use lorkd_runtime::engine::testnet::{NetSpec, TestNet};
use lorkd_runtime::format::header::{DeltaHeader, Header, DELTA_HEADER_LEN};
use lorkd_runtime::format::view::base_id_of;
use lorkd_runtime::format::write::{write_blob, write_bundle};
use lorkd_runtime::format::{DeltaDType, DeptEntry, DeptManifest, Seq};

/// The pieces of a bundle as located by its header (no validation).
#[derive(Clone, Debug)]
pub struct Parts {
    /// The encoded shared manifest.
    pub manifest: Vec<u8>,
    /// The shared payload.
    pub shared: Vec<u8>,
    /// `(name, blob)` per department.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// Splits `bytes` into its parts by the header and table, or None when they cannot be located.
pub fn split(bytes: &[u8]) -> Option<Parts> {
    let h = Header::decode(bytes).ok()?;
    let manifest = h.manifest.slice(bytes).ok()?.to_vec();
    let shared = h.shared.slice(bytes).ok()?.to_vec();
    let table = Seq::<DeptEntry<'_>>::from_encoded(h.dept_count, h.table.slice(bytes).ok()?);
    table.validate().ok()?;
    let mut blobs = Vec::new();
    for e in table.iter() {
        let start = e.offset as usize;
        let blob = bytes.get(start..start.checked_add(e.len as usize)?)?;
        blobs.push((e.name.to_string(), blob.to_vec()));
    }
    Some(Parts {
        manifest,
        shared,
        blobs,
    })
}

/// Reassembles `p` with fresh section hashes, file hash and base id, every blob rebound to
/// that base id with a fresh blob hash (a blob whose header or manifest no longer decodes
/// is kept as it is, hashes and all).
pub fn reseal(p: &Parts) -> Option<Vec<u8>> {
    let base = base_id_of(&p.manifest, &p.shared);
    let mut blobs = Vec::new();
    for (name, blob) in &p.blobs {
        let fresh = (|| {
            let h = DeltaHeader::decode(blob).ok()?;
            let end = DELTA_HEADER_LEN.checked_add(h.manifest_len as usize)?;
            let mb = blob.get(DELTA_HEADER_LEN..end)?;
            let (mut m, _) = postcard::take_from_bytes::<DeptManifest<'_>>(mb).ok()?;
            m.base_id = base;
            write_blob(&m, blob.get(h.payload_offset as usize..)?).ok()
        })();
        blobs.push((name.as_str(), fresh.unwrap_or_else(|| blob.clone())));
    }
    write_bundle(&p.manifest, &p.shared, &blobs, false).ok()
}

/// Valid bundles of tiny random nets (8×8 inputs, so a mutated bundle that still parses
/// runs through the engine in microseconds): f32 and int8, each delta type.
pub fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = Vec::new();
        for (i, dt) in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8]
            .into_iter()
            .enumerate()
        {
            let net = TestNet::random(
                NetSpec {
                    size: 8,
                    c0: 4,
                    cb: 2,
                    features: 4,
                    rank: 1,
                    classes: &[2, 3],
                    delta_dtype: dt,
                },
                i as u64,
            );
            let ranges: Vec<Vec<(f32, f32)>> = net
                .depts
                .iter()
                .map(|_| net.values.iter().map(|_| (-1.0, 3.0)).collect())
                .collect();
            out.push(net.bundle_f32());
            out.push(net.bundle_int8(&ranges));
        }
        out
    })
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
