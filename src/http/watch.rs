//! The browser side, authorised by the watch token alone. Never shows identity data.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::{Source, WatchToken, network};
use crate::error::{ApiError, ErrorBody};
use crate::http::Web;
use crate::http::client_ip;
use crate::http::poll::{WaitQuery, respond_with_state, state_response};
use crate::http::sse::{self, EventsQuery, last_event_id};
use crate::service::{self, Audience, Context, LoginState};
use crate::store::limits;
use crate::store::logins::{self, Poll};

/// Browser addresses (by `network::bucket`, as they are counted) refused after too many
/// unknown watch tokens, until their window ends. The count is kept in PostgreSQL; the
/// refusal is remembered here so it costs no count.
#[derive(Default)]
pub struct Blocks(Mutex<HashMap<String, Instant>>);

impl Blocks {
    fn remaining(&self, bucket: &str) -> Option<u64> {
        let mut blocks = self.0.lock().unwrap();
        let until = *blocks.get(bucket)?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            blocks.remove(bucket);
            return None;
        }
        Some(left.as_secs().max(1))
    }

    fn block(&self, bucket: String, seconds: u64) {
        let mut blocks = self.0.lock().unwrap();
        blocks.retain(|_, until| *until > Instant::now());
        blocks.insert(bucket, Instant::now() + Duration::from_secs(seconds));
    }
}

pub(crate) async fn by_hash(state: &Context, token: WatchToken) -> Result<Option<Uuid>, ApiError> {
    Ok(logins::id_for_watch_hash(&state.pool, &token.hash()).await?)
}

/// Resolves a watch token with `find`, counting unknown ones per browser address (IPv6 by /64):
/// past the limit that address's unknown tokens get 429 for the window. Known tokens are always
/// served, so an address blocked by others' guesses (a shared NAT) still follows its own logins.
pub(crate) async fn resolve<F, Fut>(
    state: &Context,
    shared: &Web,
    req: &HttpRequest,
    raw: &str,
    find: F,
) -> Result<Uuid, ApiError>
where
    F: FnOnce(WatchToken) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Uuid>, ApiError>>,
{
    let found = match WatchToken::parse(raw) {
        Some(token) => find(token).await?,
        None => None,
    };
    if let Some(id) = found {
        return Ok(id);
    }
    let Some(ip) = client_ip(req, &state.settings.trusted_proxies) else {
        return Err(ApiError::WatchTokenNotFound);
    };
    let bucket = network::bucket(ip);
    let refused = |retry_after| ApiError::RateLimited {
        limit: "watch_misses_per_ip",
        retry_after,
    };
    if let Some(retry_after) = shared.watch_blocks.remaining(&bucket) {
        return Err(refused(retry_after));
    }
    let limit = limits::Limit {
        bucket: format!("watch_miss:{bucket}"),
        window_secs: 600.0,
        limit: state.settings.limits.watch_misses_per_ip,
    };
    let mut conn = state.pool.acquire().await?;
    match limits::hit(&mut conn, &[limit]).await? {
        None => Err(ApiError::WatchTokenNotFound),
        Some((_, retry_after)) => {
            tracing::warn!(address = %bucket, "too many unknown watch tokens from one address");
            shared.watch_blocks.block(bucket, retry_after);
            Err(refused(retry_after))
        }
    }
}

#[derive(IntoParams)]
#[allow(dead_code)]
struct WatchPath {
    /// The watch token from the login's creation.
    watch_token: String,
}

