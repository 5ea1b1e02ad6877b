//! Backups: the store's branch and milestone tags as git bundles, full or
//! incremental (only what the previous backup does not hold), each with a
//! small manifest, verified when made, restorable as a chain.
//!
//! A backup is `<name>.bundle` and `<name>.json` in a backup folder; the
//! manifest holds the bundle's sha256 and size, the refs it carries, the
//! tip, the store id (its first commit), the cairn version and, for an
//! incremental, the backup it builds on (`base`). Names sort by creation:
//! `<UTC stamp>-<4-digit sequence>-<full|incremental>`.
//!
//! Invariants:
//! - A backup is verified before it is renamed into place: its chain
//!   (full, then each incremental) is fetched into a fresh repository, that
//!   repository passes `fsck`, and its refs equal the manifest's.
//! - An incremental with nothing new is not written (`empty`). One whose
//!   refs changed without new objects (a tag deleted, a branch moved back)
//!   is a manifest with no bundle (`bytes` 0): restoring a chain sets the
//!   refs to the last manifest's, so deleted refs stay deleted.
//! - Prune never removes a backup that a kept incremental builds on.
//!
//! This module sits beside `fsck` (it opens the restored store and runs
//! `fsck` there); the git invocations are in `store::bundle`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::rfc3339;
use crate::store::bundle;
use crate::{Store, StoreOptions};

/// A backup's manifest (`<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "2.1".
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    /// The backup's name (its files are `<name>.bundle` and `<name>.json`).
    pub backup_id: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// When it was made (RFC 3339 UTC).
    pub created_at: String,
    /// The store's id: its first commit.
    pub store_id: String,
    /// The cairn version that made it.
    pub cairn_version: String,
    /// The store's branch (full ref name).
    pub branch: String,
    /// The branch tip.
    pub tip: String,
    /// Every ref the store had (branch and milestone tags) → target.
    pub refs: BTreeMap<String, String>,
    /// The backup an incremental builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The bundle's sha256.
    pub sha256: String,
    /// The bundle's size in bytes (0: an incremental of refs only).
    pub bytes: u64,
    /// What `cairn fsck` found in the store when it was backed up (each
    /// finding described): a faithful restore has exactly these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

/// What [`create`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    /// The new backup's manifest, `None` when an incremental had nothing new.
    pub manifest: Option<Manifest>,
    /// The bundle written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// Whether nothing changed since the previous backup.
    pub empty: bool,
    /// Things that did not stop the backup but need saying.
    pub warnings: Vec<String>,
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((h.finalize().iter().map(|b| format!("{b:02x}")).collect(), n))
}

/// Every backup in `dir`, oldest first (by name).
pub fn list(dir: &Path) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read", dir, e)),
    };
    for e in entries {
        let e = e.map_err(|e| Error::io("read", dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        out.push(read_manifest(&e.path())?);
    }
    out.sort_by(|a, b| a.backup_id.cmp(&b.backup_id));
    Ok(out)
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Integrity {
        subject: path.display().to_string(),
        message: format!("is not a backup manifest: {e}"),
    })
}

