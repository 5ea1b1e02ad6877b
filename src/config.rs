//! The store configuration, `cairn.yaml`.
//!
//! Every section and setting is optional: what is absent takes the default
//! documented in the `store_config` schema, so a store made by an older cairn
//! keeps working. The file is read from the branch tip, never the work tree.

use serde::{Deserialize, Serialize};

/// The parsed `cairn.yaml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StoreConfig {
    /// Token budgets and caps.
    pub budgets: Budgets,
    /// Size, nesting and lock limits.
    pub limits: Limits,
}

/// Token budgets and context caps for new working sets and briefs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Budgets {
    /// Token budget of a run's sliding context.
    pub max_sliding_tokens: u64,
    /// Most pinned context items a working set may hold.
    pub max_pinned_items: u64,
    /// Token budget of the brief.
    pub brief_tokens: u64,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_sliding_tokens: 4000,
            max_pinned_items: 32,
            brief_tokens: 6000,
        }
    }
}

/// Limits on input and on the store lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Limits {
    /// Largest canonical file, in bytes.
    pub max_file_bytes: u64,
    /// Largest input document (a patch, a batch), in bytes.
    pub max_input_bytes: u64,
    /// Deepest nesting of a document.
    pub max_depth: usize,
    /// How long a writer waits for the store lock, in milliseconds.
    pub lock_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 1024 * 1024,
            max_input_bytes: 8 * 1024 * 1024,
            max_depth: 32,
            lock_timeout_ms: 10_000,
        }
    }
}

impl StoreConfig {
    /// The YAML `cairn init` writes: every default spelled out.
    pub fn initial_yaml() -> String {
        let d = StoreConfig::default();
        format!(
            "_schema_version: \"2.1\"\n\
             budgets:\n  max_sliding_tokens: {}\n  max_pinned_items: {}\n  brief_tokens: {}\n\
             eviction:\n  order: priority,timestamp,id\n\
             scope_weights:\n  global: 1.0\n  user: 1.1\n  org: 1.0\n  project: 1.2\n  run: 1.3\n\
             search:\n  recency_half_life_days: 90\n  confidence_weight: 0.3\n\
             limits:\n  max_file_bytes: {}\n  max_input_bytes: {}\n  max_depth: {}\n  lock_timeout_ms: {}\n\
             mirror:\n  enabled: true\n  tracked: true\n",
            d.budgets.max_sliding_tokens,
            d.budgets.max_pinned_items,
            d.budgets.brief_tokens,
            d.limits.max_file_bytes,
            d.limits.max_input_bytes,
            d.limits.max_depth,
            d.limits.lock_timeout_ms,
        )
    }

    /// The limits for parsing input documents.
    pub fn parse_limits(&self) -> crate::schema::ParseLimits {
        crate::schema::ParseLimits {
            max_bytes: self.limits.max_input_bytes,
            max_depth: self.limits.max_depth,
        }
    }

    /// Builds the typed config from the validated JSON value of `cairn.yaml`.
    pub fn from_value(value: serde_json::Value) -> Self {
        // Unknown sections are owned by later features; only what is typed
        // here is read. The schema has already vetted every field.
        #[derive(Deserialize)]
        struct Sections {
            #[serde(default)]
            budgets: Option<Budgets>,
            #[serde(default)]
            limits: Option<Limits>,
        }
        let sections: Sections = serde_json::from_value(value).unwrap_or(Sections {
            budgets: None,
            limits: None,
        });
        StoreConfig {
            budgets: sections.budgets.unwrap_or_default(),
            limits: sections.limits.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_config_is_valid_and_reads_back_as_the_defaults() {
        let text = StoreConfig::initial_yaml();
        let value =
            crate::schema::parse_document("cairn.yaml", text.as_bytes(), Default::default())
                .unwrap();
        assert_eq!(crate::schema::violations("store_config", &value), vec![]);
        assert_eq!(StoreConfig::from_value(value), StoreConfig::default());
    }

    #[test]
    fn absent_sections_take_defaults() {
        let c = StoreConfig::from_value(
            serde_json::json!({"_schema_version": "2.1", "limits": {"max_depth": 8}}),
        );
        assert_eq!(c.limits.max_depth, 8);
        assert_eq!(c.limits.lock_timeout_ms, 10_000);
        assert_eq!(c.budgets, Budgets::default());
    }
}
