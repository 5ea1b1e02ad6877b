//! Helpers shared by the integration tests. Each test file declares
//! `mod common;` and uses the submodules it needs:
//! - [`setup`]: library-level store setup (a fixed clock, a store with a
//!   booted run, plain git for hand commits, reading and editing files);
//! - [`cli`]: the hermetic CLI harness (a temporary HOME and store, the
//!   cairn binary with a cleared environment and a fixed clock);
//! - [`workers`]: the multi-process helpers (worker processes re-running
//!   the test binary, acks, ledger and fsck checks).

// Each test binary uses a subset of the helpers.
#![allow(dead_code)]

pub mod cli;
pub mod net;
pub mod setup;
pub mod workers;

use std::path::Path;
use std::process::Command;

/// Clears a child's environment and sets only PATH, `HOME` and no global
/// or system git config.
pub fn hermetic<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
}
