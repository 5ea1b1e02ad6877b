//! Backups through the CLI: a full backup and three incrementals restored
//! equal to the source (refs, tags, trees), an empty incremental, a flipped
//! byte caught by verify, and retention that keeps what it says.

mod common;

use std::path::Path;

use common::cli::{write, Env};
use serde_json::{json, Value};

fn patch(env: &Env, run: &str, seq: u64, next: &str) {
    let p = write(
        env.home.path(),
        "patch.json",
        &format!(
            r#"{{"_schema_version":"2.1","expected_seq":{seq},"set":{{"next_action":"{next}"}}}}"#
        ),
    );
    env.ok(&["ws", "patch", run, "--file", &p]);
}

fn create(env: &Env, dest: &Path, now: &str, incremental: bool) -> Value {
    let mut args = vec!["backup", "create", "--dest", dest.to_str().unwrap()];
    if incremental {
        args.push("--incremental");
    }
    let (code, out) = env.json_at(now, &args);
    assert_eq!(code, 0, "{out}");
    out["data"].clone()
}

/// The refs (branch and tags) of a repository, as `git for-each-ref` prints them.
fn refs(dir: &Path) -> String {
    common::setup::git(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads/",
            "refs/tags/",
        ],
    )
}

#[test]
fn a_full_backup_and_three_incrementals_restore_equal_to_the_source() {
    let (env, run) = Env::with_run();
    let dest = env.home.path().join("backups");
    const NOW: &str = common::cli::NOW;
    let full = create(&env, &dest, NOW, false);
    assert_eq!(full["manifest"]["kind"], json!("full"));
    // Nothing new: no incremental is written.
    let empty = create(&env, &dest, NOW, true);
    assert_eq!(empty["empty"], json!(true));

    patch(&env, &run, 0, "one");
    create(&env, &dest, NOW, true);
    env.ok(&["milestone", &run, "--reason", "halfway"]);
    create(&env, &dest, NOW, true);
    patch(&env, &run, 1, "two");
    env.boot();
    let last = create(&env, &dest, NOW, true);
    assert_eq!(last["manifest"]["kind"], json!("incremental"));

    let list = env.ok(&["backup", "list", "--dest", dest.to_str().unwrap()]);
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 4, "{list}");
    assert_eq!(backups[3]["base"], backups[2]["backup_id"]);
    assert!(backups[3]["refs"]
        .as_object()
        .unwrap()
        .keys()
        .any(|r| r.starts_with("refs/tags/cairn/")));

    let bundle = last["bundle"].as_str().unwrap();
    let v = env.ok(&["backup", "verify", bundle]);
    assert_eq!(v["chain"].as_array().unwrap().len(), 4, "{v}");

    let into = env.home.path().join("restored");
    let r = env.ok(&["backup", "restore", bundle, into.to_str().unwrap()]);
    assert_eq!(r["tip"], json!(env.head()));
    assert_eq!(refs(&into), refs(&env.root()));
    assert_eq!(
        common::setup::git(&into, &["rev-parse", "HEAD^{tree}"]),
        common::setup::git(&env.root(), &["rev-parse", "HEAD^{tree}"])
    );
    // The work tree is there too, and the restored store is sound.
    assert_eq!(
        std::fs::read(into.join(cairn::layout::working_set(&run))).unwrap(),
        std::fs::read(env.ws_file(&run)).unwrap()
    );
    let fsck = env
        .cmd()
        .args(["--store", into.to_str().unwrap(), "fsck"])
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{fsck:?}");
    // A restore never writes into a folder that holds something.
    let (code, out) = env.json(&["backup", "restore", bundle, into.to_str().unwrap()]);
    assert_eq!(code, 4, "{out}");
}

