//! The web UI at `/`, embedded in the binary. A placeholder page until the
//! UI lands: it links the API description and names the routes to use.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The UI's routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>cairn</title></head><body><main>",
        "<h1>cairn serve</h1>",
        "<p>This store is served over HTTP. The API is described at ",
        "<a href=\"/openapi.json\">/openapi.json</a>; runs are at ",
        "<a href=\"/v1/runs\">/v1/runs</a>.</p>",
        "</main></body></html>\n"
    ))
}
