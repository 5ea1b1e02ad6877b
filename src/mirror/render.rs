//! Templates and pages: the template sets (built-in or a store's own,
//! compiled once per process), the do-not-edit banner with the page's
//! checksum, and the [`Renderer`] of each kind of page.
//!
//! A page whose checksum (output version, template, edit hints, rendered
//! text) equals the one its current banner carries is not rewritten. The
//! memory pages of a large change are gathered first (the sources are read
//! on one thread) and then rendered on as many threads as the machine has
//! cores; the pages do not depend on how many threads built them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cache::ItemCache;
use super::index::{group_page, level_of, part_page, parts_of, queue_part, run_link, Group, Index};
use super::source::{read_typed, yaml_files, Source};
use super::{run_page, Problem, DIR, MAX_CHAIN, QUEUE, README, TEMPLATES, TEMPLATE_DIR, VERSION};
use crate::config::MirrorConfig;
use crate::episode::Episode;
use crate::error::{Error, Result};
use crate::layout;
use crate::memory::{Batch, ItemStatus, MemoryItem};
use crate::project::{ProjectState, Registry};
use crate::store::Changes;
use crate::working_set::WorkingSet;

pub(super) struct Templates {
    env: minijinja::Environment<'static>,
    digests: BTreeMap<String, [u8; 32]>,
}

/// Compiled template sets of this process, by their texts: compiling the six
/// templates costs more than rendering a page, and a store's templates
/// rarely change.
static COMPILED: std::sync::Mutex<Vec<(Vec<String>, std::sync::Arc<Templates>)>> =
    std::sync::Mutex::new(Vec::new());
/// How many template sets [`COMPILED`] keeps (a process may serve several stores).
const COMPILED_SETS: usize = 4;

impl Templates {
    /// The templates `src` uses: its own files under `templates/mirror/`,
    /// the built-in ones for the rest; compiled once per process.
    pub(super) fn load(src: &dyn Source) -> Result<std::sync::Arc<Templates>> {
        // One folder lookup answers the common case: no overrides at all.
        let overrides: BTreeSet<String> = src
            .list(TEMPLATE_DIR)?
            .into_iter()
            .filter(|(_, dir)| !dir)
            .map(|(name, _)| name)
            .collect();
        let mut texts = Vec::with_capacity(TEMPLATES.len());
        for (name, builtin) in TEMPLATES {
            let text = if overrides.contains(name) {
                match src.read(&format!("{TEMPLATE_DIR}/{name}"))? {
                    Some(b) => String::from_utf8_lossy(&b).into_owned(),
                    None => builtin.to_string(),
                }
            } else {
                builtin.to_string()
            };
            texts.push(text);
        }
        let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = cache.iter().position(|(t, _)| *t == texts) {
            let hit = cache.remove(at);
            let compiled = hit.1.clone();
            cache.insert(0, hit);
            return Ok(compiled);
        }
        let compiled = std::sync::Arc::new(Templates::compile(&texts)?);
        cache.insert(0, (texts, compiled.clone()));
        cache.truncate(COMPILED_SETS);
        Ok(compiled)
    }

    fn compile(texts: &[String]) -> Result<Templates> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(TEMPLATE_DIR, &e))?;
        env.set_syntax(syntax);
        let mut digests = BTreeMap::new();
        for ((name, _), text) in TEMPLATES.iter().zip(texts) {
            let path = format!("{TEMPLATE_DIR}/{name}");
            digests.insert(name.to_string(), Sha256::digest(text.as_bytes()).into());
            env.add_template_owned(name.to_string(), text.clone())
                .map_err(|e| template_error(&path, &e))?;
        }
        Ok(Templates { env, digests })
    }
}

fn template_error(path: &str, e: &minijinja::Error) -> Error {
    Error::Invalid {
        file: path.to_string(),
        pointer: e.line().map(|l| format!("(line {l})")).unwrap_or_default(),
        rule: "template",
        message: e.to_string(),
    }
}

/// The `../` prefix that leads from a page back to `mirror/`.
fn root_of(page: &str) -> String {
    let depth = page.matches('/').count().saturating_sub(1);
    "../".repeat(depth)
}

/// The checksum a page's banner carries, if it has one.
fn banner_checksum(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(2048)];
    let text = std::str::from_utf8(head).ok()?;
    let at = text.find(CHECKSUM)? + CHECKSUM.len();
    text.get(at..at + 64).map(str::to_string)
}

