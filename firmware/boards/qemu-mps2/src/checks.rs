//! The self-checks. The device checks talk to the real `App` through a loopback serial port,
//! over the real model (`RuntimeModel`: the bundle embedded by `firmware/run-qemu` parsed in
//! place from flash, the `lorkd_runtime` engine on a static arena, department deltas from
//! the A/B `UpdateStore` on a simulated memory-mapped NOR flash), and compare with the
//! scores the host computed.
use crate::board::{FpgaLed, LoopSerial, Queue, RamFlash, ScriptPin};
use crate::Tally;
use core::cell::{Cell, RefCell};
use cortex_m_semihosting::hprintln;
use lorkd_firmware::app::App;
use lorkd_firmware::button::{Button, DEBOUNCE_MS};
use lorkd_firmware::fixture::Fixture;
use lorkd_firmware::model::Model;
use lorkd_firmware::proto::{self, ErrorCode, Request, Response, MAX_CHUNK, MAX_CLASSES};
use lorkd_firmware::runtime_model::{scratch_bytes, RuntimeModel};
use lorkd_firmware::{cobs, crc};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::update::{Layout, UpdateStore};

/// A small xorshift generator: the checks' inputs are fixed per build, so runs repeat exactly.
struct XorShift(u32);
impl XorShift {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

pub fn framing(t: &mut Tally) {
    t.check(
        "crc32 check value 0xCBF43926",
        crc::crc32(b"123456789") == 0xCBF4_3926,
    );
    let mut rng = XorShift(0x1234_5678);
    let mut ok = true;
    for round in 0..64 {
        let mut src = [0u8; 300];
        let n = (rng.next() % 300) as usize;
        for b in src[..n].iter_mut() {
            *b = if rng.next() % (1 + round % 4) == 0 {
                0
            } else {
                rng.next() as u8
            };
        }
        let mut enc = [0u8; 310];
        let m = cobs::encode(&src[..n], &mut enc).unwrap_or(0);
        ok &= !enc[..m].contains(&0);
        ok &= cobs::decode_in_place(&mut enc[..m]) == Ok(n) && enc[..n] == src[..n];
    }
    t.check("cobs round trip, 64 random frames", ok);
}

pub fn quant(t: &mut Tally) {
    use lorkd_runtime::quant::{multiply_by_quantized_multiplier as mbqm, quantize_multiplier};
    // Exactly representable products come out exact.
    let (m, s) = quantize_multiplier(0.25);
    let (m2, s2) = quantize_multiplier(0.75);
    t.check(
        "requant exact: 400·0.25, −8·0.75",
        mbqm(400, m, s) == 100 && mbqm(-8, m2, s2) == -6,
    );
    // Others within one unit of the real product (f64 here is soft-float on the M4F).
    let mut rng = XorShift(0x9E37_79B9);
    let mut ok = true;
    for _ in 0..500 {
        let mf = (rng.next() % 1_000_000 + 1) as f64 / 1_000_000.0 * 4.0;
        let x = (rng.next() % 2_000_000) as i32 - 1_000_000;
        let (m, s) = quantize_multiplier(mf);
        let want = x as f64 * mf;
        let got = mbqm(x, m, s) as f64;
        ok &= (got - want).abs() <= 1.0;
    }
    t.check("requant within 1 of x·m, 500 random (x, m)", ok);
}

/// The fixture `firmware/run-qemu` embeds (empty when built without one).
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);
static FIXTURE: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/fixture.bin")));

/// The engine's arena: a static buffer, checked against the bundle's needs by `Engine::new`.
pub const ARENA_BYTES: usize = 1 << 20;
#[repr(C, align(16))]
pub struct Arena(pub [u8; ARENA_BYTES]);
/// Most f32 values of one input image the checks hold.
const MAX_INPUT: usize = 3 * 64 * 64;

