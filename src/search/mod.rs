//! Memory search and ledger queries on a tantivy index under `.cairn/index/`.
//!
//! Invariants:
//! - The index is derived state: it records (in tantivy's commit payload) the
//!   store commit it reflects, and before every query it catches up from that
//!   commit to the tip — memory items through a git diff (only changed items
//!   are re-indexed), ledger events through the commits made since. Results
//!   therefore always reflect the tip.
//! - A missing, unreadable, foreign (its commit is not in this repository or
//!   not an ancestor of the tip) or outdated-format index is rebuilt from the
//!   store automatically; a query never fails because of the index if a
//!   rebuild can fix it.
//! - One writer at a time (`.cairn/index.lock`, an OS lock); readers use
//!   tantivy snapshots and never block the store's writers.
//! - Ranking is deterministic: equal scores break ties by id, also where
//!   the candidates are cut (every document tied with the last is taken).
//! - Each ledger event is stored whole (its JSON, changed paths included),
//!   numbered in the order of a history walk from the tip, oldest first: the
//!   ledger is read back from the index without a diff per commit. A range
//!   of new commits that holds a merge renumbers every event, so the order
//!   stays that of the walk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::Oid;
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, PhraseQuery, Query, RangeQuery,
    TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value as _, FAST, INDEXED,
    STORED, STRING,
};
use tantivy::{doc, Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};
use time::OffsetDateTime;

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::event::parse_rfc3339;
use crate::layout;
use crate::ledger::{self, Event, LogQuery};
use crate::memory::{ItemStatus, MemoryItem, ScopeFilter};
use crate::store::{Store, StoreLock};

mod analysis;
mod cache;
mod dates;

use analysis::{analyze, english, identifiers};
pub use analysis::{IdentifierStream, IdentifierTokenizer};

/// Bumped whenever the index layout or analysis changes: older indexes are rebuilt.
const FORMAT: u64 = 5;
/// The most query terms honoured; longer queries are cut with a warning.
pub const MAX_QUERY_TERMS: usize = 256;
/// Fields a query may name as `field:value`.
pub const QUERY_FIELDS: [&str; 9] = [
    "content", "tags", "type", "scope", "scope_id", "status", "project", "run", "id",
];

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    doc_kind: Field,
    content: Field,
    content_ident: Field,
    tags: Field,
    scope: Field,
    scope_id: Field,
    kind: Field,
    status: Field,
    project: Field,
    run: Field,
    created: Field,
    updated: Field,
    expires: Field,
    confidence: Field,
    event_type: Field,
    actor: Field,
    ordinal: Field,
    /// An event's JSON, stored only.
    event: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = |tokenizer: &str, stored: bool| {
        let o = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored {
            o.set_stored()
        } else {
            o
        }
    };
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED | FAST),
        doc_kind: b.add_text_field("doc_kind", STRING),
        content: b.add_text_field("content", text("cairn_en", true)),
        content_ident: b.add_text_field("content_ident", text("cairn_ident", false)),
        // Fast too (the whole text as one value): ranking reads the tags
        // of every candidate, the stored document only of the hits.
        tags: b.add_text_field("tags", text("cairn_ident", true).set_fast("raw")),
        scope: b.add_text_field("scope", STRING | STORED | FAST),
        scope_id: b.add_text_field("scope_id", STRING | STORED),
        kind: b.add_text_field("type", STRING | STORED),
        status: b.add_text_field("status", STRING | STORED),
        project: b.add_text_field("project", STRING | STORED),
        run: b.add_text_field("run", STRING | STORED),
        created: b.add_i64_field("created", INDEXED | FAST | STORED),
        updated: b.add_i64_field("updated", INDEXED | FAST | STORED),
        expires: b.add_i64_field("expires", INDEXED | FAST | STORED),
        confidence: b.add_f64_field("confidence", FAST | STORED),
        event_type: b.add_text_field("event_type", STRING),
        actor: b.add_text_field("actor", STRING),
        ordinal: b.add_u64_field("ordinal", INDEXED | FAST | STORED),
        event: b.add_text_field("event", STORED),
    };
    (b.build(), fields)
}

/// What the index records about itself in tantivy's commit payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Payload {
    format: u64,
    commit: String,
    ordinal: u64,
}

/// Reports progress of long index builds: (done, total).
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// The state of the index, for `cairn index status`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStatus {
    /// Where it lives.
    pub path: PathBuf,
    /// The commit it reflects.
    pub commit: Option<String>,
    /// The branch tip.
    pub tip: Option<String>,
    /// Whether it reflects the tip.
    pub current: bool,
    /// Memory items indexed.
    pub memory_items: u64,
    /// Ledger events indexed.
    pub events: u64,
    /// Captured interactions indexed (searched only with `--type interaction`).
    pub interactions: u64,
    /// Why it was (re)built during this call, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
}

/// An open, caught-up index.
pub struct SearchIndex {
    index: Index,
    fields: Fields,
    path: PathBuf,
    /// Why the index was rebuilt while opening, if it was.
    pub rebuilt: Option<String>,
    /// The segments as they were when the index lock was released: taken
    /// under the lock, so another thread or process catching up (whose
    /// commit garbage-collects merged segments) or rebuilding cannot pull
    /// files from under this reader. Open files outlive their unlinking.
    pinned: Option<Searcher>,
    /// The median item length of the pinned searcher (for the length
    /// prior), worked out on first use and shared by kept handles.
    median: std::sync::Arc<std::sync::OnceLock<f64>>,
    /// The ranking columns of each segment, opened on first use and
    /// shared by kept handles.
    columns: ColumnCache,
}

/// Ranking columns by segment.
type ColumnCache =
    std::sync::Arc<std::sync::Mutex<HashMap<tantivy::index::SegmentId, std::sync::Arc<Columns>>>>;

fn index_dir(store: &Store) -> PathBuf {
    store.local_dir().join("index")
}

fn ts(s: &str) -> i64 {
    parse_rfc3339(s).map(|t| t.unix_timestamp()).unwrap_or(0)
}

/// Far future, for items that never expire (so "not expired" is one range).
const NEVER: i64 = i64::MAX / 2;

fn tantivy_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Integrity {
        subject: "search index".into(),
        message: format!("{context}: {e}"),
    }
}

/// Runs `f`, a read of the index, turning a panic into an INTEGRITY error
/// so that the caller rebuilds: tantivy does not check its files' checksums
/// when it reads them, and a damaged file can make it index out of bounds.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(tantivy_err(
            what,
            "a damaged index file made the reader fail",
        ))
    })
}

