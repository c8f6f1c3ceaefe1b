//! The update store on a NOR-faithful simulated flash with a real bundle: A/B alternation,
//! the previous version kept, reboot, streamed and resumed updates, journal compaction, and
//! every refusal (bad signature, wrong base, replay, …) leaving the flash byte-for-byte unchanged.
mod update_fixture;

use embedded_storage::nor_flash::ReadNorFlash;
use lorkd_runtime::format::FormatError;
use lorkd_runtime::update::package::HEADER_LEN;
use lorkd_runtime::update::sim::SimFlash;
use lorkd_runtime::update::{Active, Layout, UpdateError};
use update_fixture::{seed, Fixture, Flash, Store};

fn active_blob(s: &mut Store, f: &Fixture, dept: usize) -> Vec<u8> {
    let mut buf = vec![0u8; s.layout().slot_size as usize];
    match s.read_active_blob(dept, &mut buf).unwrap() {
        Some(b) => b.to_vec(),
        None => f.factory_blob(dept),
    }
}

#[test]
fn updates_alternate_slots_keep_the_previous_version_and_survive_reboot() {
    let seed = seed();
    let f = Fixture::new(seed);
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let bundle = f.bundle();
    for d in 0..bundle.department_count() {
        assert_eq!(s.active(d), Active::Factory { version: 1 });
    }
    let factory_logits = f.logits(&f.factory_blob(1));
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let mut prev: Option<(u8, Vec<u8>)> = None;
    for v in 2..=5u32 {
        let blob = f.blob(1, v, seed + v as u64);
        let pkg = f.package(1, v, 0, &blob);
        assert_eq!(s.apply(&pkg, &bundle, &mut scratch), Ok(1));
        s = f.reopen(s);
        let Active::Slot { slot, version, .. } = s.active(1) else {
            panic!("dept 1 not on a slot")
        };
        assert_eq!(version, v);
        assert_eq!(active_blob(&mut s, &f, 1), blob);
        let logits = f.logits(&blob);
        assert_ne!(
            logits, factory_logits,
            "the update must change the department's output"
        );
        if let Some((pslot, pblob)) = &prev {
            assert_ne!(*pslot, slot, "updates alternate A/B");
            // The previous version is still intact in the other slot.
            let off = layout.slot_offset(1, *pslot) as usize + HEADER_LEN;
            assert_eq!(&s.flash_mut().image()[off..off + pblob.len()], &pblob[..]);
        }
        prev = Some((slot, blob));
        assert_eq!(s.active(0), Active::Factory { version: 1 });
        assert_eq!(s.active(2), Active::Factory { version: 1 });
    }
    assert_eq!(s.flash_mut().violations(), 0);
}

#[test]
fn streamed_update_resumes_after_reset_and_compacts_the_journal() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    // The smallest bank the store accepts, so progress records force compactions.
    let layout = Layout {
        bank_size: 1024,
        slots: layout.journal + 2048,
        ..layout
    };
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let mut rng = lorkd_runtime::engine::testnet::Rng::new(seed);
    for v in 2..=7u32 {
        let dept = (v as usize) % 3;
        let blob = f.blob(dept, v, seed ^ v as u64);
        let pkg = f.package(dept, v, 0, &blob);
        let mut at = s.begin(&pkg[..HEADER_LEN], &bundle).unwrap() as usize;
        assert_eq!(at, 0);
        let reset_at = pkg.len() / 2 + rng.below(pkg.len() / 3);
        let mut did_reset = false;
        while at < pkg.len() {
            let n = (1 + rng.below(300)).min(pkg.len() - at);
            if !did_reset && at + n >= reset_at {
                did_reset = true;
                // Reset: RAM state is lost, the journal says where to go on.
                s = f.reopen(s);
                let rp = s.resume_point().expect("an update is pending");
                assert_eq!((rp.dept as usize, rp.version), (dept, v));
                assert!(
                    rp.offset as usize <= at && rp.offset.is_multiple_of(256),
                    "resume at {} after {at}",
                    rp.offset
                );
                at = s.begin(&pkg[..HEADER_LEN], &bundle).unwrap() as usize;
                assert_eq!(at, rp.offset as usize);
                continue;
            }
            s.write(at as u32, &pkg[at..at + n]).unwrap();
            at += n;
        }
        assert_eq!(s.finish(&bundle, &mut scratch), Ok(dept));
        s = f.reopen(s);
        assert_eq!(s.active(dept).version(), Some(v));
        assert_eq!(active_blob(&mut s, &f, dept), blob);
        assert_eq!(s.resume_point(), None);
    }
    assert!(
        s.journal_generation() > 2,
        "the journal was compacted ({})",
        s.journal_generation()
    );
    assert_eq!(s.flash_mut().violations(), 0);
}

