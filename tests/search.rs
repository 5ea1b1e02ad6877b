//! Memory search: incremental catch-up, rebuild equivalence, identifiers,
//! filters, scope weights, deterministic ties, corrupt-index recovery, and
//! each recall method (question words, length prior, feedback, proximity,
//! dates named in the question).

mod common;

use cairn::memory::{self, ScopeFilter};
use cairn::search::{self, Ranking, SearchQuery};
use cairn::{Store, StoreOptions};
use common::setup;
use serde_json::json;

fn quiet(_: u64, _: u64) {}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    run: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::TempDir::new().unwrap();
    let (store, run) = setup::booted(dir.path(), false, StoreOptions::default(), "search", None);
    Fixture {
        _dir: dir,
        store,
        run,
    }
}

/// One search for the first hit, with the default ranking.
fn results(f: &Fixture, text: impl Into<String>) -> cairn::Result<search::SearchResults> {
    search::search(
        &f.store,
        &SearchQuery {
            text: text.into(),
            top_k: 1,
            ..Default::default()
        },
        &Ranking::default(),
        &quiet,
    )
}

impl Fixture {
    /// Proposes and commits MCRs; returns the item ids.
    fn commit(&self, mcrs: serde_json::Value) -> Vec<String> {
        let (b, _) =
            memory::propose(&self.store, &self.run, &mcrs, Default::default(), "t", None).unwrap();
        memory::commit_batch(&self.store, &b.batch_id, true, None).unwrap();
        b.item_ids.into_iter().flatten().collect()
    }

    fn search(&self, text: &str) -> Vec<String> {
        self.query(SearchQuery {
            text: text.into(),
            top_k: 10,
            ..Default::default()
        })
    }

    fn query(&self, q: SearchQuery) -> Vec<String> {
        search::search(&self.store, &q, &Ranking::default(), &quiet)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.id)
            .collect()
    }
}

fn add(content: &str) -> serde_json::Value {
    json!({"op": "add", "type": "fact", "scope": "global", "content": content})
}

#[test]
fn catch_up_follows_add_update_supersede_delete() {
    let f = fixture();
    let ids = f.commit(json!([
        add("the build server is jenkins"),
        add("the database is postgres")
    ]));
    assert_eq!(f.search("jenkins"), [ids[0].clone()]);
    // update: the old text is gone from results, the new one is found
    f.commit(
        json!([{"op": "update", "target_id": ids[0], "content": "the build server is buildkite"}]),
    );
    assert!(f.search("jenkins").is_empty());
    assert_eq!(f.search("buildkite"), [ids[0].clone()]);
    // supersede: only the new item is active
    let new = f.commit(
        json!([{"op": "supersede", "target_id": ids[1], "content": "the database is sqlite"}]),
    );
    assert!(f.search("postgres").is_empty());
    assert_eq!(f.search("database"), [new[0].clone()]);
    let any = f.query(SearchQuery {
        text: "postgres".into(),
        status: Some("superseded".into()),
        top_k: 5,
        ..Default::default()
    });
    assert_eq!(any, [ids[1].clone()]);
    // delete: gone from default results
    f.commit(json!([{"op": "delete", "target_id": new[0]}]));
    assert!(f.search("sqlite").is_empty());
    // candidates are not active
    memory::propose(
        &f.store,
        &f.run,
        &json!([add("candidate about jenkins")]),
        Default::default(),
        "t",
        None,
    )
    .unwrap();
    assert!(f.search("candidate").is_empty());
}

#[test]
fn rebuild_equals_incremental() {
    let f = fixture();
    for i in 0..5 {
        f.commit(json!([
            add(&format!("note {i} about deploys and rollbacks")),
            add(&format!("item {i} on caching layers"))
        ]));
    }
    let queries = ["deploy", "caching", "note 3", "rollbacks layers", ""];
    let before: Vec<Vec<String>> = queries.iter().map(|q| f.search(q)).collect();
    let status = search::rebuild(&f.store, &quiet).unwrap();
    assert_eq!(status.memory_items, 10);
    assert!(status.current);
    let after: Vec<Vec<String>> = queries.iter().map(|q| f.search(q)).collect();
    assert_eq!(before, after);
}

