//! The embedded schemas: the seeds' example payloads validate verbatim, each
//! schema accepts its fixture, and every schema is strict.

use cairn::schema::{self, violations, SCHEMAS};
use serde_json::{json, Value};

#[test]
fn seed_boot_body_validates_as_run_boot() {
    let body = json!({
        "objective": "Generate schemas and implement WS/RL/EP for my agent factory.",
        "acceptance_criteria": ["Schemas validate", "WS patch applies", "Ledger appends"],
        "constraints": ["No unknown WS fields", "Commit memory only at milestones"]
    });
    assert_eq!(violations("run_boot", &body), vec![]);
}

#[test]
fn seed_ws_patch_validates() {
    let body = json!({
        "patch": {
            "_schema_version": "2.1",
            "expected_seq": 0,
            "set": {
                "status": "BUSY",
                "current_stage": "PLAN",
                "next_action": "Write strict schemas for all artifacts.",
                "sliding_context": [
                    {"id": "ctx1", "content": "Use pinned+sliding contexts.", "timestamp": "2026-01-18T00:00:00Z", "priority": 2}
                ]
            }
        }
    });
    assert_eq!(violations("ws_patch", &body["patch"]), vec![]);
    let demo = json!({"_schema_version": "2.1", "expected_seq": 0, "set": {"status": "BUSY", "next_action": "Test memory"}});
    assert_eq!(violations("ws_patch", &demo), vec![]);
}

#[test]
fn seed_mcrs_validate() {
    for content in ["User prefers Python over JavaScript", "Test memory item"] {
        let mcr = json!({
            "_schema_version": "2.1",
            "op": "add",
            "type": "fact",
            "scope": "global",
            "content": content,
            "confidence": 0.9,
            "rationale": "Observed in multiple conversations",
            "source_refs": []
        });
        assert_eq!(violations("mcr", &mcr), vec![]);
    }
}

#[test]
fn seed_resume_pointers_validate() {
    let mut manifest: Value = serde_json::from_str(include_str!(
        "fixtures/schemas/valid/resume_pack_manifest.json"
    ))
    .unwrap();
    manifest["pointers"] = json!({"ledger_last_seq": 42});
    assert_eq!(violations("resume_pack_manifest", &manifest), vec![]);
}

fn fixture(name: &str) -> Option<Value> {
    let path = format!(
        "{}/tests/fixtures/schemas/valid/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap())
}

#[test]
fn every_schema_accepts_its_fixture_and_refuses_an_unknown_field() {
    for (name, _) in SCHEMAS {
        let Some(mut doc) = fixture(name) else {
            assert_eq!(*name, "run_boot", "schema {name} has no fixture");
            continue;
        };
        assert_eq!(violations(name, &doc), vec![], "fixture of {name}");
        doc["surprise"] = json!(1);
        let v = violations(name, &doc);
        assert!(
            v.iter().any(|v| v.rule == "additionalProperties"),
            "{name} must refuse unknown fields: {v:?}"
        );
    }
}

#[test]
fn every_schema_is_strict_draft_2020_12() {
    fn walk(name: &str, at: &str, v: &Value) {
        if let Value::Object(m) = v {
            if m.get("type") == Some(&json!("object")) && m.contains_key("properties") {
                assert_eq!(
                    m.get("additionalProperties"),
                    Some(&json!(false)),
                    "{name} at {at} must set additionalProperties: false"
                );
            }
            for (k, child) in m {
                walk(name, &format!("{at}/{k}"), child);
            }
        } else if let Value::Array(a) = v {
            for (i, child) in a.iter().enumerate() {
                walk(name, &format!("{at}/{i}"), child);
            }
        }
    }
    for (name, text) in SCHEMAS {
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            v["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema")
        );
        assert_eq!(
            v["$id"],
            json!(format!(
                "https://cairn.invalid/schemas/{}",
                schema::file_name(name)
            ))
        );
        walk(name, "", &v);
    }
}

#[test]
fn schema_files_on_disk_are_the_embedded_ones() {
    for (name, text) in SCHEMAS {
        let path = format!(
            "{}/schemas/{}",
            env!("CARGO_MANIFEST_DIR"),
            schema::file_name(name)
        );
        assert_eq!(&std::fs::read_to_string(path).unwrap(), text);
    }
}

#[test]
fn violations_name_pointer_and_rule() {
    let v = violations("ws_patch", &json!({"expected_seq": "zero"}));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].pointer, "/expected_seq");
    assert_eq!(v[0].rule, "type");
    let v = violations("ws_patch", &json!({}));
    assert_eq!(v[0].rule, "required");
    assert!(v[0].message.contains("expected_seq"));
}

#[test]
fn dates_are_checked() {
    let mut ws = fixture("working_set").unwrap();
    ws["created_at"] = json!("yesterday");
    let v = violations("working_set", &ws);
    assert_eq!(v[0].pointer, "/created_at");
    assert_eq!(v[0].rule, "format");
}
