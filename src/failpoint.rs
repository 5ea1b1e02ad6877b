//! The named failpoints of the write path, one for each step that can fail
//! on its own: the pack's write, each fsync and rename, the journal, the ref
//! compare-and-swap, the tags, the work-tree and index writes, the mirror's
//! derivation, the idempotency cache and the search index's commit.
//!
//! They are compiled in only with the `failpoints` feature (the `fail`
//! crate's own switch); without it [`failpoint!`] expands to nothing.
//! Configured to `return`, a failpoint makes its step fail with an I/O error
//! naming it ([`injected`]), as the real step would; `panic` stands for a
//! crash at that point. [`FAILPOINTS`] lists every one; `tests/failpoints.rs`
//! checks the list against the source, so a failpoint added without its
//! entry (and the test that drives it) fails the build's tests.
//!
//! Where a step sits decides what its failure means: before the ref moves
//! (`store::ref_cas` and everything earlier) a failure leaves HEAD, the work
//! tree and the ledger as they were; after it, the write is committed and
//! acknowledged, and the work tree, index and tags are finished by the next
//! write (the journal).

use crate::error::Error;

/// Every failpoint, by name, in the order a write reaches them.
pub const FAILPOINTS: &[&str] = &[
    // Before the branch moves: a failure changes nothing.
    "idempotency::cache_write",
    "mirror::derive",
    "pack::write",
    "pack::fsync_pack",
    "pack::fsync_idx",
    "pack::rename_pack",
    "pack::rename_idx",
    "pack::fsync_dir",
    "store::journal_write",
    "store::before_cas",
    "store::ref_cas",
    // After the branch moved: the write is committed; the journal finishes it.
    "store::after_cas",
    "store::tags",
    "store::worktree_write",
    "fs::atomic_fsync",
    "fs::atomic_rename",
    "store::index_write",
    "git_index::rename",
    "store::consolidate",
    // The search index, derived state, caught up before each query.
    "search::index_commit",
];

/// The error an injected failure returns: an I/O error that names the failpoint.
pub fn injected(name: &str) -> Error {
    Error::io(
        "inject a failure at",
        format!("failpoint {name}"),
        std::io::Error::other(format!("failpoint {name} fired")),
    )
}

/// Declares a failpoint: configured to `return`, it makes the enclosing
/// function return `Err(injected(name))`; `panic` panics; `sleep`, `pause`
/// and callbacks work as in the `fail` crate.
macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name, |_| Err($crate::failpoint::injected($name).into()))
    };
}

pub(crate) use failpoint;
