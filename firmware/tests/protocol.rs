//! Whole conversations with the device app on the host: fake serial, pins and a
//! memory-mapped RAM NOR flash; the real model (`RuntimeModel`: `lorkd_runtime`'s engine on a
//! packed int8 ShuffleNetV2 bundle, department deltas from its A/B `UpdateStore`), with the
//! fixture the QEMU board embeds (`fakes::gen`): test images, host-computed scores, a signed
//! update. Random inputs from a seeded RNG (seed printed).
mod fakes;

use fakes::{decode, gen, Led, MemFlash, Pin, Serial};
use lorkd_firmware::app::{argmax, App, VERSION};
use lorkd_firmware::button::{Button, DEBOUNCE_MS};
use lorkd_firmware::crc::crc32;
use lorkd_firmware::fixture::Fixture;
use lorkd_firmware::model::Model;
use lorkd_firmware::proto::{
    self, DeptFault, ErrorCode, Health, Request, Response, MAX_CHUNK, MAX_FRAME,
};
use lorkd_firmware::runtime_model::{scratch_bytes, verify_bundle, Device, Halted, RuntimeModel};
use lorkd_runtime::engine::AlignedBytes;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::update::package::{write_signed, Package, PackageHeader, HEADER_LEN};
use lorkd_runtime::update::Layout;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::OnceLock;

type Model_ = RuntimeModel<'static, MemFlash>;
type Dev = App<'static, Serial, Pin, Led, Model_>;

/// The fixture, built once per test binary; everything in it lives for the whole run.
struct Fx {
    bytes: &'static [u8],
    f: Fixture<'static>,
    bundle: &'static Bundle<'static>,
    layout: Layout,
    input_len: usize,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let (bytes, summary) = gen::fixture().expect("fixture");
        println!("fixture: {summary}");
        // 16-aligned in memory, like the bundle in flash (the engine reads it in place).
        let al: &'static AlignedBytes = Box::leak(Box::new(AlignedBytes::new(&bytes)));
        let f = Fixture::parse(al.as_slice()).expect("fixture parses");
        // Verified boot, as the board does it: the fixture's key is the vendor key.
        let bundle: &'static Bundle<'static> = Box::leak(Box::new(
            verify_bundle(f.bundle, &f.pubkey).expect("bundle verifies"),
        ));
        // The store in a flash of its own (the bundle stays where it is, read in place).
        let layout = Layout::for_bundle(bundle, 0, 1024);
        Fx {
            bytes: al.as_slice(),
            input_len: f.input_len,
            f,
            bundle,
            layout,
        }
    })
}

impl Fx {
    fn image(&self, n: usize) -> Vec<f32> {
        let mut x = vec![0f32; self.input_len];
        self.f.image(n, &mut x);
        x
    }
    fn classes(&self, d: usize) -> usize {
        self.bundle.department(d).unwrap().classes()
    }
    /// The host's scores for department `d` on image `n`.
    fn expected(&self, d: usize, n: usize) -> Vec<f32> {
        (0..self.classes(d))
            .map(|k| self.f.expected(d, n, k).1)
            .collect()
    }
    /// The host's scores for the updated department on image `n`, after the update.
    fn expected_updated(&self, n: usize) -> Vec<f32> {
        (0..self.classes(self.f.update_dept))
            .map(|k| self.f.expected_updated(n, k).1)
            .collect()
    }
    fn new_flash(&self) -> MemFlash {
        MemFlash::new(self.layout.end() as usize)
    }
    /// A copy of the fixture's update with its header replaced, re-signed with the test key
    /// (authentic, but for another base / an older version).
    fn resigned(&self, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let p = Package::parse(self.f.update).unwrap();
        let mut h = self.f.update[..HEADER_LEN].to_vec();
        edit(&mut h);
        let h = PackageHeader::parse(&h).unwrap();
        let mut out = vec![0u8; h.package_len() as usize];
        write_signed(&h, p.blob(), &gen::SIGNING_KEY, &mut out).unwrap();
        out
    }
}

struct Rig {
    app: Dev,
    serial: Serial,
    button: Pin,
    led: Led,
    flash: MemFlash,
    now: u32,
}

fn rng() -> ChaCha8Rng {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// Boots the device over `flash`: opens the update store (journal replay, slots re-hashed),
/// starts the model on a fresh arena, assembles the app.
fn boot(flash: MemFlash) -> Rig {
    let fx = fx();
    let (serial, button, led) = (Serial::default(), Pin::default(), Led::default());
    button.0.set(true); // active low, released
    let arena: &'static mut AlignedBytes = Box::leak(Box::new(AlignedBytes::zeroed(
        fx.bundle.arena_bytes(Mode::Materialized),
    )));
    let scratch: &'static mut [u8] =
        Box::leak(vec![0u8; scratch_bytes(&fx.layout)].into_boxed_slice());
    let model = RuntimeModel::new(
        fx.bundle,
        arena.as_mut_slice(),
        Mode::Materialized,
        flash.clone(),
        fx.layout,
        fx.f.pubkey,
        scratch,
    )
    .unwrap();
    let frame: &'static mut [f32] = Box::leak(vec![0f32; fx.input_len].into_boxed_slice());
    let app = App::new(
        serial.clone(),
        Button::new(button.clone(), true),
        led.clone(),
        model,
        frame,
    )
    .unwrap();
    Rig {
        app,
        serial,
        button,
        led,
        flash,
        now: 0,
    }
}

fn rig() -> Rig {
    boot(fx().new_flash())
}

