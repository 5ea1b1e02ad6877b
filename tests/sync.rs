//! Sync between clones through a real bare git remote (`file://`): `cairn
//! sync`, plain `git pull` through cairn's merge drivers, conflicts kept as
//! records, merges left half done by git, and milestone tags that travel.

mod common;

use common::net::Net;
use serde_json::{json, Value};

fn conflict_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["conflict_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_clones_writing_different_runs_converge_to_one_tree() {
    let (net, a) = Net::new();
    let b = net.clone("b", true);
    let run_a = a.boot("from a");
    a.append(&run_a, "a1");
    let run_b = b.boot("from b");
    b.append(&run_b, "b1");

    let first = a.ok(&["sync"]);
    assert_eq!(first["pushed"], json!(true));
    let merged = b.ok(&["sync"]);
    assert_eq!(merged["merges"].as_array().unwrap().len(), 1, "{merged}");
    assert_eq!(merged["conflicts"], json!([]));
    let ff = a.ok(&["sync"]);
    assert_eq!(ff["fast_forwarded"], json!(true), "{ff}");

    assert_eq!(a.head(), b.head());
    for c in [&a, &b] {
        assert_eq!(c.sliding_ids(&run_a), vec!["a1"]);
        assert_eq!(c.sliding_ids(&run_b), vec!["b1"]);
        c.assert_healthy();
    }
    // The merge is one commit with both parents and a SYNC_MERGE event.
    let parents = b.git(&[
        "rev-list",
        "--parents",
        "-n",
        "1",
        merged["merges"][0].as_str().unwrap(),
    ]);
    assert_eq!(parents.split_whitespace().count(), 3, "{parents}");
    let log = b.ok(&["log", "--type", "SYNC_MERGE"]);
    assert!(log.to_string().contains("SYNC_MERGE"), "{log}");
}

#[test]
fn one_run_patched_on_both_clones_replays_the_other_sides_patches() {
    let (net, a) = Net::new();
    let run = a.boot("shared run");
    a.ok(&["sync"]);
    let b = net.clone("b", true);
    a.append(&run, "a1");
    b.append(&run, "b1");
    b.append(&run, "b2");
    a.ok(&["sync"]);
    let merged = b.ok(&["sync"]);
    assert_eq!(merged["conflicts"], json!([]), "{merged}");
    a.ok(&["sync"]);
    for c in [&a, &b] {
        let ws = c.ok(&["ws", "show", &run]);
        // b's two patches, then a's one replayed on top: seqs stay gap-free.
        assert_eq!(ws["_update_seq"], json!(3), "{ws}");
        assert_eq!(c.sliding_ids(&run), vec!["b1", "b2", "a1"]);
        c.assert_healthy();
    }
    // The run's state at the replayed seq is the merge's.
    let at = b.ok(&["ws", "show", &run, "--at", "3"]);
    assert_eq!(at["_update_seq"], json!(3));
}

