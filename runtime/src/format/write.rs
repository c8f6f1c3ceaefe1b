//! The writer side of the format (`std` feature): the packer and the update maker assemble
//! files through these functions, so reader and writer share one definition of the layout.

use std::vec::Vec;

use serde::Serialize;

use super::header::{
    DeltaHeader, Header, Section, DELTA_HEADER_LEN, FLAG_SIGNED, HEADER_LEN, VERSION,
};
use super::view::{base_id_of, file_hash};
use super::{DeptEntry, DeptManifest, Precision, Seq, TensorRef, ALIGN};
use crate::quant::{quantize_per_channel, quantize_per_column, QParams};

/// Pads `v` with zeros to a multiple of [`ALIGN`].
pub fn pad_to_align(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(ALIGN) {
        v.push(0);
    }
}

/// A payload section under construction (shared payload or a delta blob's payload): every
/// tensor starts 16-aligned and is addressed by the [`TensorRef`] its push returns. The
/// packer and the test fixture store every tensor through it.
#[derive(Clone, Debug, Default)]
pub struct Payload(pub Vec<u8>);

impl Payload {
    /// Appends `bytes` at the next aligned offset; `None` once the payload passes 4 GiB.
    pub fn push(&mut self, bytes: &[u8]) -> Option<TensorRef> {
        pad_to_align(&mut self.0);
        let offset = u32::try_from(self.0.len()).ok()?;
        let len = u32::try_from(bytes.len()).ok()?;
        offset.checked_add(len)?;
        self.0.extend_from_slice(bytes);
        Some(TensorRef { offset, len })
    }

    /// Appends little-endian f32s.
    pub fn push_f32(&mut self, x: &[f32]) -> Option<TensorRef> {
        self.push(&f32_bytes(x))
    }

    /// Appends int8 codes.
    pub fn push_i8(&mut self, q: &[i8]) -> Option<TensorRef> {
        self.push(bytemuck::cast_slice(q))
    }

    /// Appends per-value activation parameters, [`QParams::to_le_bytes`] each (8 B).
    pub fn push_qparams(&mut self, q: &[QParams]) -> Option<TensorRef> {
        let b: Vec<u8> = q.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.push(&b)
    }

    /// Appends a conv weight of `channels` output channels in `precision` and returns
    /// `(weight, wscale)`: f32 as is with an empty `wscale`; int8 quantised per output
    /// channel by [`crate::quant::quantize_channel`], then the f32 scales. `depthwise`
    /// weights are `[3, 3, C]` (a channel is a column), others OIHW (a channel is a row).
    pub fn push_weight(
        &mut self,
        w: &[f32],
        channels: usize,
        depthwise: bool,
        precision: Precision,
    ) -> Option<(TensorRef, TensorRef)> {
        match precision {
            Precision::F32 => Some((self.push_f32(w)?, self.push(&[])?)),
            Precision::Int8 => {
                let (q, s) = if depthwise {
                    quantize_per_column(w, channels)
                } else {
                    quantize_per_channel(w, channels)
                };
                Some((self.push_i8(&q)?, self.push_f32(&s)?))
            }
        }
    }
}

/// Little-endian f32 bytes.
pub fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// postcard-encodes `items` back to back, for a [`Seq`] (returns count and bytes).
pub fn encode_seq<T: Serialize>(items: &[T]) -> Result<(u32, Vec<u8>), postcard::Error> {
    let mut bytes = Vec::new();
    for it in items {
        bytes.extend_from_slice(&postcard::to_allocvec(it)?);
    }
    let n = u32::try_from(items.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    Ok((n, bytes))
}

/// A self-contained delta blob: header, postcard manifest, zero padding, `payload`
/// (which starts 16-aligned; `TensorRef`s in `manifest` are relative to it).
pub fn write_blob(manifest: &DeptManifest<'_>, payload: &[u8]) -> Result<Vec<u8>, postcard::Error> {
    let m = postcard::to_allocvec(manifest)?;
    let mut out = vec![0u8; DELTA_HEADER_LEN];
    out.extend_from_slice(&m);
    pad_to_align(&mut out);
    let payload_offset = out.len();
    out.extend_from_slice(payload);
    let h = DeltaHeader {
        manifest_len: m.len() as u32,
        payload_offset: payload_offset as u32,
        payload_len: payload.len() as u32,
        sha256: sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            &out[DELTA_HEADER_LEN..],
        ))
        .into(),
    };
    out[..DELTA_HEADER_LEN].copy_from_slice(&h.encode());
    Ok(out)
}

/// Assembles a bundle from the encoded shared manifest, the shared payload and the
/// departments' blobs (name, blob). With `signed`, the flag is set and the caller must
/// append the 64-byte ed25519 signature of the returned bytes.
pub fn write_bundle(
    manifest: &[u8],
    shared: &[u8],
    blobs: &[(&str, Vec<u8>)],
    signed: bool,
) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![0u8; HEADER_LEN];
    let msec = Section {
        offset: HEADER_LEN as u32,
        len: manifest.len() as u32,
    };
    out.extend_from_slice(manifest);
    pad_to_align(&mut out);
    let ssec = Section {
        offset: out.len() as u32,
        len: shared.len() as u32,
    };
    out.extend_from_slice(shared);
    pad_to_align(&mut out);
    let blobs_start = out.len();
    let mut entries = Vec::new();
    for (name, blob) in blobs {
        pad_to_align(&mut out);
        entries.push(DeptEntry {
            name,
            offset: out.len() as u32,
            len: blob.len() as u32,
        });
        out.extend_from_slice(blob);
    }
    let bsec = Section {
        offset: blobs_start as u32,
        len: (out.len() - blobs_start) as u32,
    };
    let (count, table) = encode_seq(&entries)?;
    let _ = Seq::<DeptEntry<'_>>::from_encoded(count, &table); // the table is a Seq's body
    let tsec = Section {
        offset: out.len() as u32,
        len: table.len() as u32,
    };
    out.extend_from_slice(&table);
    if out.len() > u32::MAX as usize {
        return Err(postcard::Error::SerializeBufferFull);
    }
    let sha = |b: &[u8]| -> [u8; 32] { <sha2::Sha256 as sha2::Digest>::digest(b).into() };
    let mut h = Header {
        version: VERSION,
        flags: if signed { FLAG_SIGNED } else { 0 },
        file_len: out.len() as u32,
        dept_count: count,
        manifest: msec,
        shared: ssec,
        blobs: bsec,
        table: tsec,
        base_id: base_id_of(manifest, shared),
        manifest_sha256: sha(manifest),
        shared_sha256: sha(shared),
        table_sha256: sha(&table),
        file_sha256: [0; 32],
    };
    out[..HEADER_LEN].copy_from_slice(&h.encode());
    h.file_sha256 = file_hash(&out);
    out[..HEADER_LEN].copy_from_slice(&h.encode());
    Ok(out)
}
