//! The device application: serves the serial protocol, cycles departments on the button,
//! drives the status LED (on = ready, off while busy or after a model failure at start).
//! Generic over embedded-hal / embedded-io / embedded-storage; owns no heap, every buffer is
//! a field, so placing the `App` in a `static` allocates it all statically.
use crate::button::Button;
use crate::model::{Model, ModelError};
use crate::proto::{
    self, ErrorCode, Fed, FrameReader, Request, Response, Status, MAX_CLASSES, MAX_RESPONSE,
};
use crate::staging::{StageError, Staging};
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_io::{Read, ReadReady, Write};
use embedded_storage::nor_flash::NorFlash;

/// The firmware version reported by `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The running application.
pub struct App<'f, S, B, L, F, M> {
    serial: S,
    button: Button<B>,
    led: L,
    staging: Staging<F>,
    model: M,
    rx: FrameReader,
    tx: [u8; proto::MAX_FRAME + MAX_RESPONSE],
    /// The input frame being received (`frame.len()` ≥ the model's input).
    frame: &'f mut [f32],
    /// Values of the frame in progress received so far, and its announced length.
    infer: Option<(u32, u32)>,
    status: Status,
}

impl<'f, S, B, L, F, M> App<'f, S, B, L, F, M>
where
    S: Read + Write + ReadReady,
    B: InputPin,
    L: OutputPin,
    F: NorFlash,
    M: Model,
{
    /// Assembles the app; `frame` must hold the model's input (checked here, like the arena
    /// is checked by the engine).
    pub fn new(
        serial: S,
        button: Button<B>,
        mut led: L,
        staging: Staging<F>,
        model: M,
        frame: &'f mut [f32],
    ) -> Result<Self, ModelError> {
        if frame.len() < model.input_len() {
            let _ = led.set_low();
            return Err(ModelError::Shape);
        }
        let _ = led.set_high();
        let status = Status {
            active: model.active() as u8,
            departments: model.departments() as u8,
            frames_ok: 0,
            frames_bad: 0,
            inferences: 0,
            button_presses: 0,
            update_staged: 0,
            update_len: 0,
        };
        Ok(App {
            serial,
            button,
            led,
            staging,
            model,
            rx: FrameReader::new(),
            tx: [0; proto::MAX_FRAME + MAX_RESPONSE],
            frame,
            infer: None,
            status,
        })
    }

    /// One step of the main loop at time `now_ms`: samples the button, then handles the
    /// bytes the serial port has ready (never blocks on an idle port).
    pub fn poll(&mut self, now_ms: u32) {
        if self.button.poll(now_ms) {
            self.status.button_presses += 1;
            let n = self.model.departments();
            if n > 0 {
                let next = (self.model.active() + 1) % n;
                self.with_busy_led(|app| app.model.select(next).ok());
            }
        }
        let mut buf = [0u8; 64];
        while self.serial.read_ready().unwrap_or(false) {
            let n = match self.serial.read(&mut buf) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            for &b in &buf[..n] {
                self.feed(b);
            }
        }
    }

    /// Feeds one received byte; answers when it completes a frame.
    pub fn feed(&mut self, b: u8) {
        match self.rx.feed(b) {
            Fed::More => {}
            Fed::Oversized => {
                self.status.frames_bad += 1;
                let limit = proto::MAX_FRAME as u32;
                self.send(&Response::Error {
                    code: ErrorCode::Oversized,
                    detail: limit,
                });
            }
            Fed::Frame(n) => {
                // Decode into a copy so the request can borrow it while `self` is mutated.
                let mut copy = [0u8; proto::MAX_FRAME];
                copy[..n].copy_from_slice(self.rx.frame(n));
                let reply = match proto::open_frame(&mut copy[..n]).and_then(proto::decode_request)
                {
                    Ok(req) => {
                        self.status.frames_ok += 1;
                        self.with_busy_led(|app| app.handle(req))
                    }
                    Err(e) => {
                        self.status.frames_bad += 1;
                        Reply::Err(e.into(), 0)
                    }
                };
                self.answer(reply);
            }
        }
    }

    /// The model (for board self-checks after a conversation).
    pub fn model(&mut self) -> &mut M {
        &mut self.model
    }

    /// Counters and state.
    pub fn status(&self) -> Status {
        let mut s = self.status;
        s.active = self.model.active() as u8;
        let (staged, len) = self.staging.progress().unwrap_or((0, 0));
        s.update_staged = staged;
        s.update_len = len;
        s
    }

    fn with_busy_led<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let _ = self.led.set_low();
        let r = f(self);
        let _ = self.led.set_high();
        r
    }

    fn handle(&mut self, req: Request<'_>) -> Reply {
        match req {
            Request::Hello => Reply::Hello,
            Request::Status => Reply::Status,
            Request::Select { dept } => {
                let n = self.model.departments();
                if dept as usize >= n {
                    return Reply::Err(ErrorCode::BadDepartment, n as u32);
                }
                match self.model.select(dept as usize) {
                    Ok(()) => Reply::Selected(dept),
                    Err(e) => model_err(e),
                }
            }
            Request::InferBegin { len } => {
                let want = self.model.input_len() as u32;
                if len != want {
                    return Reply::Err(ErrorCode::TooLarge, want);
                }
                self.infer = Some((0, len));
                Reply::Ack(0)
            }
            Request::InferChunk { offset, data } => self.infer_chunk(offset, data),
            Request::UpdateBegin { len, crc } => match self.staging.begin(len, crc) {
                Ok(at) => Reply::UpdateReady(at),
                Err(e) => stage_err(e),
            },
            Request::UpdateChunk { offset, data } => match self.staging.write(offset, data) {
                Ok(next) => Reply::Ack(next),
                Err(e) => stage_err(e),
            },
            Request::UpdateCommit => {
                let (offset, len) = match self.staging.verify() {
                    Ok(r) => r,
                    Err(e) => return stage_err(e),
                };
                match self.model.apply_update(self.staging.flash(), offset, len) {
                    Ok((dept, version)) => {
                        if self.staging.clear().is_err() {
                            return Reply::Err(ErrorCode::Flash, 0);
                        }
                        Reply::Updated(dept as u8, version)
                    }
                    Err(e) => {
                        // A refused package will not become acceptable: drop it.
                        let _ = self.staging.clear();
                        model_err(e)
                    }
                }
            }
        }
    }

    fn infer_chunk(&mut self, offset: u32, data: &[u8]) -> Reply {
        let Some((got, len)) = self.infer else {
            return Reply::Err(ErrorCode::BadState, 0);
        };
        if offset != got {
            return Reply::Err(ErrorCode::BadOffset, got);
        }
        if !data.len().is_multiple_of(4) {
            return Reply::Err(ErrorCode::Malformed, 0);
        }
        let n = (data.len() / 4) as u32;
        if got + n > len {
            return Reply::Err(ErrorCode::TooLarge, len);
        }
        let dst = &mut self.frame[got as usize..(got + n) as usize];
        for (d, c) in dst.iter_mut().zip(data.chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let got = got + n;
        if got < len {
            self.infer = Some((got, len));
            return Reply::Ack(got);
        }
        self.infer = None;
        let classes = self.model.classes();
        if classes > MAX_CLASSES {
            return Reply::Err(ErrorCode::TooLarge, MAX_CLASSES as u32);
        }
        let mut scores = [0f32; MAX_CLASSES];
        match self
            .model
            .infer(&self.frame[..len as usize], &mut scores[..classes])
        {
            Ok(()) => {
                self.status.inferences += 1;
                Reply::Scores(scores, classes)
            }
            Err(e) => model_err(e),
        }
    }

    fn answer(&mut self, reply: Reply) {
        match reply {
            Reply::Hello => {
                let mut names = heapless::Vec::<&str, { proto::MAX_DEPTS }>::new();
                for i in 0..self.model.departments().min(proto::MAX_DEPTS) {
                    let _ = names.push(self.model.name(i));
                }
                let msg = Response::Hello {
                    version: VERSION,
                    departments: names,
                    active: self.model.active() as u8,
                    input_len: self.model.input_len() as u32,
                };
                send(&mut self.serial, &mut self.tx, &msg);
            }
            Reply::Status => {
                let s = self.status();
                self.send(&Response::Status(s));
            }
            Reply::Selected(dept) => self.send(&Response::Selected { dept }),
            Reply::Ack(next) => self.send(&Response::Ack { next }),
            Reply::UpdateReady(resume_at) => self.send(&Response::UpdateReady { resume_at }),
            Reply::Updated(dept, version) => self.send(&Response::Updated { dept, version }),
            Reply::Scores(s, n) => {
                let top1 = argmax(&s[..n]) as u16;
                let scores = heapless::Vec::from_slice(&s[..n]).unwrap_or_default();
                let dept = self.model.active() as u8;
                self.send(&Response::Scores { dept, top1, scores });
            }
            Reply::Err(code, detail) => self.send(&Response::Error { code, detail }),
        }
    }

    fn send(&mut self, msg: &Response<'_>) {
        send(&mut self.serial, &mut self.tx, msg);
    }
}

