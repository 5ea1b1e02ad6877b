//! Text analysis for the memory index: the English analyzer (stemmed,
//! stop words removed) and the identifier tokenizer that finds
//! `uteke-cloud-dev`, `CamelCase` and `v1.2.3` whole and by their parts.
//! Changing what these produce changes the index: bump the index `FORMAT`.

use std::collections::BTreeSet;

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    Token, TokenStream, Tokenizer,
};

/// Splits identifiers so they are found whole and by their parts:
/// `uteke-cloud-dev` gives `uteke-cloud-dev`, `uteke`, `cloud`, `dev`;
/// `CamelCase` gives `camelcase`, `camel`, `case`; `v1.2.3` gives `v1.2.3`, `v1`, `2`, `3`.
#[derive(Clone, Default)]
pub struct IdentifierTokenizer;

/// The token stream of [`IdentifierTokenizer`].
pub struct IdentifierStream {
    tokens: Vec<Token>,
    at: usize,
}

impl TokenStream for IdentifierStream {
    fn advance(&mut self) -> bool {
        if self.at < self.tokens.len() {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn token(&self) -> &Token {
        &self.tokens[self.at - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.at - 1]
    }
}

fn push_token(tokens: &mut Vec<Token>, text: &str, from: usize, to: usize, position: usize) {
    let lower = text.to_lowercase();
    if lower.is_empty() || lower.len() > 64 {
        return;
    }
    tokens.push(Token {
        offset_from: from,
        offset_to: to,
        position,
        text: lower,
        position_length: 1,
    });
}

/// Splits a word at lower→upper case changes (`CamelCase` → `Camel`, `Case`).
fn camel_parts(word: &str) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    for w in 1..chars.len() {
        let (i, c) = chars[w];
        let prev = chars[w - 1].1;
        if c.is_uppercase() && prev.is_lowercase() {
            parts.push((start, i));
            start = i;
        }
    }
    parts.push((start, word.len()));
    parts
}

impl Tokenizer for IdentifierTokenizer {
    type TokenStream<'a> = IdentifierStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> IdentifierStream {
        let mut tokens = Vec::new();
        let mut position = 0;
        for (start, chunk) in split_whitespace_indices(text) {
            let chunk_trim = chunk.trim_matches(|c: char| !c.is_alphanumeric());
            if chunk_trim.is_empty() {
                continue;
            }
            // `chunk_trim` is a slice of `chunk`: its offset is the pointers' distance.
            let lead = chunk_trim.as_ptr() as usize - chunk.as_ptr() as usize;
            let base = start + lead;
            let parts: Vec<(usize, &str)> = chunk_trim
                .match_indices(|c: char| c.is_alphanumeric())
                .fold(Vec::<(usize, usize)>::new(), |mut acc, (i, s)| {
                    match acc.last_mut() {
                        Some(last) if last.1 == i => last.1 = i + s.len(),
                        _ => acc.push((i, i + s.len())),
                    }
                    acc
                })
                .into_iter()
                .map(|(a, b)| (a, &chunk_trim[a..b]))
                .collect();
            let mut emitted = BTreeSet::new();
            let mut emit = |tokens: &mut Vec<Token>, s: &str, from: usize, to: usize| {
                if emitted.insert(s.to_lowercase()) {
                    push_token(tokens, s, base + from, base + to, position);
                }
            };
            emit(&mut tokens, chunk_trim, 0, chunk_trim.len());
            for (off, part) in &parts {
                emit(&mut tokens, part, *off, off + part.len());
                for (a, b) in camel_parts(part) {
                    emit(&mut tokens, &part[a..b], off + a, off + b);
                }
            }
            position += 1;
        }
        IdentifierStream { tokens, at: 0 }
    }
}

fn split_whitespace_indices(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_whitespace()
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

/// English function words that carry no topic (pronouns, articles,
/// auxiliaries, question words, common prepositions).
const STOPWORDS: &str = "a an the and or but if of to in on at by for with from as is are was were be \
    been being i you he she it we they me my your his her its our their this that these those do does \
    did have has had what when where who whom which why how not no so than then there here about into \
    over after before up down out just also can could would should will shall may might must";

pub(super) fn stopwords() -> StopWordFilter {
    StopWordFilter::remove(STOPWORDS.split_whitespace().map(str::to_string))
}

/// Words that make a sentence a question about remembered conversation
/// rather than name its topic ("do you remember what I mentioned…",
/// "how many times did we talk about…"). Dropped from queries only.
const QUESTION_WORDS: &str = "remember remind recall mention mentioned mentioning told tell \
    telling said say saying talk talked talking discuss discussed discussing conversation \
    conversations chat chatted earlier previously previous ever again still currently exactly \
    actually please know many much";

/// The analyzers, built once: building one makes its stop-word sets, and
/// a search needs several. A clone shares the sets.
static ANALYZERS: std::sync::LazyLock<[TextAnalyzer; 4]> = std::sync::LazyLock::new(|| {
    let question_words =
        || StopWordFilter::remove(QUESTION_WORDS.split_whitespace().map(str::to_string));
    [
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(stopwords())
            .filter(Stemmer::new(Language::English))
            .build(),
        TextAnalyzer::builder(IdentifierTokenizer)
            .filter(stopwords())
            .build(),
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(stopwords())
            .filter(question_words())
            .filter(Stemmer::new(Language::English))
            .build(),
        TextAnalyzer::builder(IdentifierTokenizer)
            .filter(stopwords())
            .filter(question_words())
            .build(),
    ]
});

/// The English analyzer (stemmed, stop words removed).
pub(super) fn english() -> TextAnalyzer {
    ANALYZERS[0].clone()
}

/// The identifier analyzer (stop words removed).
pub(super) fn identifiers() -> TextAnalyzer {
    ANALYZERS[1].clone()
}

/// The English analyzer of query text that also drops [`QUESTION_WORDS`].
pub(super) fn english_question() -> TextAnalyzer {
    ANALYZERS[2].clone()
}

/// The identifier analyzer of query text that also drops [`QUESTION_WORDS`].
pub(super) fn identifiers_question() -> TextAnalyzer {
    ANALYZERS[3].clone()
}

/// The analyzed terms of `text` under an analyzer.
pub(super) fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}
