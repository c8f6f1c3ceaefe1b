//! lorkd firmware self-checks on QEMU's mps2-an386 (Cortex-M4F). Each check prints one line
//! over semihosting; the image exits with status 0 only if every check passed
//! (`firmware/run-qemu` builds it, runs it under a timeout and passes the status on).
#![no_std]
#![no_main]

mod bench;
mod board;
mod checks;
mod kernel_checks;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

/// Pass/fail tally.
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
}

impl Tally {
    pub fn check(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
            hprintln!("[fw] ok   {}", name);
        } else {
            self.failed += 1;
            hprintln!("[fw] FAIL {}", name);
        }
    }
}

#[entry]
fn main() -> ! {
    // CPUID part number: 0xC24 Cortex-M4 (mps2-an386), 0xC27 Cortex-M7 (mps2-an500).
    let part = cortex_m::Peripherals::take().map_or(0, |p| (p.CPUID.base.read() >> 4) & 0xFFF);
    let core = match part {
        0xC24 => "Cortex-M4",
        0xC27 => "Cortex-M7",
        _ => "unknown core",
    };
    hprintln!(
        "[fw] lorkd-firmware {} on {} (CPUID part {:#x})",
        lorkd_firmware::app::VERSION,
        core,
        part
    );
    let mut t = Tally {
        passed: 0,
        failed: 0,
    };
    let mut buf = [0u8; 64];
    let cmdline = cmdline(&mut buf);
    // Without `arg=`, QEMU passes the kernel's file name (when it fits the buffer): words
    // before `bench` are not a command.
    let mut words = cmdline
        .split_ascii_whitespace()
        .skip_while(|w| *w != "bench");
    match (
        words.next(),
        words.next(),
        words.next().and_then(|n| n.parse().ok()),
    ) {
        (Some("bench"), Some(what), Some(n)) => bench::run(&mut t, what, n),
        (None, ..) => {
            checks::framing(&mut t);
            checks::quant(&mut t);
            checks::device(&mut t);
            kernel_checks::run(&mut t);
        }
        _ => t.check(
            "command line: none, or `bench WHAT N` (see bench.rs)",
            false,
        ),
    }
    hprintln!("[fw] result: {} passed, {} failed", t.passed, t.failed);
    debug::exit(if t.failed == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The command line QEMU passes (semihosting SYS_GET_CMDLINE: the `arg=` words, else the
/// kernel's file name and `-append`); empty if none or longer than `buf`.
fn cmdline(buf: &mut [u8; 64]) -> &str {
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: SYS_GET_CMDLINE writes at most block[1] bytes to block[0] (our buffer, alive and
    // exclusively borrowed here) and stores the length written in block[1].
    let rc = unsafe {
        cortex_m_semihosting::syscall1(
            cortex_m_semihosting::nr::GET_CMDLINE,
            block.as_mut_ptr() as usize,
        )
    };
    let n = if rc == 0 { block[1].min(buf.len()) } else { 0 };
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("[fw] PANIC {}", info);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