#[test]
fn the_same_key_set_differently_is_a_conflict_record_resolved_on_either_side() {
    let (net, a) = Net::new();
    let b = net.clone("b", true);
    a.ok(&["state", "set", "proj", "deploy", "region", "eu-west"]);
    b.ok(&["state", "set", "proj", "deploy", "region", "us-east"]);
    a.ok(&["sync"]);
    let merged = b.ok(&["sync"]);
    let ids: Vec<String> = merged["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{merged}");
    // No conflict markers anywhere; the canonical file is valid.
    let state = std::fs::read_to_string(b.dir.join("state/proj.yaml")).unwrap();
    assert!(!state.contains("<<<<<<<"), "{state}");
    b.assert_healthy();
    // The mirror's overview and review queue list it.
    let readme = std::fs::read_to_string(b.dir.join("mirror/README.md")).unwrap();
    assert!(
        readme.contains("## Merge conflicts") && readme.contains(&ids[0]),
        "{readme}"
    );
    let queue = std::fs::read_to_string(b.dir.join("mirror/queue.md")).unwrap();
    assert!(
        queue.contains(&format!("cairn conflicts resolve {}", ids[0])),
        "{queue}"
    );

    // The brief of a run on that project warns before the agent trusts it.
    let run = b.ok(&["run", "boot", "--objective", "deploy", "--project", "proj"])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let brief = b.ok(&["brief", &run]);
    assert!(
        brief["markdown"].as_str().unwrap().contains("## Warnings"),
        "{brief}"
    );
    assert!(brief["warnings"][0].as_str().unwrap().contains(&ids[0]));

    a.ok(&["sync"]);
    let listed = a.ok(&["conflicts", "list"]);
    assert_eq!(conflict_ids(&listed), ids);
    let record = a.ok(&["conflicts", "show", &ids[0]]);
    assert_eq!(record["path"], json!("state/proj.yaml"));
    let sides = [record["ours"].clone(), record["theirs"].clone()];
    assert!(
        sides.contains(&json!("eu-west")) && sides.contains(&json!("us-east")),
        "{record}"
    );

    // Resolved on a; the resolution travels to b.
    let resolved = a.ok(&["conflicts", "resolve", &ids[0], "--take", "theirs"]);
    assert_eq!(resolved["conflict"]["status"], json!("resolved"));
    let took = record["theirs"].clone();
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    assert_eq!(b.ok(&["conflicts", "list"]), json!([]));
    let all = b.ok(&["conflicts", "list", "--all"]);
    assert_eq!(all[0]["status"], json!("resolved"));
    let got = b.ok(&["state", "get", "proj"]);
    assert!(got.to_string().contains(took.as_str().unwrap()), "{got}");
    a.ok(&["sync"]);
    assert_eq!(a.head(), b.head());
    a.assert_healthy();
    b.assert_healthy();
    let readme = std::fs::read_to_string(a.dir.join("mirror/README.md")).unwrap();
    assert!(!readme.contains("## Merge conflicts"), "{readme}");
}