/// The pages being produced by one pass: path → new bytes (`None` = delete).
pub(super) struct Pass<'a> {
    pub(super) templates: &'a Templates,
    /// Where the current pages are read from (to skip unchanged ones).
    pub(super) pages: &'a dyn Source,
    pub(super) out: Changes,
}

impl Templates {
    /// A page: its checksum and its bytes (the banner with the edit hints
    /// and the checksum, then the rendered template with runs of blank
    /// lines folded to one). The checksum covers the output version, the
    /// template, the edit hints and the rendered text, so two pages with the
    /// same checksum are the same page.
    fn build(&self, template: &str, edit: &[String], ctx: &Value) -> Result<(String, Vec<u8>)> {
        let rendered = self
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(ctx))))
            .map_err(|e| template_error(&format!("{TEMPLATE_DIR}/{template}"), &e))?;
        // Templates stay readable with blank lines around blocks; the pages get at most one.
        let mut body = String::with_capacity(rendered.len());
        let mut blank = 0;
        for line in rendered.trim().lines() {
            let line = line.trim_end();
            blank = if line.is_empty() { blank + 1 } else { 0 };
            if blank < 2 {
                body.push_str(line);
                body.push('\n');
            }
        }
        let mut h = Sha256::new();
        h.update(VERSION.to_le_bytes());
        h.update(self.digests.get(template).copied().unwrap_or_default());
        h.update(edit.join("\n").as_bytes());
        h.update(body.as_bytes());
        let checksum = hex(&h.finalize());
        let mut text = String::with_capacity(body.len() + 400);
        text.push_str("<!--\n  Generated by cairn. Do not edit: changes here are overwritten.\n  Edit the canonical files instead (through the cairn CLI or by hand):\n");
        for e in edit {
            text.push_str("    ");
            text.push_str(e);
            text.push('\n');
        }
        text.push_str(CHECKSUM);
        text.push_str(&checksum);
        text.push_str("\n-->\n\n");
        text.push_str(&body);
        Ok((checksum, text.into_bytes()))
    }
}

/// What precedes the checksum in a page's banner.
const CHECKSUM: &str = "  checksum: sha256:";

/// A page whose data is ready but not yet hashed or rendered: memory
/// pages are gathered (reading items is sequential, the sources are not
/// shared between threads) and then built on several threads.
pub(super) struct Job {
    page: String,
    template: &'static str,
    edit: Vec<String>,
    /// The page's data without its items and part.
    ctx: Value,
    /// The part of the group the page is (`null` for a whole group).
    part: Value,
    /// The items the page lists, in order, each with the items it replaced.
    items: Vec<ItemRow>,
}

impl Job {
    /// The job's whole data, as the template sees it.
    fn data(mut self, root: String) -> (String, &'static str, Vec<String>, Value) {
        let items = self
            .items
            .iter()
            .map(|(item, chain)| {
                let mut v = item_ctx(item);
                v["superseded"] = Value::Array(chain.iter().map(|c| item_ctx(c)).collect());
                v
            })
            .collect();
        // The keys in the order `emit` would see them: they are hashed.
        self.ctx["items"] = Value::Array(items);
        self.ctx["part"] = self.part;
        self.ctx["root"] = Value::String(root);
        (self.page, self.template, self.edit, self.ctx)
    }
}

/// Items a batch of [`Job`]s may hold before it is built: bounds the memory
/// a large render holds at once.
const JOB_BATCH_ITEMS: usize = 8192;
/// Fewer items than this in a batch are built on the calling thread.
const PARALLEL_MIN_ITEMS: usize = 512;

