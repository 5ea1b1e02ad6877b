//! Resume packs: a run snapshotted into a portable, verifiable pack, and a
//! new run booted from one, in this store or another.
//!
//! A pack is a folder or a zip holding `manifest.json` (schema
//! `resume_pack_manifest`) and the files it lists, each with its sha256 and
//! size: `working_set.yaml` (the run's working set as stored),
//! `episodes.jsonl`, `ledger.jsonl` (the run's events), `memory.jsonl` (the
//! active and candidate memory of the run's scopes: global, its project, the
//! run), `interactions.jsonl`, and `state.yaml` (the trusted state of the
//! run's project) when there is one.
//!
//! Invariants:
//! - A pack is a pure function of the store at one commit, the run and the
//!   options: no wall-clock time, sorted files, a pack id derived from the
//!   manifest's content. `snapshot` takes the newest commit that is not a
//!   RESUME_SNAPSHOT event, so snapshotting twice gives the same bytes and
//!   one recorded event (the second is an idempotent replay).
//! - [`read_pack`] verifies everything before [`load`] touches the store:
//!   every entry is a plain relative path (no `..`, no absolute path, no
//!   backslash, no duplicate), a regular file (no symlink or device), within
//!   the entry, size and compression-ratio limits (declared sizes are
//!   checked before anything is inflated, and inflation stops at the
//!   declared size); every listed file exists with its hash, nothing else is
//!   there, the manifest is canonical and its pack id matches its content;
//!   every file validates against its schema.
//! - [`load`] writes the new run, its episodes (each under a new episode
//!   id, re-tagged), the interactions and the memory in one commit
//!   (RESUME_LOADED) whose payload says where it came from (`resumed_from`:
//!   pack id, source store and store id, run, commit and seq). The new
//!   run's working set is the source's, under the new id, at seq 0 (a run's
//!   ledger seqs start at 0 and have no gaps). Memory arrives as
//!   `candidate` unless the caller trusts the pack; items whose id the store
//!   already holds are left alone; trusted project state is written only
//!   when trusted and absent.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::episode::Episode;
use crate::error::{Error, Result};
use crate::event::parse_rfc3339;
use crate::ledger::{self, parse_message, EventDraft, EventType, LogQuery};
use crate::memory::{ItemChange, ItemStatus, MemoryItem};
use crate::store::{Changes, Mutation, Store};
use crate::working_set::WorkingSet;
use crate::{layout, schema};

/// The manifest's file name inside a pack.
pub const MANIFEST: &str = "manifest.json";
/// Most entries a pack may hold (a pack of one run has a handful).
pub const MAX_ENTRIES: usize = 256;
/// Most bytes a pack may hold, all files inflated.
pub const MAX_PACK_BYTES: u64 = 512 * 1024 * 1024;
/// Highest inflated/compressed ratio accepted for an entry over 1 MiB.
pub const MAX_RATIO: u64 = 200;

const WORKING_SET: &str = "working_set.yaml";
const EPISODES: &str = "episodes.jsonl";
const LEDGER: &str = "ledger.jsonl";
const MEMORY: &str = "memory.jsonl";
const INTERACTIONS: &str = "interactions.jsonl";
const STATE: &str = "state.yaml";

/// The manifest of a pack, in the key order of its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Manifest {
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    pub pack_id: String,
    pub created_at: String,
    pub source: Source,
    pub files: Vec<FileEntry>,
    pub pointers: BTreeMap<String, Value>,
}

/// Where a pack was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Source {
    pub store: String,
    pub run_id: String,
    pub head_commit: String,
    pub last_episode_tag: Option<String>,
}

/// One file of a pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    /// The manifest's bytes: pretty JSON and a newline. A pack's manifest
    /// must be exactly this, so no byte of it can change unnoticed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("manifests serialize");
        b.push(b'\n');
        b
    }

    /// The pack id its content gives: a ULID whose time is `created_at` and
    /// whose random part is the sha256 of the manifest without its id.
    pub fn derived_id(&self) -> String {
        let blank = Manifest {
            pack_id: String::new(),
            ..self.clone()
        };
        let digest = Sha256::digest(blank.to_bytes());
        let mut random: u128 = 0;
        for b in &digest[..10] {
            random = (random << 8) | u128::from(*b);
        }
        let ms = parse_rfc3339(&self.created_at)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
            .unwrap_or(0);
        format!("pack_{}", ulid::Ulid::from_parts(ms, random))
    }
}

/// A pack in memory: its manifest and every file's bytes by path.
#[derive(Debug, Clone)]
pub struct Pack {
    /// The manifest.
    pub manifest: Manifest,
    /// The files the manifest lists.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// How to take a snapshot.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Only the run's ledger events from the one with this seq on.
    pub ledger_since: Option<u64>,
    /// Write a zip file instead of a folder.
    pub zip: bool,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn jsonl(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        out.extend(serde_json::to_vec(v).expect("JSON values serialize"));
        out.push(b'\n');
    }
    out
}

