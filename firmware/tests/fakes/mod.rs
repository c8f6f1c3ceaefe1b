//! Test doubles for the host tests: a scripted serial port, pins, a RAM NOR flash that
//! enforces NOR rules, and a small linear model that stands in for the runtime.
#![allow(dead_code)]
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use lorkd_firmware::model::{Model, ModelError};
use lorkd_firmware::proto::{self, Request, Response};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::rc::Rc;

/// Serial port: bytes the host queued in, bytes the device wrote out.
#[derive(Clone, Default)]
pub struct Serial {
    pub rx: Rc<RefCell<VecDeque<u8>>>,
    pub tx: Rc<RefCell<Vec<u8>>>,
}
impl embedded_io::ErrorType for Serial {
    type Error = Infallible;
}
impl embedded_io::Read for Serial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut q = self.rx.borrow_mut();
        let n = buf.len().min(q.len()).min(7); // odd sizes: frames split across reads
        for b in buf[..n].iter_mut() {
            *b = q.pop_front().unwrap();
        }
        Ok(n)
    }
}
impl embedded_io::ReadReady for Serial {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.rx.borrow().is_empty())
    }
}
impl embedded_io::Write for Serial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.tx.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl Serial {
    pub fn send_raw(&self, bytes: &[u8]) {
        self.rx.borrow_mut().extend(bytes.iter().copied());
    }
    pub fn send(&self, req: &Request<'_>) {
        let mut s = [0u8; 2048];
        let mut f = [0u8; 2100];
        let n = proto::encode_frame(req, &mut s, &mut f).unwrap();
        self.send_raw(&f[..n]);
    }
    /// All complete frames the device wrote, raw (delimiters stripped), consumed.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        let mut tx = self.tx.borrow_mut();
        let mut out = Vec::new();
        while let Some(end) = tx.iter().position(|&b| b == 0) {
            let f: Vec<u8> = tx.drain(..=end).collect();
            out.push(f[..f.len() - 1].to_vec());
        }
        out
    }
}

/// Decodes one device frame into an owned-by-buffer response.
pub fn decode(frame: &mut [u8]) -> Response<'_> {
    let msg = proto::open_frame(frame).expect("device frame");
    proto::decode(msg).expect("device message")
}

/// A pin whose level the test sets.
#[derive(Clone, Default)]
pub struct Pin(pub Rc<Cell<bool>>);
impl embedded_hal::digital::ErrorType for Pin {
    type Error = Infallible;
}
impl embedded_hal::digital::InputPin for Pin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.get())
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.0.get())
    }
}

/// An LED that records every level it was set to.
#[derive(Clone, Default)]
pub struct Led(pub Rc<RefCell<Vec<bool>>>);
impl embedded_hal::digital::ErrorType for Led {
    type Error = Infallible;
}
impl embedded_hal::digital::OutputPin for Led {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.borrow_mut().push(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.borrow_mut().push(true);
        Ok(())
    }
}

