//! `cargo fuzz run app_feed`: arbitrary bytes (and, from the same input, well-framed
//! messages: COBS + CRC around the bytes, so they reach the postcard decoder and the
//! request handlers) fed byte by byte to the device's `App::feed`. Never a panic, and the
//! protocol's promise holds: every frame (every delimiter after at least one byte) gets
//! exactly one response, each a valid frame that decodes as a `Response`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorkd_firmware::app::App;
use lorkd_firmware::button::Button;
use lorkd_firmware::crc::crc32;
use lorkd_firmware::model::{Model, ModelError, PendingUpdate};
use lorkd_firmware::proto::{self, Response};
use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

#[derive(Clone, Default)]
struct Port(Rc<RefCell<Vec<u8>>>);
impl embedded_io::ErrorType for Port {
    type Error = Infallible;
}
impl embedded_io::Read for Port {
    fn read(&mut self, _: &mut [u8]) -> Result<usize, Infallible> {
        Ok(0)
    }
}
impl embedded_io::ReadReady for Port {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }
}
impl embedded_io::Write for Port {
    fn write(&mut self, b: &[u8]) -> Result<usize, Infallible> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

struct Pin;
impl embedded_hal::digital::ErrorType for Pin {
    type Error = Infallible;
}
impl embedded_hal::digital::InputPin for Pin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(true)
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }
}
impl embedded_hal::digital::OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A small model with state: 3 departments, an update "store" that takes a header of
/// `LKDU` and commits when the bytes add up to the announced length.
#[derive(Default)]
struct Fake {
    active: usize,
    staged: Vec<u8>,
    version: [u32; 3],
}
impl Model for Fake {
    fn departments(&self) -> usize {
        3
    }
    fn name(&self, i: usize) -> &str {
        ["lung", "brain", "skin"].get(i).copied().unwrap_or("")
    }
    fn version(&self, i: usize) -> u32 {
        self.version.get(i).copied().unwrap_or(0) + 1
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
        12
    }
    fn classes(&self) -> usize {
        2 + self.active
    }
    fn infer(&mut self, chw: &[f32], s: &mut [f32]) -> Result<(), ModelError> {
        if chw.len() != 12 || s.len() != self.classes() {
            return Err(ModelError::Shape);
        }
        for (i, o) in s.iter_mut().enumerate() {
            *o = chw[i % 12];
        }
        Ok(())
    }
    fn update_capacity(&self) -> u32 {
        4096
    }
    fn update_pending(&mut self) -> Option<PendingUpdate> {
        None
    }
    fn update_resume(&mut self) -> Result<u32, ModelError> {
        Err(ModelError::BadState)
    }
    fn update_begin(&mut self, header: &[u8]) -> Result<(), ModelError> {
        if header.get(..4) != Some(b"LKDU") {
            return Err(ModelError::Update(4));
        }
        self.staged.clear();
        Ok(())
    }
    fn update_write(&mut self, offset: u32, data: &[u8]) -> Result<(), ModelError> {
        if offset as usize != self.staged.len() {
            return Err(ModelError::Update(22));
        }
        self.staged.extend_from_slice(data);
        Ok(())
    }
    fn update_commit(&mut self) -> Result<(usize, u32), ModelError> {
        let d = self.staged.get(8).copied().unwrap_or(0) as usize % 3;
        self.version[d] += 1;
        Ok((d, self.version[d] + 1))
    }
    fn format_store(&mut self) -> Result<(), ModelError> {
        Err(ModelError::BadState)
    }
}

/// Frames an input would complete: delimiters after at least one byte.
fn frames_in(bytes: &[u8], run: &mut usize) -> usize {
    let mut n = 0;
    for &b in bytes {
        if b == 0 {
            n += usize::from(*run > 0);
            *run = 0;
        } else {
            *run += 1;
        }
    }
    n
}

fuzz_target!(|data: &[u8]| {
    let port = Port::default();
    let frame: &'static mut [f32] = Box::leak(vec![0f32; 12].into_boxed_slice());
    let mut app = App::new(
        port.clone(),
        Button::new(Pin, true),
        Pin,
        Fake::default(),
        frame,
    )
    .unwrap();
    let mut stream = data.to_vec();
    // The same bytes split at 0xFF into messages, each sealed (CRC) and framed (COBS).
    for msg in data.split(|&b| b == 0xFF) {
        let mut m = msg.to_vec();
        m.extend_from_slice(&crc32(msg).to_le_bytes());
        let mut enc = vec![0u8; m.len() + m.len() / 254 + 2];
        let k = lorkd_firmware::cobs::encode(&m, &mut enc).unwrap();
        stream.extend_from_slice(&enc[..k]);
        stream.push(0);
    }
    let mut run = 0;
    let want = frames_in(&stream, &mut run);
    for &b in &stream {
        app.feed(b);
    }
    let out = port.0.borrow().clone();
    let mut got = 0;
    for f in out.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let mut f = f.to_vec();
        let msg = proto::open_frame(&mut f).expect("device frames are valid");
        proto::decode::<Response>(msg).expect("device frames decode");
        got += 1;
    }
    assert_eq!(got, want, "responses vs frames");
});
