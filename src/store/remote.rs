//! Remotes: fetch and push through the user's `git` binary, so every remote
//! URL, credential helper and SSH setup the user has works as it does for
//! `git pull`/`git push`. cairn never speaks a network protocol itself.
//!
//! Only refs move here: fetched objects land in the object database and
//! under `refs/remotes/<remote>/`, and a push sends the store's branch and
//! its milestone tags. Merging what was fetched is the caller's business.

use std::process::{Command, Stdio};

use git2::Oid;

use super::{not_found_to_none, Store};
use crate::error::{Error, Result};

/// The refs under which milestone tags travel.
pub const TAG_REFS: &str = "refs/tags/cairn/*";

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The remote branch now points at the pushed commit.
    Accepted,
    /// The remote moved meanwhile (not a fast-forward): fetch, merge, retry.
    Rejected,
}

impl Store {
    /// The remote a sync talks to by default: the branch's upstream remote
    /// (`branch.<name>.remote`), else `origin`.
    pub fn default_remote(&self) -> Result<String> {
        let cfg = self
            .repo
            .config()
            .map_err(|e| Error::git("read config", e))?;
        let key = format!("branch.{}.remote", self.branch_name());
        Ok(not_found_to_none(cfg.get_string(&key))
            .map_err(|e| Error::git(format!("read {key}"), e))?
            .unwrap_or_else(|| "origin".to_string()))
    }

    /// The short name of the store's branch (`main` for `refs/heads/main`).
    pub fn branch_name(&self) -> &str {
        self.branch
            .strip_prefix("refs/heads/")
            .unwrap_or(&self.branch)
    }

    /// Whether the store's branch has an upstream (`branch.<name>.merge`).
    pub fn has_upstream(&self) -> Result<bool> {
        let cfg = self
            .repo
            .config()
            .map_err(|e| Error::git("read config", e))?;
        let key = format!("branch.{}.merge", self.branch_name());
        Ok(not_found_to_none(cfg.get_string(&key))
            .map_err(|e| Error::git(format!("read {key}"), e))?
            .is_some())
    }

    /// Sets the branch's upstream to `remote`'s `branch`, as `git push -u` does.
    pub fn set_upstream(&self, remote: &str, branch: &str) -> Result<()> {
        let mut cfg = self
            .repo
            .config()
            .map_err(|e| Error::git("open config", e))?;
        let name = self.branch_name().to_string();
        cfg.set_str(&format!("branch.{name}.remote"), remote)
            .map_err(|e| Error::git("set upstream remote", e))?;
        cfg.set_str(
            &format!("branch.{name}.merge"),
            &format!("refs/heads/{branch}"),
        )
        .map_err(|e| Error::git("set upstream branch", e))
    }

    /// The remote-tracking ref a fetch of `remote`'s `branch` updates.
    pub fn tracking_ref(remote: &str, branch: &str) -> String {
        format!("refs/remotes/{remote}/{branch}")
    }

    /// Fetches `remote`'s `branch` (into its tracking ref) and its milestone
    /// tags. Returns the fetched tip, or `None` when the remote has no such
    /// branch yet (a first push will create it).
    pub fn fetch(&self, remote: &str, branch: &str) -> Result<Option<Oid>> {
        let tracking = Self::tracking_ref(remote, branch);
        let heads = format!("+refs/heads/{branch}:{tracking}");
        let tags = format!("{TAG_REFS}:{TAG_REFS}");
        // One fetch; a remote without the branch yet (a first push will
        // make it) answers "couldn't find remote ref", which is no error.
        let fetched = self.remote_git(
            remote,
            "fetch",
            &["fetch", "--quiet", "--no-tags", remote, &heads, &tags],
        );
        if let Err(Error::Remote { stderr, .. }) = &fetched {
            if stderr.contains("couldn't find remote ref") {
                // Tags may still be there (a fresh remote has none either way).
                self.remote_git(
                    remote,
                    "fetch",
                    &["fetch", "--quiet", "--no-tags", remote, &tags],
                )?;
                return Ok(None);
            }
        }
        fetched?;
        self.repo
            .odb()
            .and_then(|o| o.refresh())
            .map_err(|e| Error::git("refresh object database", e))?;
        let id = not_found_to_none(self.repo.refname_to_id(&tracking))
            .map_err(|e| Error::git(format!("read {tracking}"), e))?;
        Ok(id)
    }

    /// Pushes `commit` to `remote`'s `branch` (a fast-forward only, unless
    /// the remote has no such branch) and the milestone tags.
    pub fn push(&self, remote: &str, branch: &str, commit: Oid) -> Result<Pushed> {
        let spec = format!("{commit}:refs/heads/{branch}");
        let args = [
            "push",
            "--quiet",
            "--porcelain",
            remote,
            spec.as_str(),
            "refs/tags/cairn/*:refs/tags/cairn/*",
        ];
        let out = self
            .git_command(remote)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("run git push in", self.repo.path(), e))?;
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            return Ok(Pushed::Accepted);
        }
        // Porcelain lines: "!\t<src>:<dst>\t[rejected] (fetch first|non-fast-forward)".
        let rejected = text.lines().any(|l| {
            l.starts_with('!')
                && (l.contains("non-fast-forward")
                    || l.contains("fetch first")
                    || l.contains("stale info")
                    || l.contains("cannot lock ref")
                    || l.contains("failed to update ref"))
        });
        if rejected {
            return Ok(Pushed::Rejected);
        }
        Err(Error::Remote {
            remote: remote.to_string(),
            action: "push",
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// `git` for this repository, without a work tree (remote operations
    /// touch only the object database and refs) and never prompting.
    fn git_command(&self, _remote: &str) -> Command {
        let mut c = Command::new("git");
        c.arg("--git-dir").arg(self.repo.path());
        c.env("GIT_TERMINAL_PROMPT", "0");
        c
    }

    fn remote_git(&self, remote: &str, action: &'static str, args: &[&str]) -> Result<String> {
        let out = self
            .git_command(remote)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("run git in", self.repo.path(), e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Remote {
                remote: remote.to_string(),
                action,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}
