//! The web UI at `/`: plain HTML, CSS and a small vanilla script that call
//! the `/v1` API, embedded in the binary with `include_str!` (no CDN, no
//! network at run time, no Node build).
//!
//! Invariants: only the files in [`ASSETS`] are ever served, each at its
//! one fixed route with its own content type; nothing is read from disk and
//! no path is joined from a request. Every answer carries a strict
//! Content-Security-Policy (scripts, styles and connections from this
//! origin only, no inline script, no framing). The assets hold no store
//! data, so they are served without the bearer token (see
//! [`is_public_asset`]); every call the page makes to the API still needs
//! it, and the page asks for it when the server answers 401.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::AppState;

/// One embedded file: its route, content type and bytes.
pub struct Asset {
    /// The route it is served at.
    pub route: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content.
    pub body: &'static str,
}

/// Every file the UI serves (and nothing else).
pub const ASSETS: &[Asset] = &[
    Asset {
        route: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../assets/ui/index.html"),
    },
    Asset {
        route: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/ui/app.js"),
    },
    Asset {
        route: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/ui/app.css"),
    },
    Asset {
        route: "/ui/icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../assets/ui/icon.svg"),
    },
];

/// The Content-Security-Policy of every UI answer: this origin only, no
/// inline script or style, no plugins, no framing, forms go nowhere (the
/// script handles them).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is one of the embedded UI files (served without the token:
/// they carry no store data).
pub fn is_public_asset(path: &str) -> bool {
    ASSETS.iter().any(|a| a.route == path)
}

/// The UI's routes: one per embedded file.
pub fn routes() -> Router<AppState> {
    ASSETS.iter().fold(Router::new(), |r, a| {
        r.route(
            a.route,
            get(move |headers: HeaderMap| async move { serve(a, &headers) }),
        )
    })
}

/// The entity tag of an asset: its content hash (the bytes are fixed per binary).
fn etag(a: &Asset) -> String {
    let digest = Sha256::digest(a.body.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let tag = etag(a);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            )],
            a.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_route_is_distinct_and_public() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(is_public_asset(a.route));
            assert!(ASSETS[i + 1..].iter().all(|b| b.route != a.route));
            assert!(!a.body.is_empty(), "{} is empty", a.route);
        }
        assert!(!is_public_asset("/ui/"));
        assert!(!is_public_asset("/ui/../Cargo.toml"));
        assert!(!is_public_asset("/v1/runs"));
    }

    #[test]
    fn the_page_loads_only_embedded_files() {
        let html = ASSETS[0].body;
        for needle in ["src=\"", "href=\"/"] {
            for (i, _) in html.match_indices(needle) {
                let rest = &html[i + needle.len()..];
                let target = &rest[..rest.find('"').unwrap()];
                if target.starts_with("/ui/") {
                    assert!(is_public_asset(target), "{target} is not embedded");
                }
                assert!(
                    !target.contains("//"),
                    "{target}: the page must not load from another origin"
                );
            }
        }
        // No inline script (the CSP forbids it anyway).
        assert!(!html.contains("<script>"));
        assert!(!html.contains(" onclick="));
    }
}
