//! Shared by the `update_*` tests: a real random bundle (`engine::testnet`), new versions of
//! a department's delta blob made with the format's own writer, signed packages, and a
//! device flash image (bundle at 0, then the store's journal and slots).
#![allow(dead_code)]
use lorkd_runtime::engine::testnet::{NetSpec, Rng, TestNet};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::write::{encode_seq, write_blob, Payload};
use lorkd_runtime::format::{Bundle, DeltaRef, Dept, Mode, Seq, TensorRef};
use lorkd_runtime::update::package::{write_signed, PackageHeader, HEADER_LEN};
use lorkd_runtime::update::sim::SimFlash;
use lorkd_runtime::update::{Layout, UpdateError, UpdateStore};
use lorkd_runtime::AlignedBytes;

#[path = "../common/mod.rs"]
mod common;
pub use common::seed;

/// The flash of the store tests: 4-byte words, 256-byte erase blocks.
pub type Flash = SimFlash<4, 256>;
/// The store over [`Flash`] with 8 departments at most.
pub type Store = UpdateStore<Flash, 8>;

/// Added-department slot pairs of the fixture's standard layout (the smallest journal banks
/// the other tests use must hold the compacted state of every pair).
pub const ADDED: u16 = 1;

/// Streams `pkg` as the firmware does: `begin` (resuming what the journal kept), chunks of
/// 1–300 bytes drawn from `rng` from the offset `begin` returns, `finish`.
pub fn stream(
    s: &mut Store,
    pkg: &[u8],
    bundle: &Bundle<'_>,
    rng: &mut Rng,
) -> Result<usize, UpdateError> {
    let mut at = s.begin(&pkg[..HEADER_LEN], bundle)? as usize;
    while at < pkg.len() {
        let n = (1 + rng.below(300)).min(pkg.len() - at);
        s.write(at as u32, &pkg[at..at + n])?;
        at += n;
    }
    let mut scratch = vec![0u8; pkg.len()];
    s.finish(bundle, &mut scratch)
}

pub struct Fixture {
    pub net: TestNet,
    pub bundle: AlignedBytes,
    pub secret: [u8; 32],
    pub pubkey: [u8; 32],
    pub inputs: Vec<Vec<f32>>,
}

impl Fixture {
    /// The store over `flash` with this fixture's key and bundle.
    pub fn open(&self, flash: Flash, layout: Layout) -> Store {
        Store::open(flash, layout, self.pubkey, &self.bundle()).expect("store opens")
    }

    /// `s` closed and opened again on its flash (a reboot).
    pub fn reopen(&self, s: Store) -> Store {
        let l = *s.layout();
        self.open(s.into_flash(), l)
    }

    pub fn new(seed: u64) -> Self {
        let net = TestNet::random(NetSpec::small(), seed);
        let bundle = AlignedBytes::new(&net.bundle_f32());
        let mut rng = Rng::new(seed ^ 0x5EC2E7);
        let secret: [u8; 32] = core::array::from_fn(|_| rng.next_u64() as u8);
        let pubkey = ed25519_dalek::SigningKey::from_bytes(&secret)
            .verifying_key()
            .to_bytes();
        let inputs = net.inputs(2, seed ^ 1);
        Fixture {
            net,
            bundle,
            secret,
            pubkey,
            inputs,
        }
    }

