//! The brief: the markdown (or JSON pack) an agent injects into its prompt.
//!
//! Sections come in trust order — trusted project state (curated), objective,
//! acceptance criteria, constraints, pinned context, sliding context, then the
//! most relevant active memories — and the whole fits a token budget. Each
//! section has an optional cap (`budgets.brief_sections`); past the caps,
//! the lowest-value content goes first (memories by relevance, then sliding
//! context in eviction order, then pinned by priority, then constraints and
//! criteria from the last), and an item is kept whole or dropped whole. The
//! objective and the last milestone's summary and next entry point are never
//! dropped, and neither are pinned context and constraints, nor (trust order
//! governs) anything more trusted than them: when those alone exceed the
//! budget, the brief goes over it and says so.
//! The brief states what it left out, one line per section and reason, and
//! shows memory ids (an agent needs them to propose an `update`). Output is
//! rendered from `templates/brief.md.j2` (a store may override it) and is
//! byte-for-byte deterministic.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::project;
use crate::search::{self, SearchQuery};
use crate::store::Store;
use crate::working_set::{self, estimate_tokens};

/// The built-in template.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/brief.md.j2");
/// Where a store overrides the template.
pub const TEMPLATE_PATH: &str = "templates/brief.md.j2";

/// Sections, in trust order.
pub const SECTIONS: [&str; 7] = [
    "state",
    "objective",
    "criteria",
    "constraints",
    "pinned",
    "sliding",
    "memories",
];

/// What to brief.
#[derive(Debug, Clone, Default)]
pub struct BriefRequest {
    /// The run.
    pub run_id: String,
    /// The memory query (default: objective and next action).
    pub query: Option<String>,
    /// The token budget (default `budgets.brief_tokens`).
    pub budget: Option<u64>,
}

/// Multipliers of a memory's search score in the brief, by type: curated
/// knowledge (decisions, facts) before raw conversation (episodic turns,
/// captured interactions). Types not listed weigh 1.
pub const TYPE_WEIGHTS: [(&str, f64); 8] = [
    ("decision", 1.3),
    ("fact", 1.2),
    ("identity", 1.1),
    ("preference", 1.1),
    ("project", 1.1),
    ("adaptation", 0.9),
    ("episodic", 0.6),
    ("interaction", 0.5),
];

/// Multiplier of a memory scoped to the run's own project or run; one
/// scoped to another project gets its inverse.
pub const OWN_SCOPE_WEIGHT: f64 = 1.5;

/// The relevance floor: a memory's text match (its BM25) must reach this
/// share of the best candidate's to be briefed.
pub const RELEVANCE_FLOOR: f64 = 0.25;

/// How many search candidates the brief ranks per memory slot.
const CANDIDATES_PER_SLOT: usize = 5;

/// Token use of one section.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SectionUsage {
    /// Tokens used.
    pub tokens: u64,
    /// Items kept.
    pub items: usize,
    /// The section's cap, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<u64>,
}

/// Something the budget left out.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dropped {
    /// The section.
    pub section: String,
    /// The item's id, or its first words.
    pub item: String,
    /// Its tokens.
    pub tokens: u64,
    /// `section_cap` or `budget`.
    pub reason: String,
}

/// Sections whose items the brief never drops.
const NEVER_DROPPED: [&str; 2] = ["constraints", "pinned"];

/// How people call a section in the brief's notes.
fn section_name(section: &str) -> &str {
    match section {
        "state" => "trusted project state",
        "criteria" => "acceptance criteria",
        "pinned" => "pinned context",
        "sliding" => "recent context",
        other => other,
    }
}

/// One line per section and reason saying what was left out, in trust order.
fn left_out_lines(dropped: &[Dropped], budget: u64) -> Vec<String> {
    let mut lines = Vec::new();
    for section in SECTIONS {
        for reason in ["section_cap", "budget"] {
            let these: Vec<&Dropped> = dropped
                .iter()
                .filter(|d| d.section == section && d.reason == reason)
                .collect();
            if these.is_empty() {
                continue;
            }
            let tokens: u64 = these.iter().map(|d| d.tokens).sum();
            let why = if reason == "budget" {
                format!("over the budget of {budget} tokens")
            } else {
                format!("over the section's cap (budgets.brief_sections.{section})")
            };
            lines.push(format!(
                "{}: {} item{} ({tokens} tokens), {why}",
                section_name(section),
                these.len(),
                if these.len() == 1 { "" } else { "s" },
            ));
        }
    }
    lines
}

