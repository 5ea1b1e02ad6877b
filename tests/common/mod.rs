//! Helpers shared by the integration tests. Each test file declares
//! `mod common;` and uses the submodules it needs:
//! - [`cli`]: the hermetic CLI harness (a temporary HOME and store, the
//!   cairn binary with a cleared environment and a fixed clock);
//! - [`workers`]: the multi-process helpers (worker processes re-running
//!   the test binary, acks, ledger and fsck checks).

// Each test binary uses a subset of the helpers.
#![allow(dead_code)]

pub mod cli;
pub mod workers;
