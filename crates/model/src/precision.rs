//! Arithmetic precision: float32, or bfloat16 through libtorch's autocast (matrix products in
//! bfloat16; weights, reductions, softmax with a float32 result, losses and the residual stream
//! in float32 — libtorch's autocast policy decides per operation).
//!
//! On a CPU, bfloat16 pays only where the processor has bfloat16 instructions (AVX-512 BF16 or
//! AMX-BF16). Elsewhere libtorch emulates them: on an AVX2 processor (AMD EPYC, 2 threads,
//! torch 2.11) all-MiniLM-L6-v2's 384→1536 linear layer ran at 14.9 GFLOP/s under bfloat16
//! autocast against 116.6 in float32 (7.8× slower), a 1024² product of bfloat16 matrices at
//! 0.83 GFLOP/s against 115.5 (140×).
//! [`Precision::check`] therefore refuses bfloat16 on such a CPU with a message that says why,
//! and [`Precision::enter`] warns when it is used there anyway (a library caller's choice).
//! [`Bf16Support::detect`] reads the processor as libtorch reads it (cpuinfo).

use std::ffi::{c_char, c_int};
use std::marker::PhantomData;
use std::sync::OnceLock;

use tch::Device;

use crate::{Error, Result};

/// The arithmetic of a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Float32 throughout.
    #[default]
    Fp32,
    /// bfloat16 autocast: matrix products in bfloat16, the rest as libtorch's autocast keeps it.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        })
    }
}

/// What the CPU offers for bfloat16, as libtorch reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bf16Support {
    /// AVX-512 BF16 (`vdpbf16ps`).
    pub avx512_bf16: bool,
    /// AMX-BF16 tiles, with the kernel's permission to use them.
    pub amx_bf16: bool,
    /// The processor's name.
    pub cpu: String,
}

impl Bf16Support {
    /// This machine's processor (read once per process).
    pub fn detect() -> &'static Self {
        static SUPPORT: OnceLock<Bf16Support> = OnceLock::new();
        SUPPORT.get_or_init(|| {
            let (mut avx512, mut amx) = (0, 0);
            let mut name = [0 as c_char; 128];
            // SAFETY: the shim writes two ints and at most `name.len()` bytes, NUL-terminated.
            #[allow(unsafe_code)]
            unsafe {
                gear_cpu_bf16(&mut avx512, &mut amx, name.as_mut_ptr(), name.len());
            }
            let bytes: Vec<u8> = name
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            Self {
                avx512_bf16: avx512 != 0,
                amx_bf16: amx != 0,
                cpu: String::from_utf8_lossy(&bytes).trim().to_owned(),
            }
        })
    }

    /// Whether bfloat16 products run on bfloat16 instructions rather than in emulation.
    pub fn native(&self) -> bool {
        self.avx512_bf16 || self.amx_bf16
    }

    /// `AMX-BF16 and AVX-512 BF16`, `AVX-512 BF16`, … or `no AVX-512 BF16 or AMX-BF16`.
    pub fn features(&self) -> String {
        match (self.amx_bf16, self.avx512_bf16) {
            (true, true) => "AMX-BF16 and AVX-512 BF16".into(),
            (true, false) => "AMX-BF16".into(),
            (false, true) => "AVX-512 BF16".into(),
            (false, false) => "no AVX-512 BF16 or AMX-BF16".into(),
        }
    }

    fn cpu_name(&self) -> &str {
        if self.cpu.is_empty() {
            "this CPU"
        } else {
            &self.cpu
        }
    }
}

impl Precision {
    /// Refuses bfloat16 on a CPU without bfloat16 instructions (it would run many times slower
    /// than float32, never faster). CUDA devices and float32 always pass.
    pub fn check(self, device: Device) -> Result<()> {
        self.check_with(device, Bf16Support::detect())
    }

    /// [`Precision::check`] against a given processor description.
    pub fn check_with(self, device: Device, support: &Bf16Support) -> Result<()> {
        if self == Self::Fp32 || device.is_cuda() || support.native() {
            return Ok(());
        }
        Err(Error::Precision(format!(
            "the CPU ({}) has {}, so libtorch would emulate bfloat16 products, several times \
             slower than float32 (7.8× for all-MiniLM-L6-v2's linear layers on an AVX2 EPYC); use \
             --precision fp32 (the default)",
            support.cpu_name(),
            support.features()
        )))
    }

    /// One line for the log: which arithmetic runs, and on what.
    pub fn describe(self, device: Device) -> String {
        match (self, device.is_cuda()) {
            (Self::Fp32, _) => "fp32".into(),
            (Self::Bf16, true) => "bf16 autocast on CUDA".into(),
            (Self::Bf16, false) => {
                let s = Bf16Support::detect();
                format!("bf16 autocast on {} ({})", s.cpu_name(), s.features())
            }
        }
    }

