//! Transient flash failures (an operation fails part-way and returns an error, the device
//! keeps running) and bit flips, not power cuts: a streamed update is hit by a failure at
//! every single flash operation in turn; the host retries as the firmware makes it (begin
//! again, which resumes), then more updates follow, then the device reboots. Every commit
//! the store acknowledged must be there after the reboot, no security counter may go down,
//! and the journal must open without a format.
mod update_fixture;

use lorkd_runtime::engine::testnet::Rng;
use lorkd_runtime::format::Bundle;
use lorkd_runtime::update::package::HEADER_LEN;
use lorkd_runtime::update::{Active, Layout, UpdateError};
use update_fixture::{seed, stream, Fixture, Flash, Store};

/// A host that retries after a flash error, as the firmware's `UpdateBegin` resumes.
fn stream_retrying(s: &mut Store, pkg: &[u8], bundle: &Bundle<'_>, rng: &mut Rng) -> usize {
    for _ in 0..6 {
        match stream(s, pkg, bundle, rng) {
            Err(UpdateError::Flash(_)) => continue,
            Ok(d) => return d,
            Err(e) => panic!("update refused: {e:?}"),
        }
    }
    panic!("update did not complete after retries");
}

/// What the store acknowledged: per department the last committed version, its blob, and
/// the security counter.
#[derive(Clone, Debug, PartialEq)]
struct Acked {
    version: [u32; 3],
    blob: [Option<Vec<u8>>; 3],
    counter: [u32; 3],
}

fn check(s: &mut Store, f: &Fixture, acked: &Acked, what: &str) {
    for d in 0..3 {
        assert_eq!(
            s.active(d).version(),
            Some(acked.version[d]),
            "{what}: department {d}"
        );
        assert!(
            s.security_counter(d) >= acked.counter[d],
            "{what}: department {d}'s counter went down"
        );
        let mut buf = vec![0u8; s.layout().slot_size as usize];
        let blob = s.read_active_blob(d, &mut buf).unwrap().map(<[u8]>::to_vec);
        match &acked.blob[d] {
            Some(b) => assert!(blob.as_ref() == Some(b), "{what}: department {d} bytes"),
            None => assert_eq!(blob, None, "{what}: department {d} off factory"),
        }
    }
    assert_eq!(
        s.flash_mut().violations(),
        0,
        "{what}: a word programmed twice"
    );
    let _ = f;
}

/// The standard layout with 1 KiB journal banks (15 records each), so updates compact.
fn small_journal(f: &Fixture) -> Layout {
    let std_layout = f.layout(256);
    let bank = 1024u32;
    Layout {
        bank_size: bank,
        slots: std_layout.journal + 2 * bank,
        ..std_layout
    }
}

#[test]
fn a_transient_failure_at_every_operation_loses_no_acknowledged_commit() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    // A small journal, so compactions happen inside the faulted update and after it.
    let layout = small_journal(&f);
    let open = |flash: Flash| Store::open(flash, layout, f.pubkey, &bundle).expect("store opens");
    let mut s = open(f.flash(&layout, seed));
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let blob2 = f.blob(1, 2, seed ^ 2);
    s.apply(&f.package(1, 2, 0, &blob2), &bundle, &mut scratch)
        .unwrap();
    let start = s.into_flash();
    let base = Acked {
        version: [1, 2, 1],
        blob: [None, Some(blob2), None],
        counter: [0; 3],
    };
    // The faulted update (with a security counter), then three more.
    let blob3 = f.blob(1, 3, seed ^ 3);
    let pkg3 = f.package(1, 3, 3, &blob3);
    let later: Vec<(usize, u32, u32, Vec<u8>)> = vec![
        (0, 2, 0, f.blob(0, 2, seed ^ 20)),
        (1, 4, 3, f.blob(1, 4, seed ^ 4)),
        (2, 2, 2, f.blob(2, 2, seed ^ 22)),
    ];
    // Dry run: the operations of the faulted update.
    let mut d = open(start.clone());
    let ops0 = d.flash_mut().ops();
    let mut rng = Rng::new(seed ^ 0xC4);
    assert_eq!(stream(&mut d, &pkg3, &bundle, &mut rng), Ok(1));
    let total = d.flash_mut().ops() - ops0;
    println!("package {} B, {total} flash operations", pkg3.len());

    let mut retried = 0;
    for k in 0..total {
        for trial in 0..2u64 {
            let what = format!("failure at op {k} (trial {trial})");
            let mut flash = start.clone();
            flash.reseed(seed ^ (k << 8) ^ trial);
            let mut s = open(flash);
            let at = s.flash_mut().ops() + k;
            s.flash_mut().fail_at(at);
            let mut rng = Rng::new(seed ^ 0xC4);
            let mut acked = base.clone();
            assert_eq!(
                stream_retrying(&mut s, &pkg3, &bundle, &mut rng),
                1,
                "{what}"
            );
            assert_eq!(
                s.flash_mut().failures(),
                1,
                "{what}: the failure was injected"
            );
            acked.version[1] = 3;
            acked.blob[1] = Some(blob3.clone());
            acked.counter[1] = 3;
            check(&mut s, &f, &acked, &what);
            if s.flash_mut().ops() > at + 1 {
                retried += 1;
            }
            // Reboot right away: the acknowledged commit is there.
            let mut s = open(s.into_flash());
            check(&mut s, &f, &acked, &format!("{what}, rebooted"));
            // More updates, another reboot: all of them there, counters never down.
            for (dept, v, c, blob) in &later {
                let pkg = f.package(*dept, *v, *c, blob);
                assert_eq!(stream_retrying(&mut s, &pkg, &bundle, &mut rng), *dept);
                acked.version[*dept] = *v;
                acked.blob[*dept] = Some(blob.clone());
                acked.counter[*dept] = acked.counter[*dept].max(*c);
                check(&mut s, &f, &acked, &format!("{what}, then v{v} of {dept}"));
            }
            let mut s = open(s.into_flash());
            check(
                &mut s,
                &f,
                &acked,
                &format!("{what}, later updates, rebooted"),
            );
        }
    }
    assert!(retried > 0);
}

