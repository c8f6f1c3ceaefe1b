//! Whole conversations with the device app on the host: fake serial, pins and flash, a
//! linear stand-in model. Random inputs from a seeded RNG (seed printed).
mod fakes;

use fakes::{decode, Led, LinearModel, MemFlash, Pin, Serial};
use lorkd_firmware::app::{argmax, App, VERSION};
use lorkd_firmware::button::{Button, DEBOUNCE_MS};
use lorkd_firmware::crc::crc32;
use lorkd_firmware::proto::{self, ErrorCode, Request, Response, MAX_CHUNK, MAX_FRAME};
use lorkd_firmware::staging::Staging;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const INPUT: usize = 300;
const CLASSES: usize = 5;
const FLASH: usize = 64 * 1024;

type Dev = App<'static, Serial, Pin, Led, MemFlash, LinearModel>;

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

fn rig_with(model: LinearModel, flash: MemFlash) -> Rig {
    let (serial, button, led) = (Serial::default(), Pin::default(), Led::default());
    button.0.set(true); // active low, released
    let staging = Staging::open(flash.clone(), 0, FLASH as u32).unwrap();
    let frame: &'static mut [f32] = Box::leak(vec![0f32; INPUT].into_boxed_slice());
    let app = App::new(
        serial.clone(),
        Button::new(button.clone(), true),
        led.clone(),
        staging,
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

fn rig(rng: &mut ChaCha8Rng) -> Rig {
    rig_with(
        LinearModel::new(rng, 3, CLASSES, INPUT),
        MemFlash::new(FLASH),
    )
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
    fn wait(&mut self, ms: u32) {
        for _ in 0..ms {
            self.now += 1;
            self.app.poll(self.now);
        }
    }
}

#[test]
fn hello_select_infer_status_conversation() {
    let mut rng = rng();
    let mut r = rig(&mut rng);
    let mut f = r.ask(&Request::Hello);
    match decode(&mut f) {
        Response::Hello {
            version,
            departments,
            active,
            input_len,
        } => {
            assert_eq!(version, VERSION);
            assert_eq!(&departments[..], ["lung", "thyroid", "brain"]);
            assert_eq!(active, 0);
            assert_eq!(input_len as usize, INPUT);
        }
        other => panic!("{other:?}"),
    }
    for dept in [2u8, 0, 1, 2] {
        let mut f = r.ask(&Request::Select { dept });
        assert_eq!(decode(&mut f), Response::Selected { dept });
        let x: Vec<f32> = (0..INPUT).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let (d, top1, scores) = r.infer(&x);
        let want = r.app.model().expect(dept as usize, &x);
        assert_eq!(d, dept);
        assert_eq!(scores, want, "scores of department {dept}");
        assert_eq!(top1 as usize, argmax(&want));
    }
    let mut f = r.ask(&Request::Status);
    match decode(&mut f) {
        Response::Status(s) => {
            assert_eq!(
                (s.active, s.departments, s.inferences, s.frames_bad),
                (2, 3, 4, 0)
            );
            // Hello + 4 × (Select + InferBegin + 3 chunks) + Status
            assert_eq!(s.frames_ok, 1 + 4 * 5 + 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.error(&Request::Select { dept: 3 }),
        (ErrorCode::BadDepartment, 3)
    );
    // The LED is on when idle, and went off while each request was handled.
    let led = r.led.0.borrow();
    assert_eq!(led.last(), Some(&true));
    assert!(led.iter().filter(|l| !**l).count() >= 20);
}

#[test]
fn bad_frames_get_error_frames_and_the_device_keeps_serving() {
    let mut rng = rng();
    let mut r = rig(&mut rng);
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
    let mut rng = rng();
    let mut r = rig(&mut rng);
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
        (ErrorCode::TooLarge, INPUT as u32)
    );
    let mut a = r.ask(&Request::InferBegin { len: INPUT as u32 });
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
    let big = vec![0u8; (INPUT + 1) * 4];
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
    let x: Vec<f32> = (0..INPUT).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let (_, _, scores) = r.infer(&x);
    assert_eq!(scores, r.app.model().expect(0, &x));
}

#[test]
fn button_presses_cycle_departments_debounced() {
    let mut rng = rng();
    let mut r = rig(&mut rng);
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
    assert_eq!(r.app.model().active, 0);
    press(&mut r, 0);
    assert_eq!(r.app.model().active, 1);
    press(&mut r, 6); // a bouncy press is still one press
    assert_eq!(r.app.model().active, 2);
    press(&mut r, 3);
    assert_eq!(r.app.model().active, 0, "wraps around");
    // A glitch shorter than the debounce time is no press.
    r.button.0.set(false);
    r.wait(DEBOUNCE_MS - 5);
    r.button.0.set(true);
    r.wait(3 * DEBOUNCE_MS);
    assert_eq!(r.app.model().active, 0);
    // Holding the button is one press, not a repeat.
    r.button.0.set(false);
    r.wait(20 * DEBOUNCE_MS);
    assert_eq!(r.app.model().active, 1);
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
    let x: Vec<f32> = (0..INPUT).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let (d, _, s) = r.infer(&x);
    assert_eq!((d, s), (1, r.app.model().expect(1, &x)));
}

fn package(rng: &mut ChaCha8Rng, dept: u8, version: u32) -> (Vec<u8>, Vec<f32>) {
    let w: Vec<f32> = (0..CLASSES * INPUT)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let mut p = vec![dept];
    p.extend_from_slice(&version.to_le_bytes());
    p.extend(w.iter().flat_map(|v| v.to_le_bytes()));
    (p, w)
}

/// Sends chunks of `pkg` from `from` until `until` bytes; returns the next offset.
fn send_chunks(r: &mut Rig, pkg: &[u8], from: usize, until: usize) -> u32 {
    let mut off = from;
    while off < until {
        let end = (off + MAX_CHUNK).min(until);
        let mut a = r.ask(&Request::UpdateChunk {
            offset: off as u32,
            data: &pkg[off..end],
        });
        assert_eq!(decode(&mut a), Response::Ack { next: end as u32 });
        off = end;
    }
    off as u32
}

#[test]
fn update_resumes_after_reset_and_power_cut() {
    let mut rng = rng();
    let mut r = rig(&mut rng);
    let (pkg, w) = package(&mut rng, 1, 2);
    let (len, crc) = (pkg.len() as u32, crc32(&pkg));
    let mut a = r.ask(&Request::UpdateBegin { len, crc });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: 0 });
    let half = pkg.len() / 2 / MAX_CHUNK * MAX_CHUNK;
    send_chunks(&mut r, &pkg, 0, half);
    assert_eq!(
        r.error(&Request::UpdateChunk {
            offset: 0,
            data: &pkg[..8]
        }),
        (ErrorCode::BadOffset, half as u32)
    );
    assert_eq!(r.error(&Request::UpdateCommit), (ErrorCode::BadState, 0));

    // Reset: a new app over the same flash resumes where the log ends.
    let model = std::mem::replace(r.app.model(), LinearModel::new(&mut rng, 1, 1, 1));
    let mut r = rig_with(model, r.flash.clone());
    let mut a = r.ask(&Request::Status);
    let Response::Status(st) = decode(&mut a) else {
        panic!()
    };
    assert_eq!((st.update_staged, st.update_len), (half as u32, len));
    // It resumes at the start of the erase sector holding the staged length (re-erased).
    let sector = half / 1024 * 1024;
    let mut a = r.ask(&Request::UpdateBegin { len, crc });
    assert_eq!(
        decode(&mut a),
        Response::UpdateReady {
            resume_at: sector as u32
        }
    );
    // One more chunk lands, so the staged length is mid-sector when the power goes.
    let half = send_chunks(&mut r, &pkg, sector, sector + MAX_CHUNK) as usize;
    assert_ne!(half % 1024, 0);

    // Power cut in the middle of a chunk: the flash fails after one more write.
    r.flash.writes_left.set(Some(1));
    let end = half + MAX_CHUNK;
    let (code, _) = r.error(&Request::UpdateChunk {
        offset: half as u32,
        data: &pkg[half..end],
    });
    assert_eq!(code, ErrorCode::Flash);
    r.flash.writes_left.set(None);
    // The chunk's data reached flash, its log slot did not: the device restarts at the erase
    // sector holding the staged length (re-erased), and the update completes from there.
    let model = std::mem::replace(r.app.model(), LinearModel::new(&mut rng, 1, 1, 1));
    let mut r = rig_with(model, r.flash.clone());
    let sector = (half / 1024 * 1024) as u32;
    let mut a = r.ask(&Request::Status);
    let Response::Status(st) = decode(&mut a) else {
        panic!()
    };
    assert_eq!(
        st.update_staged, half as u32,
        "the log holds the last completed chunk"
    );
    let mut a = r.ask(&Request::UpdateBegin { len, crc });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: sector });
    send_chunks(&mut r, &pkg, sector as usize, pkg.len());
    let mut a = r.ask(&Request::UpdateCommit);
    assert_eq!(
        decode(&mut a),
        Response::Updated {
            dept: 1,
            version: 2
        }
    );
    assert_eq!(r.app.model().weights[1], w);
}

