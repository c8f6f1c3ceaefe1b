//! The self-checks. The device checks talk to the real `App` through a loopback serial port,
//! over the real model (`RuntimeModel`: the bundle embedded by `firmware/run-qemu` parsed in
//! place from flash, the `lorkd_runtime` engine on a static arena, department deltas from
//! the A/B `UpdateStore` on a simulated memory-mapped NOR flash), and compare with the
//! scores the host computed.
use crate::board::{FpgaLed, LoopSerial, Queue, RamFlash, ScriptPin};
use crate::Tally;
use core::cell::{Cell, RefCell};
use cortex_m_semihosting::hprintln;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use lorkd_firmware::app::App;
use lorkd_firmware::button::{Button, DEBOUNCE_MS};
use lorkd_firmware::fixture::Fixture;
use lorkd_firmware::model::Model;
use lorkd_firmware::model::UPDATE_HEADER_LEN;
use lorkd_firmware::proto::{
    self, DeptFault, ErrorCode, Health, Request, Response, MAX_CHUNK, MAX_CLASSES,
};
use lorkd_firmware::runtime_model::MappedFlash;
use lorkd_firmware::runtime_model::{scratch_bytes, verify_bundle, Device, Halted, RuntimeModel};
use lorkd_firmware::{cobs, crc};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::update::{journal, Active, Layout, PackageHeader, UpdateStore};

/// The vendor's ed25519 public key, from the board build (`LORKD_FW_PUBKEY`): the firmware
/// boots only bundles signed by it, and takes only update packages signed by it.
pub static VENDOR_KEY: [u8; 32] = *include_bytes!(concat!(env!("OUT_DIR"), "/vendor_key.bin"));

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
    let bundle = match verify_bundle(f.bundle, &VENDOR_KEY) {
        Ok(b) => b,
        Err(h) => {
            hprintln!("[fw] bundle refused: reason {}", h.reason);
            t.check("bundle verifies with the vendor key (verified boot)", false);
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
        "verified boot: bundle signed by the vendor key, parsed in place (hashes checked), departments as on the host",
        bundle.department_count() == f.departments && f.input_len <= MAX_INPUT,
    );
    let arena = cortex_m::singleton!(: Arena = Arena([0; ARENA_BYTES]))?;
    Some((f, bundle, &mut arena.0[..]))
}

/// Simulated memory-mapped NOR flash for the update store: its journal banks and A/B slots
/// (the bundle itself stays in the image's flash, read in place).
const STORE_FLASH: usize = 1024 * 1024;
/// Scratch the store checks a finished package's blob in (≥ `scratch_bytes(layout)`).
const SCRATCH_BYTES: usize = 128 * 1024;
#[repr(C, align(16))]
pub struct Scratch(pub [u8; SCRATCH_BYTES]);
/// Serial queue capacity each way.
const Q: usize = 4096;

type Dev<'m, 'q> = App<'m, LoopSerial<'q, Q>, ScriptPin<'q>, FpgaLed, Device<'m, RamFlash>>;

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
    let model = match RuntimeModel::new(
        st.bundle,
        &mut st.arena[..],
        Mode::Materialized,
        st.flash,
        st.layout,
        VENDOR_KEY,
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
    App::new(
        serial,
        button,
        FpgaLed,
        Device::Running(model),
        &mut st.frame[..],
    )
    .ok()
}