/// Checks the CRC in the footer of every file of the index's segments that
/// changed (size, mtime, inode) since it was last checked, as recorded in
/// `.cairn/index-verified`: tantivy reads without checking, and a damaged
/// file can give wrong answers rather than errors. A file that fails is an
/// INTEGRITY error, which makes the caller rebuild.
fn verify_checksums(index: &Index, dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let cache = dir.with_file_name("index-verified");
    let known: std::collections::HashSet<String> = std::fs::read_to_string(&cache)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let metas = index
        .searchable_segment_metas()
        .map_err(|e| tantivy_err("read meta.json", e))?;
    use tantivy::index::SegmentComponent as C;
    let components = [
        C::Postings,
        C::Positions,
        C::Terms,
        C::Store,
        C::FastFields,
        C::FieldNorms,
        C::Delete,
    ];
    let mut files: Vec<PathBuf> = metas
        .iter()
        .flat_map(|m| components.iter().map(|c| m.relative_path(c.clone())))
        .collect();
    files.sort();
    files.dedup();
    let mut lines = Vec::with_capacity(files.len());
    for rel in files {
        // A file a segment does not have (no deletes yet) is left to the reader.
        let Ok(meta) = std::fs::metadata(dir.join(&rel)) else {
            continue;
        };
        let line = format!(
            "{} {} {}.{} {}",
            rel.display(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        );
        if !known.contains(&line) {
            let sound = index
                .directory()
                .validate_checksum(&rel)
                .map_err(|e| tantivy_err("verify", e))?;
            if !sound {
                return Err(tantivy_err(
                    "verify",
                    format!("{} fails its checksum", rel.display()),
                ));
            }
        }
        lines.push(line);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    // Only a cache: if it cannot be written, the files are checked again next time.
    let _ = crate::store::write_atomic(&cache, text.as_bytes(), false);
    Ok(())
}

impl SearchIndex {
    fn register(index: &Index) {
        index.tokenizers().register("cairn_en", english());
        index.tokenizers().register("cairn_ident", identifiers());
    }

    fn create(path: &Path) -> Result<SearchIndex> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| Error::io("remove", path, e))?;
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(path, schema).map_err(|e| tantivy_err("create", e))?;
        Self::register(&index);
        Ok(SearchIndex {
            index,
            fields,
            path: path.to_path_buf(),
            rebuilt: None,
            pinned: None,
            median: Default::default(),
            columns: Default::default(),
        })
    }

    fn open_existing(path: &Path) -> Result<(SearchIndex, Payload)> {
        let index = Index::open_in_dir(path).map_err(|e| tantivy_err("open", e))?;
        let (expected, fields) = schema();
        if index.schema() != expected {
            return Err(tantivy_err("open", "schema differs"));
        }
        Self::register(&index);
        let metas = index
            .load_metas()
            .map_err(|e| tantivy_err("read meta.json", e))?;
        let payload: Payload = metas
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| tantivy_err("open", "no cairn payload"))?;
        if payload.format != FORMAT {
            return Err(tantivy_err(
                "open",
                format!("format {} is outdated", payload.format),
            ));
        }
        verify_checksums(&index, path)?;
        // Touch every segment so truncated or missing files are found now.
        let reader = index.reader().map_err(|e| tantivy_err("open reader", e))?;
        let searcher = reader.searcher();
        for seg in searcher.segment_readers() {
            seg.get_store_reader(1)
                .map_err(|e| tantivy_err("open segment", e))?;
        }
        Ok((
            SearchIndex {
                index,
                fields,
                path: path.to_path_buf(),
                rebuilt: None,
                pinned: None,
                median: Default::default(),
                columns: Default::default(),
            },
            payload,
        ))
    }

    fn writer(&self) -> Result<IndexWriter> {
        self.index
            .writer_with_num_threads(1, 64 * 1024 * 1024)
            .map_err(|e| tantivy_err("open writer", e))
    }

    fn memory_doc(&self, item: &MemoryItem) -> TantivyDocument {
        let f = self.fields;
        let mut d = doc!(
            f.id => item.id.clone(),
            f.doc_kind => "memory",
            f.content => item.content.clone(),
            f.content_ident => item.content.clone(),
            f.tags => item.tags.join(" "),
            f.scope => item.scope.clone(),
            f.kind => item.kind.clone(),
            f.status => item.status.as_str(),
            f.created => ts(&item.created_at),
            f.updated => ts(&item.updated_at),
            f.expires => item.expires_at.as_deref().map(ts).unwrap_or(NEVER),
            f.confidence => item.confidence,
        );
        if let Some(s) = &item.scope_id {
            d.add_text(f.scope_id, s);
        }
        if let Some(p) = &item.project {
            d.add_text(f.project, p);
        }
        if let Some(run) = item.source_refs.iter().find_map(|r| r.strip_prefix("run:")) {
            d.add_text(f.run, run);
        }
        d
    }

    /// A captured interaction (`runs/…/interactions/…`): its prompt and
    /// response as content, kind and doc kind `interaction`, status
    /// `captured`. Memory queries never see it (they filter on doc kind).
    fn interaction_doc(&self, path: &str, bytes: &[u8]) -> Result<TantivyDocument> {
        let v = crate::store::parse_yaml(path, bytes)?;
        let text = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
        };
        let f = self.fields;
        let content = format!("{}\n\n{}", text("prompt"), text("response"));
        let created = ts(text("created_at"));
        let mut d = doc!(
            f.id => text("interaction_id").to_string(),
            f.doc_kind => "interaction",
            f.content => content.clone(),
            f.content_ident => content,
            f.tags => text("client").to_string(),
            f.scope => "run",
            f.kind => "interaction",
            f.status => "captured",
            f.created => created,
            f.updated => created,
            f.expires => NEVER,
            f.confidence => 0.5,
        );
        if let Some(run) = layout::run_of(path) {
            d.add_text(f.scope_id, run);
            d.add_text(f.run, run);
        }
        if !text("project").is_empty() {
            d.add_text(f.project, text("project"));
        }
        Ok(d)
    }

    fn event_doc(&self, e: &Event, ordinal: u64) -> TantivyDocument {
        let f = self.fields;
        let mut d = doc!(
            f.id => e.commit.clone(),
            f.doc_kind => "event",
            f.event_type => e.event_type.as_str(),
            f.actor => e.actor.clone(),
            f.created => ts(&e.timestamp),
            f.ordinal => ordinal,
            f.event => serde_json::to_string(e).expect("events serialize"),
        );
        if let Some(r) = &e.run_id {
            d.add_text(f.run, r);
        }
        d
    }

    /// Indexes everything from scratch at `tip`.
    fn build(store: &Store, path: &Path, tip: Oid, progress: Progress<'_>) -> Result<SearchIndex> {
        let idx = SearchIndex::create(path)?;
        let mut writer = idx.writer()?;
        let files = store.walk_files(tip, layout::MEMORY)?;
        let commits = store.history(tip, None)?;
        let interactions: Vec<(String, Oid)> = store
            .walk_files(tip, layout::RUNS)?
            .into_iter()
            .filter(|(p, _, _)| layout::schema_for(p) == Some("interaction"))
            .map(|(p, blob, _)| (p, blob))
            .collect();
        let total = (files.len() + commits.len() + interactions.len()) as u64;
        let mut done = 0u64;
        for (p, blob, _) in files {
            if p.ends_with(".yaml") {
                let item = MemoryItem::from_bytes(&p, &store.read_blob(blob)?)?;
                writer
                    .add_document(idx.memory_doc(&item))
                    .map_err(|e| tantivy_err("index", e))?;
            }
            done += 1;
            if done.is_multiple_of(1000) {
                progress(done, total);
            }
        }
        for (p, blob) in interactions {
            let d = idx.interaction_doc(&p, &store.read_blob(blob)?)?;
            writer
                .add_document(d)
                .map_err(|e| tantivy_err("index", e))?;
            done += 1;
        }
        let mut ordinal = 0;
        for id in commits.into_iter().rev() {
            ordinal += 1;
            let e = store.event_of(id)?;
            writer
                .add_document(idx.event_doc(&e, ordinal))
                .map_err(|e| tantivy_err("index", e))?;
            done += 1;
            if done.is_multiple_of(1000) {
                progress(done, total);
            }
        }
        idx.commit(&mut writer, tip, ordinal)?;
        progress(total, total);
        Ok(idx)
    }

    fn commit(&self, writer: &mut IndexWriter, tip: Oid, ordinal: u64) -> Result<()> {
        let payload = serde_json::to_string(&Payload {
            format: FORMAT,
            commit: tip.to_string(),
            ordinal,
        })
        .expect("payloads serialize");
        let mut prepared = writer
            .prepare_commit()
            .map_err(|e| tantivy_err("commit", e))?;
        prepared.set_payload(&payload);
        crate::failpoint::failpoint!("search::index_commit");
        prepared.commit().map_err(|e| tantivy_err("commit", e))?;
        Ok(())
    }

    /// Brings the index from `payload.commit` to `tip`.
    fn catch_up(&self, store: &Store, payload: &Payload, tip: Oid) -> Result<()> {
        let from = Oid::from_str(&payload.commit).map_err(|e| tantivy_err("payload", e))?;
        let mut writer = self.writer()?;
        for p in store.diff_paths(Some(from), tip, layout::MEMORY)? {
            let Some(id) = p.rsplit('/').next().and_then(|f| f.strip_suffix(".yaml")) else {
                continue;
            };
            writer.delete_term(Term::from_field_text(self.fields.id, id));
            if let Some(bytes) = store.read_file(tip, &p)? {
                let item = MemoryItem::from_bytes(&p, &bytes)?;
                writer
                    .add_document(self.memory_doc(&item))
                    .map_err(|e| tantivy_err("index", e))?;
            }
        }
        for p in store.diff_paths(Some(from), tip, layout::RUNS)? {
            if layout::schema_for(&p) != Some("interaction") {
                continue;
            }
            let Some(id) = p.rsplit('/').next().and_then(|f| f.strip_suffix(".yaml")) else {
                continue;
            };
            writer.delete_term(Term::from_field_text(self.fields.id, id));
            if let Some(bytes) = store.read_file(tip, &p)? {
                writer
                    .add_document(self.interaction_doc(&p, &bytes)?)
                    .map_err(|e| tantivy_err("index", e))?;
            }
        }
        let new = store.history(tip, Some(from))?;
        let mut merged = false;
        for &id in &new {
            merged |= store.commit_info(id)?.parents.len() > 1;
        }
        if merged {
            return self.renumber_events(store, writer, tip);
        }
        let mut ordinal = payload.ordinal;
        for id in new.into_iter().rev() {
            ordinal += 1;
            let e = store.event_of(id)?;
            writer
                .add_document(self.event_doc(&e, ordinal))
                .map_err(|e| tantivy_err("index", e))?;
        }
        self.commit(&mut writer, tip, ordinal)
    }

    /// Numbers every event again in the order of a history walk from `tip`
    /// (a merge can put older commits among the ones already numbered):
    /// events already indexed are taken from their stored JSON, new ones
    /// are read from their commits.
    fn renumber_events(&self, store: &Store, mut writer: IndexWriter, tip: Oid) -> Result<()> {
        let f = self.fields;
        let searcher = self.searcher()?;
        let kind = keyword(f.doc_kind, "event");
        let docs = searcher
            .search(&kind, &tantivy::collector::DocSetCollector)
            .map_err(|e| tantivy_err("search events", e))?;
        let mut known: HashMap<String, String> = HashMap::with_capacity(docs.len());
        for addr in docs {
            let d: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| tantivy_err("read document", e))?;
            let id = d.get_first(f.id).and_then(|v| v.as_str());
            let json = d.get_first(f.event).and_then(|v| v.as_str());
            if let (Some(id), Some(json)) = (id, json) {
                known.insert(id.to_string(), json.to_string());
            }
        }
        writer.delete_term(Term::from_field_text(f.doc_kind, "event"));
        let mut ordinal = 0;
        for id in store.history(tip, None)?.into_iter().rev() {
            ordinal += 1;
            let stored = known
                .get(&id.to_string())
                .and_then(|j| serde_json::from_str::<Event>(j).ok());
            let e = match stored {
                Some(e) => e,
                None => store.event_of(id)?,
            };
            writer
                .add_document(self.event_doc(&e, ordinal))
                .map_err(|e| tantivy_err("index", e))?;
        }
        self.commit(&mut writer, tip, ordinal)
    }

    /// Takes the searcher this index answers from; call with the index lock held.
    fn pin(mut self) -> Result<SearchIndex> {
        self.pinned = None;
        self.median = Default::default();
        self.columns = Default::default();
        self.pinned = Some(self.searcher()?);
        Ok(self)
    }

    /// Another handle on the same index and pinned searcher.
    fn share(&self) -> SearchIndex {
        SearchIndex {
            index: self.index.clone(),
            fields: self.fields,
            path: self.path.clone(),
            rebuilt: None,
            pinned: self.pinned.clone(),
            median: self.median.clone(),
            columns: self.columns.clone(),
        }
    }

    fn searcher(&self) -> Result<Searcher> {
        if let Some(s) = &self.pinned {
            return Ok(s.clone());
        }
        let reader = self
            .index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| tantivy_err("open reader", e))?;
        Ok(reader.searcher())
    }
}