#[test]
fn chunks_out_of_order_or_past_the_end_are_refused() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let pkg = f.package(0, 2, 0, &f.blob(0, 2, seed));
    assert_eq!(s.write(0, &pkg[..10]), Err(UpdateError::NoUpdate));
    assert_eq!(s.begin(&pkg[..HEADER_LEN], &bundle), Ok(0));
    assert_eq!(s.write(4, &pkg[4..10]), Err(UpdateError::OutOfOrder));
    s.write(0, &pkg[..10]).unwrap();
    let mut scratch = vec![0u8; layout.slot_size as usize];
    assert_eq!(
        s.finish(&bundle, &mut scratch),
        Err(UpdateError::Incomplete)
    );
    assert_eq!(s.begin(&pkg[..HEADER_LEN], &bundle), Ok(0));
    let mut long = pkg.clone();
    long.push(0);
    assert_eq!(s.write(0, &long), Err(UpdateError::Overflow));
    s.write(0, &pkg).unwrap();
    assert_eq!(
        s.finish(&bundle, &mut scratch[..10]),
        Err(UpdateError::ScratchTooSmall)
    );
    assert_eq!(s.active(0), Active::Factory { version: 1 });
}

#[test]
fn a_package_corrupted_in_transit_is_refused_at_finish_and_a_fresh_send_succeeds() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let blob = f.blob(2, 2, seed);
    let pkg = f.package(2, 2, 0, &blob);
    let mut bad = pkg.clone();
    let i = HEADER_LEN + (seed as usize % blob.len());
    bad[i] ^= 0x40;
    let mut scratch = vec![0u8; layout.slot_size as usize];
    assert_eq!(s.begin(&bad, &bundle), Ok(0));
    s.write(0, &bad).unwrap();
    assert_eq!(
        s.finish(&bundle, &mut scratch),
        Err(UpdateError::HashMismatch)
    );
    assert_eq!(s.active(2), Active::Factory { version: 1 });
    // Not resumed into the bad bytes: the next begin starts over.
    assert_eq!(s.begin(&pkg, &bundle), Ok(0));
    s.write(0, &pkg).unwrap();
    assert_eq!(s.finish(&bundle, &mut scratch), Ok(2));
    assert_eq!(active_blob(&mut s, &f, 2), blob);
}

/// Applies `pkg` and checks the refusal and that not one byte of flash changed.
fn refused(s: &mut Store, f: &Fixture, pkg: &[u8], want: &[UpdateError]) {
    let before = s.flash_mut().image().to_vec();
    let ops = s.flash_mut().ops();
    let states: Vec<Active> = (0..3).map(|d| s.active(d)).collect();
    let mut scratch = vec![0u8; s.layout().slot_size as usize];
    let got = s.apply(pkg, &f.bundle(), &mut scratch);
    match got {
        Err(e) => assert!(want.contains(&e), "got {e:?}, want one of {want:?}"),
        Ok(d) => panic!("package applied to department {d}, want {want:?}"),
    }
    assert_eq!(
        s.flash_mut().ops(),
        ops,
        "a refusal must not touch the flash"
    );
    assert!(s.flash_mut().image() == &before[..]);
    assert_eq!((0..3).map(|d| s.active(d)).collect::<Vec<_>>(), states);
}

