//! Power-cut sweep in the MCUboot simulator's style: a streamed update of one department is
//! interrupted at every single flash operation in turn (the interrupted write or erase leaves
//! its unfinished words random). After each cut the device reboots and must run either the
//! old or the new version of that department — exactly its bytes and its logits, never a
//! mix, never neither — every other department and the bundle must be untouched, and
//! resuming must complete the update.
mod update_fixture;

use lorkd_runtime::engine::testnet::Rng;
use lorkd_runtime::format::Bundle;
use lorkd_runtime::update::package::HEADER_LEN;
use lorkd_runtime::update::sim::SimFlash;
use lorkd_runtime::update::{Active, Layout, UpdateError, UpdateStore};
use update_fixture::{seed, Fixture};

type Store<const W: usize, const E: usize> = UpdateStore<SimFlash<W, E>, 8>;

/// Streams `pkg` as a serial link would: `begin`, chunks of random sizes (the same
/// sequence every run) from the offset `begin` returns, `finish`.
fn stream<const W: usize, const E: usize>(
    s: &mut Store<W, E>,
    pkg: &[u8],
    bundle: &Bundle<'_>,
    chunk_seed: u64,
) -> Result<usize, UpdateError> {
    let mut at = s.begin(&pkg[..HEADER_LEN], bundle)? as usize;
    let mut rng = Rng::new(chunk_seed);
    while at < pkg.len() {
        let n = (1 + rng.below(200)).min(pkg.len() - at);
        s.write(at as u32, &pkg[at..at + n])?;
        at += n;
    }
    let mut scratch = vec![0u8; pkg.len()];
    s.finish(bundle, &mut scratch)
}