/// What the engine checks need; `None` (after reporting the failed check) when the fixture,
/// bundle or engine do not come up.
pub fn engine_setup(
    t: &mut Tally,
) -> Option<(Fixture<'static>, Bundle<'static>, &'static mut [u8])> {
    let fx = &FIXTURE.0;
    if fx.is_empty() {
        t.check("fixture embedded (firmware/run-qemu writes it)", false);
        return None;
    }
    let Some(f) = Fixture::parse(fx) else {
        t.check("fixture parses", false);
        return None;
    };
    let bundle = match Bundle::parse(f.bundle) {
        Ok(b) => b,
        Err(e) => {
            hprintln!("[fw] bundle: {}", e);
            t.check("bundle parses in place from flash", false);
            return None;
        }
    };
    let m = bundle.manifest();
    hprintln!(
        "[fw] bundle: {} B, {} {:?}, input {}x{}x{}, {} departments, arena {} B of {} B",
        f.bundle.len(),
        m.arch,
        m.precision,
        m.input.channels,
        m.input.size,
        m.input.size,
        bundle.department_count(),
        bundle.arena_bytes(Mode::Materialized),
        ARENA_BYTES
    );
    t.check(
        "bundle parses in place from flash (hashes checked), departments as on the host",
        bundle.department_count() == f.departments && f.input_len <= MAX_INPUT,
    );
    let arena = cortex_m::singleton!(: Arena = Arena([0; ARENA_BYTES]))?;
    Some((f, bundle, &mut arena.0[..]))
}

/// Simulated memory-mapped NOR flash for the update store: its journal banks and A/B slots
/// (the bundle itself stays in the image's flash, read in place).
const STORE_FLASH: usize = 768 * 1024;
/// Scratch the store checks a finished package's blob in (≥ `scratch_bytes(layout)`).
const SCRATCH_BYTES: usize = 128 * 1024;
#[repr(C, align(16))]
pub struct Scratch(pub [u8; SCRATCH_BYTES]);
/// Serial queue capacity each way.
const Q: usize = 4096;

type Dev<'m, 'q> = App<'m, LoopSerial<'q, Q>, ScriptPin<'q>, FpgaLed, RuntimeModel<'m, RamFlash>>;

/// The far end of the loopback serial port: sends requests, decodes the answers.
struct Host<'q> {
    to_device: &'q RefCell<Queue<Q>>,
    from_device: &'q RefCell<Queue<Q>>,
    pressed: &'q Cell<bool>,
    now: u32,
}

impl<'q> Host<'q> {
    fn tick(&mut self, app: &mut Dev<'_, 'q>) {
        self.now += 1;
        app.poll(self.now);
    }

    /// One request → poll → one decoded response, checked by `f`.
    fn ask(
        &mut self,
        app: &mut Dev<'_, 'q>,
        req: &Request,
        f: &mut dyn FnMut(&Response) -> bool,
    ) -> bool {
        let mut s = [0u8; proto::MAX_MSG + 8];
        let mut fr = [0u8; proto::MAX_FRAME];
        let Some(n) = proto::encode_frame(req, &mut s, &mut fr) else {
            return false;
        };
        if !self.to_device.borrow_mut().push(&fr[..n]) {
            return false;
        }
        self.tick(app);
        self.answer(f)
    }

    fn answer(&mut self, f: &mut dyn FnMut(&Response) -> bool) -> bool {
        let mut rx = [0u8; proto::MAX_FRAME];
        let Some(m) = self.from_device.borrow_mut().pop_frame(&mut rx) else {
            return false;
        };
        let ok = match proto::open_frame(&mut rx[..m]).and_then(proto::decode::<Response>) {
            Ok(r) => f(&r),
            Err(_) => false,
        };
        ok && self.from_device.borrow().is_empty()
    }

    fn select(&mut self, app: &mut Dev<'_, 'q>, dept: u8) -> bool {
        self.ask(app, &Request::Select { dept }, &mut |r| {
            *r == Response::Selected { dept }
        })
    }

    /// `InferBegin`, then the image in `MAX_CHUNK` pieces; the scores of the last answer.
    fn infer(&mut self, app: &mut Dev<'_, 'q>, x: &[f32]) -> Option<(u8, u16, Scores)> {
        let len = x.len() as u32;
        if !self.ask(app, &Request::InferBegin { len }, &mut |r| {
            *r == Response::Ack { next: 0 }
        }) {
            return None;
        }
        let mut out = None;
        let mut bytes = [0u8; MAX_CHUNK];
        let per = MAX_CHUNK / 4;
        let pieces = x.len().div_ceil(per);
        for (i, vals) in x.chunks(per).enumerate() {
            for (b, v) in bytes.chunks_exact_mut(4).zip(vals) {
                b.copy_from_slice(&v.to_le_bytes());
            }
            let data = &bytes[..4 * vals.len()];
            let offset = (i * per) as u32;
            let last = i + 1 == pieces;
            let ok = self.ask(
                app,
                &Request::InferChunk { offset, data },
                &mut |r| match r {
                    Response::Scores { dept, top1, scores } if last => {
                        out = Some((*dept, *top1, scores.clone()));
                        true
                    }
                    Response::Ack { next } => !last && *next == offset + vals.len() as u32,
                    _ => false,
                },
            );
            if !ok {
                return None;
            }
        }
        out
    }

