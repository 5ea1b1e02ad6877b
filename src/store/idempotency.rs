//! Idempotency keys: a retried write with the same key returns the first result.
//!
//! The truth is the `Cairn-Idempotency-Key` trailer in history. A local,
//! disposable cache (`.cairn/idempotency`) maps keys to commits and records
//! the last commit it scanned, so a lookup only reads the commits made since
//! (under the store lock). A missing, torn or foreign cache is rebuilt from history.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;

use git2::Oid;

use super::Store;
use crate::error::{Error, Result};
use crate::event::parse_message;

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
    }
    Ok(keys.get(key).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_fit_one_trailer_line() {
        assert!(check_key("step-1").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\nCairn-Event: STORE_INIT").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