/// The journal generation of a running device's update store.
fn generation(app: &mut Dev<'_, '_>) -> Option<u32> {
    Some(app.model().running()?.store()?.journal_generation())
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
        cortex_m::singleton!(: Aligned<[u8; STORE_FLASH]> = Aligned([0xFF; STORE_FLASH])),
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
    let to_device = RefCell::new(Queue::<Q>::new());
    let from_device = RefCell::new(Queue::<Q>::new());
    let pressed = Cell::new(false);
    let mut host = Host {
        to_device: &to_device,
        from_device: &from_device,
        pressed: &pressed,
        now: 0,
    };
    // The store's memory doubles as a buffer for the bundle copies of these checks, before
    // it becomes the flash.
    verified_boot(t, &f, &mut mem.0[..], &mut frame[..], &mut host);
    crafted_bundle(t, &f, &mut mem.0[..]);
    mem.0.fill(0xFF);
    let mut st = Statics {
        f,
        bundle,
        layout,
        flash: RamFlash::new(&mut mem.0[..]),
        arena,
        scratch: &mut scratch.0[..],
        frame: &mut frame[..f.input_len],
    };
    crafted_store(t, &st);
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
    let flash = st.flash;
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

        // An update header that is unsigned or wrongly signed: refused as its last byte
        // arrives, before the journal or a slot is touched.
        let pkg = f.update;
        let fl = flash;
        let before = flash_crc(&fl);
        let mut hdr = [0u8; UPDATE_HEADER_LEN];
        hdr.copy_from_slice(&pkg[..UPDATE_HEADER_LEN]);
        let mut ok = true;
        for edit in 0..2 {
            if edit == 0 {
                hdr[UPDATE_HEADER_LEN - 1] ^= 1;
            } else {
                hdr[UPDATE_HEADER_LEN - 64..].fill(0);
            }
            ok &= host.update_begin(&mut app, pkg) == Some(0)
                && host.ask(
                    &mut app,
                    &Request::UpdateChunk {
                        offset: 0,
                        data: &hdr,
                    },
                    &mut |r| {
                        *r == Response::Error {
                            code: ErrorCode::UpdateRejected,
                            detail: 11,
                        }
                    },
                );
        }
        ok &= flash_crc(&fl) == before;
        t.check(
            "update: a wrongly signed or unsigned header is refused before anything is written (flash byte-for-byte unchanged)",
            ok,
        );
        // Lengths and offsets near u32::MAX in protocol frames.
        let err =
            |code| move |r: &Response| matches!(r, Response::Error { code: c, .. } if *c == code);
        let data = [0u8; 64];
        let ok = host.ask(
            &mut app,
            &Request::UpdateBegin {
                len: u32::MAX - 100,
                crc: 0,
            },
            &mut err(ErrorCode::TooLarge),
        ) && host.ask(
            &mut app,
            &Request::UpdateChunk {
                offset: u32::MAX - 10,
                data: &data,
            },
            &mut err(ErrorCode::BadState),
        ) && host.ask(
            &mut app,
            &Request::InferBegin { len: u32::MAX },
            &mut err(ErrorCode::TooLarge),
        ) && host.ask(
            &mut app,
            &Request::InferChunk {
                offset: u32::MAX - 3,
                data: &data,
            },
            &mut err(ErrorCode::BadState),
        );
        t.check(
            "32-bit: protocol frames with lengths and offsets near u32::MAX are refused",
            ok,
        );

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

        // A package with one blob bit flipped (its last byte): streamed, refused at the
        // commit (the blob no longer hashes to the signed header's digest); the department
        // keeps its version and its scores.
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
                    detail: 9
                }
            )
        });
        refused &= host.versions(&mut app) == Some(factory.clone());
        refused &=
            matches!((host.infer(&mut app, x), &before), (Some((_, _, s)), Some(b)) if bits(&s, b));
        t.check(
            "update: a package with a flipped blob bit is refused at the commit (error frame), the department untouched",
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
        let gen0 = generation(&mut app);
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
            ok && versions_ok && gen0.is_some() && generation(&mut app) == gen0,
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
    let ok = host.versions(&mut app) == Some(after.clone())
        && host.select(&mut app, d as u8)
        && matches!((host.infer(&mut app, x), &updated), (Some((_, _, s)), Some(a)) if bits(&s, a));
    t.check(
        "update: after a reset the device boots into the new version (committed slot, in place from flash)",
        ok,
    );
    let running = app
        .model()
        .running()
        .and_then(|m| m.store())
        .map(|s| s.active(d));
    drop(app);

    // ---- a committed slot whose signed blob does not parse: per-department fallback --------
    let planted = match running {
        Some(Active::Slot { slot, .. }) => plant_commit(&st, d, 1 - slot, f.bad_update),
        _ => false,
    };
    let Some(mut app) = boot(&mut st, &to_device, &from_device, &pressed) else {
        return t.check(
            "fallback: the device boots over a bad committed slot",
            false,
        );
    };
    let fault = DeptFault {
        dept: d as u8,
        code: 18,
    };
    let ok = planted
        && host.versions(&mut app) == Some(after.clone())
        && host.ask(&mut app, &Request::Status, &mut |r| {
            matches!(r, Response::Status(s) if s.health == Health::Ok && s.faults[..] == [fault])
        })
        && host.select(&mut app, d as u8)
        && matches!((host.infer(&mut app, x), &updated), (Some((_, _, s)), Some(a)) if bits(&s, a));
    t.check(
        "fallback: a committed, signed slot whose blob does not parse: the device boots, the department runs its previous version, Status names it (code 18)",
        ok,
    );
    drop(app);

    // ---- a department added in the field: streamed through the protocol, reset midway ----
    added_department(t, &mut st, &mut host, x, &mut want);

    // ---- both journal bank headers damaged: refused, factory read-only, explicit format ----
    let mut fl = st.flash;
    let l = st.layout;
    for bank in 0..2 {
        let at = l.journal + bank * l.bank_size;
        let mut h = [0u8; 64];
        if fl.read(at, &mut h).is_ok() && journal::decode_bank(&h).is_some() {
            fl.flip_bit(at as usize + 9, 3);
        }
    }
    let before = flash_crc(&fl);
    let Some(mut app) = boot(&mut st, &to_device, &from_device, &pressed) else {
        return t.check("store refused: the device still boots", false);
    };
    let refused = Health::StoreRefused(26);
    let mut ok = host.versions(&mut app) == Some(factory.clone())
        && host.ask(
            &mut app,
            &Request::Status,
            &mut |r| matches!(r, Response::Status(s) if s.health == refused),
        );
    f.image(0, x);
    let (c0, top0) = expected(0, 0, &mut want);
    ok &= host.select(&mut app, 0)
        && matches!(host.infer(&mut app, x), Some((0, top, s)) if top as usize == top0 && close(&s, &want, c0, 1e-4).0);
    let pkg = f.update;
    ok &= host.update_begin(&mut app, pkg) == Some(0)
        && host.ask(
            &mut app,
            &Request::UpdateChunk {
                offset: 0,
                data: &pkg[..MAX_CHUNK],
            },
            &mut |r| {
                *r == Response::Error {
                    code: ErrorCode::UpdateRejected,
                    detail: 26,
                }
            },
        );
    ok &= flash_crc(&fl) == before;
    t.check(
        "store refused (both bank headers damaged): not formatted, flash unchanged, factory departments run, updates refused (code 26), Status says so",
        ok,
    );
    let ok = host.ask(
        &mut app,
        &Request::FormatStore,
        &mut |r| matches!(r, Response::Status(s) if s.health == Health::Ok),
    ) && host.ask(&mut app, &Request::FormatStore, &mut |r| {
        *r == Response::Error {
            code: ErrorCode::BadState,
            detail: 0,
        }
    }) && host.versions(&mut app) == Some(factory.clone());
    t.check(
        "store refused: FormatStore formats it explicitly (once; a working store is never formatted)",
        ok,
    );
}

