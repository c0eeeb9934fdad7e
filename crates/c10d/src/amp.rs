//! Mixed precision: libtorch's autocast to bfloat16 for the lifetime of a guard. tch can switch
//! CUDA autocast on but not choose its dtype (float16 by default); the shim sets bfloat16, whose
//! range needs no loss scaling. Which operations run in bfloat16 (matrix products) and which stay
//! in float32 (softmax, log-softmax, losses, norms) is libtorch's autocast policy.

use std::ffi::c_int;
use std::marker::PhantomData;

use tch::Device;

use crate::ffi;

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
    /// Enters bfloat16 autocast for the device type of `device` (CPU or CUDA).
    pub fn enter(device: Device) -> Self {
        let cuda = c_int::from(device.is_cuda());
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: plain calls into libtorch's thread-local autocast state with valid pointers.
        #[allow(unsafe_code)]
        unsafe {
            ffi::gear_autocast_enter_bf16(cuda, &mut prev_enabled, &mut prev_dtype);
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
            ffi::gear_autocast_exit(self.cuda, self.prev_enabled, self.prev_dtype);
        }
    }
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
            let _outer = Bf16Autocast::enter(Device::Cpu);
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            {
                let _inner = Bf16Autocast::enter(Device::Cpu);
                assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            }
            // Leaving the inner guard keeps the outer one in force.
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }
}