#[test]
fn bit_flips_in_a_slot_fall_back_and_in_a_record_lose_only_that_record() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let layout = f.layout(256);
    let open = |flash: Flash| Store::open(flash, layout, f.pubkey, &bundle).expect("store opens");
    let mut s = open(f.flash(&layout, seed));
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let blob2 = f.blob(0, 2, seed ^ 2);
    s.apply(&f.package(0, 2, 0, &blob2), &bundle, &mut scratch)
        .unwrap();
    s.apply(
        &f.package(0, 3, 0, &f.blob(0, 3, seed ^ 3)),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    s.apply(
        &f.package(2, 2, 0, &f.blob(2, 2, seed ^ 4)),
        &bundle,
        &mut scratch,
    )
    .unwrap();
    let Active::Slot { slot, .. } = s.active(0) else {
        panic!("department 0 runs a slot")
    };
    let clean = s.into_flash();
    let mut rng = Rng::new(seed ^ 0xF1);
    for _ in 0..20 {
        // A flip anywhere in department 0's running package (header, signature or blob):
        // it falls back to v2 in the other slot, nothing else changes.
        let mut flash = clean.clone();
        let o = layout.slot_offset(0, slot) as usize;
        let len = HEADER_LEN + f.blob(0, 3, seed ^ 3).len();
        flash.flip_bit(o + rng.below(len), rng.below(8) as u8);
        let mut s = open(flash);
        assert_eq!(s.active(0).version(), Some(2));
        let mut buf = vec![0u8; layout.slot_size as usize];
        assert_eq!(s.read_active_blob(0, &mut buf).unwrap(), Some(&blob2[..]));
        assert_eq!(s.active(2).version(), Some(2));
    }
    // A flip in department 2's Commit record (the last record): that record is garbage,
    // department 2 is back on its factory version, departments 0's commits stay.
    let img = clean.image();
    let j = layout.journal as usize;
    let last = (1..layout.bank_size as usize / 64)
        .rev()
        .find(|&i| img[j + 64 * i..j + 64 * (i + 1)].iter().any(|&b| b != 0xFF))
        .unwrap();
    let mut flash = clean.clone();
    flash.flip_bit(j + 64 * last + 8, 0);
    let s = open(flash);
    assert_eq!(s.active(2), Active::Factory { version: 1 });
    assert_eq!(s.active(0).version(), Some(3));
}

#[test]
fn a_bit_flip_in_the_bank_header_never_rolls_the_journal_back() {
    let seed = seed();
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    // The updates below compact the small journal more than once.
    let layout = small_journal(&f);
    let bank = layout.bank_size;
    let open = |flash: Flash| Store::open(flash, layout, f.pubkey, &bundle);
    let mut s = open(f.flash(&layout, seed)).expect("store opens");
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let mut acked = Acked {
        version: [1; 3],
        blob: [None, None, None],
        counter: [0; 3],
    };
    let mut rng = Rng::new(seed ^ 0xB4);
    for v in 2..14u32 {
        let d = rng.below(3);
        let blob = f.blob(d, v, seed ^ u64::from(v));
        let c = v / 2;
        s.apply(&f.package(d, v, c, &blob), &bundle, &mut scratch)
            .unwrap();
        acked.version[d] = v;
        acked.blob[d] = Some(blob);
        acked.counter[d] = acked.counter[d].max(c);
    }
    let generation = s.journal_generation();
    assert!(generation >= 3, "compacted {generation} times");
    check(&mut s, &f, &acked, "before the flips");
    let clean = s.into_flash();
    // Formatting writes bank 0 (generation 1); every compaction moves to the other bank.
    let at = (layout.journal + (generation - 1) % 2 * bank) as usize;
    let other = (layout.journal + generation % 2 * bank) as usize;
    // The bank left by the last compaction is erased: only one header is on flash.
    assert!(clean.image()[other..other + bank as usize]
        .iter()
        .all(|&b| b == 0xFF));
    for k in 0..16 {
        let mut flash = clean.clone();
        let bit = rng.below(64 * 8);
        flash.flip_bit(at + bit / 8, (bit % 8) as u8);
        match open(flash) {
            // Never the older journal: either refused (the operator formats explicitly) or
            // the exact acknowledged state.
            Err(e) => {
                assert_eq!(e, UpdateError::JournalDamaged, "flip {k} at bit {bit}");
                let mut flash = clean.clone();
                flash.flip_bit(at + bit / 8, (bit % 8) as u8);
                let s = Store::format(flash, layout, f.pubkey, &bundle).expect("formats");
                for d in 0..3 {
                    assert!(
                        s.security_counter(d) >= acked.counter[d],
                        "format after flip {k}: department {d}'s counter went down"
                    );
                }
            }
            Ok(mut s) => check(&mut s, &f, &acked, &format!("flip {k} at bit {bit}")),
        }
    }
}
