//! Where a process sits in the job: torch.distributed's launcher variables (`RANK`,
//! `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, `LOCAL_RANK`), read and checked.

use crate::{Error, Result};

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
}