/// A rendered brief.
#[derive(Debug, Clone, Serialize)]
pub struct Brief {
    /// The markdown.
    pub markdown: String,
    /// The budget it was fitted to.
    pub budget: u64,
    /// Tokens used by the kept items.
    pub used: u64,
    /// Per-section usage.
    pub sections: BTreeMap<String, SectionUsage>,
    /// What was left out.
    pub dropped: Vec<Dropped>,
    /// The memory query used.
    pub query: String,
    /// Milliseconds spent: search, fit, render, total.
    pub timing_ms: BTreeMap<String, f64>,
    /// What the agent should know before trusting the brief (open merge
    /// conflicts on its run, its project's state or memory).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the brief says it left out: one line per section and reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// The project whose trusted state the brief shows, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Where that project came from: `run` (the run names it), `hint` (the
    /// caller's name for it, e.g. the current folder) or `only` (the store's
    /// only registered project).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_from: Option<&'static str>,
    /// Memories the search found that match the query too weakly to brief
    /// (below the relevance floor), not counted in `dropped`.
    pub below_floor: usize,
}

struct Item {
    section: &'static str,
    label: String,
    tokens: u64,
    value: Value,
}

fn label(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(8).collect();
    words.join(" ")
}

/// Builds the brief of a run.
pub fn brief(store: &Store, req: &BriefRequest) -> Result<Brief> {
    brief_with_hint(store, req, None)
}

