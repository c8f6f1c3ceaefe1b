//! The board's peripherals as embedded-hal / embedded-io / embedded-storage implementations:
//! the FPGA LED register of the MPS2, a RAM-backed memory-mapped NOR flash (the simulated
//! flash the update store's journal and A/B slots live in), a loopback serial port the
//! self-checks talk through, and a scripted button pin.
use core::cell::RefCell;
use core::convert::Infallible;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use lorkd_firmware::runtime_model::MappedFlash;

/// FPGAIO LED register of the MPS2 FPGA system control block (AN386 §4.4, QEMU mps2-fpgaio).
const FPGAIO_LED: *mut u32 = 0x4002_8000 as *mut u32;

/// LED0 of the MPS2 board.
pub struct FpgaLed;
impl embedded_hal::digital::ErrorType for FpgaLed {
    type Error = Infallible;
}
impl embedded_hal::digital::OutputPin for FpgaLed {
    fn set_low(&mut self) -> Result<(), Infallible> {
        // SAFETY: FPGAIO_LED is the MPS2's memory-mapped LED register (always present on
        // mps2-an386/an500); a volatile 32-bit access is how it is meant to be used.
        unsafe { FPGAIO_LED.write_volatile(FPGAIO_LED.read_volatile() & !1) };
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        // SAFETY: as in `set_low`.
        unsafe { FPGAIO_LED.write_volatile(FPGAIO_LED.read_volatile() | 1) };
        Ok(())
    }
}

impl FpgaLed {
    /// The LED as the register reads back (the self-check reads the real register).
    pub fn is_on() -> bool {
        // SAFETY: as in `set_low`, a read only.
        unsafe { FPGAIO_LED.read_volatile() & 1 == 1 }
    }
}

/// A memory-mapped NOR flash simulated in RAM: erase sets 0xFF, writes need alignment and
/// erased bytes; the CPU reads it in place through [`MappedFlash`] (as it would an MCU's
/// internal flash). Copies are handles to the same memory (a "reset" reopens it).
#[derive(Clone, Copy)]
pub struct RamFlash {
    ptr: *mut u8,
    len: usize,
}
#[derive(Debug)]
pub struct FlashErr(NorFlashErrorKind);
impl NorFlashError for FlashErr {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}
impl RamFlash {
    /// The flash over `mem` (a static buffer: handles outlive any borrow).
    pub fn new(mem: &'static mut [u8]) -> Self {
        RamFlash {
            ptr: mem.as_mut_ptr(),
            len: mem.len(),
        }
    }
    /// Flips one stored bit (a retention error, for the self-checks).
    pub fn flip_bit(&mut self, offset: usize, bit: u8) {
        if offset < self.len {
            // SAFETY: in bounds of the static buffer (checked); nothing mapped is in use
            // (the checks call this between boots).
            unsafe { *self.ptr.add(offset) ^= 1 << (bit % 8) };
        }
    }
    fn range(&self, offset: u32, n: usize) -> Result<usize, FlashErr> {
        let o = offset as usize;
        match o.checked_add(n) {
            Some(end) if end <= self.len => Ok(o),
            _ => Err(FlashErr(NorFlashErrorKind::OutOfBounds)),
        }
    }
}
impl ErrorType for RamFlash {
    type Error = FlashErr;
}
impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashErr> {
        let o = self.range(offset, bytes.len())?;
        // SAFETY: in bounds of the static buffer (checked).
        let src = unsafe { core::slice::from_raw_parts(self.ptr.add(o), bytes.len()) };
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.len
    }
}
impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashErr> {
        let (f, t) = (from as usize, to as usize);
        if f % Self::ERASE_SIZE != 0 || t % Self::ERASE_SIZE != 0 || t < f {
            return Err(FlashErr(NorFlashErrorKind::NotAligned));
        }
        let o = self.range(from, t - f)?;
        // SAFETY: in bounds (checked); nothing mapped covers an erased range (the
        // `MappedFlash` contract `RuntimeModel` keeps).
        unsafe { core::ptr::write_bytes(self.ptr.add(o), 0xFF, t - f) };
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashErr> {
        let o = self.range(offset, bytes.len())?;
        if o % Self::WRITE_SIZE != 0 || bytes.len() % Self::WRITE_SIZE != 0 {
            return Err(FlashErr(NorFlashErrorKind::NotAligned));
        }
        // SAFETY: in bounds (checked); as in `erase`, nothing mapped is written.
        let dst = unsafe { core::slice::from_raw_parts_mut(self.ptr.add(o), bytes.len()) };
        if dst.iter().any(|&b| b != 0xFF) {
            return Err(FlashErr(NorFlashErrorKind::Other));
        }
        dst.copy_from_slice(bytes);
        Ok(())
    }
}
// SAFETY: `map` returns the stored bytes of the static buffer, which change only through
// `erase` / `write` of this flash's handles.
unsafe impl<'m> MappedFlash<'m> for RamFlash {
    fn map(&self, offset: u32, len: u32) -> Option<&'m [u8]> {
        let o = self.range(offset, len as usize).ok()?;
        // SAFETY: in bounds of the static buffer (checked).
        Some(unsafe { core::slice::from_raw_parts(self.ptr.add(o), len as usize) })
    }
}

/// A byte queue.
pub struct Queue<const N: usize> {
    buf: heapless::Deque<u8, N>,
}
impl<const N: usize> Queue<N> {
    pub const fn new() -> Self {
        Queue {
            buf: heapless::Deque::new(),
        }
    }
}

/// A serial port whose far end is the self-check: `to_device` is what the "host" sent,
/// `from_device` collects what the app wrote.
pub struct LoopSerial<'a, const N: usize> {
    pub to_device: &'a RefCell<Queue<N>>,
    pub from_device: &'a RefCell<Queue<N>>,
}
impl<const N: usize> embedded_io::ErrorType for LoopSerial<'_, N> {
    type Error = Infallible;
}
impl<const N: usize> embedded_io::Read for LoopSerial<'_, N> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut q = self.to_device.borrow_mut();
        let mut n = 0;
        while n < buf.len() {
            match q.buf.pop_front() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}
impl<const N: usize> embedded_io::ReadReady for LoopSerial<'_, N> {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.to_device.borrow().buf.is_empty())
    }
}
impl<const N: usize> embedded_io::Write for LoopSerial<'_, N> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let mut q = self.from_device.borrow_mut();
        for &b in buf {
            // A full queue drops bytes, which the check then sees as a bad frame.
            let _ = q.buf.push_back(b);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
impl<const N: usize> Queue<N> {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.buf.push_back(b).is_ok())
    }
    /// Pops one frame (up to and without its 0x00) into `out`; returns its length.
    pub fn pop_frame(&mut self, out: &mut [u8]) -> Option<usize> {
        let mut n = 0;
        while let Some(b) = self.buf.pop_front() {
            if b == 0 {
                return Some(n);
            }
            *out.get_mut(n)? = b;
            n += 1;
        }
        None
    }
}

/// A button pin the self-check presses (`pressed` = line low, active-low wiring).
pub struct ScriptPin<'a>(pub &'a core::cell::Cell<bool>);
impl embedded_hal::digital::ErrorType for ScriptPin<'_> {
    type Error = Infallible;
}
impl embedded_hal::digital::InputPin for ScriptPin<'_> {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(!self.0.get())
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.get())
    }
}