#[test]
fn identifiers_are_findable_whole_and_by_parts() {
    let f = fixture();
    let ids = f.commit(json!([
        add("deploy to uteke-cloud-dev first"),
        add("the p05-interferometer alignment"),
        add("bug in src/ledger.rs trailer parsing"),
        add("the WorkingSetManager class"),
        add("upgrade to v2.14.1 next week"),
    ]));
    for (q, want) in [
        ("uteke-cloud-dev", 0),
        ("uteke", 0),
        ("cloud", 0),
        ("p05-interferometer", 1),
        ("interferometer", 1),
        ("p05", 1),
        ("src/ledger.rs", 2),
        ("ledger.rs", 2),
        ("WorkingSetManager", 3),
        ("workingsetmanager", 3),
        ("manager", 3),
        ("v2.14.1", 4),
    ] {
        let hits = f.search(q);
        assert_eq!(hits.first(), Some(&ids[want]), "query {q:?} gave {hits:?}");
    }
}

#[test]
fn filters_and_scope_weights() {
    let f = fixture();
    let ids = f.commit(json!([
        {"op": "add", "type": "fact", "scope": "global", "content": "retry budget is three attempts"},
        {"op": "add", "type": "decision", "scope": "run", "content": "retry budget is three attempts", "tags": ["ops"]},
    ]));
    // The same text: the run scope weighs more by default.
    assert_eq!(f.search("retry budget"), [ids[1].clone(), ids[0].clone()]);
    let mut r = Ranking::default();
    r.scope_weights.insert("global".into(), 5.0);
    let hits: Vec<String> = search::search(
        &f.store,
        &SearchQuery {
            text: "retry".into(),
            top_k: 5,
            ..Default::default()
        },
        &r,
        &quiet,
    )
    .unwrap()
    .hits
    .into_iter()
    .map(|h| h.id)
    .collect();
    assert_eq!(hits[0], ids[0]);
    let only = |q: SearchQuery| {
        f.query(SearchQuery {
            text: "retry".into(),
            top_k: 5,
            ..q
        })
    };
    assert_eq!(
        only(SearchQuery {
            kind: Some("decision".into()),
            ..Default::default()
        }),
        [ids[1].clone()]
    );
    assert_eq!(
        only(SearchQuery {
            tag: Some("ops".into()),
            ..Default::default()
        }),
        [ids[1].clone()]
    );
    assert_eq!(
        only(SearchQuery {
            scope: Some(ScopeFilter {
                scope: "run".into(),
                scope_id: Some(f.run.clone())
            }),
            ..Default::default()
        }),
        [ids[1].clone()]
    );
    assert_eq!(
        only(SearchQuery {
            scope: Some(ScopeFilter {
                scope: "global".into(),
                scope_id: None
            }),
            ..Default::default()
        }),
        [ids[0].clone()]
    );
    let future = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    assert!(only(SearchQuery {
        since: Some(future),
        ..Default::default()
    })
    .is_empty());
    assert_eq!(
        f.query(SearchQuery {
            text: "type:decision retry".into(),
            top_k: 10,
            syntax: true,
            ..Default::default()
        }),
        [ids[1].clone()]
    );
    // Empty query with filters lists by recency.
    assert_eq!(
        f.query(SearchQuery {
            kind: Some("fact".into()),
            top_k: 5,
            ..Default::default()
        }),
        [ids[0].clone()]
    );
}

#[test]
fn equal_scores_break_ties_by_id() {
    let f = fixture();
    let mut ids = f.commit(json!([
        add("identical text"),
        add("identical text"),
        add("identical text")
    ]));
    ids.sort();
    for _ in 0..3 {
        assert_eq!(f.search("identical"), ids);
    }
}

#[test]
fn hits_say_why() {
    let f = fixture();
    f.commit(json!([{"op": "add", "type": "fact", "scope": "global", "content": "Deploying uteke-cloud-dev", "tags": ["infra"]}]));
    let r = results(&f, "deploy infra uteke").unwrap();
    let m = &r.hits[0].matched;
    assert!(m["content"].contains(&"deploy".to_string()));
    assert_eq!(m["tags"], ["infra"]);
    assert!(m["identifiers"].contains(&"uteke".to_string()));
}