/// A department the bundle never had, added in the field: the fixture's add package streamed
/// half-way, a reset, the rest from where the journal says, the commit; then `Hello` lists it
/// after the bundle's departments, `Select` takes it and it answers with the host's scores,
/// before and after another reset.
fn added_department<'q>(
    t: &mut Tally,
    st: &mut Statics,
    host: &mut Host<'q>,
    x: &mut [f32],
    want: &mut [f32; 64],
) {
    let f = st.f;
    let pkg = f.added;
    let n = f.departments;
    let (to_device, from_device, pressed) = (host.to_device, host.from_device, host.pressed);
    if pkg.is_empty() {
        return t.check("add: the fixture carries an add package", false);
    }
    let header = PackageHeader::parse(pkg).ok();
    let name = header.as_ref().map_or("", |h| h.name());
    let c0 = st.bundle.department(0).map_or(0, |x| x.classes());
    let names_ok = |host: &mut Host<'q>, app: &mut Dev<'_, 'q>, with: bool| {
        host.ask(app, &Request::Hello, &mut |r| {
            matches!(r, Response::Hello { departments, .. }
                if departments.len() == n + usize::from(with)
                    && (!with || departments[n] == name))
        })
    };
    let half = {
        let Some(mut app) = boot(st, to_device, from_device, pressed) else {
            return t.check("add: the device boots", false);
        };
        let (len, c) = (pkg.len() as u32, crc::crc32(pkg));
        let mut ok = names_ok(host, &mut app, false);
        ok &= host.ask(&mut app, &Request::UpdateBegin { len, crc: c }, &mut |r| {
            *r == Response::UpdateReady { resume_at: 0 }
        });
        ok &= host.send_update(&mut app, pkg, (0, pkg.len() / 2), 0);
        ok
    };
    let Some(mut app) = boot(st, to_device, from_device, pressed) else {
        return t.check("add: the device reboots mid-download", false);
    };
    let kept = (pkg.len() / 2 / 4096 * 4096) as u32;
    let mut ok = half && names_ok(host, &mut app, false);
    ok &= kept > 0 && host.update_begin(&mut app, pkg) == Some(kept);
    ok &= host.send_update(&mut app, pkg, (kept as usize, pkg.len()), 0);
    ok &= host.ask(&mut app, &Request::UpdateCommit, &mut |r| {
        *r == Response::Updated {
            dept: n as u8,
            version: 1,
        }
    });
    t.check(
        "add: a department the bundle never had streams in through the protocol, a reset midway (nothing listed until the commit), resumed, committed",
        ok,
    );
    let answers = |host: &mut Host<'q>,
                   app: &mut Dev<'_, 'q>,
                   x: &mut [f32],
                   want: &mut [f32; 64]| {
        let mut ok = names_ok(host, app, true) && host.select(app, n as u8);
        let mut max_diff = 0f32;
        for img in 0..f.images {
            f.image(img, x);
            for (k, w) in want.iter_mut().enumerate().take(f.added_classes) {
                *w = f.expected_added(img, k).1;
            }
            match host.infer(app, x) {
                Some((d, top1, s)) => {
                    max_diff = max_diff.max(close(&s, want, f.added_classes, 0.0).1);
                    ok &= d as usize == n
                        && s.len() == f.added_classes
                        && top1 as usize == f.expected_added(img, 0).0;
                }
                None => ok = false,
            }
        }
        // A bundle department still answers as the host says.
        f.image(0, x);
        for (k, w) in want.iter_mut().enumerate().take(c0) {
            *w = f.expected(0, 0, k).1;
        }
        ok &= host.select(app, 0)
            && matches!(host.infer(app, x), Some((0, top, s)) if top as usize == f.expected(0, 0, 0).0 && close(&s, want, c0, 1e-4).0);
        (ok, max_diff)
    };
    let (ok, diff) = answers(host, &mut app, x, want);
    hprintln!(
        "[fw] added department vs host: max |score difference| {:e}",
        diff
    );
    t.check(
        "add: Hello lists the added department after the bundle's, Select switches to it, top-1 as on the host, scores within 1e-4; a bundle department unchanged",
        ok && diff <= 1e-4,
    );
    drop(app);
    let Some(mut app) = boot(st, to_device, from_device, pressed) else {
        return t.check("add: the device reboots after the add", false);
    };
    let (ok, diff) = answers(host, &mut app, x, want);
    t.check(
        "add: after a reset the added department is still listed and answers the same",
        ok && diff <= 1e-4,
    );
}

