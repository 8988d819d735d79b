//! nginx in front of chute in x-accel-redirect mode, with the server block chute ships
//! (config/nginx-chute.conf), started by `scripts/nginx-test.sh`: the bytes come through nginx,
//! the internal location is closed to direct requests, and access rules still hold.

use std::path::Path;
use std::time::Duration;

use crate::helpers::*;
use crate::servers::ScriptServer;
use crate::sessions::{open_session, pdf};

/// nginx started by `scripts/nginx-test.sh` in front of a chute.
struct Nginx {
    port: u16,
    _server: ScriptServer,
}

async fn start_nginx(chute: std::net::SocketAddr, objects: &Path) -> Nginx {
    let port = free_port();
    let mut server = ScriptServer::spawn("nginx", "nginx-test.sh", "TERM", |dir| {
        vec![
            dir.display().to_string(),
            format!("127.0.0.1:{port}"),
            chute.to_string(),
            objects.display().to_string(),
        ]
    });
    server.wait_for_port(port, Duration::from_secs(30)).await;
    Nginx {
        port,
        _server: server,
    }
}

#[tokio::test]
async fn nginx_serves_session_files_by_x_accel_redirect() {
    let app = spawn_app(&[
        ("serve_mode", "x-accel-redirect"),
        ("x_accel_prefix", "/protected/"),
    ])
    .await;
    let objects = app.data_dir().join("files/objects");
    std::fs::create_dir_all(&objects).expect("objects dir");
    let addr = app.addr;
    let nginx = start_nginx(addr, &objects).await;
    let via = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);

    // Upload through nginx (streamed, unbuffered), then read it back through nginx.
    let s = open_session(&app, &app.token).await;
    let content = pdf(3 << 20, 31);
    let body = multipart_body(&[file_part("file", "scan été.pdf", &content)]);
    let res = app
        .client
        .post(via(&format!("/upload-session/{s}/files/")))
        .bearer_auth(&app.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload via nginx");
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.expect("json");
    let url = v["url"].as_str().expect("url").to_string();

    // chute alone answers headers and the redirect, no body.
    let res = app
        .client
        .get(app.url(&url))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("direct");
    assert_eq!(res.status(), 200);
    let target = res.headers()["x-accel-redirect"]
        .to_str()
        .expect("header")
        .to_string();
    assert!(target.starts_with("/protected/"), "{target}");
    assert!(res.bytes().await.expect("body").is_empty());

    let res = app
        .client
        .get(via(&url))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("via nginx");
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-accel-redirect").is_none());
    assert_eq!(res.headers()["content-type"], "application/pdf");
    let cd = res.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .to_string();
    assert!(
        cd.starts_with("inline") && cd.contains("filename*=UTF-8''scan%20%C3%A9t%C3%A9.pdf"),
        "{cd}"
    );
    assert_eq!(
        sha256_hex(&res.bytes().await.expect("bytes")),
        sha256_hex(&content)
    );

    // nginx serves ranges of the file itself.
    let res = app
        .client
        .get(via(&url))
        .bearer_auth(&app.token)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.expect("bytes").as_ref(),
        &content[1000..2000]
    );

    // The internal location is not reachable from outside, even with the exact path.
    for path in [target.as_str(), "/protected/", "/protected/../chute.db"] {
        let res = app.client.get(via(path)).send().await.expect("internal");
        assert_eq!(res.status(), 404, "{path}");
        let got = res.bytes().await.expect("body");
        assert!(!got.starts_with(b"%PDF"), "{path} leaked the file");
    }

    // A user without access gets chute's 404 through nginx, and no bytes.
    let mallory = app.user("mallory").await;
    let res = app
        .client
        .get(via(&url))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("mallory");
    assert_eq!(res.status(), 404);
    let v: serde_json::Value = res.json().await.expect("json error");
    assert!(v["error"].is_string());
    let res = app.client.get(via(&url)).send().await.expect("anonymous");
    assert_eq!(res.status(), 401);
    drop(nginx);
}