/// Opens the index caught up to the tip, rebuilding it when it is missing,
/// unreadable, foreign or outdated.
pub fn open(store: &Store, progress: Progress<'_>) -> Result<SearchIndex> {
    let path = index_dir(store);
    if let Some(idx) = cache::get(&path, store.require_tip()?) {
        return Ok(idx);
    }
    // Catch-up writes; one writer at a time across processes.
    let _lock = StoreLock::acquire_named(store.local_dir(), "index.lock", Duration::from_secs(60))?;
    // The tip is read under the lock: read before it, another opener could
    // catch the index up past it meanwhile, and this one would then find the
    // index's commit not an ancestor of its older tip and rebuild everything.
    let tip = store.require_tip()?;
    let idx = open_locked(store, &path, tip, progress)?;
    cache::put(&path, tip, &idx);
    Ok(idx)
}

/// [`open`] with the index lock held.
fn open_locked(
    store: &Store,
    path: &Path,
    tip: Oid,
    progress: Progress<'_>,
) -> Result<SearchIndex> {
    let path = path.to_path_buf();
    let reason = match guarded("open", || SearchIndex::open_existing(&path)) {
        Ok((idx, payload)) => {
            if payload.commit == tip.to_string() {
                return idx.pin();
            }
            let known = Oid::from_str(&payload.commit)
                .ok()
                .filter(|c| store.repo_has(*c));
            match known {
                Some(c) if store.is_ancestor(c, tip)? => {
                    match guarded("catch up", || idx.catch_up(store, &payload, tip)) {
                        Ok(()) => return idx.pin(),
                        Err(e) => format!("catch-up failed: {e}"),
                    }
                }
                Some(_) => "history was rewritten".to_string(),
                None => "the index belongs to another store".to_string(),
            }
        }
        Err(e) if !path.exists() => format!("no index yet ({e})"),
        Err(e) => e.to_string(),
    };
    let mut idx = SearchIndex::build(store, &path, tip, progress)?;
    idx.rebuilt = Some(reason);
    idx.pin()
}

/// Rebuilds the index from scratch.
pub fn rebuild(store: &Store, progress: Progress<'_>) -> Result<IndexStatus> {
    let tip = store.require_tip()?;
    let _lock = StoreLock::acquire_named(store.local_dir(), "index.lock", Duration::from_secs(60))?;
    let mut idx = SearchIndex::build(store, &index_dir(store), tip, progress)?;
    idx.rebuilt = Some("asked for".into());
    status_of(store, &idx)
}

/// The index's state, catching it up first.
pub fn status(store: &Store, progress: Progress<'_>) -> Result<IndexStatus> {
    let idx = open(store, progress)?;
    status_of(store, &idx)
}

fn status_of(store: &Store, idx: &SearchIndex) -> Result<IndexStatus> {
    let searcher = idx.searcher()?;
    let count = |kind: &str| -> Result<u64> {
        let q = TermQuery::new(
            Term::from_field_text(idx.fields.doc_kind, kind),
            IndexRecordOption::Basic,
        );
        searcher
            .search(&q, &tantivy::collector::Count)
            .map(|c| c as u64)
            .map_err(|e| tantivy_err("count", e))
    };
    let metas = idx
        .index
        .load_metas()
        .map_err(|e| tantivy_err("read meta.json", e))?;
    let commit = metas
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Payload>(p).ok())
        .map(|p| p.commit);
    let tip = store.tip()?.map(|t| t.to_string());
    Ok(IndexStatus {
        path: idx.path.clone(),
        current: commit == tip,
        commit,
        tip,
        memory_items: count("memory")?,
        events: count("event")?,
        interactions: count("interaction")?,
        rebuilt: idx.rebuilt.clone(),
    })
}

/// Ranking settings (from `cairn.yaml`'s `search` and `scope_weights`).
#[derive(Debug, Clone)]
pub struct Ranking {
    /// Multiplier per scope.
    pub scope_weights: BTreeMap<String, f64>,
    /// Half-life of the recency boost, in days.
    pub recency_half_life_days: f64,
    /// How much recency moves a score (0 = not at all).
    pub recency_weight: f64,
    /// How much confidence moves a score (0 = not at all).
    pub confidence_weight: f64,
    /// Boost of the English-analyzed content field.
    pub content_boost: f32,
    /// Boost of the identifier-analyzed content field.
    pub identifier_boost: f32,
    /// Boost of tags.
    pub tags_boost: f32,
    /// Multiplier for items carrying a tag (e.g. `role:assistant` → 0.5).
    pub tag_weights: BTreeMap<String, f64>,
    /// Items whose first tag with this prefix is equal form a group
    /// (e.g. `session:` — the turns of one conversation)...
    pub group_tag_prefix: String,
    /// ...and each gets this share of its group's best score added.
    pub group_weight: f64,
    /// Drop the filler words of questions from the query.
    pub question_words: bool,
    /// Exponent of the length prior (0 = off).
    pub length_prior: f64,
    /// Terms added by pseudo-relevance feedback (0 = off).
    pub feedback_terms: usize,
    /// First-pass hits that lend feedback terms.
    pub feedback_docs: usize,
    /// Weight of the strongest feedback term relative to a query term.
    pub feedback_weight: f64,
    /// Boost of neighbouring query words found near each other (0 = off).
    pub proximity_weight: f64,
    /// Date-aware scoring: an item created in the window of time the
    /// question names ("two weeks ago", "last month", "in March") is
    /// scored × (1 + this); the words naming it leave the query (0 = off).
    pub date_weight: f64,
}

