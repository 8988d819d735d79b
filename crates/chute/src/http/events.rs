//! The pull feed: `GET /api/events?after=CURSOR&limit=N&wait=SECONDS`, for applications that
//! cannot take webhooks. Staff tokens only. Events come in commit order, the same ids and
//! bodies as the webhooks carry; `next` is the cursor to ask with next time. With `wait`, an
//! empty answer waits up to that many seconds for an event (a long poll).

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::openapi::Errors;
use crate::events::EventRecord;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const MAX_WAIT: u64 = 60;
/// How often a long poll looks for other nodes' events (its own node's wake it at once).
const POLL: Duration = Duration::from_millis(500);

struct FeedQuery {
    after: i64,
    limit: u32,
    wait: u64,
}

fn parse_query(raw: Option<&str>) -> ApiResult<FeedQuery> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::bad_request(error_code::BAD_QUERY, "malformed query string"))?;
    let mut q = FeedQuery {
        after: 0,
        limit: DEFAULT_LIMIT,
        wait: 0,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "after" => {
                q.after = v.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
                    ApiError::bad_request(
                        error_code::BAD_CURSOR,
                        "`after` must be a cursor this feed returned as `next`",
                    )
                })?
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            error_code::BAD_LIMIT,
                            format!("limit must be 1 to {MAX_LIMIT}"),
                        )
                    })?
            }
            "wait" => {
                q.wait = v.parse().ok().filter(|n| *n <= MAX_WAIT).ok_or_else(|| {
                    ApiError::bad_request(
                        error_code::BAD_WAIT,
                        format!("wait must be 0 to {MAX_WAIT} seconds"),
                    )
                })?
            }
            _ => {}
        }
    }
    Ok(q)
}

/// One event as the feed shows it: its body (`type`, `timestamp`, `data`) with its `id`.
fn event_json(e: &EventRecord) -> Value {
    let mut v: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), json!(e.id));
    }
    v
}

/// The feed's query (read by hand, so that each bad value has its own code).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only described: `parse_query` reads the query.
struct FeedParams {
    /// A `next` this feed returned (else 400 `bad_cursor`); from the start when absent.
    after: Option<String>,
    /// Events per answer, 1 to 1000 (100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Seconds to hold an empty answer open until an event arrives, 0 to 60 (0).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u32>,
}

/// A page of the feed.
#[derive(utoipa::ToSchema)]
#[schema(as = EventPage)]
#[allow(dead_code)] // Only described: the events are kept as JSON.
struct EventPage {
    events: Vec<EventJson>,
    /// The cursor to ask `after` next.
    next: String,
}

/// One event.
#[derive(utoipa::ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)] // Only described.
struct EventJson {
    /// The event's id (the webhook's `webhook-id`).
    id: String,
    /// `upload.created`, `upload.finished`, ...
    #[schema(rename = "type")]
    kind: String,
    /// When it happened (RFC 3339).
    timestamp: String,
    /// What it is about: the upload, the file.
    data: serde_json::Value,
}

#[utoipa::path(
    get,
    path = "/api/events",
    tag = "operations",
    summary = "Recorded events in commit order (staff only)",
    params(FeedParams),
    responses((status = 200, description = "Events after the cursor", body = EventPage), Errors),
    security(("token" = [])),
)]
pub async fn feed(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    if !user.is_staff {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            error_code::FORBIDDEN,
            "the event feed is for staff tokens",
        ));
    }
    let q = parse_query(raw.as_deref())?;
    let meta = &state.engine.meta;
    // Subscribed before the first read, so an event committed in between wakes the wait.
    let mut wake = state.engine.events.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    let events = loop {
        let events = meta.events_after(q.after, q.limit).await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            break events;
        }
        let until = deadline.min(tokio::time::Instant::now() + POLL);
        let _ = tokio::time::timeout_at(until, wake.changed()).await;
    };
    let next = events.last().map_or(q.after, |e| e.seq);
    Ok(Json(json!({
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
        "next": next.to_string(),
    })))
}
