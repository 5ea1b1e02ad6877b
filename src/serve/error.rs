//! The HTTP error envelope: the CLI's `--json` error, with an HTTP status
//! chosen by category (VALIDATION 422, CONFLICT 409, NOT_FOUND 404, POLICY
//! 403, TRANSIENT 503 with `Retry-After`, INTEGRITY and INTERNAL 500).
//!
//! Library errors name CLI flags (`--scope`, `--run-id`) where the CLI fed
//! them; over HTTP the same value came from a query or body field, so the
//! label is rewritten to the field's name (`scope`, `run_id`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::{Category, Error};

/// An error answered over HTTP: the `--json` error envelope and a status
/// (boxed: handlers return it in every `Result`).
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorParts>);

impl std::ops::Deref for ApiError {
    type Target = ErrorParts;
    fn deref(&self) -> &ErrorParts {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorParts {
        &mut self.0
    }
}

/// What an [`ApiError`] says.
#[derive(Debug, Clone)]
pub struct ErrorParts {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code (`STALE_SEQ`, `RUN_NOT_FOUND`, ...).
    pub code: String,
    /// The category name (`VALIDATION`, ...), or `AUTH` / `HOST` for the server's own checks.
    pub category: &'static str,
    /// A sentence for people.
    pub message: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
    /// Structured details (file, pointer, rule, ids...).
    pub details: Value,
}

/// The HTTP status of a category.
pub fn status_of(c: Category) -> StatusCode {
    match c {
        Category::Validation => StatusCode::UNPROCESSABLE_ENTITY,
        Category::Conflict => StatusCode::CONFLICT,
        Category::NotFound => StatusCode::NOT_FOUND,
        Category::Policy => StatusCode::FORBIDDEN,
        Category::Transient => StatusCode::SERVICE_UNAVAILABLE,
        Category::Integrity | Category::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `--run-id` → `run_id`: the HTTP field a CLI flag label stands for.
fn field_of_flag(label: &str) -> Option<String> {
    label
        .strip_prefix("--")
        .map(|f| f.replace('-', "_"))
        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

impl ApiError {
    /// A VALIDATION error about one field of a request.
    pub fn invalid(
        field: &str,
        pointer: &str,
        rule: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        Error::Invalid {
            file: field.to_string(),
            pointer: pointer.to_string(),
            rule,
            message: message.into(),
        }
        .into()
    }

    /// An error the server raises itself (auth, host, routing).
    pub fn new(
        status: StatusCode,
        code: &str,
        category: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError(Box::new(ErrorParts {
            status,
            code: code.to_string(),
            category,
            message: message.into(),
            retryable: false,
            details: json!({}),
        }))
    }

    /// The envelope body.
    pub fn envelope(&self) -> Value {
        json!({"ok": false, "error": {
            "code": self.code,
            "category": self.category,
            "message": self.message,
            "retryable": self.retryable,
            "details": self.details,
        }})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // The body every front end sends (`api::error_json`), with flag labels renamed.
        let body = crate::api::error_json(&e);
        let mut details = body["details"].clone();
        let mut message = body["message"].as_str().unwrap_or_default().to_string();
        if let Some(file) = details
            .get("file")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            if let Some(field) = field_of_flag(&file) {
                details["file"] = json!(field);
                if let Some(rest) = message.strip_prefix(&file) {
                    message = format!("{field}{rest}");
                }
            }
        }
        ApiError(Box::new(ErrorParts {
            status: status_of(e.category()),
            code: e.code().to_string(),
            category: e.category().as_str(),
            message,
            retryable: e.retryable(),
            details,
        }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut resp = (status, axum::Json(self.envelope())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cairn\""),
            );
        }
        resp
    }
}

/// What handlers return.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_map_to_statuses() {
        assert_eq!(status_of(Category::Validation), 422);
        assert_eq!(status_of(Category::Conflict), 409);
        assert_eq!(status_of(Category::NotFound), 404);
        assert_eq!(status_of(Category::Policy), 403);
        assert_eq!(status_of(Category::Transient), 503);
        assert_eq!(status_of(Category::Integrity), 500);
        assert_eq!(status_of(Category::Internal), 500);
    }

    #[test]
    fn flag_labels_become_field_names() {
        let e: ApiError = Error::Invalid {
            file: "--run-id".into(),
            pointer: "/run_id".into(),
            rule: "pattern",
            message: "bad".into(),
        }
        .into();
        assert_eq!(e.details["file"], "run_id");
        assert!(e.message.starts_with("run_id: /run_id"), "{}", e.message);
        assert_eq!(e.status, 422);
    }

    #[test]
    fn transient_errors_say_when_to_retry() {
        let e: ApiError = Error::LockBusy {
            path: "/x/.cairn/lock".into(),
            holder: "pid 1".into(),
            waited_ms: 10,
        }
        .into();
        let r = e.into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
