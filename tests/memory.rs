//! Long-term memory, milestones, projects and trusted state through the CLI.

mod common;

use common::cli::{refused, write, Env};
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn propose(env: &Env, run: &str, body: &Value) -> Value {
    let f = write(env.home.path(), "mcrs.json", &body.to_string());
    env.ok(&["memory", "propose", run, "--file", &f])
}

fn add(content: &str) -> Value {
    json!({"op": "add", "type": "fact", "scope": "global", "content": content, "confidence": 0.8})
}

/// Proposes and commits (override) one batch; returns the created ids.
fn commit_now(env: &Env, run: &str, mcrs: Value) -> Vec<String> {
    let p = propose(env, run, &json!({"mcrs": mcrs}));
    let batch = p["batch_id"].as_str().unwrap();
    env.ok(&["memory", "commit", batch, "--allow-outside-milestone"]);
    p["batch"]["item_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_seed_flow_end_to_end() {
    let env = Env::store();
    // 1. Boot (the seed's boot body, verbatim).
    let boot = write(
        env.home.path(),
        "boot.json",
        r#"{"objective": "Test end-to-end flow"}"#,
    );
    let run = env.ok(&["run", "boot", "--file", &boot])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // 2. Patch.
    let patch = write(
        env.home.path(),
        "p.json",
        r#"{"patch": {"_schema_version": "2.1", "expected_seq": 0, "set": {"status": "BUSY", "next_action": "Test memory"}}}"#,
    );
    env.ok(&["ws", "patch", &run, "--file", &patch]);
    // 3. Propose (the seed's body, verbatim).
    let body = json!({"mcrs": [{"_schema_version": "2.1", "op": "add", "type": "fact", "scope": "global",
        "content": "Test memory item", "confidence": 0.8, "rationale": "Testing", "source_refs": []}]});
    let proposed = propose(&env, &run, &body);
    let batch = proposed["batch_id"].as_str().unwrap().to_string();
    let id = proposed["batch"]["item_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let queue = env.ok(&["memory", "queue"]);
    assert_eq!(ids(&queue), vec![id.to_string()]);
    assert_eq!(
        env.ok(&["memory", "list", "--status", "active"])["count"],
        json!(0)
    );
    // 4. Milestone commits the batch.
    let ms = env.ok(&[
        "milestone",
        &run,
        "--reason",
        "checkpoint",
        "--next-entry-point",
        "Continue from PLAN stage.",
        "--commit-batch",
        &batch,
    ]);
    let ep = &ms["episode"];
    assert_eq!(ep["ordinal"], json!(1));
    assert_eq!(ep["memory_batches"], json!([batch]));
    assert_eq!(ep["working_set"]["next_action"], json!("Test memory"));
    assert_eq!(ep["event_counts"]["WS_UPDATE_APPLIED"], json!(1));
    let tag = ep["tag"].as_str().unwrap();
    assert_eq!(
        tag,
        format!("cairn/{run}/{}", ep["episode_id"].as_str().unwrap())
    );
    // The tag is annotated and its message is the episode file.
    let tag_msg = env.git(&["tag", "-l", "--format=%(contents)", tag]);
    let file = env.read(&cairn::layout::episode(
        &run,
        ep["episode_id"].as_str().unwrap(),
    ));
    assert_eq!(tag_msg.trim_end(), file.trim_end());
    assert_eq!(env.git(&["cat-file", "-t", tag]).trim(), "tag");
    // 5. Memory is active; history shows both versions.
    let listed = env.ok(&["memory", "list"]);
    assert_eq!(listed["items"][0]["status"], json!("active"));
    assert_eq!(env.ok(&["memory", "queue"])["count"], json!(0));
    let hist = env.ok(&["memory", "history", &id]);
    let kinds: Vec<&str> = hist["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["MEMORY_PROPOSED", "MILESTONE_CREATED"]);
    // Episodes read back; a second milestone counts from the first.
    let eps = env.ok(&["episode", "list", &run]);
    assert_eq!(eps["episodes"].as_array().unwrap().len(), 1);
    env.ok(&["episode", "show", tag]);
    let ms2 = env.ok(&["milestone", &run, "--reason", "second"]);
    assert_eq!(ms2["episode"]["ordinal"], json!(2));
    assert_eq!(
        ms2["episode"]["commit_range"]["from"],
        ms["event"]["commit"]
    );
    assert_eq!(ms2["episode"]["event_counts"], json!({}));
    env.ok(&["fsck"]);
    assert_eq!(env.git(&["status", "--porcelain"]), "");
}

#[test]
fn supersede_keeps_both_items_linked_and_history_has_every_version() {
    let (env, run) = Env::with_run();
    let first = commit_now(&env, &run, json!([add("The API listens on port 8080")]));
    let old = first[0].clone();
    commit_now(
        &env,
        &run,
        json!([{"op": "update", "target_id": old, "content": "The API listens on port 8081"}]),
    );
    let new = commit_now(
        &env,
        &run,
        json!([{"op": "supersede", "target_id": old, "content": "The API listens on port 9000"}]),
    )[0]
    .clone();
    let o = env.ok(&["memory", "show", &old]);
    let n = env.ok(&["memory", "show", &new]);
    assert_eq!(o["status"], json!("superseded"));
    assert_eq!(o["superseded_by"], json!(new));
    assert_eq!(n["status"], json!("active"));
    assert_eq!(n["supersedes"], json!(old));
    assert_eq!(n["type"], json!("fact"), "supersede inherits the type");
    let hist = env.ok(&["memory", "history", &old]);
    let contents: Vec<(&str, &str)> = hist["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["item"]["status"].as_str().unwrap(),
                v["item"]["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        contents,
        [
            ("candidate", "The API listens on port 8080"),
            ("active", "The API listens on port 8080"),
            ("active", "The API listens on port 8081"),
            ("superseded", "The API listens on port 8081"),
        ]
    );
    // Delete marks invalid; nothing leaves history.
    commit_now(&env, &run, json!([{"op": "delete", "target_id": new}]));
    assert_eq!(
        env.ok(&["memory", "show", &new])["status"],
        json!("invalid")
    );
    assert_eq!(env.ok(&["memory", "list"])["count"], json!(2));
}

#[test]
fn review_promote_reject_edit_each_one_commit_with_the_reason() {
    let (env, run) = Env::with_run();
    let p = propose(&env, &run, &json!([add("alpha"), add("beta")]));
    let a = p["batch"]["item_ids"][0].as_str().unwrap().to_string();
    let b = p["batch"]["item_ids"][1].as_str().unwrap().to_string();
    let f = write(
        env.home.path(),
        "edit.yaml",
        "content: alpha, edited\ntags: [reviewed]\n",
    );
    env.ok(&["memory", "edit", &a, "--file", &f]);
    let head = env.git(&["rev-parse", "HEAD"]);
    env.ok(&["memory", "promote", &a, "--reason", "verified by hand"]);
    assert_ne!(env.git(&["rev-parse", "HEAD"]), head);
    env.ok(&["memory", "reject", &b, "--reason", "wrong"]);
    assert_eq!(
        env.ok(&["memory", "show", &a])["content"],
        json!("alpha, edited")
    );
    assert_eq!(env.ok(&["memory", "show", &b])["status"], json!("invalid"));
    let log = env.ok(&["log", "--type", "MEMORY_REJECTED"]);
    assert_eq!(log["events"][0]["payload"]["reason"], json!("wrong"));
    let log = env.ok(&["log", "--type", "MEMORY_PROMOTED"]);
    assert_eq!(
        log["events"][0]["payload"]["reason"],
        json!("verified by hand")
    );
    // Committing the batch later leaves reviewed items as reviewed.
    let batch = p["batch_id"].as_str().unwrap();
    env.ok(&["milestone", &run, "--reason", "r", "--commit-batch", batch]);
    assert_eq!(env.ok(&["memory", "show", &b])["status"], json!("invalid"));
    // Reviewing a non-candidate is refused.
    refused(&env, &["memory", "promote", &a], None, "CONFLICT", 4);
}

#[test]
fn expired_items_are_listed_as_expired() {
    let (env, run) = Env::with_run();
    commit_now(
        &env,
        &run,
        json!([{"op": "add", "type": "episodic", "scope": "run", "content": "short-lived", "ttl": "PT1H"}]),
    );
    let now = env.ok(&["memory", "list"]);
    assert_eq!(now["items"][0]["effective_status"], json!("active"));
    assert_eq!(now["items"][0]["scope_id"], json!(run));
    let (code, later) = env.json_at(
        "2026-01-18T02:00:00Z",
        &["memory", "list", "--status", "expired"],
    );
    assert_eq!(code, 0);
    assert_eq!(later["data"]["count"], json!(1));
    assert_eq!(
        later["data"]["items"][0]["status"],
        json!("active"),
        "the file is unchanged"
    );
}

#[test]
fn a_batch_whose_targets_changed_is_refused_naming_them() {
    let (env, run) = Env::with_run();
    let id = commit_now(&env, &run, json!([add("v1")]))[0].clone();
    let stale = propose(
        &env,
        &run,
        &json!([{"op": "update", "target_id": id, "content": "from stale batch"}]),
    );
    commit_now(
        &env,
        &run,
        json!([{"op": "update", "target_id": id, "content": "v2"}]),
    );
    let batch = stale["batch_id"].as_str().unwrap();
    let err = refused(
        &env,
        &["memory", "commit", batch, "--allow-outside-milestone"],
        None,
        "CONFLICT",
        4,
    );
    assert!(err["message"].as_str().unwrap().contains(&id), "{err}");
}

#[test]
fn aliases_and_ids_reach_the_same_data_everywhere() {
    let env = Env::store();
    env.ok(&[
        "project",
        "add",
        "p05-interferometer",
        "--alias",
        "P05",
        "--alias",
        "Interferometer",
    ]);
    assert_eq!(
        env.ok(&["project", "resolve", "interferometer"])["canonical"],
        json!("p05-interferometer")
    );
    assert_eq!(
        env.ok(&["project", "resolve", "unknown-thing"])["canonical"],
        json!("unknown-thing")
    );
    // run boot and ws patch
    let run = env.ok(&["run", "boot", "--objective", "x", "--project", "p05"])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        env.ok(&["ws", "show", &run])["project"],
        json!("p05-interferometer")
    );
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"project": "INTERFEROMETER"}}"#,
    );
    assert_eq!(
        env.ok(&["ws", "patch", &run, "--file", &f])["working_set"]["project"],
        json!("p05-interferometer")
    );
    // memory propose with an alias as scope id, and a run-scoped item of the run's project
    commit_now(
        &env,
        &run,
        json!([
            {"op": "add", "type": "decision", "scope": "project", "scope_id": "P05", "content": "laser is 633 nm"},
            {"op": "add", "type": "fact", "scope": "run", "content": "alignment done"}
        ]),
    );
    propose(
        &env,
        &run,
        &json!([{"op": "add", "type": "fact", "scope": "project", "scope_id": "Interferometer", "content": "pending"}]),
    );
    for name in ["p05-interferometer", "P05", "interferometer"] {
        assert_eq!(
            env.ok(&["memory", "list", "--project", name, "--status", "active"])["count"],
            json!(2),
            "{name}"
        );
        assert_eq!(
            env.ok(&["memory", "list", "--scope", &format!("project:{name}")])["count"],
            json!(2),
            "{name}"
        );
        assert_eq!(
            env.ok(&["memory", "queue", "--project", name])["count"],
            json!(1),
            "{name}"
        );
    }
    // trusted state
    env.ok(&[
        "state",
        "set",
        "P05",
        "status",
        "phase",
        "alignment",
        "--source",
        "lab notebook",
    ]);
    env.ok(&[
        "state",
        "set",
        "interferometer",
        "status",
        "phase",
        "measurement",
    ]);
    for name in ["p05-interferometer", "P05", "interferometer"] {
        let got = env.ok(&["state", "get", name]);
        assert_eq!(got["project"], json!("p05-interferometer"));
        assert_eq!(got["entries"].as_array().unwrap().len(), 1);
        assert_eq!(got["entries"][0]["value"], json!("measurement"));
    }
    assert!(env.root().join("state/p05-interferometer.yaml").exists());
    let file = env.read("state/p05-interferometer.yaml");
    assert!(
        file.contains("status: superseded"),
        "the old value is kept: {file}"
    );
    env.ok(&["state", "invalidate", "p05", "status", "phase"]);
    assert_eq!(env.ok(&["state", "get", "P05"])["entries"], json!([]));
    env.ok(&["fsck"]);
}