impl Default for Ranking {
    /// The ranking of a default `cairn.yaml`.
    fn default() -> Self {
        Ranking::from(&StoreConfig::default())
    }
}

impl From<&StoreConfig> for Ranking {
    /// The ranking a store's `cairn.yaml` asks for.
    fn from(config: &StoreConfig) -> Self {
        Ranking {
            scope_weights: config.scope_weights.clone(),
            recency_half_life_days: config.search.recency_half_life_days,
            recency_weight: config.search.recency_weight,
            confidence_weight: config.search.confidence_weight,
            content_boost: config.search.content_boost as f32,
            identifier_boost: config.search.identifier_boost as f32,
            tags_boost: config.search.tags_boost as f32,
            tag_weights: config.search.tag_weights.clone(),
            group_tag_prefix: config.search.group_tag_prefix.clone(),
            group_weight: config.search.group_weight,
            question_words: config.search.question_words,
            length_prior: config.search.length_prior,
            feedback_terms: config.search.feedback_terms,
            feedback_docs: config.search.feedback_docs,
            feedback_weight: config.search.feedback_weight,
            proximity_weight: config.search.proximity_weight,
            date_weight: config.search.date_weight,
        }
    }
}

/// A memory search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// The query text: words (natural language) by default; words,
    /// "phrases" and field:value when [`SearchQuery::syntax`] is set.
    pub text: String,
    /// Only this scope (and id).
    pub scope: Option<ScopeFilter>,
    /// Only this type.
    pub kind: Option<String>,
    /// Only this status (default: active and not expired).
    pub status: Option<String>,
    /// Only this canonical project.
    pub project: Option<String>,
    /// Only items with this tag.
    pub tag: Option<String>,
    /// Created at or after.
    pub since: Option<OffsetDateTime>,
    /// Created at or before.
    pub until: Option<OffsetDateTime>,
    /// How many hits.
    pub top_k: usize,
    /// Read the text as the query syntax ("phrases", `field:value`), whose
    /// mistakes are errors with a position. Off (the default), the text is
    /// natural language: any text is words and never an error.
    pub syntax: bool,
    /// When the question is asked (default: the store's clock): dates it
    /// names ("last week") and recency count back from here.
    pub as_of: Option<OffsetDateTime>,
}

/// One search hit.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// The memory id.
    pub id: String,
    /// Last update (seconds), the order of query-less listings.
    #[serde(skip)]
    pub recency_key: i64,
    /// The final score.
    pub score: f64,
    /// The BM25 part of it.
    pub bm25: f64,
    /// Which query terms matched in which field.
    pub matched: BTreeMap<String, Vec<String>>,
    /// The item's tags, space-separated.
    #[serde(skip)]
    pub tags: String,
    /// The item's content.
    pub content: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its scope.
    pub scope: String,
    /// Its scope id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<String>,
    /// Its status.
    pub status: String,
    /// Its confidence.
    pub confidence: f64,
}

impl Hit {
    /// The item's confidence, rounded for display.
    pub fn score_confidence(&self) -> f64 {
        (self.confidence * 100.0).round() / 100.0
    }
}

/// The result of a search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    /// Hits, best first.
    pub hits: Vec<Hit>,
    /// Problems that did not stop the search (e.g. a cut query).
    pub warnings: Vec<String>,
    /// Why the index was rebuilt first, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
    /// Time spent, in milliseconds.
    pub took_ms: f64,
}

/// A parsed query: free words, phrases and field clauses.
#[derive(Debug, Default, Clone, PartialEq)]
struct ParsedQuery {
    words: Vec<String>,
    phrases: Vec<String>,
    fields: Vec<(String, String)>,
}

/// Parses the query syntax; errors carry the character position.
fn parse_query(text: &str) -> Result<(ParsedQuery, Vec<String>)> {
    let mut q = ParsedQuery::default();
    let mut warnings = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    let err = |pos: usize, message: String| Error::Invalid {
        file: "query".into(),
        pointer: format!("(character {pos})"),
        rule: "query_syntax",
        message,
    };
    let mut terms = 0usize;
    while i < chars.len() {
        let (_, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' {
            let start = i;
            let close = (i + 1..chars.len()).find(|&j| chars[j].1 == '"');
            let Some(end) = close else {
                return Err(err(
                    start,
                    format!("unbalanced quote at character {start}: close the phrase with \""),
                ));
            };
            let phrase: String = chars[i + 1..end].iter().map(|(_, c)| c).collect();
            terms += phrase.split_whitespace().count();
            q.phrases.push(phrase);
            i = end + 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].1.is_whitespace() {
            i += 1;
        }
        let word: String = chars[start..i].iter().map(|(_, c)| c).collect();
        terms += 1;
        match word.split_once(':') {
            Some((field, value))
                if !field.is_empty()
                    && field.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
                    && !value.is_empty()
                    && !value.starts_with("//") =>
            {
                let field = field.to_ascii_lowercase();
                if !QUERY_FIELDS.contains(&field.as_str()) {
                    return Err(err(
                        start,
                        format!(
                            "unknown field {field:?} at character {start}; fields: {}",
                            QUERY_FIELDS.join(", ")
                        ),
                    ));
                }
                q.fields.push((field, value.trim_matches('"').to_string()));
            }
            _ => q.words.push(word),
        }
    }
    if terms > MAX_QUERY_TERMS {
        warnings.push(format!(
            "the query has {terms} terms; only the first {MAX_QUERY_TERMS} were used"
        ));
        let mut budget = MAX_QUERY_TERMS;
        q.phrases.retain(|p| {
            let n = p.split_whitespace().count();
            let keep = n <= budget;
            budget = budget.saturating_sub(n);
            keep
        });
        q.words.truncate(budget);
    }
    Ok((q, warnings))
}

/// Reads text as natural language: every piece of it is words. Quotes,
/// colons and the other syntax characters are separators, so no text is
/// an error (a question typed by a person or passed through by an agent).
fn natural_query(text: &str) -> (ParsedQuery, Vec<String>) {
    let words: String = text
        .chars()
        .map(|c| if c == '"' || c == ':' { ' ' } else { c })
        .collect();
    // Without quotes and colons the syntax has nothing left to refuse.
    parse_query(&words).unwrap_or_default()
}

fn keyword(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

fn filter(q: Box<dyn Query>) -> (Occur, Box<dyn Query>) {
    (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0)))
}

/// Searches memory. Deterministic: equal scores break ties by id.
pub fn search(
    store: &Store,
    q: &SearchQuery,
    ranking: &Ranking,
    progress: Progress<'_>,
) -> Result<SearchResults> {
    let started = Instant::now();
    let (parsed, warnings) = if q.syntax {
        parse_query(&q.text)?
    } else {
        natural_query(&q.text)
    };
    let idx = open(store, progress)?;
    let result = guarded("search", || run_search(store, &idx, q, &parsed, ranking));
    let mut results = match result {
        Ok(r) => r,
        // A segment that fails while reading is corruption we can repair.
        Err(Error::Integrity { .. }) => {
            let tip = store.require_tip()?;
            let _lock =
                StoreLock::acquire_named(store.local_dir(), "index.lock", Duration::from_secs(60))?;
            let mut idx = SearchIndex::build(store, &index_dir(store), tip, progress)?.pin()?;
            idx.rebuilt = Some("a segment failed while searching".into());
            let mut r = guarded("search", || run_search(store, &idx, q, &parsed, ranking))?;
            r.rebuilt = idx.rebuilt.clone();
            r
        }
        Err(e) => return Err(e),
    };
    results.warnings.splice(0..0, warnings);
    if results.rebuilt.is_none() {
        results.rebuilt = idx.rebuilt.clone();
    }
    results.took_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(results)
}

