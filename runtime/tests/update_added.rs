//! Departments added in the field: a signed package carrying a department the bundle never
//! had goes into one of the layout's added slot pairs. It runs beside the bundle's
//! departments (which stay byte-for-byte as they were), takes A/B updates and falls back
//! like them, and every refusal (wrong key, wrong base, older version, no free pair, too
//! many classes, too large, a name of the bundle, factors that do not fit the graph)
//! happens before a single flash operation. A power cut or a transient flash failure at
//! any operation of an add leaves the device with the department or without it, never half.
mod update_fixture;

use lorkd_runtime::engine::testnet::Rng;
use lorkd_runtime::format::FormatError;
use lorkd_runtime::update::package::HEADER_LEN;
use lorkd_runtime::update::{Active, Layout, UpdateError};
use update_fixture::{seed, stream, Fixture, Flash, Store};

/// The bundle's departments (the fixture's `NetSpec::small`).
const T: usize = 3;
/// Added-department slot pairs of these tests' layout.
const ADDED: u16 = 2;

fn slot_blob(s: &mut Store, d: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; s.layout().slot_size as usize];
    s.read_active_blob(d, &mut buf).unwrap().map(<[u8]>::to_vec)
}

/// The bundle's departments run their factory blobs, exactly.
fn factory_untouched(s: &mut Store, f: &Fixture, what: &str) {
    for d in 0..T {
        assert_eq!(s.active(d), Active::Factory { version: 1 }, "{what}: {d}");
        assert_eq!(slot_blob(s, d), None, "{what}: {d}");
    }
    let n = f.bundle.as_slice().len();
    assert!(
        s.flash_mut().image()[..n] == *f.bundle.as_slice(),
        "{what}: the bundle changed"
    );
}

#[test]
fn an_added_department_runs_beside_the_bundle_takes_updates_and_survives_reboot() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout_with(256, ADDED);
    assert_eq!(layout.added, ADDED);
    let mut s = f.open(f.flash(&layout, seed), layout);
    assert_eq!(s.department_slots(), T + ADDED as usize);
    assert_eq!(s.added().count(), 0);
    assert_eq!(s.active(T), Active::Absent);
    let factory_logits: Vec<Vec<f32>> = (0..T).map(|d| f.logits(&f.factory_blob(d))).collect();
    let mut scratch = vec![0u8; layout.slot_size as usize];

    // A new department with more classes than the bundle's (5 vs the fixture's).
    let v1 = f.added_blob("oncology", 5, 1, seed ^ 1);
    assert_eq!(
        s.apply(
            &f.added_package("oncology", 5, 1, 0, &v1),
            &bundle,
            &mut scratch
        ),
        Ok(T)
    );
    let logits1 = f.logits(&v1);
    assert_eq!(logits1.len(), 5 * f.inputs.len(), "five classes answer");
    let mut s = f.reopen(s);
    assert_eq!(s.added().collect::<Vec<_>>(), vec![T]);
    assert_eq!(s.added_name(T), Some("oncology"));
    assert_eq!(s.find_added("oncology"), Some(T));
    assert_eq!(
        s.added_name(0),
        None,
        "bundle departments are named by the bundle"
    );
    assert!(matches!(
        s.active(T),
        Active::Slot {
            slot: 0,
            version: 1,
            ..
        }
    ));
    assert_eq!(slot_blob(&mut s, T), Some(v1.clone()));
    assert_eq!(f.logits(&slot_blob(&mut s, T).unwrap()), logits1);
    factory_untouched(&mut s, &f, "after the add");
    for (d, l) in factory_logits.iter().enumerate() {
        assert_eq!(&f.logits(&f.factory_blob(d)), l);
    }

    // Its v2 goes to slot B; v1 stays in slot A.
    let v2 = f.added_blob("oncology", 5, 2, seed ^ 2);
    assert_eq!(
        s.apply(
            &f.added_package("oncology", 5, 2, 0, &v2),
            &bundle,
            &mut scratch
        ),
        Ok(T)
    );
    let mut s = f.reopen(s);
    assert!(matches!(
        s.active(T),
        Active::Slot {
            slot: 1,
            version: 2,
            ..
        }
    ));
    assert_eq!(slot_blob(&mut s, T), Some(v2.clone()));
    let a = layout.slot_offset(T, 0) as usize + HEADER_LEN;
    assert!(s.flash_mut().image()[a..a + v1.len()] == v1[..]);

    // A second department takes the next pair; a third finds none.
    let c1 = f.added_blob("cardiology", 2, 1, seed ^ 3);
    assert_eq!(
        s.apply(
            &f.added_package("cardiology", 2, 1, 0, &c1),
            &bundle,
            &mut scratch
        ),
        Ok(T + 1)
    );
    let mut s = f.reopen(s);
    assert_eq!(s.added().collect::<Vec<_>>(), vec![T, T + 1]);
    assert_eq!(s.added_name(T + 1), Some("cardiology"));
    assert_eq!(slot_blob(&mut s, T + 1), Some(c1));
    assert_eq!(slot_blob(&mut s, T), Some(v2));
    factory_untouched(&mut s, &f, "after two adds");
    // The bundle's departments still take their own updates.
    let b2 = f.blob(1, 2, seed ^ 4);
    assert_eq!(
        s.apply(&f.package(1, 2, 0, &b2), &bundle, &mut scratch),
        Ok(1)
    );
    let mut s = f.reopen(s);
    assert_eq!(slot_blob(&mut s, 1), Some(b2));
    assert_eq!(s.added().count(), 2);
    assert_eq!(s.flash_mut().violations(), 0);
}

