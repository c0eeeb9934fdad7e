//! Data-parallel collectives for GeAR-rs training, on libtorch's own distributed engine (c10d).
//!
//! A [`ProcessGroup`] is a `TCPStore` rendezvous served by rank 0 plus a c10d backend:
//! `ProcessGroupGloo` for CPU tensors, `ProcessGroupNCCL` for CUDA tensors (when this crate was
//! built against a CUDA libtorch with the NCCL headers at hand, see [`nccl_available`]). The C++
//! side is a shim of a few functions (`shim/c10d_shim.cpp`); every collective is libtorch's.
//!
//! On top of the raw collectives the crate gives what a data-parallel trainer needs:
//! [`GradientBuckets`] (average gradients in a few flattened all-reduces), [`broadcast_tensors`]
//! (start every rank from rank 0's parameters) and [`all_gather_rows`] (the global batch of
//! embeddings, ranks holding different numbers of rows).
//!
//! The environment follows torch.distributed's launchers ([`DistEnv::from_env`]): `RANK`,
//! `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, `LOCAL_RANK`.
//!
//! ```no_run
//! # fn main() -> Result<(), gear_c10d::Error> {
//! use gear_c10d::{Backend, DistEnv, ProcessGroup};
//! if let Some(env) = DistEnv::from_env()? {
//!     let group = ProcessGroup::new(&env, Backend::Gloo, std::time::Duration::from_secs(60))?;
//!     let t = tch::Tensor::from_slice(&[env.rank as f32]);
//!     group.all_reduce_sum(&t)?; // every rank now holds 0 + 1 + … + (world − 1)
//! }
//! # Ok(()) }
//! ```

mod ffi;

mod buckets;
mod env;
mod gather;
mod group;

pub use buckets::{broadcast_tensors, GradientBuckets};
pub use env::DistEnv;
pub use gather::{all_gather_counted, all_gather_rows, row_counts};
pub use group::{nccl_available, Backend, ProcessGroup};

/// Errors of the distributed layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A launcher variable is missing or malformed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Rendezvous or backend creation failed (a peer that never showed up lands here after the
    /// timeout).
    #[error("joining the process group (rank {rank} of {world_size}, {backend} via {master}) failed: {message}")]
    Init {
        /// This process's rank.
        rank: usize,
        /// Number of processes.
        world_size: usize,
        /// Backend name.
        backend: &'static str,
        /// `addr:port` of the rendezvous.
        master: String,
        /// libtorch's message.
        message: String,
    },
    /// A collective failed: a peer died, timed out or disagreed.
    #[error("{op} failed on rank {rank} (a peer process may have exited or stalled): {message}")]
    Collective {
        /// The collective.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// libtorch's message.
        message: String,
    },
    /// The call is not possible with this build or these arguments.
    #[error("{0}")]
    Unsupported(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
