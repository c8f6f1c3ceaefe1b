//! `Bundle::parse`: validate once, then run blind (STYLE item 8).
//!
//! After `parse` returns `Ok`, every `TensorRef` lies inside its payload, is 16-aligned and
//! has exactly the length its op's shape and dtype need; every value / slice index and channel
//! range exists; op shapes are consistent; the arena plan covers the activations (without a
//! live value being overwritten before it is read) plus `engine::layout::extra_bytes`; every
//! department blob fits the shared graph and names this bundle's base id; every hash (and the
//! signature, with `parse_signed`) matches. The engine can then index without checks.

use sha2::{Digest, Sha256};

use super::header::{
    DeltaHeader, Header, DELTA_HEADER_LEN, FILE_HASH_OFFSET, HEADER_LEN, SIGNATURE_LEN,
};
use super::{
    DeltaDType, DeptEntry, DeptManifest, FormatError, Manifest, Mode, Op, Precision, Seq, Slice,
    TensorRef, ValueDesc, ALIGN,
};
use crate::engine::layout;

/// Most activation values a graph may have (bounds the validator's work and stack).
pub const MAX_VALUES: usize = 1024;
/// Most ops a graph may have.
pub const MAX_OPS: usize = 1024;
/// Most named tensors in the shared manifest.
pub const MAX_TENSORS: usize = 4096;
/// Most departments in one bundle.
pub const MAX_DEPARTMENTS: usize = 1024;
/// Most classes of one department.
pub const MAX_CLASSES: usize = 65535;

type R<T> = Result<T, FormatError>;
use FormatError as E;

/// A parsed, fully validated bundle borrowing the file bytes.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    header: Header,
    manifest: Manifest<'a>,
    shared: &'a [u8],
    table: Seq<'a, DeptEntry<'a>>,
}

/// One department: its manifest and the payload its `TensorRef`s point into.
#[derive(Clone, Copy, Debug)]
pub struct Dept<'a> {
    pub manifest: DeptManifest<'a>,
    pub payload: &'a [u8],
}

/// SHA-256 of the shared part (manifest bytes ‖ shared payload): the base id.
pub fn base_id_of(manifest: &[u8], shared: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(manifest);
    h.update(shared);
    h.finalize().into()
}