#[test]
fn a_flipped_byte_in_a_bundle_is_caught_by_verify() {
    let (env, run) = Env::with_run();
    let dest = env.home.path().join("backups");
    let full = create(&env, &dest, common::cli::NOW, false);
    patch(&env, &run, 0, "one");
    let incr = create(&env, &dest, common::cli::NOW, true);
    env.ok(&["backup", "verify", "--dest", dest.to_str().unwrap()]);

    for made in [&full, &incr] {
        let bundle = made["bundle"].as_str().unwrap().to_string();
        let original = std::fs::read(&bundle).unwrap();
        let mut bytes = original.clone();
        let i = bytes.len() - 30;
        bytes[i] ^= 0x01;
        std::fs::write(&bundle, &bytes).unwrap();
        // Verifying the incremental checks its whole chain.
        let (code, out) = env.json(&["backup", "verify", incr["bundle"].as_str().unwrap()]);
        assert_eq!(code, 8, "{out}");
        assert_eq!(out["error"]["category"], json!("INTEGRITY"));
        let name = Path::new(&bundle)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            out["error"]["message"].as_str().unwrap().contains(&name),
            "{out}"
        );
        std::fs::write(&bundle, &original).unwrap();
    }
    env.ok(&["backup", "verify", incr["bundle"].as_str().unwrap()]);

    // Damage that passes the checksum (the manifest rewritten to match)
    // fails later, inside git: the restore leaves no half-made folder.
    let bundle = incr["bundle"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let i = bytes.len() - 30;
    bytes[i] ^= 0x01;
    std::fs::write(&bundle, &bytes).unwrap();
    let manifest_path = bundle.replace(".bundle", ".json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    use sha2::Digest;
    manifest["sha256"] = json!(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>());
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let into = env.home.path().join("restored");
    let (code, out) = env.json(&["backup", "restore", &bundle, into.to_str().unwrap()]);
    assert_eq!(code, 8, "{out}");
    assert_eq!(out["error"]["category"], json!("INTEGRITY"), "{out}");
    assert!(!into.exists(), "a failed restore left {}", into.display());
}

#[test]
fn prune_keeps_the_newest_of_each_day_and_week_and_every_base() {
    let (env, run) = Env::with_run();
    let dest = env.home.path().join("backups");
    // One full backup a day, 2026-01-01 (Thursday, ISO week 1) to 01-10 (week 2).
    let mut ids = Vec::new();
    for day in 1..=10 {
        let now = format!("2026-01-{day:02}T12:00:00Z");
        let made = create(&env, &dest, &now, false);
        ids.push(made["manifest"]["backup_id"].as_str().unwrap().to_string());
    }
    let d = dest.to_str().unwrap();
    let p = env.ok(&[
        "backup",
        "prune",
        "--dest",
        d,
        "--keep-daily",
        "3",
        "--keep-weekly",
        "2",
        "--keep-monthly",
        "0",
    ]);
    // Days 10, 9, 8; weeks 2 (day 10) and 1 (day 4).
    let kept: Vec<&str> = [4, 8, 9, 10].iter().map(|d| ids[d - 1].as_str()).collect();
    assert_eq!(p["kept"], json!(kept), "{p}");
    assert_eq!(p["removed"].as_array().unwrap().len(), 6);
    let listed = env.ok(&["backup", "list", "--dest", d]);
    assert_eq!(listed["backups"].as_array().unwrap().len(), 4);

    // An incremental kept keeps the backups it builds on.
    patch(&env, &run, 0, "one");
    let incr = create(&env, &dest, "2026-01-11T12:00:00Z", true);
    let p = env.ok(&[
        "backup",
        "prune",
        "--dest",
        d,
        "--keep-daily",
        "1",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
    ]);
    assert_eq!(
        p["kept"],
        json!([ids[9], incr["manifest"]["backup_id"]]),
        "{p}"
    );
    env.ok(&["backup", "verify", incr["bundle"].as_str().unwrap()]);
}

/// A tag deleted by hand after a full backup: the next incremental has no
/// new object (git refuses an empty bundle), so it is a manifest alone, and
/// restoring the chain leaves the deleted tag out, here and after a later
/// incremental that carries objects again.
#[test]
fn a_deleted_tag_makes_a_refs_only_incremental_and_stays_deleted() {
    let (env, run) = Env::with_run();
    let dest = env.home.path().join("backups");
    const NOW: &str = common::cli::NOW;
    env.ok(&["milestone", &run, "--reason", "first"]);
    create(&env, &dest, NOW, false);
    let tags = common::setup::git(&env.root(), &["tag", "-l"]);
    let tag = tags.lines().next().expect("a milestone tag").to_string();
    common::setup::git(&env.root(), &["tag", "-d", &tag]);

    let refs_only = create(&env, &dest, NOW, true);
    assert_eq!(refs_only["empty"], json!(false), "{refs_only}");
    assert_eq!(refs_only["manifest"]["bytes"], json!(0), "{refs_only}");
    assert!(refs_only["bundle"].is_null(), "{refs_only}");
    let manifest = dest.join(format!(
        "{}.json",
        refs_only["manifest"]["backup_id"].as_str().unwrap()
    ));
    let into = env.home.path().join("restored-refs-only");
    env.ok(&[
        "backup",
        "restore",
        manifest.to_str().unwrap(),
        into.to_str().unwrap(),
    ]);
    assert_eq!(refs(&into), refs(&env.root()));
    assert!(!refs(&into).contains(&tag));

    patch(&env, &run, 0, "after the deletion");
    let last = create(&env, &dest, NOW, true);
    let bundle = last["bundle"].as_str().unwrap();
    let v = env.ok(&["backup", "verify", bundle]);
    assert_eq!(v["chain"].as_array().unwrap().len(), 3, "{v}");
    let into = env.home.path().join("restored");
    env.ok(&["backup", "restore", bundle, into.to_str().unwrap()]);
    assert_eq!(refs(&into), refs(&env.root()));
}
