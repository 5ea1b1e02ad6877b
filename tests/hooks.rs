//! The store's git hooks, through real `git commit` runs in temporary stores
//! whose hooks `cairn init` installed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::cli::{write, Env};
use common::setup;
use serde_json::{json, Value};

/// A store with a run, one active memory item and one episode.
struct Fixture {
    env: Env,
    run: String,
    item: String,
    item_path: String,
    episode_path: String,
}

fn fixture() -> Fixture {
    let (env, run) = Env::with_run();
    let f = write(
        env.home.path(),
        "mcrs.json",
        &json!({"mcrs": [{"op": "add", "type": "fact", "scope": "global",
            "content": "The build uses cargo", "confidence": 0.8}]})
        .to_string(),
    );
    let p = env.ok(&["memory", "propose", &run, "--file", &f]);
    let batch = p["batch_id"].as_str().unwrap().to_string();
    let item = p["batch"]["item_ids"][0].as_str().unwrap().to_string();
    let ms = env.ok(&["milestone", &run, "--reason", "r", "--commit-batch", &batch]);
    let episode_path = cairn::layout::episode(&run, ms["episode"]["episode_id"].as_str().unwrap());
    let item_path = cairn::layout::memory_item("global", None, &item);
    Fixture {
        env,
        run,
        item,
        item_path,
        episode_path,
    }
}

impl Fixture {
    /// Edits the memory item with `f` and stages it.
    fn stage_item(&self, f: impl Fn(String) -> String) {
        setup::edit(self.env.path(&self.item_path), f);
        self.env.git(&["add", &self.item_path]);
    }

    /// What is staged, as `git diff --cached --name-status` prints it.
    fn staged(&self) -> String {
        self.env.git(&["diff", "--cached", "--name-status"])
    }

