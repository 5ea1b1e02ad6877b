//! Store setup for the library-level tests: a fixed clock, a store with a
//! booted run, plain git as a person at a terminal runs it (for hand
//! commits), and reading, editing and listing the store's files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn::working_set::{self, BootRequest};
use cairn::{Store, StoreOptions};

/// The fixed clock of the library-level tests.
pub const CLOCK: &str = "2026-01-18T10:00:00Z";

/// Store options with the clock fixed at `now` (RFC 3339).
pub fn at(now: &str) -> StoreOptions {
    StoreOptions {
        now: cairn::store::parse_rfc3339(now),
        ..Default::default()
    }
}

/// Store options with the clock fixed at [`CLOCK`].
pub fn opts() -> StoreOptions {
    at(CLOCK)
}

/// Boots a run with `objective` (and `run_id`, else a generated one); returns its id.
pub fn boot(store: &Store, objective: &str, run_id: Option<&str>) -> String {
    let req = BootRequest {
        objective: objective.into(),
        run_id: run_id.map(Into::into),
        ..Default::default()
    };
    working_set::boot(store, &req, None).unwrap().0.run_id
}

/// Makes a store at `dir` and boots one run in it (see [`boot`]).
pub fn booted(
    dir: &Path,
    bare: bool,
    options: StoreOptions,
    objective: &str,
    run_id: Option<&str>,
) -> (Store, String) {
    let store = Store::init(dir, bare, options).unwrap();
    let run = boot(&store, objective, run_id);
    (store, run)
}

/// git in `dir` with no global or system config and the identity of a
/// person editing by hand (`Hand <hand@example.com>`).
pub fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Hand")
        .env("GIT_AUTHOR_EMAIL", "hand@example.com")
        .env("GIT_COMMITTER_NAME", "Hand")
        .env("GIT_COMMITTER_EMAIL", "hand@example.com");
    cmd
}

/// Runs `cmd`, asserts that it succeeded and returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs [`git_cmd`] in `dir` with `args`, whatever its exit status.
pub fn git_output(dir: &Path, args: &[&str]) -> Output {
    git_cmd(dir).args(args).output().unwrap()
}

/// Runs [`git_cmd`] in `dir` with `args`; asserts success, returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(git_cmd(dir).args(args))
}

/// Clones the repository at `from` into `to` with plain git.
pub fn clone(from: &Path, to: &Path) {
    run_ok(git_cmd(from).args(["clone", "-q"]).arg(from).arg(to));
}

/// The text of the file at `path`.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Rewrites the file at `path` with `f` of its text; returns the new text.
pub fn edit(path: impl AsRef<Path>, f: impl FnOnce(String) -> String) -> String {
    let text = f(read(&path));
    std::fs::write(path, &text).unwrap();
    text
}

/// The files under `dir`, recursively, sorted. Entries that vanish while
/// they are listed (a writer replacing a file) are skipped.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}
