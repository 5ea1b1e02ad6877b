//! The human mirror: golden pages, determinism, incremental regeneration and
//! empty-state pages (issue 5).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cairn::episode::{self, MilestoneRequest};
use cairn::mirror::{self, GitSource};
use cairn::working_set::{self, BootRequest};
use cairn::{memory, project, Store};
use common::setup::{self, opts};
use serde_json::json;

const RUN: &str = "run_fixed";

/// Files under mirror/ at the tip.
fn pages(store: &Store) -> BTreeMap<String, Vec<u8>> {
    let tip = store.tip().unwrap().unwrap();
    store
        .walk_files(tip, "mirror")
        .unwrap()
        .into_iter()
        .map(|(p, id, _)| (p, store.read_blob(id).unwrap()))
        .collect()
}

/// A small store with every kind of page.
fn fixture(dir: &Path) -> Store {
    let store = Store::init(dir, false, opts()).unwrap();
    project::add(
        &store,
        "alpha",
        &["a".into()],
        Some("The alpha project"),
        None,
    )
    .unwrap();
    project::state_set(
        &store,
        "alpha",
        "status",
        "next_focus",
        "ship the mirror",
        None,
        None,
    )
    .unwrap();
    let req = BootRequest {
        objective: "Build the mirror".into(),
        acceptance_criteria: vec!["pages render".into()],
        constraints: vec!["no wall clock".into()],
        project: Some("alpha".into()),
        run_id: Some(RUN.into()),
        ..Default::default()
    };
    working_set::boot(&store, &req, None).unwrap();
    let patch = json!({"_schema_version": "2.1", "expected_seq": 0,
        "set": {"status": "BUSY", "current_stage": "BUILD", "next_action": "write templates"},
        "append": {"pinned_context": [{"id": "p1", "content": "pages are derived", "timestamp": "2026-01-18T10:00:00Z", "priority": 9}],
                   "sliding_context": [{"id": "s1", "content": "started", "timestamp": "2026-01-18T10:00:00Z", "priority": 1}]}});
    working_set::patch(&store, RUN, &patch, "patch.json", None).unwrap();
    let mcrs = json!({"mcrs": [
        {"op": "add", "type": "fact", "scope": "global", "content": "git is the database", "confidence": 0.9},
        {"op": "add", "type": "decision", "scope": "project", "scope_id": "alpha", "content": "use minijinja", "confidence": 0.8}
    ]});
    let (batch, _) =
        memory::propose(&store, RUN, &mcrs, Default::default(), "mcrs.json", None).unwrap();
    episode::milestone(
        &store,
        RUN,
        &MilestoneRequest {
            reason: "templates drafted".into(),
            next_entry_point: Some("write tests".into()),
            batches: vec![batch.batch_id.clone()],
        },
        None,
    )
    .unwrap();
    // Later, so the batches sort by time rather than by their random ids.
    let store = Store::open(dir, setup::at("2026-01-18T11:00:00Z")).unwrap();
    let cand = json!({"mcrs": [{"op": "add", "type": "preference", "scope": "global", "content": "short pages", "confidence": 0.6}]});
    memory::propose(&store, RUN, &cand, Default::default(), "mcrs.json", None).unwrap();
    store
}

