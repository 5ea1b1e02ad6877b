//! Resume packs through the CLI: snapshot → load into a fresh store, the
//! same state giving the same bytes, every file of a pack tampered with one
//! at a time, and hostile packs (zip slip, absolute paths, symlinks, too
//! many files, a zip bomb) refused before anything is written.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::cli::{refused, write, Env};
use serde_json::{json, Value};

const MCRS: &str = r#"[
 {"_schema_version":"2.1","op":"add","type":"fact","scope":"global","content":"The API is versioned","confidence":0.8,"rationale":"t","source_refs":[]},
 {"_schema_version":"2.1","op":"add","type":"decision","scope":"run","content":"Ship behind a flag","confidence":0.9,"rationale":"t","source_refs":[]},
 {"_schema_version":"2.1","op":"add","type":"fact","scope":"project","scope_id":"demo","content":"Demo uses Postgres","confidence":0.7,"rationale":"t","source_refs":[]}
]"#;

/// A store with a run of project `demo`: patched to seq 1, three memory
/// items committed at a milestone, one more patch (seq 2). Returns the run.
fn source() -> (Env, String) {
    let env = Env::store();
    let run = env.ok(&["run", "boot", "--objective", "Ship it", "--project", "demo"])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = write(
        env.home.path(),
        "p1.json",
        r#"{"_schema_version":"2.1","expected_seq":0,"set":{"status":"BUSY","next_action":"write the tests"},"append":{"pinned_context":[{"id":"rule1","content":"Never skip tests","timestamp":"2026-01-18T00:00:00Z","priority":5}]}}"#,
    );
    env.ok(&["ws", "patch", &run, "--file", &p]);
    let m = write(env.home.path(), "mcrs.json", MCRS);
    let batch = env.ok(&["memory", "propose", &run, "--file", &m])["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&[
        "milestone",
        &run,
        "--reason",
        "checkpoint",
        "--commit-batch",
        &batch,
    ]);
    let p = write(
        env.home.path(),
        "p2.json",
        r#"{"_schema_version":"2.1","expected_seq":1,"set":{"current_stage":"BUILD"}}"#,
    );
    env.ok(&["ws", "patch", &run, "--file", &p]);
    (env, run)
}

