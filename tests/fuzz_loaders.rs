//! Fuzzing the loaders on stable Rust (proptest as the engine): YAML/JSON
//! canonical documents, working-set patches, MCR batches, the search query
//! syntax and resume packs. Each target must never panic, hang or take more
//! than a moment on one input; where a loader accepts, what it returns must
//! be valid (a patched working set validates against its schema).
//!
//! Settings: `CAIRN_FUZZ_CASES` inputs per target (default 256, what CI
//! runs); `CAIRN_FUZZ_SECS=N` instead runs each target for N seconds with
//! fresh seeds (600 for the issue's 10 minutes); `CAIRN_FUZZ_SEED` picks the
//! first seed. A failure prints the shrunk input: add it to the regression
//! cases at the end of this file.
//!
//! The git index and pack readers are fuzzed by unit tests in
//! `src/git_index.rs` and `src/pack.rs` (their modules are private), with
//! proptest's own `PROPTEST_CASES`.

mod common;

use std::time::{Duration, Instant};

use cairn::schema::{self, ParseLimits};
use cairn::working_set;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{json, Value};

/// The longest one input may take (debug build, shared machine).
const SLOW: Duration = Duration::from_secs(5);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `check` on inputs from `strategy`: `CAIRN_FUZZ_CASES` of them, or
/// for `CAIRN_FUZZ_SECS` seconds of fresh seeds. Panics with the shrunk
/// failing input. Returns how many inputs ran.
fn fuzz<S>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let cases = env_u64("CAIRN_FUZZ_CASES").unwrap_or(256) as u32;
    let deadline = env_u64("CAIRN_FUZZ_SECS").map(|s| Instant::now() + Duration::from_secs(s));
    let mut seed = env_u64("CAIRN_FUZZ_SEED").unwrap_or(0x00c0_ffee);
    let mut ran = 0u64;
    loop {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, rng);
        let result = runner.run(&strategy, |input| {
            let started = Instant::now();
            let out = check(input);
            prop_assert!(
                started.elapsed() < SLOW,
                "one input took {:?}",
                started.elapsed()
            );
            out
        });
        ran += u64::from(cases);
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                panic!("{name} (seed {seed}): {why}\nshrunk input: {input:?}")
            }
            Err(TestError::Abort(why)) => panic!("{name} (seed {seed}): aborted: {why}"),
        }
        match deadline {
            Some(d) if Instant::now() < d => seed = seed.wrapping_add(1),
            _ => break,
        }
    }
    eprintln!("{name}: {ran} inputs, no failure");
    ran
}

/// YAML and JSON tokens, glued at random: most inputs are almost documents.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    ": ",
    "- ",
    "\n",
    "  ",
    "\t",
    "\"",
    "'",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!binary ",
    "!tag ",
    "<<: ",
    "? ",
    "|",
    ">",
    "#",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "key",
    "_schema_version",
    "expected_seq",
    "set",
    "append",
    "1",
    "-1",
    "0x1F",
    "1e400",
    "0o17",
    "null",
    "~",
    "true",
    "yes",
    "\\u0000",
    "\u{feff}",
    "é",
    "<<<<<<< ours\n",
    "=======\n",
    ">>>>>>> theirs\n",
];

fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(TOKENS), 0..80)
            .prop_map(|t| t.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..400),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z_0-9 ]{0,12}".prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-z_]{1,10}".boxed(),
                    prop::sample::select(PATCH_KEYS)
                        .prop_map(str::to_string)
                        .boxed()
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The keys of a working-set patch and its working set, so random patches
/// reach past the schema's first checks.
const PATCH_KEYS: &[&str] = &[
    "expected_seq",
    "set",
    "unset",
    "append",
    "remove",
    "sliding_context",
    "pinned_context",
    "id",
    "content",
    "priority",
    "timestamp",
    "status",
    "current_stage",
    "next_action",
    "budget",
    "max_sliding_tokens",
    "max_pinned_items",
    "open_questions",
    "decisions",
    "artifacts",
    "_schema_version",
    "patch",
];

#[test]
fn canonical_documents_parse_or_refuse_and_never_panic() {
    let limits = ParseLimits::default();
    fuzz("documents", token_soup(), |bytes| {
        if let Ok(value) = schema::parse_document("fuzz.yaml", &bytes, limits) {
            // What parses validates or is refused against every schema.
            for name in [
                "working_set",
                "ws_patch",
                "memory_item",
                "mcr_batch",
                "mcr",
                "episode",
                "store_config",
                "project_registry",
                "project_state",
                "interaction",
                "conflict_record",
                "run_boot",
                "resume_pack_manifest",
                "ledger_event",
            ] {
                let _ = schema::violations(name, &value);
            }
            prop_assert!(serde_json::to_string(&value).is_ok());
        }
        Ok(())
    });
}