/// Random ids, checksums, commit ids and shard folders vary from run to run.
fn redact(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let is = |s: &[u8], f: fn(u8) -> bool| s.iter().all(|c| f(*c));
    let ulid = |c: u8| c.is_ascii_digit() || c.is_ascii_uppercase();
    let hexc = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    'outer: while i < b.len() {
        for prefix in ["mem_", "batch_", "ep_", "ev_"] {
            let p = prefix.as_bytes();
            if b[i..].starts_with(p)
                && b.len() >= i + p.len() + 26
                && is(&b[i + p.len()..i + p.len() + 26], ulid)
            {
                out.push_str(&format!("[{}]", &prefix[..prefix.len() - 1]));
                i += p.len() + 26;
                continue 'outer;
            }
        }
        if b[i..].starts_with(b"sha256:") && b.len() >= i + 71 && is(&b[i + 7..i + 71], hexc) {
            out.push_str("sha256:[checksum]");
            i += 71;
            continue;
        }
        if b[i] == b'`' && b.len() >= i + 14 && b[i + 13] == b'`' && is(&b[i + 1..i + 13], hexc) {
            out.push_str("`[commit]`");
            i += 14;
            continue;
        }
        if b[i] == b'/' && b.len() >= i + 4 && b[i + 3] == b'/' && is(&b[i + 1..i + 3], hexc) {
            out.push_str("/[shard]/");
            i += 4;
            continue;
        }
        let ch = text[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[test]
fn golden_pages_of_a_fixed_store() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    let pages = pages(&store);
    for (path, bytes) in &pages {
        if path == mirror::INDEX || path == mirror::SHARDS || path.starts_with(mirror::CANDIDATES) {
            continue;
        }
        // Run pages sit in a shard folder; the snapshot name leaves it out.
        let name = match path.strip_prefix("mirror/runs/") {
            Some(rest) => format!("runs/{}", rest.rsplit('/').next().unwrap()),
            None => path.trim_start_matches("mirror/").to_string(),
        }
        .replace('/', "__");
        insta::assert_snapshot!(name, redact(&String::from_utf8_lossy(bytes)));
    }
    // Every template produced a page.
    for p in [
        "mirror/README.md",
        "mirror/queue.md",
        &mirror::run_page(RUN),
        "mirror/projects/alpha.md",
        "mirror/memory/global/fact.md",
        "mirror/memory/project/alpha/decision.md",
    ] {
        assert!(
            pages.contains_key(p as &str),
            "{p} missing: {:?}",
            pages.keys()
        );
    }
    assert!(mirror::check(&store).unwrap().clean());
}

#[test]
fn split_pages_use_the_index_template() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    let cfg = cairn::config::MirrorConfig {
        max_page_items: 0,
        ..Default::default()
    };
    let tip = store.tip().unwrap().unwrap();
    let src = GitSource::new(&store, Some(tip));
    let out = mirror::render_all(&store, &src, Some(tip), &cfg, &[]).unwrap();
    let index = String::from_utf8_lossy(&out["mirror/memory/global/fact.md"]).into_owned();
    assert!(index.contains("split by the shard"), "{index}");
    let parts: Vec<_> = out
        .keys()
        .filter(|k| k.starts_with("mirror/memory/global/fact/"))
        .collect();
    assert_eq!(parts.len(), 1);
    let prefix = parts[0]
        .trim_start_matches("mirror/memory/global/fact/")
        .trim_end_matches(".md");
    let index = index
        .replace(&format!("shard {prefix}"), "shard [p]")
        .replace(&format!("fact/{prefix}.md"), "fact/[p].md");
    insta::assert_snapshot!("memory__global__fact__index", redact(&index));
}

#[test]
fn empty_state_pages_for_a_new_store() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = Store::init(dir.path(), true, opts()).unwrap();
    let pages = pages(&store);
    let keys: Vec<&String> = pages.keys().collect();
    assert_eq!(
        keys,
        [
            "mirror/README.md",
            "mirror/index.json",
            "mirror/queue.md",
            "mirror/shards.json"
        ]
    );
    assert_eq!(pages["mirror/shards.json"], b"{}\n");
    insta::assert_snapshot!(
        "empty__README.md",
        redact(&String::from_utf8_lossy(&pages["mirror/README.md"]))
    );
    insta::assert_snapshot!(
        "empty__queue.md",
        redact(&String::from_utf8_lossy(&pages["mirror/queue.md"]))
    );
}

#[test]
fn renders_are_deterministic_and_match_on_clones() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    let tip = store.tip().unwrap().unwrap();
    let horizon = store.commit_info(tip).unwrap().parents.first().copied();
    let cfg = store.config().unwrap().mirror;
    let src = GitSource::new(&store, Some(tip));
    let a = mirror::render_all(&store, &src, horizon, &cfg, &[]).unwrap();
    let b = mirror::render_all(&store, &src, horizon, &cfg, &[]).unwrap();
    assert_eq!(a, b);
    // The incremental pages committed along the way equal a render from scratch.
    assert_eq!(a, pages(&store));
    // A clone renders the same bytes.
    let clone = tempfile::TempDir::new().unwrap();
    setup::clone(dir.path(), clone.path());
    let other = Store::open(clone.path(), opts()).unwrap();
    let tip2 = other.tip().unwrap().unwrap();
    assert_eq!(tip, tip2);
    let src2 = GitSource::new(&other, Some(tip2));
    let c = mirror::render_all(&other, &src2, horizon, &cfg, &[]).unwrap();
    assert_eq!(a, c);
}