/// Builds the brief of a run; `project_hint` names the project when the
/// run names none (e.g. the folder the agent works in), and counts when
/// the project registry knows it.
pub fn brief_with_hint(
    store: &Store,
    req: &BriefRequest,
    project_hint: Option<&str>,
) -> Result<Brief> {
    let started = Instant::now();
    let config = store.config()?;
    let ws = working_set::show(store, &req.run_id, None)?;
    let budget = req.budget.unwrap_or(config.budgets.brief_tokens);
    let query = req.query.clone().unwrap_or_else(|| {
        format!(
            "{} {}",
            ws.objective,
            ws.next_action.clone().unwrap_or_default()
        )
        .trim()
        .to_string()
    });
    // Items per section, each list in descending value.
    let mut items: Vec<Item> = Vec::new();
    let (project, project_from) = run_project(store, ws.project.as_deref(), project_hint)?;
    if let Some(p) = &project {
        let (_, entries) = project::state_get(store, p, None)?;
        for e in entries {
            let text = format!("{} / {}: {}", e.category, e.key, e.value);
            items.push(Item {
                section: "state",
                label: format!("{}/{}", e.category, e.key),
                tokens: estimate_tokens(&text) + 2,
                value: json!(e),
            });
        }
    }
    for c in ws.acceptance_criteria.iter().flatten() {
        items.push(Item {
            section: "criteria",
            label: label(c),
            tokens: estimate_tokens(c) + 2,
            value: json!(c),
        });
    }
    for c in ws.constraints.iter().flatten() {
        items.push(Item {
            section: "constraints",
            label: label(c),
            tokens: estimate_tokens(c) + 2,
            value: json!(c),
        });
    }
    let mut pinned = ws.pinned_context.clone();
    pinned.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    for i in pinned {
        items.push(Item {
            section: "pinned",
            label: i.id.clone(),
            tokens: estimate_tokens(&i.content) + 2,
            value: json!(i),
        });
    }
    // Sliding context: most valuable first = reverse eviction order.
    let mut sliding = ws.sliding_context.clone();
    let mut order = sliding.clone();
    let evicted_first = working_set::evict(&mut order, 0);
    sliding.sort_by_key(|i| {
        std::cmp::Reverse(evicted_first.iter().position(|e| e.id == i.id).unwrap_or(0))
    });
    for i in sliding {
        items.push(Item {
            section: "sliding",
            label: i.id.clone(),
            tokens: estimate_tokens(&i.content) + 2,
            value: json!(i),
        });
    }
    let search_started = Instant::now();
    let mut memories = Vec::new();
    let mut below_floor = 0;
    if config.budgets.brief_memories > 0 {
        let q = SearchQuery {
            text: query.clone(),
            top_k: config.budgets.brief_memories * CANDIDATES_PER_SLOT,
            ..Default::default()
        };
        let hits = search::search(store, &q, &search::Ranking::from(&config), &|_, _| {})?.hits;
        let own = Scopes {
            run_id: &ws.run_id,
            project: project.as_deref(),
        };
        (memories, below_floor) = select_memories(hits, &own, config.budgets.brief_memories);
    }
    let search_ms = search_started.elapsed().as_secs_f64() * 1000.0;
    for m in &memories {
        items.push(Item {
            section: "memories",
            label: label(&m.content),
            tokens: estimate_tokens(&m.content) + 8,
            value: json!({"id": m.id, "content": m.content, "type": m.kind, "scope": m.scope,
                "confidence": m.score_confidence(), "score": m.score}),
        });
    }
    let milestone = last_milestone(store, &ws.run_id)?;
    let fit_started = Instant::now();
    let objective_tokens = estimate_tokens(&ws.objective)
        + estimate_tokens(ws.next_action.as_deref().unwrap_or_default())
        + estimate_tokens(ws.current_stage.as_deref().unwrap_or_default())
        + 8
        + milestone.as_ref().map_or(0, |m| {
            estimate_tokens(&m.summary)
                + estimate_tokens(m.next_entry_point.as_deref().unwrap_or_default())
                + 8
        });
    let mut keep: Vec<bool> = vec![true; items.len()];
    let mut dropped = Vec::new();
    // 1. Section caps: keep each section's most valuable items that fit its cap.
    for section in SECTIONS {
        let Some(cap) = config.budgets.brief_sections.get(section).copied() else {
            continue;
        };
        if NEVER_DROPPED.contains(&section) {
            continue;
        }
        let mut used = 0;
        for (i, it) in items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.section == section)
        {
            if used + it.tokens > cap {
                keep[i] = false;
                dropped.push(Dropped {
                    section: section.into(),
                    item: it.label.clone(),
                    tokens: it.tokens,
                    reason: "section_cap".into(),
                });
            } else {
                used += it.tokens;
            }
        }
    }
    // 2. The budget: drop from the least trusted section, least valuable item first.
    let total = |keep: &[bool]| -> u64 {
        objective_tokens
            + items
                .iter()
                .zip(keep)
                .filter(|(_, k)| **k)
                .map(|(it, _)| it.tokens)
                .sum::<u64>()
    };
    'outer: for section in SECTIONS.iter().rev() {
        if NEVER_DROPPED.contains(section) {
            // Nothing above them in trust order goes while they stay.
            break;
        }
        let idx: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].section == *section)
            .rev()
            .collect();
        for i in idx {
            if total(&keep) <= budget {
                break 'outer;
            }
            if keep[i] {
                keep[i] = false;
                dropped.push(Dropped {
                    section: (*section).into(),
                    item: items[i].label.clone(),
                    tokens: items[i].tokens,
                    reason: "budget".into(),
                });
            }
        }
    }
    let fit_ms = fit_started.elapsed().as_secs_f64() * 1000.0;
    let mut sections: BTreeMap<String, SectionUsage> = BTreeMap::new();
    for s in SECTIONS {
        sections.insert(
            s.to_string(),
            SectionUsage {
                tokens: if s == "objective" {
                    objective_tokens
                } else {
                    0
                },
                items: usize::from(s == "objective"),
                cap: config.budgets.brief_sections.get(s).copied(),
            },
        );
    }
    let mut by_section: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (it, k) in items.iter().zip(&keep) {
        if *k {
            let u = sections
                .get_mut(it.section)
                .expect("every section is listed");
            u.tokens += it.tokens;
            u.items += 1;
            by_section
                .entry(it.section)
                .or_default()
                .push(it.value.clone());
        }
    }
    let render_started = Instant::now();
    let template = match store.tip()? {
        Some(tip) => store
            .read_file(tip, TEMPLATE_PATH)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        None => None,
    };
    let template = template.unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
    let mut env = minijinja::Environment::new();
    env.add_template_owned("brief", template)
        .map_err(|e| template_error(&e))?;
    let list = |s: &str| by_section.get(s).cloned().unwrap_or_default();
    let warnings = conflict_warnings(store, &ws.run_id, project.as_deref())?;
    let used = total(&keep);
    let mut left_out = left_out_lines(&dropped, budget);
    if below_floor > 0 {
        left_out.push(format!(
            "memories: {below_floor} weaker match{} of the objective and next action (below the relevance floor)",
            if below_floor == 1 { "" } else { "es" }
        ));
    }
    if used > budget {
        left_out.push(format!(
            "the brief takes {used} tokens, over the budget of {budget}: trusted state, the objective, acceptance criteria, constraints and pinned context are never cut for it"
        ));
    }
    let ctx = json!({
        "warnings": warnings,
        "run_id": ws.run_id,
        "project": project,
        "project_from": project_from,
        "objective": ws.objective,
        "status": ws.status.as_str(),
        "stage": ws.current_stage,
        "next_action": ws.next_action,
        "state": list("state"),
        "criteria": list("criteria"),
        "constraints": list("constraints"),
        "pinned": list("pinned"),
        "sliding": list("sliding"),
        "memories": list("memories"),
        "milestone": milestone.as_ref().map(|m| json!({
            "episode_id": m.episode_id,
            "summary": m.summary,
            "next_entry_point": m.next_entry_point,
        })),
        "left_out": left_out,
    });
    let markdown = env
        .get_template("brief")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
        .map_err(|e| template_error(&e))?;
    let markdown = format!("{}\n", markdown.trim_end());
    let render_ms = render_started.elapsed().as_secs_f64() * 1000.0;
    let mut timing_ms = BTreeMap::new();
    timing_ms.insert("search".to_string(), search_ms);
    timing_ms.insert("fit".to_string(), fit_ms);
    timing_ms.insert("render".to_string(), render_ms);
    timing_ms.insert(
        "total".to_string(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(Brief {
        markdown,
        budget,
        used,
        sections,
        dropped,
        query,
        timing_ms,
        warnings,
        left_out,
        project,
        project_from,
        below_floor,
    })
}

/// The project to brief: the run's, else the hint when the registry knows
/// it, else the store's only registered project; and where it came from.
fn run_project(
    store: &Store,
    of_run: Option<&str>,
    hint: Option<&str>,
) -> Result<(Option<String>, Option<&'static str>)> {
    if let Some(p) = of_run {
        return Ok((Some(p.to_string()), Some("run")));
    }
    let registry = project::Registry::at_tip(store)?;
    if let Some(p) = hint.and_then(|h| registry.find(h)) {
        return Ok((Some(p.id.clone()), Some("hint")));
    }
    match registry.projects.as_slice() {
        [only] => Ok((Some(only.id.clone()), Some("only"))),
        _ => Ok((None, None)),
    }
}

/// The run's own scopes: memory there counts as matching the run.
struct Scopes<'a> {
    run_id: &'a str,
    project: Option<&'a str>,
}

