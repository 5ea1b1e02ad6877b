//! Several clones of one store and a bare remote in one temporary folder,
//! all reached through `file://` URLs: what the sync tests drive. Each clone
//! runs the real cairn binary and the real git, hermetically.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::cli::cairn;
use super::setup;

/// A bare remote (`remote.git`, branch `main`) and the clones made from it.
pub struct Net {
    /// The temporary HOME holding everything.
    pub home: TempDir,
}

/// One clone of the store.
pub struct Clone {
    /// Its folder.
    pub dir: PathBuf,
    /// Its HOME (the net's).
    home: PathBuf,
}

impl Net {
    /// A bare remote and a first clone `a` made by `cairn init` and pushed
    /// with `cairn sync`.
    pub fn new() -> (Net, Clone) {
        let home = TempDir::new().unwrap();
        setup::git(
            home.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        let net = Net { home };
        let a = Clone {
            dir: net.home.path().join("a"),
            home: net.home.path().to_path_buf(),
        };
        let (code, env) = a.json_in(net.home.path(), &["init", "a"]);
        assert_eq!(code, 0, "{env}");
        a.git(&["remote", "add", "origin", &net.url()]);
        a.ok(&["sync"]);
        (net, a)
    }

    /// The remote's URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.home.path().join("remote.git").display())
    }

    /// A new clone `name` of the remote; with `drivers`, `cairn hooks
    /// install` registers cairn's hooks and merge drivers in it (a clone
    /// brings none).
    pub fn clone(&self, name: &str, drivers: bool) -> Clone {
        setup::git(self.home.path(), &["clone", "-q", &self.url(), name]);
        let c = Clone {
            dir: self.home.path().join(name),
            home: self.home.path().to_path_buf(),
        };
        if drivers {
            c.ok(&["hooks", "install"]);
        }
        c
    }
}

impl Clone {
    /// Runs cairn with `--json` in this clone at the test clock; returns
    /// (exit code, envelope).
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        self.json_in(&self.dir, args)
    }

    fn json_in(&self, cwd: &Path, args: &[&str]) -> (i32, Value) {
        let out = cairn(&self.home)
            .current_dir(cwd)
            .env("CAIRN_NOW", super::cli::NOW)
            .env("CAIRN_HOOK_FOREGROUND", "1")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let env: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cairn {args:?}: not a JSON envelope ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), env)
    }

    /// Runs cairn with `--json`, asserts success, returns the data.
    pub fn ok(&self, args: &[&str]) -> Value {
        let (code, env) = self.json(args);
        assert_eq!(code, 0, "cairn {args:?} in {}: {env}", self.dir.display());
        assert_eq!(env["ok"], json!(true));
        env["data"].clone()
    }

    /// Runs cairn with `--json` feeding `stdin`; asserts success.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> Value {
        let mut c = assert_cmd::Command::from_std(cairn(&self.home));
        c.current_dir(&self.dir)
            .env("CAIRN_NOW", super::cli::NOW)
            .env("CAIRN_HOOK_FOREGROUND", "1")
            .arg("--json")
            .args(args)
            .write_stdin(stdin.as_bytes().to_vec());
        let out = c.output().unwrap();
        let env: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(out.status.success(), "cairn {args:?}: {env}");
        env["data"].clone()
    }

    /// git in this clone as a person runs it (hooks run in the foreground).
    pub fn git(&self, args: &[&str]) -> String {
        setup::run_ok(self.git_cmd().args(args))
    }

    /// git in this clone, whatever its exit status.
    pub fn git_output(&self, args: &[&str]) -> Output {
        self.git_cmd().args(args).output().unwrap()
    }

    fn git_cmd(&self) -> std::process::Command {
        let mut c = setup::git_cmd(&self.dir);
        c.env("HOME", &self.home)
            .env("CAIRN_NOW", super::cli::NOW)
            .env("CAIRN_HOOK_FOREGROUND", "1");
        c
    }

    /// The commit HEAD points at.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Boots a run with `objective`; returns its id.
    pub fn boot(&self, objective: &str) -> String {
        self.ok(&["run", "boot", "--objective", objective])["run_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Appends one sliding context item `id` to `run`'s working set.
    pub fn append(&self, run: &str, id: &str) -> Value {
        let seq = self.ok(&["ws", "show", run])["_update_seq"]
            .as_u64()
            .unwrap();
        let patch = json!({"expected_seq": seq, "append": {"sliding_context": [{"id": id, "content": format!("note {id}")}]}});
        self.ok_stdin(&["ws", "patch", run, "--file", "-"], &patch.to_string())
    }

    /// The ids of `run`'s sliding context.
    pub fn sliding_ids(&self, run: &str) -> Vec<String> {
        self.ok(&["ws", "show", run])["sliding_context"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The clone's name (its folder's).
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Runs cairn with `--json` in this clone at clock `now` (RFC 3339),
    /// feeding `stdin` when given; returns (exit code, envelope). Output
    /// that is not an envelope (a crash) panics naming stdout and stderr.
    pub fn json_at(&self, now: &str, args: &[&str], stdin: Option<&str>) -> (i32, Value) {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = cairn(&self.home)
            .current_dir(&self.dir)
            .env("CAIRN_NOW", now)
            .env("CAIRN_HOOK_FOREGROUND", "1")
            .arg("--json")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let env: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cairn {args:?} in {}: not a JSON envelope ({e}): {}\nstderr: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), env)
    }

    /// git in this clone at clock `now` (RFC 3339): cairn's hooks and merge
    /// drivers see it as `CAIRN_NOW`, and the commits git makes carry it as
    /// their dates. Whatever the exit status.
    pub fn git_at(&self, now: &str, args: &[&str]) -> Output {
        let secs = cairn::event::parse_rfc3339(now)
            .unwrap_or_else(|| panic!("{now:?} is not RFC 3339"))
            .unix_timestamp();
        let date = format!("{secs} +0000");
        let mut c = self.git_cmd();
        c.env("CAIRN_NOW", now)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args(args);
        c.output().unwrap()
    }

    /// Asserts `cairn fsck` and `git fsck --strict` find nothing and the
    /// work tree is clean.
    pub fn assert_healthy(&self) {
        self.ok(&["fsck"]);
        let out = self.git_output(&["fsck", "--strict", "--no-progress"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            self.git(&["status", "--porcelain"]),
            "",
            "dirty work tree in {}",
            self.dir.display()
        );
    }
}
