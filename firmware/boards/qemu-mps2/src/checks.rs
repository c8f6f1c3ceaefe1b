//! The self-checks. The protocol check talks to the real `App` through a loopback serial port
//! with a small dot-product model (the protocol is model-agnostic); the bundle checks run the
//! real `lorkd_runtime` engine on the bundle embedded by `firmware/run-qemu`.
use crate::board::{FpgaLed, LoopSerial, Queue, RamFlash, ScriptPin};
use crate::Tally;
use core::cell::{Cell, RefCell};
use cortex_m_semihosting::hprintln;
use embedded_storage::nor_flash::ReadNorFlash;
use lorkd_firmware::app::{argmax, App};
use lorkd_firmware::button::{Button, DEBOUNCE_MS};
use lorkd_firmware::fixture::Fixture;
use lorkd_firmware::model::{Model, ModelError};
use lorkd_firmware::proto::{self, ErrorCode, Request, Response, MAX_CHUNK};
use lorkd_firmware::staging::Staging;
use lorkd_firmware::{cobs, crc};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Dept, Mode};
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
    fn unit(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
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

/// `scores[c] = Σ_i w_d[c, i]·x[i]` with weights from a seed per department and version.
struct DotModel {
    active: usize,
    versions: [u32; 3],
}
const DOT_IN: usize = 200;
const DOT_CLASSES: usize = 4;
impl DotModel {
    fn score(&self, d: usize, x: &[f32], out: &mut [f32]) {
        let mut rng = XorShift(0x51ED_0000 ^ ((d as u32) << 8) ^ self.versions[d]);
        for o in out.iter_mut() {
            *o = x.iter().map(|v| v * rng.unit()).sum();
        }
    }
}
impl Model for DotModel {
    fn departments(&self) -> usize {
        3
    }
    fn name(&self, i: usize) -> &str {
        ["lung", "thyroid", "brain"].get(i).copied().unwrap_or("")
    }
    fn active(&self) -> usize {
        self.active
    }
    fn select(&mut self, i: usize) -> Result<(), ModelError> {
        if i >= 3 {
            return Err(ModelError::BadDepartment);
        }
        self.active = i;
        Ok(())
    }
    fn input_len(&self) -> usize {
        DOT_IN
    }
    fn classes(&self) -> usize {
        DOT_CLASSES
    }
    fn infer(&mut self, chw: &[f32], scores: &mut [f32]) -> Result<(), ModelError> {
        self.score(self.active, chw, scores);
        Ok(())
    }
    /// Package: `[dept, version u32 LE, 0xA5 × rest]`.
    fn apply_update<F: ReadNorFlash>(
        &mut self,
        flash: &mut F,
        offset: u32,
        len: u32,
    ) -> Result<(usize, u32), ModelError> {
        let mut h = [0u8; 5];
        flash
            .read(offset, &mut h)
            .map_err(|_| ModelError::Update(9))?;
        let d = h[0] as usize;
        let v = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
        if d >= 3 || v <= self.versions[d] || len < 5 {
            return Err(ModelError::Update(1));
        }
        self.versions[d] = v;
        Ok((d, v))
    }
}

const Q: usize = 4096;

pub fn protocol(t: &mut Tally) {
    // Statically allocated once; `singleton!` hands out the only `&'static mut`.
    let (Some(flash), Some(frame)) = (
        cortex_m::singleton!(: [u8; 64 * 1024] = [0xFF; 64 * 1024]),
        cortex_m::singleton!(: [f32; DOT_IN] = [0.0; DOT_IN]),
    ) else {
        return t.check("static buffers", false);
    };
    let host_q = RefCell::new(Queue::<Q>::new());
    let dev_q = RefCell::new(Queue::<Q>::new());
    let pressed = Cell::new(false);
    let serial = LoopSerial {
        to_device: &host_q,
        from_device: &dev_q,
    };
    let staging = match Staging::open(RamFlash { mem: flash }, 0, 64 * 1024) {
        Ok(s) => s,
        Err(_) => return t.check("staging opens on the simulated flash", false),
    };
    let model = DotModel {
        active: 0,
        versions: [1; 3],
    };
    let button = Button::new(ScriptPin(&pressed), true);
    let Ok(mut app) = App::new(serial, button, FpgaLed, staging, model, frame) else {
        return t.check("app starts", false);
    };
    t.check(
        "app starts, status LED on (FPGAIO register)",
        FpgaLed::is_on(),
    );

    let now = Cell::new(0u32);
    let tick = |app: &mut App<_, _, _, _, _>| {
        now.set(now.get() + 1);
        app.poll(now.get());
    };
    // One request → poll → one decoded response, checked by `f`.
    let ask =
        |app: &mut App<_, _, _, _, _>, req: &Request, f: &mut dyn FnMut(&Response) -> bool| {
            let mut rx = [0u8; proto::MAX_FRAME];
            let mut s = [0u8; proto::MAX_MSG + 8];
            let mut fr = [0u8; proto::MAX_FRAME];
            let Some(n) = proto::encode_frame(req, &mut s, &mut fr) else {
                return false;
            };
            host_q.borrow_mut().push(&fr[..n]);
            tick(app);
            let Some(m) = dev_q.borrow_mut().pop_frame(&mut rx) else {
                return false;
            };
            let ok = match proto::open_frame(&mut rx[..m]).and_then(proto::decode::<Response>) {
                Ok(r) => f(&r),
                Err(_) => false,
            };
            ok
        };

    let ok = ask(&mut app, &Request::Hello, &mut |r| {
        matches!(r, Response::Hello { departments, active: 0, input_len, .. }
            if departments.len() == 3 && departments[2] == "brain" && *input_len as usize == DOT_IN)
    });
    t.check("protocol: Hello", ok);

    let mut rng = XorShift(0xC0FF_EE11);
    let mut x = [0f32; DOT_IN];
    x.iter_mut().for_each(|v| *v = rng.unit());
    let mut bytes = [0u8; DOT_IN * 4];
    for (b, v) in bytes.chunks_exact_mut(4).zip(&x) {
        b.copy_from_slice(&v.to_le_bytes());
    }
    let mut all = true;
    for dept in [2u8, 1, 2] {
        all &= ask(&mut app, &Request::Select { dept }, &mut |r| {
            *r == Response::Selected { dept }
        });
        all &= ask(
            &mut app,
            &Request::InferBegin { len: DOT_IN as u32 },
            &mut |r| *r == Response::Ack { next: 0 },
        );
        let mut want = [0f32; DOT_CLASSES];
        DotModel {
            active: 0,
            versions: [1; 3],
        }
        .score(dept as usize, &x, &mut want);
        let chunks = bytes.chunks(MAX_CHUNK);
        let last = chunks.len() - 1;
        for (i, c) in chunks.enumerate() {
            let offset = (i * MAX_CHUNK / 4) as u32;
            all &= ask(
                &mut app,
                &Request::InferChunk { offset, data: c },
                &mut |r| match r {
                    Response::Scores {
                        dept: d,
                        top1,
                        scores,
                    } if i == last => {
                        *d == dept && scores[..] == want[..] && *top1 as usize == argmax(&want)
                    }
                    Response::Ack { .. } => i != last,
                    _ => false,
                },
            );
        }
    }
    t.check(
        "protocol: Select + Infer in chunks, scores as computed",
        all,
    );

    let bad = [0x03u8, 0x11, 0x22, 0x02, 0x33, 0x00]; // a well-formed COBS frame, bad CRC
    host_q.borrow_mut().push(&bad);
    tick(&mut app);
    let mut rx = [0u8; proto::MAX_FRAME];
    let m = dev_q.borrow_mut().pop_frame(&mut rx).unwrap_or(0);
    let err = proto::open_frame(&mut rx[..m]).and_then(proto::decode::<Response>);
    let ok = matches!(
        err,
        Ok(Response::Error {
            code: ErrorCode::BadCrc,
            ..
        })
    ) && ask(
        &mut app,
        &Request::Status,
        &mut |r| matches!(r, Response::Status(s) if s.frames_bad == 1 && s.active == 2),
    );
    t.check("protocol: bad CRC → error frame, device keeps serving", ok);

    // The button: a bouncy press, debounced, cycles 2 → 0.
    for _ in 0..5 {
        pressed.set(true);
        tick(&mut app);
        pressed.set(false);
        tick(&mut app);
    }
    pressed.set(true);
    for _ in 0..DEBOUNCE_MS + 2 {
        tick(&mut app);
    }
    pressed.set(false);
    for _ in 0..DEBOUNCE_MS + 2 {
        tick(&mut app);
    }
    t.check(
        "button: one debounced press cycles brain → lung",
        app.model().active == 0,
    );

    // An update staged into the simulated flash in chunks, then committed.
    let mut pkg = [0xA5u8; 1500];
    pkg[0] = 1;
    pkg[1..5].copy_from_slice(&7u32.to_le_bytes());
    let (len, c) = (pkg.len() as u32, crc::crc32(&pkg));
    let mut ok = ask(&mut app, &Request::UpdateBegin { len, crc: c }, &mut |r| {
        *r == Response::UpdateReady { resume_at: 0 }
    });
    for (i, ch) in pkg.chunks(MAX_CHUNK).enumerate() {
        let offset = (i * MAX_CHUNK) as u32;
        let next = offset + ch.len() as u32;
        ok &= ask(
            &mut app,
            &Request::UpdateChunk { offset, data: ch },
            &mut |r| *r == Response::Ack { next },
        );
    }
    ok &= ask(&mut app, &Request::UpdateCommit, &mut |r| {
        *r == Response::Updated {
            dept: 1,
            version: 7,
        }
    });
    t.check(
        "protocol: update staged in flash chunk by chunk and committed",
        ok,
    );
    hprintln!("[fw] protocol status: {:?}", app.status());
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

pub fn bundle(t: &mut Tally) {
    let Some((f, bundle, arena)) = engine_setup(t) else {
        return;
    };
    let mut engine = match Engine::new(&bundle, arena, Mode::Materialized) {
        Ok(e) => e,
        Err(e) => {
            hprintln!("[fw] engine: {}", e);
            return t.check("engine starts on the static arena", false);
        }
    };
    t.check("engine starts on the static arena", true);
    let mut x = [0f32; MAX_INPUT];
    let x = &mut x[..f.input_len];
    let mut logits = [0f32; 64];
    let mut all_top = true;
    let mut max_diff = 0f32;
    for d in 0..f.departments {
        if engine.select(d).is_err() {
            all_top = false;
            continue;
        }
        for n in 0..f.images {
            f.image(n, x);
            let Ok(c) = engine.infer(x, &mut logits) else {
                all_top = false;
                continue;
            };
            let (top, _) = f.expected(d, n, 0);
            all_top &= argmax(&logits[..c]) == top;
            for (k, &v) in logits[..c].iter().enumerate() {
                let diff = (v - f.expected(d, n, k).1).abs();
                max_diff = if diff > max_diff { diff } else { max_diff };
            }
        }
    }
    hprintln!("[fw] engine vs host: max |score difference| {:e}", max_diff);
    t.check(
        "every department on every test image: top-1 as computed on the host",
        all_top,
    );
    t.check("scores within 1e-4 of the host's", max_diff <= 1e-4);

    // Switch away and back: W_t is rebuilt from the pristine W0, so no drift.
    let mut first = [0f32; 64];
    let mut again = [0f32; 64];
    f.image(0, x);
    let c0 = engine
        .select(0)
        .ok()
        .and_then(|()| engine.infer(x, &mut first).ok());
    let mut same = c0.is_some();
    let c0 = c0.unwrap_or(0);
    for round in 0..3 {
        for d in (1..f.departments).rev() {
            same &= engine.select(d).is_ok() && engine.infer(x, &mut again).is_ok();
        }
        same &= engine.select(0).is_ok() && engine.infer(x, &mut again) == Ok(c0);
        same &= first[..c0]
            .iter()
            .zip(&again[..c0])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            hprintln!("[fw] drift after round {}", round);
        }
    }
    t.check("switch away and back 3 times: bit-identical scores", same);
    update(t, &f, &bundle, &mut engine, x);
}

/// Simulated NOR flash for the update store: journal and A/B slots (the bundle itself stays
/// in the image's flash; the layout's first bytes, where the bundle would be, stay unused).
const STORE_FLASH: usize = 1536 * 1024;
/// Room for one department's delta blob read back from its slot.
const BLOB_BYTES: usize = 256 * 1024;
#[repr(C, align(16))]
pub struct Blob(pub [u8; BLOB_BYTES]);

/// A signed delta update into the simulated flash through `lorkd_runtime::update`, then the
/// department runs its new blob; tampered and replayed packages are refused.
fn update(
    t: &mut Tally,
    f: &Fixture<'static>,
    bundle: &Bundle<'static>,
    engine: &mut Engine<'_, 'static>,
    x: &mut [f32],
) {
    let max_blob = (0..bundle.department_count())
        .filter_map(|i| bundle.department_blob(i))
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    let layout = Layout::standard(f.bundle.len(), f.departments as u16, max_blob, 4096);
    let (Some(mem), Some(scratch), Some(blob_buf)) = (
        cortex_m::singleton!(: [u8; STORE_FLASH] = [0xFF; STORE_FLASH]),
        cortex_m::singleton!(: Blob = Blob([0; BLOB_BYTES])),
        cortex_m::singleton!(: Blob = Blob([0; BLOB_BYTES])),
    ) else {
        return t.check("update buffers", false);
    };
    if layout.end() > STORE_FLASH as u64 {
        hprintln!(
            "[fw] update layout needs {} B of flash, have {}",
            layout.end(),
            STORE_FLASH
        );
        return t.check("update store fits the simulated flash", false);
    }
    let mut store =
        match UpdateStore::<RamFlash<'static>, 8>::open(RamFlash { mem }, layout, f.pubkey, bundle)
        {
            Ok(s) => s,
            Err(e) => {
                hprintln!("[fw] store: {:?}", e);
                return t.check("update store opens on the simulated flash", false);
            }
        };
    // A package with one signature bit flipped is refused before anything is written.
    let mut bad = [0u8; BLOB_BYTES];
    let n = f.update.len();
    let refused = n <= BLOB_BYTES && {
        bad[..n].copy_from_slice(f.update);
        bad[n - 1] ^= 0x01;
        store.apply(&bad[..n], bundle, &mut scratch.0).is_err()
    };
    t.check(
        "update: a package with a flipped signature bit is refused",
        refused,
    );

    let d = f.update_dept;
    let applied = store.apply(f.update, bundle, &mut scratch.0);
    let version_ok = store.active(d).version() == Some(f.update_version);
    hprintln!(
        "[fw] update: apply -> {:?}, department {} now {:?}",
        applied,
        d,
        store.active(d)
    );
    t.check(
        "update: signed delta applied into the simulated flash (A/B slot, journal)",
        applied == Ok(d) && version_ok,
    );
    t.check(
        "update: the same package again is refused (version not newer)",
        store.apply(f.update, bundle, &mut scratch.0).is_err(),
    );

    let blob: &'static [u8] = match store.read_active_blob(d, &mut blob_buf.0) {
        Ok(Some(b)) => b,
        _ => return t.check("update: the new blob reads back from its slot", false),
    };
    let dept = match Dept::parse_blob(blob, bundle.manifest(), bundle.base_id()) {
        Ok(x) => x,
        Err(e) => {
            hprintln!("[fw] blob: {}", e);
            return t.check("update: the new blob parses against the shared part", false);
        }
    };
    let mut logits = [0f32; 64];
    let mut ok = engine.select_blob(dept).is_ok();
    let mut changed = false;
    let mut max_diff = 0f32;
    for n in 0..f.images {
        f.image(n, x);
        let Ok(c) = engine.infer(x, &mut logits) else {
            ok = false;
            continue;
        };
        ok &= argmax(&logits[..c]) == f.expected_updated(n, 0).0;
        for (k, &v) in logits[..c].iter().enumerate() {
            max_diff = max_diff.max((v - f.expected_updated(n, k).1).abs());
            changed |= v != f.expected(d, n, k).1;
        }
    }
    hprintln!(
        "[fw] updated department vs host: max |score difference| {:e}",
        max_diff
    );
    t.check(
        "update: the department runs its new blob, top-1 as on the host",
        ok && max_diff <= 1e-4,
    );
    t.check(
        "update: the new blob changes the department's scores",
        changed,
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