/// The newest commit at or below `tip` that is not a RESUME_SNAPSHOT event
/// (following first parents): the state a snapshot describes.
fn state_commit(store: &Store, tip: Oid) -> Result<Oid> {
    let mut at = tip;
    loop {
        let info = store.commit_info(at)?;
        let parsed = parse_message(&info.message);
        if parsed.trailer("Cairn-Event") != Some(EventType::ResumeSnapshot.as_str()) {
            return Ok(at);
        }
        match info.parents.first() {
            Some(p) => at = *p,
            None => return Ok(at),
        }
    }
}

/// The id of a store: its first commit, which every clone shares.
pub fn store_id(store: &Store) -> Result<String> {
    let tip = store.require_tip()?;
    Ok(store.root_commit(tip)?.to_string())
}

fn store_name(store: &Store, commit: Oid) -> Result<String> {
    let name = match store.read_file(commit, layout::CONFIG)? {
        Some(bytes) => crate::store::parse_yaml(layout::CONFIG, &bytes)
            .ok()
            .and_then(|v| {
                v.pointer("/store/name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }),
        None => None,
    };
    Ok(name.unwrap_or_else(|| "cairn".to_string()))
}

/// Builds the pack of `run_id` as the store holds it at `commit`.
pub fn build(store: &Store, commit: Oid, run_id: &str, opts: &SnapshotOptions) -> Result<Pack> {
    let ws_path = layout::working_set(run_id);
    let ws_bytes = store
        .read_file(commit, &ws_path)?
        .ok_or_else(|| Error::RunNotFound {
            run_id: run_id.to_string(),
        })?;
    let ws = WorkingSet::from_bytes(&ws_path, &ws_bytes)?;
    let run_dir = layout::run_dir(run_id);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(WORKING_SET.into(), ws_bytes);

    // Episodes, by ordinal.
    let mut episodes = Vec::new();
    for (path, blob, _) in store.walk_files(commit, &format!("{run_dir}/episodes"))? {
        if layout::schema_for(&path) == Some("episode") {
            let ep = Episode::from_bytes(&path, &store.read_blob(blob)?)?;
            episodes.push(ep);
        }
    }
    episodes.sort_by(|a, b| (a.ordinal, &a.episode_id).cmp(&(b.ordinal, &b.episode_id)));
    let last_tag = episodes.last().map(|e| e.tag.clone());
    let episodes: Vec<Value> = episodes
        .iter()
        .map(|e| serde_json::to_value(e).expect("episodes serialize"))
        .collect();
    files.insert(EPISODES.into(), jsonl(&episodes));

    // The run's ledger events, from the first with seq >= since.
    let q = LogQuery {
        run_id: Some(run_id.to_string()),
        ..LogQuery::default()
    };
    let mut events = ledger::events_between(store, commit, None, &q)?;
    if let Some(since) = opts.ledger_since {
        let first = events
            .iter()
            .position(|e| e.seq.is_some_and(|s| s >= since))
            .unwrap_or(events.len());
        events.drain(..first);
    }
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).expect("events serialize"))
        .collect();
    files.insert(LEDGER.into(), jsonl(&events));

    // Memory of the run's scopes that a run uses: active and candidate.
    let mut dirs = vec![
        layout::memory_scope_dir("global", None),
        layout::memory_scope_dir("run", Some(run_id)),
    ];
    if let Some(p) = &ws.project {
        dirs.push(layout::memory_scope_dir("project", Some(p)));
    }
    let mut memory = Vec::new();
    for dir in &dirs {
        for (path, blob, _) in store.walk_files(commit, dir)? {
            if !path.ends_with(".yaml") {
                continue;
            }
            let item = MemoryItem::from_bytes(&path, &store.read_blob(blob)?)?;
            // Only the items of this folder (global's walk skips nothing else).
            if item.path() != path {
                continue;
            }
            if matches!(item.status, ItemStatus::Active | ItemStatus::Candidate) {
                memory.push((path, serde_json::to_value(&item).expect("items serialize")));
            }
        }
    }
    memory.sort_by(|a, b| a.0.cmp(&b.0));
    let memory: Vec<Value> = memory.into_iter().map(|(_, v)| v).collect();
    files.insert(MEMORY.into(), jsonl(&memory));

    // Interactions, with their path inside the run folder.
    let mut interactions = Vec::new();
    for (path, blob, _) in store.walk_files(commit, &format!("{run_dir}/interactions"))? {
        if layout::schema_for(&path) == Some("interaction") {
            let value = crate::store::parse_yaml(&path, &store.read_blob(blob)?)?;
            let rel = path[run_dir.len() + 1..].to_string();
            interactions.push(json!({"path": rel, "interaction": value}));
        }
    }
    files.insert(INTERACTIONS.into(), jsonl(&interactions));

    if let Some(p) = &ws.project {
        if let Some(bytes) = store.read_file(commit, &layout::project_state(p))? {
            files.insert(STATE.into(), bytes);
        }
    }

    let created_at = store.event_of(commit)?.timestamp;
    let mut pointers = BTreeMap::new();
    pointers.insert("ledger_last_seq".to_string(), json!(ws.update_seq));
    pointers.insert(
        "source_store_id".to_string(),
        json!(store.root_commit(commit)?.to_string()),
    );
    if let Some(s) = opts.ledger_since {
        pointers.insert("ledger_since_seq".to_string(), json!(s));
    }
    let mut manifest = Manifest {
        schema_version: schema::SCHEMA_VERSION.into(),
        pack_id: String::new(),
        created_at,
        source: Source {
            store: store_name(store, commit)?,
            run_id: run_id.to_string(),
            head_commit: commit.to_string(),
            last_episode_tag: last_tag,
        },
        files: files
            .iter()
            .map(|(path, bytes)| FileEntry {
                path: path.clone(),
                sha256: sha256_hex(bytes),
                bytes: bytes.len() as u64,
            })
            .collect(),
        pointers,
    };
    manifest.pack_id = manifest.derived_id();
    Ok(Pack { manifest, files })
}

/// What [`snapshot`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshotted {
    /// The pack id.
    pub pack_id: String,
    /// Where the pack was written.
    pub path: PathBuf,
    /// The commit the pack describes.
    pub head_commit: String,
    /// The manifest.
    pub manifest: Manifest,
    /// The RESUME_SNAPSHOT commit (an earlier one when this state was
    /// already snapshotted).
    pub commit: String,
    /// Whether that event was recorded before (nothing new was committed).
    pub replayed: bool,
}