fn stamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Backs the store up into `dir`: a full bundle, or with `incremental`
/// only what the newest backup there does not hold. Verified (restored,
/// fsck'd, refs compared) before it is renamed into place.
pub fn create(store: &Store, dir: &Path, incremental: bool) -> Result<Created> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let store_id = crate::resume::store_id(store)?;
    let refs = store.backup_refs()?;
    let tip = store.require_tip()?;
    let existing = list(dir)?;
    let base = if incremental {
        let prev = existing
            .iter()
            .rev()
            .find(|m| m.store_id == store_id)
            .ok_or_else(|| Error::NotFound {
                what: format!(
                    "a backup of this store in {} to build an incremental on (make a full one first)",
                    dir.display()
                ),
            })?;
        Some(prev.clone())
    } else {
        None
    };
    let ref_map: BTreeMap<String, String> = refs
        .iter()
        .map(|(n, o)| (n.clone(), o.to_string()))
        .collect();
    if let Some(b) = &base {
        if b.refs == ref_map {
            return Ok(Created {
                manifest: None,
                bundle: None,
                empty: true,
                warnings: Vec::new(),
            });
        }
    }
    // One more than any sequence number in the folder (prune leaves gaps).
    let seq = existing
        .iter()
        .filter_map(|m| m.backup_id.split('-').nth(1)?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let now = store.now();
    let kind = if incremental { "incremental" } else { "full" };
    let id = format!("{}-{seq:04}-{kind}", stamp(now));
    let tmp = dir.join(format!(".{id}.bundle.tmp"));
    let _ = fs::remove_file(&tmp);
    let exclude: Vec<git2::Oid> = match &base {
        Some(b) => b
            .refs
            .values()
            .filter_map(|o| git2::Oid::from_str(o).ok())
            .filter(|o| store.repo_has(*o))
            .collect(),
        None => Vec::new(),
    };
    let names: Vec<String> = refs.iter().map(|(n, _)| n.clone()).collect();
    let targets: Vec<git2::Oid> = refs.iter().map(|(_, o)| *o).collect();
    let refs_only = base.is_some() && store.bundle_would_be_empty(&targets, &exclude);
    let (sha256, bytes) = if refs_only {
        (hex_sha256(b""), 0)
    } else {
        store.bundle_create(&tmp, &names, &exclude)?;
        sha256_file(&tmp)?
    };
    let manifest = Manifest {
        schema_version: crate::schema::SCHEMA_VERSION.into(),
        backup_id: id.clone(),
        kind: kind.into(),
        created_at: rfc3339(now),
        store_id,
        cairn_version: env!("CARGO_PKG_VERSION").into(),
        branch: store.branch().to_string(),
        tip: tip.to_string(),
        refs: ref_map,
        base: base.as_ref().map(|b| b.backup_id.clone()),
        sha256,
        bytes,
        findings: Vec::new(),
    };
    // Verify before it counts: the chain so far plus this bundle.
    let mut chain = match &base {
        Some(b) => chain_of(dir, b)?,
        None => Vec::new(),
    };
    chain.push((manifest.clone(), tmp.clone()));
    // A store fsck finds problems in is still backed up, as long as the
    // restore has exactly the source's problems and no others.
    let checked = verify_chain(&chain, &scratch(dir, &id)).and_then(|v| {
        if v.findings.is_empty() {
            return Ok(Vec::new());
        }
        let source = crate::fsck::fsck(store)?;
        if describe(&source) == describe(&v.findings) {
            Ok(describe(&v.findings).into_iter().collect())
        } else {
            Err(Error::FsckFailed {
                findings: v.findings,
            })
        }
    });
    let mut manifest = manifest;
    manifest.findings = match checked {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let warnings: Vec<String> = manifest
        .findings
        .iter()
        .map(|f| format!("the store itself has this fsck finding: {f}"))
        .collect();
    let bundle_path = dir.join(format!("{id}.bundle"));
    if !refs_only {
        fs::rename(&tmp, &bundle_path)
            .map_err(|e| Error::io("rename into place", &bundle_path, e))?;
    }
    let mut json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    json.push(b'\n');
    crate::store::write_atomic(&dir.join(format!("{id}.json")), &json, true)?;
    Ok(Created {
        manifest: Some(manifest),
        bundle: (!refs_only).then_some(bundle_path),
        empty: false,
        warnings,
    })
}

fn scratch(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!(".verify-{id}-{}", std::process::id()))
}

/// The bundle file of a backup named by its bundle, manifest or id.
fn locate(file: &Path) -> Result<(PathBuf, Manifest)> {
    let s = file.to_string_lossy();
    let stem = s
        .strip_suffix(".bundle")
        .or_else(|| s.strip_suffix(".json"))
        .unwrap_or(&s)
        .to_string();
    let json = PathBuf::from(format!("{stem}.json"));
    if !json.exists() {
        return Err(Error::NotFound {
            what: format!("backup manifest {}", json.display()),
        });
    }
    Ok((
        PathBuf::from(format!("{stem}.bundle")),
        read_manifest(&json)?,
    ))
}

