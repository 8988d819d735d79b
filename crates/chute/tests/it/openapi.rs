//! `GET /openapi.json`: the described routes are the served routes, and every error code is
//! in the `Error` schema. (openapi-spec-validator and schemathesis hold the document to the
//! standard and to a live server: scripts/api-contract.sh.)

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

/// What the router answers for a path or method it does not have (http::router's fallbacks).
fn unrouted(status: u16, body: &Value) -> bool {
    (status == 404 && body["error"] == "route not found")
        || (status == 405 && body["error"] == "this method is not allowed here")
}

/// Whether `method path` reaches a handler (anything but the router's fallbacks).
async fn served(app: &TestApp, method: &str, path: &str) -> bool {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let res = app
        .auth(app.client.request(m, app.url(path)))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("send");
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    !unrouted(status, &body)
}

#[tokio::test]
async fn every_described_operation_is_served_and_every_code_described() {
    let app = spawn_app(&[]).await;
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200, "served without a token");
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");

    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{token}", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .replace("{name}", "a.txt")
            .replace("{id}", "0123456789abcdef0123456789abcdef");
        let methods = item.as_object().expect("item");
        for method in methods.keys() {
            operations += 1;
            assert!(
                served(&app, method, &concrete).await,
                "{method} {path} is described but not served"
            );
        }
        // The same route with the other trailing slash is served too (Django's URLs).
        if let Some(bare) = concrete.strip_suffix('/').filter(|b| !b.is_empty()) {
            let method = methods.keys().next().expect("a method");
            assert!(
                served(&app, method, bare).await,
                "{method} {bare} (alias of {path}) is not served"
            );
        }
    }
    assert!(operations >= 37, "{operations} operations described");

    // A route that is not described is not served either.
    let res = app
        .auth(app.client.get(app.url("/api/nothing")))
        .send()
        .await
        .expect("get");
    let status = res.status().as_u16();
    assert!(unrouted(status, &res.json().await.expect("json")));

    // Every code the API answers with is in the Error schema, and nothing else.
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|c| c.as_str().expect("str"))
        .collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    for code in &codes {
        assert!(
            readme.contains(&format!("`{code}`")),
            "{code} is described but not in README"
        );
    }
    for needed in [
        "bad_path",
        "bad_query",
        "too_large",
        "offset_mismatch",
        "draining",
        "unsupported_version",
    ] {
        assert!(
            codes.contains(needed),
            "{needed} missing from the Error schema"
        );
    }
    // Operation ids are unique (OpenAPI requires it; the handlers' names repeat).
    let ids: Vec<&str> = paths
        .values()
        .flat_map(|i| i.as_object().expect("item").values())
        .map(|op| op["operationId"].as_str().expect("operationId"))
        .collect();
    let unique: BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}