/// A search in the query syntax.
fn syntax(f: &Fixture, text: &str) -> cairn::Result<search::SearchResults> {
    search::search(
        &f.store,
        &SearchQuery {
            text: text.into(),
            top_k: 1,
            syntax: true,
            ..Default::default()
        },
        &Ranking::default(),
        &quiet,
    )
}

#[test]
fn query_errors_and_huge_queries() {
    let f = fixture();
    let err = syntax(&f, "deploy \"prod").unwrap_err();
    assert_eq!(err.category(), cairn::Category::Validation);
    assert!(err.to_string().contains("character 7"));
    let err = syntax(&f, "colour:red").unwrap_err();
    assert!(err.to_string().contains("colour"));
    let big = "word ".repeat(10_000);
    let r = results(&f, big).unwrap();
    assert_eq!(r.warnings.len(), 1);
}

fn index_dir(f: &Fixture) -> std::path::PathBuf {
    f.store.local_dir().join("index")
}

#[test]
fn a_corrupt_index_is_rebuilt() {
    let f = fixture();
    let ids = f.commit(json!([add("resilient search over a damaged index")]));
    assert_eq!(f.search("resilient"), ids);
    // Garbage meta.json.
    std::fs::write(index_dir(&f).join("meta.json"), b"{not json").unwrap();
    let r = results(&f, "resilient").unwrap();
    assert!(r.rebuilt.is_some());
    assert_eq!(r.hits[0].id, ids[0]);
    // A truncated segment file.
    for e in std::fs::read_dir(index_dir(&f)).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .is_some_and(|x| x == "store" || x == "idx" || x == "term")
        {
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
    }
    let r = results(&f, "resilient").unwrap();
    assert!(
        r.rebuilt.is_some(),
        "a truncated segment triggers a rebuild"
    );
    assert_eq!(r.hits[0].id, ids[0]);
    // A missing index.
    std::fs::remove_dir_all(index_dir(&f)).unwrap();
    assert_eq!(f.search("resilient"), ids);
    // A foreign index (from another store) is not trusted.
    let other = fixture();
    other.commit(json!([add("something else entirely")]));
    other.search("something");
    std::fs::remove_dir_all(index_dir(&f)).unwrap();
    copy_dir(&index_dir(&other), &index_dir(&f));
    let r = results(&f, "resilient").unwrap();
    assert!(
        r.rebuilt
            .as_deref()
            .unwrap_or_default()
            .contains("another store"),
        "{:?}",
        r.rebuilt
    );
    assert_eq!(r.hits[0].id, ids[0]);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn hand_commits_are_seen_by_the_next_search() {
    let f = fixture();
    let ids = f.commit(json!([add("original wording")]));
    f.search("original");
    // Edit the item file by hand and commit with git.
    let path = f.store.workdir().unwrap().join(
        memory::locate(&f.store, f.store.tip().unwrap().unwrap(), &ids[0])
            .unwrap()
            .unwrap(),
    );
    setup::edit(&path, |t| {
        t.replace("original wording", "hand edited wording")
    });
    setup::git(f.store.workdir().unwrap(), &["commit", "-qam", "hand edit"]);
    assert!(f.search("original").is_empty());
    assert_eq!(f.search("hand edited"), ids);
}

#[test]
fn a_locked_index_makes_a_search_wait_not_fail() {
    let f = fixture();
    let ids = f.commit(json!([add("patience with locks")]));
    let dir = f.store.local_dir().to_path_buf();
    let held = cairn::store::StoreLock::acquire_named(
        &dir,
        "index.lock",
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        drop(held);
    });
    let started = std::time::Instant::now();
    assert_eq!(f.search("patience"), ids);
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    releaser.join().unwrap();
}