/// The chain a backup needs, oldest (the full) first: (manifest, bundle).
fn chain_of(dir: &Path, last: &Manifest) -> Result<Vec<(Manifest, PathBuf)>> {
    let mut chain = vec![(last.clone(), dir.join(format!("{}.bundle", last.backup_id)))];
    let mut seen = BTreeSet::new();
    while let Some(base) = chain.last().and_then(|(m, _)| m.base.clone()) {
        if !seen.insert(base.clone()) {
            return Err(Error::Integrity {
                subject: base,
                message: "the backup chain loops".into(),
            });
        }
        let (bundle, m) = locate(&dir.join(&base))?;
        chain.push((m, bundle));
    }
    chain.reverse();
    Ok(chain)
}

/// What [`verify`] or [`restore`] checked.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The backups of the chain, oldest first.
    pub chain: Vec<String>,
    /// The refs restored (equal to the manifest's).
    pub refs: usize,
    /// The restored tip.
    pub tip: String,
    /// What fsck found in the restored store.
    pub findings: Vec<crate::error::Finding>,
}

/// Findings as sets of their descriptions, to compare two fsck runs.
fn describe(findings: &[crate::error::Finding]) -> BTreeSet<String> {
    findings.iter().map(|f| f.describe()).collect()
}

impl Verified {
    /// Fails when fsck found in the restored store anything other than
    /// what it found in the store when it was backed up (`expected`).
    fn sound(self, expected: &[String]) -> Result<Verified> {
        if describe(&self.findings) == expected.iter().cloned().collect() {
            Ok(self)
        } else {
            Err(Error::FsckFailed {
                findings: self.findings,
            })
        }
    }
}

/// Checks each bundle's checksum, fetches the chain into a new repository
/// at `into`, checks it out, runs fsck and compares its refs with the last
/// manifest's. Leaves the restored store at `into`.
fn restore_chain(chain: &[(Manifest, PathBuf)], into: &Path) -> Result<Verified> {
    let last = &chain.last().expect("a chain has a backup").0;
    for (m, bundle) in chain {
        if m.bytes == 0 && m.kind == "incremental" {
            // Refs only: there is no bundle to check.
            continue;
        }
        let (sha, bytes) = sha256_file(bundle)?;
        if sha != m.sha256 || bytes != m.bytes {
            return Err(Error::Integrity {
                subject: bundle.display().to_string(),
                message: format!(
                    "does not match its manifest (sha256 {}, {} bytes): the bundle is damaged",
                    m.sha256, m.bytes
                ),
            });
        }
    }
    bundle::init_repo(into, &last.branch)?;
    for (m, b) in chain {
        if m.bytes == 0 && m.kind == "incremental" {
            continue;
        }
        bundle::verify(into, b).map_err(|e| Error::Integrity {
            subject: b.display().to_string(),
            message: format!("git bundle verify failed: {e}"),
        })?;
        bundle::fetch(into, b).map_err(|e| Error::Integrity {
            subject: b.display().to_string(),
            message: format!("the bundle's objects cannot be read: {e}"),
        })?;
    }
    // The last manifest says which refs the store had: a tag deleted since
    // the full backup is not restored.
    bundle::set_refs(into, &last.refs).map_err(|e| Error::Integrity {
        subject: last.backup_id.clone(),
        message: format!("the chain does not hold the manifest's refs: {e}"),
    })?;
    bundle::checkout(into)?;
    let got: BTreeMap<String, String> = bundle::list_refs(into)?.into_iter().collect();
    if got != last.refs {
        return Err(Error::Integrity {
            subject: last.backup_id.clone(),
            message: format!(
                "the restored refs differ from the manifest's ({} restored, {} expected)",
                got.len(),
                last.refs.len()
            ),
        });
    }
    let store = Store::open(into, StoreOptions::default())?;
    let findings = crate::fsck::fsck(&store)?;
    Ok(Verified {
        findings,
        chain: chain.iter().map(|(m, _)| m.backup_id.clone()).collect(),
        refs: got.len(),
        tip: last.tip.clone(),
    })
}