/// RAM NOR flash (erase → 0xFF; writes must be aligned and only onto erased bytes) that can
/// be told to fail after a number of writes, to simulate a power cut.
#[derive(Clone)]
pub struct MemFlash {
    pub mem: Rc<RefCell<Vec<u8>>>,
    pub writes_left: Rc<Cell<Option<usize>>>,
}
#[derive(Debug)]
pub struct FlashErr(NorFlashErrorKind);
impl NorFlashError for FlashErr {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}
impl MemFlash {
    pub fn new(size: usize) -> Self {
        MemFlash {
            mem: Rc::new(RefCell::new(vec![0xFF; size])),
            writes_left: Default::default(),
        }
    }
}
impl ErrorType for MemFlash {
    type Error = FlashErr;
}
impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashErr> {
        let m = self.mem.borrow();
        let o = offset as usize;
        let src = m
            .get(o..o + bytes.len())
            .ok_or(FlashErr(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.borrow().len()
    }
}
impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 1024;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashErr> {
        let (f, t) = (from as usize, to as usize);
        if !f.is_multiple_of(Self::ERASE_SIZE) || !t.is_multiple_of(Self::ERASE_SIZE) {
            return Err(FlashErr(NorFlashErrorKind::NotAligned));
        }
        let mut m = self.mem.borrow_mut();
        m.get_mut(f..t)
            .ok_or(FlashErr(NorFlashErrorKind::OutOfBounds))?
            .fill(0xFF);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashErr> {
        if let Some(n) = self.writes_left.get() {
            if n == 0 {
                return Err(FlashErr(NorFlashErrorKind::Other));
            }
            self.writes_left.set(Some(n - 1));
        }
        let o = offset as usize;
        if !o.is_multiple_of(Self::WRITE_SIZE) || !bytes.len().is_multiple_of(Self::WRITE_SIZE) {
            return Err(FlashErr(NorFlashErrorKind::NotAligned));
        }
        let mut m = self.mem.borrow_mut();
        let dst = m
            .get_mut(o..o + bytes.len())
            .ok_or(FlashErr(NorFlashErrorKind::OutOfBounds))?;
        assert!(
            dst.iter().all(|&b| b == 0xFF),
            "NOR write onto non-erased bytes at {o}"
        );
        dst.copy_from_slice(bytes);
        Ok(())
    }
}

/// A linear classifier per department: `scores[c] = Σ_i w[d][c][i]·x[i]`. Update package:
/// `[dept u8][version u32 LE][weights f32 LE …]`, refused (code 1) for an unknown department,
/// (code 2) for a version not newer, (code 3) for a wrong size.
pub struct LinearModel {
    pub names: Vec<&'static str>,
    pub weights: Vec<Vec<f32>>, // [dept][class * input + i]
    pub versions: Vec<u32>,
    pub classes: usize,
    pub input: usize,
    pub active: usize,
}

impl LinearModel {
    pub fn new(rng: &mut impl rand::Rng, depts: usize, classes: usize, input: usize) -> Self {
        const NAMES: [&str; 4] = ["lung", "thyroid", "brain", "breast"];
        LinearModel {
            names: NAMES[..depts].to_vec(),
            weights: (0..depts)
                .map(|_| {
                    (0..classes * input)
                        .map(|_| rng.gen_range(-1.0..1.0))
                        .collect()
                })
                .collect(),
            versions: vec![1; depts],
            classes,
            input,
            active: 0,
        }
    }
    pub fn expect(&self, dept: usize, x: &[f32]) -> Vec<f32> {
        (0..self.classes)
            .map(|c| {
                let w = &self.weights[dept][c * self.input..(c + 1) * self.input];
                w.iter().zip(x).map(|(a, b)| a * b).sum()
            })
            .collect()
    }
}

impl Model for LinearModel {
    fn departments(&self) -> usize {
        self.names.len()
    }
    fn name(&self, i: usize) -> &str {
        self.names.get(i).copied().unwrap_or("")
    }
    fn active(&self) -> usize {
        self.active
    }
    fn select(&mut self, i: usize) -> Result<(), ModelError> {
        if i >= self.names.len() {
            return Err(ModelError::BadDepartment);
        }
        self.active = i;
        Ok(())
    }
    fn input_len(&self) -> usize {
        self.input
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn infer(&mut self, chw: &[f32], scores: &mut [f32]) -> Result<(), ModelError> {
        if chw.len() != self.input || scores.len() != self.classes {
            return Err(ModelError::Shape);
        }
        scores.copy_from_slice(&self.expect(self.active, chw));
        Ok(())
    }
    fn apply_update<F: ReadNorFlash>(
        &mut self,
        flash: &mut F,
        offset: u32,
        len: u32,
    ) -> Result<(usize, u32), ModelError> {
        let mut pkg = vec![0u8; len as usize];
        flash
            .read(offset, &mut pkg)
            .map_err(|_| ModelError::Update(9))?;
        let dept = pkg[0] as usize;
        if dept >= self.names.len() {
            return Err(ModelError::Update(1));
        }
        let version = u32::from_le_bytes(pkg[1..5].try_into().unwrap());
        if version <= self.versions[dept] {
            return Err(ModelError::Update(2));
        }
        if pkg.len() != 5 + 4 * self.classes * self.input {
            return Err(ModelError::Update(3));
        }
        self.weights[dept] = pkg[5..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        self.versions[dept] = version;
        Ok((dept, version))
    }
}
