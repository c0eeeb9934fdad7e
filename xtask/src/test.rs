//! `cargo xtask test`: every test of the workspace, with libtorch and the pretrained model set up.

use anyhow::Result;

use crate::cmd::{cargo, status};
use crate::setup;

pub fn run(extra: &[String]) -> Result<()> {
    let env = setup::ensure()?;
    // Unit, integration and doc tests of every crate (xtask included).
    status(cargo(&env).args(["test", "--workspace"]).args(extra))?;
    // Benches once each in test mode, so they cannot rot unnoticed.
    status(
        cargo(&env)
            .args(["test", "--workspace", "--bench", "*"])
            .args(extra),
    )?;
    Ok(())
}