    /// Enters this precision for `device` on the current thread until the guard drops: nothing
    /// for float32, bfloat16 autocast otherwise (with a warning on a CPU that emulates it).
    pub fn enter(self, device: Device) -> PrecisionGuard {
        match self {
            Self::Fp32 => PrecisionGuard(None),
            Self::Bf16 => {
                if let Err(e) = self.check(device) {
                    warn_once(&e);
                }
                PrecisionGuard(Some(Bf16Autocast::enter(device)))
            }
        }
    }
}

fn warn_once(e: &Error) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| tracing::warn!("{e}"));
}

/// The precision entered by [`Precision::enter`]; dropping it restores the previous state.
#[derive(Debug)]
pub struct PrecisionGuard(#[allow(dead_code)] Option<Bf16Autocast>); // held for its Drop

/// While alive, operations on `device`'s type run under bfloat16 autocast on this thread;
/// dropping it restores the previous autocast state. Not `Send`: autocast state is per thread.
#[derive(Debug)]
pub struct Bf16Autocast {
    cuda: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
    _per_thread: PhantomData<*const ()>,
}

impl Bf16Autocast {
    /// Enters bfloat16 autocast for the device type of `device` (CPU or CUDA), whatever the
    /// processor ([`Precision::enter`] checks it first).
    pub fn enter(device: Device) -> Self {
        let cuda = c_int::from(device.is_cuda());
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: plain calls into libtorch's thread-local autocast state with valid pointers.
        #[allow(unsafe_code)]
        unsafe {
            gear_autocast_enter_bf16(cuda, &mut prev_enabled, &mut prev_dtype);
        }
        Self {
            cuda,
            prev_enabled,
            prev_dtype,
            _per_thread: PhantomData,
        }
    }
}

impl Drop for Bf16Autocast {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` read, on the same thread (the guard is not Send).
        #[allow(unsafe_code)]
        unsafe {
            gear_autocast_exit(self.cuda, self.prev_enabled, self.prev_dtype);
        }
    }
}

#[allow(unsafe_code)]
extern "C" {
    fn gear_autocast_enter_bf16(cuda: c_int, prev_enabled: *mut c_int, prev_dtype: *mut c_int);
    fn gear_autocast_exit(cuda: c_int, prev_enabled: c_int, prev_dtype: c_int);
    fn gear_cpu_bf16(avx512_bf16: *mut c_int, amx_bf16: *mut c_int, name: *mut c_char, len: usize);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn matrix_products_run_in_bf16_inside_the_guard_only() {
        let a = Tensor::ones([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([8, 2], (Kind::Float, Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        {
            let _outer = Precision::Bf16.enter(Device::Cpu);
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            {
                let _inner = Bf16Autocast::enter(Device::Cpu);
                assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            }
            // Leaving the inner guard keeps the outer one in force.
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            let _fp32 = Precision::Fp32.enter(Device::Cpu);
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16, "fp32 enters nothing");
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }

    #[test]
    fn a_cpu_without_bf16_instructions_is_refused_by_name() {
        let amd = Bf16Support {
            avx512_bf16: false,
            amx_bf16: false,
            cpu: "AMD EPYC".into(),
        };
        let e = Precision::Bf16
            .check_with(Device::Cpu, &amd)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AMD EPYC") && e.contains("no AVX-512 BF16 or AMX-BF16"),
            "{e}"
        );
        assert!(e.contains("--precision fp32"), "{e}");
        assert!(Precision::Fp32.check_with(Device::Cpu, &amd).is_ok());
        let xeon = Bf16Support {
            avx512_bf16: true,
            amx_bf16: true,
            cpu: "Intel Xeon".into(),
        };
        assert!(Precision::Bf16.check_with(Device::Cpu, &xeon).is_ok());
        assert!(Precision::Bf16.check_with(Device::Cuda(0), &amd).is_ok());
        assert_eq!(xeon.features(), "AMX-BF16 and AVX-512 BF16");
    }

    #[test]
    fn detection_agrees_with_the_kernel_s_cpu_flags() {
        // /proc/cpuinfo lists what the kernel enabled; libtorch (cpuinfo) must agree.
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return; // not Linux: nothing independent to compare with
        };
        let flags: Vec<&str> = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let s = Bf16Support::detect();
        assert_eq!(s.avx512_bf16, flags.contains(&"avx512_bf16"), "{s:?}");
        assert_eq!(s.amx_bf16, flags.contains(&"amx_bf16"), "{s:?}");
    }
}
