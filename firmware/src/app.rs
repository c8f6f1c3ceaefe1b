//! The device application: serves the serial protocol, cycles departments on the button,
//! drives the status LED (on = ready, off while busy or after a model failure at start).
//! Generic over embedded-hal / embedded-io / embedded-storage; owns no heap, every buffer is
//! a field, so placing the `App` in a `static` allocates it all statically.
use crate::button::Button;
use crate::crc::Crc32;
use crate::model::{Model, ModelError, PendingUpdate, UPDATE_HEADER_LEN};
use crate::proto::{
    self, ErrorCode, Fed, FrameReader, Health, Request, Response, Status, MAX_CLASSES, MAX_DEPTS,
    MAX_RESPONSE,
};
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_io::{Read, ReadReady, Write};

/// The firmware version reported by `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An update package being received (`UpdateBegin` … `UpdateCommit`). Its bytes go to the
/// model's update store as they arrive; only the package header is held here until it is
/// complete, because the store checks it (department, base, version, size) before it writes.
struct Download {
    len: u32,
    /// The CRC-32 the host announced, and that of the bytes received so far.
    crc: u32,
    running: Crc32,
    received: u32,
    header: [u8; UPDATE_HEADER_LEN],
    /// The model accepted the header (`update_begin` / `update_resume`).
    started: bool,
}

/// The running application.
pub struct App<'f, S, B, L, M> {
    serial: S,
    button: Button<B>,
    led: L,
    model: M,
    rx: FrameReader,
    tx: [u8; proto::MAX_FRAME + MAX_RESPONSE],
    /// The input frame being received (`frame.len()` ≥ the model's input).
    frame: &'f mut [f32],
    /// Values of the frame in progress received so far, and its announced length.
    infer: Option<(u32, u32)>,
    download: Option<Download>,
    /// An update a reset (or a flash failure) interrupted, offered to an `UpdateBegin` of the
    /// same length; dropped once a download's CRC did not match.
    resumable: Option<PendingUpdate>,
    status: Status,
}