#[test]
fn every_refusal_is_specific_and_changes_nothing_on_flash() {
    use UpdateError::*;
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let blob3 = f.blob(1, 3, seed);
    s.apply(&f.package(1, 3, 0, &blob3), &bundle, &mut scratch)
        .unwrap();

    let blob4 = f.blob(1, 4, seed + 1);
    let good = f.package(1, 4, 0, &blob4);

    // Wrong key.
    let other_key = [7u8; 32];
    let name = bundle.department(1).unwrap().manifest.name;
    refused(
        &mut s,
        &f,
        &f.package_with(name, 4, 0, *bundle.base_id(), &blob4, &other_key),
        &[SignatureInvalid],
    );

    // A flipped byte anywhere.
    for i in 0..good.len() {
        let mut p = good.clone();
        p[i] ^= 1 << (i % 8);
        let want: &[UpdateError] = match i {
            0..=3 => &[PackageBadMagic],
            4..=5 => &[PackageUnsupportedVersion],
            6..=7 | 20..=23 | 89..=95 => &[PackageBadHeader],
            16..=19 => &[PackageTruncated, PackageTrailing, PackageBadHeader],
            // Name bytes, name padding and length: a bad name, or a valid one the signature
            // refuses; the same for the counter (above the version, or not signed).
            56..=88 | 12..=15 => &[PackageBadHeader, SignatureInvalid],
            // Version, base id, the signature itself: signed fields.
            8..=11 | 24..=55 | 128..=191 => &[SignatureInvalid],
            // The blob hash in the header, or the blob.
            _ => &[HashMismatch],
        };
        refused(&mut s, &f, &p, want);
    }

    // Truncated anywhere (and one trailing byte).
    for n in 0..good.len() {
        refused(&mut s, &f, &good[..n], &[PackageTruncated]);
    }
    let mut long = good.clone();
    long.push(0);
    refused(&mut s, &f, &long, &[PackageTrailing]);

    // Wrong base id: correctly signed, but for another bundle.
    let other = Fixture::new(seed ^ 0xBA5E);
    let foreign = other.blob(1, 4, seed);
    let ob = other.bundle();
    refused(
        &mut s,
        &f,
        &f.package_with(name, 4, 0, *ob.base_id(), &foreign, &f.secret),
        &[BaseMismatch],
    );
    // The header claims our base, the blob inside belongs to the other one.
    refused(
        &mut s,
        &f,
        &f.package(1, 4, 0, &foreign),
        &[Blob(FormatError::DeptBaseMismatch)],
    );
    // A blob of another department under this department's name.
    refused(
        &mut s,
        &f,
        &f.package(1, 4, 0, &f.blob(0, 4, seed)),
        &[BlobMismatch],
    );
    // Header and blob versions disagree.
    refused(
        &mut s,
        &f,
        &f.package(1, 4, 0, &f.blob(1, 5, seed)),
        &[BlobMismatch],
    );

    // Replayed old version, the current version, an older factory-level version.
    refused(
        &mut s,
        &f,
        &f.package(1, 2, 0, &f.blob(1, 2, seed)),
        &[VersionOld],
    );
    refused(&mut s, &f, &f.package(1, 3, 0, &blob3), &[VersionCurrent]);
    refused(
        &mut s,
        &f,
        &f.package(1, 1, 0, &f.factory_blob(1)),
        &[VersionOld],
    );

    // Unknown department (correctly signed).
    refused(
        &mut s,
        &f,
        &f.package_with("spleen", 4, 0, *bundle.base_id(), &blob4, &f.secret),
        &[UnknownDepartment],
    );

    // Larger than a slot: the same flash under a layout with slots just too small.
    let tight = lorkd_runtime::update::Layout {
        slot_size: (good.len() as u32 / 256) * 256,
        ..layout
    };
    let mut t = Store::open(f.flash(&tight, seed), tight, f.pubkey, &bundle).unwrap();
    refused(&mut t, &f, &good, &[TooLarge]);

    // Below the security counter: the counter is raised past the installed version.
    s.raise_security_counter(1, 10).unwrap();
    assert_eq!(s.active(1), Active::Unavailable);
    refused(&mut s, &f, &good, &[VersionBelowCounter]);
    let blob10 = f.blob(1, 10, seed + 10);
    s.apply(&f.package(1, 10, 10, &blob10), &bundle, &mut scratch)
        .unwrap();
    assert_eq!(s.active(1).version(), Some(10));
    let s = f.reopen(s);
    assert_eq!(s.security_counter(1), 10);
    assert_eq!(s.active(1).version(), Some(10));

    // And the good package still applies on a fresh device.
    let mut fresh = f.open(f.flash(&layout, seed), layout);
    assert_eq!(fresh.apply(&good, &bundle, &mut scratch), Ok(1));
}

