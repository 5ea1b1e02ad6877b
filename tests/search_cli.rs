//! `cairn search`, `cairn index`, `cairn brief` and `cairn memory import`
//! through the binary, including the bad queries the search issue names.

mod common;

use common::cli::{refused, write, Env};
use serde_json::json;

fn seeded() -> (Env, String) {
    let (env, run) = Env::with_run();
    let lines = [
        json!({"id": "t1", "content": "deploy uteke-cloud-dev on Tuesdays", "type": "fact", "tags": ["ops"]}),
        json!({"id": "t2", "content": "the p05-interferometer needs weekly alignment", "type": "knowledge"}),
        json!({"id": "t3", "content": "prefer small crates", "type": "preference", "created_at": "2025-01-01T00:00:00Z"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let f = write(env.home.path(), "import.jsonl", &text);
    let report = env.ok(&["memory", "import", &f, "--batch", "2"]);
    assert_eq!(report["imported"], json!(3));
    assert_eq!(report["commits"], json!(2));
    (env, run)
}

#[test]
fn import_search_and_index_status() {
    let (env, _run) = seeded();
    let r = env.ok(&["search", "uteke"]);
    assert_eq!(
        r["hits"][0]["content"],
        json!("deploy uteke-cloud-dev on Tuesdays")
    );
    assert!(r["hits"][0]["score"].as_f64().unwrap() > 0.0);
    assert!(r["hits"][0]["matched"]["identifiers"]
        .as_array()
        .unwrap()
        .contains(&json!("uteke")));
    // provenance of the import
    let id = r["hits"][0]["id"].as_str().unwrap();
    let item = env.ok(&["memory", "show", id]);
    assert!(item["source_refs"]
        .as_array()
        .unwrap()
        .contains(&json!("import:t1")));
    assert_eq!(item["status"], json!("active"));
    let s = env.ok(&["index", "status"]);
    assert_eq!(s["memory_items"], json!(3));
    assert_eq!(s["current"], json!(true));
    env.ok(&["index", "rebuild"]);
    // Empty query with a filter lists by recency.
    let listed = env.ok(&["search", "--type", "preference"]);
    assert_eq!(listed["hits"].as_array().unwrap().len(), 1);
    let all = env.ok(&["search"]);
    assert_eq!(
        all["hits"][2]["content"],
        json!("prefer small crates"),
        "oldest last"
    );
}

#[test]
fn bad_queries_are_validation_errors_with_a_position() {
    let (env, _run) = seeded();
    let err = refused(
        &env,
        &["search", "--syntax", "deploy \"uteke"],
        None,
        "VALIDATION",
        3,
    );
    assert!(
        err["message"].as_str().unwrap().contains("character 7"),
        "{err}"
    );
    let err = refused(
        &env,
        &["search", "--syntax", "colour:blue"],
        None,
        "VALIDATION",
        3,
    );
    assert!(err["message"].as_str().unwrap().contains("colour"), "{err}");
    // Without --syntax any text is words (and --plain, the old spelling of
    // that, still runs).
    env.ok(&["search", "deploy \"uteke colour:blue"]);
    env.ok(&["search", "Which game did they play, cs:go?"]);
    env.ok(&["search", "--plain", "deploy \"uteke colour:blue"]);
    // A 10,000-term query is cut with a warning, not refused.
    let long = "deploy ".repeat(10_000);
    let out = env
        .cmd()
        .args(["--store", env.root().to_str().unwrap(), "search", &long])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn a_corrupt_index_never_fails_a_search() {
    let (env, _run) = seeded();
    env.ok(&["search", "uteke"]);
    env.put(".cairn/index/meta.json", "garbage");
    let r = env.ok(&["search", "uteke"]);
    assert_eq!(r["hits"].as_array().unwrap().len(), 1);
    assert!(r["rebuilt"].is_string());
}

#[test]
fn a_bad_import_imports_nothing() {
    let (env, _run) = seeded();
    let f = write(
        env.home.path(),
        "bad.jsonl",
        "{\"content\": \"fine\"}\n{\"content\": \"bad\", \"confidence\": 7}\n",
    );
    let err = refused(&env, &["memory", "import", &f], None, "VALIDATION", 3);
    assert!(err["message"].as_str().unwrap().contains("bad.jsonl"));
    assert_eq!(
        err["details"]["violations"][0]["pointer"],
        json!("/1/confidence")
    );
    let f = write(
        env.home.path(),
        "broken.jsonl",
        "{\"content\": \"fine\"}\n{not json\n",
    );
    let err = refused(&env, &["memory", "import", &f], None, "VALIDATION", 3);
    assert!(
        err["message"].as_str().unwrap().contains("broken.jsonl:2"),
        "{err}"
    );
}

#[test]
fn brief_through_the_cli() {
    let (env, run) = seeded();
    let md = env
        .cmd()
        .args([
            "--store",
            env.root().to_str().unwrap(),
            "brief",
            &run,
            "--query",
            "deploy",
        ])
        .output()
        .unwrap();
    assert!(md.status.success());
    let text = String::from_utf8(md.stdout).unwrap();
    assert!(text.starts_with("# Context brief"));
    assert!(text.contains("deploy uteke-cloud-dev"));
    let j = env.ok(&["brief", &run, "--budget", "30", "--format", "json"]);
    assert_eq!(j["budget"], json!(30));
    assert!(j["used"].as_u64().unwrap() <= 30 || j["dropped"].as_array().unwrap().is_empty());
    assert!(j["timing_ms"]["total"].as_f64().unwrap() >= 0.0);
    refused(&env, &["brief", "run_nope"], None, "NOT_FOUND", 5);
}