fn run_search(
    store: &Store,
    idx: &SearchIndex,
    q: &SearchQuery,
    parsed: &ParsedQuery,
    ranking: &Ranking,
) -> Result<SearchResults> {
    let f = idx.fields;
    let now = store.now().unix_timestamp();
    let as_of = q.as_of.unwrap_or_else(|| store.now());
    let mut en = english();
    let mut ident = identifiers();
    // Captured interactions are searched only when asked for by type.
    let interactions = q.kind.as_deref() == Some("interaction")
        || parsed
            .fields
            .iter()
            .any(|(k, v)| k == "type" && v == "interaction");
    // Filters. The ones that keep nearly every document (memory items,
    // active, not expired) are written as the exclusion of the few others:
    // an intersection is driven by its cheapest part, and a filter that
    // keeps everything would otherwise drive the scored words through
    // every document.
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = if interactions {
        vec![filter(keyword(f.doc_kind, "interaction"))]
    } else {
        // Every document is a memory item, an event or an interaction.
        vec![
            (Occur::MustNot, keyword(f.doc_kind, "event")),
            (Occur::MustNot, keyword(f.doc_kind, "interaction")),
        ]
    };
    match q.status.as_deref() {
        None | Some("any") if interactions => {}
        None => {
            for s in [
                ItemStatus::Candidate,
                ItemStatus::Superseded,
                ItemStatus::Invalid,
            ] {
                clauses.push((Occur::MustNot, keyword(f.status, s.as_str())));
            }
            clauses.push((
                Occur::MustNot,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Included(Term::from_field_i64(f.expires, now)),
                )),
            ));
        }
        Some("expired") => {
            clauses.push(filter(keyword(f.status, "active")));
            clauses.push(filter(Box::new(RangeQuery::new(
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(Term::from_field_i64(f.expires, now)),
            ))));
        }
        Some("any") => {}
        Some(s) => {
            if ItemStatus::parse(s).is_none() {
                return Err(Error::Invalid {
                    file: "--status".into(),
                    pointer: String::new(),
                    rule: "status",
                    message: format!("unknown status {s:?}; one of candidate, active, superseded, invalid, expired, any"),
                });
            }
            clauses.push(filter(keyword(f.status, s)));
        }
    }
    if let Some(s) = &q.scope {
        clauses.push(filter(keyword(f.scope, &s.scope)));
        if let Some(id) = &s.scope_id {
            clauses.push(filter(keyword(f.scope_id, id)));
        }
    }
    if let Some(k) = &q.kind {
        clauses.push(filter(keyword(f.kind, k)));
    }
    if let Some(p) = &q.project {
        clauses.push(filter(keyword(f.project, p)));
    }
    if let Some(t) = &q.tag {
        clauses.push(filter(keyword(f.tags, &t.to_lowercase())));
    }
    if q.since.is_some() || q.until.is_some() {
        let lo = q.since.map(|t| {
            std::ops::Bound::Included(Term::from_field_i64(f.created, t.unix_timestamp()))
        });
        let hi = q.until.map(|t| {
            std::ops::Bound::Included(Term::from_field_i64(f.created, t.unix_timestamp()))
        });
        clauses.push(filter(Box::new(RangeQuery::new(
            lo.unwrap_or(std::ops::Bound::Unbounded),
            hi.unwrap_or(std::ops::Bound::Unbounded),
        ))));
    }
    for (field, value) in &parsed.fields {
        let target = match field.as_str() {
            "type" => Some(f.kind),
            "scope" => Some(f.scope),
            "scope_id" => Some(f.scope_id),
            "status" => Some(f.status),
            "project" => Some(f.project),
            "run" => Some(f.run),
            "id" => Some(f.id),
            _ => None,
        };
        if let Some(t) = target {
            clauses.push(filter(keyword(t, value)));
        }
    }
    // Scored text: free words and text fields, over each analyzer. The
    // words of a date the question names leave it, unless nothing else
    // would be left.
    let mut free = parsed.words.join(" ");
    let window = (ranking.date_weight > 0.0)
        .then(|| dates::window(&free, as_of))
        .flatten();
    if let Some(w) = &window {
        let dated = dates::without(&free, w);
        let (content, ident) = query_terms(ranking.question_words, &dated);
        if !content.is_empty() || !ident.is_empty() {
            free = dated;
        }
    }
    let mut content_text = free.clone();
    let mut tags_text = free;
    for (field, value) in &parsed.fields {
        match field.as_str() {
            "content" => content_text.push_str(&format!(" {value}")),
            "tags" => tags_text.push_str(&format!(" {value}")),
            _ => {}
        }
    }
    let mut terms = QueryTerms::default();
    let (content_terms, ident_terms) = query_terms(ranking.question_words, &content_text);
    terms.add(f.content, "content", content_terms, ranking.content_boost);
    terms.add(
        f.content_ident,
        "identifiers",
        ident_terms,
        ranking.identifier_boost,
    );
    terms.add(
        f.tags,
        "tags",
        analyze(&mut ident, &tags_text),
        ranking.tags_boost,
    );
    let mut matched_terms: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for t in &terms.list {
        matched_terms
            .entry(t.name)
            .or_default()
            .push(t.text.clone());
    }
    let mut phrases = Vec::new();
    for phrase in &parsed.phrases {
        let words = analyze(&mut en, phrase);
        phrases.push(
            words
                .iter()
                .map(|t| Term::from_field_text(f.content, t))
                .collect::<Vec<Term>>(),
        );
        matched_terms.entry("content").or_default().extend(words);
    }
    phrases.retain(|p| !p.is_empty());
    // Neighbouring query words found near each other in an item.
    let mut pairs = Vec::new();
    if ranking.proximity_weight > 0.0 {
        let words: Vec<&QueryTerm> = terms.list.iter().filter(|t| t.field == f.content).collect();
        for w in words.windows(2) {
            pairs.push([
                Term::from_field_text(f.content, &w[0].text),
                Term::from_field_text(f.content, &w[1].text),
            ]);
        }
    }
    let searcher = idx.searcher()?;
    let pass = Pass {
        searcher: &searcher,
        fields: f,
        filters: &clauses,
        phrases: &phrases,
        pairs: &pairs,
        ranking,
        now: as_of.unix_timestamp(),
        window: window.map(|w| (w.start, w.end)),
        scored: !terms.list.is_empty() || !phrases.is_empty(),
        top_k: q.top_k.max(1),
        keep: if ranking.feedback_terms > 0 && ranking.feedback_weight > 0.0 {
            q.top_k.max(1).max(ranking.feedback_docs)
        } else {
            q.top_k.max(1)
        },
        median: &idx.median,
        columns: &idx.columns,
    };
    let mut hits = pass.run(&terms.list, &[])?;
    if pass.scored && ranking.feedback_terms > 0 && ranking.feedback_weight > 0.0 {
        let expansion = feedback(&searcher, f, &hits, &terms.list, ranking)?;
        if !expansion.is_empty() {
            hits = pass.run(&terms.list, &expansion)?;
        }
    }
    hits.truncate(pass.top_k);
    // Why each hit matched: the query's analysed terms found in its fields.
    if pass.scored {
        for h in hits.iter_mut() {
            for (name, terms) in &matched_terms {
                let (analyzer, text) = match *name {
                    "content" => (&mut en, &h.content),
                    "identifiers" => (&mut ident, &h.content),
                    _ => (&mut ident, &h.tags),
                };
                let found = present(analyzer, text, terms);
                let m: Vec<String> = terms
                    .iter()
                    .filter(|t| found.contains(&String::as_str(t)))
                    .cloned()
                    .collect();
                if !m.is_empty() {
                    h.matched.insert(name.to_string(), m);
                }
            }
        }
    }
    Ok(SearchResults {
        hits,
        warnings: Vec::new(),
        rebuilt: None,
        took_ms: 0.0,
    })
}

/// Which of `wanted` the analysed `text` holds.
fn present<'a>(
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    text: &str,
    wanted: &'a [String],
) -> BTreeSet<&'a str> {
    let mut found = BTreeSet::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let token = &stream.token().text;
        if let Some(w) = wanted.iter().find(|w| *w == token) {
            found.insert(w.as_str());
        }
    }
    found
}

