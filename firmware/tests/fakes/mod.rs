//! Test doubles for the host tests: a scripted serial port, pins, and a memory-mapped RAM
//! NOR flash that enforces NOR rules and can lose power; plus the fixture builder the QEMU
//! board embeds too ([`gen`]).
#![allow(dead_code)]
pub mod gen;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use lorkd_firmware::proto::{self, Request, Response};
use lorkd_firmware::runtime_model::MappedFlash;
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
        let mut s = vec![0u8; 1 << 15];
        let mut f = vec![0u8; (1 << 15) + (1 << 10)];
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

/// Memory-mapped RAM NOR flash (erase → 0xFF; writes must be aligned and only onto erased
/// bytes) that can be told to fail after a number of writes, to simulate a power cut. Clones
/// are handles to the same flash (a "reset" rebuilds the app over a clone); the memory is
/// leaked, so mapped slices live as long as the test.
#[derive(Clone)]
pub struct MemFlash {
    ptr: *mut u8,
    len: usize,
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
        let mem: &'static mut [u8] = Box::leak(vec![0xFF; size].into_boxed_slice());
        MemFlash {
            ptr: mem.as_mut_ptr(),
            len: size,
            writes_left: Default::default(),
        }
    }
    fn check(&self, o: usize, n: usize) -> Result<(), FlashErr> {
        match o.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(FlashErr(NorFlashErrorKind::OutOfBounds)),
        }
    }
    /// Overwrites one stored byte, as a bit flip or someone with the flash image would
    /// (no NOR rules: not a write through the driver).
    pub fn poke(&self, o: usize, b: u8) {
        self.check(o, 1).unwrap();
        // SAFETY: in bounds (checked) of the leaked allocation; tests poke only between
        // boots, when nothing mapped from it is in use.
        unsafe { *self.ptr.add(o) = b };
    }
    /// A copy of the bytes at `o .. o + n`.
    pub fn peek(&self, o: usize, n: usize) -> Vec<u8> {
        self.map(o as u32, n as u32).unwrap().to_vec()
    }
}
impl ErrorType for MemFlash {
    type Error = FlashErr;
}
impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashErr> {
        self.check(offset as usize, bytes.len())?;
        // SAFETY: in bounds (checked) of the leaked allocation.
        let src = unsafe { std::slice::from_raw_parts(self.ptr.add(offset as usize), bytes.len()) };
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.len
    }
}
impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 1024;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashErr> {
        let (f, t) = (from as usize, to as usize);
        if !f.is_multiple_of(Self::ERASE_SIZE) || !t.is_multiple_of(Self::ERASE_SIZE) || t < f {
            return Err(FlashErr(NorFlashErrorKind::NotAligned));
        }
        self.check(f, t - f)?;
        // SAFETY: in bounds (checked); no mapped slice covers an erased range (the
        // `MappedFlash` contract the model keeps).
        unsafe { std::ptr::write_bytes(self.ptr.add(f), 0xFF, t - f) };
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
        self.check(o, bytes.len())?;
        // SAFETY: in bounds (checked); as in `erase`, nothing mapped is written.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(self.ptr.add(o), bytes.len());
            assert!(
                dst.iter().all(|&b| b == 0xFF),
                "NOR write onto non-erased bytes at {o}"
            );
            dst.copy_from_slice(bytes);
        }
        Ok(())
    }
}
// SAFETY: `map` returns the stored bytes of the leaked allocation (valid for 'static), which
// change only through `erase` / `write` of this flash or its clones.
unsafe impl<'m> MappedFlash<'m> for MemFlash {
    fn map(&self, offset: u32, len: u32) -> Option<&'m [u8]> {
        self.check(offset as usize, len as usize).ok()?;
        // SAFETY: in bounds (checked).
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(offset as usize), len as usize) })
    }
}