impl Rig {
    /// Sends one request, polls, returns the one frame answered (raw).
    fn ask(&mut self, req: &Request<'_>) -> Vec<u8> {
        self.serial.send(req);
        self.answer()
    }
    fn answer(&mut self) -> Vec<u8> {
        self.now += 1;
        self.app.poll(self.now);
        let mut f = self.serial.frames();
        assert_eq!(f.len(), 1, "exactly one response per request");
        f.pop().unwrap()
    }
    fn error(&mut self, req: &Request<'_>) -> (ErrorCode, u32) {
        let mut f = self.ask(req);
        let out = match decode(&mut f) {
            Response::Error { code, detail } => (code, detail),
            r => panic!("expected an error, got {r:?}"),
        };
        out
    }
    fn select(&mut self, dept: u8) {
        let mut f = self.ask(&Request::Select { dept });
        assert_eq!(decode(&mut f), Response::Selected { dept });
    }
    fn infer(&mut self, x: &[f32]) -> (u8, u16, Vec<f32>) {
        let mut f = self.ask(&Request::InferBegin {
            len: x.len() as u32,
        });
        assert_eq!(decode(&mut f), Response::Ack { next: 0 });
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let chunks: Vec<&[u8]> = bytes.chunks(MAX_CHUNK).collect();
        for (i, c) in chunks.iter().enumerate() {
            let offset = (i * MAX_CHUNK / 4) as u32;
            let mut f = self.ask(&Request::InferChunk { offset, data: c });
            let done = match decode(&mut f) {
                Response::Ack { next } => {
                    assert!(i + 1 < chunks.len());
                    assert_eq!(next as usize, offset as usize + c.len() / 4);
                    None
                }
                Response::Scores { dept, top1, scores } => {
                    assert_eq!(i + 1, chunks.len());
                    Some((dept, top1, scores.to_vec()))
                }
                r => panic!("unexpected {r:?}"),
            };
            if let Some(d) = done {
                return d;
            }
        }
        unreachable!()
    }
    fn status(&mut self) -> proto::Status {
        let mut a = self.ask(&Request::Status);
        let out = match decode(&mut a) {
            Response::Status(s) => s,
            r => panic!("{r:?}"),
        };
        out
    }
    fn versions(&mut self) -> Vec<u32> {
        let mut a = self.ask(&Request::Hello);
        let out = match decode(&mut a) {
            Response::Hello { versions, .. } => versions.to_vec(),
            r => panic!("{r:?}"),
        };
        out
    }
    fn wait(&mut self, ms: u32) {
        for _ in 0..ms {
            self.now += 1;
            self.app.poll(self.now);
        }
    }
    /// A reset: the app and model are dropped; a new one boots over the same flash.
    fn reset(self) -> Rig {
        let flash = self.flash.clone();
        drop(self);
        boot(flash)
    }
}

/// The board embeds the fixture and `run-qemu` regenerates it before each build: the same
/// code must write the same bytes (a second generation in this process, whose hash maps
/// are seeded differently from the first's).
#[test]
fn the_fixture_generator_is_deterministic() {
    let first = fx().bytes;
    let (again, _) = gen::fixture().expect("fixture");
    assert_eq!(first.len(), again.len(), "fixture length");
    if let Some(i) = (0..first.len()).find(|&i| first[i] != again[i]) {
        panic!("two generations differ from byte {i} of {}", first.len());
    }
}

#[test]
fn hello_select_infer_status_conversation() {
    let fx = fx();
    let mut r = rig();
    let mut f = r.ask(&Request::Hello);
    let n = fx.f.departments;
    match decode(&mut f) {
        Response::Hello {
            version,
            departments,
            active,
            input_len,
            versions,
        } => {
            assert_eq!(version, VERSION);
            let names: Vec<&str> = (0..n)
                .map(|d| fx.bundle.department(d).unwrap().manifest.name)
                .collect();
            assert_eq!(&departments[..], &names[..]);
            assert_eq!(active, 0);
            assert_eq!(input_len as usize, 3 * 32 * 32);
            let factory: Vec<u32> = (0..n)
                .map(|d| fx.bundle.department(d).unwrap().manifest.version)
                .collect();
            assert_eq!(&versions[..], &factory[..]);
        }
        other => panic!("{other:?}"),
    }
    // Every department on every image: the engine's scores, bit for bit as on the host.
    let mut count = 0;
    let mut tops = Vec::new();
    for dept in [2u8, 0, 1, 2] {
        r.select(dept);
        for img in 0..fx.f.images {
            let (d, top1, scores) = r.infer(&fx.image(img));
            let want = fx.expected(dept as usize, img);
            assert_eq!(d, dept);
            assert_eq!(scores, want, "scores of department {dept}, image {img}");
            assert_eq!(top1 as usize, argmax(&want));
            assert_eq!(top1 as usize, fx.f.expected(dept as usize, img, 0).0);
            tops.push(top1);
            count += 1;
        }
    }
    assert!(tops.iter().any(|&t| t != tops[0]), "top-1 all the same");
    let s = r.status();
    assert_eq!(
        (s.active, s.departments as usize, s.inferences, s.frames_bad),
        (2, n, count, 0)
    );
    // Hello + 4 × (Select + images × (InferBegin + 24 chunks)) + Status
    let chunks = (fx.input_len * 4).div_ceil(MAX_CHUNK) as u32;
    assert_eq!(
        s.frames_ok,
        1 + 4 * (1 + fx.f.images as u32 * (1 + chunks)) + 1
    );
    assert_eq!(
        r.error(&Request::Select { dept: n as u8 }),
        (ErrorCode::BadDepartment, n as u32)
    );
    // The LED is on when idle, and went off while each request was handled.
    let led = r.led.0.borrow();
    assert_eq!(led.last(), Some(&true));
    assert!(led.iter().filter(|l| !**l).count() >= 20);
}

