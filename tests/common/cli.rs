//! The hermetic CLI harness shared by the end-to-end tests: a temporary
//! HOME, a cleared environment, no global or system git config, and a fixed
//! clock; plus the check every refused command must pass (its category, its
//! exit code, and an unchanged HEAD, git status and work tree).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};
use tempfile::TempDir;

pub const NOW: &str = "2026-01-18T00:00:00Z";

pub struct Env {
    pub home: TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            home: TempDir::new().unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.home.path().join("store")
    }

    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("cairn").unwrap();
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("CAIRN_NOW", NOW)
            .current_dir(self.home.path());
        c
    }

    /// Runs cairn against the store with `--json` and returns (exit code, envelope).
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        self.json_stdin(args, None)
    }

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

    pub fn ok(&self, args: &[&str]) -> Value {
        let (code, env) = self.json(args);
        assert_eq!(code, 0, "cairn {args:?} failed: {env}");
        assert_eq!(env["ok"], json!(true));
        env["data"].clone()
    }

    pub fn init(&self) {
        self.ok(&["init", self.root().to_str().unwrap()]);
    }

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

    pub fn git(&self, args: &[&str]) -> String {
        let out = self.git_output(args);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs git in the store as a hand editor would (hooks run; the search
    /// index catch-up of post-* hooks runs in the foreground).
    pub fn git_output(&self, args: &[&str]) -> Output {
        std::process::Command::new("git")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Hand")
            .env("GIT_AUTHOR_EMAIL", "hand@example.com")
            .env("GIT_COMMITTER_NAME", "Hand")
            .env("GIT_COMMITTER_EMAIL", "hand@example.com")
            .env("CAIRN_HOOK_FOREGROUND", "1")
            .arg("-C")
            .arg(self.root())
            .args(args)
            .output()
            .unwrap()
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

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}
