//! `cargo fuzz run update_package`: arbitrary bytes as a `.lkdu` package through the header
//! and package parsers, then — resealed (blob length and hash fixed up, header re-signed
//! with the test key) so mutations reach the logic behind the signature — through
//! `UpdateStore::apply` on a simulated flash with a real bundle. Never a panic; a package
//! the store accepts runs (its version is what the department reports), and a refusal
//! leaves the flash byte-for-byte unchanged.
#![no_main]

use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;
use lorkd_runtime::engine::testnet::{NetSpec, TestNet};
use lorkd_runtime::AlignedBytes;
use lorkd_runtime::format::Bundle;
use lorkd_runtime::update::package::{digest, FIELDS_LEN, HEADER_LEN};
use lorkd_runtime::update::sim::SimFlash;
use lorkd_runtime::update::{Layout, Package, PackageHeader, UpdateStore};
use std::sync::OnceLock;

const SECRET: [u8; 32] = [7; 32];
type Flash = SimFlash<4, 256>;

struct Base {
    bundle: AlignedBytes,
    layout: Layout,
    flash: Flash,
    pubkey: [u8; 32],
}

fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let net = TestNet::random(NetSpec::small(), 1);
        let bundle = AlignedBytes::new(&net.bundle_f32());
        let b = Bundle::parse(bundle.as_slice()).unwrap();
        let layout = Layout::for_bundle(&b, bundle.as_slice().len(), 256);
        let mut img = vec![0xFFu8; layout.end() as usize];
        img[..bundle.as_slice().len()].copy_from_slice(bundle.as_slice());
        let pubkey = ed25519_dalek::SigningKey::from_bytes(&SECRET)
            .verifying_key()
            .to_bytes();
        Base {
            layout,
            flash: SimFlash::from_image(&img, 0),
            bundle,
            pubkey,
        }
    })
}

fn apply(bytes: &[u8]) {
    let b = base();
    let bundle = Bundle::parse(b.bundle.as_slice()).unwrap();
    let mut s = UpdateStore::<Flash, 8>::open(b.flash.clone(), b.layout, b.pubkey, &bundle)
        .expect("a blank store opens");
    let before = s.flash_mut().image().to_vec();
    let mut scratch = vec![0u8; b.layout.slot_size as usize];
    match s.apply(bytes, &bundle, &mut scratch) {
        Ok(d) => {
            let h = PackageHeader::parse(bytes).expect("accepted header parses");
            assert_eq!(s.active(d).version(), Some(h.version));
            assert_eq!(s.flash_mut().violations(), 0);
        }
        Err(_) => assert!(s.flash_mut().image() == &before[..], "a refusal wrote"),
    }
}

fuzz_target!(|data: &[u8]| {
    let b = base();
    let _ = PackageHeader::parse(data);
    let _ = PackageHeader::parse_signed(data, &b.pubkey);
    if let Ok(p) = Package::parse(data) {
        let _ = p.verify(&b.pubkey);
        assert_eq!(p.blob().len(), p.header.blob_len as usize);
    }
    apply(data);
    if data.len() > HEADER_LEN && data.len() < b.layout.slot_size as usize {
        // Reseal: blob length and hash from the bytes, header signed with the device key.
        let mut v = data.to_vec();
        let n = (v.len() - HEADER_LEN) as u32;
        v[16..20].copy_from_slice(&n.to_le_bytes());
        let h = digest(&v[HEADER_LEN..]);
        v[96..128].copy_from_slice(&h);
        let sig = ed25519_dalek::SigningKey::from_bytes(&SECRET).sign(&v[..FIELDS_LEN]);
        v[FIELDS_LEN..HEADER_LEN].copy_from_slice(&sig.to_bytes());
        apply(&v);
    }
});