    pub fn bundle(&self) -> Bundle<'_> {
        Bundle::parse(self.bundle.as_slice()).expect("fixture bundle parses")
    }

    /// Department `dept`'s blob at `version`, with fresh random factors and head.
    pub fn blob(&self, dept: usize, version: u32, seed: u64) -> Vec<u8> {
        let b = self.bundle();
        let d = b.department(dept).unwrap();
        let mut m = d.manifest;
        m.version = version;
        let mut payload = d.payload.to_vec();
        let mut rng = Rng::new(seed);
        let mut fill = |t: TensorRef, a: f32| {
            for c in payload[t.offset as usize..(t.offset + t.len) as usize].chunks_exact_mut(4) {
                c.copy_from_slice(&rng.uniform(a).to_le_bytes());
            }
        };
        for dr in d.manifest.deltas.iter() {
            fill(dr.a, 0.3);
            fill(dr.b, 0.3);
        }
        fill(d.manifest.head_weight, 0.5);
        fill(d.manifest.head_bias, 0.5);
        write_blob(&m, &payload).unwrap()
    }

    /// The blob of a department the bundle does not have: `name`, `classes` classes, fresh
    /// random factors of the bundle's expert shapes (`bad_factor`: one factor a row short,
    /// so it does not fit the shared graph) and head, at `version`.
    pub fn added_blob_with(
        &self,
        name: &str,
        classes: usize,
        version: u32,
        seed: u64,
        bad_factor: bool,
    ) -> Vec<u8> {
        let b = self.bundle();
        let d0 = b.department(0).unwrap();
        let features = b.manifest().features as usize;
        let mut rng = Rng::new(seed);
        let mut p = Payload::default();
        let mut deltas = Vec::new();
        for (i, dr) in d0.manifest.deltas.iter().enumerate() {
            let mut fresh = |t: TensorRef, short: bool| {
                let n = t.len as usize / 4 - usize::from(short);
                p.push_f32(&rng.vec(n, 0.3)).unwrap()
            };
            let a = fresh(dr.a, bad_factor && i == 0);
            let b_ = fresh(dr.b, false);
            deltas.push(DeltaRef { a, b: b_ });
        }
        let head_weight = p.push_f32(&rng.vec(classes * features, 0.5)).unwrap();
        let head_bias = p.push_f32(&rng.vec(classes, 0.5)).unwrap();
        let act_qparams = p.push(&[]).unwrap();
        let names: Vec<String> = (0..classes).map(|c| format!("{name}-{c}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (nc, cb) = encode_seq(&refs).unwrap();
        let (nd, db) = encode_seq(&deltas).unwrap();
        let mut m = d0.manifest;
        m.name = name;
        m.version = version;
        m.classes = Seq::from_encoded(nc, &cb);
        m.deltas = Seq::from_encoded(nd, &db);
        m.head_weight = head_weight;
        m.head_bias = head_bias;
        m.act_qparams = act_qparams;
        write_blob(&m, &p.0).unwrap()
    }

    /// [`Self::added_blob_with`] with factors that fit.
    pub fn added_blob(&self, name: &str, classes: usize, version: u32, seed: u64) -> Vec<u8> {
        self.added_blob_with(name, classes, version, seed, false)
    }

    /// A package adding department `name` (`classes` in its header), signed with `secret`.
    #[allow(clippy::too_many_arguments)]
    pub fn added_package_with(
        &self,
        name: &str,
        classes: u16,
        version: u32,
        counter: u32,
        base_id: [u8; 32],
        blob: &[u8],
        secret: &[u8; 32],
    ) -> Vec<u8> {
        let h = PackageHeader::new_added(name, version, counter, base_id, classes, blob).unwrap();
        let mut out = vec![0u8; h.package_len() as usize];
        write_signed(&h, blob, secret, &mut out).unwrap();
        out
    }

    /// A package adding department `name` to the fixture's bundle, signed by its key.
    pub fn added_package(
        &self,
        name: &str,
        classes: u16,
        version: u32,
        counter: u32,
        blob: &[u8],
    ) -> Vec<u8> {
        let id = *self.bundle().base_id();
        self.added_package_with(name, classes, version, counter, id, blob, &self.secret)
    }

    /// A package removing the added department `name`, signed with `secret`.
    pub fn removal_with(
        &self,
        name: &str,
        version: u32,
        counter: u32,
        secret: &[u8; 32],
    ) -> Vec<u8> {
        let id = *self.bundle().base_id();
        let h = PackageHeader::new_removal(name, version, counter, id).unwrap();
        let mut out = vec![0u8; h.package_len() as usize];
        write_signed(&h, &[], secret, &mut out).unwrap();
        out
    }

    /// A package signed with `secret`.
    pub fn package_with(
        &self,
        name: &str,
        version: u32,
        counter: u32,
        base_id: [u8; 32],
        blob: &[u8],
        secret: &[u8; 32],
    ) -> Vec<u8> {
        let h = PackageHeader::new(name, version, counter, base_id, blob).unwrap();
        let mut out = vec![0u8; h.package_len() as usize];
        write_signed(&h, blob, secret, &mut out).unwrap();
        out
    }

    /// A package for department `dept` at `version` (security counter `counter`).
    pub fn package(&self, dept: usize, version: u32, counter: u32, blob: &[u8]) -> Vec<u8> {
        let b = self.bundle();
        let name = b.department(dept).unwrap().manifest.name;
        self.package_with(name, version, counter, *b.base_id(), blob, &self.secret)
    }

    pub fn factory_blob(&self, dept: usize) -> Vec<u8> {
        self.bundle().department_blob(dept).unwrap().to_vec()
    }

    pub fn max_blob(&self) -> usize {
        let b = self.bundle();
        (0..b.department_count())
            .map(|d| b.department_blob(d).unwrap().len())
            .max()
            .unwrap()
    }

    pub fn layout(&self, erase: usize) -> Layout {
        self.layout_with(erase, ADDED)
    }

    /// The standard layout with `added` added-department slot pairs.
    pub fn layout_with(&self, erase: usize, added: u16) -> Layout {
        Layout::standard(
            self.bundle.as_slice().len(),
            self.bundle().department_count() as u16,
            added,
            self.max_blob(),
            erase,
        )
    }

    /// A device flash: the bundle at 0, the rest erased.
    pub fn flash<const W: usize, const E: usize>(
        &self,
        layout: &Layout,
        seed: u64,
    ) -> SimFlash<W, E> {
        let mut img = vec![0xFFu8; layout.end() as usize];
        img[..self.bundle.as_slice().len()].copy_from_slice(self.bundle.as_slice());
        SimFlash::from_image(&img, seed)
    }

    /// Logits of department blob `blob` (parsed against the bundle) on the fixture inputs.
    pub fn logits(&self, blob: &[u8]) -> Vec<f32> {
        let blob = AlignedBytes::new(blob);
        let b = self.bundle();
        let d = Dept::parse_blob(blob.as_slice(), b.manifest(), b.base_id()).expect("blob parses");
        let mut arena = AlignedBytes::zeroed(b.arena_bytes(Mode::Materialized));
        let mut e = Engine::new(&b, arena.as_mut_slice(), Mode::Materialized).unwrap();
        e.select_blob(d).unwrap();
        let mut out = Vec::new();
        for x in &self.inputs {
            let mut l = vec![0f32; d.classes()];
            e.infer(x, &mut l).unwrap();
            out.extend(l);
        }
        out
    }
}
