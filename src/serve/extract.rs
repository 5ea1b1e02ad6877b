//! Request extractors that check their input before it reaches the store:
//! path parameters are ids (`layout::valid_id`), query parameters are
//! known and typed, bodies are bounded JSON documents, and the
//! `Idempotency-Key` header is a valid cairn key. Every refusal is a
//! VALIDATION error naming the parameter, field or header.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::layout;

/// The label request bodies carry in error messages.
pub const BODY: &str = "request body";

/// The one path parameter of a route, checked to be an id.
#[derive(Debug, Clone)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("path", "", "path_parameter", e.body_text()))?;
        let mut first = None;
        for (name, value) in &params {
            if !layout::valid_id(value) {
                return Err(ApiError::invalid(
                    name,
                    "",
                    "pattern",
                    format!(
                        "path parameter {name} = {value:?} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"
                    ),
                ));
            }
            first.get_or_insert_with(|| value.to_string());
        }
        first
            .map(PathId)
            .ok_or_else(|| ApiError::invalid("path", "", "path_parameter", "no path parameter"))
    }
}

/// The `Idempotency-Key` header, checked as a cairn idempotency key.
#[derive(Debug, Clone, Default)]
pub struct IdemKey(pub Option<String>);

impl IdemKey {
    /// The key, if one was sent.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(IdemKey(None));
        };
        let key = v
            .to_str()
            .ok()
            .map(str::to_string)
            .filter(|k| crate::idempotency::check_key(k).is_ok());
        match key {
            Some(k) => Ok(IdemKey(Some(k))),
            None => Err(ApiError::invalid(
                "Idempotency-Key",
                "",
                "idempotency_key",
                format!(
                    "the Idempotency-Key header must be 1 to {} printable characters",
                    crate::idempotency::MAX_KEY_LEN
                ),
            )),
        }
    }
}

/// The query string as named parameters, taken one by one with their types;
/// [`Params::finish`] refuses the ones no one took.
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(
                |e| {
                    ApiError::invalid(
                        "query",
                        "",
                        "query_string",
                        format!("bad query string: {e}"),
                    )
                },
            )?;
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::invalid(
                    &k,
                    "",
                    "single_value",
                    format!("query parameter {k} is given twice"),
                ));
            }
        }
        Ok(Params(map))
    }
}

impl Params {
    /// A text parameter (an empty value counts as absent).
    pub fn text(&mut self, name: &str) -> Option<String> {
        self.0.remove(name).filter(|v| !v.is_empty())
    }

    /// A whole number within `min..=max`.
    pub fn number(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                name,
                "",
                "range",
                format!(
                    "query parameter {name} = {v:?} must be a whole number from {min} to {max}"
                ),
            )),
        }
    }

    /// `true`/`false` (also `1`/`0`).
    pub fn flag(&mut self, name: &str) -> Result<bool, ApiError> {
        match self.text(name).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(v) => Err(ApiError::invalid(
                name,
                "",
                "boolean",
                format!("query parameter {name} = {v:?} must be true or false"),
            )),
        }
    }

    /// An RFC 3339 time.
    pub fn time(&mut self, name: &str) -> Result<Option<time::OffsetDateTime>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        crate::event::parse_rfc3339(&v).map(Some).ok_or_else(|| {
            ApiError::invalid(
                name,
                "",
                "format",
                format!("query parameter {name} = {v:?} is not an RFC 3339 time"),
            )
        })
    }

    /// Refuses parameters no one took.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::invalid(
                k,
                "",
                "unknown_parameter",
                format!("unknown query parameter {k}"),
            )),
        }
    }
}

/// A JSON request body as a document, bounded by the body limit and the
/// store's nesting limit, parsed by the library's parser.
#[derive(Debug, Clone)]
pub struct JsonDoc(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonDoc {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if mime != "application/json" && !mime.ends_with("+json") {
                let mut e = ApiError::invalid(
                    "Content-Type",
                    "",
                    "content_type",
                    format!("the body must be application/json, not {ct:?}"),
                );
                e.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
                return Err(e);
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            let mut err = ApiError::invalid(BODY, "", "body", e.body_text());
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                err.code = "TOO_LARGE".into();
                err.message =
                    "the request body is over the limit (limits.max_file_bytes in cairn.yaml)"
                        .into();
                err.details = serde_json::json!({"file": BODY, "setting": "max_file_bytes"});
                err.status = status;
            }
            err
        })?;
        let text = std::str::from_utf8(&bytes).unwrap_or("");
        if !matches!(text.trim_start().chars().next(), Some('{') | Some('[')) {
            return Err(crate::Error::Parse {
                file: BODY.into(),
                format: "JSON",
                message: "the body must be a JSON object".into(),
            }
            .into());
        }
        let limits = crate::schema::ParseLimits {
            max_bytes: bytes.len() as u64,
            ..Default::default()
        };
        Ok(JsonDoc(crate::schema::parse_document(
            BODY, &bytes, limits,
        )?))
    }
}

/// A JSON request body as a typed request (unknown fields refused).
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonDoc(value) = JsonDoc::from_request(req, state).await?;
        typed(value).map(Body)
    }
}

/// Reads a typed request out of a JSON document; serde's message names
/// the field (`unknown field `x``, `missing field `y``).
pub fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).unwrap_or("").to_string();
        let rule = if msg.starts_with("unknown field") {
            "unknown_field"
        } else if msg.starts_with("missing field") {
            "required"
        } else {
            "type"
        };
        let pointer = if field.is_empty() {
            String::new()
        } else {
            format!("/{field}")
        };
        ApiError::invalid(BODY, &pointer, rule, msg)
    })
}