/// CRC-32 of the whole simulated flash (a refusal must leave it unchanged).
fn flash_crc(fl: &RamFlash) -> u32 {
    fl.map(0, fl.capacity() as u32).map_or(0, crc::crc32)
}

/// Writes `pkg` into slot `slot` of department `d` and appends a CRC-valid Commit record for
/// it to the journal bank in charge, as a committed update would leave them.
fn plant_commit(st: &Statics, d: usize, slot: u8, pkg: &[u8]) -> bool {
    use lorkd_runtime::update::journal::{decode_bank, Record};
    let (l, mut fl) = (st.layout, st.flash);
    let mut bank = None;
    for b in 0..2 {
        let at = l.journal + b * l.bank_size;
        let mut h = [0u8; 64];
        if fl.read(at, &mut h).is_err() {
            return false;
        }
        if let Some((seq, _)) = decode_bank(&h) {
            if bank.is_none_or(|(_, s)| seq > s) {
                bank = Some((at, seq));
            }
        }
    }
    let Some((bank, _)) = bank else { return false };
    let records = l.bank_size / 64;
    let mut next = 1;
    for i in (1..records).rev() {
        let mut r = [0u8; 64];
        if fl.read(bank + 64 * i, &mut r).is_err() {
            return false;
        }
        if r.iter().any(|&b| b != 0xFF) {
            next = i + 1;
            break;
        }
    }
    let at = l.slot_offset(d, slot);
    let whole = pkg.len() / 4 * 4;
    let mut tail = [0xFFu8; 4];
    tail[..pkg.len() - whole].copy_from_slice(&pkg[whole..]);
    let Ok(h) = lorkd_runtime::update::PackageHeader::parse(pkg) else {
        return false;
    };
    let rec = Record::Commit {
        dept: d as u16,
        slot,
        version: h.version,
        len: pkg.len() as u32,
        counter: 0,
        digest: lorkd_runtime::update::package::digest(pkg),
    };
    next < records
        && fl.erase(at, at + l.slot_size).is_ok()
        && fl.write(at, &pkg[..whole]).is_ok()
        && (whole == pkg.len() || fl.write(at + whole as u32, &tail).is_ok())
        && fl.write(bank + 64 * next, &rec.encode()).is_ok()
}

