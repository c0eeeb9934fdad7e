//! A PostgreSQL server of our own for tests: PostgreSQL 16 with pgvector from the `pgserver`
//! wheel (installed into the test venv by `cargo xtask test`), started on a free loopback port
//! as an unprivileged user (PostgreSQL refuses root), stopped when dropped. Without the wheel it
//! fails with the reason; it never passes silently. Shared by `gear-store`'s and `gear-cli`'s
//! tests.

#![allow(clippy::unwrap_used, dead_code)] // tests fail loudly; not every binary uses every helper

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL server of our own on a free loopback port; stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    user: Option<(u32, u32)>,
}

/// The pgserver wheel's PostgreSQL binaries, copied where an unprivileged user can run them
/// (the venv may sit under a home folder only its owner can enter).
fn pg_binaries(into: &Path) -> PathBuf {
    let home = std::env::var_os("GEAR_HOME").expect("GEAR_HOME: run through cargo xtask test");
    let python = PathBuf::from(home).join("venv/bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, pgserver; print(os.path.dirname(pgserver.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "the pgserver wheel (PostgreSQL + pgvector) is not in the test venv — `cargo xtask test` \
         installs it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The binaries find their libraries at `$ORIGIN/../../../pgserver.libs`: copy both
    // folders, side by side as in site-packages.
    let package = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let libs = package.with_file_name("pgserver.libs");
    std::fs::create_dir_all(into.join("pgserver")).unwrap();
    for (from, to) in [
        (package.join("pginstall"), into.join("pgserver")),
        (libs, into.to_path_buf()),
    ] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success(), "copying {}", from.display());
    }
    into.join("pgserver/pginstall")
}

/// Runs `cmd` as `user` (when given); panics with its output when it fails.
fn run_as(user: Option<(u32, u32)>, cmd: &mut Command) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port no one listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The uid and gid of an unprivileged user to run PostgreSQL as, when this test runs as root
/// (created if missing); `None` when it does not.
fn unprivileged() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    if id(&["-u", "gearpg"]).is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "gearpg",
            ])
            .status()
            .expect("useradd: PostgreSQL refuses to run as root and needs a user of its own");
        assert!(status.success(), "useradd gearpg failed");
    }
    Some((id(&["-u", "gearpg"])?, id(&["-g", "gearpg"])?))
}

impl Postgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = pg_binaries(dir.path()).join("bin");
        let data = dir.path().join("data");
        let user = unprivileged();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        run_as(
            user,
            Command::new(bin.join("initdb"))
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
                .arg(&data),
        );
        let port = free_port();
        let pg = Self {
            dir,
            bin,
            data,
            port,
            user,
        };
        pg.up();
        pg
    }

    /// `pg_ctl` with `args`, as the server's user; panics with its output when it fails.
    fn pg_ctl(&self, args: &[&str]) {
        run_as(
            self.user,
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(args),
        );
    }

    /// A hot standby of `primary`: a base backup streamed from it (`pg_basebackup -R`, which
    /// also writes how to follow it), started on a port of its own; it replays what the
    /// primary writes and refuses writes itself.
    pub fn standby_of(primary: &Postgres) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = pg_binaries(dir.path()).join("bin");
        let data = dir.path().join("data");
        let user = primary.user;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        run_as(
            user,
            Command::new(bin.join("pg_basebackup"))
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                .args(["-U", "postgres", "-R", "-X", "stream", "-D"])
                .arg(&data),
        );
        let standby = Self {
            dir,
            bin,
            data,
            port: free_port(),
            user,
        };
        standby.up();
        standby
    }

    /// Starts the server on its port (again, after [`Postgres::down`]).
    pub fn up(&self) {
        let dir = self.dir.path();
        let options = format!("-p {} -h 127.0.0.1 -k {}", self.port, dir.display());
        let log = dir.join("log").display().to_string();
        self.pg_ctl(&["-o", &options, "-l", &log, "-w", "start"]);
    }

    /// Stops the server (fast shutdown: sessions are ended).
    pub fn down(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// The URL, with a password the server does not need: messages must never show it.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:s3cret@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"]);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.output();
    }
}
