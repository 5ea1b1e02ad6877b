//! The store configuration, `cairn.yaml`.
//!
//! Every section and setting is optional: what is absent takes the default
//! documented in the `store_config` schema, so a store made by an older cairn
//! keeps working. The file is read from the branch tip, never the work tree.

use serde::{Deserialize, Serialize};

/// The parsed `cairn.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StoreConfig {
    /// Token budgets and caps.
    pub budgets: Budgets,
    /// Size, nesting and lock limits.
    pub limits: Limits,
    /// Search ranking.
    pub search: SearchConfig,
    /// Ranking multiplier per scope.
    pub scope_weights: std::collections::BTreeMap<String, f64>,
    /// The generated markdown mirror.
    pub mirror: MirrorConfig,
}

/// Mirror settings (`mirror:` in cairn.yaml).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MirrorConfig {
    /// Generate the mirror at all.
    pub enabled: bool,
    /// Commit the pages with the canonical files (else they live in the
    /// work tree only and `mirror/` is git-ignored).
    pub tracked: bool,
    /// Most memory items on one memory page before the page is split.
    pub max_page_items: usize,
    /// Events shown in the store overview and on each run page.
    pub recent_events: usize,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            enabled: true,
            tracked: true,
            max_page_items: 200,
            recent_events: 10,
        }
    }
}

/// Search ranking settings (`search:` in cairn.yaml).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SearchConfig {
    /// Days after which the recency boost halves.
    pub recency_half_life_days: f64,
    /// How much recency moves a score.
    pub recency_weight: f64,
    /// How much confidence moves a score.
    pub confidence_weight: f64,
    /// Boost of English-analysed content.
    pub content_boost: f64,
    /// Boost of identifier-analysed content.
    pub identifier_boost: f64,
    /// Boost of tags.
    pub tags_boost: f64,
    /// Score multiplier per tag.
    pub tag_weights: std::collections::BTreeMap<String, f64>,
    /// Tag prefix that groups items (e.g. the turns of one conversation).
    pub group_tag_prefix: String,
    /// Share of a group's best score each member gets added.
    pub group_weight: f64,
    /// Drop the filler words of questions ("remember", "mentioned",
    /// "tell") from the query when other words remain.
    pub question_words: bool,
    /// Exponent of the length prior: an item longer than the median item
    /// is scored × (median / length)^this (0 = off).
    pub length_prior: f64,
    /// Pseudo-relevance feedback: terms added from the best first-pass
    /// hits (0 = off).
    pub feedback_terms: usize,
    /// Pseudo-relevance feedback: how many first-pass hits lend terms.
    pub feedback_docs: usize,
    /// Pseudo-relevance feedback: the weight of the strongest added term
    /// relative to a query term.
    pub feedback_weight: f64,
    /// Boost of neighbouring query words found near each other in an
    /// item, relative to a query term (0 = off).
    pub proximity_weight: f64,
    /// Date-aware scoring: items created in the window of time a question
    /// names ("last week", "in March") are scored × (1 + this) (0 = off).
    pub date_weight: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            recency_half_life_days: 90.0,
            recency_weight: 0.1,
            confidence_weight: 0.3,
            content_boost: 1.0,
            identifier_boost: 0.5,
            tags_boost: 1.5,
            tag_weights: Default::default(),
            group_tag_prefix: "session:".into(),
            group_weight: 0.5,
            question_words: true,
            length_prior: 0.5,
            feedback_terms: 0,
            feedback_docs: 5,
            feedback_weight: 0.3,
            proximity_weight: 0.5,
            date_weight: 1.0,
        }
    }
}

fn default_scope_weights() -> std::collections::BTreeMap<String, f64> {
    [
        ("global", 1.0),
        ("user", 1.1),
        ("org", 1.0),
        ("project", 1.2),
        ("run", 1.3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            budgets: Budgets::default(),
            limits: Limits::default(),
            search: SearchConfig::default(),
            scope_weights: default_scope_weights(),
            mirror: MirrorConfig::default(),
        }
    }
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
    /// Per-section token caps of the brief.
    pub brief_sections: std::collections::BTreeMap<String, u64>,
    /// How many memories the brief considers.
    pub brief_memories: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_sliding_tokens: 4000,
            max_pinned_items: 32,
            brief_tokens: 6000,
            brief_sections: [("memories", 2000), ("sliding", 2000), ("state", 1000)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            brief_memories: 20,
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
             budgets:\n  max_sliding_tokens: {}\n  max_pinned_items: {}\n  brief_tokens: {}\n  brief_memories: 20\n\
             \x20 brief_sections:\n    state: 1000\n    sliding: 2000\n    memories: 2000\n\
             eviction:\n  order: priority,timestamp,id\n\
             scope_weights:\n  global: 1.0\n  user: 1.1\n  org: 1.0\n  project: 1.2\n  run: 1.3\n\
             search:\n  recency_half_life_days: 90\n  recency_weight: 0.1\n  confidence_weight: 0.3\n  content_boost: 1.0\n  identifier_boost: 0.5\n  tags_boost: 1.5\n  tag_weights: {{}}\n  group_tag_prefix: \"session:\"\n  group_weight: 0.5\n\
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
        #[derive(Deserialize, Default)]
        struct Sections {
            #[serde(default)]
            budgets: Option<Budgets>,
            #[serde(default)]
            limits: Option<Limits>,
            #[serde(default)]
            search: Option<SearchConfig>,
            #[serde(default)]
            scope_weights: Option<std::collections::BTreeMap<String, f64>>,
            #[serde(default)]
            mirror: Option<MirrorConfig>,
        }
        let sections: Sections = serde_json::from_value(value).unwrap_or_default();
        let mut scope_weights = default_scope_weights();
        scope_weights.extend(sections.scope_weights.unwrap_or_default());
        StoreConfig {
            budgets: sections.budgets.unwrap_or_default(),
            limits: sections.limits.unwrap_or_default(),
            search: sections.search.unwrap_or_default(),
            scope_weights,
            mirror: sections.mirror.unwrap_or_default(),
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