/// One scored term of a query: the field, the name it is reported under
/// in [`Hit::matched`], the analysed text and its boost.
#[derive(Debug, Clone, PartialEq)]
struct QueryTerm {
    field: Field,
    name: &'static str,
    text: String,
    boost: f32,
}

/// The scored terms of a query, each (field, text) once.
#[derive(Default)]
struct QueryTerms {
    list: Vec<QueryTerm>,
}

impl QueryTerms {
    fn add(&mut self, field: Field, name: &'static str, texts: Vec<String>, boost: f32) {
        for text in texts {
            if !self.list.iter().any(|t| t.field == field && t.text == text) {
                self.list.push(QueryTerm {
                    field,
                    name,
                    text,
                    boost,
                });
            }
        }
    }
}

/// The content terms (English analysis) and identifier terms of query
/// text. With `question_words`, the filler words of questions are dropped
/// too, unless nothing else would be left.
fn query_terms(question_words: bool, text: &str) -> (Vec<String>, Vec<String>) {
    if question_words {
        let content = analyze(&mut analysis::english_question(), text);
        if !content.is_empty() {
            return (
                content,
                analyze(&mut analysis::identifiers_question(), text),
            );
        }
    }
    (
        analyze(&mut english(), text),
        analyze(&mut identifiers(), text),
    )
}

/// How many words may stand between two neighbouring query words for the
/// proximity boost to count them as near.
const PROXIMITY_SLOP: u32 = 2;

/// One scoring pass over the index: the filters, the phrases, and a list
/// of weighted terms; ranks the candidates with the store's ranking.
struct Pass<'a> {
    searcher: &'a Searcher,
    fields: Fields,
    filters: &'a [(Occur, Box<dyn Query>)],
    phrases: &'a [Vec<Term>],
    pairs: &'a [[Term; 2]],
    ranking: &'a Ranking,
    /// When the question is asked (Unix seconds): recency counts from here.
    now: i64,
    /// The window of time the question names: items created in it are
    /// scored × (1 + `date_weight`).
    window: Option<(i64, i64)>,
    scored: bool,
    top_k: usize,
    /// How many of the best candidates become hits (their stored
    /// documents read): `top_k`, or more when feedback reads them.
    keep: usize,
    /// The median item length, worked out once per index.
    median: &'a std::sync::OnceLock<f64>,
    /// The ranking columns of the index's segments.
    columns: &'a ColumnCache,
}

impl Pass<'_> {
    fn median_length(&self) -> Result<f64> {
        if let Some(m) = self.median.get() {
            return Ok(*m);
        }
        let m = median_length(self.searcher, self.fields)?;
        Ok(*self.median.get_or_init(|| m))
    }

    /// The ranking columns of a segment, opened once per index.
    fn segment_columns(&self, seg: &tantivy::SegmentReader) -> Result<std::sync::Arc<Columns>> {
        let id = seg.segment_id();
        if let Some(c) = self.columns.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(c);
        }
        let c = std::sync::Arc::new(Columns::open(seg, self.fields)?);
        if let Ok(mut m) = self.columns.lock() {
            m.insert(id, c.clone());
        }
        Ok(c)
    }

    /// The candidates for `terms`, best first.
    ///
    /// `expansion` terms (from feedback) add to the score of items that
    /// match the query; they never bring in an item that does not.
    fn run(&self, terms: &[QueryTerm], expansion: &[QueryTerm]) -> Result<Vec<Hit>> {
        let f = self.fields;
        let ranking = self.ranking;
        let term_query = |t: &QueryTerm| -> (Occur, Box<dyn Query>) {
            let q: Box<dyn Query> = Box::new(BoostQuery::new(
                Box::new(TermQuery::new(
                    Term::from_field_text(t.field, &t.text),
                    IndexRecordOption::WithFreqs,
                )),
                t.boost,
            ));
            (Occur::Should, q)
        };
        let mut should: Vec<(Occur, Box<dyn Query>)> = terms.iter().map(term_query).collect();
        for pair in self.pairs {
            let mut phrase = PhraseQuery::new(pair.to_vec());
            phrase.set_slop(PROXIMITY_SLOP);
            should.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(phrase),
                    ranking.proximity_weight as f32 * ranking.content_boost,
                )),
            ));
        }
        for terms in self.phrases {
            let q: Box<dyn Query> = if terms.len() == 1 {
                Box::new(TermQuery::new(
                    terms[0].clone(),
                    IndexRecordOption::WithFreqs,
                ))
            } else {
                Box::new(BoostQuery::new(
                    Box::new(PhraseQuery::new(terms.clone())),
                    2.0,
                ))
            };
            should.push((Occur::Must, q));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = self
            .filters
            .iter()
            .map(|(o, q)| (*o, q.box_clone()))
            .collect();
        if self.scored && !expansion.is_empty() {
            let mut scored: Vec<(Occur, Box<dyn Query>)> =
                vec![(Occur::Must, Box::new(BooleanQuery::new(should)))];
            scored.extend(expansion.iter().map(term_query));
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(scored))));
        } else if self.scored {
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(should))));
        } else {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.searcher;
        let candidates = if self.scored {
            (self.top_k * 4).max(100)
        } else {
            usize::MAX / 4
        };
        let docs = top_docs(searcher, &query, candidates.min(1_000_000), self.scored)?;
        let average = if self.scored && ranking.length_prior > 0.0 {
            self.median_length()?
        } else {
            0.0
        };
        // Ranking reads fast fields (columns); only the hits kept below
        // have their stored document read.
        let wants_tags = self.scored
            && (!ranking.tag_weights.is_empty()
                || (ranking.group_weight > 0.0 && !ranking.group_tag_prefix.is_empty()));
        let mut columns: HashMap<u32, std::sync::Arc<Columns>> = HashMap::new();
        let mut scope_weights: HashMap<(u32, u64), f64> = HashMap::new();
        let mut candidates = Vec::with_capacity(docs.len());
        for (bm25, addr) in docs {
            let cols = match columns.entry(addr.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.segment_columns(searcher.segment_reader(addr.segment_ord))?)
                }
            };
            let doc = addr.doc_id;
            let updated = cols
                .updated
                .as_ref()
                .and_then(|c| c.first(doc))
                .unwrap_or(0);
            let mut group = None;
            let mut tag_weight = 1.0;
            if wants_tags {
                let tags = Columns::text(cols.tags.as_ref(), doc)?;
                tag_weight = tags
                    .split_whitespace()
                    .filter_map(|t| ranking.tag_weights.get(t))
                    .product();
                group = tags
                    .split_whitespace()
                    .find(|t| {
                        !ranking.group_tag_prefix.is_empty()
                            && t.starts_with(&ranking.group_tag_prefix)
                    })
                    .map(str::to_string);
            }
            let score = if self.scored {
                let conf = cols
                    .confidence
                    .as_ref()
                    .and_then(|c| c.first(doc))
                    .unwrap_or(0.5);
                let age_days = ((self.now - updated).max(0) as f64) / 86400.0;
                let recency = 0.5f64.powf(age_days / ranking.recency_half_life_days.max(1e-9));
                let weight =
                    cols.scope_weight(addr.segment_ord, doc, ranking, &mut scope_weights)?;
                let date_weight = match (self.window, &cols.created) {
                    (Some((start, end)), Some(created)) => {
                        let t = created.first(doc).unwrap_or(0);
                        if (start..end).contains(&t) {
                            1.0 + ranking.date_weight
                        } else {
                            1.0
                        }
                    }
                    _ => 1.0,
                };
                let length_weight = match &cols.norms {
                    Some(norms) if average > 0.0 => length_prior(
                        f64::from(norms.fieldnorm(doc)),
                        average,
                        ranking.length_prior,
                    ),
                    _ => 1.0,
                };
                f64::from(bm25)
                    * weight
                    * tag_weight
                    * length_weight
                    * date_weight
                    * (1.0 + ranking.confidence_weight * (conf - 0.5))
                    * (1.0 + ranking.recency_weight * (recency - 0.5))
            } else {
                0.0
            };
            candidates.push(Candidate {
                addr,
                bm25: f64::from(bm25),
                score,
                recency_key: if self.scored { 0 } else { updated },
                group,
                id: None,
            });
        }
        // Items of one group (one conversation) lend each other a share of the group's best score.
        if self.scored && ranking.group_weight > 0.0 {
            let mut best: HashMap<&str, f64> = HashMap::new();
            for c in &candidates {
                if let Some(g) = &c.group {
                    let e = best.entry(g.as_str()).or_insert(0.0);
                    *e = e.max(c.score);
                }
            }
            let lent: Vec<f64> = candidates
                .iter()
                .map(|c| {
                    // An item outside any group is a group of its own.
                    let b = c
                        .group
                        .as_deref()
                        .and_then(|g| best.get(g))
                        .copied()
                        .unwrap_or(c.score);
                    ranking.group_weight * b
                })
                .collect();
            for (c, add) in candidates.iter_mut().zip(lent) {
                c.score += add;
            }
        }
        candidates.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| b.recency_key.cmp(&a.recency_key))
        });
        // Equal scores break ties by id: the ids are read for the runs of
        // equal candidates that reach into the kept hits.
        let keep = self.keep.min(candidates.len());
        let mut start = 0;
        while start < keep {
            let same = |c: &Candidate| {
                c.score.total_cmp(&candidates[start].score).is_eq()
                    && c.recency_key == candidates[start].recency_key
            };
            let end = start + candidates[start..].iter().take_while(|c| same(c)).count();
            if end - start > 1 {
                for c in &mut candidates[start..end] {
                    let cols = columns
                        .get(&c.addr.segment_ord)
                        .ok_or_else(|| tantivy_err("search", "a candidate lost its segment"))?;
                    c.id = Some(Columns::text(cols.id.as_ref(), c.addr.doc_id)?);
                }
                candidates[start..end].sort_by(|a, b| a.id.cmp(&b.id));
            }
            start = end;
        }
        candidates.truncate(keep);
        let mut hits = Vec::with_capacity(candidates.len());
        for c in candidates {
            let d: TantivyDocument = searcher
                .doc(c.addr)
                .map_err(|e| tantivy_err("read document", e))?;
            let text = |field: Field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            hits.push(Hit {
                recency_key: c.recency_key,
                id: text(f.id).unwrap_or_default(),
                score: c.score,
                bm25: c.bm25,
                matched: BTreeMap::new(),
                tags: text(f.tags).unwrap_or_default(),
                content: text(f.content).unwrap_or_default(),
                kind: text(f.kind).unwrap_or_default(),
                scope: text(f.scope).unwrap_or_default(),
                scope_id: text(f.scope_id),
                status: text(f.status).unwrap_or_default(),
                confidence: d
                    .get_first(f.confidence)
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.5),
            });
        }
        Ok(hits)
    }
}