// ---- bad input ----

#[test]
fn bad_input_unknown_op() {
    let (env, run) = Env::with_run();
    let f = write(
        env.home.path(),
        "m.json",
        r#"[{"op": "merge", "content": "x"}]"#,
    );
    let err = refused(
        &env,
        &["memory", "propose", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    let v = &err["details"]["violations"][0];
    assert_eq!(v["pointer"], json!("/mcrs/0/op"));
    assert_eq!(v["rule"], json!("enum"));
    assert!(err["message"].as_str().unwrap().contains("m.json"));
}

#[test]
fn bad_input_missing_target_ids() {
    let (env, run) = Env::with_run();
    for op in ["update", "supersede", "delete"] {
        let body =
            json!([{"op": op, "target_id": "mem_01J00000000000000000000000", "content": "x"}]);
        let f = write(env.home.path(), "m.json", &body.to_string());
        let err = refused(
            &env,
            &["memory", "propose", &run, "--file", &f],
            None,
            "VALIDATION",
            3,
        );
        assert_eq!(
            err["details"]["pointer"],
            json!("/mcrs/0/target_id"),
            "{op}"
        );
        assert!(err["message"]
            .as_str()
            .unwrap()
            .contains("mem_01J00000000000000000000000"));
    }
}

#[test]
fn bad_input_confidence_out_of_range() {
    let (env, run) = Env::with_run();
    for c in [1.5, -0.1] {
        let body = json!([{"op": "add", "type": "fact", "scope": "global", "content": "x", "confidence": c}]);
        let f = write(env.home.path(), "m.json", &body.to_string());
        let err = refused(
            &env,
            &["memory", "propose", &run, "--file", &f],
            None,
            "VALIDATION",
            3,
        );
        assert_eq!(
            err["details"]["violations"][0]["pointer"],
            json!("/mcrs/0/confidence")
        );
    }
}

#[test]
fn bad_input_unknown_scope() {
    let (env, run) = Env::with_run();
    let f = write(
        env.home.path(),
        "m.json",
        r#"[{"op": "add", "type": "fact", "scope": "galaxy", "content": "x"}]"#,
    );
    let err = refused(
        &env,
        &["memory", "propose", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(
        err["details"]["violations"][0]["pointer"],
        json!("/mcrs/0/scope")
    );
    let err = refused(
        &env,
        &["memory", "list", "--scope", "galaxy"],
        None,
        "VALIDATION",
        3,
    );
    assert!(err["message"].as_str().unwrap().contains("galaxy"));
}

#[test]
fn bad_input_unknown_batch() {
    let (env, run) = Env::with_run();
    let err = refused(
        &env,
        &[
            "memory",
            "commit",
            "batch_01J00000000000000000000000",
            "--allow-outside-milestone",
        ],
        None,
        "NOT_FOUND",
        5,
    );
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("batch_01J00000000000000000000000"));
    refused(
        &env,
        &[
            "milestone",
            &run,
            "--reason",
            "r",
            "--commit-batch",
            "batch_01J00000000000000000000000",
        ],
        None,
        "NOT_FOUND",
        5,
    );
}

#[test]
fn bad_input_commit_outside_milestone_without_override() {
    let (env, run) = Env::with_run();
    let p = propose(&env, &run, &json!([add("x")]));
    let batch = p["batch_id"].as_str().unwrap();
    let err = refused(&env, &["memory", "commit", batch], None, "POLICY", 6);
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("milestone")
            && msg.contains("--allow-outside-milestone")
            && msg.contains(batch)
    );
}

#[test]
fn bad_input_commit_a_batch_twice() {
    let (env, run) = Env::with_run();
    let p = propose(&env, &run, &json!([add("x")]));
    let batch = p["batch_id"].as_str().unwrap();
    env.ok(&["memory", "commit", batch, "--allow-outside-milestone"]);
    let err = refused(
        &env,
        &["memory", "commit", batch, "--allow-outside-milestone"],
        None,
        "CONFLICT",
        4,
    );
    assert!(err["message"].as_str().unwrap().contains(batch));
    refused(
        &env,
        &["milestone", &run, "--reason", "r", "--commit-batch", batch],
        None,
        "CONFLICT",
        4,
    );
}

#[test]
fn bad_input_edited_episode_is_reported_by_fsck() {
    let (env, run) = Env::with_run();
    let ms = env.ok(&["milestone", &run, "--reason", "checkpoint"]);
    let ep = ms["episode"]["episode_id"].as_str().unwrap();
    // cairn itself never rewrites or deletes an episode: its transaction refuses.
    let store = cairn::Store::open(&env.root(), Default::default()).unwrap();
    let err = store
        .transact(None, |_| {
            let mut changes = cairn::store::Changes::new();
            changes.insert(cairn::layout::episode(&run, ep), None);
            Ok(cairn::store::Mutation {
                changes,
                event: cairn::ledger::EventDraft::new(
                    cairn::ledger::EventType::ManualEdit,
                    "delete",
                ),
                tags: Vec::new(),
            })
        })
        .unwrap_err();
    assert_eq!(err.category(), cairn::Category::Policy);
    env.edit(&cairn::layout::episode(&run, ep), |t| {
        t.replace("reason: checkpoint", "reason: rewritten")
    });
    // Only a commit that bypasses the hooks gets an edited episode in.
    env.git(&["commit", "--no-verify", "-qam", "rewrite history"]);
    let findings = env.fsck_findings();
    assert!(
        findings
            .iter()
            .any(|f| f["rule"] == json!("episode_immutable")
                && f["subject"].as_str().unwrap().contains(ep)),
        "{findings:?}"
    );
}

#[test]
fn bad_input_alias_colliding_with_another_project() {
    let env = Env::store();
    env.ok(&["project", "add", "alpha"]);
    let err = refused(
        &env,
        &["project", "add", "beta", "--alias", "ALPHA"],
        None,
        "CONFLICT",
        4,
    );
    assert!(err["message"].as_str().unwrap().contains("alpha"));
    refused(&env, &["project", "add", "Alpha"], None, "CONFLICT", 4);
}

#[test]
fn fsck_reports_an_item_moved_by_hand() {
    let (env, run) = Env::with_run();
    let id = commit_now(&env, &run, json!([add("misplaced")]))[0].clone();
    let from = env
        .root()
        .join(cairn::layout::memory_item("global", None, &id));
    let to = env
        .root()
        .join(cairn::layout::memory_item("user", Some("alice"), &id));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(&from, &to).unwrap();
    env.git(&["add", "-A"]);
    env.git(&["commit", "--no-verify", "-qm", "move by hand"]);
    let findings = env.fsck_findings();
    assert!(
        findings
            .iter()
            .any(|f| f["rule"] == json!("id_matches_path")),
        "{findings:?}"
    );
}
