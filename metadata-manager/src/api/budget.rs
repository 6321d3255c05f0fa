//! The body budget: room for the large request bodies read and processed
//! at once (`max_buffered_bodies`), shared fairly between users.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ibp_https::{ApiError, Authenticate, PeerChain};

use super::{body_limit, App, Caller, SMALL_BODY};

/// The budget of large request bodies read and processed at once: a
/// semaphore of KiB, how long a request waits for room, and what each user
/// holds (a user who holds half of it is refused more).
pub struct BodyBudget {
    room: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
    wait: Duration,
    held: Mutex<HashMap<(String, String), u32>>,
}

impl BodyBudget {
    pub fn new(bytes: u64, wait: Duration) -> BodyBudget {
        let total_kib = u32::try_from(bytes / 1024)
            .unwrap_or(u32::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u32);
        BodyBudget {
            room: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
            wait,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// KiB free now (for tests and logs).
    pub fn available_kib(&self) -> usize {
        self.room.available_permits()
    }
}

/// A user's share of the body budget, returned when dropped.
struct Held<'a> {
    budget: &'a BodyBudget,
    key: (String, String),
    kib: u32,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.budget.held.lock() {
            if let Some(v) = m.get_mut(&self.key) {
                *v = v.saturating_sub(self.kib);
                if *v == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

/// Holds a large request (a body over [`SMALL_BODY`], or of unknown
/// length) until its bytes fit in `max_buffered_bodies` with everything
/// else being read and processed, for the whole request: so that many
/// concurrent puts cannot take the manager's memory. Only a member who may
/// use the manager queues (others are refused before their body is read);
/// a user who already holds half of the budget gets 503 at once (one
/// member cannot take it all); a request that finds no room within
/// `buffered_body_wait` gets 503 and `Retry-After`.
pub(super) async fn body_budget(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    let length = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = body_limit(app.max_exnode) as u64;
    let bytes = match length {
        Some(n) if n <= SMALL_BODY => return next.run(req).await,
        // Refused unread (413) by the body limit.
        Some(n) if n > limit => return next.run(req).await,
        Some(n) => n,
        None if !req.headers().contains_key(TRANSFER_ENCODING) => return next.run(req).await,
        None => limit,
    };
    let peer = req
        .extensions()
        .get::<PeerChain>()
        .cloned()
        .unwrap_or(PeerChain(None));
    let who = match <App as Authenticate<Caller>>::authenticate(&app, &peer).await {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let budget = &app.bodies;
    let kib = u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .min(budget.total_kib);
    let key = (who.id.vo.clone(), who.id.vo_id.clone());
    let held = {
        let Ok(mut m) = budget.held.lock() else {
            return ApiError::internal("internal error").into_response();
        };
        let mine = m.entry(key.clone()).or_default();
        if *mine > 0 && *mine >= budget.total_kib / 2 {
            let have = *mine;
            drop(m);
            tracing::info!(vo = %key.0, vo_id = %key.1, held_kib = have, request_kib = kib, "large request refused: the user's share of max_buffered_bodies is in use");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "busy: your requests already hold {have} KiB of the {} KiB of request bodies this metadata manager processes at once (max_buffered_bodies; one user may hold half); retry when they are done",
                    budget.total_kib
                ),
            )
            .into_response();
        }
        *mine += kib;
        Held { budget, key, kib }
    };
    let permit =
        tokio::time::timeout(budget.wait, budget.room.clone().acquire_many_owned(kib)).await;
    let Ok(Ok(permit)) = permit else {
        tracing::warn!(vo = %held.key.0, vo_id = %held.key.1, request_kib = kib, "large request refused: no room under max_buffered_bodies in time");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: {} KiB of request bodies are being processed (max_buffered_bodies = {} KiB) and this request ({bytes} bytes) found no room within {:?}; retry shortly",
                budget.total_kib as usize - budget.room.available_permits().min(budget.total_kib as usize),
                budget.total_kib,
                budget.wait
            ),
        )
        .into_response();
    };
    tracing::debug!(vo = %held.key.0, vo_id = %held.key.1, kib, free_kib = budget.room.available_permits(), "large request admitted under max_buffered_bodies");
    let answer = next.run(req).await;
    drop(permit);
    drop(held);
    answer
}