/// A scored document before its stored fields are read.
struct Candidate {
    addr: tantivy::DocAddress,
    bm25: f64,
    score: f64,
    recency_key: i64,
    /// Its group (the first tag with the group prefix).
    group: Option<String>,
    /// Its id, read only when it ties with another candidate.
    id: Option<String>,
}

/// The columns of one segment that ranking reads.
struct Columns {
    id: Option<tantivy::columnar::StrColumn>,
    scope: Option<tantivy::columnar::StrColumn>,
    tags: Option<tantivy::columnar::StrColumn>,
    updated: Option<tantivy::columnar::Column<i64>>,
    created: Option<tantivy::columnar::Column<i64>>,
    confidence: Option<tantivy::columnar::Column<f64>>,
    norms: Option<tantivy::fieldnorm::FieldNormReader>,
}

impl Columns {
    fn open(seg: &tantivy::SegmentReader, f: Fields) -> Result<Columns> {
        let fast = seg.fast_fields();
        let err = |e| tantivy_err("read fast fields", e);
        Ok(Columns {
            id: fast.str("id").map_err(err)?,
            scope: fast.str("scope").map_err(err)?,
            tags: fast.str("tags").map_err(err)?,
            updated: fast.column_opt("updated").map_err(err)?,
            created: fast.column_opt("created").map_err(err)?,
            confidence: fast.column_opt("confidence").map_err(err)?,
            norms: Some(
                seg.get_fieldnorms_reader(f.content)
                    .map_err(|e| tantivy_err("read field norms", e))?,
            ),
        })
    }

    /// The (first) value of a text column for `doc`; empty when it has none.
    fn text(column: Option<&tantivy::columnar::StrColumn>, doc: u32) -> Result<String> {
        let mut out = String::new();
        if let Some(col) = column {
            if let Some(ord) = col.term_ords(doc).next() {
                col.ord_to_str(ord, &mut out)
                    .map_err(|e| tantivy_err("read fast fields", e))?;
            }
        }
        Ok(out)
    }

    /// The weight of `doc`'s scope; `cache` keeps the weight of each scope
    /// (by segment and ordinal) for one query.
    fn scope_weight(
        &self,
        seg: u32,
        doc: u32,
        ranking: &Ranking,
        cache: &mut HashMap<(u32, u64), f64>,
    ) -> Result<f64> {
        let unscoped = || ranking.scope_weights.get("").copied().unwrap_or(1.0);
        let Some(col) = &self.scope else {
            return Ok(unscoped());
        };
        let Some(ord) = col.term_ords(doc).next() else {
            return Ok(unscoped());
        };
        if let Some(w) = cache.get(&(seg, ord)) {
            return Ok(*w);
        }
        let mut name = String::new();
        col.ord_to_str(ord, &mut name)
            .map_err(|e| tantivy_err("read fast fields", e))?;
        let w = ranking.scope_weights.get(&name).copied().unwrap_or(1.0);
        cache.insert((seg, ord), w);
        Ok(w)
    }
}

/// The `limit` best documents by BM25 and, when `scored`, every document
/// tied with the last of them. tantivy breaks ties by document address,
/// which differs between a fresh index and one caught up commit by commit:
/// the ranking's own tie-break (by id) must see the same candidates in both.
fn top_docs(
    searcher: &Searcher,
    query: &dyn Query,
    limit: usize,
    scored: bool,
) -> Result<Vec<(f32, tantivy::DocAddress)>> {
    let search = |n: usize| {
        searcher
            .search(query, &TopDocs::with_limit(n).order_by_score())
            .map_err(|e| tantivy_err("search", e))
    };
    if !scored || limit == 0 {
        return search(limit);
    }
    let mut take = limit;
    loop {
        let mut docs = search(take + 1)?;
        let complete = docs.len() <= take;
        if complete || docs[take].0 < docs[limit - 1].0 {
            if docs.len() > limit {
                let boundary = docs[limit - 1].0;
                docs.retain(|(score, _)| *score >= boundary);
            }
            return Ok(docs);
        }
        take = take.saturating_mul(2);
    }
}

/// The multiplier of the length prior: 1 up to the typical (median)
/// length, then (typical / length)^exponent — a long item matches many
/// words by its length alone, a focused one by its topic.
fn length_prior(length: f64, typical: f64, exponent: f64) -> f64 {
    if length <= typical || length <= 0.0 {
        1.0
    } else {
        (typical / length).powf(exponent)
    }
}

/// The median content length (in analysed tokens, as tantivy's field
/// norms keep it) of the indexed items that have content.
fn median_length(searcher: &Searcher, f: Fields) -> Result<f64> {
    let mut histogram = [0u64; 256];
    let mut lengths = [0u32; 256];
    for seg in searcher.segment_readers() {
        let norms = seg
            .get_fieldnorms_reader(f.content)
            .map_err(|e| tantivy_err("read field norms", e))?;
        let alive = seg.alive_bitset();
        for doc in 0..seg.max_doc() {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                let id = usize::from(norms.fieldnorm_id(doc));
                histogram[id] += 1;
                lengths[id] = norms.fieldnorm(doc);
            }
        }
    }
    // Id 0 is an empty field: events, and items without words.
    let total: u64 = histogram[1..].iter().sum();
    let mut seen = 0;
    for (id, n) in histogram.iter().enumerate().skip(1) {
        seen += n;
        if seen * 2 >= total {
            return Ok(f64::from(lengths[id]));
        }
    }
    Ok(0.0)
}

