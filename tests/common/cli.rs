//! The hermetic CLI harness shared by the end-to-end tests: a temporary
//! HOME, a cleared environment, no global or system git config, and a fixed
//! clock; plus the check every refused command must pass (its category, its
//! exit code, and an unchanged HEAD, git status and work tree).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use tempfile::TempDir;

/// The fixed clock (`CAIRN_NOW`) of every CLI run.
pub const NOW: &str = "2026-01-18T00:00:00Z";

/// The cairn binary with a cleared environment (see [`super::hermetic`]).
pub fn cairn(home: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("cairn"));
    super::hermetic(&mut c, home);
    c
}

/// A temporary HOME; the store, once made, is its `store` folder.
pub struct Env {
    /// The temporary HOME (removed on drop).
    pub home: TempDir,
}

impl Env {
    /// A fresh HOME and no store yet.
    pub fn new() -> Env {
        Env {
            home: TempDir::new().unwrap(),
        }
    }

    /// A fresh HOME with a store made by `cairn init`.
    pub fn store() -> Env {
        let env = Env::new();
        env.init();
        env
    }

    /// A fresh store with one booted run; returns the run id too.
    pub fn with_run() -> (Env, String) {
        let env = Env::store();
        let run = env.boot();
        (env, run)
    }

    /// The store's folder.
    pub fn root(&self) -> PathBuf {
        self.home.path().join("store")
    }

    /// The cairn binary at the fixed clock, run from HOME.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = cairn(self.home.path());
        c.env("CAIRN_NOW", NOW).current_dir(self.home.path());
        assert_cmd::Command::from_std(c)
    }

    /// Runs cairn against the store with `--json` and returns (exit code, envelope).
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        self.json_stdin(args, None)
    }

    /// Runs with `--json`, feeding `stdin` if given.
    pub fn json_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> (i32, Value) {
        self.json_full(args, stdin, NOW)
    }

    /// Runs with `--json` at a given clock.
    pub fn json_at(&self, now: &str, args: &[&str]) -> (i32, Value) {
        self.json_full(args, None, now)
    }

    fn json_full(&self, args: &[&str], stdin: Option<&[u8]>, now: &str) -> (i32, Value) {
        let mut c = self.cmd();
        c.env("CAIRN_NOW", now);
        c.arg("--store").arg(self.root()).arg("--json").args(args);
        if let Some(input) = stdin {
            c.write_stdin(input.to_vec());
        }
        let out: Output = c.output().unwrap();
        let env: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not a JSON envelope ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), env)
    }

    /// Runs with `--json`, asserts success and returns the envelope's data.
    pub fn ok(&self, args: &[&str]) -> Value {
        let (code, env) = self.json(args);
        assert_eq!(code, 0, "cairn {args:?} failed: {env}");
        assert_eq!(env["ok"], json!(true));
        env["data"].clone()
    }

    /// Makes the store with `cairn init`.
    pub fn init(&self) {
        self.ok(&["init", self.root().to_str().unwrap()]);
    }

    /// Boots a run ("Ship it", one criterion); returns its id.
    pub fn boot(&self) -> String {
        let data = self.ok(&[
            "run",
            "boot",
            "--objective",
            "Ship it",
            "--criterion",
            "tests pass",
        ]);
        data["run_id"].as_str().unwrap().to_string()
    }

    /// Runs git in the store as a hand editor would (hooks run; the search
    /// index catch-up of post-* hooks runs in the foreground).
    pub fn git_cmd(&self) -> Command {
        let mut c = super::setup::git_cmd(&self.root());
        c.env("CAIRN_HOOK_FOREGROUND", "1");
        c
    }

    /// Runs [`Env::git_cmd`] with `args`; asserts success, returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        super::setup::run_ok(self.git_cmd().args(args))
    }

    /// Runs [`Env::git_cmd`] with `args`, whatever its exit status.
    pub fn git_output(&self, args: &[&str]) -> Output {
        self.git_cmd().args(args).output().unwrap()
    }

    /// The commit id HEAD points at.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// A path in the store.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The text of a file in the store.
    pub fn read(&self, rel: &str) -> String {
        super::setup::read(self.path(rel))
    }

    /// Writes a file in the store.
    pub fn put(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    /// Rewrites a file in the store with `f` of its text; returns the new text.
    pub fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) -> String {
        super::setup::edit(self.path(rel), f)
    }

    /// HEAD, `git status`, and every work-tree file's bytes (outside .git and .cairn).
    pub fn state(&self) -> (String, String, BTreeMap<PathBuf, Vec<u8>>) {
        let head = self.git(&["rev-parse", "HEAD"]);
        let status = self.git(&["status", "--porcelain", "--untracked-files=all"]);
        let mut files = BTreeMap::new();
        for e in walkdir::WalkDir::new(self.root())
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git" && e.file_name() != ".cairn")
        {
            let e = e.unwrap();
            if e.file_type().is_file() {
                files.insert(e.path().to_path_buf(), std::fs::read(e.path()).unwrap());
            }
        }
        (head, status, files)
    }

    /// Runs `cairn fsck`, which must fail with INTEGRITY, and returns its findings.
    pub fn fsck_findings(&self) -> Vec<Value> {
        let (code, out) = self.json(&["fsck"]);
        assert_eq!(code, 8, "{out}");
        out["error"]["details"]["findings"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The work-tree file of run `run`'s working set.
    pub fn ws_file(&self, run: &str) -> PathBuf {
        self.root().join(cairn::layout::working_set(run))
    }
}

/// Asserts a refused command: exit code, category, and that nothing changed.
pub fn refused(env: &Env, args: &[&str], stdin: Option<&[u8]>, category: &str, exit: i32) -> Value {
    let before = env.state();
    let (code, out) = env.json_stdin(args, stdin);
    assert_eq!(out["ok"], json!(false), "{out}");
    assert_eq!(out["error"]["category"], json!(category), "{out}");
    assert_eq!(code, exit, "{out}");
    assert_eq!(env.state(), before, "a refused command changed the store");
    out["error"].clone()
}

/// Writes `text` to `dir/name`; returns the path as a string (for `--file`).
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}
