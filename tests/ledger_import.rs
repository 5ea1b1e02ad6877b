//! The write path's bulk and history ends: `cairn log` answered from the
//! search index gives what the walk of the history gives (after catch-ups,
//! a hand commit and a sync merge), and `cairn memory import` streams its
//! file into bounded batches, one commit each, or imports nothing.

mod common;

use cairn::api;
use cairn::ledger::{self, EventType, LogQuery};
use cairn::{Store, StoreOptions};
use common::cli::{refused, write, Env};
use common::net::Net;
use serde_json::json;

/// Both paths, unfiltered and with the filters that the index narrows.
fn assert_log_paths_agree(store: &Store, run: &str, context: &str) {
    let walk = ledger::query(store, &LogQuery::default()).unwrap();
    assert!(walk.len() > 10, "{context}: a store with many events");
    let queries = [
        LogQuery::default(),
        LogQuery {
            limit: Some(7),
            ..Default::default()
        },
        LogQuery {
            run_id: Some(run.to_string()),
            ..Default::default()
        },
        LogQuery {
            event_type: Some(EventType::WsUpdateApplied),
            limit: Some(3),
            ..Default::default()
        },
        LogQuery {
            event_type: Some(EventType::ManualEdit),
            ..Default::default()
        },
    ];
    for q in queries {
        let from_walk = ledger::query(store, &q).unwrap();
        let from_index = api::log_events(store, &q, &|_, _| {}).unwrap();
        assert_eq!(
            serde_json::to_value(&from_index).unwrap(),
            serde_json::to_value(&from_walk).unwrap(),
            "{context}: {q:?}"
        );
    }
}

fn append(store: &Store, run: &str, n: usize, tag: &str) {
    for i in 0..n {
        let seq = cairn::working_set::show(store, run, None)
            .unwrap()
            .update_seq;
        let p = json!({"expected_seq": seq, "append": {"sliding_context": [{"id": format!("{tag}{i}"), "content": "x"}]}});
        cairn::working_set::patch(store, run, &p, "test", None).unwrap();
    }
}

#[test]
fn log_from_the_index_matches_the_walk_of_the_history() {
    let (net, a) = Net::new();
    let run = a.boot("ledger");
    let store = Store::open(&a.dir, StoreOptions::default()).unwrap();
    append(&store, &run, 12, "a");
    // The index is built from scratch here...
    assert_log_paths_agree(&store, &run, "first build");
    // ...and caught up from here on.
    append(&store, &run, 3, "b");
    assert_log_paths_agree(&store, &run, "catch-up");
    // A hand commit: its event is read back from the commit, with its paths.
    std::fs::write(a.dir.join("notes.md"), "by hand\n").unwrap();
    a.git(&["add", "notes.md"]);
    a.git(&["commit", "-q", "-m", "a note by hand"]);
    let walk = ledger::query(&store, &LogQuery::default()).unwrap();
    let hand = walk.last().unwrap();
    assert_eq!(hand.message.as_deref(), Some("a note by hand"));
    assert!(hand.paths.contains(&"notes.md".to_string()), "{hand:?}");
    assert_log_paths_agree(&store, &run, "after a hand commit");
    // A merge: work on both sides of a sync.
    a.ok(&["sync"]);
    let b = net.clone("b", true);
    b.append(&run, "from-b");
    b.ok(&["sync"]);
    append(&store, &run, 2, "c");
    a.ok(&["sync"]);
    let walk = ledger::query(&store, &LogQuery::default()).unwrap();
    assert!(
        walk.iter().any(|e| e.event_type == EventType::SyncMerge),
        "a sync merge happened"
    );
    assert_log_paths_agree(&store, &run, "after a sync merge");
    append(&store, &run, 2, "d");
    assert_log_paths_agree(&store, &run, "after a merge and more writes");
    // The CLI answers the same.
    let cli = a.ok(&["log"]);
    let walk = ledger::query(&store, &LogQuery::default()).unwrap();
    assert_eq!(cli["events"], serde_json::to_value(&walk).unwrap());
}

fn records(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let r = json!({"id": format!("ext-{i}"), "content": format!("imported fact number {i}"), "type": "fact"});
        text.push_str(&r.to_string());
        // Blank lines and CRLF endings are allowed.
        text.push_str(if i % 4 == 0 { "\r\n\n" } else { "\n" });
    }
    text
}

fn commit_count(env: &Env) -> usize {
    env.git(&["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn import_writes_bounded_batches_one_commit_each() {
    let env = Env::store();
    let before = commit_count(&env);
    let f = write(env.home.path(), "items.jsonl", &records(23));
    let report = env.ok(&["memory", "import", &f, "--batch", "5"]);
    assert_eq!(report["imported"], json!(23));
    assert_eq!(report["commits"], json!(5));
    let ids: Vec<&str> = report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(distinct.len(), 23);
    assert_eq!(commit_count(&env), before + 5);
    // One MEMORY_IMPORTED event per batch, each at most 5 items, in order.
    let log = env.ok(&["log", "--type", "memory_imported"]);
    let events = log["events"].as_array().unwrap();
    let counts: Vec<u64> = events
        .iter()
        .map(|e| e["payload"]["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![5, 5, 5, 5, 3]);
    let firsts: Vec<u64> = events
        .iter()
        .map(|e| e["payload"]["first_record"].as_u64().unwrap())
        .collect();
    assert_eq!(firsts, vec![1, 6, 11, 16, 21]);
    let mut in_events = Vec::new();
    for (n, e) in events.iter().enumerate() {
        let items = e["payload"]["items"].as_array().unwrap();
        in_events.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        // Each batch's items are in its one commit; the mirror pages of all
        // of them are rendered once, by the last.
        let paths = e["paths"].as_array().unwrap();
        let pages = paths
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("mirror/"));
        assert_eq!(pages, n + 1 == events.len(), "{e}");
    }
    assert_eq!(in_events, ids);
    // Every item is there, active, with its record's provenance.
    let listed = env.ok(&["memory", "list"]);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 23);
    for (n, id) in ids.iter().enumerate() {
        let item = env.ok(&["memory", "show", id]);
        assert_eq!(item["status"], json!("active"));
        let refs = item["source_refs"].as_array().unwrap();
        assert!(refs.contains(&json!(format!("import:ext-{n}"))), "{item}");
        assert!(
            refs.contains(&json!(format!("file:{f}#{}", n + 1))),
            "{item}"
        );
    }
    env.ok(&["fsck"]);
    // The last commit's pages are those a render from scratch gives.
    env.ok(&["mirror", "--check"]);
}

#[test]
fn a_bad_record_anywhere_imports_nothing() {
    let env = Env::store();
    let state = env.state();
    // The bad record is the last: the first pass finds it before any batch.
    let mut text = records(12);
    text.push_str("{\"content\": \"bad\", \"confidence\": 7}\n");
    let f = write(env.home.path(), "bad.jsonl", &text);
    let err = refused(
        &env,
        &["memory", "import", &f, "--batch", "2"],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(
        err["details"]["violations"][0]["pointer"],
        json!("/12/confidence")
    );
    // A line over the input limit is refused by its line number.
    let mut text = records(3);
    text.push_str(&format!(
        "{{\"content\": \"{}\"}}\n",
        "x".repeat(9 * 1024 * 1024)
    ));
    let f = write(env.home.path(), "big.jsonl", &text);
    let err = refused(&env, &["memory", "import", &f], None, "VALIDATION", 3);
    assert_eq!(err["code"], json!("TOO_LARGE"), "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("big.jsonl:5"),
        "{err}"
    );
    assert_eq!(env.state(), state);
}
