//! The server's perimeter: the bearer token (compared in constant time),
//! the `Host` check against DNS rebinding, and CORS only for origins the
//! operator named. These run before any handler, so a refused request
//! never reaches the store.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Whether `token` is the configured one, in time independent of where
/// they differ (both are hashed first, so their lengths leak nothing either).
pub fn token_matches(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.ct_eq(&b).into()
}

/// The host part of a `Host` header value (`name`, `1.2.3.4`, `[::1]`), lower-cased.
fn host_name(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((inner, _)) => return inner.to_ascii_lowercase(),
            None => v,
        }
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => v,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a `Host` header is acceptable: loopback names, IP literals (a
/// rebinding attack needs a name it controls), or a name the operator allowed.
pub fn host_allowed(value: &str, allowed: &[String]) -> bool {
    let name = host_name(value);
    if name.is_empty() {
        return false;
    }
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok()
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// Refuses requests whose `Host` is not the server's (421).
pub async fn check_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .is_some_and(|h| host_allowed(h, &state.inner.allowed_hosts));
    if !ok {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "BAD_HOST",
            "HOST",
            "the Host header names no host this server answers for (start it with --allow-host NAME to add one)",
        )
        .into_response();
    }
    next.run(req).await
}

/// Refuses requests without the bearer token when one is configured (401);
/// `GET /health` and the UI's embedded files need none.
pub async fn check_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.inner.token.as_deref() else {
        return next.run(req).await;
    };
    // Liveness, and the UI's embedded files (they hold no store data; the
    // page sends the token on every API call it makes).
    let public = req.uri().path() == "/health"
        || (matches!(*req.method(), Method::GET | Method::HEAD)
            && super::ui::is_public_asset(req.uri().path()));
    if public {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        Some(t) if token_matches(expected, t) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "AUTH",
            "the bearer token is wrong",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "AUTH",
            "this server needs Authorization: Bearer TOKEN",
        )
        .into_response(),
    }
}

fn cors_headers(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// CORS for the origins named with `--cors-origin`, none otherwise. A
/// preflight from an allowed origin is answered here (before the token
/// check: browsers send no credentials on a preflight).
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| {
            o.to_str()
                .is_ok_and(|o| state.inner.cors_origins.iter().any(|a| a == o))
        })
        .cloned();
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        cors_headers(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, idempotency-key, last-event-id"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    cors_headers(resp.headers_mut(), &origin);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: Vec<String> = Vec::new();
        assert!(host_allowed("localhost:8000", &none));
        assert!(host_allowed("127.0.0.1:8000", &none));
        assert!(host_allowed("[::1]:8000", &none));
        assert!(host_allowed("10.1.2.3", &none));
        assert!(!host_allowed("evil.example:8000", &none));
        assert!(!host_allowed("", &none));
        assert!(host_allowed(
            "Cairn.Internal:80",
            &["cairn.internal".to_string()]
        ));
    }

    #[test]
    fn tokens() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cres"));
        assert!(!token_matches("s3cret", ""));
    }
}