    /// Commits what is staged; returns (success, stderr).
    fn commit(&self, msg: &str) -> (bool, String) {
        let out = self.env.git_output(&["commit", "-q", "-m", msg]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Asserts a staged change is refused: the commit is not made, nothing
    /// else is staged, and stderr names the file and the rule.
    fn refused(&self, file: &str, rule: &str) -> String {
        let head = self.env.head();
        let staged = self.staged();
        let (ok, err) = self.commit("should be refused");
        assert!(!ok, "the commit was made; stderr: {err}");
        assert_eq!(self.env.head(), head, "HEAD moved");
        assert_eq!(self.staged(), staged, "the hook changed what is staged");
        assert!(err.contains(file), "stderr does not name {file}: {err}");
        assert!(
            err.contains(&format!("(rule: {rule})")),
            "stderr does not name rule {rule}: {err}"
        );
        assert!(err.contains("fix:"), "stderr says no fix: {err}");
        err
    }

    fn ok_log_last(&self) -> Value {
        let log = self.env.ok(&["log", "--limit", "1"]);
        log["events"][0].clone()
    }
}

#[test]
fn a_valid_hand_edit_is_committed_with_trailers_and_its_mirror() {
    let fx = fixture();
    fx.stage_item(|t| t.replace("confidence: 0.8", "confidence: 0.95"));
    let (ok, err) = fx.commit("raise the confidence");
    assert!(ok, "{err}");
    // The same commit carries the item and the pages that show it.
    let files = fx.env.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert!(files.contains(&fx.item_path), "{files}");
    assert!(files.contains("mirror/memory/global/fact.md"), "{files}");
    let page = fx.env.git(&["show", "HEAD:mirror/memory/global/fact.md"]);
    assert!(page.contains("0.95"), "{page}");
    // The message carries the ledger trailers.
    let msg = fx.env.git(&["log", "-1", "--format=%B"]);
    assert!(msg.starts_with("raise the confidence\n"), "{msg}");
    assert!(msg.contains("Cairn-Event: MANUAL_EDIT"), "{msg}");
    assert!(msg.contains("Cairn-Event-Id: ev_"), "{msg}");
    assert!(msg.contains(&format!("Cairn-Items: {}", fx.item)), "{msg}");
    // The ledger shows it with its author; the work tree is clean; all is healthy.
    let ev = fx.ok_log_last();
    assert_eq!(ev["event_type"], json!("MANUAL_EDIT"));
    assert_eq!(ev["actor"], json!("Hand"));
    assert!(ev["event_id"].as_str().unwrap().starts_with("ev_"));
    assert_eq!(fx.env.git(&["status", "--porcelain"]), "");
    fx.env.ok(&["fsck"]);
    fx.env.ok(&["mirror", "--check"]);
    // The search index caught up with the hand edit.
    let hits = fx.env.ok(&["search", "cargo"]);
    assert_eq!(hits["hits"][0]["id"], json!(fx.item));
    // cairn goes on writing on top of it.
    fx.env.ok(&[
        "ws",
        "patch",
        &fx.run,
        "--expected-seq",
        "0",
        "-f",
        &write(
            fx.env.home.path(),
            "p.json",
            r#"{"set": {"next_action": "after the hand edit"}}"#,
        ),
    ]);
}

#[test]
fn a_hand_edited_working_set_gets_its_seq_bumped_and_restaged() {
    let fx = fixture();
    let ws = cairn::layout::working_set(&fx.run);
    let text = fx.env.edit(&ws, |t| {
        t.replace("objective: Ship it", "objective: Ship it well")
    });
    assert!(text.contains("_update_seq: 0"), "{text}");
    fx.env.git(&["add", &ws]);
    let (ok, err) = fx.commit("sharpen the objective");
    assert!(ok, "{err}");
    assert!(err.contains("_update_seq 1"), "{err}");
    let committed = fx.env.git(&["show", &format!("HEAD:{ws}")]);
    assert!(committed.contains("_update_seq: 1"), "{committed}");
    assert!(committed.contains("objective: Ship it well"), "{committed}");
    // The work tree has the bumped file too, and the ledger the seq.
    assert_eq!(fx.env.read(&ws), committed);
    let ev = fx.ok_log_last();
    assert_eq!(ev["run_id"], json!(fx.run));
    assert_eq!(ev["seq"], json!(1));
    fx.env.ok(&["fsck"]);
    assert_eq!(fx.env.ok(&["ws", "show", &fx.run])["_update_seq"], json!(1));

    // Setting the seq inconsistently is refused.
    fx.env
        .edit(&ws, |t| t.replace("_update_seq: 1", "_update_seq: 7"));
    fx.env.git(&["add", &ws]);
    fx.refused(&ws, "seq_consistency");
}

#[test]
fn invalid_yaml_is_refused() {
    let fx = fixture();
    fx.stage_item(|t| format!("{t}content: [unclosed\n"));
    let err = fx.refused(&fx.item_path, "parse");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let fx = fixture();
    fx.stage_item(|t| format!("{t}colour: blue\n"));
    let err = fx.refused(&fx.item_path, "additionalProperties");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn a_wrong_type_is_refused() {
    let fx = fixture();
    fx.stage_item(|t| t.replace("confidence: 0.8", "confidence: high"));
    let err = fx.refused(&fx.item_path, "type");
    assert!(err.contains("/confidence"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let fx = fixture();
    fx.env.edit(&fx.item_path, |t| {
        t.replace("confidence: 0.8", "confidence: high") + "colour: blue\n"
    });
    fx.env.edit(&fx.episode_path, |t| t + "# edited\n");
    fx.env.git(&["add", "-A"]);
    let err = fx.refused(&fx.item_path, "type");
    assert!(err.contains("(rule: additionalProperties)"), "{err}");
    assert!(err.contains("(rule: episode_immutable)"), "{err}");
}

#[test]
fn an_edited_episode_is_refused() {
    let fx = fixture();
    let text = fx
        .env
        .read(&fx.episode_path)
        .replace("reason: r", "reason: rewritten");
    assert_ne!(text, fx.env.read(&fx.episode_path));
    fx.env.put(&fx.episode_path, &text);
    fx.env.git(&["add", &fx.episode_path]);
    fx.refused(&fx.episode_path, "episode_immutable");
    // Deleting it is refused as well.
    fx.env.git(&["checkout", "HEAD", "--", &fx.episode_path]);
    fx.env.git(&["rm", "-q", &fx.episode_path]);
    let err = fx.refused(&fx.episode_path, "episode_immutable");
    assert!(err.contains("deleted"), "{err}");
}

#[test]
fn a_hand_edited_mirror_page_is_refused_naming_the_canonical_file() {
    let fx = fixture();
    let page = "mirror/memory/global/fact.md";
    fx.env.edit(page, |t| t + "\nA note added by hand.\n");
    fx.env.git(&["add", page]);
    let err = fx.refused(page, "mirror_generated");
    assert!(err.contains("memory/"), "names the canonical files: {err}");
}

#[test]
fn a_symlink_is_refused() {
    let fx = fixture();
    let link = "memory/global/link.yaml";
    std::os::unix::fs::symlink("/etc/passwd", fx.env.path(link)).unwrap();
    fx.env.git(&["add", link]);
    fx.refused(link, "regular_file");
}

#[test]
fn a_50_mb_file_is_refused() {
    let fx = fixture();
    let big = "notes/big.bin";
    std::fs::create_dir_all(fx.env.path("notes")).unwrap();
    std::fs::write(fx.env.path(big), vec![b'a'; 50 * 1024 * 1024]).unwrap();
    fx.env.git(&["add", big]);
    let err = fx.refused(big, "max_file_bytes");
    assert!(err.contains("the file is 50 MiB"), "{err}");
}

#[test]
fn a_partial_commit_of_one_path_is_checked_and_gets_its_mirror() {
    // `git commit PATH` builds a temporary index (GIT_INDEX_FILE).
    let fx = fixture();
    let text = fx.env.edit(&fx.item_path, |t| {
        t.replace("confidence: 0.8", "confidence: 0.85")
    });
    let out = fx
        .env
        .git_output(&["commit", "-q", "-m", "partial", "--", &fx.item_path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = fx.env.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert!(files.contains("mirror/memory/global/fact.md"), "{files}");
    fx.env.ok(&["mirror", "--check"]);
    // And a bad partial commit is refused.
    fx.env.put(
        &fx.item_path,
        &text.replace("confidence: 0.85", "confidence: high"),
    );
    let head = fx.env.head();
    let out = fx
        .env
        .git_output(&["commit", "-q", "-m", "bad", "--", &fx.item_path]);
    assert!(!out.status.success());
    assert_eq!(fx.env.head(), head);
}

#[test]
fn pages_staged_for_an_aborted_commit_are_not_hand_edits() {
    let fx = fixture();
    fx.stage_item(|t| t.replace("confidence: 0.8", "confidence: 0.81"));
    // A commit whose message is empty is aborted after pre-commit staged pages.
    let out = fx.env.git_output(&["commit", "-q", "-m", ""]);
    assert!(!out.status.success());
    assert!(fx.staged().contains("mirror/memory/global/fact.md"));
    // Another edit: the earlier pages are re-rendered, not refused.
    fx.stage_item(|t| t.replace("confidence: 0.81", "confidence: 0.82"));
    let (ok, err) = fx.commit("second try");
    assert!(ok, "{err}");
    fx.env.ok(&["mirror", "--check"]);
    assert!(fx
        .env
        .git(&["show", "HEAD:mirror/memory/global/fact.md"])
        .contains("0.82"));
    // A real hand edit of that page is still refused.
    let page = "mirror/memory/global/fact.md";
    fx.env.edit(page, |t| t + "\nby hand\n");
    fx.env.git(&["add", page]);
    fx.refused(page, "mirror_generated");
}

#[test]
fn an_empty_commit_keeps_the_mirror_current() {
    let fx = fixture();
    let out = fx
        .env
        .git_output(&["commit", "-q", "--allow-empty", "-m", "nothing"]);
    assert!(out.status.success());
    // No "mirror is stale" note, and the mirror index moved with the commit.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cairn mirror"));
    let files = fx.env.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert!(files.contains("mirror/index.json"), "{files}");
    fx.env.ok(&["mirror", "--check"]);
    assert_eq!(fx.env.git(&["status", "--porcelain"]), "");
}

#[test]
fn a_message_with_trailers_is_left_alone() {
    let fx = fixture();
    fx.env.put("NOTES.md", "notes\n");
    fx.env.git(&["add", "NOTES.md"]);
    let msg =
        "by hand\n\nCairn-Event: MANUAL_EDIT\nCairn-Event-Id: ev_01KAAAAAAAAAAAAAAAAAAAAAAA\n";
    let (ok, err) = fx.commit(msg);
    assert!(ok, "{err}");
    let body = fx.env.git(&["log", "-1", "--format=%B"]);
    assert_eq!(body.matches("Cairn-Event:").count(), 1, "{body}");
}

fn hooks_dir(env: &Env) -> PathBuf {
    env.root().join(".git/hooks")
}

#[test]
fn install_is_idempotent_and_status_says_current() {
    let env = Env::store();
    let before: Vec<Vec<u8>> = ["pre-commit", "commit-msg", "post-merge"]
        .iter()
        .map(|h| std::fs::read(hooks_dir(&env).join(h)).unwrap())
        .collect();
    env.ok(&["hooks", "install"]);
    env.ok(&["hooks", "install"]);
    let after: Vec<Vec<u8>> = ["pre-commit", "commit-msg", "post-merge"]
        .iter()
        .map(|h| std::fs::read(hooks_dir(&env).join(h)).unwrap())
        .collect();
    assert_eq!(before, after);
    let text = String::from_utf8(after[0].clone()).unwrap();
    assert_eq!(text.matches(">>> cairn >>>").count(), 1);
    let status = env.ok(&["hooks", "status"]);
    assert_eq!(status["current"], json!(true));
    assert_eq!(status["hooks"].as_array().unwrap().len(), 6);
    // A block for another binary is reported as outdated.
    let hook = hooks_dir(&env).join("post-commit");
    let exe = std::fs::canonicalize(assert_cmd::cargo::cargo_bin("cairn")).unwrap();
    setup::edit(&hook, |t| {
        t.replace(&exe.to_string_lossy().to_string(), "/old/cairn")
    });
    let status = env.ok(&["hooks", "status"]);
    assert_eq!(status["current"], json!(false));
    assert_eq!(status["hooks"][2]["state"], json!("outdated"));
}

#[test]
fn hooks_coexist_with_a_users_hook_and_uninstall_restores_it() {
    let env = Env::new();
    env.ok(&["init", "--no-hooks", env.root().to_str().unwrap()]);
    let dir = hooks_dir(&env);
    std::fs::create_dir_all(&dir).unwrap();
    // A shell hook of the user's that records it ran, and a Python one.
    let marker = env.home.path().join("user-hook-ran");
    let shell = format!("#!/bin/sh\necho ran >> '{}'\nexit 0\n", marker.display());
    let python = format!(
        "#!/usr/bin/env python3\nimport sys\nopen('{}', 'a').write('msg ' + sys.argv[1] + '\\n')\n",
        marker.display()
    );
    for (name, text) in [("pre-commit", &shell), ("commit-msg", &python)] {
        std::fs::write(dir.join(name), text).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.ok(&["hooks", "install"]);
    let status = env.ok(&["hooks", "status"]);
    assert_eq!(status["current"], json!(true));
    assert_eq!(status["hooks"][0]["other_content"], json!(true));
    assert_eq!(status["hooks"][1]["chained"], json!(true));
    // Both run on a commit: cairn's checks and the user's hooks.
    env.put("NOTES.md", "n\n");
    env.git(&["add", "NOTES.md"]);
    env.git(&["commit", "-qm", "notes"]);
    let ran = setup::read(&marker);
    assert!(ran.contains("ran"), "{ran}");
    assert!(ran.contains("msg "), "{ran}");
    let body = env.git(&["log", "-1", "--format=%B"]);
    assert!(body.contains("Cairn-Event: MANUAL_EDIT"), "{body}");
    // And cairn's refusal still stops the commit before the user's hook runs.
    env.put("cairn.yaml", "bogus: [\n");
    env.git(&["add", "cairn.yaml"]);
    assert!(!env.git_output(&["commit", "-qm", "bad"]).status.success());
    env.git(&["reset", "-q", "--hard"]);
    // Uninstall gives back exactly what was there.
    env.ok(&["hooks", "uninstall"]);
    assert_eq!(setup::read(dir.join("pre-commit")), shell);
    assert_eq!(setup::read(dir.join("commit-msg")), python);
    assert!(!dir.join("commit-msg.pre-cairn").exists());
    assert!(!dir.join("post-commit").exists());
    assert_eq!(env.ok(&["hooks", "status"])["current"], json!(false));
}

#[test]
fn hooks_are_never_taken_from_the_stores_own_files() {
    let env = Env::store();
    // A clone brings no hooks along (git never copies them) ...
    let clone = env.home.path().join("clone");
    setup::clone(&env.root(), &clone);
    assert!(!clone.join(".git/hooks/pre-commit").exists());
    // ... and cairn refuses to install into a hooks folder inside the work tree.
    env.git(&["config", "core.hooksPath", "hooks"]);
    let (code, out) = env.json(&["hooks", "install"]);
    assert_ne!(code, 0);
    assert_eq!(out["error"]["code"], json!("HOOKS_IN_STORE"), "{out}");
    assert!(!env.root().join("hooks/pre-commit").exists());
}

#[test]
fn no_verify_damage_is_found_by_fsck_and_blocks_writes_until_repaired() {
    let fx = fixture();
    fx.env.edit(&fx.item_path, |t| {
        t.replace("confidence: 0.8", "confidence: high")
    });
    fx.env.edit(&fx.episode_path, |t| t + "# edited\n");
    fx.env
        .git(&["commit", "-q", "--no-verify", "-am", "bypass the hooks"]);
    let bad = fx.env.head();
    // fsck names the files, the rules and the commit.
    let (code, out) = fx.env.json(&["fsck"]);
    assert_eq!(code, 8, "{out}");
    let findings = out["error"]["details"]["findings"]
        .as_array()
        .unwrap()
        .clone();
    for (file, rule) in [
        (&fx.item_path, "type"),
        (&fx.episode_path, "episode_immutable"),
    ] {
        let f = findings
            .iter()
            .find(|f| f["subject"] == json!(file) && f["rule"] == json!(rule))
            .unwrap_or_else(|| panic!("no {rule} finding for {file}: {findings:?}"));
        assert_eq!(f["commit"], json!(bad));
    }
    // cairn builds nothing on the broken tip.
    let patch = write(
        fx.env.home.path(),
        "p.json",
        r#"{"set": {"next_action": "x"}}"#,
    );
    let err = common::cli::refused(
        &fx.env,
        &["ws", "patch", &fx.run, "--expected-seq", "0", "-f", &patch],
        None,
        "INTEGRITY",
        8,
    );
    assert_eq!(err["code"], json!("TIP_INVALID"));
    assert!(err["message"].as_str().unwrap().contains(&bad), "{err}");
    // The repair restores the episode from its tag and the item's last good version.
    let repaired = fx.env.ok(&["fsck", "--repair"]);
    assert!(!repaired["commits"].as_array().unwrap().is_empty());
    assert!(fx.env.read(&fx.item_path).contains("confidence: 0.8"));
    let tag = format!(
        "cairn/{}/{}",
        fx.run,
        fx.episode_path
            .rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".yaml")
    );
    let tag_msg = fx.env.git(&["tag", "-l", "--format=%(contents)", &tag]);
    assert_eq!(tag_msg.trim_end(), fx.env.read(&fx.episode_path).trim_end());
    fx.env.ok(&["fsck"]);
    fx.env
        .ok(&["ws", "patch", &fx.run, "--expected-seq", "0", "-f", &patch]);
    assert_eq!(fx.env.git(&["status", "--porcelain"]), "");
}

#[test]
fn a_stale_mirror_after_a_plain_merge_is_reported_and_repaired() {
    let fx = fixture();
    // A commit made without hooks leaves the mirror behind; the post hooks say so.
    fx.env.edit(&fx.item_path, |t| {
        t.replace("confidence: 0.8", "confidence: 0.9")
    });
    fx.env
        .git(&["commit", "-q", "--no-verify", "-am", "quiet edit"]);
    let out = fx.env.git_output(&["checkout", "-q", "-b", "other"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cairn mirror"));
    fx.env.git(&["checkout", "-q", "main"]);
    let (code, _) = fx.env.json(&["fsck"]);
    assert_eq!(code, 8);
    fx.env.ok(&["fsck", "--repair"]);
    fx.env.ok(&["mirror", "--check"]);
    fx.env.ok(&["fsck"]);
}

#[test]
fn the_pre_commit_framework_manifest_calls_cairn_hooks() {
    let text =
        setup::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".pre-commit-hooks.yaml"));
    let hooks: Value = serde_saphyr::from_str(&text).unwrap();
    let hooks = hooks.as_array().unwrap();
    assert_eq!(hooks.len(), 6);
    for h in hooks {
        let entry = h["entry"].as_str().unwrap();
        assert!(entry.starts_with("cairn hook "), "{entry}");
        assert_eq!(h["language"], json!("system"));
        let stage = h["stages"][0].as_str().unwrap();
        assert!(entry.ends_with(stage), "{entry} runs at {stage}");
    }
}

#[test]
fn hand_commits_and_cairn_writes_interleave_without_losing_either() {
    let fx = fixture();
    const WRITES: u64 = 15;
    const HAND: usize = 6;
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut done = 0;
            while done < WRITES {
                let patch = write(
                    fx.env.home.path(),
                    "p.json",
                    &json!({"append": {"sliding_context": [
                        {"id": format!("step{done}"), "content": "step", "priority": 1}]}})
                    .to_string(),
                );
                let seq = fx.env.ok(&["ws", "show", &fx.run])["_update_seq"]
                    .as_u64()
                    .unwrap();
                let (code, out) = fx.env.json(&[
                    "ws",
                    "patch",
                    &fx.run,
                    "--expected-seq",
                    &seq.to_string(),
                    "-f",
                    &patch,
                ]);
                if code == 0 {
                    done += 1;
                    continue;
                }
                // A stale seq (a hand commit bumped it) or a git process
                // holding the index or HEAD: re-read and retry.
                let retry = out["error"]["retryable"] == json!(true)
                    || out["error"]["code"] == json!("TIP_INVALID");
                assert!(retry, "{out}");
                assert_ne!(out["error"]["code"], json!("TIP_INVALID"), "{out}");
            }
        });
        for k in 0..HAND {
            let value = format!("confidence: 0.{}", 50 + k);
            loop {
                fx.env.edit(&fx.item_path, |text| {
                    let edited: Vec<&str> = text
                        .lines()
                        .map(|l| {
                            if l.starts_with("confidence:") {
                                value.as_str()
                            } else {
                                l
                            }
                        })
                        .collect();
                    edited.join("\n") + "\n"
                });
                // A cairn write may hold the index for a moment.
                if !fx.env.git_output(&["add", &fx.item_path]).status.success() {
                    continue;
                }
                let out = fx
                    .env
                    .git_output(&["commit", "-q", "-m", &format!("hand {k}")]);
                if out.status.success() {
                    break;
                }
                // HEAD moved under git (a cairn write) or the index was held: retry.
                let err = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    err.contains("lock") || err.contains("HEAD") || err.contains("TRANSIENT"),
                    "unexpected refusal: {err}"
                );
            }
        }
        writer.join().unwrap();
    });
    // Every acknowledged write and every hand commit is in history.
    let ws = fx.env.ok(&["ws", "show", &fx.run]);
    assert_eq!(ws["_update_seq"], json!(WRITES));
    let log = fx.env.git(&["log", "--format=%s"]);
    for k in 0..HAND {
        assert!(log.contains(&format!("hand {k}")), "{log}");
    }
    assert!(fx
        .env
        .read(&fx.item_path)
        .contains(&format!("confidence: 0.{}", 50 + HAND - 1)));
    fx.env.ok(&["fsck"]);
}

#[test]
fn pre_commit_removes_temp_files_a_killed_hook_left_beside_its_pages() {
    let fx = fixture();
    // A pre-commit killed while writing a page leaves `write_atomic`'s temp
    // file (`.NAME.PID.tmp`); one of a live process (here: this test) stays.
    let dead = fx.env.path("mirror/.index.json.999999999.tmp");
    let live = fx
        .env
        .path(&format!("mirror/.index.json.{}.tmp", std::process::id()));
    std::fs::write(&dead, "torn").unwrap();
    std::fs::write(&live, "in flight").unwrap();
    fx.stage_item(|t| t.replace("confidence: 0.8", "confidence: 0.9"));
    let (ok, err) = fx.commit("raise the confidence");
    assert!(ok, "{err}");
    assert!(!dead.exists(), "the dead writer's temp file is still there");
    assert!(live.exists(), "a live writer's temp file was removed");
    std::fs::remove_file(&live).unwrap();
    assert_eq!(fx.env.git(&["status", "--porcelain"]), "");
}