#[test]
fn a_patch_touches_only_its_run_page_and_the_overview() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    // A second run, so there is a page that must not change.
    setup::boot(&store, "other", Some("run_other"));
    working_set::patch(
        &store,
        "run_other",
        &json!({"_schema_version": "2.1", "expected_seq": 0, "set": {"status": "BUSY"}}),
        "p.json",
        None,
    )
    .unwrap();
    let patch =
        json!({"_schema_version": "2.1", "expected_seq": 1, "set": {"next_action": "review"}});
    let out = working_set::patch(&store, RUN, &patch, "p.json", None).unwrap();
    let mut mirror_paths: Vec<String> = store
        .changed_paths(out.committed.commit)
        .unwrap()
        .into_iter()
        .filter(|p| p.starts_with("mirror/"))
        .collect();
    mirror_paths.sort();
    // The run page, the overview (run table and events) and the index; and
    // run_other's page, whose timeline gains the previous commit's event (a
    // page shows the events before its own commit). The project page shows
    // the run's status and stage, which did not change: not rewritten.
    let mut expected = vec![
        "mirror/README.md".to_string(),
        "mirror/index.json".to_string(),
        mirror::run_page(RUN),
        mirror::run_page("run_other"),
    ];
    expected.sort();
    assert_eq!(mirror_paths, expected);
    assert!(mirror::check(&store).unwrap().clean());
}

#[test]
fn a_memory_review_touches_the_queue_and_its_memory_page() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    let queue = memory::queue(&store, &Default::default()).unwrap();
    let (_, c) = memory::promote(&store, &queue[0].id, None, None).unwrap();
    let changed: Vec<String> = store
        .changed_paths(c.commit)
        .unwrap()
        .into_iter()
        .filter(|p| p.starts_with("mirror/"))
        .collect();
    let mut expected = vec![
        "mirror/README.md".to_string(),
        "mirror/index.json".to_string(),
        "mirror/memory/global/preference.md".to_string(),
        "mirror/queue.md".to_string(),
        mirror::SHARDS.to_string(),
        mirror::run_page(RUN),
        format!(
            "{}/{}.json",
            mirror::CANDIDATES,
            cairn::layout::shard(&queue[0].id)
        ),
    ];
    expected.sort();
    assert_eq!(changed, expected);
    assert!(mirror::check(&store).unwrap().clean());
}

/// The work-tree file of the memory item whose content is `content`.
fn item_file(dir: &Path, content: &str) -> std::path::PathBuf {
    setup::files_under(&dir.join("memory"))
        .into_iter()
        .find(|f| setup::read(f).contains(content))
        .unwrap()
}