#[test]
fn working_set_patches_apply_to_a_valid_working_set_or_are_refused() {
    let tmp = tempfile::TempDir::new().unwrap();
    let (store, run) =
        common::setup::booted(tmp.path(), false, common::setup::opts(), "fuzz", None);
    let ws = working_set::show(&store, &run, None).unwrap();
    let now = cairn::store::parse_rfc3339(common::setup::CLOCK).unwrap();
    let patches = prop_oneof![
        json_value(),
        (json_value(), json_value(), json_value()).prop_map(|(set, append, remove)| json!({
            "expected_seq": 0, "set": set, "append": append, "remove": remove
        })),
        (json_value(), json_value()).prop_map(|(sliding, pinned)| json!({
            "expected_seq": 0, "append": {"sliding_context": sliding, "pinned_context": pinned}
        })),
        // Mostly valid: items with random ids, contents and priorities, a
        // random budget, removals of ids that may or may not exist.
        (
            prop::collection::vec(("[a-c]{1,2}", ".{0,30}", -2i64..8), 0..6),
            prop::collection::vec("[a-c]{1,2}", 0..3),
            0u64..64,
            prop::sample::select(vec!["BUSY", "DONE", "IDLE", "busy", ""]),
        )
            .prop_map(|(items, remove, tokens, status)| {
                let items: Vec<Value> = items
                    .into_iter()
                    .map(|(id, content, priority)| json!({"id": id, "content": content, "priority": priority}))
                    .collect();
                json!({
                    "expected_seq": 0,
                    "set": {"status": status, "budget": {"max_sliding_tokens": tokens, "max_pinned_items": 4}},
                    "remove": remove,
                    "append": {"sliding_context": items.clone(), "pinned_context": items},
                })
            }),
    ];
    let accepted = std::cell::Cell::new(0u64);
    fuzz("ws patches", patches, |patch| {
        if let Ok(applied) = working_set::apply_patch(&ws, &patch, now, "fuzz") {
            accepted.set(accepted.get() + 1);
            let value = serde_json::to_value(&applied.working_set).unwrap();
            let violations = schema::violations("working_set", &value);
            prop_assert!(
                violations.is_empty(),
                "accepted {patch} made an invalid working set: {violations:?}"
            );
        }
        Ok(())
    });
    assert!(
        accepted.get() > 0,
        "no patch was accepted: the invariant was never checked"
    );
    eprintln!("ws patches: {} accepted", accepted.get());
}

#[test]
fn mcr_batches_are_read_or_refused_and_never_panic() {
    let batches = prop_oneof![
        json_value(),
        prop::collection::vec(json_value(), 0..5).prop_map(|mcrs| json!({"mcrs": mcrs})),
        prop::collection::vec(
            (json_value(), json_value()).prop_map(|(content, tags)| json!({
                "op": "add", "type": "fact", "scope": "run", "content": content,
                "confidence": 0.5, "rationale": "r", "tags": tags
            })),
            0..4
        )
        .prop_map(Value::from),
    ];
    fuzz("mcr batches", batches, |input| {
        let (mcrs, _filters) = cairn::memory::mcrs_of(&input);
        for m in &mcrs {
            let _ = schema::violations("mcr", m);
        }
        let _ = schema::violations("mcr_batch", &input);
        Ok(())
    });
}

#[test]
fn query_syntax_is_parsed_or_refused_and_never_panics() {
    let tmp = tempfile::TempDir::new().unwrap();
    let (store, _run) =
        common::setup::booted(tmp.path(), false, common::setup::opts(), "fuzz", None);
    let ranking = cairn::search::Ranking::default();
    const QUERY_TOKENS: &[&str] = &[
        "AND", "OR", "NOT", "(", ")", "\"", "*", "+", "-", ":", "type:", "tag:", "scope:", "~",
        "^2", "word", " ", "é", "\\", "[", "]", "{", "}", "TO", "content:", "id:",
    ];
    let queries = prop_oneof![
        prop::collection::vec(prop::sample::select(QUERY_TOKENS), 0..24).prop_map(|t| t.concat()),
        ".{0,60}",
    ];
    fuzz("query syntax", queries, |text| {
        let q = cairn::search::SearchQuery {
            text,
            syntax: true,
            top_k: 5,
            ..Default::default()
        };
        match cairn::search::search(&store, &q, &ranking, &|_, _| {}) {
            Ok(_) => {}
            Err(e) => prop_assert_eq!(e.category(), cairn::Category::Validation, "{:?}", e),
        }
        Ok(())
    });
}

#[test]
fn resume_packs_are_verified_or_refused_and_never_panic() {
    let tmp = tempfile::TempDir::new().unwrap();
    let (store, run) = common::setup::booted(
        &tmp.path().join("s"),
        false,
        common::setup::opts(),
        "fuzz",
        None,
    );
    let opts = cairn::resume::SnapshotOptions {
        zip: true,
        ..Default::default()
    };
    let zip = tmp.path().join("real.zip");
    cairn::resume::snapshot(&store, &run, &opts, Some(&zip), tmp.path()).unwrap();
    let real = std::fs::read(&zip).unwrap();
    let len = real.len();
    let packs = prop_oneof![
        // The real pack with bytes flipped or cut.
        (prop::collection::vec((0..len, any::<u8>()), 1..8), 0..=len).prop_map(
            move |(flips, cut)| {
                let mut b = real.clone();
                for (at, x) in flips {
                    b[at] ^= x | 1;
                }
                b.truncate(cut.max(1));
                b
            }
        ),
        prop::collection::vec(any::<u8>(), 0..600),
    ];
    let path = tmp.path().join("fuzzed.zip");
    fuzz("resume packs", packs, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = cairn::resume::read_pack(&path) {
            prop_assert!(
                matches!(
                    e.category(),
                    cairn::Category::Validation | cairn::Category::Integrity
                ),
                "{:?}",
                e
            );
        }
        Ok(())
    });
}
