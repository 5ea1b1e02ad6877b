//! Merge rules of the project registry and of trusted project state.
//!
//! The registry is a union: projects by id, each project's aliases as a set.
//! A name must mean one project, so a name two projects claim after the
//! union is settled by a rule that looks only at the names and at base.
//!
//! Trusted state is an append-only list of entries whose status retires
//! them. Entries are identified by what they say (category, key, value,
//! source, time), so the same entry on both sides is one entry and each
//! side's new entries are kept. At most one entry per key is active: if both
//! sides set a key, the later stays active and the other is kept, superseded.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::values::{canonical_json, cmp_time, field, Merger, Order, Prefer};
use super::FieldConflict;

fn items<'a>(m: Option<&'a Map<String, Value>>, key: &str) -> &'a [Value] {
    m.and_then(|m| m.get(key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Merges two versions of the project registry.
pub(super) fn merge_registry(
    prefer: Prefer,
    b: &Value,
    o: &Value,
    t: &Value,
) -> (Value, Vec<FieldConflict>) {
    let (bm, om, tm) = (b.as_object(), o.as_object(), t.as_object());
    let mut m = Merger::new(prefer);
    let empty = Map::new();
    let mut out = m.object(
        "",
        bm,
        om.unwrap_or(&empty),
        tm.unwrap_or(&empty),
        &["projects"],
    );
    let mut projects = m.keyed(
        "/projects",
        items(bm, "projects"),
        items(om, "projects"),
        items(tm, "projects"),
        &|p| str_of(p, "id").to_string(),
        Order::ByKey,
        &mut |m, at, b, o, t| {
            if let Some(done) = super::values::settled(b, o, t) {
                return done;
            }
            match (o.and_then(Value::as_object), t.and_then(Value::as_object)) {
                (Some(op), Some(tp)) => {
                    let bp = b.and_then(Value::as_object);
                    let mut p = m.object(at, bp, op, tp, &["aliases"]);
                    let aliases = m.set(
                        &format!("{at}/aliases"),
                        bp.and_then(|p| p.get("aliases")),
                        op.get("aliases"),
                        tp.get("aliases"),
                    );
                    p.insert("aliases".into(), aliases.unwrap_or(Value::Array(vec![])));
                    Some(Value::Object(p))
                }
                _ => m.value(at, b, o, t),
            }
        },
    );
    settle_names(&mut m, &mut projects, [b, o, t]);
    out.insert("projects".into(), Value::Array(projects));
    (Value::Object(out), m.conflicts)
}

/// The projects (sorted ids) that claim `name` (an id or alias, any case).
fn claimants(registry: &Value, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .get("projects")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|p| {
            str_of(p, "id").eq_ignore_ascii_case(name)
                || p.get("aliases").and_then(Value::as_array).is_some_and(|a| {
                    a.iter()
                        .any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(name)))
                })
        })
        .map(|p| str_of(p, "id").to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Gives every name claimed by more than one project to one of them.
fn settle_names(m: &mut Merger, projects: &mut [Value], [b, o, t]: [&Value; 3]) {
    // name (lower case) -> claiming project indices, and whether by id.
    let mut claims: BTreeMap<String, Vec<(usize, bool)>> = BTreeMap::new();
    for (i, p) in projects.iter().enumerate() {
        claims
            .entry(str_of(p, "id").to_lowercase())
            .or_default()
            .push((i, true));
        for a in p
            .get("aliases")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let a = a.as_str().unwrap_or_default().to_lowercase();
            let list = claims.entry(a).or_default();
            if !list.iter().any(|(j, _)| *j == i) {
                list.push((i, false));
            }
        }
    }
    for (name, list) in claims {
        if list.len() < 2 {
            continue;
        }
        let in_base = claimants(b, &name);
        let ids_now: Vec<String> = projects
            .iter()
            .map(|p| str_of(p, "id").to_string())
            .collect();
        let id_of = |i: usize| ids_now[i].clone();
        let winner = list
            .iter()
            .find(|(_, by_id)| *by_id)
            .or_else(|| list.iter().find(|(i, _)| in_base.contains(&id_of(*i))))
            .or_else(|| list.iter().min_by_key(|(i, _)| id_of(*i)))
            .map(|(i, _)| *i)
            .expect("a name with claims has a claimant");
        for &(i, by_id) in &list {
            if i != winner && !by_id {
                if let Some(Value::Array(aliases)) = projects[i].get_mut("aliases") {
                    aliases.retain(|a| !a.as_str().is_some_and(|a| a.eq_ignore_ascii_case(&name)));
                }
            }
        }
        let pointer = projects[winner]
            .get("aliases")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .position(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(&name)))
            })
            .map_or(format!("/projects/{winner}/id"), |k| {
                format!("/projects/{winner}/aliases/{k}")
            });
        let ids = |v: &Value| {
            let c = claimants(v, &name);
            (!c.is_empty()).then(|| Value::from(c))
        };
        let kept = Value::String(id_of(winner));
        m.record(
            &pointer,
            "alias_claimed_twice",
            ids(b).as_ref(),
            ids(o).as_ref(),
            ids(t).as_ref(),
            Some(&kept),
        );
    }
}

