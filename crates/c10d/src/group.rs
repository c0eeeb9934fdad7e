//! The process group: a `TCPStore` rendezvous and a c10d backend (Gloo or NCCL) behind the C++
//! shim, and the raw collectives on it.

use std::ffi::CString;
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Tensor};

use crate::{ffi, DistEnv, Error, Result};

/// The c10d backend of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors, TCP transport.
    Gloo,
    /// NCCL: CUDA tensors.
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`: NCCL on CUDA, Gloo on CPU.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Self::Nccl
        } else {
            Self::Gloo
        }
    }

    /// `gloo` or `nccl`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gloo => "gloo",
            Self::Nccl => "nccl",
        }
    }
}

/// Whether this build can create NCCL groups (CUDA libtorch and NCCL headers at build time).
pub fn nccl_available() -> bool {
    // SAFETY: a pure function of the build.
    #[allow(unsafe_code)]
    let bits = unsafe { ffi::gear_c10d_backends() };
    bits & 2 != 0
}

/// A c10d process group. Collectives must be called in the same order on every rank.
pub struct ProcessGroup {
    raw: NonNull<ffi::Group>,
    rank: usize,
    world_size: usize,
    backend: Backend,
}

// SAFETY: the group is owned by one Rust value and used through `&self` from one thread at a
// time (it is not Sync); c10d backends may be driven from any thread.
#[allow(unsafe_code)]
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("backend", &self.backend)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the group: rank 0 serves the `TCPStore` at `MASTER_ADDR:MASTER_PORT`, the others
    /// connect; then the backend connects every pair. Fails after `timeout` when a peer never
    /// shows up; the same timeout bounds every later collective.
    pub fn new(env: &DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        let init_err = |message: String| Error::Init {
            rank: env.rank,
            world_size: env.world_size,
            backend: backend.name(),
            master: format!("{}:{}", env.master_addr, env.master_port),
            message,
        };
        if backend == Backend::Nccl && !nccl_available() {
            return Err(init_err(
                "this build has no NCCL backend (built against a CPU libtorch or without the NCCL headers)".into(),
            ));
        }
        let name = CString::new(backend.name()).map_err(|e| init_err(e.to_string()))?;
        let addr = CString::new(env.master_addr.as_str())
            .map_err(|_| init_err("MASTER_ADDR holds a NUL byte".into()))?;
        let mut err = std::ptr::null_mut();
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: the strings outlive the call; `err` receives a malloc'd message on failure.
        #[allow(unsafe_code)]
        let raw = unsafe {
            ffi::gear_c10d_new(
                name.as_ptr(),
                addr.as_ptr(),
                i32::from(env.master_port),
                env.rank as i32,
                env.world_size as i32,
                timeout_ms,
                &mut err,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| init_err(ffi::take_error(err)))?;
        tracing::debug!(
            rank = env.rank,
            world = env.world_size,
            "joined {} group",
            backend.name()
        );
        Ok(Self {
            raw,
            rank: env.rank,
            world_size: env.world_size,
            backend,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn collective_err(&self, op: &'static str) -> impl FnOnce(String) -> Error {
        let rank = self.rank;
        move |message| Error::Collective { op, rank, message }
    }

    fn check_tensor(&self, op: &'static str, t: &Tensor) -> Result<()> {
        if !t.is_contiguous() {
            return Err(Error::Unsupported(format!(
                "{op}: the tensor must be contiguous"
            )));
        }
        let cuda = t.device().is_cuda();
        if cuda != (self.backend == Backend::Nccl) {
            return Err(Error::Unsupported(format!(
                "{op}: a {} tensor cannot go through the {} backend",
                if cuda { "CUDA" } else { "CPU" },
                self.backend.name()
            )));
        }
        Ok(())
    }

    /// Sums `t` over all ranks, in place.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.check_tensor("all_reduce", t)?;
        // SAFETY: `self.raw` is a live group; the tensor handle outlives the call.
        #[allow(unsafe_code)]
        ffi::check(|err| unsafe {
            ffi::gear_c10d_all_reduce_sum(self.raw.as_ptr(), ffi::tensor_ptr(t), err)
        })
        .map_err(self.collective_err("all_reduce"))
    }

    /// Overwrites `t` on every rank with `root`'s `t`.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        self.check_tensor("broadcast", t)?;
        // SAFETY: as in all_reduce_sum.
        #[allow(unsafe_code)]
        ffi::check(|err| unsafe {
            ffi::gear_c10d_broadcast(self.raw.as_ptr(), ffi::tensor_ptr(t), root as i32, err)
        })
        .map_err(self.collective_err("broadcast"))
    }

    /// Concatenates every rank's `t` along dimension 0, in rank order. All ranks must pass the
    /// same shape; see [`all_gather_rows`](crate::all_gather_rows) for differing row counts.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.contiguous();
        self.check_tensor("all_gather", &t)?;
        let mut shape = t.size();
        if shape.is_empty() {
            shape.push(1);
        }
        shape[0] *= self.world_size as i64;
        let out = Tensor::empty(shape.as_slice(), (t.kind(), t.device()));
        // SAFETY: both handles outlive the call; `out` has world × the input's rows.
        #[allow(unsafe_code)]
        ffi::check(|err| unsafe {
            ffi::gear_c10d_all_gather(
                self.raw.as_ptr(),
                ffi::tensor_ptr(&out),
                ffi::tensor_ptr(&t),
                err,
            )
        })
        .map_err(self.collective_err("all_gather"))?;
        Ok(out)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: `self.raw` is a live group.
        #[allow(unsafe_code)]
        ffi::check(|err| unsafe { ffi::gear_c10d_barrier(self.raw.as_ptr(), err) })
            .map_err(self.collective_err("barrier"))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by gear_c10d_new, freed once.
        #[allow(unsafe_code)]
        unsafe {
            ffi::gear_c10d_free(self.raw.as_ptr())
        }
    }
}