/// Read the login behind a watch token. Browsers are untrusted pollers: an answer given at once
/// sooner than `poll_interval_seconds` after the last is 429 `slow_down` with `Retry-After`; a
/// long poll (`wait` of at least the interval) that waits for a change is free.
#[utoipa::path(
    get, path = "/v1/watch/{watch_token}", operation_id = "getWatch", tag = "browser",
    params(WatchPath, WaitQuery),
    responses(
        (status = 200, body = LoginState, description = "without scan_ref or user_ref", headers(("ETag" = String))),
        (status = 304, description = "unchanged since If-None-Match"),
        (status = 400, body = ErrorBody, description = "malformed_query"),
        (status = 404, body = ErrorBody, description = "watch_token_not_found"),
        (status = 429, body = ErrorBody, description = "slow_down (polled faster than poll_interval_seconds), rate_limited (too many unknown tokens from this address); Retry-After"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn get_watch(
    state: web::Data<Context>,
    shared: web::Data<Web>,
    path: web::Path<String>,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let interval_ms = i64::from(state.settings.poll_interval_seconds) * 1000;
    let long_poll = query.wait.unwrap_or(0) >= state.settings.poll_interval_seconds.into();
    let pool = &state.pool;
    // a plain poll is counted by the statement that finds its login; a long poll only once
    // it is known to be answered at once, since one that waits is free
    let login_id = resolve(&state, &shared, &req, &path, |token| async move {
        if long_poll {
            return Ok(logins::id_for_watch_hash(pool, &token.hash()).await?);
        }
        record_poll(pool, &token, interval_ms).await
    })
    .await?;
    let gate = || async move {
        if !long_poll {
            return Ok(());
        }
        let token = WatchToken::parse(&path).ok_or(ApiError::WatchTokenNotFound)?;
        match record_poll(pool, &token, interval_ms).await? {
            Some(_) => Ok(()),
            // its login was deleted since the lookup
            None => Err(ApiError::WatchTokenNotFound),
        }
    };
    respond_with_state(&state, login_id, &req, query.wait, Audience::Browser, gate).await
}

/// Counts a poll against the slow_down rule: the login's id, `None` for an unknown token, or
/// 429 `slow_down` when it comes too soon after the last one counted.
async fn record_poll(
    pool: &sqlx::PgPool,
    token: &WatchToken,
    interval_ms: i64,
) -> Result<Option<Uuid>, ApiError> {
    let mut conn = pool.acquire().await?;
    match logins::record_watch_poll(&mut conn, &token.hash(), interval_ms).await? {
        Poll::Answered(id) => Ok(Some(id)),
        Poll::UnknownToken => Ok(None),
        Poll::TooSoon { retry_after_ms } => Err(ApiError::SlowDown {
            retry_after: (retry_after_ms as u64).div_ceil(1000),
        }),
    }
}

/// Ask for a new code from the browser, within the same budgets as the platform, counted
/// against the browser's address, and within limits of its own per watch token and per
/// browser address.
#[utoipa::path(
    post, path = "/v1/watch/{watch_token}/attempts", operation_id = "newWatchAttempt", tag = "browser",
    params(WatchPath),
    responses(
        (status = 201, body = LoginState, description = "new code in `attempt.digit_string`"),
        (status = 404, body = ErrorBody, description = "watch_token_not_found"),
        (status = 409, body = ErrorBody, description = "already_approved, already_redeemed, login_canceled, code_being_issued"),
        (status = 429, body = ErrorBody, description = "attempt_budget_exhausted, rate_limited (watch_codes_per_token, watch_codes_per_ip, or too many unknown tokens from this address), idenfy_rate_limited; Retry-After"),
        (status = 502, body = ErrorBody, description = "idenfy_rejected"),
        (status = 503, body = ErrorBody, description = "idenfy_unavailable, database_unavailable"),
        (status = 504, body = ErrorBody, description = "idenfy_timeout"),
    )
)]
pub async fn new_attempt(
    state: web::Data<Context>,
    shared: web::Data<Web>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let login_id = resolve(&state, &shared, &req, &path, |token| by_hash(&state, token)).await?;
    let ip = client_ip(&req, &state.settings.trusted_proxies);
    let limits = state.settings.limits;
    let mut checks = vec![limits::Limit {
        bucket: format!("watch_codes_token:{login_id}"),
        window_secs: 3600.0,
        limit: limits.watch_codes_per_token_per_hour,
    }];
    if let Some(ip) = ip {
        checks.push(limits::Limit {
            bucket: format!("watch_codes_ip:{}", network::bucket(ip)),
            window_secs: 3600.0,
            limit: limits.watch_codes_per_ip_per_hour,
        });
    }
    let mut conn = state.pool.acquire().await?;
    let limited = limits::hit(&mut conn, &checks).await?;
    drop(conn);
    if let Some((i, retry_after)) = limited {
        return Err(ApiError::RateLimited {
            limit: ["watch_codes_per_token", "watch_codes_per_ip"][i],
            retry_after,
        });
    }
    let row = service::issue_code(&state, login_id, Source::Watch, ip).await?;
    Ok(state_response(
        HttpResponse::Created(),
        &state,
        &row,
        Audience::Browser,
    ))
}

/// Follow a login live from the browser: Server-Sent Events, resumable with `Last-Event-ID`,
/// without identity data.
#[utoipa::path(
    get, path = "/v1/watch/{watch_token}/events", operation_id = "streamWatchEvents", tag = "browser",
    params(WatchPath, EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = sse::LAST_EVENT_ID)),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description = "as `/v1/logins/{login_id}/events`, without scan_ref or user_ref"),
        (status = 204, description = sse::CAUGHT_UP),
        (status = 400, body = ErrorBody, description = "malformed_query"),
        (status = 404, body = ErrorBody, description = "watch_token_not_found"),
        (status = 429, body = ErrorBody, description = "rate_limited (too many unknown tokens from this address)"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn events(
    state: web::Data<Context>,
    shared: web::Data<Web>,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let login_id = resolve(&state, &shared, &req, &path, |token| by_hash(&state, token)).await?;
    sse::open(
        &state,
        login_id,
        Audience::Browser,
        last_event_id(&req, &query),
    )
    .await
}

/// End the login from the browser that shows its code (the person pressed "Cancel"): the same
/// as the platform's cancel, and as harmless to repeat.
#[utoipa::path(
    post, path = "/v1/watch/{watch_token}/cancel", operation_id = "cancelWatch", tag = "browser",
    params(WatchPath),
    responses(
        (status = 200, body = LoginState, description = "the canceled login, without scan_ref or user_ref"),
        (status = 404, body = ErrorBody, description = "watch_token_not_found"),
        (status = 409, body = ErrorBody, description = "already_redeemed, login_finished"),
        (status = 429, body = ErrorBody, description = "rate_limited (too many unknown tokens from this address)"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn cancel(
    state: web::Data<Context>,
    shared: web::Data<Web>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let login_id = resolve(&state, &shared, &req, &path, |token| by_hash(&state, token)).await?;
    let row = service::cancel(&state, login_id).await?;
    Ok(state_response(
        HttpResponse::Ok(),
        &state,
        &row,
        Audience::Browser,
    ))
}

/// The watch API answers pages of any origin: the token in the path is the whole
/// authority, no cookie is read, so CORS adds nothing an attacker with the token lacks.
pub fn cors() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("access-control-allow-origin", "*"))
        .add((
            "access-control-expose-headers",
            "etag, retry-after, x-request-id",
        ))
}

/// A CORS preflight (a long poll's `If-None-Match`, a stream's `Last-Event-ID`).
pub async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("access-control-allow-methods", "GET, POST"))
        .insert_header((
            "access-control-allow-headers",
            "if-none-match, last-event-id",
        ))
        .insert_header(("access-control-max-age", "600"))
        .finish()
}
