//! chute behind a proxy, or under a path prefix: where clients reach it, and who they are.
//!
//! The public address is `public_url` when set. Else, for a request from one of the
//! `trusted_proxies`, it comes from `Forwarded` (RFC 7239: `proto`, `host`) or from
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix`; the client's address
//! comes from `Forwarded: for=` or `X-Forwarded-For`, read from the right and skipping the
//! trusted proxies. Anyone else's such headers are ignored.
//!
//! The handlers build chute's own paths (`/tus/ID`, `/api/files/ID`); this layer turns them
//! into the public address's URLs on the way out: the `Location` header, a final upload's
//! `Upload-Concat`, and each `"url"` of a JSON body.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::AppState;
use crate::config::Settings;

/// Where clients reach chute: an origin (`https://host:port`, when known) and a path prefix
/// (empty or `/prefix`, no trailing slash).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicBase {
    pub origin: Option<String>,
    pub prefix: String,
}

impl PublicBase {
    /// chute's own path `path` (starting with `/`) as clients reach it.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}{}{path}",
            self.origin.as_deref().unwrap_or(""),
            self.prefix
        )
    }

    fn is_own(&self) -> bool {
        self.origin.is_none() && self.prefix.is_empty()
    }

    fn from_url(url: &str) -> Self {
        let url = url.trim_end_matches('/');
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        match url[after_scheme..].find('/') {
            Some(i) => Self {
                origin: Some(url[..after_scheme + i].to_string()),
                prefix: url[after_scheme + i..].to_string(),
            },
            None => Self {
                origin: Some(url.to_string()),
                prefix: String::new(),
            },
        }
    }
}

/// The client's address as chute believes it: the trusted proxies' word, else the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The public address and the client of a request from `peer`.
pub fn resolve(s: &Settings, peer: Option<IpAddr>, h: &HeaderMap) -> (PublicBase, Option<IpAddr>) {
    let trusted = peer.is_some_and(|p| s.trusted_proxies.contains(p));
    let fixed = (!s.public_url.is_empty()).then(|| PublicBase::from_url(&s.public_url));
    if !trusted {
        return (fixed.unwrap_or_default(), peer);
    }
    let fwd = forwarded(h);
    let first = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
    };
    // The client: the nearest address that is not a trusted proxy, reading from the right.
    let chain: Vec<IpAddr> = if fwd.is_empty() {
        h.get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| node_ip(a.trim()))
            .collect()
    } else {
        fwd.iter()
            .filter_map(|e| node_ip(e.for_.as_deref()?))
            .collect()
    };
    let client = chain
        .iter()
        .rev()
        .find(|a| !s.trusted_proxies.contains(**a))
        .or(chain.first())
        .copied()
        .or(peer);
    if let Some(base) = fixed {
        return (base, client);
    }
    let proto = fwd
        .first()
        .and_then(|e| e.proto.clone())
        .or_else(|| first("x-forwarded-proto"))
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| p == "http" || p == "https");
    let host = fwd
        .first()
        .and_then(|e| e.host.clone())
        .or_else(|| first("x-forwarded-host"))
        .filter(|h| valid_host(h));
    let prefix = first("x-forwarded-prefix")
        .map(|p| p.trim_end_matches('/').to_string())
        .filter(|p| valid_prefix(p))
        .unwrap_or_default();
    let origin = match (proto, host) {
        (Some(p), Some(h)) => Some(format!("{p}://{h}")),
        // A host without a scheme (or the reverse) names no address.
        _ => None,
    };
    (PublicBase { origin, prefix }, client)
}

/// One element of `Forwarded`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Element {
    for_: Option<String>,
    proto: Option<String>,
    host: Option<String>,
}

/// The elements of every `Forwarded` header, in order (RFC 7239: `for=...;proto=...,...`,
/// values as tokens or quoted strings).
fn forwarded(h: &HeaderMap) -> Vec<Element> {
    let mut out = Vec::new();
    for v in h.get_all(header::FORWARDED) {
        let Ok(v) = v.to_str() else { continue };
        for elem in v.split(',') {
            let mut e = Element::default();
            for pair in elem.split(';') {
                let Some((k, val)) = pair.split_once('=') else {
                    continue;
                };
                let val = val.trim().trim_matches('"').to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "for" => e.for_ = Some(val),
                    "proto" => e.proto = Some(val),
                    "host" => e.host = Some(val),
                    _ => {}
                }
            }
            out.push(e);
        }
    }
    out
}