/// SHA-256 of `bytes[..file_len]` with the header's file-hash field taken as zeros.
pub fn file_hash(covered: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    let cut = FILE_HASH_OFFSET.min(covered.len());
    h.update(&covered[..cut]);
    if covered.len() >= FILE_HASH_OFFSET + 32 {
        h.update([0u8; 32]);
        h.update(&covered[FILE_HASH_OFFSET + 32..]);
    }
    h.finalize().into()
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl<'a> Bundle<'a> {
    /// Parses and validates a bundle (every offset, length, shape, index and SHA-256).
    /// A signature, if present, is not checked: use [`Bundle::parse_signed`] for that.
    pub fn parse(bytes: &'a [u8]) -> R<Self> {
        Self::parse_inner(bytes, None)
    }

    /// As [`Bundle::parse`], and requires a valid ed25519 signature by `pubkey`.
    pub fn parse_signed(bytes: &'a [u8], pubkey: &[u8; 32]) -> R<Self> {
        Self::parse_inner(bytes, Some(pubkey))
    }

    fn parse_inner(bytes: &'a [u8], pubkey: Option<&[u8; 32]>) -> R<Self> {
        let header = Header::decode(bytes)?;
        let file_len = header.file_len as usize;
        let expect = if header.is_signed() {
            file_len.checked_add(SIGNATURE_LEN).ok_or(E::Overflow)?
        } else {
            file_len
        };
        if bytes.len() != expect || file_len < HEADER_LEN || bytes.len() > u32::MAX as usize {
            return Err(E::HeaderBadLength);
        }
        let covered = &bytes[..file_len];

        // Sections in file order, each after the previous one, the table ending the file.
        let h = &header;
        if h.manifest.offset as usize != HEADER_LEN
            || !(h.shared.offset as usize).is_multiple_of(ALIGN)
            || !(h.blobs.offset as usize).is_multiple_of(ALIGN)
            || (h.shared.offset as usize) < h.manifest.end()?
            || (h.blobs.offset as usize) < h.shared.end()?
            || (h.table.offset as usize) < h.blobs.end()?
            || h.table.end()? != file_len
        {
            return Err(E::SectionOutOfBounds);
        }

        if let Some(pk) = pubkey {
            if !header.is_signed() {
                return Err(E::SignatureMissing);
            }
            let vk = ed25519_dalek::VerifyingKey::from_bytes(pk).map_err(|_| E::SignatureBadKey)?;
            let mut sig = [0u8; SIGNATURE_LEN];
            sig.copy_from_slice(&bytes[file_len..]);
            let sig = ed25519_dalek::Signature::from_bytes(&sig);
            vk.verify_strict(covered, &sig)
                .map_err(|_| E::SignatureInvalid)?;
        }

        if file_hash(covered) != header.file_sha256 {
            return Err(E::FileHashMismatch);
        }
        let mbytes = header.manifest.slice(covered)?;
        let shared = header.shared.slice(covered)?;
        header.blobs.slice(covered)?;
        let tbytes = header.table.slice(covered)?;
        if sha(mbytes) != header.manifest_sha256
            || sha(shared) != header.shared_sha256
            || sha(tbytes) != header.table_sha256
        {
            return Err(E::SectionHashMismatch);
        }
        if base_id_of(mbytes, shared) != header.base_id {
            return Err(E::BaseIdMismatch);
        }

        let (manifest, rest) =
            postcard::take_from_bytes::<Manifest<'a>>(mbytes).map_err(|_| E::ManifestDecode)?;
        if !rest.is_empty() {
            return Err(E::ManifestDecode);
        }
        validate_manifest(&manifest, shared)?;

        // Department table: entries point at blobs inside the blobs region.
        let count = header.dept_count as usize;
        if count > MAX_DEPARTMENTS {
            return Err(E::DepartmentTable);
        }
        let table = Seq::<DeptEntry<'a>>::from_encoded(header.dept_count, tbytes);
        table.validate().map_err(|_| E::DepartmentTable)?;
        for (i, entry) in table.iter().enumerate() {
            let blob = entry_blob(covered, &header, &entry)?;
            let dept = Dept::parse_blob(blob, &manifest, &header.base_id)?;
            if dept.manifest.name != entry.name {
                return Err(E::DepartmentTable);
            }
            if table.iter().take(i).any(|e| e.name == entry.name) {
                return Err(E::DepartmentTable);
            }
        }
        Ok(Bundle {
            bytes,
            header,
            manifest,
            shared,
            table,
        })
    }

    /// The shared manifest (graph, tensor table, arena plan).
    pub fn manifest(&self) -> &Manifest<'a> {
        &self.manifest
    }
    /// The shared payload; the manifest's `TensorRef` offsets are relative to it.
    pub fn shared(&self) -> &'a [u8] {
        self.shared
    }
    /// SHA-256 of the shared part (manifest ‖ shared payload).
    pub fn base_id(&self) -> &[u8; 32] {
        &self.header.base_id
    }
    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The whole file, signature included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Number of departments.
    pub fn department_count(&self) -> usize {
        self.table.len()
    }
    /// The raw delta blob of department `i` (what a `.lkdu` update carries).
    pub fn department_blob(&self, i: usize) -> Option<&'a [u8]> {
        let entry = self.table.get(i)?;
        entry_blob(
            &self.bytes[..self.header.file_len as usize],
            &self.header,
            &entry,
        )
        .ok()
    }
    /// Department `i` (validated by `parse`; decoding here cannot fail on a parsed bundle).
    pub fn department(&self, i: usize) -> Option<Dept<'a>> {
        Dept::decode(self.department_blob(i)?).ok()
    }
    /// Index of the department called `name`.
    pub fn find_department(&self, name: &str) -> Option<usize> {
        self.table.iter().position(|e| e.name == name)
    }
    /// Exact arena bytes the engine needs in `mode` (planned by the packer).
    pub fn arena_bytes(&self, mode: Mode) -> usize {
        match mode {
            Mode::Materialized => self.manifest.arena.materialized_bytes as usize,
            Mode::Streaming => self.manifest.arena.streaming_bytes as usize,
        }
    }
    /// True when the file carries a signature (checked only by `parse_signed`).
    pub fn is_signed(&self) -> bool {
        self.header.is_signed()
    }
}

