//! The board's peripherals as embedded-hal / embedded-io / embedded-storage implementations:
//! the FPGA LED register of the MPS2, a RAM-backed NOR flash (the simulated flash the
//! update is staged in), a loopback serial port the self-checks talk through, and a
//! scripted button pin.
use core::cell::RefCell;
use core::convert::Infallible;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

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

/// A NOR flash over a RAM buffer: erase sets 0xFF, writes need alignment and erased bytes.
pub struct RamFlash<'a> {
    pub mem: &'a mut [u8],
}
#[derive(Debug)]
pub struct FlashErr(NorFlashErrorKind);
impl NorFlashError for FlashErr {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}
impl ErrorType for RamFlash<'_> {
    type Error = FlashErr;
}
impl ReadNorFlash for RamFlash<'_> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashErr> {
        let o = offset as usize;
        let src = self
            .mem
            .get(o..o + bytes.len())
            .ok_or(FlashErr(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len()
    }
}
impl NorFlash for RamFlash<'_> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashErr> {
        let (f, t) = (from as usize, to as usize);
        if f % Self::ERASE_SIZE != 0 || t % Self::ERASE_SIZE != 0 {
            return Err(FlashErr(NorFlashErrorKind::NotAligned));
        }
        self.mem
            .get_mut(f..t)
            .ok_or(FlashErr(NorFlashErrorKind::OutOfBounds))?
            .fill(0xFF);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashErr> {
        let o = offset as usize;
        if o % Self::WRITE_SIZE != 0 || bytes.len() % Self::WRITE_SIZE != 0 {
            return Err(FlashErr(NorFlashErrorKind::NotAligned));
        }
        let dst = self
            .mem
            .get_mut(o..o + bytes.len())
            .ok_or(FlashErr(NorFlashErrorKind::OutOfBounds))?;
        if dst.iter().any(|&b| b != 0xFF) {
            return Err(FlashErr(NorFlashErrorKind::Other));
        }
        dst.copy_from_slice(bytes);
        Ok(())
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
