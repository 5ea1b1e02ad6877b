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

/// A recording of the file operations cairn's own write path makes, for the
/// power-loss test (`tests/power_loss.rs`), which rebuilds from it the
/// states a power cut could leave on disk.
///
/// With the `failpoints` feature, [`trace::start`] begins recording every
/// operation on a path under a root folder: a file's content handed to the
/// kernel ([`trace::FsOp::Write`], its whole content read back at that
/// moment), an `fsync` of a file or folder, a rename, an unlink or `rmdir`.
/// Each site in `src/` that writes, syncs, renames or removes a store file
/// calls the matching recorder. libgit2's ref update is not visible from
/// here: [`trace::libgit2_ref_update`] records what libgit2 1.9 does for it
/// (`refdb_fs.c`: `loose_lock`, `reflog_append`, `maybe_append_head`,
/// `loose_commit`, with `GIT_OPT_ENABLE_FSYNC_GITDIR` on). Without the
/// feature every recorder is an empty inline function.
pub mod trace {
    #[cfg(feature = "failpoints")]
    pub use recording::*;

    #[cfg(feature = "failpoints")]
    mod recording {
        use std::path::{Path, PathBuf};
        use std::sync::Mutex;

        /// One recorded file operation; paths are absolute.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum FsOp {
            /// Bytes handed to the kernel (not durable): the file's whole
            /// content right after the write. Creates the file if needed.
            Write {
                /// The file.
                path: PathBuf,
                /// Its content after the write.
                content: Vec<u8>,
                /// The write only added bytes at the end (`O_APPEND`): the
                /// content before it is not touched. Otherwise the file was
                /// truncated or overwritten in place.
                append: bool,
            },
            /// `fsync` of a file: its content so far is durable.
            Fsync {
                /// The file.
                path: PathBuf,
            },
            /// `fsync` of a folder: the creations, renames and removals of
            /// its entries so far are durable.
            FsyncDir {
                /// The folder.
                path: PathBuf,
            },
            /// `rename(from, to)`.
            Rename {
                /// The old name.
                from: PathBuf,
                /// The new name (replaced if it exists).
                to: PathBuf,
            },
            /// `unlink` of a file or `rmdir` of an empty folder.
            Remove {
                /// The removed name.
                path: PathBuf,
            },
        }

        static RECORDER: Mutex<Option<(PathBuf, Vec<FsOp>)>> = Mutex::new(None);

        /// Starts recording the operations on paths under `root` (dropping
        /// any earlier recording).
        pub fn start(root: &Path) {
            let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
            *lock() = Some((root, Vec::new()));
        }

        /// How many operations have been recorded since [`start`].
        pub fn len() -> usize {
            lock().as_ref().map_or(0, |(_, ops)| ops.len())
        }

        /// Stops recording and returns what was recorded, in order.
        pub fn stop() -> Vec<FsOp> {
            lock().take().map(|(_, ops)| ops).unwrap_or_default()
        }

        fn lock() -> std::sync::MutexGuard<'static, Option<(PathBuf, Vec<FsOp>)>> {
            RECORDER.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Records `op(path)` when `path` is under the recorded root.
        fn record(path: &Path, op: impl FnOnce(PathBuf) -> FsOp) {
            let mut guard = lock();
            let Some((root, ops)) = guard.as_mut() else {
                return;
            };
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            if path.starts_with(root.as_path()) {
                ops.push(op(path));
            }
        }

        /// Records that `path` now holds what is on disk (not yet durable).
        pub(crate) fn write(path: &Path) {
            record(path, |path| FsOp::Write {
                content: std::fs::read(&path).unwrap_or_default(),
                path,
                append: false,
            });
        }

        /// Records that bytes were appended to `path` (`O_APPEND`), which
        /// now holds what is on disk (not yet durable).
        pub(crate) fn append(path: &Path) {
            record(path, |path| FsOp::Write {
                content: std::fs::read(&path).unwrap_or_default(),
                path,
                append: true,
            });
        }

