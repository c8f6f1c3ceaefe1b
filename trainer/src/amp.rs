//! Mixed precision on CUDA: forward passes under libtorch's autocast in bf16 (`--amp bf16`,
//! the default when CUDA is present); the loss (`department_ce`, `distillation` cast logits to
//! f32), the backward pass's accumulation into f32 parameters and the SGD update stay f32.
//! bf16 keeps f32's exponent range, so no gradient scaler is needed (fp16 would need one).
//!
//! tch 0.24 exposes `tch::autocast` but not the autocast dtype, whose CUDA default is fp16;
//! [`set_cuda_bf16`] sets it through libtorch's exported C++ function
//! `at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)` (both enums are
//! `int8_t`; the symbol is in `libtorch_cpu.so` 2.11, which tch links). On the CPU nothing is
//! entered: `tch::autocast` runs the closure unchanged when CUDA is unavailable, and the
//! callers do not even call it unless [`Amp::enabled`].
//!
//! UNTESTED ON A GPU: no GPU was available when this was written. The CPU tests check the
//! FFI call round-trips the dtype and that CPU training is unchanged.
use serde::{Deserialize, Serialize};
use tch::Device;

/// `--amp` on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Amp {
    /// bf16 autocast on CUDA (default; ignored on the CPU).
    #[default]
    Bf16,
    /// f32 everywhere.
    Off,
}

impl Amp {
    /// Whether autocast is used on `device` (CUDA and bf16 only).
    pub fn enabled(self, device: Device) -> bool {
        self == Amp::Bf16 && device.is_cuda()
    }
}

const DEVICE_CUDA: i8 = 1; // c10::DeviceType::CUDA
/// c10::ScalarType::BFloat16.
pub const SCALAR_BF16: i8 = 15;

extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_autocast_set_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_autocast_get_dtype(device: i8) -> i8;
}

/// The autocast dtype libtorch uses on CUDA (a `c10::ScalarType` code; 5 = fp16, 15 = bf16).
pub fn cuda_autocast_dtype() -> i8 {
    // SAFETY: plain getter of a global, takes and returns int8_t-sized enums.
    unsafe { at_autocast_get_dtype(DEVICE_CUDA) }
}

/// Makes CUDA autocast use bf16 (process-wide; idempotent).
pub fn set_cuda_bf16() {
    // SAFETY: plain setter of a global (thread-local in libtorch), int8_t-sized enums.
    unsafe { at_autocast_set_dtype(DEVICE_CUDA, SCALAR_BF16) }
}

/// Runs `f` under bf16 autocast when `enabled`, else just runs it.
pub fn run<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    if enabled {
        set_cuda_bf16();
        tch::autocast(true, f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_dtype_round_trips_and_cpu_is_untouched() {
        set_cuda_bf16();
        assert_eq!(cuda_autocast_dtype(), SCALAR_BF16);
        assert!(!Amp::Bf16.enabled(Device::Cpu));
        assert!(!Amp::Off.enabled(Device::Cuda(0)));
        assert!(Amp::Bf16.enabled(Device::Cuda(0)));
        assert_eq!(run(false, || 3), 3);
    }
}
