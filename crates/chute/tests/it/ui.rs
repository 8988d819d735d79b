//! The upload page at `/`, driven in headless Chromium as a person would use it
//! (`e2e/ui.mjs`): signed in by the application's link, three files (one of 64 MiB) through
//! Uppy with a pause and a resume, a reload in the middle of an upload, an upload session
//! with a refused `.exe`, the library's download link and delete, and a phone's width.
//! Every file the page sent is checked against the bytes on disk.

use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_upload_page_uploads_pauses_resumes_across_a_reload_and_runs_a_session() {
    let app = spawn_app(&[
        ("events_feed", "true"),
        ("auth_jwt_secret", crate::jwt::SECRET),
    ])
    .await;
    let jwt = crate::jwt::mint(
        &serde_json::json!([{"alg": "HS256", "key": crate::jwt::SECRET, "exp_in": 600,
                             "claims": {"sub": "page-user"}}]),
        false,
    )
    .remove(0);
    let dir = app.dir.path().join("ui");
    std::fs::create_dir_all(&dir).expect("dir");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("one.txt", bytes(100_000, 1)),
        ("two.bin", bytes(2_000_000, 2)),
        ("big.bin", bytes(64 << 20, 3)),
        ("again.bin", bytes(64 << 20, 4)),
        ("good.pdf", crate::sessions::pdf(20_000, 5)),
        ("bad.exe", b"MZ\x90\x00 not a document".to_vec()),
    ];
    for (name, data) in &files {
        std::fs::write(dir.join(name), data).expect("write");
    }
    let (base, token, d) = (app.url(""), app.token.clone(), dir.clone());
    let out = blocking(move || {
        Command::new("node")
            .current_dir(e2e_dir())
            .arg("ui.mjs")
            .arg(base.trim_end_matches('/'))
            .arg(token)
            .arg(d)
            .arg(jwt)
            .output()
            .expect("node (scripts/setup-e2e.sh)")
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(v.get("failure").is_none(), "{v:#}");
    assert_eq!(v["pageErrors"], serde_json::json!([]), "{v:#}");

    // Signed in by the link, and the token left the address bar.
    assert!(
        v["who"]
            .as_str()
            .is_some_and(|w| w.starts_with("Signed in as admin")),
        "{v}"
    );
    assert_eq!(v["hash"], "");
    // Paused: once what was on its way had landed, nothing moved for 1.5 s; then it finished.
    let (at, after) = (v["paused"]["at"].as_u64(), v["paused"]["after"].as_u64());
    assert!(
        at.is_some_and(|a| a < 100) && after.zip(at).is_some_and(|(b, a)| b <= a + 1),
        "{v}"
    );
    // (Uppy sends the files side by side: they finish in any order.)
    let mut uploaded: Vec<String> = serde_json::from_value(v["uploaded"].clone()).expect("names");
    uploaded.sort();
    assert_eq!(uploaded, ["big.bin", "one.txt", "two.bin"]);
    // Reloaded part-way, and the same file picked again went on from where it was: one
    // upload was created for it, not two.
    assert!(v["reloadedAt"].as_u64().is_some_and(|p| p < 100), "{v}");
    assert_eq!(v["afterReload"], serde_json::json!(["again.bin"]));
    let res = app
        .auth(app.client.get(app.url("/api/events?limit=1000")))
        .send()
        .await
        .expect("feed");
    let feed: Value = res.json().await.expect("json");
    let created = feed["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "upload.created" && e["data"]["name"] == "again.bin")
        .count();
    assert_eq!(created, 1, "the reload started the upload over");

    // The session: the server's own words for the .exe are on the page.
    let session = crate::sessions::open_session(&app, &app.token).await;
    let (st, refusal) = crate::sessions::post_file(&app, &session, "bad.exe", &files[5].1).await;
    assert_eq!(st, 400);
    let words = refusal["verboseError"].as_str().expect("verboseError");
    assert_eq!(v["refused"], format!("Refused: {words}"), "{v}");
    assert_eq!(v["accepted"], serde_json::json!(["good.pdf"]));
    assert!(
        v["sessionState"]
            .as_str()
            .is_some_and(|s| s.contains("stored")),
        "{v}"
    );

    // The library: a download link fetched the bytes; one.txt was deleted.
    assert!(
        v["downloadUrl"]
            .as_str()
            .is_some_and(|u| u.contains("/dl/")),
        "{v}"
    );
    assert_eq!(v["downloadSha256"], sha256_hex(&files[1].1));
    let listed: Vec<String> = serde_json::from_value(v["afterDelete"].clone()).expect("names");
    assert!(!listed.iter().any(|n| n == "one.txt"), "{listed:?}");

    // What chute holds is what the page sent.
    let stored = app.list(&app.token).await;
    assert!(!stored.iter().any(|f| f["name"] == "one.txt"));
    for (name, data) in files
        .iter()
        .filter(|(n, _)| !["one.txt", "bad.exe"].contains(n))
    {
        let f = stored
            .iter()
            .find(|f| f["name"] == *name)
            .unwrap_or_else(|| panic!("{name} not stored"));
        assert_eq!(f["checksums"]["sha256"], sha256_hex(data), "{name}");
        assert_eq!(
            sha256_hex(&app.download(f["id"].as_str().expect("id")).await),
            sha256_hex(data),
            "{name}"
        );
    }
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());

    // A phone's width: nothing wider than the screen. A wrong token: refused in words.
    assert!(v["phoneOverflow"].as_i64().is_some_and(|o| o <= 0), "{v}");
    assert!(
        v["badToken"]
            .as_str()
            .is_some_and(|t| t.contains("not accepted")),
        "{v}"
    );
    // The application's signed token signs its user in, with nothing made by hand.
    assert!(
        v["jwtWho"]
            .as_str()
            .is_some_and(|w| w.starts_with("Signed in as page-user")),
        "{v}"
    );
    for shot in ["desktop.png", "phone.png"] {
        assert!(
            std::fs::metadata(dir.join(shot)).is_ok_and(|m| m.len() > 10_000),
            "{shot}"
        );
    }
}

#[tokio::test]
async fn the_page_can_be_turned_off_and_needs_nothing_from_the_network() {
    let app = spawn_app(&[]).await;
    let res = app.client.get(app.url("/")).send().await.expect("page");
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = res.text().await.expect("html");
    // Every script and style the page loads is chute's own, relative to the page.
    for attr in ["src=\"", "href=\""] {
        for rest in html.split(attr).skip(1) {
            let target = rest.split('"').next().unwrap_or("");
            assert!(
                !target.contains("//") || target.starts_with("data:"),
                "the page loads {target} from elsewhere"
            );
            // Relative to the page, so that it works under a path prefix too.
            assert!(!target.starts_with('/'), "{target} is not relative");
        }
    }
    for asset in [
        "/ui/app.js",
        "/ui/app.css",
        "/ui/uppy.min.js",
        "/ui/uppy.min.css",
    ] {
        let res = app.client.get(app.url(asset)).send().await.expect("asset");
        assert_eq!(res.status(), 200, "{asset}");
    }
    let off = spawn_app(&[("ui_enabled", "false")]).await;
    let res = off.client.get(off.url("/")).send().await.expect("page");
    assert_eq!(res.status(), 404);
}