/// Snapshots `run_id` into a pack at `out` (or `<dir>/<pack_id>[.zip]`),
/// then records it (RESUME_SNAPSHOT). The pack is only exported: the store
/// keeps the event, which names the pack and its commit, not the bytes.
pub fn snapshot(
    store: &Store,
    run_id: &str,
    opts: &SnapshotOptions,
    out: Option<&Path>,
    dir: &Path,
) -> Result<Snapshotted> {
    let tip = store.require_tip()?;
    let commit = state_commit(store, tip)?;
    let pack = build(store, commit, run_id, opts)?;
    let id = pack.manifest.pack_id.clone();
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => dir.join(if opts.zip {
            format!("{id}.zip")
        } else {
            id.clone()
        }),
    };
    write_pack(&pack, &path, opts.zip)?;
    let manifest_sha = sha256_hex(&pack.manifest.to_bytes());
    let key = format!("resume-snapshot:{id}");
    let committed = store.transact(
        Some(&crate::idempotency::Keyed::new(
            &key,
            "resume.snapshot",
            &[json!(run_id), json!(manifest_sha)],
        )),
        |_| {
            Ok(Mutation {
                changes: Changes::new(),
                tags: Vec::new(),
                event: EventDraft::new(
                    EventType::ResumeSnapshot,
                    format!("snapshot {run_id} as {id}"),
                )
                .run(run_id, None)
                .payload(json!({
                    "pack_id": id,
                    "head_commit": commit.to_string(),
                    "manifest_sha256": manifest_sha,
                    "files": pack.manifest.files.len(),
                    "ledger_last_seq": pack.manifest.pointers.get("ledger_last_seq"),
                })),
            })
        },
    )?;
    Ok(Snapshotted {
        pack_id: id,
        path,
        head_commit: commit.to_string(),
        manifest: pack.manifest,
        commit: committed.commit.to_string(),
        replayed: committed.replayed,
    })
}

fn conflict_exists(path: &Path) -> Error {
    Error::Conflict {
        subject: path.display().to_string(),
        rule: "PACK_EXISTS",
        message: "already exists; choose another --out or remove it".into(),
    }
}

/// Writes a pack as a folder or a zip (entries sorted, fixed times and
/// modes, so the same pack gives the same bytes). Written beside `path`
/// first and renamed into place; an existing `path` is refused.
pub fn write_pack(pack: &Pack, path: &Path, zip: bool) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(conflict_exists(path));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pack".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_file(&tmp);
    let mut all: Vec<(&str, Vec<u8>)> = vec![(MANIFEST, pack.manifest.to_bytes())];
    for (p, b) in &pack.files {
        all.push((p.as_str(), b.clone()));
    }
    all.sort_by(|a, b| a.0.cmp(b.0));
    let written = if zip {
        write_zip(&tmp, &all)
    } else {
        write_dir(&tmp, &all)
    };
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))
}

fn write_dir(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    for (p, b) in files {
        let f = dir.join(p);
        let mut file = fs::File::create(&f).map_err(|e| Error::io("create", &f, e))?;
        file.write_all(b)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &f, e))?;
    }
    Ok(())
}