#[test]
fn the_write_after_hand_commits_catches_up_without_a_full_render() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    // Two hand commits with plain git: one edits a memory item, one edits a
    // page by hand (which the next write puts back).
    let file = item_file(dir.path(), "git is the database");
    setup::edit(&file, |t| {
        t.replace("git is the database", "git is the ledger")
    });
    setup::git(
        dir.path(),
        &["commit", "-qam", "edit a memory item by hand"],
    );
    std::fs::write(dir.path().join("mirror/queue.md"), "hand edit\n").unwrap();
    setup::git(dir.path(), &["commit", "-qam", "edit a page by hand"]);
    assert!(!mirror::check(&store).unwrap().clean());
    let full = mirror::full_renders_on_this_thread();
    let patch =
        json!({"_schema_version": "2.1", "expected_seq": 1, "set": {"next_action": "review"}});
    let out = working_set::patch(&store, RUN, &patch, "p.json", None).unwrap();
    assert_eq!(
        mirror::full_renders_on_this_thread(),
        full,
        "the catch-up was a full render"
    );
    // The mirror equals a render from scratch: the hand-edited item is
    // shown, the hand-edited page is back, the hand commits are events.
    assert!(mirror::check(&store).unwrap().clean());
    let pages = pages(&store);
    let fact = String::from_utf8_lossy(&pages["mirror/memory/global/fact.md"]).into_owned();
    assert!(fact.contains("git is the ledger"), "{fact}");
    let readme = String::from_utf8_lossy(&pages["mirror/README.md"]).into_owned();
    assert!(readme.contains("edit a page by hand"), "{readme}");
    // Only the pages the changes touch were written.
    let mut written: Vec<String> = store
        .changed_paths(out.committed.commit)
        .unwrap()
        .into_iter()
        .filter(|p| p.starts_with("mirror/"))
        .collect();
    written.sort();
    let mut expected = vec![
        "mirror/README.md".to_string(),
        "mirror/index.json".to_string(),
        "mirror/memory/global/fact.md".to_string(),
        "mirror/queue.md".to_string(),
        mirror::run_page(RUN),
    ];
    expected.sort();
    assert_eq!(written, expected);
    // An index that cairn did not write is not trusted: the write renders everything.
    std::fs::write(dir.path().join("mirror/index.json"), "{}\n").unwrap();
    setup::git(dir.path(), &["commit", "-qam", "break the index"]);
    let patch = json!({"_schema_version": "2.1", "expected_seq": 2, "set": {"next_action": "x"}});
    working_set::patch(&store, RUN, &patch, "p.json", None).unwrap();
    assert_eq!(mirror::full_renders_on_this_thread(), full + 1);
    assert!(mirror::check(&store).unwrap().clean());
}

#[test]
fn check_reports_a_hand_edited_page_and_regenerate_repairs_it() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    let tip = store.tip().unwrap().unwrap();
    // A hand commit through git that edits a page.
    let page = dir.path().join("mirror/queue.md");
    std::fs::write(&page, "hand edit\n").unwrap();
    setup::git(dir.path(), &["commit", "-qam", "edit a page"]);
    let report = mirror::check(&store).unwrap();
    assert!(report.differ.contains(&"mirror/queue.md".to_string()));
    let done = mirror::regenerate(&store).unwrap();
    let commit = done.commit.as_ref().expect("a regenerate commit");
    assert_eq!(
        commit.event.event_type,
        cairn::ledger::EventType::MirrorRegenerated
    );
    assert!(mirror::check(&store).unwrap().clean());
    assert_ne!(store.tip().unwrap().unwrap(), tip);
    // Nothing left to do: no second commit.
    let again = mirror::regenerate(&store).unwrap();
    assert!(again.commit.is_none());
}

#[test]
fn the_mirror_can_be_switched_off_or_untracked() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = Store::init(dir.path(), false, opts()).unwrap();
    let cfg = setup::read(dir.path().join("cairn.yaml"));
    let untracked = cfg.replace("  tracked: true", "  tracked: false");
    let set = |text: &str| {
        let text = text.to_string();
        store
            .transact(None, |_| {
                Ok(cairn::store::Mutation {
                    changes: [("cairn.yaml".to_string(), Some(text.clone().into_bytes()))]
                        .into_iter()
                        .collect(),
                    event: cairn::ledger::EventDraft::new(
                        cairn::ledger::EventType::ConfigChanged,
                        "config",
                    ),
                    tags: Vec::new(),
                })
            })
            .unwrap()
    };
    set(&untracked);
    assert!(pages(&store).is_empty());
    let ignore = setup::read(dir.path().join(".gitignore"));
    assert!(ignore.lines().any(|l| l == "mirror/"));
    setup::boot(&store, "untracked", Some(RUN));
    assert!(pages(&store).is_empty());
    assert!(dir.path().join(mirror::run_page(RUN)).is_file());
    assert!(mirror::check(&store).unwrap().clean());
    let off = untracked.replace("  enabled: true", "  enabled: false");
    set(&off);
    let before = std::fs::read(dir.path().join("mirror/README.md")).unwrap();
    working_set::patch(
        &store,
        RUN,
        &json!({"_schema_version": "2.1", "expected_seq": 0, "set": {"status": "DONE"}}),
        "p.json",
        None,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("mirror/README.md")).unwrap(),
        before
    );
}