impl Pass<'_> {
    fn emit(&mut self, page: &str, template: &str, edit: &[String], mut ctx: Value) -> Result<()> {
        if let Value::Object(m) = &mut ctx {
            m.insert("root".into(), Value::String(root_of(page)));
        }
        let (checksum, bytes) = self.templates.build(template, edit, &ctx)?;
        self.put(page.to_string(), &checksum, bytes)
    }

    /// Puts a built page into `out`, unless the current page is the same.
    fn put(&mut self, page: String, checksum: &str, bytes: Vec<u8>) -> Result<()> {
        if self.unchanged(&page, checksum)? {
            self.out.remove(&page);
        } else {
            self.out.insert(page, Some(bytes));
        }
        Ok(())
    }

    /// Whether the current page carries `checksum`.
    fn unchanged(&self, page: &str, checksum: &str) -> Result<bool> {
        Ok(match self.pages.read(page)? {
            Some(old) => banner_checksum(&old).as_deref() == Some(checksum),
            None => false,
        })
    }

    /// Builds `jobs` as [`Pass::emit`] would, on up to as many threads as the
    /// machine has cores when they hold enough items; the pages land in
    /// `out` in the jobs' order, so the result does not depend on threads.
    fn emit_jobs(&mut self, jobs: Vec<Job>) -> Result<()> {
        let items: usize = jobs.iter().map(|j| j.items.len()).sum();
        let threads = if items >= PARALLEL_MIN_ITEMS {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        let templates = self.templates;
        let built = parallel(jobs, threads, |job| {
            let root = root_of(&job.page);
            let (page, template, edit, ctx) = job.data(root);
            let (checksum, bytes) = templates.build(template, &edit, &ctx)?;
            Ok((page, checksum, bytes))
        })?;
        for (page, checksum, bytes) in built {
            self.put(page, &checksum, bytes)?;
        }
        Ok(())
    }

    pub(super) fn delete(&mut self, page: &str) -> Result<()> {
        if self.pages.read(page)?.is_some() {
            self.out.insert(page.to_string(), None);
        } else {
            self.out.remove(page);
        }
        Ok(())
    }
}

/// `f` over `items` on up to `threads` threads (contiguous runs of items
/// each), results in the items' order; the first error wins.
fn parallel<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut runs: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items.into_iter();
    loop {
        let run: Vec<T> = rest.by_ref().take(per).collect();
        if run.is_empty() {
            break;
        }
        runs.push(run);
    }
    let f = &f;
    let results: Vec<Result<Vec<R>>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| s.spawn(move || run.into_iter().map(f).collect::<Result<Vec<R>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn item_ctx(item: &MemoryItem) -> Value {
    json!({
        "id": item.id,
        "type": item.kind,
        "scope": item.scope,
        "scope_id": item.scope_id,
        "project": item.project,
        "content": item.content,
        "confidence": format!("{:.2}", item.confidence),
        "status": item.status.as_str(),
        "rationale": item.rationale,
        "source_refs": item.source_refs,
        "supersedes": item.supersedes,
        "superseded_by": item.superseded_by,
        "tags": item.tags,
        "disputed": item.disputed,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "expires_at": item.expires_at,
    })
}

/// The items an item replaced, newest first, read from the same scope.
fn chain_of(
    src: &dyn Source,
    cache: &ItemCache,
    item: &MemoryItem,
) -> Result<Vec<Arc<MemoryItem>>> {
    let mut out = Vec::new();
    let mut next = item.supersedes.clone();
    let mut seen = BTreeSet::new();
    while let Some(id) = next.take() {
        if out.len() >= MAX_CHAIN || !seen.insert(id.clone()) {
            break;
        }
        let path = layout::memory_item(&item.scope, item.scope_id.as_deref(), &id);
        let Some(old) = cache.item(src, &path)? else {
            break;
        };
        next = old.supersedes.clone();
        out.push(Arc::new(old));
    }
    Ok(out)
}

pub(super) fn read_item(src: &dyn Source, path: &str) -> Result<Option<MemoryItem>> {
    read_typed(src, path)
}

/// The renderer over one state of the store.
pub(super) struct Renderer<'a> {
    pub(super) src: &'a dyn Source,
    /// Items parsed during this pass: a scope folder holds every type, so
    /// each of its type pages would otherwise parse every item again.
    pub(super) items: std::cell::RefCell<Items>,
    /// Items parsed by earlier passes, by blob.
    pub(super) cache: &'a ItemCache,
    pub(super) cfg: &'a MirrorConfig,
    pub(super) idx: &'a Index,
    pub(super) registry: &'a Registry,
    pub(super) problems: &'a [Problem],
}