/// Index of the largest score (the first on ties; 0 for none).
pub fn argmax(s: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in s.iter().enumerate() {
        if v > s[best] {
            best = i;
        }
    }
    best
}

fn send<S: Write>(serial: &mut S, tx: &mut [u8], msg: &Response<'_>) {
    let (scratch, out) = tx.split_at_mut(MAX_RESPONSE);
    if let Some(n) = proto::encode_frame(msg, scratch, out) {
        // A failing port cannot be reported over itself; the next request will retry.
        let _ = serial.write_all(&out[..n]);
        let _ = serial.flush();
    }
}

/// A reply decided while the request still borrows the receive buffer.
enum Reply {
    Hello,
    Status,
    Selected(u8),
    Ack(u32),
    Scores([f32; MAX_CLASSES], usize),
    UpdateReady(u32),
    Updated(u8, u32),
    Err(ErrorCode, u32),
}

fn model_err(e: ModelError) -> Reply {
    match e {
        ModelError::BadDepartment => Reply::Err(ErrorCode::BadDepartment, 0),
        ModelError::Shape => Reply::Err(ErrorCode::Model, 0),
        ModelError::Engine(c) => Reply::Err(ErrorCode::Model, c),
        ModelError::Update(c) => Reply::Err(ErrorCode::UpdateRejected, c),
    }
}

fn stage_err(e: StageError) -> Reply {
    match e {
        StageError::Flash => Reply::Err(ErrorCode::Flash, 0),
        StageError::NotStarted | StageError::Incomplete => Reply::Err(ErrorCode::BadState, 0),
        StageError::BadOffset { expected } => Reply::Err(ErrorCode::BadOffset, expected),
        StageError::TooLarge { limit } => Reply::Err(ErrorCode::TooLarge, limit),
        StageError::Unaligned => Reply::Err(ErrorCode::Malformed, 0),
        StageError::Crc => Reply::Err(ErrorCode::UpdateCrc, 0),
    }
}
