//! The upload page at `GET /` (`ui_enabled`): sign in, upload with Uppy (tus), list,
//! download and delete files, and gather an upload session. Everything is compiled into the
//! binary: the page's own files from `ui/src/`, and Uppy's bundle from `ui/vendor/`, copied
//! there by `scripts/build-ui.sh` from the lockfile. The page asks nothing of the network.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../ui/src/index.html");
const APP_JS: &str = include_str!("../../ui/src/app.js");
const APP_CSS: &str = include_str!("../../ui/src/app.css");
const UPPY_JS: &str = include_str!("../../ui/vendor/uppy.min.js");
const UPPY_CSS: &str = include_str!("../../ui/vendor/uppy.min.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page is small and changes with the binary: browsers ask again each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    summary = "The upload page (`ui_enabled`), its scripts and styles under /ui/",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
)]
pub async fn index() -> Response {
    let mut res = asset(INDEX, "text/html; charset=utf-8");
    let h = res.headers_mut();
    // Only the page's own scripts and styles (Uppy sets inline styles), and chute itself.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

pub async fn uppy_js() -> Response {
    asset(UPPY_JS, "text/javascript; charset=utf-8")
}

pub async fn uppy_css() -> Response {
    asset(UPPY_CSS, "text/css; charset=utf-8")
}
