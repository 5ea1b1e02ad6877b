//! Regression tests for issue 23, a newcomer's first hour: errors keep the
//! `--json` envelope whatever failed (usage errors included), identities
//! follow git's rules, messages carry no Rust debug text, and canonical
//! files cannot be deleted by hand behind cairn's back.

mod common;

use common::cli::Env;
use serde_json::{json, Value};

/// Runs cairn with exactly `args` (no `--store`), returns (exit code, stdout, stderr).
fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The USAGE envelope a usage error must print under `--json`.
fn usage_envelope(env: &Env, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(env, args);
    let out: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a JSON envelope ({e}): {stdout}\nstderr: {stderr}"));
    assert_eq!(code, 2, "{out}");
    assert_eq!(out["ok"], json!(false), "{out}");
    assert_eq!(out["error"]["category"], json!("USAGE"), "{out}");
    assert_eq!(out["error"]["code"], json!("USAGE"), "{out}");
    assert!(stderr.is_empty(), "clap's text leaked to stderr: {stderr}");
    out["error"].clone()
}

#[test]
fn issue_23_usage_errors_keep_the_json_envelope() {
    let env = Env::store();
    let root = env.root();
    let store = root.to_str().unwrap();

    let err = usage_envelope(&env, &["bogus", "--json"]);
    assert!(
        err["message"].as_str().unwrap().contains("'bogus'"),
        "{err}"
    );
    assert!(err["details"]["usage"]
        .as_str()
        .unwrap()
        .contains("Usage: cairn"));

    // A missing positional, the flag before or after the subcommand.
    for args in [
        vec!["--store", store, "ws", "patch", "--json"],
        vec!["--json", "--store", store, "ws", "patch"],
    ] {
        let err = usage_envelope(&env, &args);
        let message = err["message"].as_str().unwrap();
        assert!(message.contains("<RUN>"), "{err}");
    }

    // A missing subcommand is a failure too.
    let err = usage_envelope(&env, &["ws", "--json"]);
    assert!(err["details"]["usage"].as_str().unwrap().contains("patch"));

    // An invalid value.
    let err = usage_envelope(&env, &["--json", "log", "--limit", "many"]);
    assert!(err["message"].as_str().unwrap().contains("many"), "{err}");
}

#[test]
fn issue_23_without_json_usage_errors_are_clap_text() {
    let env = Env::store();
    let (code, stdout, stderr) = run(&env, &["bogus"]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("unrecognized subcommand 'bogus'"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: cairn"), "{stderr}");

    // `--json` after `--` is a value, not the flag.
    let (code, stdout, _) = run(&env, &["bogus", "--", "--json"]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");

    // Help is not a failure, with or without --json.
    for args in [vec!["--help"], vec!["ws", "--help", "--json"]] {
        let (code, stdout, _) = run(&env, &args);
        assert_eq!(code, 0);
        assert!(stdout.contains("Usage: cairn"), "{stdout}");
    }
}