/// A search that started waiting for the index lock before the branch
/// moved, and got it after another search had caught the index up past
/// its start, answers from that index: it does not take the index's newer
/// commit for rewritten history and rebuild everything (what made every
/// brief of `cairn serve`'s step/update rebuild a 100k-item index under 8
/// concurrent writers).
#[test]
fn a_search_overtaken_by_another_catch_up_does_not_rebuild() {
    let f = fixture();
    f.commit(json!([add("first overtaken note")]));
    f.search("first");
    let dir = f.store.local_dir().to_path_buf();
    let held = cairn::store::StoreLock::acquire_named(
        &dir,
        "index.lock",
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    // A tip no search has seen yet, so A finds no index open at it in the
    // process's cache and must take the lock.
    f.commit(json!([add("middle overtaken note")]));
    // A starts while the index is locked, then waits for the lock.
    let root = f.store.workdir().unwrap().to_path_buf();
    let waiting = std::thread::spawn(move || {
        let store = Store::discover(&root, StoreOptions::default()).unwrap();
        search::search(
            &store,
            &SearchQuery {
                text: "overtaken".into(),
                top_k: 10,
                ..Default::default()
            },
            &Ranking::default(),
            &quiet,
        )
        .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The branch moves; the lock is handed straight to another search (A
    // polls every 20 ms by now), which catches the index up to the new tip.
    f.commit(json!([add("second overtaken note")]));
    drop(held);
    assert_eq!(f.search("overtaken").len(), 3);
    let late = waiting.join().unwrap();
    assert_eq!(late.rebuilt, None, "the waiting search rebuilt the index");
    assert_eq!(
        late.hits.len(),
        3,
        "it answers at the tip it found under the lock"
    );
}

/// Natural language is the default: a thousand questions full of the
/// syntax's characters (unbalanced quotes, colons, brackets, operators,
/// unicode, empty and huge ones) are all answered, none refused, and the
/// words in them still find what they name.
#[test]
fn hostile_questions_are_never_refused() {
    let f = fixture();
    let ids = f.commit(json!([
        add("We first deployed staging-eu on a Tuesday"),
        add("They played cs:go after the standup"),
    ]));
    let pieces = [
        "\"",
        "'",
        ":",
        "::",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "+",
        "-",
        "!",
        "^",
        "~",
        "*",
        "?",
        "\\",
        "/",
        "AND",
        "OR",
        "NOT",
        "&&",
        "||",
        "type:",
        ":fact",
        "id:",
        "https://x.y",
        "c:\\temp",
        "10:30",
        "\"\"",
        "\u{0}",
        "\u{200b}",
        "é",
        "日本語",
        "😀",
        "\t",
        "\n",
        "%",
        "$",
        "#",
        "@",
        "<script>",
        "staging-eu",
        "cs:go",
        "deploy",
        "colour:blue",
        "field:\"unclosed",
        "*:*",
        "~2",
        "^3",
        "-x",
        "+y",
    ];
    // A fixed generator: the same questions on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut questions = vec![
        String::new(),
        " ".into(),
        "When did we first deploy \"staging-eu?".into(),
        "Which game did they play, cs:go?".into(),
        "word ".repeat(5_000),
        "\"".repeat(1_000),
        ":".repeat(1_000),
    ];
    while questions.len() < 1_000 {
        let n = (next() % 12) as usize + 1;
        let q: Vec<&str> = (0..n)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let sep = if next() % 3 == 0 { "" } else { " " };
        questions.push(q.join(sep));
    }
    for q in &questions {
        if let Err(e) = results(&f, q.as_str()) {
            panic!("{q:?} was refused: {e}");
        }
    }
    assert_eq!(
        f.search("When did we first deploy \"staging-eu?"),
        [ids[0].clone()]
    );
    assert_eq!(f.search("Which game did they play, cs:go?")[0], ids[1]);
}

/// The ids of a search for `text` under `ranking`, best first.
fn ranked(f: &Fixture, text: &str, ranking: &Ranking) -> Vec<String> {
    ranked_at(f, text, ranking, None)
}

/// [`ranked`], asked at `as_of` (the store clock for `None`).
fn ranked_at(
    f: &Fixture,
    text: &str,
    ranking: &Ranking,
    as_of: Option<time::OffsetDateTime>,
) -> Vec<String> {
    search::search(
        &f.store,
        &SearchQuery {
            text: text.into(),
            top_k: 10,
            as_of,
            ..Default::default()
        },
        ranking,
        &quiet,
    )
    .unwrap()
    .hits
    .into_iter()
    .map(|h| h.id)
    .collect()
}

/// The default ranking with every recall method off.
fn bare() -> Ranking {
    Ranking {
        question_words: false,
        length_prior: 0.0,
        feedback_terms: 0,
        proximity_weight: 0.0,
        group_weight: 0.0,
        date_weight: 0.0,
        ..Ranking::default()
    }
}

#[test]
fn dates_named_in_the_question_lift_items_created_then() {
    let f = fixture();
    let records = [
        json!({"content": "cooked a mushroom risotto for the family dinner", "type": "episodic",
               "created_at": "2023-05-27T18:00:00Z"}),
        json!({"content": "cooked a risotto", "type": "episodic",
               "created_at": "2023-03-02T18:00:00Z"}),
    ];
    let ids = memory::import(&f.store, &records, "t", 100, &quiet)
        .unwrap()
        .ids;
    // Wednesday 31 May 2023: last Saturday is the 27th.
    let asked = time::OffsetDateTime::from_unix_timestamp(1_685_534_400).unwrap();
    let ask = |ranking: &Ranking, as_of| {
        ranked_at(&f, "What risotto did I cook last Saturday?", ranking, as_of)
    };
    // Off: the shorter item wins on length.
    assert_eq!(ask(&bare(), Some(asked)), [ids[1].clone(), ids[0].clone()]);
    let on = Ranking {
        date_weight: 1.0,
        ..bare()
    };
    assert_eq!(ask(&on, Some(asked)), [ids[0].clone(), ids[1].clone()]);
    // Asked today (the store's clock), last Saturday holds neither.
    assert_eq!(ask(&on, None), [ids[1].clone(), ids[0].clone()]);
}

#[test]
fn question_words_do_not_outweigh_the_topic() {
    let f = fixture();
    let ids = f.commit(json!([
        add("I mentioned that I remember the old laptop"),
        add("the kubernetes cluster runs in eu-west"),
    ]));
    let question = "Do you remember what I mentioned about kubernetes?";
    assert_eq!(ranked(&f, question, &bare())[0], ids[0]);
    let on = Ranking {
        question_words: true,
        ..bare()
    };
    assert_eq!(ranked(&f, question, &on), [ids[1].clone()]);
    // A question of filler words only still searches with them.
    assert_eq!(ranked(&f, "what did I mention?", &on), [ids[0].clone()]);
}

#[test]
fn the_length_prior_prefers_the_focused_item() {
    let f = fixture();
    let long = "postgres ".repeat(8)
        + "and then a long rambling story about lunch, weather, traffic, the office plants, \
           a new coffee machine, parking spaces, holidays, birthdays and the printer";
    let ids = f.commit(json!([add(&long), add("we run postgres"), add("tea")]));
    assert_eq!(ranked(&f, "postgres", &bare())[0], ids[0]);
    let on = Ranking {
        length_prior: 1.0,
        ..bare()
    };
    assert_eq!(
        ranked(&f, "postgres", &on),
        [ids[1].clone(), ids[0].clone()]
    );
}

#[test]
fn feedback_lifts_items_that_share_the_best_hits_words() {
    let f = fixture();
    let ids = f.commit(json!([
        add("deploy checklist: run migrations, tag the release"),
        add("deploy day"),
        add("migrations run before each release"),
        add("release tags follow the migrations"),
    ]));
    let off = ranked(&f, "deploy", &bare());
    assert_eq!(
        off,
        [ids[1].clone(), ids[0].clone()],
        "shorter first without feedback"
    );
    let on = Ranking {
        feedback_terms: 10,
        feedback_docs: 5,
        feedback_weight: 0.5,
        ..bare()
    };
    let got = ranked(&f, "deploy", &on);
    // The expansion reorders what matches; it brings in nothing that does not.
    assert_eq!(got, [ids[0].clone(), ids[1].clone()]);
}

#[test]
fn proximity_lifts_items_with_the_query_words_together() {
    let f = fixture();
    let ids = f.commit(json!([
        add("notes about the parser module and its release"),
        add("release notes for the parser module"),
    ]));
    let scores = |ranking: &Ranking| -> Vec<(String, f64)> {
        search::search(
            &f.store,
            &SearchQuery {
                text: "release notes".into(),
                top_k: 10,
                ..Default::default()
            },
            ranking,
            &quiet,
        )
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.id, h.score))
        .collect()
    };
    let off = scores(&bare());
    assert_eq!(off.len(), 2);
    assert_eq!(
        off[0].1, off[1].1,
        "the same words, the same length: {off:?}"
    );
    let on = scores(&Ranking {
        proximity_weight: 0.5,
        ..bare()
    });
    assert_eq!(on[0].0, ids[1]);
    assert!(on[0].1 > on[1].1, "{on:?}");
}