    /// `Hello`: the versions the departments run.
    fn versions(&mut self, app: &mut Dev<'_, 'q>) -> Option<Versions> {
        let mut out = None;
        self.ask(app, &Request::Hello, &mut |r| match r {
            Response::Hello { versions, .. } => {
                out = Some(versions.clone());
                true
            }
            _ => false,
        });
        out
    }

    /// Sends `pkg[from..to]` in `MAX_CHUNK` pieces, each acknowledged (with the bits of
    /// `flip` flipped in the package's last byte: a tampered signature).
    fn send_update(
        &mut self,
        app: &mut Dev<'_, 'q>,
        pkg: &[u8],
        (from, to): (usize, usize),
        flip: u8,
    ) -> bool {
        let mut off = from;
        let mut buf = [0u8; MAX_CHUNK];
        while off < to {
            let end = (off + MAX_CHUNK).min(to);
            let data = &mut buf[..end - off];
            data.copy_from_slice(&pkg[off..end]);
            if end == pkg.len() {
                data[end - off - 1] ^= flip;
            }
            let data = &*data;
            let next = end as u32;
            let offset = off as u32;
            if !self.ask(app, &Request::UpdateChunk { offset, data }, &mut |r| {
                *r == Response::Ack { next }
            }) {
                return false;
            }
            off = end;
        }
        true
    }

    fn update_begin(&mut self, app: &mut Dev<'_, 'q>, pkg: &[u8]) -> Option<u32> {
        let (len, crc) = (pkg.len() as u32, crc::crc32(pkg));
        let mut at = None;
        self.ask(app, &Request::UpdateBegin { len, crc }, &mut |r| match r {
            Response::UpdateReady { resume_at } => {
                at = Some(*resume_at);
                true
            }
            _ => false,
        });
        at
    }
}

type Scores = heapless::Vec<f32, MAX_CLASSES>;
type Versions = heapless::Vec<u32, { proto::MAX_DEPTS }>;

/// What a boot needs that outlives it (static buffers, reborrowed per boot).
struct Statics {
    f: Fixture<'static>,
    bundle: &'static Bundle<'static>,
    layout: Layout,
    flash: RamFlash,
    arena: &'static mut [u8],
    scratch: &'static mut [u8],
    frame: &'static mut [f32],
}

/// Boots the device: opens the update store on the simulated flash (journal replay, slots
/// re-hashed), starts the model on the static arena, assembles the app.
fn boot<'m, 'q>(
    st: &'m mut Statics,
    to_device: &'q RefCell<Queue<Q>>,
    from_device: &'q RefCell<Queue<Q>>,
    pressed: &'q Cell<bool>,
) -> Option<Dev<'m, 'q>> {
    let store = match UpdateStore::open(st.flash, st.layout, st.f.pubkey, st.bundle) {
        Ok(s) => s,
        Err(e) => {
            hprintln!("[fw] store: {:?}", e);
            return None;
        }
    };
    let model = match RuntimeModel::new(
        st.bundle,
        &mut st.arena[..],
        Mode::Materialized,
        store,
        &mut st.scratch[..],
    ) {
        Ok(m) => m,
        Err(e) => {
            hprintln!("[fw] model: {:?}", e);
            return None;
        }
    };
    let serial = LoopSerial {
        to_device,
        from_device,
    };
    let button = Button::new(ScriptPin(pressed), true);
    App::new(serial, button, FpgaLed, model, &mut st.frame[..]).ok()
}

fn close(a: &Scores, b: &[f32; 64], n: usize, tol: f32) -> (bool, f32) {
    let mut d = 0f32;
    for (x, y) in a.iter().zip(&b[..n]) {
        d = d.max((x - y).abs());
    }
    (a.len() == n && d <= tol, d)
}

