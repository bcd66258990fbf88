//! The web page at `/`: subscribe to topics, watch the live log, publish from a form, see
//! the connection state, drop and restore the connection to watch `Last-Event-ID`
//! catch-up. Plain HTML, CSS and JavaScript, shipped inside the binary: nothing is
//! fetched from anywhere else at run time.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};

use crate::hub::Hub;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The page's routes: `/`, `/app.js`, `/style.css`.
pub(crate) fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files: revalidate each time so an upgraded binary serves its own page.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