impl Scopes<'_> {
    /// 1 for the run's own project or run, -1 for another project, else 0.
    fn affinity(&self, hit: &search::Hit) -> i8 {
        match (hit.scope.as_str(), hit.scope_id.as_deref()) {
            ("run", Some(id)) if id == self.run_id => 1,
            ("project", Some(id)) => match self.project {
                Some(p) if p.eq_ignore_ascii_case(id) => 1,
                Some(_) => -1,
                None => 0,
            },
            _ => 0,
        }
    }
}

/// The memories to brief out of the search's candidates, best first, and
/// how many fell below the relevance floor.
///
/// The floor: a memory's text match (BM25, which weighs rare words above
/// words every item has) must reach [`RELEVANCE_FLOOR`] of the best
/// candidate's, and it must match two of the query's words that the store
/// knows (one when it knows one), where being in the run's own project or
/// run counts as one. The rest is ranked by search score times its type's
/// weight ([`TYPE_WEIGHTS`]) and its scope's ([`OWN_SCOPE_WEIGHT`]).
fn select_memories(
    hits: Vec<search::Hit>,
    own: &Scopes<'_>,
    slots: usize,
) -> (Vec<search::Hit>, usize) {
    let matched = |h: &search::Hit| -> std::collections::BTreeSet<String> {
        h.matched
            .get("content")
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    let known: std::collections::BTreeSet<String> = hits.iter().flat_map(matched).collect();
    let needed = known.len().min(2);
    let best = hits.iter().map(|h| h.bm25).fold(0.0, f64::max);
    let total = hits.len();
    let mut kept: Vec<(f64, search::Hit)> = hits
        .into_iter()
        .filter(|h| {
            let affinity = own.affinity(h);
            let evidence = matched(h).len() + usize::from(affinity > 0);
            h.bm25 >= RELEVANCE_FLOOR * best && evidence >= needed
        })
        .map(|h| {
            let kind = TYPE_WEIGHTS
                .iter()
                .find(|(k, _)| *k == h.kind)
                .map_or(1.0, |(_, w)| *w);
            let scope = match own.affinity(&h) {
                1 => OWN_SCOPE_WEIGHT,
                -1 => 1.0 / OWN_SCOPE_WEIGHT,
                _ => 1.0,
            };
            (h.score * kind * scope, h)
        })
        .collect();
    let below_floor = total - kept.len();
    kept.sort_by(|(a, x), (b, y)| b.total_cmp(a).then_with(|| x.id.cmp(&y.id)));
    kept.truncate(slots);
    (kept.into_iter().map(|(_, h)| h).collect(), below_floor)
}

/// The run's newest episode (episode ids are ULIDs: their order is the
/// milestones' order), if it has one.
fn last_milestone(store: &Store, run_id: &str) -> Result<Option<crate::episode::Episode>> {
    let Some(tip) = store.tip()? else {
        return Ok(None);
    };
    let dir = format!("{}/episodes", crate::layout::run_dir(run_id));
    let newest = store
        .list_dir(tip, &dir)?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.ends_with(".yaml"))
        .max();
    let Some(name) = newest else {
        return Ok(None);
    };
    let path = format!("{dir}/{name}");
    match store.read_file(tip, &path)? {
        Some(bytes) => Ok(Some(crate::episode::Episode::from_bytes(&path, &bytes)?)),
        None => Ok(None),
    }
}

