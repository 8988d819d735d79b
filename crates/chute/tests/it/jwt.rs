//! Signed tokens from the application (JWTs): minted by PyJWT (`e2e/mint_jwt.py`) and by the
//! npm package `jose` (`e2e/mint-jose.mjs`), never by chute, and checked by chute as Bearer
//! tokens beside its own API tokens.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) const SECRET: &str = "an application secret of at least thirty-two bytes";
const AUDIENCE: &str = "chute-test";
const ISSUER: &str = "https://app.example";

/// Key pairs made by PyJWT's `cryptography` (rsa, rsa2, ec, ed) in a folder of the test's.
fn key_pairs(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    let python = e2e_dir().join(".venv/bin/python");
    let st = std::process::Command::new(&python)
        .arg(e2e_dir().join("mint_jwt.py"))
        .arg("keys")
        .arg(&keys)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "{} cannot run ({e}): run scripts/setup-e2e.sh",
                python.display()
            )
        });
    assert!(st.success(), "mint_jwt.py keys failed");
    keys
}

/// Tokens for `specs` (see the scripts), minted by PyJWT (`jose: false`) or by jose.
pub(crate) fn mint(specs: &Value, jose: bool) -> Vec<String> {
    let mut cmd = if jose {
        let mut c = std::process::Command::new("node");
        c.arg(e2e_dir().join("mint-jose.mjs"));
        c
    } else {
        let mut c = std::process::Command::new(e2e_dir().join(".venv/bin/python"));
        c.arg(e2e_dir().join("mint_jwt.py"));
        c
    };
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("minting script (scripts/setup-e2e.sh)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(specs.to_string().as_bytes())
            .expect("specs");
    }
    let out = child.wait_with_output().expect("minted");
    assert!(out.status.success(), "minting failed for {specs}");
    serde_json::from_slice(&out.stdout).expect("a JSON list of tokens")
}

/// A spec with the claims every valid token here carries, `extra` merged in.
fn spec(alg: &str, key: &str, sub: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "aud": AUDIENCE, "iss": ISSUER});
    let mut s = json!({"alg": alg, "key": key, "exp_in": 300});
    if let Value::Object(e) = extra {
        for (k, v) in e {
            match k.as_str() {
                "exp_in" | "nbf_in" | "headers" => s[k] = v,
                _ if v.is_null() => {
                    claims.as_object_mut().expect("claims").remove(&k);
                }
                _ => claims[k] = v,
            }
        }
    }
    s["claims"] = claims;
    s
}

async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let st = res.status().as_u16();
    (st, res.json().await.unwrap_or(Value::Null))
}

async fn upload(app: &TestApp, token: &str, name: &str, data: &[u8]) -> (u16, Value) {
    form_upload_to(app.url("").trim_end_matches('/'), token, name, data).await
}

fn jwt_settings(keys: &Path, public: &str) -> Vec<(&'static str, String)> {
    vec![
        ("auth_jwt_secret", SECRET.to_string()),
        (
            "auth_jwt_public_key",
            keys.join(format!("{public}.pub.pem")).display().to_string(),
        ),
        ("auth_jwt_audience", AUDIENCE.to_string()),
        ("auth_jwt_issuer", ISSUER.to_string()),
    ]
}

