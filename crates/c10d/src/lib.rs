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
//! The crate also holds the trainer's other binding to libtorch's C++ API, [`Bf16Autocast`]
//! (bfloat16 mixed precision), since it compiles against the same headers.
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

mod amp;
mod ffi;

pub use amp::Bf16Autocast;

use std::ffi::CString;
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

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

/// One process's place in the job, as torch.distributed's launchers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes over all machines.
    pub world_size: usize,
    /// Rank on this machine (selects the GPU).
    pub local_rank: usize,
    /// Address of rank 0's rendezvous store.
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
}

impl DistEnv {
    /// Reads `RANK`, `WORLD_SIZE`, `MASTER_ADDR` (default `127.0.0.1`), `MASTER_PORT` (default
    /// 29500) and `LOCAL_RANK` (default `RANK`). `None` when `WORLD_SIZE` is unset: a
    /// single-process run that needs no process group.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`DistEnv::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        fn parse<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T> {
            v.trim().parse().map_err(|_| Error::Env {
                var,
                message: format!("`{v}` is not a valid number"),
            })
        }
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let world_size: usize = parse("WORLD_SIZE", &world)?;
        if world_size == 0 {
            return Err(Error::Env {
                var: "WORLD_SIZE",
                message: "must be at least 1".into(),
            });
        }
        let rank: usize = match get("RANK") {
            Some(v) => parse("RANK", &v)?,
            None => {
                return Err(Error::Env {
                    var: "RANK",
                    message: "unset while WORLD_SIZE is set".into(),
                })
            }
        };
        if rank >= world_size {
            return Err(Error::Env {
                var: "RANK",
                message: format!("{rank} is not below WORLD_SIZE {world_size}"),
            });
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v)?,
            None => rank,
        };
        let master_port = match get("MASTER_PORT") {
            Some(v) => parse("MASTER_PORT", &v)?,
            None => 29500,
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
        }))
    }
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
    /// same shape; see [`all_gather_rows`] for differing row counts.
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

/// Every rank's row count (`rows` here), in rank order: one small all-gather.
pub fn row_counts(group: &ProcessGroup, rows: i64, device: Device) -> Result<Vec<i64>> {
    let counts = group.all_gather(&Tensor::from_slice(&[rows]).to_device(device))?;
    Vec::<i64>::try_from(counts.to_device(Device::Cpu))
        .map_err(|e| Error::Unsupported(format!("row counts: {e}")))
}

/// Concatenates every rank's rows of `t` (`[n_r, …]`, `n_r` may differ between ranks) in rank
/// order. Returns the gathered tensor (no gradient) and each rank's row count.
pub fn all_gather_rows(group: &ProcessGroup, t: &Tensor) -> Result<(Tensor, Vec<i64>)> {
    let rows = t.size().first().copied().unwrap_or(1);
    let counts = row_counts(group, rows, t.device())?;
    let all = all_gather_counted(group, t, &counts)?;
    Ok((all, counts))
}

/// As [`all_gather_rows`] when the row counts are already known (from [`row_counts`]): several
/// tensors with the same rows per rank need one count exchange, not one each.
pub fn all_gather_counted(group: &ProcessGroup, t: &Tensor, counts: &[i64]) -> Result<Tensor> {
    let t = t.detach().contiguous();
    let rows = t.size().first().copied().unwrap_or(1);
    if counts.len() != group.world_size() || counts.get(group.rank()) != Some(&rows) {
        return Err(Error::Unsupported(format!(
            "all_gather_counted: counts {counts:?} do not give rank {} its {rows} rows",
            group.rank()
        )));
    }
    let max = counts.iter().copied().max().unwrap_or(0);
    let padded = if rows < max {
        let mut shape = t.size();
        shape[0] = max - rows;
        Tensor::cat(
            &[&t, &Tensor::zeros(shape.as_slice(), (t.kind(), t.device()))],
            0,
        )
    } else {
        t
    };
    let all = group.all_gather(&padded)?;
    let parts: Vec<Tensor> = counts
        .iter()
        .enumerate()
        .map(|(r, &n)| all.narrow(0, r as i64 * max, n))
        .collect();
    Ok(Tensor::cat(&parts, 0))
}

/// Overwrites `tensors` on every rank with rank `root`'s values, flattened into buckets of at
/// most `bucket_bytes` (one broadcast per bucket). Returns the number of broadcasts.
pub fn broadcast_tensors(
    group: &ProcessGroup,
    tensors: &[Tensor],
    root: usize,
    bucket_bytes: usize,
) -> Result<usize> {
    let buckets = plan_buckets(tensors, bucket_bytes);
    for bucket in &buckets {
        let members: Vec<&Tensor> = bucket.iter().map(|&i| &tensors[i]).collect();
        let flat = flatten(&members);
        group.broadcast(&flat, root)?;
        unflatten_into(&flat, &members);
    }
    Ok(buckets.len())
}

/// Averages gradients over ranks in a few large all-reduces: the parameters are grouped once
/// into buckets (same kind and device, at most `bucket_bytes` each); a step flattens each
/// bucket's gradients into one buffer, sums it over ranks, divides by the world size and copies
/// the result back.
#[derive(Debug, Clone)]
pub struct GradientBuckets {
    buckets: Vec<Vec<usize>>,
}