#[test]
fn update_end_to_end_and_refusals() {
    let mut rng = rng();
    let mut r = rig(&mut rng);
    let (pkg, w) = package(&mut rng, 2, 5);
    let (len, crc) = (pkg.len() as u32, crc32(&pkg));
    let mut a = r.ask(&Request::UpdateBegin { len, crc });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: 0 });
    send_chunks(&mut r, &pkg, 0, pkg.len());
    let mut a = r.ask(&Request::UpdateCommit);
    assert_eq!(
        decode(&mut a),
        Response::Updated {
            dept: 2,
            version: 5
        }
    );
    assert_eq!(r.app.model().weights[2], w);
    let mut a = r.ask(&Request::Select { dept: 2 });
    assert_eq!(decode(&mut a), Response::Selected { dept: 2 });
    let x: Vec<f32> = (0..INPUT).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let (_, _, s) = r.infer(&x);
    assert_eq!(s, r.app.model().expect(2, &x));
    // Staging was cleared: a commit now has nothing to commit.
    assert_eq!(r.error(&Request::UpdateCommit), (ErrorCode::BadState, 0));

    // Same version again: the model refuses it (code 2), staging is dropped.
    let mut a = r.ask(&Request::UpdateBegin { len, crc });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: 0 });
    send_chunks(&mut r, &pkg, 0, pkg.len());
    assert_eq!(
        r.error(&Request::UpdateCommit),
        (ErrorCode::UpdateRejected, 2)
    );

    // Announced CRC does not match the bytes: refused before the model sees it.
    let (pkg2, _) = package(&mut rng, 0, 9);
    let mut a = r.ask(&Request::UpdateBegin {
        len: pkg2.len() as u32,
        crc: crc ^ 1,
    });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: 0 });
    send_chunks(&mut r, &pkg2, 0, pkg2.len());
    assert_eq!(r.error(&Request::UpdateCommit), (ErrorCode::UpdateCrc, 0));
    assert_eq!(r.app.model().versions[0], 1);

    // Too large for the staging region; a chunk past the announced length.
    let (code, limit) = r.error(&Request::UpdateBegin {
        len: FLASH as u32,
        crc: 0,
    });
    assert_eq!((code, limit), (ErrorCode::TooLarge, FLASH as u32 - 1024));
    let mut a = r.ask(&Request::UpdateBegin {
        len: 8,
        crc: crc32(&[1; 8]),
    });
    assert_eq!(decode(&mut a), Response::UpdateReady { resume_at: 0 });
    assert_eq!(
        r.error(&Request::UpdateChunk {
            offset: 0,
            data: &[1; 12]
        }),
        (ErrorCode::TooLarge, 8)
    );
    assert_eq!(
        r.error(&Request::UpdateChunk {
            offset: 0,
            data: &[1; 3]
        }),
        (ErrorCode::Malformed, 0)
    );
}