impl Renderer<'_> {
    pub(super) fn readme(&self, pass: &mut Pass<'_>) -> Result<()> {
        let runs: Vec<Value> = self
            .idx
            .runs
            .iter()
            .map(|(id, r)| json!({"id": id, "row": r, "link": run_link(id)}))
            .collect();
        let projects: Vec<Value> = self
            .idx
            .projects(self.registry)
            .into_iter()
            .map(|p| {
                let description = self
                    .registry
                    .projects
                    .iter()
                    .find(|r| r.id == p)
                    .and_then(|r| r.description.clone());
                json!({"id": p, "description": description, "registered": self.registry.find(&p).is_some()})
            })
            .collect();
        let groups: Vec<Value> = self
            .idx
            .groups
            .values()
            .map(|g| {
                json!({"scope": g.scope, "scope_id": g.scope_id, "type": g.kind, "counts": g.counts,
                       "link": group_page(g).trim_start_matches("mirror/")})
            })
            .collect();
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for g in self.idx.groups.values() {
            for (s, n) in &g.counts {
                *totals.entry(s.clone()).or_default() += n;
            }
        }
        let ctx = json!({
            "runs": runs,
            "projects": projects,
            "groups": groups,
            "totals": totals,
            "queue_size": self.idx.candidate_total(),
            "milestones": self.idx.milestones.iter().map(|m| {
                let mut v = serde_json::to_value(m).expect("rows serialize");
                v["run_link"] = Value::String(run_link(&m.run_id));
                v
            }).collect::<Vec<Value>>(),
            "events": self.idx.events,
            "problems": self.problems,
        });
        let mut ctx = ctx;
        if !self.idx.conflicts.is_empty() {
            // Only present when there are some: pages of stores without
            // conflicts keep their bytes and checksums.
            ctx["conflicts"] = conflict_rows(self.idx);
        }
        pass.emit(
            README,
            "readme.md.j2",
            &[
                "runs/<shard>/<run_id>/working_set.yaml  (cairn ws patch)".into(),
                "memory/**/*.yaml  (cairn memory propose|promote|reject|edit)".into(),
                "registry/projects.yaml, state/<project>.yaml  (cairn project, cairn state)".into(),
            ],
            ctx,
        )
    }

    pub(super) fn run(&self, pass: &mut Pass<'_>, run_id: &str) -> Result<()> {
        let page = run_page(run_id);
        let ws_path = layout::working_set(run_id);
        let Some(ws) = read_typed::<WorkingSet>(self.src, &ws_path)? else {
            return pass.delete(&page);
        };
        let dir = layout::run_dir(run_id);
        let mut episodes = Vec::new();
        for path in yaml_files(self.src, &format!("{dir}/episodes"))? {
            if let Some(ep) = read_typed::<Episode>(self.src, &path)? {
                episodes.push(json!({
                    "episode_id": ep.episode_id, "ordinal": ep.ordinal, "reason": ep.reason,
                    "summary": ep.summary, "next_entry_point": ep.next_entry_point,
                    "tag": ep.tag, "created_at": ep.created_at, "batches": ep.memory_batches,
                }));
            }
        }
        episodes.sort_by_key(|e| e["ordinal"].as_u64());
        let mut batches = Vec::new();
        for path in yaml_files(self.src, &format!("{dir}/proposals"))? {
            if let Some(b) = read_typed::<Batch>(self.src, &path)? {
                let items: Vec<Value> = b
                    .items
                    .iter()
                    .zip(b.item_ids.iter().chain(std::iter::repeat(&None)))
                    .map(|(mcr, id)| {
                        json!({"id": id, "op": mcr.get("op"), "type": mcr.get("type"),
                               "scope": mcr.get("scope"), "content": mcr.get("content")})
                    })
                    .collect();
                batches.push(json!({
                    "batch_id": b.batch_id, "status": b.status, "created_at": b.created_at,
                    "committed_at": b.committed_at, "committed_in": b.committed_in, "items": items,
                }));
            }
        }
        batches.sort_by(|a, b| {
            (a["created_at"].as_str(), a["batch_id"].as_str())
                .cmp(&(b["created_at"].as_str(), b["batch_id"].as_str()))
        });
        let ctx = json!({
            "ws": ws,
            "project_link": ws.project.as_ref().filter(|p| layout::valid_id(p)).map(|p| format!("projects/{p}.md")),
            "episodes": episodes,
            "batches": batches,
            "events": self.idx.run_events.get(run_id).cloned().unwrap_or_default(),
        });
        pass.emit(
            &page,
            "run.md.j2",
            &[
                format!("{ws_path}  (cairn ws patch {run_id})"),
                format!("{dir}/proposals/*.yaml  (cairn memory propose)"),
            ],
            ctx,
        )
    }

    pub(super) fn project(&self, pass: &mut Pass<'_>, project: &str, exists: bool) -> Result<()> {
        let page = format!("{DIR}/projects/{project}.md");
        if !exists {
            return pass.delete(&page);
        }
        let state_path = layout::project_state(project);
        let state: Option<ProjectState> = read_typed(self.src, &state_path)?;
        let entries: Vec<Value> = state
            .map(|s| {
                s.entries
                    .iter()
                    .filter(|e| e.status == crate::project::EntryStatus::Active)
                    .map(|e| serde_json::to_value(e).expect("entries serialize"))
                    .collect()
            })
            .unwrap_or_default();
        let memories: Vec<Value> = self
            .idx
            .groups
            .values()
            .filter(|g| g.scope == "project" && g.scope_id.as_deref() == Some(project))
            .map(|g| json!({"type": g.kind, "counts": g.counts, "link": group_page(g).trim_start_matches("mirror/")}))
            .collect();
        let runs: Vec<Value> = self
            .idx
            .runs
            .iter()
            .filter(|(_, r)| r.project.as_deref() == Some(project))
            // Only what the page shows, so a patch that changes none of it leaves the page alone.
            .map(|(id, r)| json!({"id": id, "link": run_link(id), "row": {"status": r.status, "stage": r.stage, "objective": r.objective}}))
            .collect();
        let mut disputed = Vec::new();
        for path in self.idx.disputed.values() {
            if let Some(item) = self.cache.item(self.src, path)? {
                if item.project.as_deref() == Some(project)
                    || (item.scope == "project" && item.scope_id.as_deref() == Some(project))
                {
                    disputed.push(item_ctx(&item));
                }
            }
        }
        let reg = self.registry.find(project).filter(|p| p.id == project);
        let ctx = json!({
            "project": project,
            "registered": reg.is_some(),
            "aliases": reg.map(|p| p.aliases.clone()).unwrap_or_default(),
            "description": reg.and_then(|p| p.description.clone()),
            "state": entries,
            "memories": memories,
            "runs": runs,
            "disputed": disputed,
        });
        pass.emit(
            &page,
            "project.md.j2",
            &[
                format!("{state_path}  (cairn state set {project} ...)"),
                format!("{}  (cairn project add)", layout::REGISTRY),
                format!(
                    "{}/**  (cairn memory ...)",
                    layout::memory_scope_dir("project", Some(project))
                ),
            ],
            ctx,
        )
    }

    /// Active items of a group whose id shard starts with `prefix`, by id,
    /// each with the items it replaced.
    fn group_items(&self, g: &Group, prefix: &str) -> Result<Vec<ItemRow>> {
        let dir = layout::memory_scope_dir(&g.scope, g.scope_id.as_deref());
        let mut items = Vec::new();
        for (shard, is_dir) in self.src.list(&dir)? {
            if !is_dir || shard.len() != 2 || !shard.starts_with(prefix) {
                continue;
            }
            for path in yaml_files(self.src, &format!("{dir}/{shard}"))? {
                let cached = self.items.borrow().get(&path).cloned();
                let item = match cached {
                    Some(i) => i,
                    None => {
                        let i = self.cache.item(self.src, &path)?.map(Arc::new);
                        self.items.borrow_mut().insert(path, i.clone());
                        i
                    }
                };
                let Some(item) = item else {
                    continue;
                };
                if item.kind != g.kind || item.status != ItemStatus::Active {
                    continue;
                }
                let chain = chain_of(self.src, self.cache, &item)?;
                items.push((item, chain));
            }
        }
        items.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(items)
    }

    /// Renders a group's pages: all of them, or only the parts in `dirty`.
    pub(super) fn group(
        &self,
        pass: &mut Pass<'_>,
        g: &Group,
        dirty: Option<&BTreeSet<String>>,
    ) -> Result<()> {
        let level = level_of(g, self.cfg.max_page_items);
        let page = group_page(g);
        let dir = layout::memory_scope_dir(&g.scope, g.scope_id.as_deref());
        let edit = vec![format!(
            "{dir}/**/*.yaml  (cairn memory edit|promote|reject)"
        )];
        let base =
            json!({"scope": g.scope, "scope_id": g.scope_id, "type": g.kind, "counts": g.counts});
        if level == 0 {
            let job = Job {
                page,
                template: "memory.md.j2",
                edit,
                ctx: base,
                part: Value::Null,
                items: self.group_items(g, "")?,
            };
            return pass.emit_jobs(vec![job]);
        }
        let parts = parts_of(g, level);
        let name = page
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".md");
        let mut ctx = base.clone();
        ctx["parts"] = Value::Array(
            parts
                .iter()
                .map(|(p, n)| json!({"prefix": p, "count": n, "link": format!("{name}/{p}.md")}))
                .collect(),
        );
        pass.emit(&page, "memory_index.md.j2", &edit, ctx)?;
        let mut jobs = Vec::new();
        let mut held = 0;
        for prefix in parts.keys() {
            if let Some(d) = dirty {
                if !d.iter().any(|s| s.starts_with(prefix.as_str())) {
                    continue;
                }
            }
            // A part shows its own items only (not the group's counts, which
            // every change in the group moves): other parts' changes do not touch it.
            let items = self.group_items(g, prefix)?;
            held += items.len();
            jobs.push(Job {
                page: part_page(g, prefix),
                template: "memory.md.j2",
                edit: edit.clone(),
                ctx: json!({"scope": g.scope, "scope_id": g.scope_id, "type": g.kind}),
                part: json!({"prefix": prefix, "index": format!("../{name}.md")}),
                items,
            });
            if held >= JOB_BATCH_ITEMS {
                pass.emit_jobs(std::mem::take(&mut jobs))?;
                held = 0;
            }
        }
        pass.emit_jobs(jobs)
    }

    /// The review queue: one page, or (more than `max_page_items`
    /// candidates) an index page and one part an id shard, of which only
    /// those in `dirty` are rendered when given.
    pub(super) fn queue(
        &self,
        pass: &mut Pass<'_>,
        dirty: Option<&BTreeSet<String>>,
    ) -> Result<()> {
        let edit = [
            "memory/**/*.yaml  (cairn memory promote ID | cairn memory reject ID --reason ...)"
                .to_string(),
        ];
        let total = self.idx.candidate_total();
        let mut ctx = json!({"total": total});
        if !self.idx.conflicts.is_empty() {
            ctx["conflicts"] = conflict_rows(self.idx);
        }
        let shards = self.idx.candidate_shards();
        if !self.idx.queue_split(self.cfg.max_page_items) {
            let mut items = Vec::new();
            for (shard, _) in &shards {
                items.extend(self.queue_items(shard)?);
            }
            items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            ctx["items"] = Value::Array(items);
            return pass.emit(QUEUE, "queue.md.j2", &edit, ctx);
        }
        ctx["parts"] = Value::Array(
            shards
                .iter()
                .map(|(p, n)| json!({"prefix": p, "count": n, "link": format!("queue/{p}.md")}))
                .collect(),
        );
        pass.emit(QUEUE, "queue.md.j2", &edit, ctx)?;
        for (shard, _) in &shards {
            if dirty.is_some_and(|d| !d.contains(shard)) {
                continue;
            }
            // A part shows its own shard only: the other shards' changes do not touch it.
            let ctx = json!({
                "items": self.queue_items(shard)?,
                "part": {"prefix": shard, "index": "../queue.md"},
            });
            pass.emit(&queue_part(shard), "queue.md.j2", &edit, ctx)?;
        }
        Ok(())
    }

    /// The candidates of one id shard as the queue shows them, by id.
    fn queue_items(&self, shard: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        for (_, path) in self.idx.candidates_in(shard) {
            if let Some(item) = self.cache.item(self.src, path)? {
                items.push(item_ctx(&item));
            }
        }
        Ok(items)
    }
}