impl GradientBuckets {
    /// 25 MiB, torch DDP's default bucket cap.
    pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

    /// Buckets for `params`, in order.
    pub fn new(params: &[Tensor], bucket_bytes: usize) -> Self {
        Self {
            buckets: plan_buckets(params, bucket_bytes),
        }
    }

    /// Number of buckets (= all-reduces per step).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether there are no buckets.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Replaces every parameter's gradient with its average over ranks. Every rank must have
    /// the same parameters with a defined gradient (a parameter without one on every rank is
    /// skipped; on some ranks only, the ranks would disagree and this fails).
    pub fn all_reduce_mean(&self, group: &ProcessGroup, params: &[Tensor]) -> Result<usize> {
        let world = group.world_size() as f64;
        let mut calls = 0;
        for bucket in &self.buckets {
            let grads: Vec<Tensor> = bucket
                .iter()
                .map(|&i| params[i].grad())
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                continue;
            }
            let members: Vec<&Tensor> = grads.iter().collect();
            let flat = flatten(&members);
            group.all_reduce_sum(&flat)?;
            let flat = flat / world;
            unflatten_into(&flat, &members);
            calls += 1;
        }
        Ok(calls)
    }
}

/// Groups tensor indices into buckets of one kind and device, each at most `cap` bytes (a
/// larger tensor gets a bucket of its own).
fn plan_buckets(tensors: &[Tensor], cap: usize) -> Vec<Vec<usize>> {
    let mut buckets: Vec<(Kind, Device, usize, Vec<usize>)> = Vec::new();
    let mut done: Vec<Vec<usize>> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        let slot = buckets
            .iter()
            .position(|(k, d, _, _)| *k == t.kind() && *d == t.device());
        match slot {
            Some(s) if buckets[s].2 + bytes <= cap => {
                buckets[s].2 += bytes;
                buckets[s].3.push(i);
            }
            Some(s) => {
                let full =
                    std::mem::replace(&mut buckets[s], (t.kind(), t.device(), bytes, vec![i]));
                done.push(full.3);
            }
            None => buckets.push((t.kind(), t.device(), bytes, vec![i])),
        }
    }
    done.extend(buckets.into_iter().map(|b| b.3));
    done.retain(|b| !b.is_empty());
    done
}

fn flatten(tensors: &[&Tensor]) -> Tensor {
    tch::no_grad(|| {
        let flat: Vec<Tensor> = tensors.iter().map(|t| t.detach().reshape([-1])).collect();
        Tensor::cat(&flat, 0).contiguous()
    })
}

fn unflatten_into(flat: &Tensor, tensors: &[&Tensor]) {
    tch::no_grad(|| {
        let mut offset = 0i64;
        for t in tensors {
            let n = t.numel() as i64;
            let mut target = t.detach();
            target.copy_(&flat.narrow(0, offset, n).view_as(t));
            offset += n;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_without_world_size_is_single_process() {
        assert_eq!(DistEnv::from_lookup(vars(&[("RANK", "0")])).unwrap(), None);
    }

    #[test]
    fn env_reads_the_launcher_variables() {
        let env = DistEnv::from_lookup(vars(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            env,
            DistEnv {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                master_addr: "node0".into(),
                master_port: 1234
            }
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = DistEnv::from_lookup(vars(&[("WORLD_SIZE", "2"), ("RANK", "2")])).unwrap_err();
        assert!(
            e.to_string().contains("RANK") && e.to_string().contains("not below"),
            "{e}"
        );
        let e = DistEnv::from_lookup(vars(&[("WORLD_SIZE", "two"), ("RANK", "0")])).unwrap_err();
        assert!(e.to_string().contains("WORLD_SIZE"), "{e}");
        let e = DistEnv::from_lookup(vars(&[("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.to_string().contains("RANK"), "{e}");
        let e = DistEnv::from_lookup(vars(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_PORT", "99999"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("MASTER_PORT"), "{e}");
    }

    #[test]
    fn buckets_respect_the_cap_and_kinds() {
        let ts = vec![
            Tensor::zeros([10], (Kind::Float, Device::Cpu)), // 40 B
            Tensor::zeros([10], (Kind::Float, Device::Cpu)), // 40 B
            Tensor::zeros([4], (Kind::Int64, Device::Cpu)),  // 32 B, own kind
            Tensor::zeros([30], (Kind::Float, Device::Cpu)), // 120 B, over the cap alone
            Tensor::zeros([5], (Kind::Float, Device::Cpu)),  // 20 B
        ];
        assert_eq!(
            plan_buckets(&ts, 100),
            vec![vec![0, 1], vec![3], vec![4], vec![2]]
        );
        assert_eq!(plan_buckets(&ts, 1 << 20), vec![vec![0, 1, 3, 4], vec![2]]);
    }

    #[test]
    fn flatten_round_trips() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[5.0f32]);
        let flat = flatten(&[&a, &b]);
        assert_eq!(
            Vec::<f32>::try_from(&flat).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let doubled = &flat * 2.0;
        unflatten_into(&doubled, &[&a, &b]);
        assert_eq!(
            Vec::<f32>::try_from(a.reshape([-1])).unwrap(),
            vec![2.0, 4.0, 6.0, 8.0]
        );
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![10.0]);
    }
}

/// The README's examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
