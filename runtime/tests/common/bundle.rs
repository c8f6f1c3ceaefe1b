//! Bundles for mutation tests and fuzz targets (also compiled into `runtime/fuzz` by path):
//! seed bundles made in memory, the parts of a bundle as its header locates them, and a
//! reseal that refreshes every hash and the base id after a mutation, so mutated manifests,
//! tables and blobs get past the integrity checks to the structural validators.
use lorkd_runtime::engine::testnet::{NetSpec, TestNet};
use lorkd_runtime::format::header::{DeltaHeader, Header, DELTA_HEADER_LEN};
use lorkd_runtime::format::view::base_id_of;
use lorkd_runtime::format::write::{write_blob, write_bundle};
use lorkd_runtime::format::{DeltaDType, DeptEntry, DeptManifest, Seq};

/// Per delta type, the f32 bundle and the int8 one (every activation calibrated to
/// `[-1, 3]`) of a random net of `base`'s sizes; net `i` is drawn from `seed(i)`.
pub fn seed_bundles(base: NetSpec, seed: impl Fn(usize) -> u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, dt) in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8]
        .into_iter()
        .enumerate()
    {
        let net = TestNet::random(
            NetSpec {
                delta_dtype: dt,
                ..base
            },
            seed(i),
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
}

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
/// that base id with a fresh blob hash. `strict`: None when a blob's header or manifest no
/// longer decodes; otherwise such a blob is kept as it is, hashes and all.
pub fn reseal_with(p: &Parts, strict: bool) -> Option<Vec<u8>> {
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
        let fresh = match fresh {
            Some(f) => f,
            None if strict => return None,
            None => blob.clone(),
        };
        blobs.push((name.as_str(), fresh));
    }
    write_bundle(&p.manifest, &p.shared, &blobs, false).ok()
}