/// An ed25519 public key other than the vendor's (the curve's base point, a valid key).
const OTHER_KEY: [u8; 32] = {
    let mut k = [0x66u8; 32];
    k[0] = 0x58;
    k
};

/// Verified boot: an unsigned copy of the bundle (otherwise valid) and a wrongly signed one
/// are refused; the app over the refused bundle runs nothing and says why.
fn verified_boot<'m, 'q>(
    t: &mut Tally,
    f: &Fixture<'static>,
    buf: &'m mut [u8],
    frame: &'m mut [f32],
    host: &mut Host<'q>,
) {
    use lorkd_runtime::format::header::{Header, FILE_HASH_OFFSET, FLAG_SIGNED, HEADER_LEN};
    use lorkd_runtime::format::view::file_hash;
    let Ok(h) = Header::decode(f.bundle) else {
        return t.check("verified boot: bundle header decodes", false);
    };
    let n = h.file_len as usize;
    let m = f.bundle.len();
    if buf.len() < m || n > m {
        return t.check("verified boot: room for a copy of the bundle", false);
    }
    // The same bundle, unsigned: flag cleared, signature gone, file hash resealed.
    buf[..n].copy_from_slice(&f.bundle[..n]);
    let mut uh = h;
    uh.flags &= !FLAG_SIGNED;
    buf[..HEADER_LEN].copy_from_slice(&uh.encode());
    let fh = file_hash(&buf[..n]);
    buf[FILE_HASH_OFFSET..FILE_HASH_OFFSET + 32].copy_from_slice(&fh);
    let valid_unsigned = Bundle::parse(&buf[..n]).is_ok();
    let unsigned = verify_bundle(&buf[..n], &VENDOR_KEY).err();
    t.check(
        "verified boot: an unsigned bundle (valid otherwise) is refused (reason 1)",
        valid_unsigned && unsigned == Some(Halted { reason: 1 }),
    );
    buf[..m].copy_from_slice(f.bundle);
    buf[m - 1] ^= 0x20;
    let flipped = verify_bundle(&buf[..m], &VENDOR_KEY).err();
    let other = verify_bundle(f.bundle, &OTHER_KEY).err();
    t.check(
        "verified boot: a flipped signature bit, or a bundle checked against another key, is refused (reason 2)",
        flipped == Some(Halted { reason: 2 }) && other == Some(Halted { reason: 2 }),
    );
    let why = 1;
    let serial = LoopSerial {
        to_device: host.to_device,
        from_device: host.from_device,
    };
    let button = Button::new(ScriptPin(host.pressed), true);
    let model: Device<'m, RamFlash> = Device::Halted(Halted { reason: why });
    let Ok(mut app) = App::new(serial, button, FpgaLed, model, frame) else {
        return t.check("verified boot: the app starts over a refused bundle", false);
    };
    let mut ok = host.ask(
        &mut app,
        &Request::Hello,
        &mut |r| matches!(r, Response::Hello { departments, .. } if departments.is_empty()),
    );
    ok &= host.ask(
        &mut app,
        &Request::Status,
        &mut |r| matches!(r, Response::Status(s) if s.health == Health::BundleRefused(why)),
    );
    let len = f.input_len as u32;
    for req in [
        Request::Select { dept: 0 },
        Request::InferBegin { len },
        Request::UpdateBegin { len: 1000, crc: 0 },
        Request::UpdateCommit,
        Request::FormatStore,
    ] {
        ok &= host.ask(&mut app, &req, &mut |r| {
            *r == Response::Error {
                code: ErrorCode::NotRunning,
                detail: why,
            }
        });
    }
    t.check(
        "verified boot: over a refused bundle nothing runs; Hello/Status say why, every other request is NotRunning",
        ok,
    );
}

