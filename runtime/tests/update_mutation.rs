//! Untrusted bytes never panic the update layer: seeded mutations (bit flips, truncations,
//! overwritten length and version fields) of a valid package through `Package::parse` and
//! `UpdateStore::apply`, and random garbage in the journal and slots through
//! `UpdateStore::open` — only `Ok` or `Err`, and only the one unmutated package applies.
mod update_fixture;

use lorkd_runtime::engine::testnet::Rng;
use lorkd_runtime::update::sim::SimFlash;
use lorkd_runtime::update::{Package, UpdateStore};
use update_fixture::{seed, Fixture};

type Store = UpdateStore<SimFlash<8, 512>, 8>;

#[test]
fn mutated_packages_give_errors_not_panics() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(512);
    let good = f.package(2, 2, 1, &f.blob(2, 2, seed));
    let mut s = Store::open(f.flash(&layout, seed), layout, f.pubkey, &bundle).unwrap();
    let image = s.flash_mut().image().to_vec();
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let mut rng = Rng::new(seed);
    for i in 0..10_000 {
        let mut p = good.clone();
        match i % 4 {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let j = rng.below(p.len());
                    p[j] ^= 1 << rng.below(8);
                }
            }
            1 => p.truncate(rng.below(p.len())),
            2 => {
                // Length, version and counter fields set to extremes.
                let field = [8usize, 12, 16][rng.below(3)];
                let v = [0u32, 1, u32::MAX, rng.next_u64() as u32][rng.below(4)];
                p[field..field + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let j = rng.below(p.len());
                let n = rng.below(64).min(p.len() - j);
                for b in &mut p[j..j + n] {
                    *b = rng.next_u64() as u8;
                }
            }
        }
        if p == good {
            continue;
        }
        let _ = Package::parse(&p);
        assert!(
            s.apply(&p, &bundle, &mut scratch).is_err(),
            "mutation {i} applied"
        );
    }
    assert!(
        s.flash_mut().image() == &image[..],
        "refused packages changed the flash"
    );
    assert_eq!(s.apply(&good, &bundle, &mut scratch), Ok(2));
}

#[test]
fn garbage_in_journal_and_slots_never_panics_open() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(512);
    let mut s = Store::open(f.flash(&layout, seed), layout, f.pubkey, &bundle).unwrap();
    let mut scratch = vec![0u8; layout.slot_size as usize];
    for v in 2..5 {
        s.apply(
            &f.package(1, v, 0, &f.blob(1, v, seed + v as u64)),
            &bundle,
            &mut scratch,
        )
        .unwrap();
    }
    let img = s.into_flash().image().to_vec();
    let mut rng = Rng::new(seed ^ 0x6A);
    let (j0, end) = (layout.journal as usize, layout.end() as usize);
    for i in 0..500 {
        let mut m = img.clone();
        for _ in 0..1 + rng.below(32) {
            let at = j0 + rng.below(end - j0);
            m[at] = rng.next_u64() as u8;
        }
        if i % 5 == 0 {
            // Whole records overwritten with well-formed-looking noise.
            let rec = j0 + 64 * rng.below((end - j0) / 64);
            for b in &mut m[rec..rec + 64] {
                *b = rng.next_u64() as u8;
            }
        }
        if let Ok(mut s) = Store::open(SimFlash::from_image(&m, seed), layout, f.pubkey, &bundle) {
            // Whatever survived is a version that was committed, or the factory one.
            let v = s.active(1).version();
            assert!(matches!(v, None | Some(1..=4)), "mutation {i}: {v:?}");
            let mut buf = vec![0u8; layout.slot_size as usize];
            let _ = s.read_active_blob(1, &mut buf);
        }
    }
}

#[test]
fn crafted_crc_valid_records_cannot_describe_impossible_slots() {
    use lorkd_runtime::update::journal::Record;
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(512);
    let s = Store::open(f.flash(&layout, seed), layout, f.pubkey, &bundle).unwrap();
    let mut img = s.into_flash().image().to_vec();
    let empty = lorkd_runtime::update::package::digest(&[]);
    let records = [
        Record::Commit {
            dept: 0,
            slot: 0,
            version: 9,
            len: 0,
            counter: 0,
            digest: empty,
        },
        Record::Commit {
            dept: 1,
            slot: 1,
            version: 9,
            len: u32::MAX,
            counter: 0,
            digest: empty,
        },
        Record::Begin {
            dept: 2,
            slot: 0,
            version: 9,
            len: 5,
            header_hash: empty,
        },
        Record::Progress {
            dept: 2,
            slot: 0,
            pages: u32::MAX,
        },
        Record::Counter {
            dept: 3,
            counter: u32::MAX,
        },
    ];
    for (i, r) in records.iter().enumerate() {
        let at = layout.journal as usize + 64 * (1 + i);
        img[at..at + 64].copy_from_slice(&r.encode());
    }
    let s = Store::open(SimFlash::from_image(&img, seed), layout, f.pubkey, &bundle).unwrap();
    for d in 0..3 {
        assert_eq!(s.active(d).version(), Some(1), "department {d}");
    }
    assert_eq!(s.resume_point(), None);
}