#[test]
fn bad_frames_get_error_frames_and_the_device_keeps_serving() {
    let mut rng = rng();
    let mut r = rig();
    let mut s = [0u8; 64];
    let mut f = [0u8; 80];
    let n = proto::encode_frame(&Request::Select { dept: 1 }, &mut s, &mut f).unwrap();
    let good = f[..n].to_vec();

    // Bad CRC: change one payload byte to another non-zero value.
    for pos in 1..n - 1 {
        let mut bad = good.clone();
        bad[pos] = if bad[pos] == 0xFE { 0xFD } else { bad[pos] + 1 };
        if bad[pos] == 0 {
            bad[pos] = 0x55;
        }
        r.serial.send_raw(&bad);
        let mut a = r.answer();
        let resp = decode(&mut a);
        match resp {
            Response::Error { code, .. } => {
                assert!(
                    matches!(code, ErrorCode::BadCrc | ErrorCode::Truncated),
                    "{code:?}"
                )
            }
            other => panic!("corruption at {pos} accepted: {other:?}"),
        };
    }
    // Truncated: the frame cut short, then its delimiter.
    let mut cut = good[..n - 3].to_vec();
    cut.push(0);
    r.serial.send_raw(&cut);
    let mut a = r.answer();
    assert!(matches!(
        decode(&mut a),
        Response::Error {
            code: ErrorCode::Truncated | ErrorCode::BadCrc,
            ..
        }
    ));
    r.serial.send_raw(&[0x02, 0x07, 0x00]); // one byte: shorter than a CRC
    let mut a = r.answer();
    assert_eq!(
        decode(&mut a),
        Response::Error {
            code: ErrorCode::Truncated,
            detail: 0
        }
    );
    // Unknown command: a well-framed message with a variant this firmware lacks.
    let mut msg = vec![200u8, 1];
    msg.extend_from_slice(&crc32(&msg).to_le_bytes());
    let mut enc = vec![0u8; 16];
    let m = lorkd_firmware::cobs::encode(&msg, &mut enc).unwrap();
    enc.truncate(m);
    enc.push(0);
    r.serial.send_raw(&enc);
    let mut a = r.answer();
    assert_eq!(
        decode(&mut a),
        Response::Error {
            code: ErrorCode::UnknownCommand,
            detail: 0
        }
    );
    // Oversized: more than MAX_FRAME bytes before a delimiter.
    let big: Vec<u8> = (0..MAX_FRAME + 100)
        .map(|_| rng.gen_range(1..=255))
        .collect();
    r.serial.send_raw(&big);
    r.serial.send_raw(&[0]);
    let mut a = r.answer();
    assert_eq!(
        decode(&mut a),
        Response::Error {
            code: ErrorCode::Oversized,
            detail: MAX_FRAME as u32
        }
    );
    // Line noise between frames (empty frames) is ignored; the good frame still works.
    r.serial.send_raw(&[0, 0, 0]);
    r.serial.send_raw(&good);
    let mut a = r.answer();
    assert_eq!(decode(&mut a), Response::Selected { dept: 1 });
    let mut a = r.ask(&Request::Status);
    let Response::Status(st) = decode(&mut a) else {
        panic!()
    };
    assert_eq!(st.frames_bad as usize, (n - 2) + 4);
    assert_eq!(st.active, 1);
}

#[test]
fn inference_chunks_out_of_order_are_refused() {
    let fx = fx();
    let mut r = rig();
    let data = [0u8; 16];
    assert_eq!(
        r.error(&Request::InferChunk {
            offset: 0,
            data: &data
        }),
        (ErrorCode::BadState, 0)
    );
    assert_eq!(
        r.error(&Request::InferBegin { len: 7 }),
        (ErrorCode::TooLarge, fx.input_len as u32)
    );
    let mut a = r.ask(&Request::InferBegin {
        len: fx.input_len as u32,
    });
    assert_eq!(decode(&mut a), Response::Ack { next: 0 });
    assert_eq!(
        r.error(&Request::InferChunk {
            offset: 8,
            data: &data
        }),
        (ErrorCode::BadOffset, 0)
    );
    assert_eq!(
        r.error(&Request::InferChunk {
            offset: 0,
            data: &data[..5]
        })
        .0,
        ErrorCode::Malformed
    );
    let big = vec![0u8; (fx.input_len + 1) * 4];
    let (code, _) = r.error(&Request::InferChunk {
        offset: 0,
        data: &big,
    });
    // Either the frame is too long for the device or the chunk runs past the input.
    assert!(
        matches!(code, ErrorCode::Oversized | ErrorCode::TooLarge),
        "{code:?}"
    );
    // A full inference still works afterwards.
    let (_, _, scores) = r.infer(&fx.image(1));
    assert_eq!(scores, fx.expected(0, 1));
}