fn snapshot(env: &Env, run: &str, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["snapshot", run, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.ok(&args)
}

fn without(mut v: Value, keys: &[&str]) -> Value {
    for k in keys {
        v.as_object_mut().unwrap().remove(*k);
    }
    v
}

#[test]
fn snapshot_then_load_into_a_fresh_store_continues_the_run() {
    let (src, run) = source();
    let pack = src.home.path().join("pack");
    let snap = snapshot(&src, &run, &pack, &[]);
    assert_eq!(snap["manifest"]["pointers"]["ledger_last_seq"], json!(2));
    assert_eq!(
        snap["head_commit"],
        json!(snap["manifest"]["source"]["head_commit"])
    );
    let log = src.ok(&["log", "--type", "RESUME_SNAPSHOT"]);
    assert_eq!(log["events"].as_array().unwrap().len(), 1, "{log}");
    let source_ws = src.ok(&["ws", "show", &run]);

    let dst = Env::store();
    let checked = dst.ok(&["resume", "verify", pack.to_str().unwrap()]);
    assert_eq!(checked["manifest"]["pack_id"], snap["pack_id"]);
    let loaded = dst.ok(&[
        "resume",
        "load",
        pack.to_str().unwrap(),
        "--new-run-id",
        "run_resumed",
    ]);
    assert_eq!(loaded["run_id"], json!("run_resumed"));
    assert_eq!(loaded["memory_status"], json!("candidate"));
    assert_eq!(loaded["memory_added"].as_array().unwrap().len(), 3);
    assert_eq!(loaded["episodes"], json!(1));

    // The working set is the source's at that seq, under the new id; the
    // new run's own ledger starts at seq 0.
    let ws = dst.ok(&["ws", "show", "run_resumed"]);
    assert_eq!(ws["_update_seq"], json!(0));
    assert_eq!(
        without(ws, &["run_id", "_update_seq"]),
        without(source_ws, &["run_id", "_update_seq"])
    );
    // Episodes arrive re-tagged under the new run; memory waits in the review queue.
    let eps = dst.ok(&["episode", "list", "run_resumed"]);
    assert_eq!(
        eps.as_array().or(eps["episodes"].as_array()).unwrap().len(),
        1,
        "{eps}"
    );
    let tags = dst.git(&["tag", "--list", "cairn/run_resumed/*"]);
    assert_eq!(tags.lines().count(), 1, "{tags}");
    let queue = dst.ok(&["memory", "queue"]);
    let items = queue
        .as_array()
        .or(queue["items"].as_array())
        .unwrap()
        .clone();
    assert_eq!(items.len(), 3, "{queue}");
    let run_item = items.iter().find(|i| i["scope"] == json!("run")).unwrap();
    assert_eq!(run_item["scope_id"], json!("run_resumed"));
    assert!(run_item["source_refs"]
        .as_array()
        .unwrap()
        .contains(&json!(format!(
            "pack:{}",
            snap["pack_id"].as_str().unwrap()
        ))));

    // The lineage is in the log.
    let log = dst.ok(&["log", "--run", "run_resumed"]);
    let ev = &log["events"][0];
    assert_eq!(ev["event_type"], json!("RESUME_LOADED"));
    assert_eq!(ev["payload"]["resumed_from"]["pack_id"], snap["pack_id"]);
    assert_eq!(ev["payload"]["resumed_from"]["source_run"], json!(run));
    assert_eq!(
        ev["payload"]["resumed_from"]["source_commit"],
        snap["head_commit"]
    );
    assert_eq!(ev["payload"]["resumed_from"]["source_seq"], json!(2));
    assert_eq!(
        ev["payload"]["resumed_from"]["source_store_id"],
        snap["manifest"]["pointers"]["source_store_id"]
    );
    let human = dst
        .cmd()
        .args(["--store", dst.root().to_str().unwrap(), "log"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains(snap["pack_id"].as_str().unwrap()));
    dst.ok(&["fsck"]);

    // The run goes on: a patch at the next seq lands.
    let p = write(
        dst.home.path(),
        "next.json",
        r#"{"_schema_version":"2.1","expected_seq":0,"set":{"status":"DONE"}}"#,
    );
    dst.ok(&["ws", "patch", "run_resumed", "--file", &p]);

    // --trust keeps statuses (active stays active).
    let trusted = Env::store();
    let out = trusted.ok(&["resume", "load", pack.to_str().unwrap(), "--trust"]);
    assert_eq!(out["memory_status"], json!("active"));
    let active = trusted.ok(&["memory", "list", "--status", "active"]);
    assert_eq!(
        active
            .as_array()
            .or(active["items"].as_array())
            .unwrap()
            .len(),
        3
    );
    trusted.ok(&["fsck"]);
}

#[test]
fn the_same_state_gives_the_same_pack_and_one_event() {
    let (env, run) = source();
    let dir = env.home.path();
    let a = snapshot(&env, &run, &dir.join("a"), &[]);
    let b = snapshot(&env, &run, &dir.join("b"), &[]);
    assert_eq!(a["pack_id"], b["pack_id"]);
    assert_eq!(b["replayed"], json!(true));
    for f in [
        "manifest.json",
        "working_set.yaml",
        "ledger.jsonl",
        "memory.jsonl",
        "episodes.jsonl",
    ] {
        assert_eq!(
            std::fs::read(dir.join("a").join(f)).unwrap(),
            std::fs::read(dir.join("b").join(f)).unwrap(),
            "{f}"
        );
    }
    snapshot(&env, &run, &dir.join("a.zip"), &["--zip"]);
    snapshot(&env, &run, &dir.join("b.zip"), &["--zip"]);
    assert_eq!(
        std::fs::read(dir.join("a.zip")).unwrap(),
        std::fs::read(dir.join("b.zip")).unwrap()
    );
    let log = env.ok(&["log", "--type", "RESUME_SNAPSHOT"]);
    assert_eq!(log["events"].as_array().unwrap().len(), 1, "{log}");

    // A zip loads like a folder; --ledger-since trims the events.
    let dst = Env::store();
    dst.ok(&["resume", "load", dir.join("a.zip").to_str().unwrap()]);
    let since = snapshot(&env, &run, &dir.join("since"), &["--ledger-since", "2"]);
    assert_ne!(since["pack_id"], a["pack_id"]);
    let ledger = std::fs::read_to_string(dir.join("since/ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 1, "{ledger}");

    // An existing --out is never overwritten.
    let (code, out) = env.json(&["snapshot", &run, "--out", dir.join("a").to_str().unwrap()]);
    assert_eq!(code, 4, "{out}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Changes one byte of `bytes`: an alphanumeric near the middle becomes
/// another one (a hex digit stays a hex digit); an empty file gains a line.
fn alter(bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.extend_from_slice(b"{}\n");
        return;
    }
    let start = bytes.len() / 2;
    let i = (start..bytes.len())
        .chain(0..start)
        .find(|&i| {
            bytes[i].is_ascii_hexdigit() && bytes[i].is_ascii_lowercase()
                || bytes[i].is_ascii_digit()
        })
        .unwrap();
    bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
}

#[test]
fn every_tampered_missing_or_extra_file_is_refused_by_name() {
    let (src, run) = source();
    let pack = src.home.path().join("pack");
    snapshot(&src, &run, &pack, &[]);
    let dst = Env::store();
    let mut names: Vec<String> = std::fs::read_dir(&pack)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    for name in &names {
        let bad = dst.home.path().join(format!("bad-{name}"));
        copy_dir(&pack, &bad);
        let mut bytes = std::fs::read(bad.join(name)).unwrap();
        alter(&mut bytes);
        std::fs::write(bad.join(name), &bytes).unwrap();
        let err = refused(
            &dst,
            &["resume", "load", bad.to_str().unwrap()],
            None,
            "INTEGRITY",
            8,
        );
        assert!(
            err["message"].as_str().unwrap().contains(name.as_str()),
            "{name}: {err}"
        );
    }
    // Missing and extra files.
    let bad = dst.home.path().join("missing");
    copy_dir(&pack, &bad);
    std::fs::remove_file(bad.join("memory.jsonl")).unwrap();
    let err = refused(
        &dst,
        &["resume", "load", bad.to_str().unwrap()],
        None,
        "INTEGRITY",
        8,
    );
    assert!(
        err["message"].as_str().unwrap().contains("memory.jsonl"),
        "{err}"
    );
    let bad = dst.home.path().join("extra");
    copy_dir(&pack, &bad);
    std::fs::write(bad.join("notes.txt"), "hi").unwrap();
    let err = refused(
        &dst,
        &["resume", "load", bad.to_str().unwrap()],
        None,
        "INTEGRITY",
        8,
    );
    assert!(
        err["message"].as_str().unwrap().contains("notes.txt"),
        "{err}"
    );
    // The store has no run at all.
    assert_eq!(dst.ok(&["run", "list"])["runs"], json!([]));
}

/// A zip of `entries` (name, bytes), deflated.
fn zip_of(path: &Path, entries: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        z.start_file(*name, o).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

/// The entries of a real pack, to wrap hostile ones around.
fn real_entries(pack: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(pack)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn load_refused(env: &Env, pack: &Path, needle: &str) {
    let err = refused(
        env,
        &["resume", "load", pack.to_str().unwrap()],
        None,
        "VALIDATION",
        3,
    );
    let text = err.to_string();
    assert!(text.contains(needle), "{needle}: {err}");
}

#[test]
fn hostile_packs_are_refused_before_anything_is_written() {
    let (src, run) = source();
    let pack = src.home.path().join("pack");
    snapshot(&src, &run, &pack, &[]);
    let real = real_entries(&pack);
    let dst = Env::store();
    let dir = dst.home.path();
    let with = |name: &str, extra: (&str, &[u8])| -> PathBuf {
        let p = dir.join(name);
        let mut entries: Vec<(&str, &[u8])> = real
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        entries.push(extra);
        zip_of(&p, &entries);
        p
    };
    load_refused(&dst, &with("slip.zip", ("../evil.txt", b"x")), "pack_path");
    load_refused(
        &dst,
        &with("deep-slip.zip", ("a/../../evil.txt", b"x")),
        "pack_path",
    );
    load_refused(&dst, &with("abs.zip", ("/tmp/evil.txt", b"x")), "pack_path");
    // A second memory.jsonl (the writer refuses duplicates: rename one after).
    let dup = with("dup.zip", ("memorX.jsonl", b""));
    let bytes = std::fs::read(&dup).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"memorX.jsonl") {
            out.extend_from_slice(b"memory.jsonl");
            i += 12;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    std::fs::write(&dup, out).unwrap();
    load_refused(&dst, &dup, "pack_duplicate");

    // A symlink entry in a zip, and in a folder.
    let p = dir.join("link.zip");
    {
        let f = std::fs::File::create(&p).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let o = zip::write::SimpleFileOptions::default();
        for (n, b) in &real {
            z.start_file(n.as_str(), o).unwrap();
            z.write_all(b).unwrap();
        }
        z.add_symlink("evil", "/etc/passwd", o).unwrap();
        z.finish().unwrap();
    }
    load_refused(&dst, &p, "pack_symlink");
    let linked = dir.join("linked");
    copy_dir(&pack, &linked);
    std::os::unix::fs::symlink("/etc/passwd", linked.join("evil")).unwrap();
    load_refused(&dst, &linked, "pack_symlink");
    // A fifo (a device-like entry) in a folder.
    let piped = dir.join("piped");
    copy_dir(&pack, &piped);
    let made = std::process::Command::new("mkfifo")
        .arg(piped.join("fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    load_refused(&dst, &piped, "pack_file_type");
    // A manifest naming a path outside the pack.
    let escaping = dir.join("escaping");
    copy_dir(&pack, &escaping);
    let m = std::fs::read_to_string(escaping.join("manifest.json")).unwrap();
    std::fs::write(
        escaping.join("manifest.json"),
        m.replace("\"memory.jsonl\"", "\"../memory.jsonl\""),
    )
    .unwrap();
    load_refused(&dst, &escaping, "pack_path");

    // 10,000 files: refused at the entry limit, in a folder and in a zip.
    let many = dir.join("many");
    copy_dir(&pack, &many);
    for i in 0..10_000 {
        std::fs::write(many.join(format!("f{i}")), b"").unwrap();
    }
    load_refused(&dst, &many, "pack_entries");
    let p = dir.join("many.zip");
    {
        let f = std::fs::File::create(&p).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..10_000 {
            z.start_file(format!("f{i}"), o).unwrap();
        }
        z.finish().unwrap();
    }
    load_refused(&dst, &p, "pack_entries");

    // A zip bomb declaring 1 GB.
    let bomb = dir.join("bomb.zip");
    make_bomb(&bomb, &real);
    load_refused(&dst, &bomb, "pack_too_large");
    assert_eq!(dst.ok(&["run", "list"])["runs"], json!([]));
}

/// A pack whose memory.jsonl declares 1,000,000,000 bytes inflated: 1 MiB
/// of zeros deflated, then the size fields patched (local header and
/// central directory), as a crafted bomb would declare them.
fn make_bomb(path: &Path, real: &[(String, Vec<u8>)]) {
    let zeros = vec![b'0'; 1 << 20];
    let mut entries: Vec<(&str, &[u8])> = real
        .iter()
        .filter(|(n, _)| n != "memory.jsonl")
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    entries.push(("memory.jsonl", &zeros));
    zip_of(path, &entries);
    let mut bytes = std::fs::read(path).unwrap();
    let size = (1u32 << 20).to_le_bytes();
    let declared = 1_000_000_000u32.to_le_bytes();
    let mut patched = 0;
    for i in 0..bytes.len().saturating_sub(30) {
        let local = bytes[i..i + 4] == [0x50, 0x4b, 0x03, 0x04] && bytes[i + 22..i + 26] == size;
        let central = bytes[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] && bytes[i + 24..i + 28] == size;
        if local {
            bytes[i + 22..i + 26].copy_from_slice(&declared);
            patched += 1;
        }
        if central {
            bytes[i + 24..i + 28].copy_from_slice(&declared);
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "both size fields of the bomb entry");
    std::fs::write(path, bytes).unwrap();
}

/// Runs in a child process (see below): verifies the pack named by
/// CAIRN_TEST_PACK and prints the time it took and the process's peak RSS.
#[test]
#[ignore = "a worker for zip_bomb_is_refused_fast_with_little_memory"]
fn zip_bomb_worker() {
    let Ok(pack) = std::env::var("CAIRN_TEST_PACK") else {
        return;
    };
    let t = std::time::Instant::now();
    let err = cairn::resume::read_pack(Path::new(&pack)).unwrap_err();
    let micros = t.elapsed().as_micros();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    println!("RESULT {} {micros} {hwm}", err.code());
}

#[test]
fn zip_bomb_is_refused_fast_with_little_memory() {
    let (src, run) = source();
    let pack = src.home.path().join("pack");
    snapshot(&src, &run, &pack, &[]);
    let bomb = src.home.path().join("bomb.zip");
    make_bomb(&bomb, &real_entries(&pack));
    let child = common::workers::spawn_self(
        "zip_bomb_worker",
        src.home.path(),
        &[("CAIRN_TEST_PACK", bomb.to_str().unwrap().to_string())],
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "no result: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts[0], "INVALID_INPUT");
    let micros: u64 = parts[1].parse().unwrap();
    let hwm_kb: u64 = parts[2].parse().unwrap();
    assert!(micros < 100_000, "refused in {micros} µs");
    assert!(hwm_kb < 64 * 1024, "peak RSS {hwm_kb} kB");
}

#[test]
fn a_pack_loads_back_into_its_own_store_and_into_an_existing_run() {
    let (env, run) = source();
    let pack = env.home.path().join("pack");
    snapshot(&env, &run, &pack, &[]);
    let p = pack.to_str().unwrap();
    // Into the source store: a new run; the memory is already here.
    let again = env.ok(&["resume", "load", p, "--new-run-id", "run_again"]);
    assert_eq!(again["memory_added"], json!([]));
    assert_eq!(again["memory_skipped"].as_array().unwrap().len(), 3);
    // Into an existing run: its working set becomes the pack's, at its next seq.
    let other = env.boot();
    let into = env.ok(&["resume", "load", p, "--into-run", &other]);
    assert_eq!(into["run_id"], json!(other));
    let ws = env.ok(&["ws", "show", &other]);
    assert_eq!(ws["_update_seq"], json!(1));
    assert_eq!(ws["current_stage"], json!("BUILD"));
    assert_eq!(ws["objective"], json!("Ship it"));
    // Taken twice, the same run id is refused, and nothing changes.
    refused(
        &env,
        &["resume", "load", p, "--new-run-id", "run_again"],
        None,
        "CONFLICT",
        4,
    );
    env.ok(&["fsck"]);
}
