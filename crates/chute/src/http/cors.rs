//! CORS, for browser pages on other origins (`cors_allowed_origins`): every route answers
//! preflights, allowing each protocol's request headers and methods, and exposes the
//! response headers its clients read. An origin not allowed (or a request with no `Origin`)
//! gets no CORS headers at all.
//!
//! tower-http's `CorsLayer` does the work. It takes every OPTIONS request for a preflight,
//! though, and tus's `OPTIONS /tus/` is a request of its own (discovery: `Tus-Version`,
//! `Tus-Max-Size`, ...). So an OPTIONS without `Access-Control-Request-Method`, which no
//! preflight lacks, goes to its route, and gets the allowed origin's headers added here.

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, Response};
use axum::response::IntoResponse;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Settings;

/// The request headers the protocols use, allowed in preflights.
pub const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-disposition",
    "content-range",
    "range",
    "if-none-match",
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "upload-checksum",
    "upload-complete",
    "upload-draft-interop-version",
    "x-progress-id",
    "x-http-method-override",
    "x-requested-with",
    "x-request-id",
];

/// The response headers clients read, exposed to their scripts.
pub const EXPOSED_HEADERS: &[&str] = &[
    "location",
    "content-location",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "upload-complete",
    "upload-limit",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "etag",
    "content-disposition",
    "content-range",
    "content-length",
    "accept-ranges",
    "retry-after",
    "x-request-id",
];

const METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Which origins may call.
#[derive(Clone)]
enum Origins {
    Any,
    These(Vec<HeaderValue>),
}

impl Origins {
    fn allows(&self, origin: &HeaderValue) -> bool {
        match self {
            Origins::Any => true,
            Origins::These(list) => list.contains(origin),
        }
    }
}

fn names(list: &[&'static str]) -> Vec<HeaderName> {
    list.iter().map(|h| HeaderName::from_static(h)).collect()
}

/// `router` with CORS, when the settings allow any origin; else `router` as it is.
pub fn with_cors(router: Router, s: &Settings) -> Router {
    if s.cors_allowed_origins.is_empty() {
        return router;
    }
    let origins = if s.cors_allowed_origins.iter().any(|o| o == "*") {
        Origins::Any
    } else {
        Origins::These(
            s.cors_allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        )
    };
    let allow = match &origins {
        Origins::Any => AllowOrigin::any(),
        Origins::These(list) => AllowOrigin::list(list.clone()),
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(METHODS.to_vec())
        .allow_headers(names(ALLOWED_HEADERS))
        .expose_headers(names(EXPOSED_HEADERS))
        .allow_credentials(s.cors_allow_credentials)
        .max_age(s.cors_max_age.0);
    let plain = router.clone();
    let with = router.layer(layer);
    let credentials = s.cors_allow_credentials;
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let (plain, with, origins) = (plain.clone(), with.clone(), origins.clone());
        async move {
            let preflight = req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .filter(|o| origins.allows(o))
                .cloned();
            if req.method() != Method::OPTIONS || preflight {
                let mut res = with.oneshot(req).await?;
                if origin.is_none() {
                    // CorsLayer sends some headers whatever the origin: none here.
                    strip_cors_headers(&mut res);
                }
                return Ok(res);
            }
            let mut res = plain.oneshot(req).await?;
            if let Some(o) = origin {
                add_origin_headers(&mut res, &origins, o, credentials);
            }
            Ok::<_, Infallible>(res.into_response())
        }
    }))
}

fn strip_cors_headers<B>(res: &mut Response<B>) {
    let h = res.headers_mut();
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

/// The headers CorsLayer gives an allowed origin's request that is not a preflight.
fn add_origin_headers<B>(res: &mut Response<B>, origins: &Origins, o: HeaderValue, cred: bool) {
    let h = res.headers_mut();
    let value = match origins {
        Origins::Any => HeaderValue::from_static("*"),
        Origins::These(_) => o,
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if let Ok(v) = HeaderValue::from_str(&EXPOSED_HEADERS.join(",")) {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    if cred {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
}