fn write_zip(path: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let file = fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    let mut z = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::DEFAULT)
        .unix_permissions(0o644);
    let zerr = |e: zip::result::ZipError| {
        Error::io("write zip", path, std::io::Error::other(e.to_string()))
    };
    for (p, b) in files {
        z.start_file(*p, options).map_err(zerr)?;
        z.write_all(b)
            .map_err(|e| Error::io("write zip", path, e))?;
    }
    let file = z.finish().map_err(zerr)?;
    file.sync_all().map_err(|e| Error::io("sync", path, e))
}

fn hostile(entry: &str, rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        file: entry.to_string(),
        pointer: String::new(),
        rule,
        message: message.into(),
    }
}

fn tampered(entry: &str, message: impl Into<String>) -> Error {
    Error::Integrity {
        subject: entry.to_string(),
        message: message.into(),
    }
}

/// Whether `p` is a plain relative pack path: `/`-separated, no leading
/// `/`, no empty, `.` or `..` segment, no backslash, colon or control character.
pub fn safe_entry(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.chars().any(|c| c.is_control() || c == '\\' || c == ':')
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Reads a pack (a folder or a zip) and verifies all of it (see the module
/// notes) without touching any store.
pub fn read_pack(path: &Path) -> Result<Pack> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("open pack", path, e))?;
    let label = path.display().to_string();
    let entries = if meta.file_type().is_symlink() {
        return Err(hostile(&label, "pack_symlink", "a pack is not a symlink"));
    } else if meta.is_dir() {
        read_dir_entries(path)?
    } else if meta.is_file() {
        read_zip_entries(path, meta.len())?
    } else {
        return Err(hostile(
            &label,
            "pack_file_type",
            "not a folder or a zip file",
        ));
    };
    verify(entries)
}

fn check_entries(count: usize, label: &str) -> Result<()> {
    if count > MAX_ENTRIES {
        return Err(hostile(
            label,
            "pack_entries",
            format!("holds {count} entries, over the limit of {MAX_ENTRIES}"),
        ));
    }
    Ok(())
}

fn read_dir_entries(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let label = dir.display().to_string();
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let mut count = 0usize;
    for e in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1) {
        let e = e.map_err(|e| Error::io("read pack", dir, std::io::Error::other(e.to_string())))?;
        count += 1;
        check_entries(count, &label)?;
        let rel = e
            .path()
            .strip_prefix(dir)
            .expect("walked paths are under the root")
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        let ft = e.file_type();
        if ft.is_symlink() {
            return Err(hostile(&rel, "pack_symlink", "a pack entry is a symlink"));
        }
        if ft.is_dir() {
            continue;
        }
        if !ft.is_file() {
            return Err(hostile(
                &rel,
                "pack_file_type",
                "a pack entry is not a regular file (a device, fifo or socket)",
            ));
        }
        if !safe_entry(&rel) {
            return Err(hostile(&rel, "pack_path", "not a plain relative path"));
        }
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        total = total.saturating_add(size);
        if total > MAX_PACK_BYTES {
            return Err(hostile(
                &rel,
                "pack_too_large",
                format!("the pack holds more than {MAX_PACK_BYTES} bytes"),
            ));
        }
        let mut buf = Vec::with_capacity(size as usize);
        fs::File::open(e.path())
            .and_then(|f| f.take(size + 1).read_to_end(&mut buf))
            .map_err(|err| Error::io("read", e.path(), err))?;
        if buf.len() as u64 != size {
            return Err(tampered(&rel, "changed while it was read"));
        }
        out.insert(rel, buf);
    }
    Ok(out)
}

