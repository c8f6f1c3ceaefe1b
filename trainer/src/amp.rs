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
use tch::{Device, Tensor};

/// `--amp` on the command line.
///
/// The default is the format measured fastest for `lorkd-train`'s own step on the H200
/// (docs/training.md): f32 (40.0 ms) beat bf16 autocast alone (47.6 ms). PyTorch on the same
/// GPU wins only with bf16 AND channels_last together (`bf16-cl`); `trainer/gpu-check.sh`
/// times all three so the default can follow the measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Amp {
    /// bf16 autocast on CUDA (ignored on the CPU).
    Bf16,
    /// bf16 autocast and channels_last activations and weights on CUDA (ignored on the CPU).
    Bf16Cl,
    /// f32 everywhere, NCHW (default).
    #[default]
    Off,
}

impl Amp {
    /// Whether autocast is used on `device` (CUDA and a bf16 format only).
    pub fn enabled(self, device: Device) -> bool {
        matches!(self, Amp::Bf16 | Amp::Bf16Cl) && device.is_cuda()
    }

    /// Whether activations and conv weights are kept channels_last on `device` (CUDA only).
    pub fn channels_last(self, device: Device) -> bool {
        self == Amp::Bf16Cl && device.is_cuda()
    }
}

/// `t` (4-D) with NHWC strides and the same NCHW shape: libtorch's channels_last layout,
/// which cuDNN's fast NHWC kernels need (tch 0.24 has no memory-format argument; a permuted
/// contiguous copy is exactly what `.contiguous(memory_format=channels_last)` makes).
pub fn to_channels_last(t: &Tensor) -> Tensor {
    if t.dim() != 4 {
        return t.shallow_clone();
    }
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Every 4-D variable of `vs` (conv weights) re-laid channels_last in place.
pub fn var_store_channels_last(vs: &tch::nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                let cl = to_channels_last(&v);
                v.set_data(&cl);
            }
        }
    });
}

extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut std::ffi::c_void;
    #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
    fn at_context_set_allow_tf32_cudnn(ctx: *mut std::ffi::c_void, allow: bool);
    #[link_name = "_ZN2at7Context18setAllowTF32CuBLASEb"]
    fn at_context_set_allow_tf32_cublas(ctx: *mut std::ffi::c_void, allow: bool);
    #[link_name = "_ZNK2at7Context15allowTF32CuBLASEv"]
    fn at_context_allow_tf32_cublas(ctx: *const std::ffi::c_void) -> bool;
}

/// Allows or forbids TF32 (10-bit mantissa) in cuDNN convolutions and cuBLAS matmuls,
/// process-wide: `at::globalContext().setAllowTF32CuDNN/CuBLAS`. libtorch allows it for
/// cuDNN by default, which is why f32 equivalence tests on CUDA need it off.
pub fn set_tf32(allow: bool) {
    // SAFETY: `at::globalContext()` returns a reference to libtorch's static Context (never
    // null, lives for the process); the setters are non-virtual member functions taking
    // `this` then a bool, which is the C calling convention on the Itanium C++ ABI that
    // libtorch's Linux builds use. Symbols checked against libtorch_cpu.so 2.11.
    unsafe {
        let ctx = at_global_context();
        at_context_set_allow_tf32_cudnn(ctx, allow);
        at_context_set_allow_tf32_cublas(ctx, allow);
    }
}

/// Turns on cuDNN's autotuner (`cudnn.benchmark`) on CUDA unless `LORKD_CUDNN_BENCHMARK=0`:
/// each new conv shape is timed once over the available algorithms. On by default, unlike
/// PyTorch, because training shapes are fixed and the measurement says so: on an H200 it cut
/// the EKS grouped conv's step 364 → 96 ms and `auto` 52.8 → 51.2 ms (BENCHMARKS.md, "Trainer
/// on the GPU").
pub fn cudnn_benchmark_from_env(device: Device) {
    if device.is_cuda() {
        let off = std::env::var("LORKD_CUDNN_BENCHMARK").is_ok_and(|v| v == "0");
        tch::Cuda::cudnn_set_benchmark(!off);
    }
}

/// Whether cuBLAS may use TF32 (libtorch's flag; set by [`set_tf32`]).
pub fn tf32_cublas() -> bool {
    // SAFETY: as in [`set_tf32`]; a const getter.
    unsafe { at_context_allow_tf32_cublas(at_global_context()) }
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
        assert!(Amp::Bf16Cl.enabled(Device::Cuda(0)) && Amp::Bf16Cl.channels_last(Device::Cuda(0)));
        assert!(
            !Amp::Bf16Cl.channels_last(Device::Cpu) && !Amp::Bf16.channels_last(Device::Cuda(0))
        );
        assert_eq!(run(false, || 3), 3);
    }

    #[test]
    fn tf32_flag_round_trips() {
        let before = tf32_cublas();
        set_tf32(false);
        assert!(!tf32_cublas());
        set_tf32(true);
        assert!(tf32_cublas());
        set_tf32(before);
    }

    #[test]
    fn channels_last_keeps_values_and_shape_with_nhwc_strides() {
        let x = Tensor::randn([2, 3, 4, 5], (tch::Kind::Float, Device::Cpu));
        let y = to_channels_last(&x);
        assert_eq!(y.size(), x.size());
        assert!(y.equal(&x));
        assert_eq!(y.stride(), [60, 1, 15, 3]);
    }
}