#[test]
fn button_presses_cycle_departments_debounced() {
    let fx = fx();
    let mut r = rig();
    let press = |r: &mut Rig, bounces: usize| {
        for _ in 0..bounces {
            r.button.0.set(false);
            r.wait(2);
            r.button.0.set(true);
            r.wait(1);
        }
        r.button.0.set(false);
        r.wait(DEBOUNCE_MS + 5);
        r.button.0.set(true);
        r.wait(DEBOUNCE_MS + 5);
    };
    assert_eq!(r.app.model().active(), 0);
    press(&mut r, 0);
    assert_eq!(r.app.model().active(), 1);
    press(&mut r, 6); // a bouncy press is still one press
    assert_eq!(r.app.model().active(), 2);
    press(&mut r, 3);
    assert_eq!(r.app.model().active(), 0, "wraps around");
    // A glitch shorter than the debounce time is no press.
    r.button.0.set(false);
    r.wait(DEBOUNCE_MS - 5);
    r.button.0.set(true);
    r.wait(3 * DEBOUNCE_MS);
    assert_eq!(r.app.model().active(), 0);
    // Holding the button is one press, not a repeat.
    r.button.0.set(false);
    r.wait(20 * DEBOUNCE_MS);
    assert_eq!(r.app.model().active(), 1);
    r.button.0.set(true);
    r.wait(2 * DEBOUNCE_MS);
    let mut a = r.ask(&Request::Status);
    let Response::Status(st) = decode(&mut a) else {
        panic!()
    };
    assert_eq!((st.active, st.button_presses), (1, 4));
    assert!(
        r.serial.frames().is_empty(),
        "button presses send nothing unsolicited"
    );
    // Inference after a button switch uses the new department.
    let (d, _, s) = r.infer(&fx.image(2));
    assert_eq!((d, s), (1, fx.expected(1, 2)));
}

/// Sends chunks of `pkg` from `from` until `until` bytes, of `size` bytes each; returns the
/// next offset.
fn send_chunks(r: &mut Rig, pkg: &[u8], from: usize, until: usize, size: usize) -> usize {
    let mut off = from;
    while off < until {
        let end = (off + size).min(until);
        let mut a = r.ask(&Request::UpdateChunk {
            offset: off as u32,
            data: &pkg[off..end],
        });
        assert_eq!(decode(&mut a), Response::Ack { next: end as u32 });
        off = end;
    }
    off
}

fn begin(r: &mut Rig, pkg: &[u8]) -> u32 {
    let (len, crc) = (pkg.len() as u32, crc32(pkg));
    let mut a = r.ask(&Request::UpdateBegin { len, crc });
    let out = match decode(&mut a) {
        Response::UpdateReady { resume_at } => resume_at,
        other => panic!("{other:?}"),
    };
    out
}

/// Infers every image with department `d`; returns the scores.
fn scores_of(r: &mut Rig, d: u8) -> Vec<Vec<f32>> {
    r.select(d);
    (0..fx().f.images)
        .map(|n| r.infer(&fx().image(n)).2)
        .collect()
}

#[test]
fn update_streams_into_the_store_resumes_after_resets_and_answers_with_the_new_version() {
    let fx = fx();
    let (d, v) = (fx.f.update_dept, fx.f.update_version);
    let pkg = fx.f.update;
    let len = pkg.len() as u32;
    let mut r = rig();
    let before = r.versions();
    assert!(before[d] < v);
    let others: Vec<Vec<Vec<f32>>> = (0..fx.f.departments)
        .map(|i| scores_of(&mut r, i as u8))
        .collect();
    r.select(d as u8);

    assert_eq!(begin(&mut r, pkg), 0);
    // Odd chunk sizes: the header arrives split, chunks straddle flash pages and write units.
    let half = pkg.len() / 2;
    send_chunks(&mut r, pkg, 0, half, 301);
    assert_eq!(
        r.error(&Request::UpdateChunk {
            offset: 0,
            data: &pkg[..8]
        }),
        (ErrorCode::BadOffset, half as u32)
    );
    assert_eq!(
        r.error(&Request::UpdateCommit),
        (ErrorCode::BadState, half as u32)
    );
    // Same download, no reset: continues where it is.
    assert_eq!(begin(&mut r, pkg), half as u32);
    let st = r.status();
    assert_eq!((st.update_staged, st.update_len), (half as u32, len));

    // Reset: the journal says which pages are on flash; the package continues from the last
    // whole erase page, its header read back from the slot (the host does not resend it).
    let mut r = r.reset();
    let page = 1024;
    let kept = (half / page * page) as u32;
    let st = r.status();
    assert_eq!((st.update_staged, st.update_len), (kept, len));
    assert_eq!(r.versions(), before, "nothing committed yet");
    assert_eq!(begin(&mut r, pkg), kept);
    let at = send_chunks(&mut r, pkg, kept as usize, kept as usize + 1800, 500);

    // Power cut in the middle of a chunk that completes a flash page: its first bytes reach
    // the flash, the journal's Progress record for the page does not.
    assert!(at % page + MAX_CHUNK > page);
    r.flash.writes_left.set(Some(1));
    let (code, _) = r.error(&Request::UpdateChunk {
        offset: at as u32,
        data: &pkg[at..at + MAX_CHUNK],
    });
    assert_eq!(code, ErrorCode::Flash);
    r.flash.writes_left.set(None);
    let mut r = r.reset();
    let st = r.status();
    let kept2 = st.update_staged;
    assert!(kept2 >= kept && kept2 as usize <= at && kept2.is_multiple_of(page as u32));
    assert_eq!(begin(&mut r, pkg), kept2);
    send_chunks(&mut r, pkg, kept2 as usize, pkg.len(), MAX_CHUNK);
    r.select(d as u8); // running the old version while the new one is committed
    let gen0 = r.app.model().store().unwrap().journal_generation();
    let mut a = r.ask(&Request::UpdateCommit);
    assert_eq!(
        decode(&mut a),
        Response::Updated {
            dept: d as u8,
            version: v
        }
    );
    assert_eq!(r.app.model().store().unwrap().journal_generation(), gen0);
    // The department answers with the new version, and runs the new expert right away.
    let mut after = before.clone();
    after[d] = v;
    assert_eq!(r.versions(), after);
    assert_eq!(r.status().versions.to_vec(), after);
    assert_eq!(r.status().update_len, 0);
    for n in 0..fx.f.images {
        let (dd, top1, s) = r.infer(&fx.image(n));
        assert_eq!(dd as usize, d);
        assert_eq!(s, fx.expected_updated(n), "image {n}");
        assert_eq!(top1 as usize, fx.f.expected_updated(n, 0).0);
    }
    assert_ne!(
        fx.expected_updated(0),
        fx.expected(d, 0),
        "the update changes scores"
    );
    // Switch away and back: bit-identical; the other departments are untouched.
    for (i, before) in others.iter().enumerate() {
        let s = scores_of(&mut r, i as u8);
        if i != d {
            assert_eq!(&s, before, "department {i}");
        }
    }
    assert_eq!(
        scores_of(&mut r, d as u8),
        (0..fx.f.images)
            .map(|n| fx.expected_updated(n))
            .collect::<Vec<_>>()
    );
    // A commit leaves nothing to commit.
    assert_eq!(r.error(&Request::UpdateCommit), (ErrorCode::BadState, 0));

    // After a reset the device boots into the new version (newest committed, intact slot).
    let mut r = r.reset();
    assert_eq!(r.versions(), after);
    assert_eq!(r.status().update_len, 0, "no update pending");
    assert_eq!(
        scores_of(&mut r, d as u8),
        (0..fx.f.images)
            .map(|n| fx.expected_updated(n))
            .collect::<Vec<_>>()
    );
}

