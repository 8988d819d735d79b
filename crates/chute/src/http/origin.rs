//! Where a request came from, for the blocking hooks: the client's address (the connection's
//! peer, which `app::serve_app` records on every request) and the request headers named in
//! `hooks_forward_headers`. Empty, and free, when no blocking hook is on. Also what a form or
//! session request's handler chain needs for the hooks (`form_hooks`).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

use super::proxies::ClientAddr;
use crate::events::EventType;
use crate::meta::User;
use crate::upload::Engine;
use crate::upload::handlers::gate::GateContext;
use crate::upload::handlers::progress_events::ProgressEvents;
use crate::upload::hooks::Origin;

pub fn origin(engine: &Engine, headers: &HeaderMap, ext: &Extensions) -> Origin {
    if !engine.asks(EventType::PreCreate) && !engine.asks(EventType::PreFinish) {
        return Origin::default();
    }
    Origin {
        // The trusted proxies' word (`http::proxies`), else the connection's peer.
        client: ext
            .get::<ClientAddr>()
            .map(|ClientAddr(a)| a.to_string())
            .or_else(|| {
                ext.get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(a)| a.ip().to_string())
            }),
        headers: headers
            .iter()
            .filter(|(name, _)| engine.forwards_header(name.as_str()))
            .filter_map(|(name, v)| Some((name.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
    }
}

/// The pre-create gate and the `upload.progress` events of one form or session request of
/// `user`, each None when it is off.
pub fn form_hooks(
    engine: &Engine,
    user: &User,
    protocol: &'static str,
    session: Option<&str>,
    headers: &HeaderMap,
    ext: &Extensions,
) -> (Option<GateContext>, Option<ProgressEvents>) {
    let gate = engine.asks(EventType::PreCreate).then(|| GateContext {
        engine: engine.clone(),
        owner_id: user.id,
        protocol,
        session: session.map(str::to_string),
        origin: origin(engine, headers, ext),
    });
    let progress = ProgressEvents::for_request(
        &engine.events,
        protocol,
        &user.name,
        session.map(str::to_string),
    );
    (gate, progress)
}