#[test]
fn security_counter_in_a_package_retires_the_previous_slot() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    s.apply(
        &f.package(0, 2, 0, &f.blob(0, 2, seed)),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    let blob3 = f.blob(0, 3, seed + 3);
    s.apply(&f.package(0, 3, 3, &blob3), &bundle, &mut scratch)
        .unwrap();
    // Corrupt the v3 slot: boot must not fall back to v2 (below the counter) nor the factory blob.
    let Active::Slot { blob_offset, .. } = s.active(0) else {
        panic!()
    };
    let mut flash = s.into_flash();
    let mut img = flash.image().to_vec();
    img[blob_offset as usize + 5] ^= 0xFF;
    flash = SimFlash::from_image(&img, seed);
    let s = f.open(flash, layout);
    assert_eq!(s.active(0), Active::Unavailable);
    assert_eq!(s.security_counter(0), 3);
}

#[test]
fn layouts_that_do_not_fit_are_refused() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let flash: Flash = f.flash(&layout, seed);
    let bad = [
        Layout {
            journal: layout.journal + 1,
            ..layout
        },
        Layout {
            bank_size: 256,
            ..layout
        },
        Layout {
            slots: layout.journal,
            ..layout
        },
        Layout {
            departments: 2,
            ..layout
        },
        Layout {
            slot_size: 0,
            ..layout
        },
        Layout {
            slots: layout.slots + (1 << 24),
            ..layout
        },
    ];
    for l in bad {
        assert_eq!(
            Store::open(flash.clone(), l, f.pubkey, &bundle).err(),
            Some(UpdateError::Layout),
            "{l:?}"
        );
    }
    // A journal written under one layout is not read under another.
    let s = f.open(flash, layout);
    let moved = Layout {
        slot_size: layout.slot_size - 256,
        ..layout
    };
    let r = Store::open(s.into_flash(), moved, f.pubkey, &bundle);
    assert_eq!(r.err(), Some(UpdateError::LayoutMismatch));
}

#[test]
fn begin_fresh_restarts_an_interrupted_update_and_resume_point_names_its_slot() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let pkg = f.package(0, 2, 0, &f.blob(0, 2, seed));
    assert_eq!(s.begin(&pkg[..HEADER_LEN], &bundle), Ok(0));
    s.write(0, &pkg[..pkg.len() / 2]).unwrap();
    let mut s = f.reopen(s);
    let rp = s.resume_point().expect("pending");
    assert!(rp.offset > 0);
    // The slot it names holds the package's first bytes.
    let mut head = [0u8; HEADER_LEN];
    s.flash_mut()
        .read(layout.slot_offset(rp.dept as usize, rp.slot), &mut head)
        .unwrap();
    assert_eq!(&head[..], &pkg[..HEADER_LEN]);
    // Fresh: from 0 (a new Begin record), and so after a reboot too; the update completes.
    s.begin_fresh(&pkg[..HEADER_LEN], &bundle).unwrap();
    assert_eq!(s.write(5, &pkg[5..10]), Err(UpdateError::OutOfOrder));
    s.write(0, &pkg[..100]).unwrap();
    let mut s = f.reopen(s);
    assert_eq!(s.resume_point().map(|p| p.offset), Some(0));
    s.begin_fresh(&pkg[..HEADER_LEN], &bundle).unwrap();
    s.write(0, &pkg).unwrap();
    let mut scratch = vec![0u8; layout.slot_size as usize];
    assert_eq!(s.finish(&bundle, &mut scratch), Ok(0));
    assert_eq!(s.active(0).version(), Some(2));
    assert_eq!(s.flash_mut().violations(), 0);
}

