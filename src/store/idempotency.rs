//! Idempotency keys: a retried write with the same key returns the first result.
//!
//! The truth is the `Cairn-Idempotency-Key` trailer in history. A local,
//! disposable cache (`.cairn/idempotency`) maps keys to commits and records
//! the last commit it scanned, so a lookup only reads the commits made since
//! (under the store lock). A missing, torn or foreign cache is rebuilt from history.
//!
//! A key names one request. The commit that first carries a key also carries
//! the digest of the request it was given for (`Cairn-Request-Digest`, see
//! [`Keyed`]); a later write with the same key and the same digest replays
//! that commit, one with the same key and a different digest is refused
//! (CONFLICT, `IDEMPOTENCY_KEY_REUSED`, naming the key) and writes nothing.
//! Commits made before digests were recorded carry none and replay as before.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;

use git2::Oid;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Store;
use crate::error::{Error, Result};
use crate::event::parse_message;

/// The trailer that records the digest of the request a key was first used for.
pub const DIGEST_TRAILER: &str = "Cairn-Request-Digest";

/// The rule of the CONFLICT a reused key gets.
pub const KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";

/// An idempotency key and the digest of the request it is given with.
///
/// The digest covers the operation's name and the inputs that decide what it
/// writes (not the file names used in messages, not the clock), as canonical
/// JSON (object keys sorted), so the same request sent as YAML or as JSON, by
/// the CLI or over HTTP, digests the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    /// The caller's key.
    pub key: String,
    /// Hex SHA-256 of the canonical request.
    pub digest: String,
}

impl Keyed {
    /// The key `key` for the operation `op` with the inputs `parts`.
    pub fn new(key: &str, op: &str, parts: &[Value]) -> Keyed {
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(Value::String(op.to_string()));
        all.extend(parts.iter().map(canonical));
        let bytes = serde_json::to_vec(&Value::Array(all)).expect("JSON values serialize");
        let digest = bytes_digest(&bytes);
        Keyed {
            key: key.to_string(),
            digest,
        }
    }
}

/// [`Keyed::new`] when there is a key; `parts` is only called then.
pub fn keyed(key: Option<&str>, op: &str, parts: impl FnOnce() -> Vec<Value>) -> Option<Keyed> {
    key.map(|k| Keyed::new(k, op, &parts()))
}

/// A digest of raw bytes, for requests that carry a file's content.
pub fn bytes_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `value` with every object's keys in sorted order.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Refuses `keyed` when `commit`, the first commit to carry its key, was
/// made for a different request (its digest trailer differs). A commit
/// without a digest (made before digests were recorded) is accepted.
pub fn check_same_request(store: &Store, keyed: &Keyed, commit: Oid) -> Result<()> {
    let info = store.commit_info(commit)?;
    match parse_message(&info.message).trailer(DIGEST_TRAILER) {
        Some(d) if d != keyed.digest => Err(Error::Conflict {
            subject: format!("idempotency key {:?}", keyed.key),
            rule: KEY_REUSED,
            message: format!(
                "the key was first used by commit {commit} for a different request; a key names one request: retry that request unchanged, or use a new key for a new one"
            ),
        }),
        _ => Ok(()),
    }
}

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 200;

/// Checks that a key fits in one trailer line.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(Error::Invalid {
            file: "--idempotency-key".into(),
            pointer: String::new(),
            rule: "idempotency_key",
            message: format!("an idempotency key is 1 to {MAX_KEY_LEN} printable characters"),
        });
    }
    Ok(())
}

/// The commit that first carried `key`, if any. Call with the store lock held.
pub fn lookup(store: &Store, key: &str) -> Result<Option<Oid>> {
    check_key(key)?;
    let Some(tip) = store.tip()? else {
        return Ok(None);
    };
    let path = store.local_dir().join("idempotency");
    let mut keys: HashMap<String, Oid> = HashMap::new();
    let mut scanned: Option<Oid> = None;
    if let Ok(text) = fs::read_to_string(&path) {
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("S"), Some(id), None) => scanned = Oid::from_str(id).ok(),
                (Some("K"), Some(id), Some(k)) => {
                    if let Ok(id) = Oid::from_str(id) {
                        keys.entry(k.to_string()).or_insert(id);
                    }
                }
                _ => {}
            }
        }
    }
    let valid_base = match scanned {
        Some(s) => store.repo_has(s) && store.is_ancestor(s, tip)?,
        None => false,
    };
    if scanned != Some(tip) {
        let mut append = String::new();
        if !valid_base {
            keys.clear();
            scanned = None;
        }
        // Newest first: remember each key's oldest commit among the new ones.
        let mut found: Vec<(String, Oid)> = Vec::new();
        for id in store.history(tip, scanned)? {
            let info = store.commit_info(id)?;
            if let Some(k) = parse_message(&info.message).trailer("Cairn-Idempotency-Key") {
                found.push((k.to_string(), id));
            }
        }
        for (k, id) in found.into_iter().rev() {
            if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(k) {
                append.push_str(&format!("K {id} {}\n", slot.key()));
                slot.insert(id);
            }
        }
        append.push_str(&format!("S {tip}\n"));
        crate::failpoint::failpoint!("idempotency::cache_write");
        let mut file = if valid_base {
            OpenOptions::new().append(true).create(true).open(&path)
        } else {
            fs::create_dir_all(store.local_dir())
                .map_err(|e| Error::io("create", store.local_dir(), e))?;
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .create(true)
                .open(&path)
        }
        .map_err(|e| Error::io("open", &path, e))?;
        file.write_all(append.as_bytes())
            .map_err(|e| Error::io("write", &path, e))?;
        crate::failpoint::trace::write(&path);
    }
    Ok(keys.get(key).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_ignore_key_order_and_tell_requests_apart() {
        let a = Keyed::new(
            "k",
            "ws.patch",
            &[serde_json::json!({"a": 1, "b": [1, {"y": 2, "x": 3}]})],
        );
        let b = Keyed::new(
            "k",
            "ws.patch",
            &[serde_json::json!({"b": [1, {"x": 3, "y": 2}], "a": 1})],
        );
        assert_eq!(a, b);
        let c = Keyed::new(
            "k",
            "ws.patch",
            &[serde_json::json!({"a": 2, "b": [1, {"x": 3, "y": 2}]})],
        );
        assert_ne!(a.digest, c.digest);
        let d = Keyed::new(
            "k",
            "memory.edit",
            &[serde_json::json!({"a": 1, "b": [1, {"y": 2, "x": 3}]})],
        );
        assert_ne!(a.digest, d.digest);
    }

    #[test]
    fn keys_must_fit_one_trailer_line() {
        assert!(check_key("step-1").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\nCairn-Event: STORE_INIT").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