fn read_zip_entries(path: &Path, size: u64) -> Result<BTreeMap<String, Vec<u8>>> {
    let label = path.display().to_string();
    if size > MAX_PACK_BYTES {
        return Err(hostile(
            &label,
            "pack_too_large",
            format!("{size} bytes, over the limit of {MAX_PACK_BYTES}"),
        ));
    }
    let file = fs::File::open(path).map_err(|e| Error::io("open pack", path, e))?;
    let bad_zip =
        |e: zip::result::ZipError| hostile(&label, "pack_zip", format!("not a readable zip: {e}"));
    let records = central_records(path)?;
    let mut z = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(bad_zip)?;
    check_entries(z.len().max(records.unwrap_or(0)), &label)?;
    // The reader keeps one entry per name: more records than names means
    // a name is there twice.
    if records.is_some_and(|n| n != z.len()) {
        return Err(hostile(
            &label,
            "pack_duplicate",
            "the zip holds an entry name twice",
        ));
    }
    // First pass: names, kinds and declared sizes, nothing inflated.
    let mut names = BTreeSet::new();
    let mut wanted = Vec::new();
    let mut total = 0u64;
    for i in 0..z.len() {
        let f = z.by_index_raw(i).map_err(bad_zip)?;
        let name = f.name().map_err(bad_zip)?.into_owned();
        if !names.insert(name.clone()) {
            return Err(hostile(
                &name,
                "pack_duplicate",
                "the zip holds this entry twice",
            ));
        }
        if f.is_symlink() {
            return Err(hostile(&name, "pack_symlink", "a pack entry is a symlink"));
        }
        let dir = f.is_dir();
        let bare = name.trim_end_matches('/');
        if !safe_entry(bare) {
            return Err(hostile(
                &name,
                "pack_path",
                "not a plain relative path (zip slip)",
            ));
        }
        if let Some(mode) = f.unix_mode() {
            let kind = mode & 0o170000;
            if kind != 0 && kind != 0o100000 && kind != 0o040000 {
                return Err(hostile(
                    &name,
                    "pack_file_type",
                    "a pack entry is not a regular file (a device, fifo or socket)",
                ));
            }
        }
        if dir {
            continue;
        }
        if !matches!(
            f.compression(),
            zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated
        ) {
            return Err(hostile(
                &name,
                "pack_zip",
                "only stored or deflated entries",
            ));
        }
        let (declared, packed) = (f.size(), f.compressed_size());
        total = total.saturating_add(declared);
        if total > MAX_PACK_BYTES {
            return Err(hostile(
                &name,
                "pack_too_large",
                format!("the entries declare more than {MAX_PACK_BYTES} bytes"),
            ));
        }
        if declared > 1024 * 1024 && declared / packed.max(1) > MAX_RATIO {
            return Err(hostile(
                &name,
                "pack_ratio",
                format!(
                    "inflates {declared} bytes from {packed}, over the ratio limit of {MAX_RATIO} (a zip bomb?)"
                ),
            ));
        }
        wanted.push((i, name, declared));
    }
    // Second pass: inflate, never past the declared size.
    let mut out = BTreeMap::new();
    for (i, name, declared) in wanted {
        let f = z.by_index(i).map_err(bad_zip)?;
        let mut buf = Vec::with_capacity(declared as usize);
        f.take(declared + 1)
            .read_to_end(&mut buf)
            .map_err(|e| tampered(&name, format!("cannot be inflated: {e}")))?;
        if buf.len() as u64 != declared {
            return Err(tampered(
                &name,
                format!(
                    "inflates to {} bytes, not the {declared} it declares",
                    buf.len()
                ),
            ));
        }
        out.insert(name, buf);
    }
    Ok(out)
}

/// The number of central-directory records the zip's end record declares
/// (`None` for a zip64 archive, whose count lives elsewhere).
fn central_records(path: &Path) -> Result<Option<usize>> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path).map_err(|e| Error::io("open pack", path, e))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let tail = len.min(65_535 + 22);
    let mut buf = vec![0u8; tail as usize];
    f.seek(SeekFrom::Start(len - tail))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| Error::io("read pack", path, e))?;
    let Some(at) = (0..buf.len().saturating_sub(21))
        .rev()
        .find(|&i| buf[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
    else {
        return Ok(None);
    };
    let total = u16::from_le_bytes([buf[at + 10], buf[at + 11]]);
    Ok((total != u16::MAX).then_some(usize::from(total)))
}

/// Checks the manifest against the entries: every listed file present with
/// its size and hash, nothing else, the manifest canonical with the id its
/// content gives.
fn verify(mut entries: BTreeMap<String, Vec<u8>>) -> Result<Pack> {
    let raw = entries
        .remove(MANIFEST)
        .ok_or_else(|| tampered(MANIFEST, "the pack has no manifest"))?;
    let value: Value = serde_json::from_slice(&raw)
        .map_err(|e| tampered(MANIFEST, format!("is not valid JSON: {e}")))?;
    if let Some(files) = value.get("files").and_then(Value::as_array) {
        for (i, f) in files.iter().enumerate() {
            if let Some(p) = f.get("path").and_then(Value::as_str) {
                if !safe_entry(p) {
                    return Err(Error::Invalid {
                        file: MANIFEST.into(),
                        pointer: format!("/files/{i}/path"),
                        rule: "pack_path",
                        message: format!("{p:?} is not a plain relative path"),
                    });
                }
            }
        }
    }
    schema::validate("resume_pack_manifest", MANIFEST, &value)?;
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| tampered(MANIFEST, format!("does not read as a manifest: {e}")))?;
    if manifest.to_bytes() != raw {
        return Err(tampered(
            MANIFEST,
            "is not in canonical form (it was edited after the pack was written)",
        ));
    }
    if manifest.derived_id() != manifest.pack_id {
        return Err(tampered(
            MANIFEST,
            format!(
                "its content does not give its pack id {} (it was edited after the pack was written)",
                manifest.pack_id
            ),
        ));
    }
    let mut listed = BTreeSet::new();
    let mut files = BTreeMap::new();
    for f in &manifest.files {
        if !listed.insert(f.path.clone()) {
            return Err(hostile(
                &f.path,
                "pack_duplicate",
                "listed twice in the manifest",
            ));
        }
        let bytes = entries
            .remove(&f.path)
            .ok_or_else(|| tampered(&f.path, "is listed in the manifest but missing"))?;
        if bytes.len() as u64 != f.bytes || sha256_hex(&bytes) != f.sha256 {
            return Err(tampered(
                &f.path,
                format!(
                    "does not match its manifest entry (sha256 {}, {} bytes)",
                    f.sha256, f.bytes
                ),
            ));
        }
        files.insert(f.path.clone(), bytes);
    }
    if let Some(extra) = entries.keys().next() {
        return Err(tampered(extra, "is in the pack but not in its manifest"));
    }
    Ok(Pack { manifest, files })
}