        /// Records an `fsync` of `path`, a file or a folder.
        pub(crate) fn fsync(path: &Path) {
            let dir = path.is_dir();
            record(path, |path| match dir {
                true => FsOp::FsyncDir { path },
                false => FsOp::Fsync { path },
            });
        }

        /// Records `rename(from, to)`.
        pub(crate) fn rename(from: &Path, to: &Path) {
            let to = std::path::absolute(to).unwrap_or_else(|_| to.to_path_buf());
            record(from, |from| FsOp::Rename { from, to });
        }

        /// Records an unlink or `rmdir` of `path`.
        pub(crate) fn remove(path: &Path) {
            record(path, |path| FsOp::Remove { path });
        }

        /// Records what libgit2 did to move `branch` in the repository at
        /// `git_dir` (called right after it returned): it created
        /// `<ref>.lock`, appended to the branch's reflog and to `HEAD`'s
        /// (each write fsync'd, then its folder), then wrote the lock,
        /// fsync'd it, renamed it over the ref and fsync'd the ref's folder.
        /// The contents are read back from disk.
        pub(crate) fn libgit2_ref_update(git_dir: &Path, branch: &str) {
            let reference = git_dir.join(branch);
            let mut lock_name = reference.clone().into_os_string();
            lock_name.push(".lock");
            let lock_path = PathBuf::from(lock_name);
            let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
            record(&lock_path, |path| FsOp::Write {
                path,
                content: Vec::new(),
                append: false,
            });
            let logs = git_dir.join("logs");
            for log in [logs.join(branch), logs.join("HEAD")] {
                if log.is_file() {
                    append(&log);
                    fsync(&log);
                    fsync(&parent(&log));
                }
            }
            let content = std::fs::read(&reference).unwrap_or_default();
            record(&lock_path, |path| FsOp::Write {
                path,
                content,
                append: false,
            });
            fsync_file_named(&lock_path);
            rename(&lock_path, &reference);
            fsync(&parent(&reference));
        }

        static BOOT: Mutex<Option<(String, std::time::SystemTime)>> = Mutex::new(None);

        /// Makes cairn take `id` for the machine's boot id, and now for the
        /// time it booted (`None`: the real ones again). The power-loss test
        /// sets a new one to stand for the reboot after a cut: the work-tree
        /// journal trusts the page cache only within the boot that wrote it,
        /// and takes a lock file written before the boot for a dead
        /// process's.
        pub fn set_boot_id(id: Option<String>) {
            *BOOT.lock().unwrap_or_else(|e| e.into_inner()) =
                id.map(|id| (id, std::time::SystemTime::now()));
        }

        /// The boot id [`set_boot_id`] set, if any.
        pub(crate) fn boot_id_override() -> Option<String> {
            BOOT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|b| b.0.clone())
        }

        /// The boot time [`set_boot_id`] set, if any.
        pub(crate) fn boot_time_override() -> Option<std::time::SystemTime> {
            BOOT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|b| b.1)
        }

        /// [`fsync`] of a file that no longer exists under that name.
        fn fsync_file_named(path: &Path) {
            record(path, |path| FsOp::Fsync { path });
        }
    }

    #[cfg(not(feature = "failpoints"))]
    mod off {
        use std::path::Path;

        #[inline(always)]
        pub(crate) fn write(_: &Path) {}
        #[inline(always)]
        pub(crate) fn append(_: &Path) {}
        #[inline(always)]
        pub(crate) fn fsync(_: &Path) {}
        #[inline(always)]
        pub(crate) fn rename(_: &Path, _: &Path) {}
        #[inline(always)]
        pub(crate) fn remove(_: &Path) {}
        #[inline(always)]
        pub(crate) fn libgit2_ref_update(_: &Path, _: &str) {}
    }

    #[cfg(not(feature = "failpoints"))]
    pub(crate) use off::*;
}