/// Pseudo-relevance feedback (RM3-style): the terms that weigh most in the
/// best first-pass hits — each hit's term frequencies, normalised by its
/// length and weighted by its share of the hits' score, times the term's
/// rarity — that the query does not have already, weighted so the
/// strongest gets `feedback_weight` × a content term's boost.
fn feedback(
    searcher: &Searcher,
    f: Fields,
    hits: &[Hit],
    query: &[QueryTerm],
    ranking: &Ranking,
) -> Result<Vec<QueryTerm>> {
    let top: Vec<&Hit> = hits
        .iter()
        .take(ranking.feedback_docs.max(1))
        .filter(|h| h.score > 0.0)
        .collect();
    let total: f64 = top.iter().map(|h| h.score).sum();
    if total <= 0.0 {
        return Ok(Vec::new());
    }
    let mut en = english();
    let mut weights: BTreeMap<String, f64> = BTreeMap::new();
    for h in top {
        let words = analyze(&mut en, &h.content);
        if words.is_empty() {
            continue;
        }
        let share = h.score / total / words.len() as f64;
        for w in words {
            *weights.entry(w).or_default() += share;
        }
    }
    let n = searcher.num_docs() as f64;
    let mut ranked = Vec::new();
    for (text, w) in weights {
        if query.iter().any(|t| t.field == f.content && t.text == text) {
            continue;
        }
        let df = searcher
            .doc_freq(&Term::from_field_text(f.content, &text))
            .map_err(|e| tantivy_err("count", e))? as f64;
        // A word of one item only would just lift that item again.
        if df < 2.0 {
            continue;
        }
        ranked.push((w * ((n - df + 0.5) / (df + 0.5)).ln_1p(), text));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    ranked.truncate(ranking.feedback_terms);
    let strongest = ranked.first().map(|r| r.0).unwrap_or(0.0);
    if strongest <= 0.0 {
        return Ok(Vec::new());
    }
    Ok(ranked
        .into_iter()
        .map(|(w, text)| QueryTerm {
            field: f.content,
            name: "content",
            text,
            boost: (ranking.feedback_weight * w / strongest) as f32 * ranking.content_boost,
        })
        .collect())
}

/// Ledger events matching `q`, answered from the index (oldest first).
pub fn log(store: &Store, q: &LogQuery, progress: Progress<'_>) -> Result<Vec<Event>> {
    let idx = open(store, progress)?;
    match guarded("search events", || log_in(store, &idx, q)) {
        // A segment that fails while reading is corruption we can repair.
        Err(Error::Integrity { .. }) => {
            let tip = store.require_tip()?;
            let _lock =
                StoreLock::acquire_named(store.local_dir(), "index.lock", Duration::from_secs(60))?;
            let idx = SearchIndex::build(store, &index_dir(store), tip, progress)?;
            guarded("search events", || log_in(store, &idx, q))
        }
        other => other,
    }
}

fn log_in(store: &Store, idx: &SearchIndex, q: &LogQuery) -> Result<Vec<Event>> {
    let f = idx.fields;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> =
        vec![(Occur::Must, keyword(f.doc_kind, "event"))];
    if let Some(r) = &q.run_id {
        clauses.push((Occur::Must, keyword(f.run, r)));
    }
    if let Some(t) = q.event_type {
        clauses.push((Occur::Must, keyword(f.event_type, t.as_str())));
    }
    if let Some(a) = &q.actor {
        clauses.push((Occur::Must, keyword(f.actor, a)));
    }
    if q.since.is_some() || q.until.is_some() {
        // Event times are indexed in whole seconds: widen, then filter exactly below.
        let lo = q.since.map(|t| {
            std::ops::Bound::Included(Term::from_field_i64(f.created, t.unix_timestamp() - 1))
        });
        let hi = q.until.map(|t| {
            std::ops::Bound::Included(Term::from_field_i64(f.created, t.unix_timestamp() + 1))
        });
        clauses.push((
            Occur::Must,
            Box::new(RangeQuery::new(
                lo.unwrap_or(std::ops::Bound::Unbounded),
                hi.unwrap_or(std::ops::Bound::Unbounded),
            )),
        ));
    }
    let searcher = idx.searcher()?;
    // Only the time filter is inexact in the index; without one, a limit
    // takes just the newest documents.
    let exact_in_index = q.since.is_none() && q.until.is_none();
    let wanted = match q.limit {
        Some(l) if exact_in_index => l,
        _ => searcher.num_docs() as usize,
    };
    let order =
        TopDocs::with_limit(wanted.max(1)).order_by_u64_field("ordinal", tantivy::Order::Desc);
    let docs = searcher
        .search(&BooleanQuery::new(clauses), &order)
        .map_err(|e| tantivy_err("search events", e))?;
    let mut out = Vec::new();
    let exact = LogQuery {
        limit: None,
        ..q.clone()
    };
    for (_, addr) in docs {
        let d: TantivyDocument = searcher
            .doc(addr)
            .map_err(|e| tantivy_err("read document", e))?;
        let stored = d
            .get_first(f.event)
            .and_then(|v| v.as_str())
            .and_then(|j| serde_json::from_str::<Event>(j).ok());
        let e = match stored {
            Some(e) => e,
            // Every event document stores its event; one that does not is
            // read from its commit.
            None => match d
                .get_first(f.id)
                .and_then(|v| v.as_str())
                .and_then(|s| Oid::from_str(s).ok())
            {
                Some(commit) => ledger::event_of(store, commit)?,
                None => continue,
            },
        };
        if ledger::matches(&exact, &e) {
            out.push(e);
            if q.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(text: &str) -> Vec<String> {
        analyze(&mut identifiers(), text)
    }

    #[test]
    fn identifiers_are_found_whole_and_by_parts() {
        assert_eq!(
            ident("uteke-cloud-dev"),
            ["uteke-cloud-dev", "uteke", "cloud", "dev"]
        );
        assert_eq!(
            ident("src/ledger.rs"),
            ["src/ledger.rs", "src", "ledger", "rs"]
        );
        assert_eq!(ident("CamelCase"), ["camelcase", "camel", "case"]);
        assert_eq!(ident("v1.2.3"), ["v1.2.3", "v1", "2", "3"]);
        assert_eq!(
            ident("(p05-interferometer),"),
            ["p05-interferometer", "p05", "interferometer"]
        );
    }

    #[test]
    fn english_analysis_stems_and_drops_stopwords() {
        assert_eq!(
            analyze(&mut english(), "The deployments are running"),
            ["deploy", "run"]
        );
    }

    #[test]
    fn stemming_matches_inflections() {
        let mut en = english();
        for (a, b) in [
            ("deployed", "deploy"),
            ("deploying", "deploys"),
            ("migrations", "migration"),
        ] {
            assert_eq!(analyze(&mut en, a), analyze(&mut en, b), "{a} / {b}");
        }
    }

    #[test]
    fn question_words_are_dropped_unless_nothing_is_left() {
        let q = "Can you remind me what I mentioned about the deployed service?";
        assert_eq!(query_terms(true, q).0, ["deploy", "servic"]);
        assert_eq!(
            query_terms(false, q).0,
            ["remind", "mention", "deploy", "servic"]
        );
        assert_eq!(query_terms(true, "what did I mention?").0, ["mention"]);
    }

    #[test]
    fn the_length_prior_only_weighs_longer_than_average() {
        assert_eq!(length_prior(10.0, 50.0, 1.0), 1.0);
        assert_eq!(length_prior(50.0, 50.0, 1.0), 1.0);
        assert!((length_prior(200.0, 50.0, 0.5) - 0.5).abs() < 1e-12);
        assert!((length_prior(100.0, 50.0, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(length_prior(100.0, 50.0, 0.0), 1.0);
    }

    #[test]
    fn query_syntax_errors_name_the_position() {
        let e = parse_query("deploy \"prod server").unwrap_err();
        assert!(e.to_string().contains("character 7"), "{e}");
        let e = parse_query("a colour:blue").unwrap_err();
        assert!(e.to_string().contains("character 2"), "{e}");
        let (q, _) = parse_query("type:fact \"exact words\" at 10:30 https://x.y").unwrap();
        assert_eq!(q.fields, [("type".to_string(), "fact".to_string())]);
        assert_eq!(q.phrases, ["exact words"]);
        assert_eq!(q.words, ["at", "10:30", "https://x.y"]);
    }

    #[test]
    fn huge_queries_are_cut_with_a_warning() {
        let text = "word ".repeat(10_000);
        let (q, warnings) = parse_query(&text).unwrap();
        assert_eq!(q.words.len(), MAX_QUERY_TERMS);
        assert_eq!(warnings.len(), 1);
    }
}