#[test]
fn plain_git_pull_merges_through_the_drivers_and_records_conflicts() {
    let (net, a) = Net::new();
    a.ok(&["hooks", "install"]);
    let b = net.clone("b", true);
    a.ok(&["state", "set", "proj", "deploy", "region", "eu-west"]);
    b.ok(&["state", "set", "proj", "deploy", "region", "us-east"]);
    a.ok(&["sync"]);
    let out = b.git_output(&["pull", "--no-rebase", "--no-edit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // post-merge committed the driver's record and rendered the mirror.
    let listed = b.ok(&["conflicts", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let state = std::fs::read_to_string(b.dir.join("state/proj.yaml")).unwrap();
    assert!(!state.contains("<<<<<<<"), "{state}");
    b.assert_healthy();
}

#[test]
fn a_merge_left_half_done_blocks_writes_until_sync_resolve_redoes_it() {
    let (net, a) = Net::new();
    let run = a.boot("shared");
    a.ok(&["sync"]);
    // A clone where cairn's drivers were never installed: git's text merge.
    let b = net.clone("b", false);
    a.ok(&["state", "set", "proj", "deploy", "region", "eu-west"]);
    b.ok(&["state", "set", "proj", "deploy", "region", "us-east"]);
    a.ok(&["sync"]);
    let out = b.git_output(&["pull", "--no-rebase", "--no-edit"]);
    assert!(
        !out.status.success(),
        "the text merge was expected to conflict"
    );
    let head = b.head();

    // Writes are refused, naming the merge and the conflicted files.
    let (code, env2) = {
        let patch = json!({"expected_seq": 0, "set": {"next_action": "x"}});
        let mut c = assert_cmd::Command::from_std(common::cli::cairn(net.home.path()));
        c.current_dir(&b.dir)
            .env("CAIRN_NOW", common::cli::NOW)
            .args(["--json", "ws", "patch", &run, "--file", "-"])
            .write_stdin(patch.to_string());
        let o = c.output().unwrap();
        (
            o.status.code().unwrap(),
            serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        )
    };
    assert_eq!(code, 4, "{env2}");
    assert_eq!(env2["error"]["code"], json!("MERGE_IN_PROGRESS"));
    assert!(
        env2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("state/proj.yaml"),
        "{env2}"
    );
    assert_eq!(b.head(), head, "nothing committed");

    // fsck names the merge and the files.
    let (code, env) = b.json(&["fsck"]);
    assert_ne!(code, 0);
    assert!(env.to_string().contains("merge_in_progress"), "{env}");

    // sync --resolve aborts git's merge and makes it by the schemas.
    let done = b.ok(&["sync", "--resolve"]);
    assert_eq!(done["conflicts"].as_array().unwrap().len(), 1, "{done}");
    b.assert_healthy();
    a.ok(&["sync"]);
    assert_eq!(a.head(), b.head());
    a.assert_healthy();
}

#[test]
fn milestone_tags_travel_with_sync_and_with_plain_git_push() {
    let (net, a) = Net::new();
    let run = a.boot("tagged");
    a.ok(&["milestone", &run, "--reason", "first"]);
    a.ok(&["sync"]);
    let b = net.clone("b", true);
    b.ok(&["sync"]);
    let tags = b.git(&["tag", "-l", "cairn/*"]);
    assert_eq!(tags.lines().count(), 1, "{tags}");
    b.assert_healthy();

    // A plain `git push` carries the next milestone's tag (push.followTags).
    a.ok(&["milestone", &run, "--reason", "second"]);
    a.git(&["push", "-q"]);
    let c = net.clone("c", false);
    assert_eq!(c.git(&["tag", "-l", "cairn/*"]).lines().count(), 2);
    c.ok(&["fsck"]);

    // A clone that lost a tag: fsck names the episode, --repair puts the
    // tag back from the episode file.
    let tag = c
        .git(&["tag", "-l", "cairn/*"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    c.git(&["tag", "-d", &tag]);
    let (code, env) = c.json(&["fsck"]);
    assert_eq!(code, 8, "{env}");
    assert!(env.to_string().contains("episode_tagged"), "{env}");
    c.ok(&["fsck", "--repair"]);
    c.ok(&["fsck"]);
    assert_eq!(c.git(&["tag", "-l", &tag]).trim(), tag);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (_net, a) = Net::new();
    let head = a.head();
    let (code, env) = a.json(&["sync", "nosuchremote"]);
    assert_eq!(code, 7, "{env}");
    assert_eq!(env["error"]["category"], json!("TRANSIENT"));
    assert_eq!(env["error"]["code"], json!("REMOTE_FAILED"));
    assert!(env["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nosuchremote"));
    let (code, env) = a.json(&[
        "conflicts",
        "resolve",
        "cf_01KF76FBK0M14QN9NF6YCRPWN2",
        "--take",
        "ours",
    ]);
    assert_eq!(code, 5, "{env}");
    assert_eq!(env["error"]["category"], json!("NOT_FOUND"));
    let (code, env) = a.json(&["conflicts", "show", "../etc"]);
    assert_eq!(code, 3, "{env}");
    assert_eq!(env["error"]["details"]["rule"], json!("conflict_id"));
    assert_eq!(a.head(), head);
    a.assert_healthy();
}

#[test]
fn a_store_on_a_dedicated_branch_of_a_code_repo_leaves_the_code_alone() {
    let home = tempfile::TempDir::new().unwrap();
    let root = home.path();
    let git = |dir: &std::path::Path, args: &[&str]| common::setup::git(dir, args);
    git(root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(root, &["init", "-q", "-b", "main", "code"]);
    let code = root.join("code");
    std::fs::write(code.join("main.rs"), "fn main() {}\n").unwrap();
    git(&code, &["add", "main.rs"]);
    git(&code, &["commit", "-qm", "code"]);
    let url = format!("file://{}", root.join("remote.git").display());
    git(&code, &["remote", "add", "origin", &url]);
    git(&code, &["push", "-q", "-u", "origin", "main"]);
    let head = git(&code, &["rev-parse", "HEAD"]);
    let index = std::fs::read(code.join(".git/index")).unwrap();

    let cairn = |dir: &std::path::Path, args: &[&str]| -> Value {
        let out = common::cli::cairn(root)
            .current_dir(dir)
            .env("CAIRN_NOW", common::cli::NOW)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let env: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(out.status.success(), "cairn {args:?}: {env}");
        env["data"].clone()
    };
    let made = cairn(&code, &["init", "--branch", "cairn"]);
    assert_eq!(made["made"], json!(true));
    std::fs::create_dir(code.join("src")).unwrap();
    // Found from anywhere inside the code repository.
    let run = cairn(
        &code.join("src"),
        &["run", "boot", "--objective", "beside the code"],
    )["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    cairn(&code, &["sync"]);
    assert_eq!(
        git(&code, &["rev-parse", "HEAD"]),
        head,
        "the code branch moved"
    );
    assert_eq!(
        std::fs::read(code.join(".git/index")).unwrap(),
        index,
        "the index changed"
    );
    assert_eq!(
        git(&code, &["status", "--porcelain"]),
        "",
        "the work tree changed"
    );
    assert!(!code.join("cairn.yaml").exists() && !code.join("mirror").exists());
    let remote_branches = git(&root.join("remote.git"), &["branch", "--list"]);
    assert!(remote_branches.contains("cairn") && remote_branches.contains("main"));

    // Another clone of the code repository reads the store.
    git(root, &["clone", "-q", &url, "code2"]);
    let code2 = root.join("code2");
    git(&code2, &["fetch", "-q", "origin", "cairn"]);
    let attached = cairn(&code2, &["init", "--branch", "cairn"]);
    assert_eq!(attached["made"], json!(false));
    let runs = cairn(&code2, &["run", "list"]);
    assert!(runs.to_string().contains(&run), "{runs}");
    cairn(&code2, &["fsck"]);
    assert_eq!(git(&code2, &["status", "--porcelain"]), "");
}

#[test]
fn a_hand_commit_holding_conflict_markers_is_refused_naming_them() {
    let (_net, a) = Net::new();
    a.ok(&["state", "set", "proj", "deploy", "region", "eu-west"]);
    let head = a.head();
    let path = a.dir.join("state/proj.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let marked = text.replace(
        "  value: eu-west\n",
        "<<<<<<< HEAD\n  value: eu-west\n=======\n  value: us-east\n>>>>>>> theirs\n",
    );
    assert_ne!(marked, text);
    std::fs::write(&path, &marked).unwrap();
    let out = a.git_output(&["commit", "-qam", "resolve by hand"]);
    assert!(!out.status.success(), "a commit with markers went in");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state/proj.yaml") && err.contains("conflict markers"),
        "{err}"
    );
    assert_eq!(a.head(), head, "nothing committed");
}

#[test]
fn a_hand_merge_that_drops_the_other_sides_run_is_found_and_repaired() {
    let (net, a) = Net::new();
    let b = net.clone("b", true);
    let run_b = b.boot("from b");
    b.ok(&["sync"]);
    a.boot("from a");
    // `-s ours` keeps a's tree whole: b's run is silently dropped.
    let out = a.git_output(&["pull", "--no-rebase", "--no-edit", "-s", "ours"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, env) = a.json(&["fsck"]);
    assert_eq!(code, 8, "{env}");
    let text = env.to_string();
    assert!(
        text.contains("merge_kept_both_sides") && text.contains(&run_b),
        "{text}"
    );
    a.ok(&["fsck", "--repair"]);
    a.assert_healthy();
    assert!(a.ok(&["run", "list"]).to_string().contains(&run_b));
}

#[test]
fn git_pull_rebase_goes_through_the_same_drivers() {
    let (net, a) = Net::new();
    let run = a.boot("shared");
    a.ok(&["sync"]);
    let b = net.clone("b", true);
    a.append(&run, "a1");
    a.ok(&["state", "set", "proj", "deploy", "region", "eu-west"]);
    a.ok(&["sync"]);
    b.append(&run, "b1");
    b.ok(&["state", "set", "proj", "deploy", "region", "us-east"]);
    let out = b.git_output(&["pull", "--rebase"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = b.sliding_ids(&run);
    assert!(
        ids.contains(&"a1".to_string()) && ids.contains(&"b1".to_string()),
        "{ids:?}"
    );
    assert_eq!(b.ok(&["conflicts", "list"]).as_array().unwrap().len(), 1);
    b.assert_healthy();
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(a.head(), b.head());
    a.assert_healthy();
}

#[test]
fn one_memory_item_edited_differently_on_two_clones_merges_field_by_field() {
    let (net, a) = Net::new();
    let run = a.boot("memory");
    let mcrs = json!({"mcrs": [{"op": "add", "type": "fact", "scope": "global",
        "content": "the api lives on port 8080", "confidence": 0.8}]});
    let p = a.ok_stdin(
        &["memory", "propose", &run, "--file", "-"],
        &mcrs.to_string(),
    );
    let batch = p["batch_id"].as_str().unwrap().to_string();
    let id = p["batch"]["item_ids"][0].as_str().unwrap().to_string();
    a.ok(&["memory", "commit", &batch, "--allow-outside-milestone"]);
    a.ok(&["sync"]);
    let b = net.clone("b", true);
    let path = a.ok(&["memory", "show", &id]).to_string();
    assert!(path.contains(&id));
    let file = b
        .git(&["ls-files", "memory"])
        .lines()
        .find(|l| l.contains(&id))
        .unwrap()
        .to_string();

    // a edits the content by hand; b edits the content and the confidence.
    common::setup::edit(a.dir.join(&file), |t| t.replace("port 8080", "port 9090"));
    a.git(&["commit", "-qam", "api moved"]);
    common::setup::edit(b.dir.join(&file), |t| {
        t.replace("port 8080", "port 7070")
            .replace("confidence: 0.8", "confidence: 0.9")
    });
    b.git(&["commit", "-qam", "api moved elsewhere"]);
    a.ok(&["sync"]);
    let merged = b.ok(&["sync"]);
    assert_eq!(merged["conflicts"].as_array().unwrap().len(), 1, "{merged}");
    let text = std::fs::read_to_string(b.dir.join(&file)).unwrap();
    assert!(!text.contains("<<<<<<<"), "{text}");
    // b's confidence (changed on one side only) is taken; the content
    // conflict keeps one value in the file and both in the record.
    let item = b.ok(&["memory", "show", &id]);
    assert_eq!(
        item["item"]["confidence"]
            .as_f64()
            .or(item["confidence"].as_f64()),
        Some(0.9),
        "{item}"
    );
    let cid = merged["conflicts"][0].as_str().unwrap().to_string();
    let record = b.ok(&["conflicts", "show", &cid]);
    assert_eq!(record["pointer"], json!("/content"));
    let sides = [
        record["ours"].as_str().unwrap(),
        record["theirs"].as_str().unwrap(),
    ];
    assert!(sides.iter().any(|s| s.contains("9090")) && sides.iter().any(|s| s.contains("7070")));
    b.assert_healthy();

    // Resolved on b, the resolution reaches a.
    b.ok(&["conflicts", "resolve", &cid, "--take", "ours"]);
    let kept = record["ours"].as_str().unwrap().to_string();
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    let shown = a.ok(&["memory", "show", &id]).to_string();
    assert!(shown.contains(&kept), "{shown}");
    assert_eq!(a.ok(&["conflicts", "list"]), json!([]));
    a.assert_healthy();
}

#[test]
fn a_merge_concluded_by_hand_is_accepted_when_its_files_validate() {
    let (net, a) = Net::new();
    a.ok(&["hooks", "install"]);
    let b = net.clone("b", true);
    let runs = [a.boot("one"), a.boot("two")];
    std::fs::write(a.dir.join("notes.txt"), "from a\n").unwrap();
    a.git(&["add", "notes.txt"]);
    a.git(&["commit", "-qm", "notes a"]);
    a.ok(&["sync"]);
    b.boot("three");
    std::fs::write(b.dir.join("notes.txt"), "from b\n").unwrap();
    b.git(&["add", "notes.txt"]);
    b.git(&["commit", "-qm", "notes b"]);
    // Only the user's own file conflicts; cairn's files merge by the drivers.
    let out = b.git_output(&["pull", "--no-rebase", "--no-edit"]);
    assert!(!out.status.success());
    std::fs::write(b.dir.join("notes.txt"), "from a\nfrom b\n").unwrap();
    b.git(&["add", "notes.txt"]);
    let out = b.git_output(&["commit", "--no-edit"]);
    assert!(
        out.status.success(),
        "the merge commit was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for run in &runs {
        b.ok(&["ws", "show", run]);
    }
    b.assert_healthy();
}

#[test]
fn a_clone_without_drivers_is_repaired_by_fsck_repair() {
    let (net, a) = Net::new();
    a.ok(&["sync"]);
    let b = net.clone("b", false);
    a.ok(&["state", "set", "proj", "owner", "team", "alpha"]);
    b.ok(&["state", "set", "proj", "owner", "team", "beta"]);
    a.ok(&["sync"]);
    let out = b.git_output(&["pull", "--no-rebase", "--no-edit"]);
    assert!(
        !out.status.success(),
        "git's text merge was expected to stop"
    );
    let (code, env) = b.json(&["fsck"]);
    assert_eq!(code, 8, "{env}");
    assert!(env.to_string().contains("conflict_markers"), "{env}");
    let repaired = b.ok(&["fsck", "--repair"]);
    assert!(
        repaired.to_string().contains("redid the git merge"),
        "{repaired}"
    );
    b.assert_healthy();
    assert_eq!(b.ok(&["conflicts", "list"]).as_array().unwrap().len(), 1);
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(a.head(), b.head());
}