async fn spawn(settings: &[(&'static str, String)]) -> TestApp {
    let s: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app(&s).await
}

#[tokio::test]
async fn the_applications_signed_tokens_let_its_users_in_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = key_pairs(dir.path());
    let key = |n: &str| keys.join(format!("{n}.pem")).display().to_string();
    let app = spawn(&jwt_settings(&keys, "rsa")).await;

    // Accepted: HS256 and RS256, each minted by PyJWT and by jose. Each user is created on
    // first sight, and is not staff.
    let py = mint(
        &json!([
            spec("HS256", SECRET, "alice", json!({})),
            spec("RS256", &key("rsa"), "carol", json!({"staff": true})),
            // Expired 5 s ago: within the 30 s leeway.
            spec("HS256", SECRET, "frank", json!({"exp_in": -5})),
        ]),
        false,
    );
    let js = mint(
        &json!([
            {"alg": "HS256", "key": SECRET, "exp_in": 300,
             "claims": {"sub": "bob", "aud": AUDIENCE, "iss": ISSUER}},
            {"alg": "RS256", "key": key("rsa"), "exp_in": 300,
             "claims": {"sub": "dave", "aud": AUDIENCE, "iss": ISSUER}},
        ]),
        true,
    );
    for (token, name) in py
        .iter()
        .zip(["alice", "carol", "frank"])
        .chain(js.iter().zip(["bob", "dave"]))
    {
        let (st, me) = get(&app, "/api/me", token).await;
        assert_eq!(st, 200, "{name}: {me}");
        assert_eq!(me["name"], name);
        // `staff: true` counts only with auth_jwt_allow_staff.
        assert_eq!(me["staff"], false, "{name}: {me}");
        assert_eq!(me["usage"], 0);
    }
    // The user's files are theirs: an upload with the token, downloaded with it whole.
    let data = bytes(300_000, 41);
    let (st, f) = upload(&app, &py[0], "signed.bin", &data).await;
    assert_eq!(st, 201, "{f}");
    let id = f["files"][0]["id"].as_str().expect("id").to_string();
    let got = app
        .client
        .get(app.url(&format!("/api/files/{id}")))
        .bearer_auth(&py[0])
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let (st, me) = get(&app, "/api/me", &py[0]).await;
    assert_eq!((st, me["usage"].as_u64()), (200, Some(data.len() as u64)));
    // Another signed user does not see it.
    let (st, list) = get(&app, "/api/files", &js[0]).await;
    assert_eq!((st, list["files"].as_array().map(Vec::len)), (200, Some(0)));
    // chute's own API tokens keep working beside them.
    let (st, me) = get(&app, "/api/me", &app.token).await;
    assert_eq!(
        (st, me["name"].as_str(), me["staff"].as_bool()),
        (200, Some("admin"), Some(true))
    );

    // Refused, each with 401 and its code.
    let refused = [
        (
            "expired beyond the leeway",
            spec("HS256", SECRET, "u1", json!({"exp_in": -120})),
            "token_expired",
        ),
        (
            "not valid yet",
            spec("HS256", SECRET, "u2", json!({"nbf_in": 600})),
            "token_invalid",
        ),
        (
            "alg none",
            spec("none", "", "u3", json!({})),
            "token_invalid",
        ),
        (
            "HS256 keyed with the RSA public key (algorithm confusion)",
            spec(
                "HS256-raw",
                &keys.join("rsa.pub.pem").display().to_string(),
                "u4",
                json!({}),
            ),
            "token_invalid",
        ),
        (
            "another secret",
            spec(
                "HS256",
                "another secret, also at least 32 bytes long",
                "u5",
                json!({}),
            ),
            "token_invalid",
        ),
        (
            "another RSA key",
            spec("RS256", &key("rsa2"), "u6", json!({})),
            "token_invalid",
        ),
        (
            "an ES256 key that is not configured",
            spec("ES256", &key("ec"), "u7", json!({})),
            "token_invalid",
        ),
        (
            "a wrong audience",
            spec("HS256", SECRET, "u8", json!({"aud": "another-service"})),
            "token_invalid",
        ),
        (
            "no audience",
            spec("HS256", SECRET, "u9", json!({"aud": null})),
            "token_invalid",
        ),
        (
            "a wrong issuer",
            spec(
                "HS256",
                SECRET,
                "u10",
                json!({"iss": "https://evil.example"}),
            ),
            "token_invalid",
        ),
        (
            "no issuer",
            spec("HS256", SECRET, "u11", json!({"iss": null})),
            "token_invalid",
        ),
        (
            "no sub",
            spec("HS256", SECRET, "u12", json!({"sub": null})),
            "token_invalid",
        ),
        (
            "a sub that is not a user name",
            spec("HS256", SECRET, "../etc", json!({})),
            "token_invalid",
        ),
    ];
    let specs: Vec<Value> = refused.iter().map(|(_, s, _)| s.clone()).collect();
    let tokens = mint(&Value::Array(specs), false);
    // And one with no exp at all, and one whose payload was changed after signing.
    let no_exp = mint(
        &json!([{"alg": "HS256", "key": SECRET,
                 "claims": {"sub": "u13", "aud": AUDIENCE, "iss": ISSUER}}]),
        false,
    );
    let mut parts: Vec<String> = py[0].split('.').map(str::to_string).collect();
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value =
            serde_json::from_slice(&b64.decode(&parts[1]).expect("payload")).expect("claims");
        claims["sub"] = json!("admin");
        parts[1] = b64.encode(claims.to_string());
    }
    let tampered = parts.join(".");
    let mut cases: Vec<(&str, String, &str)> = refused
        .iter()
        .zip(tokens)
        .map(|((what, _, code), t)| (*what, t, *code))
        .collect();
    cases.push(("no exp", no_exp[0].clone(), "token_invalid"));
    cases.push((
        "a payload changed after signing (sub: admin)",
        tampered,
        "token_invalid",
    ));
    cases.push(("three parts of garbage", "a.b.c".into(), "token_invalid"));
    for (what, token, code) in &cases {
        let (st, v) = get(&app, "/api/me", token).await;
        assert_eq!((st, v["code"].as_str()), (401, Some(*code)), "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
        // Nothing is reachable with it either.
        let (st, _) = upload(&app, token, "x.bin", b"x").await;
        assert_eq!(st, 401, "{what}");
    }
    // No refused token made a user.
    for u in [
        "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9", "u10", "u11", "u13",
    ] {
        assert!(
            app.state
                .engine
                .meta
                .user_by_name(u)
                .await
                .expect("lookup")
                .is_none(),
            "{u} was created"
        );
    }
    // A 100 KiB Authorization header is refused before it is read (the request head limit).
    let huge = format!(
        "{}.{}.{}",
        "e".repeat(50_000),
        "e".repeat(50_000),
        "e".repeat(2_000)
    );
    let res = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth(&huge)
        .send()
        .await
        .expect("huge");
    assert_eq!(res.status(), 431);

    // Eight first requests of a new user at once: one user, every request served.
    let first = mint(&json!([spec("HS256", SECRET, "zed", json!({}))]), false);
    let reqs = (0..8).map(|_| get(&app, "/api/me", &first[0]));
    for (st, v) in futures::future::join_all(reqs).await {
        assert_eq!((st, v["name"].as_str()), (200, Some("zed")), "{v}");
    }
}

#[tokio::test]
async fn ec_and_ed25519_public_keys_verify_their_own_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = key_pairs(dir.path());
    let key = |n: &str| keys.join(format!("{n}.pem")).display().to_string();
    for (kind, alg, other) in [("ec", "ES256", "ed"), ("ed", "EdDSA", "ec")] {
        // The key given as PEM text this time.
        let pem = std::fs::read_to_string(keys.join(format!("{kind}.pub.pem"))).expect("pem");
        let app = spawn(&[
            ("auth_jwt_public_key", pem),
            ("auth_jwt_audience", AUDIENCE.to_string()),
        ])
        .await;
        let plain = |sub: &str, k: &str, a: &str| json!({"alg": a, "key": k, "exp_in": 300, "claims": {"sub": sub, "aud": AUDIENCE}});
        let py = mint(&json!([plain("py-user", &key(kind), alg)]), false);
        let js = mint(&json!([plain("jose-user", &key(kind), alg)]), true);
        for (t, name) in [(&py[0], "py-user"), (&js[0], "jose-user")] {
            let (st, me) = get(&app, "/api/me", t).await;
            assert_eq!((st, me["name"].as_str()), (200, Some(name)), "{alg}: {me}");
        }
        let other_alg = if other == "ec" { "ES256" } else { "EdDSA" };
        let bad = mint(
            &json!([
                plain("x", &key(other), other_alg),
                plain("y", &key("rsa"), "RS256"),
                plain("z", SECRET, "HS256"),
            ]),
            false,
        );
        for t in &bad {
            let (st, v) = get(&app, "/api/me", t).await;
            assert_eq!(
                (st, v["code"].as_str()),
                (401, Some("token_invalid")),
                "{alg}: {v}"
            );
        }
    }
}

