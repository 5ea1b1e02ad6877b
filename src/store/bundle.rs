//! Git bundles for backups, through the user's `git` binary (as
//! [`super::remote`] does for fetch and push): `git bundle create` and
//! `verify`, and restoring bundles into a new repository. Nothing here
//! knows about backup chains or retention; `crate::backup` does.

use std::path::Path;
use std::process::{Command, Stdio};

use git2::Oid;

use super::remote::TAG_REFS;
use super::Store;
use crate::error::{Error, Result};

/// `path` made absolute: `git -C` runs elsewhere than the caller.
fn abs(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// `git` with `args` in `dir` (a git dir or a work tree), never prompting;
/// its stdout, or [`Error::GitCommand`] with its stderr.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run git in", dir, e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::GitCommand {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Store {
    /// The refs a backup carries: the store's branch and its milestone
    /// tags, (full name, target), sorted.
    pub fn backup_refs(&self) -> Result<Vec<(String, Oid)>> {
        let mut out = Vec::new();
        if let Some(tip) = self.tip()? {
            out.push((self.branch().to_string(), tip));
        }
        let refs = self
            .repo
            .references_glob(TAG_REFS)
            .map_err(|e| Error::git("list tags", e))?;
        for r in refs {
            let r = r.map_err(|e| Error::git("read tag", e))?;
            if let (Ok(Some(name)), Some(id)) = (r.name().map(Some), r.target()) {
                out.push((name.to_string(), id));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether a bundle of `targets` less what `exclude` reaches would hold
    /// no object: every target is an excluded object or a commit an
    /// excluded commit descends from (a deleted tag, a branch moved back).
    /// git refuses to write such a bundle.
    pub fn bundle_would_be_empty(&self, targets: &[Oid], exclude: &[Oid]) -> bool {
        targets.iter().all(|t| {
            exclude.contains(t)
                || exclude
                    .iter()
                    .any(|e| self.repo.graph_descendant_of(*e, *t).unwrap_or(false))
        })
    }

    /// Writes a bundle of `refs` to `file`, leaving out what `exclude`
    /// (commits an earlier bundle holds) reaches.
    pub fn bundle_create(&self, file: &Path, refs: &[String], exclude: &[Oid]) -> Result<()> {
        let path = abs(file);
        let mut args: Vec<String> = vec!["bundle".into(), "create".into(), "-q".into(), path];
        args.extend(refs.iter().cloned());
        args.extend(exclude.iter().map(|o| format!("^{o}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        git(self.git_dir(), &args).map(|_| ())
    }
}

/// Makes an empty repository at `dir` whose HEAD names `branch` (a full
/// ref name), for bundles to be fetched into.
pub fn init_repo(dir: &Path, branch: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let short = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    git(dir, &["init", "-q", &format!("--initial-branch={short}")]).map(|_| ())
}

/// `git bundle verify` of `file` in the repository at `dir` (which must
/// hold the bundle's prerequisites).
pub fn verify(dir: &Path, file: &Path) -> Result<()> {
    git(dir, &["bundle", "verify", "-q", &abs(file)]).map(|_| ())
}

/// Fetches every branch and tag of bundle `file` into the repository at
/// `dir`, moving its refs to the bundle's.
pub fn fetch(dir: &Path, file: &Path) -> Result<()> {
    git(
        dir,
        &[
            "fetch",
            "-q",
            "--update-head-ok",
            "--no-tags",
            &abs(file),
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
    )
    .map(|_| ())
}

/// Makes the refs under `refs/heads/` and `refs/tags/` of the repository
/// at `dir` exactly `refs` (full name → target): moves the ones that differ
/// and deletes the ones `refs` lacks. A target the repository does not
/// hold is an error.
pub fn set_refs(dir: &Path, refs: &std::collections::BTreeMap<String, String>) -> Result<()> {
    let have: std::collections::BTreeMap<String, String> = list_refs(dir)?.into_iter().collect();
    for (name, target) in &have {
        if !refs.contains_key(name) {
            git(dir, &["update-ref", "-d", name, target])?;
        }
    }
    for (name, target) in refs {
        if have.get(name) != Some(target) {
            git(dir, &["update-ref", name, target])?;
        }
    }
    Ok(())
}

/// Brings the work tree and index of the repository at `dir` to its HEAD.
pub fn checkout(dir: &Path) -> Result<()> {
    git(dir, &["reset", "-q", "--hard"]).map(|_| ())
}

/// Every ref of the repository at `dir` under `refs/heads/` and
/// `refs/tags/`, (full name, target), sorted.
pub fn list_refs(dir: &Path) -> Result<Vec<(String, String)>> {
    let text = git(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads/",
            "refs/tags/",
        ],
    )?;
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, o)| (n.to_string(), o.to_string()))
        .collect();
    out.sort();
    Ok(out)
}