/// One line per open merge conflict that touches the run, its project's
/// trusted state or memory, and a count of the others.
fn conflict_warnings(store: &Store, run_id: &str, project: Option<&str>) -> Result<Vec<String>> {
    let open = crate::sync::conflicts::list(&store.snapshot()?, false)?;
    let state = project.map(crate::layout::project_state);
    let mut out = Vec::new();
    let mut others = 0;
    for c in &open {
        let mine = c.run_id.as_deref() == Some(run_id)
            || Some(&c.path) == state.as_ref()
            || c.kind == "memory_item";
        if mine {
            out.push(format!(
                "merge conflict {} in {}{}: the file keeps one value, the other is in the record; `cairn conflicts show {}`",
                c.conflict_id,
                c.path,
                if c.pointer.is_empty() { String::new() } else { format!(" at {}", c.pointer) },
                c.conflict_id
            ));
        } else {
            others += 1;
        }
    }
    if others > 0 {
        out.push(format!(
            "{others} other open merge conflict(s) in the store: `cairn conflicts list`"
        ));
    }
    Ok(out)
}

fn template_error(e: &minijinja::Error) -> Error {
    Error::Invalid {
        file: TEMPLATE_PATH.into(),
        pointer: e.line().map(|l| format!("(line {l})")).unwrap_or_default(),
        rule: "template",
        message: e.to_string(),
    }
}