/// Crafted bundle headers (lengths and offsets near `u32::MAX`) through the public
/// `Bundle::parse` on this 32-bit target: errors, no wrap, no panic.
fn crafted_bundle(t: &mut Tally, f: &Fixture<'static>, buf: &mut [u8]) {
    use lorkd_runtime::format::header::{Header, Section, FILE_HASH_OFFSET, HEADER_LEN};
    use lorkd_runtime::format::view::file_hash;
    let Ok(h) = Header::decode(f.bundle) else {
        return t.check("32-bit: bundle header decodes", false);
    };
    const N: usize = 4096;
    let big = u32::MAX - 100;
    let edits: [&dyn Fn(&mut Header); 7] = [
        &|h| h.manifest.len = big,
        &|h| {
            h.shared = Section {
                offset: u32::MAX - 15,
                len: 100,
            }
        },
        &|h| {
            h.blobs = Section {
                offset: N as u32 - 16,
                len: big,
            }
        },
        &|h| {
            h.table = Section {
                offset: big,
                len: 200,
            }
        },
        &|h| h.dept_count = u32::MAX,
        &|h| h.file_len = big,
        &|h| {
            h.manifest = Section {
                offset: HEADER_LEN as u32,
                len: u32::MAX,
            }
        },
    ];
    let mut ok = buf.len() >= N;
    for edit in edits {
        if !ok {
            break;
        }
        let b = &mut buf[..N];
        let m = f.bundle.len().min(N);
        b[..m].copy_from_slice(&f.bundle[..m]);
        let mut c = h;
        c.flags = 0;
        c.file_len = N as u32;
        edit(&mut c);
        b[..HEADER_LEN].copy_from_slice(&c.encode());
        let fh = file_hash(b);
        b[FILE_HASH_OFFSET..FILE_HASH_OFFSET + 32].copy_from_slice(&fh);
        ok &= Bundle::parse(b).is_err() && verify_bundle(b, &VENDOR_KEY).is_err();
    }
    t.check(
        "32-bit: crafted bundle headers (lengths, offsets, counts near u32::MAX) refused by Bundle::parse",
        ok,
    );
}