/// Sends a whole package; returns the answer to `UpdateCommit` (or to the chunk that was
/// refused).
fn push_package(r: &mut Rig, pkg: &[u8]) -> Response<'static> {
    assert_eq!(begin(r, pkg), 0);
    let mut off = 0;
    while off < pkg.len() {
        let end = (off + MAX_CHUNK).min(pkg.len());
        let mut a = r.ask(&Request::UpdateChunk {
            offset: off as u32,
            data: &pkg[off..end],
        });
        match decode(&mut a) {
            Response::Ack { next } => assert_eq!(next as usize, end),
            Response::Error { code, detail } => return Response::Error { code, detail },
            other => panic!("{other:?}"),
        }
        off = end;
    }
    let mut a = r.ask(&Request::UpdateCommit);
    let out = match decode(&mut a) {
        Response::Error { code, detail } => Response::Error { code, detail },
        Response::Updated { dept, version } => Response::Updated { dept, version },
        other => panic!("{other:?}"),
    };
    out
}

fn rejected(code: u32) -> Response<'static> {
    Response::Error {
        code: ErrorCode::UpdateRejected,
        detail: code,
    }
}

#[test]
fn refused_updates_leave_the_running_department_untouched() {
    let fx = fx();
    let (d, v) = (fx.f.update_dept, fx.f.update_version);
    let pkg = fx.f.update;
    let mut r = rig();
    let before = r.versions();
    let scores = scores_of(&mut r, d as u8);
    let untouched = |r: &mut Rig, what: &str| {
        assert_eq!(r.versions(), before, "{what}");
        assert_eq!(scores_of(r, d as u8), scores, "{what}");
    };

    // Another bundle's package (authentic, other base id): refused at its header, before
    // anything is written.
    let other_base = fx.resigned(|h| h[24] ^= 1);
    assert_eq!(push_package(&mut r, &other_base), rejected(13));
    untouched(&mut r, "other base");
    // One signature bit flipped: refused at its header, before anything is written.
    let image = r.flash.peek(0, fx.layout.end() as usize);
    let mut bad_sig = pkg.to_vec();
    bad_sig[HEADER_LEN - 1] ^= 1;
    assert_eq!(push_package(&mut r, &bad_sig), rejected(11));
    assert!(
        r.flash.peek(0, fx.layout.end() as usize) == image,
        "a wrongly signed header changed the flash"
    );
    untouched(&mut r, "bad signature");
    // A blob bit flipped (first and last byte): the blob no longer hashes to the signed
    // header's digest; refused at the commit.
    for at in [HEADER_LEN, pkg.len() - 1] {
        let mut bad_blob = pkg.to_vec();
        bad_blob[at] ^= 1;
        assert_eq!(push_package(&mut r, &bad_blob), rejected(9));
        untouched(&mut r, "bad blob");
    }
    // Not the CRC the host announced: refused before the store verifies anything.
    let mut a = r.ask(&Request::UpdateBegin {
        len: pkg.len() as u32,
        crc: crc32(pkg) ^ 1,
    });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: 0 });
    send_chunks(&mut r, pkg, 0, pkg.len(), MAX_CHUNK);
    assert_eq!(r.error(&Request::UpdateCommit), (ErrorCode::UpdateCrc, 0));
    untouched(&mut r, "bad crc");
    // Too large for a slot; too short to be a package; a chunk past the announced length.
    let cap = fx.layout.slot_size;
    assert_eq!(
        r.error(&Request::UpdateBegin {
            len: cap + 1,
            crc: 0
        }),
        (ErrorCode::TooLarge, cap)
    );
    assert_eq!(
        r.error(&Request::UpdateBegin { len: 100, crc: 0 }).0,
        ErrorCode::Malformed
    );
    let mut a = r.ask(&Request::UpdateBegin { len: 200, crc: 0 });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: 0 });
    assert_eq!(
        r.error(&Request::UpdateChunk {
            offset: 0,
            data: &[0; 300]
        }),
        (ErrorCode::TooLarge, 200)
    );
    // Not a package at all (a header of zeros: bad magic).
    assert_eq!(
        r.error(&Request::UpdateChunk {
            offset: 0,
            data: &[0; 200]
        }),
        (ErrorCode::UpdateRejected, 4)
    );
    untouched(&mut r, "not a package");

    // The real one goes in (after all those refusals) …
    assert_eq!(
        push_package(&mut r, pkg),
        Response::Updated {
            dept: d as u8,
            version: v
        }
    );
    // … and cannot be replayed, nor an older version (re-signed) go back.
    assert_eq!(push_package(&mut r, pkg), rejected(16));
    let older = fx.resigned(|h| h[8..12].copy_from_slice(&1u32.to_le_bytes()));
    assert_eq!(push_package(&mut r, &older), rejected(15));
    let mut after = before.clone();
    after[d] = v;
    assert_eq!(r.versions(), after);
    assert_eq!(
        scores_of(&mut r, d as u8),
        (0..fx.f.images)
            .map(|n| fx.expected_updated(n))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_resumed_download_whose_crc_fails_starts_afresh() {
    let fx = fx();
    let pkg = fx.f.update;
    let mut r = rig();
    // Half of a package whose blob differs (same header), then a reset.
    let mut other = pkg.to_vec();
    other[pkg.len() / 4] ^= 0x40;
    assert_eq!(begin(&mut r, &other), 0);
    send_chunks(&mut r, &other, 0, pkg.len() / 2, MAX_CHUNK);
    let mut r = r.reset();
    // The real package has the same length: the device offers to resume (it cannot know the
    // bytes differ until the whole-package CRC) …
    let at = begin(&mut r, pkg);
    assert!(at > 0);
    send_chunks(&mut r, pkg, at as usize, pkg.len(), MAX_CHUNK);
    assert_eq!(r.error(&Request::UpdateCommit), (ErrorCode::UpdateCrc, 0));
    // … then starts afresh, and the update goes in.
    assert_eq!(
        push_package(&mut r, pkg),
        Response::Updated {
            dept: fx.f.update_dept as u8,
            version: fx.f.update_version
        }
    );
}

type HaltDev = App<'static, Serial, Pin, Led, Device<'static, MemFlash>>;

/// Sends `req` to `app` over `serial`, polls once, returns the one answer.
fn ask_any<M: Model>(
    app: &mut App<'static, Serial, Pin, Led, M>,
    serial: &Serial,
    req: &Request<'_>,
) -> Vec<u8> {
    serial.send(req);
    app.poll(0);
    let mut f = serial.frames();
    assert_eq!(f.len(), 1, "exactly one response per request");
    f.pop().unwrap()
}

#[test]
fn an_unsigned_or_wrongly_signed_bundle_is_refused_and_the_device_runs_nothing() {
    use lorkd_runtime::format::header::{Header, FILE_HASH_OFFSET, FLAG_SIGNED};
    use lorkd_runtime::format::view::file_hash;
    let fx = fx();
    let key = fx.f.pubkey;
    // The same bundle, unsigned (flag cleared, signature removed, file hash resealed): a
    // valid bundle, refused only for want of a signature.
    let h = Header::decode(fx.f.bundle).unwrap();
    let mut unsigned = fx.f.bundle[..h.file_len as usize].to_vec();
    let mut uh = h;
    uh.flags &= !FLAG_SIGNED;
    unsigned[..uh.encode().len()].copy_from_slice(&uh.encode());
    let fh = file_hash(&unsigned);
    unsigned[FILE_HASH_OFFSET..FILE_HASH_OFFSET + 32].copy_from_slice(&fh);
    let unsigned = AlignedBytes::new(&unsigned);
    assert!(Bundle::parse(unsigned.as_slice()).is_ok());
    assert_eq!(
        verify_bundle(unsigned.as_slice(), &key).err(),
        Some(Halted { reason: 1 })
    );
    // Signed, one signature bit flipped; and signed, checked against another key.
    let mut flipped = fx.f.bundle.to_vec();
    *flipped.last_mut().unwrap() ^= 4;
    let flipped = AlignedBytes::new(&flipped);
    assert_eq!(
        verify_bundle(flipped.as_slice(), &key).err(),
        Some(Halted { reason: 2 })
    );
    let other = ed25519_dalek::SigningKey::from_bytes(&[5; 32])
        .verifying_key()
        .to_bytes();
    assert_eq!(
        verify_bundle(fx.f.bundle, &other).err(),
        Some(Halted { reason: 2 })
    );
    // The device over a refused bundle: Hello and Status say why, nothing else runs.
    let (serial, button, led) = (Serial::default(), Pin::default(), Led::default());
    button.0.set(true);
    let frame: &'static mut [f32] = Box::leak(vec![0f32; 4].into_boxed_slice());
    let mut app: HaltDev = App::new(
        serial.clone(),
        Button::new(button, true),
        led,
        Device::Halted(Halted { reason: 1 }),
        frame,
    )
    .unwrap();
    let mut a = ask_any(&mut app, &serial, &Request::Hello);
    assert!(
        matches!(decode(&mut a), Response::Hello { departments, .. } if departments.is_empty())
    );
    let mut a = ask_any(&mut app, &serial, &Request::Status);
    assert!(matches!(decode(&mut a), Response::Status(s) if s.health == Health::BundleRefused(1)));
    let pkg = fx.f.update;
    for req in [
        Request::Select { dept: 0 },
        Request::InferBegin { len: 3072 },
        Request::InferChunk {
            offset: 0,
            data: &[0; 8],
        },
        Request::UpdateBegin {
            len: pkg.len() as u32,
            crc: crc32(pkg),
        },
        Request::UpdateChunk {
            offset: 0,
            data: &pkg[..MAX_CHUNK],
        },
        Request::UpdateCommit,
        Request::FormatStore,
    ] {
        let mut a = ask_any(&mut app, &serial, &req);
        assert_eq!(
            decode(&mut a),
            Response::Error {
                code: ErrorCode::NotRunning,
                detail: 1
            },
            "{req:?}"
        );
    }
}

/// Flips a bit of every valid journal bank header on `flash`.
fn damage_bank_headers(flash: &MemFlash) {
    use lorkd_runtime::update::journal::decode_bank;
    let l = fx().layout;
    for bank in 0..2 {
        let at = (l.journal + bank * l.bank_size) as usize;
        let h: [u8; 64] = flash.peek(at, 64).try_into().unwrap();
        if decode_bank(&h).is_some() {
            flash.poke(at + 9, h[9] ^ 0x10);
        }
    }
}

#[test]
fn a_damaged_journal_is_refused_factory_departments_run_and_formatting_is_explicit() {
    let fx = fx();
    let (d, v) = (fx.f.update_dept, fx.f.update_version);
    let mut r = rig();
    let factory = r.versions();
    assert_eq!(
        push_package(&mut r, fx.f.update),
        Response::Updated {
            dept: d as u8,
            version: v
        }
    );
    let flash = r.flash.clone();
    drop(r);
    damage_bank_headers(&flash);
    let image = flash.peek(0, fx.layout.end() as usize);
    let mut r = boot(flash);
    // Not formatted: nothing was written; the bundle's own departments run.
    assert!(r.flash.peek(0, fx.layout.end() as usize) == image);
    let st = r.status();
    assert_eq!(st.health, Health::StoreRefused(26));
    assert_eq!(r.versions(), factory);
    for dept in 0..fx.f.departments {
        assert_eq!(scores_of(&mut r, dept as u8)[0], fx.expected(dept, 0));
    }
    // Updates are refused while the store is refused.
    assert_eq!(push_package(&mut r, fx.f.update), rejected(26));
    assert!(r.flash.peek(0, fx.layout.end() as usize) == image);
    // The explicit format; then a working store is never formatted again by request.
    let mut a = r.ask(&Request::FormatStore);
    assert!(matches!(decode(&mut a), Response::Status(s) if s.health == Health::Ok));
    assert_eq!(r.error(&Request::FormatStore), (ErrorCode::BadState, 0));
    assert_eq!(
        push_package(&mut r, fx.f.update),
        Response::Updated {
            dept: d as u8,
            version: v
        }
    );
    let mut r = r.reset();
    assert_eq!(r.status().health, Health::Ok);
    assert_eq!(r.versions()[d], v);
}

#[test]
fn a_committed_slot_whose_blob_does_not_parse_falls_back_and_status_names_it() {
    use lorkd_runtime::update::journal::{decode_bank, Record};
    let fx = fx();
    let (d, v) = (fx.f.update_dept, fx.f.update_version);
    let mut r = rig();
    assert_eq!(
        push_package(&mut r, fx.f.update),
        Response::Updated {
            dept: d as u8,
            version: v
        }
    );
    let running = r.app.model().store().unwrap().active(d);
    let lorkd_runtime::update::Active::Slot { slot, .. } = running else {
        panic!("{running:?}")
    };
    let flash = r.flash.clone();
    drop(r);
    // A signed v3 whose blob does not parse, in the other slot, with a Commit record.
    let l = fx.layout;
    let bad = fx.f.bad_update;
    let at = l.slot_offset(d, 1 - slot) as usize;
    for (i, b) in bad.iter().enumerate() {
        flash.poke(at + i, *b);
    }
    let bank = (0..2)
        .map(|b| (l.journal + b * l.bank_size) as usize)
        .filter_map(|o| decode_bank(&flash.peek(o, 64).try_into().unwrap()).map(|(s, _)| (s, o)))
        .max()
        .unwrap()
        .1;
    let next = (1..l.bank_size as usize / 64)
        .rev()
        .find(|&i| flash.peek(bank + 64 * i, 64).iter().any(|&b| b != 0xFF))
        .unwrap()
        + 1;
    let rec = Record::Commit {
        dept: d as u16,
        slot: 1 - slot,
        version: v + 1,
        len: bad.len() as u32,
        counter: 0,
        digest: lorkd_runtime::update::package::digest(bad),
    };
    for (i, b) in rec.encode().iter().enumerate() {
        flash.poke(bank + 64 * next + i, *b);
    }
    let mut r = boot(flash);
    let st = r.status();
    assert_eq!(st.health, Health::Ok);
    assert_eq!(
        &st.faults[..],
        &[DeptFault {
            dept: d as u8,
            code: 18
        }]
    );
    assert_eq!(r.versions()[d], v, "falls back to the previous version");
    assert_eq!(scores_of(&mut r, d as u8)[0], fx.expected_updated(0));
}

/// A model whose department names make `Hello` longer than the response buffer.
struct LongNames(String);
impl Model for LongNames {
    fn departments(&self) -> usize {
        16
    }
    fn name(&self, _: usize) -> &str {
        &self.0
    }
    fn version(&self, _: usize) -> u32 {
        1
    }
    fn active(&self) -> usize {
        0
    }
    fn select(&mut self, _: usize) -> Result<(), lorkd_firmware::model::ModelError> {
        Ok(())
    }
    fn input_len(&self) -> usize {
        4
    }
    fn classes(&self) -> usize {
        2
    }
    fn infer(&mut self, _: &[f32], s: &mut [f32]) -> Result<(), lorkd_firmware::model::ModelError> {
        s.fill(0.5);
        Ok(())
    }
    fn update_capacity(&self) -> u32 {
        4096
    }
    fn update_pending(&mut self) -> Option<lorkd_firmware::model::PendingUpdate> {
        None
    }
    fn update_resume(&mut self) -> Result<u32, lorkd_firmware::model::ModelError> {
        Err(lorkd_firmware::model::ModelError::BadState)
    }
    fn update_begin(&mut self, _: &[u8]) -> Result<(), lorkd_firmware::model::ModelError> {
        Ok(())
    }
    fn update_write(&mut self, _: u32, _: &[u8]) -> Result<(), lorkd_firmware::model::ModelError> {
        Ok(())
    }
    fn update_commit(&mut self) -> Result<(usize, u32), lorkd_firmware::model::ModelError> {
        Err(lorkd_firmware::model::ModelError::Update(9))
    }
}

#[test]
fn a_hello_too_long_to_encode_degrades_to_an_error_and_every_request_gets_one_answer() {
    let mut rng = rng();
    let (serial, button, led) = (Serial::default(), Pin::default(), Led::default());
    button.0.set(true);
    let frame: &'static mut [f32] = Box::leak(vec![0f32; 4].into_boxed_slice());
    let mut app = App::new(
        serial.clone(),
        Button::new(button, true),
        led,
        LongNames("x".repeat(255)),
        frame,
    )
    .unwrap();
    let mut a = ask_any(&mut app, &serial, &Request::Hello);
    assert_eq!(
        decode(&mut a),
        Response::Error {
            code: ErrorCode::ReplyTooLarge,
            detail: proto::MAX_RESPONSE as u32
        }
    );
    // Random frames: well-formed requests with random fields, CRC-valid random payloads and
    // raw noise; every non-empty frame is answered exactly once.
    let mut sent = 0usize;
    for i in 0..3000 {
        let bytes: Vec<u8> = (0..rng.gen_range(0..80)).map(|_| rng.gen()).collect();
        match i % 3 {
            0 => {
                let v = rng.gen_range(0..proto::REQUEST_VARIANTS + 1) as u8;
                let mut msg = vec![v];
                msg.extend_from_slice(&bytes);
                msg.extend_from_slice(&crc32(&msg).to_le_bytes());
                let mut enc = vec![0u8; msg.len() + msg.len() / 254 + 2];
                let m = lorkd_firmware::cobs::encode(&msg, &mut enc).unwrap();
                enc.truncate(m);
                enc.push(0);
                serial.send_raw(&enc);
            }
            1 => {
                let req = Request::UpdateChunk {
                    offset: rng.gen(),
                    data: &bytes,
                };
                serial.send(&req);
            }
            _ => {
                let noise: Vec<u8> = bytes.iter().map(|&b| b.max(1)).collect();
                if noise.is_empty() {
                    continue;
                }
                serial.send_raw(&noise);
                serial.send_raw(&[0]);
            }
        }
        sent += 1;
        app.poll(i);
        let f = serial.frames();
        assert_eq!(f.len(), 1, "frame {i}: {} answers", f.len());
    }
    assert!(sent > 2000);
}

/// The names `Hello` lists.
fn names(r: &mut Rig) -> Vec<String> {
    let mut a = r.ask(&Request::Hello);
    let out = match decode(&mut a) {
        Response::Hello { departments, .. } => departments.iter().map(|s| s.to_string()).collect(),
        other => panic!("{other:?}"),
    };
    out
}

#[test]
fn a_department_added_in_the_field_streams_in_across_a_reset_and_hello_lists_it() {
    let fx = fx();
    let pkg = fx.f.added;
    assert!(!pkg.is_empty(), "the fixture carries an add package");
    let t = fx.f.departments;
    let mut r = rig();
    let factory = names(&mut r);
    assert_eq!(factory.len(), t);
    let before: Vec<Vec<Vec<f32>>> = (0..t).map(|i| scores_of(&mut r, i as u8)).collect();
    assert_eq!(
        r.error(&Request::Select { dept: t as u8 }),
        (ErrorCode::BadDepartment, t as u32)
    );

    // Half of it, then a reset: nothing is added yet; the download resumes from the journal.
    assert_eq!(begin(&mut r, pkg), 0);
    let half = pkg.len() / 2;
    send_chunks(&mut r, pkg, 0, half, 333);
    let mut r = r.reset();
    assert_eq!(names(&mut r), factory, "half a department is no department");
    let kept = r.status().update_staged;
    assert!(kept > 0 && kept as usize <= half);
    assert_eq!(begin(&mut r, pkg), kept);
    send_chunks(&mut r, pkg, kept as usize, pkg.len(), MAX_CHUNK);
    let mut a = r.ask(&Request::UpdateCommit);
    assert_eq!(
        decode(&mut a),
        Response::Updated {
            dept: t as u8,
            version: 1
        }
    );

    // Listed after the bundle's, selectable, answering with the host's scores bit for bit.
    let want: Vec<Vec<f32>> = (0..fx.f.images)
        .map(|n| {
            (0..fx.f.added_classes)
                .map(|k| fx.f.expected_added(n, k).1)
                .collect()
        })
        .collect();
    let mut r = r.reset();
    {
        let mut listed = factory.clone();
        listed.push(gen::ADDED_NAME.to_string());
        assert_eq!(names(&mut r), listed);
        assert_eq!(r.versions()[t], 1);
        assert_eq!(r.status().departments as usize, t + 1);
        assert_eq!(scores_of(&mut r, t as u8), want);
        for n in 0..fx.f.images {
            let (d, top1, _) = r.infer(&fx.image(n));
            assert_eq!(
                (d as usize, top1 as usize),
                (t, fx.f.expected_added(n, 0).0)
            );
        }
        // The bundle's departments answer exactly as before.
        for (i, b) in before.iter().enumerate() {
            assert_eq!(&scores_of(&mut r, i as u8), b, "department {i}");
        }
        // The same package again is a replay.
        assert_eq!(push_package(&mut r, pkg), rejected(16));
    }
}
