//! The generic three-way merge of JSON values that every kind builds on.
//!
//! Invariant: nothing here depends on which side is called "ours". Every
//! choice between the two sides goes through [`Prefer`], whose rule is fixed
//! per file from the documents' own content, and every ordering of keys or
//! list items is a function of the three inputs as a set of sides: base order
//! first, then what either side added, sorted.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::FieldConflict;
use crate::event::parse_rfc3339;

/// Which side keeps a field both sides changed to different values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prefer {
    /// Ours is the later document (by the kind's clock field).
    Ours,
    /// Theirs is the later document.
    Theirs,
    /// Neither is later: the greater value by canonical JSON wins, field by field.
    Greater,
}

impl Prefer {
    /// The rule for an ordering of ours against theirs (`Greater`: ours is later).
    pub(super) fn from_ordering(ord: Ordering) -> Prefer {
        match ord {
            Ordering::Greater => Prefer::Ours,
            Ordering::Less => Prefer::Theirs,
            Ordering::Equal => Prefer::Greater,
        }
    }

    /// The rule from a timestamp field both documents may carry.
    pub(super) fn by_time(o: &Value, t: &Value, field: &str) -> Prefer {
        match (
            o.get(field).and_then(Value::as_str),
            t.get(field).and_then(Value::as_str),
        ) {
            (Some(a), Some(b)) => Prefer::from_ordering(cmp_time(a, b)),
            _ => Prefer::Greater,
        }
    }

    /// The value kept of two different ones. A value always beats absence or
    /// null (a change beats a deletion: nothing is dropped to a tie-break).
    pub(super) fn pick<'a>(self, o: Option<&'a Value>, t: Option<&'a Value>) -> Option<&'a Value> {
        match (present(o), present(t)) {
            (true, false) => return o,
            (false, true) => return t,
            _ => {}
        }
        match self {
            Prefer::Ours => o,
            Prefer::Theirs => t,
            Prefer::Greater => {
                if cmp_canonical(o, t) == Ordering::Less {
                    t
                } else {
                    o
                }
            }
        }
    }
}

/// Whether a field holds something (not absent, not null).
pub(super) fn present(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null))
}

/// A value as JSON with object keys sorted: equal values give equal text.
pub(super) fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Orders two optional values by canonical JSON; absence is the least.
pub(super) fn cmp_canonical(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => canonical_json(a).cmp(&canonical_json(b)),
    }
}