/// Streams a header through `begin` / `begin_fresh` and checks the refusal and that not one
/// flash operation happened (no `Begin` record, no erased page).
fn begin_refused(s: &mut Store, f: &Fixture, header: &[u8], want: UpdateError) {
    let before = s.flash_mut().image().to_vec();
    let ops = s.flash_mut().ops();
    let bundle = f.bundle();
    assert_eq!(s.begin(header, &bundle), Err(want));
    assert_eq!(s.begin_fresh(header, &bundle), Err(want));
    assert_eq!(
        s.flash_mut().ops(),
        ops,
        "a refused header touched the flash"
    );
    assert!(s.flash_mut().image() == &before[..]);
    assert_eq!(s.resume_point(), None);
}

#[test]
fn an_unsigned_or_wrongly_signed_header_is_refused_before_any_flash_write() {
    use lorkd_runtime::update::package::{FIELDS_LEN, HEADER_LEN};
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    // A committed version in slot A: a wiped previous version would show.
    let mut scratch = vec![0u8; layout.slot_size as usize];
    s.apply(
        &f.package(1, 2, 0, &f.blob(1, 2, seed)),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    let blob = f.blob(1, 3, seed ^ 3);
    let good = f.package(1, 3, 0, &blob);
    let name = bundle.department(1).unwrap().manifest.name;
    // Signed with another key.
    let other = f.package_with(name, 3, 0, *bundle.base_id(), &blob, &[9u8; 32]);
    begin_refused(
        &mut s,
        &f,
        &other[..HEADER_LEN],
        UpdateError::SignatureInvalid,
    );
    // No signature at all (zeros, as an unsigned tool would leave it).
    let mut unsigned = good[..HEADER_LEN].to_vec();
    unsigned[FIELDS_LEN..].fill(0);
    begin_refused(&mut s, &f, &unsigned, UpdateError::SignatureInvalid);
    // A signed header with one field changed after signing: version, counter, blob length,
    // blob hash, base id.
    for (at, bit) in [(8usize, 0u8), (12, 0), (16, 2), (100, 5), (30, 1)] {
        let mut h = good[..HEADER_LEN].to_vec();
        h[at] ^= 1 << bit;
        let r = s.begin(&h, &bundle);
        assert!(
            matches!(
                r,
                Err(UpdateError::SignatureInvalid | UpdateError::PackageBadHeader)
            ),
            "byte {at}: {r:?}"
        );
        begin_refused(&mut s, &f, &h, r.unwrap_err());
    }
    // A header shorter than its signature is truncated, not read past.
    begin_refused(
        &mut s,
        &f,
        &good[..HEADER_LEN - 1],
        UpdateError::PackageTruncated,
    );
    // The genuine header still starts the update.
    assert_eq!(s.begin(&good[..HEADER_LEN], &bundle), Ok(0));
}

#[test]
fn a_blob_that_does_not_match_the_signed_hash_is_refused_at_finish() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let pkg = f.package(0, 2, 0, &f.blob(0, 2, seed));
    // The genuine signed header, followed by another (valid, same-length) blob.
    let mut swapped = pkg.clone();
    let other = f.blob(0, 2, seed ^ 77);
    swapped[HEADER_LEN..].copy_from_slice(&other);
    assert_eq!(s.begin(&swapped, &bundle), Ok(0));
    s.write(0, &swapped).unwrap();
    let mut scratch = vec![0u8; layout.slot_size as usize];
    assert_eq!(
        s.finish(&bundle, &mut scratch),
        Err(UpdateError::HashMismatch)
    );
    assert_eq!(s.active(0), Active::Factory { version: 1 });
    let s = f.reopen(s);
    assert_eq!(s.active(0), Active::Factory { version: 1 });
}