/// Commits `text` as the store's cairn.yaml.
fn set_config(store: &Store, text: &str) {
    store
        .transact(None, |_| {
            Ok(cairn::store::Mutation {
                changes: [("cairn.yaml".to_string(), Some(text.as_bytes().to_vec()))]
                    .into_iter()
                    .collect(),
                event: cairn::ledger::EventDraft::new(
                    cairn::ledger::EventType::ConfigChanged,
                    "config",
                ),
                tags: Vec::new(),
            })
        })
        .unwrap();
}

#[test]
fn a_long_review_queue_splits_by_shard_and_no_derived_file_lists_it_whole() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = Store::init(dir.path(), false, opts()).unwrap();
    let cfg = setup::read(dir.path().join("cairn.yaml"));
    assert!(cfg.contains("  tracked: true\n"), "{cfg}");
    set_config(
        &store,
        &cfg.replace(
            "  tracked: true\n",
            "  tracked: true\n  max_page_items: 3\n",
        ),
    );
    setup::boot(&store, "queue", Some(RUN));
    let full = mirror::full_renders_on_this_thread();
    for i in 0..8 {
        let mcrs = json!({"mcrs": [{"op": "add", "type": "fact", "scope": "global",
            "content": format!("candidate number {i}"), "confidence": 0.5}]});
        memory::propose(&store, RUN, &mcrs, Default::default(), "mcrs.json", None).unwrap();
        let report = mirror::check(&store).unwrap();
        assert!(report.clean(), "after candidate {i}: {report:?}");
    }
    let ids: Vec<String> = memory::queue(&store, &Default::default())
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids.len(), 8);
    let shards: std::collections::BTreeSet<String> =
        ids.iter().map(|id| cairn::layout::shard(id)).collect();
    let pages = pages(&store);
    let queue = String::from_utf8_lossy(&pages["mirror/queue.md"]).into_owned();
    assert!(
        queue.contains("8 candidate(s) awaiting review, split by the shard"),
        "{queue}"
    );
    for shard in &shards {
        let part =
            String::from_utf8_lossy(&pages[&format!("mirror/queue/{shard}.md")]).into_owned();
        assert!(part.contains("[all parts](../queue.md)"), "{part}");
        let list: BTreeMap<String, String> =
            serde_json::from_slice(&pages[&format!("mirror/candidates/{shard}.json")]).unwrap();
        assert!(list.keys().all(|id| cairn::layout::shard(id) == *shard));
    }
    let index = String::from_utf8_lossy(&pages["mirror/index.json"]).into_owned();
    assert!(!ids.iter().any(|id| index.contains(id.as_str())), "{index}");
    // Reviewing them back below the limit joins the queue into one page.
    for id in &ids[..6] {
        let (_, c) = memory::promote(&store, id, None, None).unwrap();
        let written: Vec<String> = store.changed_paths(c.commit).unwrap();
        let shard = cairn::layout::shard(id);
        assert!(
            written.contains(&format!("mirror/candidates/{shard}.json")),
            "{written:?}"
        );
        let report = mirror::check(&store).unwrap();
        assert!(report.clean(), "after promoting {id}: {report:?}");
    }
    let pages = self::pages(&store);
    assert!(
        !pages.keys().any(|p| p.starts_with("mirror/queue/")),
        "{:?}",
        pages.keys()
    );
    let queue = String::from_utf8_lossy(&pages["mirror/queue.md"]).into_owned();
    assert!(queue.contains("2 candidate(s) awaiting review."), "{queue}");
    assert_eq!(
        mirror::full_renders_on_this_thread(),
        full,
        "every write was incremental"
    );
}