/// Orders RFC 3339 timestamps by instant (then by text); text that does not
/// parse orders by text.
pub(super) fn cmp_time(a: &str, b: &str) -> Ordering {
    match (parse_rfc3339(a), parse_rfc3339(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

/// A field of an object that may be missing.
pub(super) fn field<'a>(m: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    m.and_then(|m| m.get(key))
}

/// Escapes a key for a JSON pointer.
pub(super) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The result of the trivial three-way cases, when at most one side changed
/// (or both made the same change). Two equal objects are not settled here,
/// so that their key order comes from the symmetric object merge.
pub(super) fn settled(
    b: Option<&Value>,
    o: Option<&Value>,
    t: Option<&Value>,
) -> Option<Option<Value>> {
    if o == t {
        return match o {
            Some(Value::Object(_)) => None,
            _ => Some(o.cloned()),
        };
    }
    if o == b {
        return Some(t.cloned());
    }
    if t == b {
        return Some(o.cloned());
    }
    None
}

/// How [`Merger::keyed`] merges one item: (merger, pointer, base, ours, theirs).
pub(super) type ItemMerge<'f> = dyn FnMut(&mut Merger, &str, Option<&Value>, Option<&Value>, Option<&Value>) -> Option<Value>
    + 'f;

/// How a keyed list orders its merged items.
pub(super) enum Order<'f> {
    /// Base order for what base had, then additions by this sort key
    /// (the lesser of the two sides' keys when both added the item).
    BaseThenAdded(&'f dyn Fn(&Value) -> String),
    /// Every item by its identity key.
    ByKey,
}

/// A merge in progress: the tie-break rule and the conflicts found so far.
pub(super) struct Merger {
    pub(super) prefer: Prefer,
    pub(super) conflicts: Vec<FieldConflict>,
}

impl Merger {
    pub(super) fn new(prefer: Prefer) -> Merger {
        Merger {
            prefer,
            conflicts: Vec::new(),
        }
    }

    /// Records a conflict.
    pub(super) fn record(
        &mut self,
        pointer: &str,
        rule: &'static str,
        b: Option<&Value>,
        o: Option<&Value>,
        t: Option<&Value>,
        kept: Option<&Value>,
    ) {
        self.conflicts.push(FieldConflict {
            pointer: pointer.to_string(),
            rule,
            base: b.cloned(),
            ours: o.cloned(),
            theirs: t.cloned(),
            kept: kept.cloned(),
        });
    }

    /// Both sides changed a field to different values: keep one by the
    /// [`Prefer`] rule and record the conflict.
    pub(super) fn clash(
        &mut self,
        pointer: &str,
        b: Option<&Value>,
        o: Option<&Value>,
        t: Option<&Value>,
    ) -> Option<Value> {
        let kept = self.prefer.pick(o, t);
        let rule = if present(o) && present(t) {
            "both_changed"
        } else {
            "delete_vs_modify"
        };
        self.record(pointer, rule, b, o, t, kept);
        kept.cloned()
    }

    /// The generic rule: objects merge key by key, anything else is one value.
    pub(super) fn value(
        &mut self,
        pointer: &str,
        b: Option<&Value>,
        o: Option<&Value>,
        t: Option<&Value>,
    ) -> Option<Value> {
        if let Some(done) = settled(b, o, t) {
            return done;
        }
        if let (Some(Value::Object(om)), Some(Value::Object(tm))) = (o, t) {
            let bm = b.and_then(Value::as_object);
            return Some(Value::Object(self.object(pointer, bm, om, tm, &[])));
        }
        self.clash(pointer, b, o, t)
    }

    /// Merges two objects key by key, leaving out the keys in `skip` (the
    /// caller's special fields). Keys: base order, then added keys sorted.
    pub(super) fn object(
        &mut self,
        pointer: &str,
        b: Option<&Map<String, Value>>,
        o: &Map<String, Value>,
        t: &Map<String, Value>,
        skip: &[&str],
    ) -> Map<String, Value> {
        let empty = Map::new();
        let b = b.unwrap_or(&empty);
        let mut out = Map::new();
        for key in ordered_keys(b, o, t) {
            if skip.contains(&key.as_str()) {
                continue;
            }
            let at = format!("{pointer}/{}", escape(&key));
            if let Some(v) = self.value(&at, b.get(&key), o.get(&key), t.get(&key)) {
                out.insert(key, v);
            }
        }
        out
    }

    /// A field that is a set (an array of distinct values): what base had
    /// stays unless a side removed it, and what either side added is added.
    pub(super) fn set(
        &mut self,
        pointer: &str,
        b: Option<&Value>,
        o: Option<&Value>,
        t: Option<&Value>,
    ) -> Option<Value> {
        if let Some(done) = settled(b, o, t) {
            return done;
        }
        let as_items = |v: Option<&Value>| -> Option<Vec<Value>> {
            match v {
                None | Some(Value::Null) => Some(Vec::new()),
                Some(Value::Array(a)) => Some(a.clone()),
                Some(_) => None,
            }
        };
        match (as_items(b), as_items(o), as_items(t)) {
            (Some(b), Some(o), Some(t)) => Some(Value::Array(set_union(&b, &o, &t))),
            _ => self.clash(pointer, b, o, t),
        }
    }

    /// A field whose values rank (a lifecycle status): when both sides
    /// changed it differently the higher rank is kept and the conflict is
    /// recorded under `rule`.
    pub(super) fn ranked(
        &mut self,
        pointer: &str,
        rule: &'static str,
        rank: fn(&str) -> Option<u8>,
        b: Option<&Value>,
        o: Option<&Value>,
        t: Option<&Value>,
    ) -> Option<Value> {
        if let Some(done) = settled(b, o, t) {
            return done;
        }
        let r = |v: Option<&Value>| v.and_then(Value::as_str).and_then(rank);
        match (r(o), r(t)) {
            (Some(x), Some(y)) if x != y => {
                let kept = if x > y { o } else { t };
                self.record(pointer, rule, b, o, t, kept);
                kept.cloned()
            }
            _ => self.clash(pointer, b, o, t),
        }
    }

    /// A timestamp that only moves forward (`updated_at`): the later one.
    pub(super) fn latest(
        &mut self,
        pointer: &str,
        b: Option<&Value>,
        o: Option<&Value>,
        t: Option<&Value>,
    ) -> Option<Value> {
        if let Some(done) = settled(b, o, t) {
            return done;
        }
        match (o.and_then(Value::as_str), t.and_then(Value::as_str)) {
            (Some(x), Some(y)) => Some(Value::String(
                if cmp_time(x, y) == Ordering::Less {
                    y
                } else {
                    x
                }
                .to_string(),
            )),
            _ => self.clash(pointer, b, o, t),
        }
    }

    /// A list of objects identified by `key` (context items by id, projects
    /// by id, state entries by their content): items merge one by one with
    /// `item`, an item one side removed and the other left alone is removed,
    /// and items either side added are added. Repeated keys within one side
    /// are told apart by their occurrence, so none is dropped.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keyed(
        &mut self,
        pointer: &str,
        b: &[Value],
        o: &[Value],
        t: &[Value],
        key: &dyn Fn(&Value) -> String,
        order: Order<'_>,
        item: &mut ItemMerge<'_>,
    ) -> Vec<Value> {
        let index = |items: &[Value]| -> (Vec<String>, HashMap<String, Value>) {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut keys = Vec::new();
            let mut map = HashMap::new();
            for v in items {
                let k = key(v);
                let n = seen.entry(k.clone()).or_default();
                let full = format!("{k}\u{0}{n}");
                *n += 1;
                keys.push(full.clone());
                map.insert(full, v.clone());
            }
            (keys, map)
        };
        let (b_keys, bm) = index(b);
        let (o_keys, om) = index(o);
        let (t_keys, tm) = index(t);
        // Added keys with their sort key, each once.
        let mut added: BTreeMap<String, String> = BTreeMap::new();
        for k in o_keys.iter().chain(t_keys.iter()) {
            if bm.contains_key(k) || added.contains_key(k) {
                continue;
            }
            let sort = match &order {
                Order::BaseThenAdded(sort_key) => {
                    let of = |m: &HashMap<String, Value>| m.get(k).map(sort_key);
                    match (of(&om), of(&tm)) {
                        (Some(x), Some(y)) => x.min(y),
                        (x, y) => x.or(y).unwrap_or_default(),
                    }
                }
                Order::ByKey => String::new(),
            };
            added.insert(k.clone(), sort);
        }
        let mut added: Vec<(String, String)> = added.into_iter().map(|(k, s)| (s, k)).collect();
        added.sort();
        let mut keys = b_keys;
        keys.extend(added.into_iter().map(|(_, k)| k));
        if matches!(order, Order::ByKey) {
            keys.sort();
        }
        let mut out = Vec::new();
        for k in keys {
            let at = format!("{pointer}/{}", out.len());
            if let Some(v) = item(self, &at, bm.get(&k), om.get(&k), tm.get(&k)) {
                out.push(v);
            }
        }
        out
    }
}

/// Keys of a merged object: base's in base order, then the added ones sorted.
fn ordered_keys(
    b: &Map<String, Value>,
    o: &Map<String, Value>,
    t: &Map<String, Value>,
) -> Vec<String> {
    let mut keys: Vec<String> = b.keys().cloned().collect();
    let mut added: Vec<String> = o
        .keys()
        .chain(t.keys())
        .filter(|k| !b.contains_key(*k))
        .cloned()
        .collect();
    added.sort();
    added.dedup();
    keys.extend(added);
    keys
}

/// Three-way set merge: base's values a side removed are gone, values a
/// side added are added; base order first, then additions sorted.
pub(super) fn set_union(b: &[Value], o: &[Value], t: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in b {
        if o.contains(v) && t.contains(v) && !out.contains(v) {
            out.push(v.clone());
        }
    }
    let mut added: Vec<(String, Value)> = o
        .iter()
        .chain(t.iter())
        .filter(|v| !b.contains(v))
        .map(|v| (canonical_json(v), v.clone()))
        .collect();
    added.sort_by(|x, y| x.0.cmp(&y.0));
    added.dedup_by(|x, y| x.0 == y.0);
    out.extend(added.into_iter().map(|(_, v)| v));
    out
}