#[test]
fn both_bank_headers_invalid_is_refused_not_formatted_and_format_keeps_counters() {
    use lorkd_runtime::update::JournalState;
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let mut s = f.open(f.flash(&layout, seed), layout);
    let mut scratch = vec![0u8; layout.slot_size as usize];
    s.apply(
        &f.package(2, 5, 4, &f.blob(2, 5, seed)),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(
        Store::probe(s.flash_mut(), &layout),
        Ok(JournalState::Valid)
    );
    let mut flash = s.into_flash();
    // One flipped bit in the only bank header (bank 0; bank 1 was never written).
    flash.flip_bit(layout.journal as usize + 9, 2);
    let before = flash.image().to_vec();
    assert_eq!(Store::probe(&mut flash, &layout), Ok(JournalState::Damaged));
    let r = Store::open(flash.clone(), layout, f.pubkey, &bundle);
    assert_eq!(r.err(), Some(UpdateError::JournalDamaged));
    assert!(
        flash.image() == &before[..],
        "open wrote to a damaged journal"
    );
    // The explicit format: fresh journal, counter kept, department back on its factory
    // blob only if that passes the counter (v1 < 4: unavailable, not a rollback).
    let s = Store::format(flash, layout, f.pubkey, &bundle).unwrap();
    assert_eq!(s.security_counter(2), 4);
    assert_eq!(s.active(2), Active::Unavailable);
    assert_eq!(s.active(0), Active::Factory { version: 1 });
    let s = f.reopen(s);
    assert_eq!(s.security_counter(2), 4);
    // A blank journal (a new device) is still formatted by `open`.
    let mut blank: Flash = f.flash(&layout, seed);
    assert_eq!(Store::probe(&mut blank, &layout), Ok(JournalState::Blank));
    assert!(Store::open(blank, layout, f.pubkey, &bundle).is_ok());
}

#[test]
fn a_committed_slot_whose_header_is_not_signed_by_the_device_key_does_not_run() {
    use lorkd_runtime::update::journal::Record;
    use lorkd_runtime::update::package::digest;
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let s = f.open(f.flash(&layout, seed), layout);
    // Someone with the flash image writes a package signed with their key into slot A and
    // a CRC-valid Commit record for it (CRC is not authentication).
    let blob = f.blob(0, 9, seed);
    let name = bundle.department(0).unwrap().manifest.name;
    let forged = f.package_with(name, 9, 0, *bundle.base_id(), &blob, &[3u8; 32]);
    let mut img = s.into_flash().image().to_vec();
    let at = layout.slot_offset(0, 0) as usize;
    img[at..at + forged.len()].copy_from_slice(&forged);
    let rec = Record::Commit {
        dept: 0,
        slot: 0,
        version: 9,
        len: forged.len() as u32,
        counter: 0,
        digest: digest(&forged),
    };
    let r = layout.journal as usize + 64;
    img[r..r + 64].copy_from_slice(&rec.encode());
    let s = f.open(SimFlash::from_image(&img, seed), layout);
    assert_eq!(s.active(0), Active::Factory { version: 1 });
    // The same with the genuine key runs: the check is the signature, not the record.
    let genuine = f.package(0, 9, 0, &blob);
    img[at..at + genuine.len()].copy_from_slice(&genuine);
    let rec = Record::Commit {
        dept: 0,
        slot: 0,
        version: 9,
        len: genuine.len() as u32,
        counter: 0,
        digest: digest(&genuine),
    };
    img[r..r + 64].copy_from_slice(&rec.encode());
    let s = f.open(SimFlash::from_image(&img, seed), layout);
    assert_eq!(s.active(0).version(), Some(9));
}