/// The open conflicts for a page's context, by id.
fn conflict_rows(idx: &Index) -> Value {
    Value::Array(
        idx.conflicts
            .iter()
            .map(|(id, c)| json!({"id": id, "path": c.path, "pointer": c.pointer, "rule": c.rule}))
            .collect(),
    )
}

/// The memory items parsed by a pass, by path.
pub(super) type Items = std::collections::HashMap<String, Option<Arc<MemoryItem>>>;

/// A memory item as a page lists it, with the items it replaced.
type ItemRow = (Arc<MemoryItem>, Vec<Arc<MemoryItem>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_the_order_of_the_items_whatever_the_threads() {
        let items: Vec<usize> = (0..1001).collect();
        for threads in [1, 2, 3, 8, 2000] {
            let out = parallel(items.clone(), threads, |i| Ok(i * 2)).unwrap();
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
        assert!(parallel(Vec::<usize>::new(), 4, Ok).unwrap().is_empty());
    }

    #[test]
    fn parallel_reports_an_error_of_any_thread() {
        let err = parallel((0..100).collect(), 4, |i: usize| {
            if i == 77 {
                Err(Error::Invalid {
                    file: "x".into(),
                    pointer: String::new(),
                    rule: "template",
                    message: format!("item {i}"),
                })
            } else {
                Ok(i)
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("item 77"), "{err}");
    }
}
