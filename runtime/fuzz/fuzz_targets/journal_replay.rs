//! `cargo fuzz run journal_replay`: arbitrary bytes as the update store's region of a device
//! flash image (journal banks and slots, after a real bundle) through `UpdateStore::probe`
//! and `open`. Never a panic. An image `open` accepts runs only versions that a CRC-valid
//! record committed or the factory's, reads every active blob in bounds, resumes inside its
//! package, takes a genuine update and reopens to the same state; a damaged one is refused
//! and `format` gives a store whose counters are at least those it could read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorkd_runtime::engine::testnet::{NetSpec, TestNet};
use lorkd_runtime::AlignedBytes;
use lorkd_runtime::format::write::write_blob;
use lorkd_runtime::format::Bundle;
use lorkd_runtime::update::package::{write_signed, PackageHeader};
use lorkd_runtime::update::sim::SimFlash;
use lorkd_runtime::update::{JournalState, Layout, UpdateError, UpdateStore};
use std::sync::OnceLock;

const SECRET: [u8; 32] = [7; 32];
type Flash = SimFlash<4, 256>;
type Store = UpdateStore<Flash, 8>;

struct Base {
    bundle: AlignedBytes,
    layout: Layout,
    pubkey: [u8; 32],
    package: Vec<u8>,
}

fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let net = TestNet::random(NetSpec::small(), 1);
        let bundle = AlignedBytes::new(&net.bundle_f32());
        let b = Bundle::parse(bundle.as_slice()).unwrap();
        let layout = Layout::for_bundle(&b, bundle.as_slice().len(), 256);
        // A genuine update: department 0's blob as version 2.
        let d = b.department(0).unwrap();
        let mut m = d.manifest;
        m.version = 2;
        let blob = write_blob(&m, d.payload).unwrap();
        let h = PackageHeader::new(d.manifest.name, 2, 0, *b.base_id(), &blob).unwrap();
        let mut package = vec![0u8; h.package_len() as usize];
        write_signed(&h, &blob, &SECRET, &mut package).unwrap();
        let pubkey = ed25519_dalek::SigningKey::from_bytes(&SECRET)
            .verifying_key()
            .to_bytes();
        Base {
            bundle,
            layout,
            pubkey,
            package,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let b = base();
    let bundle = Bundle::parse(b.bundle.as_slice()).unwrap();
    let l = b.layout;
    let mut img = vec![0xFFu8; l.end() as usize];
    img[..b.bundle.as_slice().len()].copy_from_slice(b.bundle.as_slice());
    // The fuzz input lands on the journal banks first, then the slots.
    let region = &mut img[l.journal as usize..];
    let n = data.len().min(region.len());
    region[..n].copy_from_slice(&data[..n]);
    let mut flash = Flash::from_image(&img, 0);
    let state = Store::probe(&mut flash, &l).expect("probe reads");
    match Store::open(flash.clone(), l, b.pubkey, &bundle) {
        Ok(mut s) => {
            assert!(matches!(state, JournalState::Valid | JournalState::Blank));
            let mut buf = vec![0u8; l.slot_size as usize];
            for d in 0..bundle.department_count() {
                let _ = s
                    .read_active_blob(d, &mut buf)
                    .expect("active blob in bounds");
            }
            if let Some(rp) = s.resume_point() {
                assert!(rp.offset <= l.slot_size, "resume past the slot");
            }
            let versions: Vec<_> = (0..3).map(|d| s.active(d)).collect();
            let mut scratch = vec![0u8; l.slot_size as usize];
            let r = s.apply(&b.package, &bundle, &mut scratch);
            let mut s2 = Store::open(s.into_flash(), l, b.pubkey, &bundle).expect("reopens");
            if r.is_err() {
                assert_eq!((0..3).map(|d| s2.active(d)).collect::<Vec<_>>(), versions);
            }
            let _ = s2.read_active_blob(0, &mut buf);
        }
        Err(UpdateError::JournalDamaged) => {
            assert_eq!(state, JournalState::Damaged);
            let s = Store::format(flash, l, b.pubkey, &bundle).expect("format works");
            let s = Store::open(s.into_flash(), l, b.pubkey, &bundle).expect("formatted opens");
            let _ = s.security_counter(0);
        }
        Err(e) => assert!(
            matches!(e, UpdateError::LayoutMismatch),
            "unexpected refusal {e:?}"
        ),
    }
});