fn entry_blob<'a>(covered: &'a [u8], h: &Header, e: &DeptEntry<'_>) -> R<&'a [u8]> {
    let start = e.offset as usize;
    let end = start.checked_add(e.len as usize).ok_or(E::Overflow)?;
    if !start.is_multiple_of(ALIGN) || start < h.blobs.offset as usize || end > h.blobs.end()? {
        return Err(E::DepartmentTable);
    }
    covered.get(start..end).ok_or(E::DepartmentTable)
}

impl<'a> Dept<'a> {
    /// Parses and validates one delta blob against the shared manifest it will run with
    /// (which must come from a parsed [`Bundle`]) and that bundle's base id. Used for the
    /// blobs inside a bundle and for field-update slots alike.
    pub fn parse_blob(blob: &'a [u8], shared: &Manifest<'_>, base_id: &[u8; 32]) -> R<Self> {
        let h = DeltaHeader::decode(blob)?;
        if sha(&blob[DELTA_HEADER_LEN..]) != h.sha256 {
            return Err(E::SectionHashMismatch);
        }
        let dept = Self::decode_with(blob, &h)?;
        if &dept.manifest.base_id != base_id {
            return Err(E::DeptBaseMismatch);
        }
        validate_dept(&dept, shared)?;
        Ok(dept)
    }

    /// Decodes without hashing or validation (for blobs already validated).
    fn decode(blob: &'a [u8]) -> R<Self> {
        let h = DeltaHeader::decode(blob)?;
        Self::decode_with(blob, &h)
    }

    fn decode_with(blob: &'a [u8], h: &DeltaHeader) -> R<Self> {
        let mend = DELTA_HEADER_LEN + h.manifest_len as usize; // checked by DeltaHeader::decode
        let mbytes = &blob[DELTA_HEADER_LEN..mend];
        let (manifest, rest) =
            postcard::take_from_bytes::<DeptManifest<'a>>(mbytes).map_err(|_| E::DeptDecode)?;
        if !rest.is_empty() {
            return Err(E::DeptDecode);
        }
        Ok(Dept {
            manifest,
            payload: &blob[h.payload_offset as usize..],
        })
    }

    /// Number of classes of this department's head.
    pub fn classes(&self) -> usize {
        self.manifest.classes.len()
    }
}

// ---------------------------------------------------------------------------------------
// Checked arithmetic helpers.

fn mul(a: usize, b: usize) -> R<usize> {
    a.checked_mul(b).ok_or(E::Overflow)
}
fn add(a: usize, b: usize) -> R<usize> {
    a.checked_add(b).ok_or(E::Overflow)
}

/// `t` lies inside `payload`, starts 16-aligned, and is exactly `len` bytes.
fn check_tref(t: &TensorRef, payload: &[u8], len: usize) -> R<()> {
    let start = t.offset as usize;
    let end = add(start, t.len as usize)?;
    if !start.is_multiple_of(ALIGN) || end > payload.len() || t.len as usize != len {
        return Err(E::TensorBounds);
    }
    Ok(())
}

/// Little-endian f32s of a checked tensor.
fn f32s<'b>(t: &TensorRef, payload: &'b [u8]) -> impl Iterator<Item = f32> + 'b {
    let b = &payload[t.offset as usize..t.offset as usize + t.len as usize];
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Bytes of one activation element in the arena.
fn act_elem(p: Precision) -> usize {
    match p {
        Precision::F32 => 4,
        Precision::Int8 => 1,
    }
}

fn value_bytes(v: &ValueDesc, elem: usize) -> R<usize> {
    mul(mul(mul(v.h as usize, v.w as usize)?, v.c as usize)?, elem)
}

/// Output spatial size of a k×k window with `stride` and `pad` over `n`.
fn out_dim(n: u16, k: usize, stride: usize, pad: usize) -> R<usize> {
    let padded = add(n as usize, 2 * pad)?;
    if stride == 0 || padded < k {
        return Err(E::ManifestShape);
    }
    Ok((padded - k) / stride + 1)
}