/// The validated content of a pack.
#[derive(Debug, Clone)]
pub struct Contents {
    /// The working set.
    pub working_set: WorkingSet,
    /// Episodes, by ordinal.
    pub episodes: Vec<Episode>,
    /// Ledger events (as `ledger_event` values).
    pub ledger: Vec<Value>,
    /// Memory items.
    pub memory: Vec<MemoryItem>,
    /// Interactions: (path inside the run folder, value).
    pub interactions: Vec<(String, Value)>,
    /// The project's trusted state, if packed.
    pub state: Option<Value>,
}

fn lines(file: &str, bytes: &[u8]) -> Result<Vec<Value>> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Parse {
        file: file.into(),
        format: "JSON lines",
        message: e.to_string(),
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| Error::Parse {
                file: format!("{file}:{}", n + 1),
                format: "JSON",
                message: e.to_string(),
            })
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(schema_name: &str, file: &str, v: Value) -> Result<T> {
    schema::validate(schema_name, file, &v)?;
    serde_json::from_value(v).map_err(|e| tampered(file, e.to_string()))
}

impl Pack {
    /// Validates every file against its schema and reads it.
    pub fn contents(&self) -> Result<Contents> {
        let run = &self.manifest.source.run_id;
        for name in self.files.keys() {
            if ![WORKING_SET, EPISODES, LEDGER, MEMORY, INTERACTIONS, STATE]
                .contains(&name.as_str())
            {
                return Err(hostile(name, "pack_file", "not a file resume packs hold"));
            }
        }
        let file = |n: &str| -> Result<&[u8]> {
            self.files
                .get(n)
                .map(Vec::as_slice)
                .ok_or_else(|| tampered(n, "the pack has no such file"))
        };
        let working_set = WorkingSet::from_bytes(WORKING_SET, file(WORKING_SET)?)?;
        let wrong_run = |f: &str, r: &str| Error::Invalid {
            file: f.to_string(),
            pointer: "/run_id".into(),
            rule: "pack_run",
            message: format!("belongs to run {r}, not the pack's run {run}"),
        };
        if &working_set.run_id != run {
            return Err(wrong_run(WORKING_SET, &working_set.run_id));
        }
        let mut episodes = Vec::new();
        for (n, v) in lines(EPISODES, file(EPISODES)?)?.into_iter().enumerate() {
            let label = format!("{EPISODES}:{}", n + 1);
            let ep: Episode = typed("episode", &label, v)?;
            if &ep.run_id != run {
                return Err(wrong_run(&label, &ep.run_id));
            }
            if !layout::valid_id(&ep.episode_id) {
                return Err(hostile(&label, "pack_id", "an episode id is not path-safe"));
            }
            episodes.push(ep);
        }
        let mut ledger = Vec::new();
        for (n, v) in lines(LEDGER, file(LEDGER)?)?.into_iter().enumerate() {
            schema::validate("ledger_event", &format!("{LEDGER}:{}", n + 1), &v)?;
            ledger.push(v);
        }
        let mut memory = Vec::new();
        for (n, v) in lines(MEMORY, file(MEMORY)?)?.into_iter().enumerate() {
            let item: MemoryItem = typed("memory_item", &format!("{MEMORY}:{}", n + 1), v)?;
            memory.push(item);
        }
        let mut interactions = Vec::new();
        for (n, v) in lines(INTERACTIONS, file(INTERACTIONS)?)?
            .into_iter()
            .enumerate()
        {
            let label = format!("{INTERACTIONS}:{}", n + 1);
            let rel = v.get("path").and_then(Value::as_str).unwrap_or_default();
            let parts: Vec<&str> = rel.split('/').collect();
            let ok = safe_entry(rel)
                && parts.len() == 3
                && parts[0] == "interactions"
                && parts[2].ends_with(".yaml");
            if !ok {
                return Err(hostile(
                    &label,
                    "pack_path",
                    format!("{rel:?} is not interactions/<folder>/<file>.yaml"),
                ));
            }
            let value = v.get("interaction").cloned().unwrap_or(Value::Null);
            schema::validate("interaction", &label, &value)?;
            interactions.push((rel.to_string(), value));
        }
        let state = match self.files.get(STATE) {
            Some(bytes) => {
                let v = schema::parse_document(STATE, bytes, schema::ParseLimits::default())?;
                schema::validate("project_state", STATE, &v)?;
                Some(v)
            }
            None => None,
        };
        Ok(Contents {
            working_set,
            episodes,
            ledger,
            memory,
            interactions,
            state,
        })
    }
}