/// Applies `pkg` and checks the refusal and that not one byte of flash changed.
fn refused(s: &mut Store, f: &Fixture, pkg: &[u8], want: UpdateError) {
    let before = s.flash_mut().image().to_vec();
    let ops = s.flash_mut().ops();
    let states: Vec<Active> = (0..s.department_slots()).map(|d| s.active(d)).collect();
    let mut scratch = vec![0u8; s.layout().slot_size as usize];
    assert_eq!(s.apply(pkg, &f.bundle(), &mut scratch), Err(want));
    // The streaming path refuses the same header before writing (blob checks aside).
    if !matches!(want, UpdateError::Blob(_) | UpdateError::BlobMismatch) {
        assert_eq!(s.begin(&pkg[..HEADER_LEN], &f.bundle()), Err(want));
    }
    assert_eq!(s.flash_mut().ops(), ops, "{want:?}: the flash was touched");
    assert!(s.flash_mut().image() == &before[..]);
    let after: Vec<Active> = (0..s.department_slots()).map(|d| s.active(d)).collect();
    assert_eq!(after, states);
}

#[test]
fn every_add_refusal_is_specific_and_changes_nothing_on_flash() {
    use UpdateError::*;
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout_with(256, ADDED);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let v1 = f.added_blob("oncology", 5, 1, seed ^ 1);
    let good = f.added_package("oncology", 5, 1, 0, &v1);

    // Wrong key.
    let mut rng = Rng::new(seed ^ 0xBAD);
    let other: [u8; 32] = core::array::from_fn(|_| rng.next_u64() as u8);
    let id = *bundle.base_id();
    refused(
        &mut s,
        &f,
        &f.added_package_with("oncology", 5, 1, 0, id, &v1, &other),
        SignatureInvalid,
    );
    // Wrong base (signed by the right key: the header says another bundle).
    let mut wrong = id;
    wrong[0] ^= 1;
    refused(
        &mut s,
        &f,
        &f.added_package_with("oncology", 5, 1, 0, wrong, &v1, &f.secret),
        BaseMismatch,
    );
    // A name the bundle already has.
    let name0 = bundle.department(0).unwrap().manifest.name;
    let clash = f.added_blob(name0, 5, 1, seed ^ 5);
    refused(
        &mut s,
        &f,
        &f.added_package(name0, 5, 1, 0, &clash),
        NameClash,
    );
    // A head with more classes than the device takes.
    s.set_max_classes(4);
    refused(&mut s, &f, &good, TooManyClasses);
    s.set_max_classes(5);
    // Factors that do not have the shared graph's shapes (the arena plan would not hold
    // them): refused by the bundle's own blob parser before anything is written.
    let misfit = f.added_blob_with("oncology", 5, 1, seed ^ 6, true);
    refused(
        &mut s,
        &f,
        &f.added_package("oncology", 5, 1, 0, &misfit),
        Blob(FormatError::DeptShape),
    );
    // A header whose class count is not the blob's.
    refused(
        &mut s,
        &f,
        &f.added_package("oncology", 4, 1, 0, &v1),
        BlobMismatch,
    );
    // Larger than a slot.
    let tight = lorkd_runtime::update::Layout {
        slot_size: (good.len() as u32 - 1) / 256 * 256,
        ..layout
    };
    let mut t = Store::open(f.flash(&tight, seed), tight, f.pubkey, &bundle).unwrap();
    refused(&mut t, &f, &good, TooLarge);
    // A layout without added pairs (and so a journal from before them) takes none.
    let none = lorkd_runtime::update::Layout { added: 0, ..layout };
    let mut z = Store::open(f.flash(&none, seed), none, f.pubkey, &bundle).unwrap();
    refused(&mut z, &f, &good, TooManyDepartments);

    // Installed, then: the same version, an older one, below the counter.
    assert_eq!(s.apply(&good, &bundle, &mut scratch), Ok(T));
    let v3 = f.added_blob("oncology", 5, 3, seed ^ 3);
    assert_eq!(
        s.apply(
            &f.added_package("oncology", 5, 3, 3, &v3),
            &bundle,
            &mut scratch
        ),
        Ok(T)
    );
    refused(
        &mut s,
        &f,
        &f.added_package("oncology", 5, 3, 0, &v3),
        VersionCurrent,
    );
    let v2 = f.added_blob("oncology", 5, 2, seed ^ 2);
    refused(
        &mut s,
        &f,
        &f.added_package("oncology", 5, 2, 0, &v2),
        VersionOld,
    );
    refused(&mut s, &f, &good, VersionOld);
    // Every pair taken.
    let c = f.added_blob("cardiology", 2, 1, seed ^ 7);
    assert_eq!(
        s.apply(
            &f.added_package("cardiology", 2, 1, 0, &c),
            &bundle,
            &mut scratch
        ),
        Ok(T + 1)
    );
    let n = f.added_blob("neurology", 3, 1, seed ^ 8);
    refused(
        &mut s,
        &f,
        &f.added_package("neurology", 3, 1, 0, &n),
        TooManyDepartments,
    );
    // After a reboot the counter still holds.
    let mut s = f.reopen(s);
    assert_eq!(s.security_counter(T), 3);
    refused(
        &mut s,
        &f,
        &f.added_package("oncology", 5, 2, 2, &v2),
        VersionOld,
    );
    assert_eq!(s.flash_mut().violations(), 0);
}