#[tokio::test]
async fn a_tokens_claims_narrow_its_limits_and_may_make_staff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = key_pairs(dir.path());
    let mut settings = jwt_settings(&keys, "rsa");
    settings.push(("auth_jwt_allow_staff", "true".into()));
    settings.push(("max_upload_size", "8MiB".into()));
    settings.push(("max_request_header_size", "256KiB".into()));
    let app = spawn(&settings).await;
    let tokens = mint(
        &json!([
            spec(
                "HS256",
                SECRET,
                "narrow",
                json!({"max_upload_size": 100_000, "quota": 150_000})
            ),
            spec("HS256", SECRET, "narrow", json!({})),
            spec("HS256", SECRET, "boss", json!({"staff": true})),
            // Claims cannot raise the server's limit.
            spec(
                "HS256",
                SECRET,
                "wide",
                json!({"max_upload_size": 1_000_000_000u64})
            ),
            // 100 KiB of claims: under the head limit here, over the token limit.
            spec(
                "HS256",
                SECRET,
                "big",
                json!({"pad": "p".repeat(100 * 1024)})
            ),
            spec(
                "HS256",
                SECRET,
                "capped",
                json!({"max_upload_size": 100_000})
            ),
            spec("HS256", SECRET, "capped", json!({})),
        ]),
        false,
    );
    let (narrow, plain, boss, wide, big) =
        (&tokens[0], &tokens[1], &tokens[2], &tokens[3], &tokens[4]);
    let (capped, capped_plain) = (&tokens[5], &tokens[6]);
    let (st, me) = get(&app, "/api/me", narrow).await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(
        (me["max_upload_size"].as_u64(), me["quota"].as_u64()),
        (Some(100_000), Some(150_000))
    );
    let (_, me) = get(&app, "/api/me", wide).await;
    assert_eq!(me["max_upload_size"].as_u64(), Some(8 << 20));
    let (st, me) = get(&app, "/api/me", boss).await;
    assert_eq!((st, me["staff"].as_bool()), (200, Some(true)), "{me}");
    let (st, v) = get(&app, "/api/me", big).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("token_invalid")),
        "{v}"
    );

    // A form upload over the token's maximum is refused; two under it fit the quota, a third
    // does not.
    let (st, v) = upload(&app, narrow, "big.bin", &bytes(120_000, 1)).await;
    assert_eq!(st, 413, "{v}");
    for i in 0..2 {
        let (st, v) = upload(&app, narrow, "ok.bin", &bytes(60_000, i)).await;
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = upload(&app, narrow, "third.bin", &bytes(60_000, 9)).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["code"], "quota_exceeded", "{v}");
    // The same user with an unnarrowed token is held only to the server's limits.
    let (st, v) = upload(&app, plain, "third.bin", &bytes(60_000, 9)).await;
    assert_eq!(st, 201, "{v}");

    // tus: a declared length over the token's maximum is refused at creation.
    let create = |token: &str, length: Option<u64>| {
        let mut rb = app
            .client
            .post(app.url("/tus/"))
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0");
        rb = match length {
            Some(l) => rb.header("Upload-Length", l),
            None => rb.header("Upload-Defer-Length", "1"),
        };
        rb.send()
    };
    let res = create(capped, Some(120_000)).await.expect("create");
    assert_eq!(res.status(), 413);
    // A deferred upload made with the narrowed token keeps its maximum when it is continued
    // with the unnarrowed one: the bytes stop at 100,000.
    let res = create(capped, None).await.expect("create");
    assert_eq!(res.status(), 201);
    let loc = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let res = app
        .client
        .patch(app.url(&loc))
        .bearer_auth(capped_plain)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes(120_000, 3))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 413);
    let res = app
        .client
        .head(app.url(&loc))
        .bearer_auth(capped_plain)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    let offset: u64 = res.headers()["upload-offset"]
        .to_str()
        .expect("offset")
        .parse()
        .expect("n");
    assert!(offset <= 100_000, "{offset}");
    // Nor can a length declared later pass it (the upload would then take all it declared).
    let res = create(capped, None).await.expect("create");
    let loc = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let res = app
        .client
        .patch(app.url(&loc))
        .bearer_auth(capped_plain)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Upload-Length", "120000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes(1_000, 4))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 413);
}