/// The parsed-item cache under the store's local folder saves parsing when
/// pages are rendered again; it must never change what a page says. Pages
/// made with the cache warm match a render that parses every item, and a
/// damaged cache file is ignored.
#[test]
fn the_item_cache_never_changes_what_pages_say() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = fixture(dir.path());
    let cache = store.local_dir().join("cache").join("mirror-items");
    // Confidences whose shortest decimal form is long (the cache keeps
    // floats exactly: serde_json's float_roundtrip).
    let confidences = [0.1, 0.7, 1.0 / 3.0, 0.123456789012345];
    for (i, c) in confidences.iter().enumerate() {
        let mcrs = json!({"mcrs": [{"op": "add", "type": "fact", "scope": "global",
            "content": format!("cached fact {i}"), "confidence": c}]});
        memory::propose(&store, RUN, &mcrs, Default::default(), "mcrs.json", None).unwrap();
    }
    let ids: Vec<String> = memory::queue(&store, &Default::default())
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert!(ids.len() >= confidences.len());
    memory::promote(&store, &ids[0], None, None).unwrap();
    assert!(
        std::fs::read_dir(&cache).is_ok_and(|d| d.count() > 0),
        "the writes filled no cache under {}",
        cache.display()
    );
    // A render that parses everything agrees with the pages made warm.
    std::fs::remove_dir_all(&cache).unwrap();
    let report = mirror::check(&store).unwrap();
    assert!(report.clean(), "{report:?}");
    // Damaged cache files are read as empty ones.
    let mut damaged = 0;
    for entry in walkdir(&cache) {
        std::fs::write(&entry, b"{\"format\": 1, \"entries\": 7").unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    memory::reject(&store, &ids[1], "not needed", None).unwrap();
    std::fs::remove_dir_all(&cache).unwrap();
    let report = mirror::check(&store).unwrap();
    assert!(report.clean(), "{report:?}");
}

/// Every file under a folder, at any depth.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A change to many items of a large group renders its part pages on
/// several threads (the renderer does so past a few hundred items): the
/// pages it commits must be the ones a render from scratch gives, byte for
/// byte, and a second commit of the same change must find nothing to do.
#[test]
fn a_large_change_renders_the_same_pages_as_a_render_from_scratch() {
    use cairn::store::{Changes, Mutation};
    use cairn::{layout, ledger};
    let dir = tempfile::TempDir::new().unwrap();
    let store = Store::init(dir.path(), false, opts()).unwrap();
    let item = |i: usize, version: usize| {
        let id = format!("mem_{:026}", i * 7919 % 100_003);
        let v = json!({
            "_schema_version": "2.1", "id": id, "type": if i.is_multiple_of(3) { "decision" } else { "fact" },
            "scope": "global", "content": format!("item {i}, version {version}"),
            "confidence": 0.7, "status": "active", "source_refs": ["run:test"],
            "created_at": "2026-01-18T10:00:00Z", "updated_at": format!("2026-01-18T10:{version:02}:00Z"),
        });
        (
            layout::memory_item("global", None, &id),
            Some(cairn::schema::to_yaml(&v).into_bytes()),
        )
    };
    let write = |range: std::ops::Range<usize>, version: usize| {
        store
            .transact(None, |_| {
                Ok(Mutation {
                    changes: range.clone().map(|i| item(i, version)).collect::<Changes>(),
                    event: ledger::EventDraft::new(ledger::EventType::MemoryImported, "test"),
                    tags: Vec::new(),
                })
            })
            .unwrap()
    };
    write(0..2400, 0);
    // 1,200 items changed across every part page of both groups.
    write(0..2400, 1);
    let before = pages(&store);
    let parts = before
        .keys()
        .filter(|p| p.starts_with("mirror/memory/global/fact/"))
        .count();
    assert!(parts >= 16, "the fact group split into {parts} parts");
    let report = mirror::check(&store).unwrap();
    assert!(report.clean(), "{report:?}");
    let tip = store.tip().unwrap().unwrap();
    let src = GitSource::new(&store, Some(tip));
    let cfg = cairn::config::MirrorConfig::default();
    let horizon = store.commit_info(tip).unwrap().parents.first().copied();
    let fresh = mirror::render_all(&store, &src, horizon, &cfg, &[]).unwrap();
    for (path, bytes) in &before {
        assert_eq!(
            fresh.get(path),
            Some(bytes),
            "{path} differs from a fresh render"
        );
    }
    assert_eq!(fresh.len(), before.len());
}