#[test]
fn a_damaged_added_slot_falls_back_to_its_other_slot_or_runs_nothing() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout_with(256, ADDED);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let v1 = f.added_blob("oncology", 5, 1, seed ^ 1);
    let v2 = f.added_blob("oncology", 5, 2, seed ^ 2);
    s.apply(
        &f.added_package("oncology", 5, 1, 0, &v1),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    s.apply(
        &f.added_package("oncology", 5, 2, 0, &v2),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    let img = s.into_flash().image().to_vec();
    let b = layout.slot_offset(T, 1) as usize + HEADER_LEN + 40;
    let a = layout.slot_offset(T, 0) as usize + HEADER_LEN + 40;

    // v2's slot damaged: v1 runs (A/B rollback), the fault names why.
    let mut flash = Flash::from_image(&img, seed);
    flash.flip_bit(b, 3);
    let mut s = f.open(flash, layout);
    assert_eq!(s.active(T).version(), Some(1));
    assert_eq!(slot_blob(&mut s, T), Some(v1.clone()));
    assert_eq!(s.fault(T), Some(UpdateError::HashMismatch));
    assert_eq!(s.added_name(T), Some("oncology"));
    factory_untouched(&mut s, &f, "slot B damaged");

    // Both damaged: the department is known but runs nothing; nothing else changes.
    let mut flash = Flash::from_image(&img, seed);
    flash.flip_bit(b, 3);
    flash.flip_bit(a, 5);
    let mut s = f.open(flash, layout);
    assert_eq!(s.active(T), Active::Unavailable);
    assert_eq!(s.added_name(T), Some("oncology"));
    factory_untouched(&mut s, &f, "both damaged");
    // A fresh signed v3 repairs it, in the same pair.
    let v3 = f.added_blob("oncology", 5, 3, seed ^ 3);
    assert_eq!(
        s.apply(
            &f.added_package("oncology", 5, 3, 0, &v3),
            &bundle,
            &mut scratch
        ),
        Ok(T)
    );
    assert_eq!(slot_blob(&mut s, T), Some(v3));

    // With v2's security counter at 2, a damaged v2 does not roll back to v1.
    let mut s = f.open(f.flash(&layout, seed), layout);
    s.apply(
        &f.added_package("oncology", 5, 1, 0, &v1),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    s.apply(
        &f.added_package("oncology", 5, 2, 2, &v2),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    let mut flash = s.into_flash();
    flash.flip_bit(b, 1);
    let s = f.open(flash, layout);
    assert_eq!(s.active(T), Active::Unavailable);
    assert_eq!(s.security_counter(T), 2);
}

/// After a reboot: either no department was added (and the pair is free), or `oncology`
/// runs exactly `blob`; the bundle's departments and the other added one never change.
fn all_or_nothing(s: &mut Store, f: &Fixture, blob: &[u8], other: &[u8], what: &str) -> bool {
    factory_untouched(s, f, what);
    assert_eq!(slot_blob(s, T), Some(other.to_vec()), "{what}: cardiology");
    assert_eq!(s.flash_mut().violations(), 0, "{what}");
    match s.find_added("oncology") {
        None => {
            assert_eq!(s.added().collect::<Vec<_>>(), vec![T], "{what}");
            assert_eq!(s.active(T + 1), Active::Absent, "{what}");
            false
        }
        Some(d) => {
            assert_eq!(d, T + 1, "{what}");
            assert_eq!(s.active(d).version(), Some(1), "{what}");
            let got = slot_blob(s, d).expect("a slot runs");
            assert!(got == blob, "{what}: half a department");
            assert_eq!(f.logits(&got), f.logits(blob), "{what}");
            true
        }
    }
}

#[test]
fn a_power_cut_or_flash_failure_at_any_operation_of_an_add_leaves_all_or_nothing() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let std_layout = f.layout_with(256, ADDED);
    // A small journal (the smallest that holds the compacted state of 3 + 2 departments)
    // so compactions happen inside the swept add.
    let bank = 1280u32;
    let layout = Layout {
        bank_size: bank,
        slots: std_layout.journal + 2 * bank,
        ..std_layout
    };
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    // One added department already there, updated a few times so the journal is busy (the
    // swept add takes the second pair).
    let mut other = Vec::new();
    for v in 1..=4 {
        other = f.added_blob("cardiology", 2, v, seed ^ 9 ^ v as u64);
        let pkg = f.added_package("cardiology", 2, v, 0, &other);
        assert_eq!(s.apply(&pkg, &bundle, &mut scratch), Ok(T));
    }
    let start = s.into_flash();
    let blob = f.added_blob("oncology", 5, 1, seed ^ 1);
    let pkg = f.added_package("oncology", 5, 1, 0, &blob);
    let chunks = seed ^ 0xC4;
    // Dry run: the operations of the add, and does it compact?
    let mut d = f.open(start.clone(), layout);
    let (ops0, gen0) = (d.flash_mut().ops(), d.journal_generation());
    assert_eq!(
        stream(&mut d, &pkg, &bundle, &mut Rng::new(chunks)),
        Ok(T + 1)
    );
    let total = d.flash_mut().ops() - ops0;
    println!(
        "add: package {} B, {total} flash operations, compaction: {}",
        pkg.len(),
        d.journal_generation() > gen0
    );
    let (mut with, mut without) = (0, 0);
    for k in 0..total {
        for trial in 0..2u64 {
            // Power cut at operation k.
            let what = format!("cut at op {k} (trial {trial})");
            let mut flash = start.clone();
            flash.reseed(seed ^ (k << 8) ^ trial);
            let mut s = f.open(flash, layout);
            let at = s.flash_mut().ops() + k;
            s.flash_mut().cut_at(at);
            let r = stream(&mut s, &pkg, &bundle, &mut Rng::new(chunks));
            assert!(matches!(r, Err(UpdateError::Flash(_))), "{what}: {r:?}");
            let mut flash = s.into_flash();
            flash.reboot();
            let mut s = f.open(flash, layout);
            if all_or_nothing(&mut s, &f, &blob, &other, &what) {
                with += 1;
            } else {
                without += 1;
                // Sending it again completes it (resuming where the journal says).
                assert_eq!(
                    stream(&mut s, &pkg, &bundle, &mut Rng::new(chunks ^ k)),
                    Ok(T + 1),
                    "{what}: resend"
                );
                let mut s = f.reopen(s);
                assert!(all_or_nothing(&mut s, &f, &blob, &other, &what));
            }

            // A transient failure at operation k: the host retries, the add is acknowledged
            // and is there after a reboot.
            let what = format!("failure at op {k} (trial {trial})");
            let mut flash = start.clone();
            flash.reseed(seed ^ (k << 8) ^ trial ^ 0x77);
            let mut s = f.open(flash, layout);
            let at = s.flash_mut().ops() + k;
            s.flash_mut().fail_at(at);
            let mut rng = Rng::new(chunks);
            let mut done = None;
            for _ in 0..6 {
                match stream(&mut s, &pkg, &bundle, &mut rng) {
                    Err(UpdateError::Flash(_)) => continue,
                    r => {
                        done = Some(r);
                        break;
                    }
                }
            }
            assert_eq!(done, Some(Ok(T + 1)), "{what}");
            let mut s = f.reopen(s);
            assert!(all_or_nothing(&mut s, &f, &blob, &other, &what), "{what}");
        }
    }
    println!("cuts: {without} without the department, {with} with it");
    // A cut during the commit record itself may or may not leave it complete.
    assert!(without > 0);
}

#[test]
fn a_signed_removal_retires_an_added_department_all_or_nothing_and_a_newer_add_brings_it_back() {
    use UpdateError::*;
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout_with(256, ADDED);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let v1 = f.added_blob("oncology", 5, 1, seed ^ 1);
    let v2 = f.added_blob("oncology", 5, 2, seed ^ 2);
    let p1 = f.added_package("oncology", 5, 1, 0, &v1);
    let p2 = f.added_package("oncology", 5, 2, 0, &v2);
    s.apply(&p1, &bundle, &mut scratch).unwrap();
    s.apply(&p2, &bundle, &mut scratch).unwrap();

    // Refused before anything is written: another key, a name never added, a bundle
    // department's name, the current version.
    let mut rng = Rng::new(seed ^ 0xBAD);
    let other: [u8; 32] = core::array::from_fn(|_| rng.next_u64() as u8);
    refused(
        &mut s,
        &f,
        &f.removal_with("oncology", 3, 3, &other),
        SignatureInvalid,
    );
    refused(
        &mut s,
        &f,
        &f.removal_with("neurology", 3, 3, &f.secret),
        UnknownDepartment,
    );
    let name0 = bundle.department(0).unwrap().manifest.name;
    refused(
        &mut s,
        &f,
        &f.removal_with(name0, 3, 3, &f.secret),
        NameClash,
    );
    refused(
        &mut s,
        &f,
        &f.removal_with("oncology", 2, 0, &f.secret),
        VersionCurrent,
    );

    // The removal, streamed, with a power cut at every operation: after each reboot the
    // department runs v2 exactly, or is removed — never anything else.
    let rm = f.removal_with("oncology", 3, 3, &f.secret);
    let start = s.into_flash();
    let mut d = f.open(start.clone(), layout);
    let ops0 = d.flash_mut().ops();
    assert_eq!(stream(&mut d, &rm, &bundle, &mut Rng::new(seed)), Ok(T));
    let total = d.flash_mut().ops() - ops0;
    let (mut kept, mut gone) = (0, 0);
    for k in 0..total {
        let mut flash = start.clone();
        flash.reseed(seed ^ k);
        let mut s = f.open(flash, layout);
        let at = s.flash_mut().ops() + k;
        s.flash_mut().cut_at(at);
        assert!(stream(&mut s, &rm, &bundle, &mut Rng::new(seed)).is_err());
        let mut flash = s.into_flash();
        flash.reboot();
        let mut s = f.open(flash, layout);
        factory_untouched(&mut s, &f, &format!("cut at {k}"));
        match s.active(T) {
            Active::Removed { version: 3 } => {
                gone += 1;
                assert_eq!(s.added().count(), 0);
            }
            Active::Slot { version: 2, .. } => {
                kept += 1;
                assert_eq!(slot_blob(&mut s, T), Some(v2.clone()));
                assert_eq!(s.find_added("oncology"), Some(T));
            }
            a => panic!("cut at {k}: {a:?}"),
        }
    }
    println!("removal: {total} operations; cuts kept v2 {kept}, removed {gone}");
    assert!(kept > 0);

    // Removed: not listed, runs nothing, and its old packages are replays.
    let mut s = f.reopen(d);
    assert_eq!(s.active(T), Active::Removed { version: 3 });
    assert_eq!((s.added().count(), s.find_added("oncology")), (0, None));
    assert_eq!(s.security_counter(T), 3);
    assert_eq!(slot_blob(&mut s, T), None);
    factory_untouched(&mut s, &f, "removed");
    refused(&mut s, &f, &p2, VersionOld);
    refused(&mut s, &f, &p1, VersionOld);
    refused(&mut s, &f, &rm, VersionCurrent);
    // The other pair is still free for another department.
    let c = f.added_blob("cardiology", 2, 1, seed ^ 7);
    let pc = f.added_package("cardiology", 2, 1, 0, &c);
    assert_eq!(s.apply(&pc, &bundle, &mut scratch), Ok(T + 1));
    // A newer add brings it back, in its own pair.
    let v4 = f.added_blob("oncology", 5, 4, seed ^ 4);
    let p4 = f.added_package("oncology", 5, 4, 0, &v4);
    assert_eq!(s.apply(&p4, &bundle, &mut scratch), Ok(T));
    let mut s = f.reopen(s);
    assert_eq!(s.added().collect::<Vec<_>>(), vec![T, T + 1]);
    assert_eq!(slot_blob(&mut s, T), Some(v4));
    assert_eq!(s.flash_mut().violations(), 0);
}