/// How to load a pack.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The new run's id (default `run_<ULID>`).
    pub new_run_id: Option<String>,
    /// Continue this existing run instead of booting a new one: its working
    /// set becomes the pack's, at its next seq.
    pub into_run: Option<String>,
    /// Bring memory as it was (active stays active) and the project's
    /// trusted state when the store has none; else memory arrives as
    /// candidates in the review queue and the state is left out.
    pub trust: bool,
}

/// What [`load`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    /// The run the pack was loaded into.
    pub run_id: String,
    /// The pack id.
    pub pack_id: String,
    /// Where the pack came from.
    pub resumed_from: Value,
    /// The working set as loaded.
    pub working_set: WorkingSet,
    /// Memory items written, by id.
    pub memory_added: Vec<String>,
    /// Memory items the store already held (left alone).
    pub memory_skipped: Vec<String>,
    /// The status new memory arrived with: `candidate`, or under `trust`
    /// `active` (each item keeps the status it had in the pack).
    pub memory_status: ItemStatus,
    /// Episodes written (re-tagged under the run).
    pub episodes: usize,
    /// Interactions written.
    pub interactions: usize,
    /// Whether the project's trusted state was written.
    pub state_written: bool,
    /// The RESUME_LOADED commit.
    pub commit: String,
}

/// The pack's working set, open again: resuming a closed run goes on with
/// its work, so the closure (and its final status) stays with the source.
fn reopened(mut ws: WorkingSet) -> WorkingSet {
    if ws.closed.take().is_some() {
        ws.status = crate::working_set::Status::Idle;
    }
    ws
}

/// Verifies the pack at `path` and boots a run from it in one commit
/// (RESUME_LOADED). Nothing is written unless the whole pack verifies.
pub fn load(store: &Store, path: &Path, opts: &LoadOptions, key: Option<&str>) -> Result<Loaded> {
    let pack = read_pack(path)?;
    let c = pack.contents()?;
    load_contents(store, &pack.manifest, &c, opts, key)
}