/// A 1024-bit set for "value defined" bookkeeping without an allocator.
struct BitSet([u64; MAX_VALUES / 64]);
impl BitSet {
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Arena byte range of value `i` (values validated to fit).
fn value_range(values: &Seq<'_, ValueDesc>, i: usize, elem: usize) -> R<(usize, usize)> {
    let v = values.get(i).ok_or(E::ManifestIndex)?;
    let start = v.offset as usize;
    Ok((start, add(start, value_bytes(&v, elem)?)?))
}

/// Every value defined after `v` up to and including `out` must not overlap `v`'s bytes
/// (values are numbered in definition order, so these are exactly the values written
/// between `v`'s definition and this read).
fn check_live(values: &Seq<'_, ValueDesc>, v: usize, out: usize, elem: usize) -> R<()> {
    let rv = value_range(values, v, elem)?;
    for desc in values.iter().skip(v + 1).take(out.saturating_sub(v)) {
        let start = desc.offset as usize;
        let rw = (start, add(start, value_bytes(&desc, elem)?)?);
        if overlaps(rv, rw) {
            return Err(E::ArenaOverlap);
        }
    }
    Ok(())
}

fn slice_desc(values: &Seq<'_, ValueDesc>, s: &Slice, defined: &BitSet) -> R<ValueDesc> {
    let i = s.value as usize;
    if i >= values.len() || !defined.get(i) {
        return Err(E::ManifestIndex);
    }
    let v = values.get(i).ok_or(E::ManifestIndex)?;
    if s.c_len == 0 || s.c_off as usize + s.c_len as usize > v.c as usize {
        return Err(E::ManifestIndex);
    }
    Ok(v)
}

fn value_desc(values: &Seq<'_, ValueDesc>, i: u16, defined: &BitSet) -> R<ValueDesc> {
    slice_desc(
        values,
        &Slice {
            value: i,
            c_off: 0,
            c_len: 1,
        },
        defined,
    )
}

/// Checks a weight/bias/wscale triple of `cout` channels with `per_channel` weights each.
fn check_wbs(
    m: &Manifest<'_>,
    shared: &[u8],
    w: &TensorRef,
    b: &TensorRef,
    s: &TensorRef,
    cout: usize,
    per_channel: usize,
) -> R<()> {
    let welem = match m.precision {
        Precision::F32 => 4,
        Precision::Int8 => 1,
    };
    check_tref(w, shared, mul(mul(cout, per_channel)?, welem)?)?;
    check_tref(b, shared, mul(cout, 4)?)?;
    match m.precision {
        Precision::F32 => check_tref(s, shared, 0),
        Precision::Int8 => {
            check_tref(s, shared, mul(cout, 4)?)?;
            if f32s(s, shared).any(|x| !(x.is_finite() && x > 0.0)) {
                return Err(E::TensorValue);
            }
            Ok(())
        }
    }
}

/// Validates the shared manifest against the shared payload.
fn validate_manifest(m: &Manifest<'_>, shared: &[u8]) -> R<()> {
    let (values, ops) = (m.values, m.ops);
    if values.len() > MAX_VALUES || ops.len() > MAX_OPS || m.tensors.len() > MAX_TENSORS {
        return Err(E::ManifestSeq);
    }
    values.validate().map_err(|_| E::ManifestSeq)?;
    ops.validate().map_err(|_| E::ManifestSeq)?;
    m.tensors.validate().map_err(|_| E::ManifestSeq)?;
    let elem = act_elem(m.precision);

    // Input spec and value 0 (the input image, NHWC).
    let inp = m.input;
    if !(1..=3).contains(&inp.channels) || inp.size == 0 || m.features == 0 {
        return Err(E::ManifestShape);
    }
    let v0 = values.get(0).ok_or(E::ManifestIndex)?;
    if (v0.h, v0.w, v0.c) != (inp.size, inp.size, inp.channels) {
        return Err(E::ManifestShape);
    }
    let act = m.arena.activation_bytes as usize;
    for v in values.iter() {
        if v.h == 0 || v.w == 0 || v.c == 0 || !(v.offset as usize).is_multiple_of(ALIGN) {
            return Err(E::ManifestValue);
        }
        if add(v.offset as usize, value_bytes(&v, elem)?)? > act {
            return Err(E::ManifestValue);
        }
    }

    // Ops: SSA in definition order, shapes, weights, liveness.
    let mut defined = BitSet([0; MAX_VALUES / 64]);
    defined.set(0);
    let mut next_value = 1usize;
    let mut next_expert = 0usize;
    let mut head_seen = false;
    let n_ops = ops.len();
    for (i, op) in ops.iter().enumerate() {
        if head_seen {
            return Err(E::ManifestHead);
        }
        // (inputs read, output written)
        let (reads, output): ([Option<u16>; 2], Option<u16>) = match op {
            Op::Conv {
                input,
                output,
                cout,
                k,
                stride,
                pad,
                weight,
                bias,
                wscale,
                expert,
                ..
            } => {
                let vi = slice_desc(&values, &input, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                let (k, stride, pad) = (k as usize, stride as usize, pad as usize);
                let ok_geom = match k {
                    1 => stride == 1 && pad == 0,
                    3 => pad == 1 && (stride == 1 || stride == 2),
                    _ => false,
                };
                if !ok_geom
                    || vo.c != cout
                    || vo.h as usize != out_dim(vi.h, k, stride, pad)?
                    || vo.w as usize != out_dim(vi.w, k, stride, pad)?
                {
                    return Err(E::ManifestShape);
                }
                let per = mul(mul(input.c_len as usize, k)?, k)?;
                check_wbs(m, shared, &weight, &bias, &wscale, cout as usize, per)?;
                // Streaming scratch (`h·w·r` f32) must stay far from `usize` limits even on
                // 32-bit targets, so `layout::regions` cannot overflow while aligning.
                let lowrank = mul(mul(mul(vo.h as usize, vo.w as usize)?, m.rank as usize)?, 4)?;
                if lowrank > i32::MAX as usize {
                    return Err(E::ArenaTooSmall);
                }
                if let Some(e) = expert {
                    if e as usize != next_expert {
                        return Err(E::ManifestExperts);
                    }
                    next_expert += 1;
                }
                ([Some(input.value), None], Some(output))
            }
            Op::DwConv {
                input,
                output,
                stride,
                weight,
                bias,
                wscale,
                ..
            } => {
                let vi = slice_desc(&values, &input, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                let s = stride as usize;
                if !(s == 1 || s == 2)
                    || vo.c != input.c_len
                    || vo.h as usize != out_dim(vi.h, 3, s, 1)?
                    || vo.w as usize != out_dim(vi.w, 3, s, 1)?
                {
                    return Err(E::ManifestShape);
                }
                check_wbs(m, shared, &weight, &bias, &wscale, input.c_len as usize, 9)?;
                ([Some(input.value), None], Some(output))
            }
            Op::MaxPool { input, output } => {
                let vi = value_desc(&values, input, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                if vo.c != vi.c
                    || vo.h as usize != out_dim(vi.h, 3, 2, 1)?
                    || vo.w as usize != out_dim(vi.w, 3, 2, 1)?
                {
                    return Err(E::ManifestShape);
                }
                ([Some(input), None], Some(output))
            }
            Op::ConcatShuffle { a, b, output } => {
                let va = slice_desc(&values, &a, &defined)?;
                let vb = slice_desc(&values, &b, &defined)?;
                let vo = out_desc(&values, output, next_value)?;
                if a.c_len != b.c_len
                    || vo.c as usize != 2 * a.c_len as usize
                    || (va.h, va.w) != (vo.h, vo.w)
                    || (vb.h, vb.w) != (vo.h, vo.w)
                {
                    return Err(E::ManifestShape);
                }
                ([Some(a.value), Some(b.value)], Some(output))
            }
            Op::PoolHead { input } => {
                let vi = value_desc(&values, input, &defined)?;
                if vi.c != m.features || i + 1 != n_ops {
                    return Err(E::ManifestHead);
                }
                head_seen = true;
                ([Some(input), None], None)
            }
        };
        if let Some(out) = output {
            for r in reads.into_iter().flatten() {
                check_live(&values, r as usize, out as usize, elem)?;
            }
            defined.set(out as usize);
            next_value += 1;
        }
    }
    if !head_seen {
        return Err(E::ManifestHead);
    }
    if next_expert != m.experts as usize {
        return Err(E::ManifestExperts);
    }

    for t in m.tensors.iter() {
        if t.rank as usize > 4 {
            return Err(E::TensorBounds);
        }
        let mut n = t.dtype.size();
        for &d in &t.dims[..t.rank as usize] {
            n = mul(n, d as usize)?;
        }
        check_tref(&t.data, shared, n)?;
    }

    // Arena totals: activations, then the engine's regions (`layout::regions`, whose
    // arithmetic is checked; the geometry checked above keeps its unchecked products small).
    for (mode, total) in [
        (Mode::Materialized, m.arena.materialized_bytes),
        (Mode::Streaming, m.arena.streaming_bytes),
    ] {
        let need = layout::regions(m, mode).ok_or(E::Overflow)?.total;
        if (total as usize) < need {
            return Err(E::ArenaTooSmall);
        }
    }
    Ok(())
}

/// The output value of the next op must be the next undefined value (definition order).
fn out_desc(values: &Seq<'_, ValueDesc>, out: u16, next_value: usize) -> R<ValueDesc> {
    if out as usize != next_value {
        return Err(E::ManifestIndex);
    }
    values.get(out as usize).ok_or(E::ManifestIndex)
}

/// Bytes of an `rows × cols` delta factor in `dt` (int8: rows then one f16 scale per row).
pub fn delta_factor_bytes(dt: DeltaDType, rows: usize, cols: usize) -> Option<usize> {
    let n = rows.checked_mul(cols)?;
    match dt {
        DeltaDType::F32 => n.checked_mul(4),
        DeltaDType::F16 => n.checked_mul(2),
        DeltaDType::I8 => n.checked_add(rows.checked_mul(2)?),
    }
}

/// Validates a department manifest and payload against the shared graph.
fn validate_dept(d: &Dept<'_>, m: &Manifest<'_>) -> R<()> {
    let dm = &d.manifest;
    let p = d.payload;
    if dm.name.is_empty() || dm.name.len() > 255 {
        return Err(E::DeptShape);
    }
    let classes = dm.classes.len();
    if classes == 0 || classes > MAX_CLASSES {
        return Err(E::DeptShape);
    }
    dm.classes.validate().map_err(|_| E::ManifestSeq)?;
    if dm.deltas.len() != m.experts as usize {
        return Err(E::DeptShape);
    }
    dm.deltas.validate().map_err(|_| E::ManifestSeq)?;
    let r = m.rank as usize;
    let mut deltas = dm.deltas.iter();
    for op in m.ops.iter() {
        if let Op::Conv {
            input,
            cout,
            k,
            expert: Some(_),
            ..
        } = op
        {
            let k = k as usize;
            let dr = deltas.next().ok_or(E::DeptShape)?;
            let rk = mul(r, k)?;
            let (ar, ac) = (rk, mul(input.c_len as usize, k)?);
            let (br, bc) = (mul(cout as usize, k)?, rk);
            let alen = delta_factor_bytes(dm.delta_dtype, ar, ac).ok_or(E::Overflow)?;
            let blen = delta_factor_bytes(dm.delta_dtype, br, bc).ok_or(E::Overflow)?;
            check_tref(&dr.a, p, alen).map_err(|_| E::DeptShape)?;
            check_tref(&dr.b, p, blen).map_err(|_| E::DeptShape)?;
            if dm.delta_dtype == DeltaDType::I8 {
                for (t, rows, cols) in [(dr.a, ar, ac), (dr.b, br, bc)] {
                    let scales = TensorRef {
                        offset: t.offset + (rows * cols) as u32,
                        len: 0,
                    };
                    let b = &p[scales.offset as usize..(t.offset + t.len) as usize];
                    let bad = b.chunks_exact(2).any(|c| {
                        let x = half::f16::from_le_bytes([c[0], c[1]]);
                        !(x.is_finite() && x.to_f32() >= 0.0)
                    });
                    if bad {
                        return Err(E::TensorValue);
                    }
                }
            }
        }
    }
    let features = m.features as usize;
    check_tref(&dm.head_weight, p, mul(mul(classes, features)?, 4)?).map_err(|_| E::DeptShape)?;
    check_tref(&dm.head_bias, p, mul(classes, 4)?).map_err(|_| E::DeptShape)?;
    match m.precision {
        Precision::F32 => check_tref(&dm.act_qparams, p, 0).map_err(|_| E::DeptShape)?,
        Precision::Int8 => {
            let t = dm.act_qparams;
            check_tref(&t, p, mul(m.values.len(), 8)?).map_err(|_| E::DeptShape)?;
            let b = &p[t.offset as usize..(t.offset + t.len) as usize];
            for c in b.chunks_exact(8) {
                let s = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let zp = i32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                if !s.is_finite() || s <= 0.0 || !(-128..=127).contains(&zp) {
                    return Err(E::TensorValue);
                }
            }
        }
    }
    Ok(())
}