fn verify_chain(chain: &[(Manifest, PathBuf)], scratch: &Path) -> Result<Verified> {
    let _ = fs::remove_dir_all(scratch);
    let result = restore_chain(chain, scratch);
    let _ = fs::remove_dir_all(scratch);
    result
}

/// Verifies a backup (named by its bundle or manifest): checksums of its
/// chain, `git bundle verify`, a test restore into a temporary folder,
/// fsck there, refs compared.
pub fn verify(file: &Path) -> Result<Verified> {
    let (_, m) = locate(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let chain = chain_of(dir, &m)?;
    verify_chain(&chain, &scratch(dir, &m.backup_id))?.sound(&m.findings)
}

/// Restores a backup (and the chain it builds on) into `into`, a new
/// folder: a store with the same refs and trees as the one backed up.
pub fn restore(file: &Path, into: &Path) -> Result<Verified> {
    let (_, m) = locate(file)?;
    if fs::read_dir(into).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Conflict {
            subject: into.display().to_string(),
            rule: "RESTORE_TARGET_NOT_EMPTY",
            message: "restore into a new or empty folder".into(),
        });
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let chain = chain_of(dir, &m)?;
    let existed = into.exists();
    let restored = restore_chain(&chain, into).and_then(|v| v.sound(&m.findings));
    if restored.is_err() {
        // Leave the folder as it was found: absent, or empty.
        if existed {
            if let Ok(entries) = fs::read_dir(into) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        } else {
            let _ = fs::remove_dir_all(into);
        }
    }
    restored
}

/// What [`prune`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    /// Backups kept, oldest first.
    pub kept: Vec<String>,
    /// Backups removed.
    pub removed: Vec<String>,
}

/// Retention: keeps the newest backup of each of the `daily` most recent
/// days, of each of the `weekly` most recent ISO weeks and of each of the
/// `monthly` most recent months that have backups, plus every backup a
/// kept one builds on; removes the rest.
pub fn prune(dir: &Path, daily: usize, weekly: usize, monthly: usize) -> Result<Pruned> {
    let all = list(dir)?;
    let mut keep = BTreeSet::new();
    let period = |m: &Manifest, f: &dyn Fn(time::Date) -> String| {
        crate::event::parse_rfc3339(&m.created_at).map(|t| f(t.date()))
    };
    let by_day = |d: time::Date| d.to_string();
    let by_week = |d: time::Date| {
        let (y, w, _) = d.to_iso_week_date();
        format!("{y}-W{w:02}")
    };
    let by_month = |d: time::Date| format!("{}-{:02}", d.year(), u8::from(d.month()));
    let rules: [(usize, &dyn Fn(time::Date) -> String); 3] =
        [(daily, &by_day), (weekly, &by_week), (monthly, &by_month)];
    for (n, f) in rules {
        let mut periods = BTreeSet::new();
        // Newest first: the first backup seen in a period is its newest.
        for m in all.iter().rev() {
            let Some(p) = period(m, f) else { continue };
            if periods.contains(&p) {
                continue;
            }
            if periods.len() >= n {
                break;
            }
            periods.insert(p);
            keep.insert(m.backup_id.clone());
        }
    }
    // A kept incremental needs its whole chain.
    let by_id: BTreeMap<&str, &Manifest> = all.iter().map(|m| (m.backup_id.as_str(), m)).collect();
    let mut stack: Vec<String> = keep.iter().cloned().collect();
    while let Some(id) = stack.pop() {
        if let Some(base) = by_id.get(id.as_str()).and_then(|m| m.base.clone()) {
            if keep.insert(base.clone()) {
                stack.push(base);
            }
        }
    }
    let mut removed = Vec::new();
    for m in &all {
        if keep.contains(&m.backup_id) {
            continue;
        }
        for ext in ["json", "bundle"] {
            let p = dir.join(format!("{}.{ext}", m.backup_id));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", p, e)),
            }
        }
        removed.push(m.backup_id.clone());
    }
    Ok(Pruned {
        kept: all
            .iter()
            .filter(|m| keep.contains(&m.backup_id))
            .map(|m| m.backup_id.clone())
            .collect(),
        removed,
    })
}