fn load_contents(
    store: &Store,
    manifest: &Manifest,
    c: &Contents,
    opts: &LoadOptions,
    key: Option<&str>,
) -> Result<Loaded> {
    for id in [&opts.new_run_id, &opts.into_run].into_iter().flatten() {
        if !layout::valid_id(id) {
            return Err(Error::Invalid {
                file: "--new-run-id".into(),
                pointer: "/run_id".into(),
                rule: "pattern",
                message: format!("run id {id:?} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"),
            });
        }
    }
    let resumed_from = json!({
        "pack_id": manifest.pack_id,
        "source_store": manifest.source.store,
        "source_store_id": manifest.pointers.get("source_store_id"),
        "source_run": manifest.source.run_id,
        "source_commit": manifest.source.head_commit,
        "source_seq": c.working_set.update_seq,
        "last_episode_tag": manifest.source.last_episode_tag,
    });
    let status = if opts.trust {
        None
    } else {
        Some(ItemStatus::Candidate)
    };
    let mut report = None;
    let committed = store.transact(
        crate::idempotency::keyed(key, "resume.load", || {
            vec![
                json!(sha256_hex(&manifest.to_bytes())),
                json!(opts.new_run_id),
                json!(opts.into_run),
                json!(opts.trust),
            ]
        })
        .as_ref(),
        |snap| {
            let now = snap.now();
            let tip = snap.commit();
            let (run_id, ws) = match &opts.into_run {
                Some(into) => {
                    let current = crate::working_set::read(snap, into)?;
                    crate::working_set::refuse_closed(&current)?;
                    let mut ws = reopened(c.working_set.clone());
                    ws.run_id = into.clone();
                    ws.update_seq = current.update_seq + 1;
                    ws.created_at = current.created_at.clone();
                    ws.updated_at = crate::event::rfc3339(now);
                    (into.clone(), ws)
                }
                None => {
                    let id = opts
                        .new_run_id
                        .clone()
                        .unwrap_or_else(|| ledger::new_id("run", now));
                    if snap.read(&layout::working_set(&id))?.is_some() {
                        return Err(Error::RunExists { run_id: id });
                    }
                    // A new run's ledger starts at seq 0 (fsck keeps seqs gap-free);
                    // the source's seq rides in `resumed_from.source_seq`.
                    let mut ws = reopened(c.working_set.clone());
                    ws.run_id = id.clone();
                    ws.update_seq = 0;
                    (id, ws)
                }
            };
            let mut changes = Changes::new();
            let mut tags = Vec::new();
            changes.insert(
                layout::working_set(&run_id),
                Some(ws.to_yaml().into_bytes()),
            );
            let mut episodes = 0;
            let mut renamed = serde_json::Map::new();
            for ep in &c.episodes {
                // Episode ids are unique across a store (the mirror lists them by
                // id): each loaded episode gets a new one, stamped with its own
                // time; the payload maps old to new.
                let at = parse_rfc3339(&ep.created_at).unwrap_or(now);
                let new_id = ledger::new_id("ep", at);
                renamed.insert(ep.episode_id.clone(), json!(new_id));
                let path = layout::episode(&run_id, &new_id);
                let mut ep = ep.clone();
                ep.episode_id = new_id;
                ep.run_id = run_id.clone();
                ep.working_set.run_id = run_id.clone();
                ep.tag = layout::episode_tag(&run_id, &ep.episode_id);
                let yaml = ep.to_yaml();
                tags.push((ep.tag.clone(), yaml.clone()));
                changes.insert(path, Some(yaml.into_bytes()));
                episodes += 1;
            }
            let mut interactions = 0;
            for (rel, value) in &c.interactions {
                let mut v = value.clone();
                if v.get("run_id").is_some() {
                    v["run_id"] = json!(run_id);
                }
                let path = format!("{}/{rel}", layout::run_dir(&run_id));
                if snap.read(&path)?.is_none() {
                    changes.insert(path, Some(schema::to_yaml(&v).into_bytes()));
                    interactions += 1;
                }
            }
            // Items the store holds already (by id) are left alone.
            let mut held = BTreeSet::new();
            if let Some(tip) = tip {
                for (path, _, _) in store.walk_files(tip, layout::MEMORY)? {
                    if let Some(id) = path
                        .rsplit('/')
                        .next()
                        .and_then(|f| f.strip_suffix(".yaml"))
                    {
                        held.insert(id.to_string());
                    }
                }
            }
            let (mut added, mut skipped, mut items) = (Vec::new(), Vec::new(), Vec::new());
            for item in &c.memory {
                if held.contains(&item.id) {
                    skipped.push(item.id.clone());
                    continue;
                }
                let mut item = item.clone();
                if item.scope == "run" {
                    item.scope_id = Some(run_id.clone());
                }
                if let Some(s) = status {
                    if item.status != s {
                        item.status = s;
                        item.updated_at = crate::event::rfc3339(now);
                    }
                }
                // Links to items the pack does not carry would dangle here.
                item.supersedes = None;
                item.superseded_by = None;
                let pack_ref = format!("pack:{}", manifest.pack_id);
                if !item.source_refs.contains(&pack_ref) {
                    item.source_refs.push(pack_ref);
                }
                changes.insert(item.path(), Some(item.to_yaml().into_bytes()));
                items.push(ItemChange {
                    id: item.id.clone(),
                    status: item.status,
                });
                added.push(item.id.clone());
            }
            let mut state_written = false;
            if let (true, Some(p), Some(state)) = (opts.trust, &ws.project, &c.state) {
                let path = layout::project_state(p);
                if snap.read(&path)?.is_none()
                    && state.get("project").and_then(Value::as_str) == Some(p)
                {
                    changes.insert(path, Some(schema::to_yaml(state).into_bytes()));
                    state_written = true;
                }
            }
            let item_status = status.unwrap_or(ItemStatus::Active);
            let subject = format!(
                "resume {run_id} from {} (run {} at {} of {})",
                manifest.pack_id,
                manifest.source.run_id,
                &manifest.source.head_commit[..12],
                manifest.source.store
            );
            report = Some(Loaded {
                run_id: run_id.clone(),
                pack_id: manifest.pack_id.clone(),
                resumed_from: resumed_from.clone(),
                working_set: ws.clone(),
                memory_added: added.clone(),
                memory_skipped: skipped.clone(),
                memory_status: item_status,
                episodes,
                interactions,
                state_written,
                commit: String::new(),
            });
            Ok(Mutation {
                changes,
                tags,
                event: EventDraft::new(EventType::ResumeLoaded, subject)
                    .run(&run_id, Some(ws.update_seq))
                    .payload(json!({
                        "resumed_from": resumed_from,
                        "into_existing_run": opts.into_run.is_some(),
                        "trusted": opts.trust,
                        "episodes": renamed,
                        "interactions": interactions,
                        "memory_skipped": skipped,
                        "state_written": state_written,
                        "items": items,
                    })),
            })
        },
    )?;
    let mut report = match report {
        Some(r) if !committed.replayed => r,
        _ => {
            // An idempotent replay: report what the earlier commit holds.
            let run_id = committed.event.run_id.clone().unwrap_or_default();
            let ws = crate::working_set::show_at_commit(store, &run_id, committed.commit)?;
            Loaded {
                run_id,
                pack_id: manifest.pack_id.clone(),
                resumed_from,
                working_set: ws,
                memory_added: Vec::new(),
                memory_skipped: Vec::new(),
                memory_status: status.unwrap_or(ItemStatus::Active),
                episodes: 0,
                interactions: 0,
                state_written: false,
                commit: String::new(),
            }
        }
    };
    report.commit = committed.commit.to_string();
    Ok(report)
}