impl<'f, S, B, L, M> App<'f, S, B, L, M>
where
    S: Read + Write + ReadReady,
    B: InputPin,
    L: OutputPin,
    M: Model,
{
    /// Assembles the app; `frame` must hold the model's input (checked here, like the arena
    /// is checked by the engine). Looks for an update a reset interrupted (reading back what
    /// of it is on flash, for its CRC).
    pub fn new(
        serial: S,
        button: Button<B>,
        mut led: L,
        mut model: M,
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
            versions: heapless::Vec::new(),
            health: Health::Ok,
            faults: heapless::Vec::new(),
        };
        let resumable = model.update_pending();
        Ok(App {
            serial,
            button,
            led,
            model,
            rx: FrameReader::new(),
            tx: [0; proto::MAX_FRAME + MAX_RESPONSE],
            frame,
            infer: None,
            download: None,
            resumable,
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
        let mut s = self.status.clone();
        s.active = self.model.active() as u8;
        // Departments added in the field since boot count too.
        s.departments = self.model.departments() as u8;
        let (staged, len) = match (&self.download, &self.resumable) {
            (Some(d), _) => (d.received, d.len),
            (None, Some(p)) => (p.offset, p.len),
            (None, None) => (0, 0),
        };
        s.update_staged = staged;
        s.update_len = len;
        s.versions = self.versions();
        s.health = self.model.health();
        s.faults = self.model.faults();
        s
    }

    fn versions(&self) -> heapless::Vec<u32, MAX_DEPTS> {
        (0..self.model.departments().min(MAX_DEPTS))
            .map(|i| self.model.version(i))
            .collect()
    }

    fn with_busy_led<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let _ = self.led.set_low();
        let r = f(self);
        let _ = self.led.set_high();
        r
    }

    fn handle(&mut self, req: Request<'_>) -> Reply {
        if let Health::BundleRefused(why) = self.model.health() {
            // A refused bundle runs nothing: say so to every request but the two that
            // report it.
            if !matches!(req, Request::Hello | Request::Status) {
                return Reply::Err(ErrorCode::NotRunning, why);
            }
        }
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
            Request::UpdateBegin { len, crc } => self.update_begin(len, crc),
            Request::UpdateChunk { offset, data } => self.update_chunk(offset, data),
            Request::UpdateCommit => self.update_commit(),
            Request::FormatStore => {
                self.download = None;
                match self.model.format_store() {
                    Ok(()) => {
                        self.resumable = None;
                        Reply::Status
                    }
                    Err(e) => model_err(e),
                }
            }
        }
    }

    /// Starts a download, or continues the one in progress (same length and CRC), or the one
    /// a reset interrupted (same length; its CRC is checked at the commit).
    fn update_begin(&mut self, len: u32, crc: u32) -> Reply {
        let cap = self.model.update_capacity();
        if len > cap {
            return Reply::Err(ErrorCode::TooLarge, cap);
        }
        if len <= UPDATE_HEADER_LEN as u32 {
            return Reply::Err(ErrorCode::Malformed, UPDATE_HEADER_LEN as u32);
        }
        if let Some(d) = &self.download {
            if (d.len, d.crc) == (len, crc) {
                return Reply::UpdateReady(d.received);
            }
        }
        self.download = None;
        if let Some(p) = self.resumable.filter(|p| p.len == len) {
            self.resumable = None;
            if self.model.update_resume() == Ok(p.offset) {
                self.download = Some(Download {
                    len,
                    crc,
                    running: p.crc,
                    received: p.offset,
                    header: [0; UPDATE_HEADER_LEN],
                    started: true,
                });
                return Reply::UpdateReady(p.offset);
            }
        }
        self.download = Some(Download {
            len,
            crc,
            running: Crc32::new(),
            received: 0,
            header: [0; UPDATE_HEADER_LEN],
            started: false,
        });
        Reply::UpdateReady(0)
    }

    /// Package bytes at `offset`: the header is collected until complete, then handed to the
    /// model (which refuses a wrong department, base, version or size before writing), then
    /// every byte streams to the model's update store.
    fn update_chunk(&mut self, offset: u32, data: &[u8]) -> Reply {
        let Some(d) = self.download.as_mut() else {
            return Reply::Err(ErrorCode::BadState, 0);
        };
        if offset != d.received {
            return Reply::Err(ErrorCode::BadOffset, d.received);
        }
        if offset as u64 + data.len() as u64 > d.len as u64 {
            return Reply::Err(ErrorCode::TooLarge, d.len);
        }
        let end = offset + data.len() as u32;
        let mut rest = data;
        let mut at = offset;
        let mut r = Ok(());
        if !d.started {
            let h = UPDATE_HEADER_LEN;
            let take = (h - at as usize).min(rest.len());
            d.header[at as usize..at as usize + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u32;
            if at as usize == h {
                if let Err(e) = self.model.update_begin(&d.header) {
                    // Refused before anything was written: the download is over.
                    self.download = None;
                    return model_err(e);
                }
                d.started = true;
                self.resumable = None;
                r = self.model.update_write(0, &d.header);
            }
        }
        if r.is_ok() && d.started && !rest.is_empty() {
            r = self.model.update_write(at, rest);
        }
        match r {
            Ok(()) => {
                d.running.update(data);
                d.received = end;
                Reply::Ack(end)
            }
            Err(e) => {
                // The store lost its place (a flash failure): the next `UpdateBegin` resumes
                // from what reached flash.
                self.download = None;
                self.resumable = self.model.update_pending();
                model_err(e)
            }
        }
    }

    /// Checks the announced CRC, then has the model verify (hash, signature, base, version,
    /// counter) and commit.
    fn update_commit(&mut self) -> Reply {
        let Some(d) = self.download.as_ref() else {
            return Reply::Err(ErrorCode::BadState, 0);
        };
        if d.received != d.len {
            return Reply::Err(ErrorCode::BadState, d.received);
        }
        let crc_ok = d.running.finish() == d.crc;
        self.download = None;
        if !crc_ok {
            // Not what the host meant to send (or a resumed prefix of another package):
            // never offer it again; the next `UpdateBegin` starts afresh.
            self.resumable = None;
            return Reply::Err(ErrorCode::UpdateCrc, 0);
        }
        match self.model.update_commit() {
            Ok((dept, version)) => Reply::Updated(dept as u8, version),
            Err(e) => {
                if e == ModelError::Flash {
                    self.resumable = self.model.update_pending();
                }
                model_err(e)
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
                    versions: self.versions(),
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
    // Every request gets exactly one answer: a reply that does not fit (a bundle with very
    // long department names) degrades to an error frame, which always fits.
    let n = proto::encode_frame(msg, scratch, out).or_else(|| {
        let e = Response::Error {
            code: ErrorCode::ReplyTooLarge,
            detail: MAX_RESPONSE as u32,
        };
        proto::encode_frame(&e, scratch, out)
    });
    if let Some(n) = n {
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
        ModelError::Flash => Reply::Err(ErrorCode::Flash, 0),
        ModelError::NotRunning(c) => Reply::Err(ErrorCode::NotRunning, c),
        ModelError::BadState => Reply::Err(ErrorCode::BadState, 0),
    }
}