fn state_rank(status: &str) -> Option<u8> {
    match status {
        "active" => Some(0),
        "superseded" => Some(1),
        "invalid" => Some(2),
        _ => None,
    }
}

/// What identifies a state entry: everything but its retirement.
fn entry_identity(entry: &Value) -> String {
    let mut e = entry.clone();
    if let Some(m) = e.as_object_mut() {
        m.remove("status");
        m.remove("superseded_at");
    }
    canonical_json(&e)
}

/// Merges two versions of a project's trusted state.
pub(super) fn merge_state(
    prefer: Prefer,
    b: &Value,
    o: &Value,
    t: &Value,
) -> (Value, Vec<FieldConflict>) {
    let (bm, om, tm) = (b.as_object(), o.as_object(), t.as_object());
    let mut m = Merger::new(prefer);
    let empty = Map::new();
    let mut out = m.object(
        "",
        bm,
        om.unwrap_or(&empty),
        tm.unwrap_or(&empty),
        &["entries"],
    );
    let sort_key = |e: &Value| format!("{}\u{0}{}", str_of(e, "updated_at"), canonical_json(e));
    let mut entries = m.keyed(
        "/entries",
        items(bm, "entries"),
        items(om, "entries"),
        items(tm, "entries"),
        &entry_identity,
        Order::BaseThenAdded(&sort_key),
        &mut |m, at, b, o, t| {
            if let Some(done) = super::values::settled(b, o, t) {
                return done;
            }
            match (o.and_then(Value::as_object), t.and_then(Value::as_object)) {
                (Some(oe), Some(te)) => {
                    let be = b.and_then(Value::as_object);
                    let mut e = m.object(at, be, oe, te, &["status", "superseded_at"]);
                    let status = m.ranked(
                        &format!("{at}/status"),
                        "status_precedence",
                        state_rank,
                        field(be, "status"),
                        oe.get("status"),
                        te.get("status"),
                    );
                    let retired = m.latest(
                        &format!("{at}/superseded_at"),
                        field(be, "superseded_at"),
                        oe.get("superseded_at"),
                        te.get("superseded_at"),
                    );
                    if let Some(s) = status {
                        e.insert("status".into(), s);
                    }
                    if let Some(r) = retired {
                        e.insert("superseded_at".into(), r);
                    }
                    Some(Value::Object(e))
                }
                _ => m.value(at, b, o, t),
            }
        },
    );
    one_active_per_key(&mut m, &mut entries, [b, o, t]);
    out.insert("entries".into(), Value::Array(entries));
    (Value::Object(out), m.conflicts)
}

/// The value of the latest active entry for a key in one version.
fn active_value(state: &Value, category: &str, key: &str) -> Option<Value> {
    state
        .get("entries")
        .and_then(Value::as_array)?
        .iter()
        .filter(|e| {
            str_of(e, "status") == "active"
                && str_of(e, "category") == category
                && str_of(e, "key") == key
        })
        .max_by(|x, y| later(x, y))
        .and_then(|e| e.get("value").cloned())
}

/// Orders entries by `updated_at`, then by canonical JSON.
fn later(x: &Value, y: &Value) -> Ordering {
    cmp_time(str_of(x, "updated_at"), str_of(y, "updated_at"))
        .then_with(|| canonical_json(x).cmp(&canonical_json(y)))
}

/// Keeps one active entry per (category, key): the later; the others are
/// superseded by it (and stay in the file).
fn one_active_per_key(m: &mut Merger, entries: &mut [Value], [b, o, t]: [&Value; 3]) {
    let mut active: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if str_of(e, "status") == "active" {
            active
                .entry((str_of(e, "category").into(), str_of(e, "key").into()))
                .or_default()
                .push(i);
        }
    }
    for ((category, key), list) in active {
        if list.len() < 2 {
            continue;
        }
        let winner = *list
            .iter()
            .max_by(|&&x, &&y| later(&entries[x], &entries[y]))
            .expect("at least two");
        let won_at = entries[winner]["updated_at"].clone();
        let value = entries[winner]["value"].clone();
        let mut differs = false;
        for &i in &list {
            if i != winner {
                differs |= entries[i]["value"] != value;
                entries[i]["status"] = Value::String("superseded".into());
                entries[i]["superseded_at"] = won_at.clone();
            }
        }
        if differs {
            m.record(
                &format!("/entries/{winner}/value"),
                "state_key_set_twice",
                active_value(b, &category, &key).as_ref(),
                active_value(o, &category, &key).as_ref(),
                active_value(t, &category, &key).as_ref(),
                Some(&value),
            );
        }
    }
}