/// Crafted package headers and journal records on this 32-bit target.
fn crafted_store(t: &mut Tally, st: &Statics) {
    use lorkd_runtime::update::journal::{encode_bank, Record};
    use lorkd_runtime::update::package::{Package, PackageHeader, HEADER_LEN};
    use lorkd_runtime::update::UpdateError;
    let (l, mut fl) = (st.layout, st.flash);
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&st.f.update[..HEADER_LEN]);
    h[16..20].copy_from_slice(&(u32::MAX - 100).to_le_bytes());
    let a = PackageHeader::parse(&h) == Err(UpdateError::PackageBadHeader)
        && Package::parse(&h).is_err();
    let c = st.f.crafted_header;
    let b = PackageHeader::parse_signed(c, &VENDOR_KEY).map(|h| h.package_len()) == Ok(u32::MAX)
        && Package::parse(c).err() == Some(UpdateError::PackageTruncated);
    let s = match UpdateStore::<RamFlash, 16>::open(fl, l, VENDOR_KEY, st.bundle) {
        Ok(mut s) => {
            let before = flash_crc(&fl);
            s.begin(c, st.bundle) == Err(UpdateError::TooLarge) && flash_crc(&fl) == before
        }
        Err(_) => false,
    };
    t.check(
        "32-bit: blob_len = u32::MAX - 100 refused by the package parsers; a signed header declaring the largest blob refused by the store (TooLarge), flash unchanged",
        a && b && s,
    );
    // A journal with CRC-valid records whose counts would overflow.
    let recs = [
        Record::Begin {
            dept: 1,
            slot: 0,
            version: 9,
            len: 1000,
            header_hash: [0; 32],
        },
        Record::Progress {
            dept: 1,
            slot: 0,
            pages: u32::MAX,
        },
        Record::Progress {
            dept: 1,
            slot: 0,
            pages: u32::MAX / 4096 + 1,
        },
        Record::Commit {
            dept: 0,
            slot: 1,
            version: 9,
            len: u32::MAX,
            counter: 0,
            digest: [0; 32],
        },
        Record::Commit {
            dept: 2,
            slot: 0,
            version: 9,
            len: 1000,
            counter: 0,
            digest: [0; 32],
        },
        Record::Counter {
            dept: u16::MAX,
            counter: u32::MAX,
        },
    ];
    let mut ok = fl.erase(l.journal, l.slots).is_ok()
        && fl
            .write(l.journal, &encode_bank(1, &l.fingerprint()))
            .is_ok();
    for (i, r) in recs.iter().enumerate() {
        ok &= fl
            .write(l.journal + 64 * (i as u32 + 1), &r.encode())
            .is_ok();
    }
    ok &= match UpdateStore::<RamFlash, 16>::open(fl, l, VENDOR_KEY, st.bundle) {
        Ok(s) => {
            s.resume_point().is_some_and(|p| p.offset <= 1000)
                && (0..3).all(|d| matches!(s.active(d), Active::Factory { .. }))
                && s.security_counter(0) == 0
        }
        Err(_) => false,
    };
    ok &= fl.erase(l.journal, l.end() as u32).is_ok();
    t.check(
        "32-bit: journal records with page counts and lengths near u32::MAX: no overflow, nothing runs from them",
        ok,
    );
}

/// `bench infer N` / `bench switch N`: the work whose guest instructions `run-qemu --bench`
/// counts (the difference between N and 0 repetitions, divided by N).
pub fn bench(t: &mut Tally, what: &str, n: usize) {
    let Some((f, bundle, arena)) = engine_setup(t) else {
        return;
    };
    let (what, mode) = match what.strip_suffix("-auto") {
        Some(w) => (w, Mode::Auto),
        None => (what, Mode::Materialized),
    };
    let Ok(mut engine) = Engine::new(&bundle, arena, mode) else {
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
