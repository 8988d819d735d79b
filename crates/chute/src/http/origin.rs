//! Where a request came from, for the blocking hooks: the client's address (the connection's
//! peer, which `app::serve_app` records on every request) and the request headers named in
//! `hooks_forward_headers`. Empty, and free, when no blocking hook is on.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

use crate::events::EventType;
use crate::upload::Engine;
use crate::upload::hooks::Origin;

pub fn origin(engine: &Engine, headers: &HeaderMap, ext: &Extensions) -> Origin {
    if !engine.asks(EventType::PreCreate) && !engine.asks(EventType::PreFinish) {
        return Origin::default();
    }
    Origin {
        client: ext
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip().to_string()),
        headers: headers
            .iter()
            .filter(|(name, _)| engine.forwards_header(name.as_str()))
            .filter_map(|(name, v)| Some((name.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
    }
}