fn bits(a: &Scores, b: &Scores) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The device app over the real model: a whole protocol conversation, the button, and a
/// signed update streamed through the protocol into the A/B update store, with a reset in
/// the middle of the download.
pub fn device(t: &mut Tally) {
    let Some((f, bundle, arena)) = engine_setup(t) else {
        return;
    };
    let (Some(bundle), Some(mem), Some(scratch), Some(frame)) = (
        cortex_m::singleton!(: Bundle<'static> = bundle),
        cortex_m::singleton!(: [u8; STORE_FLASH] = [0xFF; STORE_FLASH]),
        cortex_m::singleton!(: Scratch = Scratch([0; SCRATCH_BYTES])),
        cortex_m::singleton!(: [f32; MAX_INPUT] = [0.0; MAX_INPUT]),
    ) else {
        return t.check("static buffers", false);
    };
    let layout = Layout::for_bundle(bundle, 0, 4096);
    let fits = layout.end() <= STORE_FLASH as u64 && scratch_bytes(&layout) <= SCRATCH_BYTES;
    hprintln!(
        "[fw] update store: {} B of simulated flash ({} B slots), scratch {} B",
        layout.end(),
        layout.slot_size,
        scratch_bytes(&layout)
    );
    if !fits {
        return t.check("update store fits the simulated flash", false);
    }
    let mut st = Statics {
        f,
        bundle,
        layout,
        flash: RamFlash::new(&mut mem[..]),
        arena,
        scratch: &mut scratch.0[..],
        frame: &mut frame[..f.input_len],
    };
    let to_device = RefCell::new(Queue::<Q>::new());
    let from_device = RefCell::new(Queue::<Q>::new());
    let pressed = Cell::new(false);
    let mut host = Host {
        to_device: &to_device,
        from_device: &from_device,
        pressed: &pressed,
        now: 0,
    };
    let n = f.departments;
    let mut x = [0f32; MAX_INPUT];
    let x = &mut x[..f.input_len];
    let mut want = [0f32; 64];
    let expected = |d: usize, img: usize, want: &mut [f32; 64]| {
        let c = bundle.department(d).map_or(0, |x| x.classes());
        for (k, w) in want.iter_mut().enumerate().take(c) {
            *w = f.expected(d, img, k).1;
        }
        (c, f.expected(d, img, 0).0)
    };
    let expected_updated = |img: usize, want: &mut [f32; 64]| {
        let c = bundle.department(f.update_dept).map_or(0, |x| x.classes());
        for (k, w) in want.iter_mut().enumerate().take(c) {
            *w = f.expected_updated(img, k).1;
        }
        (c, f.expected_updated(img, 0).0)
    };
    let factory: Versions = (0..n)
        .map(|d| bundle.department(d).map_or(0, |x| x.manifest.version))
        .collect();

    // ---- first boot: a whole conversation ------------------------------------------------
    let half_sent = {
        let Some(mut app) = boot(&mut st, &to_device, &from_device, &pressed) else {
            return t.check(
                "device boots: update store opens, model starts on the static arena",
                false,
            );
        };
        t.check(
            "device boots: update store opens, model starts on the static arena (checked against the bundle), status LED on",
            FpgaLed::is_on(),
        );
        let ok = host.ask(&mut app, &Request::Hello, &mut |r| {
            matches!(r, Response::Hello { departments, active: 0, input_len, versions, .. }
                if departments.len() == n
                    && (0..n).all(|d| bundle.department(d).map(|x| x.manifest.name) == Some(departments[d]))
                    && *input_len as usize == f.input_len
                    && *versions == factory)
        });
        t.check("protocol: Hello (departments, input size, versions)", ok);

        // Every department on every image, through Select + InferBegin + InferChunk.
        let (mut tops, mut max_diff) = (true, 0f32);
        let mut first: Option<Scores> = None;
        for d in (0..n).rev() {
            tops &= host.select(&mut app, d as u8);
            for img in 0..f.images {
                f.image(img, x);
                let (c, top) = expected(d, img, &mut want);
                match host.infer(&mut app, x) {
                    Some((dd, top1, s)) => {
                        let (_, diff) = close(&s, &want, c, 0.0);
                        max_diff = max_diff.max(diff);
                        tops &= dd as usize == d && top1 as usize == top && s.len() == c;
                        if d == 0 && img == 0 {
                            first = Some(s);
                        }
                    }
                    None => tops = false,
                }
            }
        }
        hprintln!("[fw] device vs host: max |score difference| {:e}", max_diff);
        t.check(
            "protocol: every department on every image (Select, Infer in chunks): top-1 as on the host",
            tops,
        );
        t.check(
            "protocol: scores within 1e-4 of the host's",
            max_diff <= 1e-4,
        );

        let bad = [0x03u8, 0x11, 0x22, 0x02, 0x33, 0x00]; // a well-formed COBS frame, bad CRC
        to_device.borrow_mut().push(&bad);
        host.tick(&mut app);
        let ok = host.answer(&mut |r| {
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::BadCrc,
                    ..
                }
            )
        }) && host.ask(&mut app, &Request::Status, &mut |r| {
            matches!(r, Response::Status(s) if s.frames_bad == 1 && s.active == 0
                && s.inferences as usize == n * f.images && s.versions == factory)
        });
        t.check(
            "protocol: bad CRC → error frame, device keeps serving (Status)",
            ok,
        );

        // The button: a bouncy press, debounced, cycles 0 → 1.
        for _ in 0..5 {
            host.pressed.set(true);
            host.tick(&mut app);
            host.pressed.set(false);
            host.tick(&mut app);
        }
        host.pressed.set(true);
        for _ in 0..DEBOUNCE_MS + 2 {
            host.tick(&mut app);
        }
        host.pressed.set(false);
        for _ in 0..DEBOUNCE_MS + 2 {
            host.tick(&mut app);
        }
        t.check(
            "button: one debounced press cycles to the next department",
            app.model().active() == 1 && from_device.borrow().is_empty(),
        );

        // Switch away and back: W_t is rebuilt from the pristine W0, so no drift.
        f.image(0, x);
        let mut same = first.is_some();
        for d in (0..n).rev() {
            same &= host.select(&mut app, d as u8);
        }
        match (host.infer(&mut app, x), &first) {
            (Some((_, _, s)), Some(a)) => same &= bits(&s, a),
            _ => same = false,
        }
        t.check("protocol: switch away and back: bit-identical scores", same);

        // A package with one signature bit flipped: streamed, refused at the commit; the
        // department keeps its version and its scores.
        let pkg = f.update;
        let d = f.update_dept;
        let mut refused = host.select(&mut app, d as u8);
        let before = host.infer(&mut app, x).map(|r| r.2);
        let (len, c) = (pkg.len() as u32, crc::crc32(pkg));
        let mut bad_crc = crc::Crc32::new();
        bad_crc.update(&pkg[..pkg.len() - 1]);
        bad_crc.update(&[pkg[pkg.len() - 1] ^ 1]);
        let bad_crc = bad_crc.finish();
        refused &= host.ask(
            &mut app,
            &Request::UpdateBegin { len, crc: bad_crc },
            &mut |r| *r == Response::UpdateReady { resume_at: 0 },
        );
        refused &= host.send_update(&mut app, pkg, (0, pkg.len()), 1);
        refused &= host.ask(&mut app, &Request::UpdateCommit, &mut |r| {
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::UpdateRejected,
                    detail: 11
                }
            )
        });
        refused &= host.versions(&mut app) == Some(factory.clone());
        refused &=
            matches!((host.infer(&mut app, x), &before), (Some((_, _, s)), Some(b)) if bits(&s, b));
        t.check(
            "update: a package with a flipped signature bit is refused (error frame), the department untouched",
            refused,
        );

        // The real package: half of it, then a reset.
        let mut ok = host.ask(&mut app, &Request::UpdateBegin { len, crc: c }, &mut |r| {
            *r == Response::UpdateReady { resume_at: 0 }
        });
        ok &= host.send_update(&mut app, pkg, (0, pkg.len() / 2), 0);
        ok &= host.ask(&mut app, &Request::Status, &mut |r| {
            matches!(r, Response::Status(s) if s.update_staged as usize == pkg.len() / 2 && s.update_len == len)
        });
        ok
    };
    t.check(
        "update: first half streamed chunk by chunk into the inactive slot",
        half_sent,
    );

    // ---- reset mid-download: a new app over the same flash resumes ------------------------
    let pkg = f.update;
    let d = f.update_dept;
    let (after, updated) = {
        let Some(mut app) = boot(&mut st, &to_device, &from_device, &pressed) else {
            return t.check("device reboots over the same flash", false);
        };
        let page = 4096;
        let kept = (pkg.len() / 2 / page * page) as u32;
        let at = host.update_begin(&mut app, pkg);
        hprintln!("[fw] after reset: resume at {:?} of {} B", at, pkg.len());
        let mut ok = kept > 0 && at == Some(kept);
        ok &= host.send_update(&mut app, pkg, (kept as usize, pkg.len()), 0);
        t.check(
            "update: reset mid-download, resumed at the last whole flash page (header read back, not resent)",
            ok,
        );
        let gen0 = app.model().store().journal_generation();
        let (dept, version) = (d as u8, f.update_version);
        let ok = host.ask(&mut app, &Request::UpdateCommit, &mut |r| {
            *r == Response::Updated { dept, version }
        });
        let mut after = factory.clone();
        if let Some(v) = after.get_mut(d) {
            *v = f.update_version;
        }
        let versions_ok = host.versions(&mut app) == Some(after.clone())
            && host.ask(&mut app, &Request::Status, &mut |r| {
                matches!(r, Response::Status(s) if s.versions == after && s.update_len == 0)
            });
        t.check(
            "update: verified (hash, signature, base, version, counter) and committed; Hello and Status report the new version",
            ok && versions_ok && app.model().store().journal_generation() == gen0,
        );

        // The department runs the new expert.
        let (mut tops, mut max_diff, mut changed) = (host.select(&mut app, d as u8), 0f32, false);
        let mut updated: Option<Scores> = None;
        for img in 0..f.images {
            f.image(img, x);
            let (c, top) = expected_updated(img, &mut want);
            match host.infer(&mut app, x) {
                Some((_, top1, s)) => {
                    max_diff = max_diff.max(close(&s, &want, c, 0.0).1);
                    tops &= top1 as usize == top;
                    let _ = expected(d, img, &mut want);
                    changed |= close(&s, &want, c, 0.0).1 > 1e-3;
                    if img == 0 {
                        updated = Some(s);
                    }
                }
                None => tops = false,
            }
        }
        hprintln!(
            "[fw] updated department vs host: max |score difference| {:e}",
            max_diff
        );
        t.check(
            "update: Infer after the update runs the new expert: top-1 as on the host, scores within 1e-4",
            tops && max_diff <= 1e-4,
        );
        t.check(
            "update: the new expert changes the department's scores",
            changed,
        );

        let replay = host.update_begin(&mut app, pkg) == Some(0)
            && host.ask(
                &mut app,
                &Request::UpdateChunk {
                    offset: 0,
                    data: &pkg[..MAX_CHUNK.min(pkg.len())],
                },
                &mut |r| {
                    matches!(
                        r,
                        Response::Error {
                            code: ErrorCode::UpdateRejected,
                            detail: 16
                        }
                    )
                },
            )
            && host.versions(&mut app) == Some(after.clone());
        t.check(
            "update: the same package again is refused at its header (replay)",
            replay,
        );

        // Away and back after the update: still bit-identical.
        f.image(0, x);
        let mut same = updated.is_some();
        for dd in 0..n {
            same &= host.select(&mut app, dd as u8);
        }
        same &= host.select(&mut app, d as u8);
        match (host.infer(&mut app, x), &updated) {
            (Some((_, _, s)), Some(a)) => same &= bits(&s, a),
            _ => same = false,
        }
        t.check(
            "update: switch away and back after the update: bit-identical scores",
            same,
        );
        hprintln!("[fw] device status: {:?}", app.status());
        (after, updated)
    };

    // ---- another reset: the device boots into the new version ------------------------------
    let Some(mut app) = boot(&mut st, &to_device, &from_device, &pressed) else {
        return t.check("device reboots after the update", false);
    };
    f.image(0, x);
    let ok = host.versions(&mut app) == Some(after)
        && host.select(&mut app, d as u8)
        && matches!((host.infer(&mut app, x), &updated), (Some((_, _, s)), Some(a)) if bits(&s, a));
    t.check(
        "update: after a reset the device boots into the new version (committed slot, in place from flash)",
        ok,
    );
}

/// `bench infer N` / `bench switch N`: the work whose guest instructions `run-qemu --bench`
/// counts (the difference between N and 0 repetitions, divided by N).
pub fn bench(t: &mut Tally, what: &str, n: usize) {
    let Some((f, bundle, arena)) = engine_setup(t) else {
        return;
    };
    let Ok(mut engine) = Engine::new(&bundle, arena, Mode::Materialized) else {
        return t.check("engine starts", false);
    };
    let mut x = [0f32; MAX_INPUT];
    let x = &mut x[..f.input_len];
    f.image(0, x);
    let mut logits = [0f32; 64];
    let mut ok = engine.select(0).is_ok();
    for i in 0..n {
        ok &= match what {
            "infer" => engine.infer(x, &mut logits).is_ok(),
            _ => engine.select((i + 1) % f.departments).is_ok(),
        };
    }
    t.check("bench run", ok);
}
