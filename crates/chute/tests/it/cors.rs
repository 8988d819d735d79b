//! CORS at the HTTP level: preflights on every route, exposed headers, tus's own OPTIONS, and
//! nothing for an origin not allowed. (The browser tests, `browser.rs`, check the same with
//! Chromium's own CORS enforcement.)

use reqwest::Method;

use crate::helpers::*;

const APP: &str = "https://app.example";

async fn preflight(
    app: &TestApp,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", headers)
        .send()
        .await
        .expect("preflight")
}

fn h<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

fn listed(res: &reqwest::Response, name: &str) -> Vec<String> {
    h(res, name)
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test]
async fn preflights_are_answered_on_every_route_for_allowed_origins_only() {
    let app = spawn_app(&[
        (
            "cors_allowed_origins",
            "https://app.example, http://localhost:3000",
        ),
        ("cors_max_age", "10m"),
    ])
    .await;
    // Each protocol's request, as a browser would preflight it.
    let cases = [
        (
            "/tus/",
            "POST",
            "authorization,tus-resumable,upload-length,upload-metadata,upload-defer-length,upload-concat",
        ),
        (
            "/tus/abc",
            "PATCH",
            "authorization,tus-resumable,upload-offset,content-type,upload-checksum",
        ),
        ("/tus/abc", "HEAD", "authorization,tus-resumable"),
        ("/tus/abc", "DELETE", "authorization,tus-resumable"),
        ("/tus/abc", "POST", "authorization,x-http-method-override"),
        (
            "/resumable/",
            "POST",
            "authorization,upload-complete,upload-draft-interop-version,content-disposition",
        ),
        (
            "/resumable/abc",
            "PATCH",
            "authorization,upload-offset,upload-complete,content-type",
        ),
        (
            "/api/files",
            "POST",
            "authorization,x-progress-id,upload-complete",
        ),
        ("/api/files/abc", "GET", "authorization,range,if-none-match"),
        ("/api/files/abc", "DELETE", "authorization"),
        (
            "/api/chunked_upload/",
            "POST",
            "authorization,content-range,x-requested-with",
        ),
        ("/upload-session/", "POST", "authorization"),
        ("/api/me", "GET", "authorization,x-request-id"),
    ];
    for (path, method, headers) in cases {
        let res = preflight(&app, path, APP, method, headers).await;
        assert!(
            res.status().is_success(),
            "{method} {path}: {}",
            res.status()
        );
        assert_eq!(
            h(&res, "access-control-allow-origin"),
            Some(APP),
            "{method} {path}"
        );
        let methods = listed(&res, "access-control-allow-methods");
        assert!(
            methods.contains(&method.to_ascii_lowercase()),
            "{method} {path}: {methods:?}"
        );
        let allowed = listed(&res, "access-control-allow-headers");
        for want in headers.split(',') {
            assert!(
                allowed.contains(&want.to_string()),
                "{method} {path}: {want} not in {allowed:?}"
            );
        }
        assert_eq!(h(&res, "access-control-max-age"), Some("600"));
        assert!(h(&res, "access-control-allow-credentials").is_none());
    }
    // The second allowed origin gets its own name back, not the first's.
    let res = preflight(
        &app,
        "/tus/",
        "http://localhost:3000",
        "POST",
        "authorization",
    )
    .await;
    assert_eq!(
        h(&res, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert!(listed(&res, "vary").iter().any(|v| v == "origin"));

    // An origin not allowed gets no CORS headers, on a preflight or a request.
    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "null",
    ] {
        let res = preflight(&app, "/tus/", origin, "POST", "authorization").await;
        assert!(h(&res, "access-control-allow-origin").is_none(), "{origin}");
        let res = app
            .auth(app.client.get(app.url("/api/me")))
            .header("Origin", origin)
            .send()
            .await
            .expect("me");
        assert_eq!(res.status(), 200);
        assert!(h(&res, "access-control-allow-origin").is_none(), "{origin}");
        assert!(
            h(&res, "access-control-expose-headers").is_none(),
            "{origin}"
        );
    }

    // A real request: the headers tus clients read are exposed, on success and on errors.
    let res = app
        .auth(app.client.post(app.url("/tus/")))
        .header("Origin", APP)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "5")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_eq!(h(&res, "access-control-allow-origin"), Some(APP));
    let exposed = listed(&res, "access-control-expose-headers");
    for want in [
        "location",
        "upload-offset",
        "upload-length",
        "upload-expires",
        "upload-metadata",
        "tus-resumable",
        "tus-version",
        "tus-max-size",
        "upload-limit",
        "upload-complete",
        "etag",
        "content-disposition",
        "x-request-id",
    ] {
        assert!(
            exposed.contains(&want.to_string()),
            "{want} not exposed: {exposed:?}"
        );
    }
    let res = app
        .client
        .get(app.url("/api/me"))
        .header("Origin", APP)
        .send()
        .await
        .expect("401");
    assert_eq!(res.status(), 401);
    assert_eq!(
        h(&res, "access-control-allow-origin"),
        Some(APP),
        "a browser can read the error"
    );

    // tus's own OPTIONS (no Access-Control-Request-Method) still reaches tus, with CORS.
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/tus/"))
        .header("Origin", APP)
        .send()
        .await
        .expect("options");
    assert_eq!(res.status(), 204);
    assert_eq!(h(&res, "tus-version"), Some("1.0.0"));
    assert_eq!(h(&res, "access-control-allow-origin"), Some(APP));
    assert!(listed(&res, "access-control-expose-headers").contains(&"tus-max-size".to_string()));
}

#[tokio::test]
async fn without_allowed_origins_there_are_no_cors_headers() {
    let app = spawn_app(&[]).await;
    let res = preflight(&app, "/tus/", APP, "POST", "authorization").await;
    assert!(h(&res, "access-control-allow-origin").is_none());
    let res = app
        .auth(app.client.get(app.url("/api/me")))
        .header("Origin", APP)
        .send()
        .await
        .expect("me");
    assert!(h(&res, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn any_origin_and_credentials() {
    let app = spawn_app(&[("cors_allowed_origins", "*")]).await;
    let res = preflight(
        &app,
        "/api/files",
        "https://anyone.example",
        "POST",
        "authorization",
    )
    .await;
    assert_eq!(h(&res, "access-control-allow-origin"), Some("*"));
    let app = spawn_app(&[
        ("cors_allowed_origins", APP),
        ("cors_allow_credentials", "true"),
    ])
    .await;
    let res = preflight(&app, "/api/files", APP, "POST", "authorization").await;
    assert_eq!(h(&res, "access-control-allow-origin"), Some(APP));
    assert_eq!(h(&res, "access-control-allow-credentials"), Some("true"));
    // `*` with credentials, and a path or a bare word as an origin, are refused at start.
    for (k, v) in [
        ("cors_allowed_origins", "*"),
        ("cors_allowed_origins", "https://app.example/path"),
        ("cors_allowed_origins", "app.example"),
    ] {
        let mut flags = std::collections::BTreeMap::new();
        flags.insert(k.to_string(), v.to_string());
        flags.insert("cors_allow_credentials".to_string(), "true".to_string());
        if v != "*" {
            flags.remove("cors_allow_credentials");
        }
        let err = chute::config::Settings::load_text(None, Vec::new(), flags).expect_err("refused");
        assert!(err.to_string().contains("cors_"), "{err}");
    }
}