fn sweep<const W: usize, const E: usize>(seed: u64) {
    let f = Fixture::new(seed);
    let bundle = f.bundle();
    let std_layout = f.layout(E);
    // A small journal so compactions happen inside the swept update too.
    let bank = (13 * 64usize).div_ceil(E) * E;
    let layout = Layout {
        bank_size: bank as u32,
        slots: std_layout.journal + 2 * bank as u32,
        ..std_layout
    };
    let open = |flash: SimFlash<W, E>| {
        UpdateStore::<_, 8>::open(flash, layout, f.pubkey, &bundle).expect("store opens")
    };

    // Before: department 0 on a slot, department 1 on a slot (v2), department 2 factory.
    // Department 0 is updated until the journal is full enough that the swept update of
    // department 1 includes a compaction.
    let mut s = open(f.flash(&layout, seed));
    let mut scratch = vec![0u8; layout.slot_size as usize];
    let blob_old = f.blob(1, 2, seed ^ 12);
    s.apply(&f.package(1, 2, 0, &blob_old), &bundle, &mut scratch)
        .unwrap();
    let blob_new = f.blob(1, 3, seed ^ 13);
    let pkg = f.package(1, 3, 0, &blob_new);
    let (logits_old, logits_new) = (f.logits(&blob_old), f.logits(&blob_new));
    assert_ne!(logits_old, logits_new);
    let chunk_seed = seed ^ 0xC4;
    let mut v0 = 1;
    let (start, blob0, total) = loop {
        v0 += 1;
        let blob0 = f.blob(0, v0, seed ^ v0 as u64);
        s.apply(&f.package(0, v0, 0, &blob0), &bundle, &mut scratch)
            .unwrap();
        let start = s.into_flash();
        // Dry run: how many flash operations the update takes, and does it compact?
        let mut d = open(start.clone());
        let (ops0, gen0) = (d.flash_mut().ops(), d.journal_generation());
        assert_eq!(stream(&mut d, &pkg, &bundle, chunk_seed), Ok(1));
        if d.journal_generation() > gen0 {
            break (start.clone(), blob0, d.flash_mut().ops() - ops0);
        }
        assert!(v0 < 40, "no compaction in the swept update");
        s = open(start);
    };
    let start_img = start.image().to_vec();
    println!(
        "W={W} E={E}: package {} bytes, {total} flash operations",
        pkg.len()
    );

    // Regions that must never change: the bundle, and every slot but department 1's.
    let untouched: Vec<(usize, usize)> = std::iter::once((0, f.bundle.as_slice().len()))
        .chain([0usize, 2].iter().flat_map(|&d| {
            (0..2u8).map(move |sl| {
                let o = layout.slot_offset(d, sl) as usize;
                (o, o + layout.slot_size as usize)
            })
        }))
        .collect();

    // After a cut and a reboot: department 1 runs v2 or v3 exactly, nothing else changed.
    let check = |s: &mut Store<W, E>, what: &str| -> u32 {
        let mut buf = vec![0u8; layout.slot_size as usize];
        let v = s.active(1).version();
        let blob = s
            .read_active_blob(1, &mut buf)
            .unwrap()
            .expect("department 1 runs a slot")
            .to_vec();
        let (want_blob, want_logits) = match v {
            Some(2) => (&blob_old, &logits_old),
            Some(3) => (&blob_new, &logits_new),
            v => panic!("{what}: department 1 runs {v:?}"),
        };
        assert!(blob == *want_blob, "{what}: v{v:?} bytes");
        assert_eq!(f.logits(&blob), *want_logits, "{what}");
        assert_eq!(s.active(0).version(), Some(v0), "{what}");
        assert_eq!(
            s.read_active_blob(0, &mut buf).unwrap(),
            Some(&blob0[..]),
            "{what}"
        );
        assert_eq!(s.active(2), Active::Factory { version: 1 }, "{what}");
        let img = s.flash_mut().image();
        for &(a, b) in &untouched {
            assert!(
                img[a..b] == start_img[a..b],
                "{what}: bytes {a}..{b} changed"
            );
        }
        assert_eq!(
            s.flash_mut().violations(),
            0,
            "{what}: a word was programmed twice"
        );
        v.unwrap()
    };
    // Sends the package again after a reboot (a no-op when it was already committed).
    let resume = |s: &mut Store<W, E>, v: u32, salt: u64| -> Result<(), UpdateError> {
        if v == 3 {
            assert_eq!(
                s.begin(&pkg[..HEADER_LEN], &bundle),
                Err(UpdateError::VersionCurrent)
            );
            return Ok(());
        }
        stream(s, &pkg, &bundle, chunk_seed ^ salt).map(|_| ())
    };

    let (mut saw_old, mut saw_new, mut resumed_mid) = (0, 0, 0);
    let mut rng = Rng::new(seed ^ 0xD0);
    for k in 0..total {
        // Several outcomes of the same interrupted operation (how much of it completed).
        for trial in 0..3u64 {
            let mut flash = start.clone();
            flash.reseed(seed ^ (k << 8) ^ trial);
            let mut s = open(flash);
            let cut = s.flash_mut().ops() + k;
            s.flash_mut().cut_at(cut);
            let r = stream(&mut s, &pkg, &bundle, chunk_seed);
            assert!(
                matches!(r, Err(UpdateError::Flash(_))),
                "cut at op {k}: {r:?}"
            );
            let mut flash = s.into_flash();
            assert!(flash.is_dead());
            flash.reboot();
            let mut s = open(flash);
            let what = format!("cut at op {k} (trial {trial})");
            let v = check(&mut s, &what);
            if v == 2 {
                saw_old += 1;
            } else {
                saw_new += 1;
            }
            if s.resume_point().is_some_and(|p| p.offset > 0) {
                resumed_mid += 1;
            }
            // The resume itself loses power once more, at a random operation.
            let second = s.flash_mut().ops() + rng.below(total as usize) as u64;
            s.flash_mut().cut_at(second);
            if resume(&mut s, v, k).is_ok() {
                s.flash_mut().reboot();
            }
            let mut flash = s.into_flash();
            flash.reboot();
            let mut s = open(flash);
            let v = check(&mut s, &format!("{what}, then a cut while resuming"));
            // And the final resume completes it.
            assert_eq!(resume(&mut s, v, k ^ 1), Ok(()), "{what}: final resume");
            let mut s = open(s.into_flash());
            assert_eq!(s.active(1).version(), Some(3), "{what}: after resuming");
            check(&mut s, &format!("{what}, resumed"));
        }
    }
    println!(
        "cuts: {saw_old} kept v2, {saw_new} had committed v3, {resumed_mid} resumed mid-package"
    );
    // A cut during the commit record itself may or may not leave it complete.
    assert!(saw_old > 0 && resumed_mid > 0);
}

#[test]
fn power_cut_at_every_operation_small_words() {
    sweep::<4, 256>(seed());
}

#[test]
fn power_cut_at_every_operation_wide_words() {
    sweep::<32, 1024>(seed());
}