/// The address in a node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1`.
fn node_ip(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Ok(sa) = node.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    node.strip_prefix('[')?.split(']').next()?.parse().ok()
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

fn valid_prefix(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 256
        && !p.contains("//")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
}

/// Records the client's address for the handlers, and gives the response's URLs the public
/// address.
pub async fn layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let s = &state.engine.settings;
    if s.public_url.is_empty() && s.trusted_proxies.0.is_empty() {
        // Nothing to believe and nothing to rewrite: the handlers' own paths and the peer.
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let (base, client) = resolve(&state.engine.settings, peer, req.headers());
    if let Some(c) = client {
        req.extensions_mut().insert(ClientAddr(c));
    }
    let res = next.run(req).await;
    if base.is_own() {
        return res;
    }
    public_urls(res, &base).await
}

/// A JSON body larger than this keeps chute's own paths (no answer of chute's comes near).
const MAX_REWRITTEN: usize = 8 << 20;

async fn public_urls(res: Response, base: &PublicBase) -> Response {
    let (mut parts, body) = res.into_parts();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(v) = parts.headers.get(&name).and_then(|v| v.to_str().ok())
            && v.starts_with('/')
            && let Ok(v) = HeaderValue::from_str(&base.url(v))
        {
            parts.headers.insert(name, v);
        }
    }
    if let Some(list) = parts
        .headers
        .get("upload-concat")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("final;"))
    {
        let urls: Vec<String> = list
            .split_whitespace()
            .map(|u| {
                if u.starts_with('/') {
                    base.url(u)
                } else {
                    u.to_string()
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("final;{}", urls.join(" "))) {
            parts.headers.insert("upload-concat", v);
        }
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REWRITTEN).await else {
        // Over the bound (never for chute's answers) or broken: cannot be sent as it was.
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    rewrite_urls(&mut v, base);
    let out = serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Response::from_parts(parts, Body::from(out))
}

/// Every `"url"` string that is one of chute's paths becomes the public address's URL.
fn rewrite_urls(v: &mut Value, base: &PublicBase) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match val {
                    Value::String(s) if k == "url" && s.starts_with('/') => *s = base.url(s),
                    other => rewrite_urls(other, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_urls(i, base)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trusted: &str, public: &str) -> Settings {
        let mut s = Settings::defaults();
        s.trusted_proxies = crate::config::SettingValue::parse_str(trusted).expect("networks");
        s.public_url = public.into();
        s
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let s = settings("10.0.0.0/8, ::1", "");
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "files.example"),
            ("x-forwarded-prefix", "/uploads/"),
        ]);
        let (base, client) = resolve(&s, ip("10.1.2.3"), &h);
        assert_eq!(base.url("/tus/a"), "https://files.example/uploads/tus/a");
        assert_eq!(client, ip("203.0.113.9"));
        // The same headers from anyone else change nothing.
        let (base, client) = resolve(&s, ip("192.0.2.1"), &h);
        assert_eq!(base, PublicBase::default());
        assert_eq!(client, ip("192.0.2.1"));
        // An IPv4 peer seen as IPv4-mapped IPv6 is still the trusted proxy.
        let (_, client) = resolve(&s, ip("::ffff:10.1.2.3"), &h);
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_is_read_as_rfc_7239_writes_it() {
        let s = settings("127.0.0.1", "");
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https;host=\"files.example:8443\", for=127.0.0.1",
        )]);
        let (base, client) = resolve(&s, ip("127.0.0.1"), &h);
        assert_eq!(base.url("/x"), "https://files.example:8443/x");
        assert_eq!(client, ip("2001:db8::1"));
    }

    #[test]
    fn bad_values_are_ignored_and_public_url_wins() {
        let s = settings("127.0.0.1", "");
        let h = headers(&[
            ("x-forwarded-proto", "javascript"),
            ("x-forwarded-host", "evil.example/path"),
            ("x-forwarded-prefix", "//evil.example"),
        ]);
        let (base, _) = resolve(&s, ip("127.0.0.1"), &h);
        assert_eq!(base, PublicBase::default());
        let s = settings("127.0.0.1", "https://files.example/up/");
        let h = headers(&[
            ("x-forwarded-host", "other.example"),
            ("x-forwarded-proto", "http"),
        ]);
        let (base, _) = resolve(&s, ip("127.0.0.1"), &h);
        assert_eq!(base.url("/tus/a"), "https://files.example/up/tus/a");
    }

    #[test]
    fn urls_in_json_are_made_public() {
        let base = PublicBase {
            origin: Some("https://f.example".into()),
            prefix: "/u".into(),
        };
        let mut v = serde_json::json!({"files": [{"url": "/api/files/a", "name": "/etc"}],
                                       "url": "https://elsewhere/x"});
        rewrite_urls(&mut v, &base);
        assert_eq!(v["files"][0]["url"], "https://f.example/u/api/files/a");
        assert_eq!(v["files"][0]["name"], "/etc");
        assert_eq!(v["url"], "https://elsewhere/x");
    }
}
