//! The browser side, authorised by the watch token alone. Never shows identity data.

use actix_web::{HttpRequest, HttpResponse, web};
use utoipa::IntoParams;

use crate::app::AppState;
use crate::domain::{Source, WatchToken};
use crate::error::{ApiError, ErrorBody};
use crate::http::platform::{
    EventsQuery, WaitQuery, last_event_id, respond_with_state, state_response,
};
use crate::service::{self, Audience, LoginState};
use crate::store::logins::{self, Poll};

fn parse_token(raw: &str) -> Result<WatchToken, ApiError> {
    WatchToken::parse(raw).ok_or(ApiError::WatchTokenNotFound)
}

#[derive(IntoParams)]
#[allow(dead_code)]
struct WatchPath {
    /// The watch token from the login's creation.
    watch_token: String,
}

/// Read the login behind a watch token. Browsers are the untrusted pollers: a poll sooner than
/// `poll_interval_seconds` after the last answered one is refused with 429 `slow_down` and
/// `Retry-After`; a long poll (`wait` of at least the interval) is always answered.
#[utoipa::path(
    get, path = "/v1/watch/{watch_token}", tag = "browser",
    params(WatchPath, WaitQuery),
    responses(
        (status = 200, body = LoginState, description = "without scan_ref or user_ref", headers(("ETag" = String))),
        (status = 304, description = "unchanged since If-None-Match"),
        (status = 404, body = ErrorBody, description = "watch_token_not_found"),
        (status = 429, body = ErrorBody, description = "slow_down (Retry-After)"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn get_watch(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let token = parse_token(&path)?;
    let interval_ms = i64::from(state.settings.poll_interval_seconds) * 1000;
    let long_poll = query.wait.unwrap_or(0) >= state.settings.poll_interval_seconds;
    let mut conn = state.pool.acquire().await?;
    let login_id = if long_poll {
        logins::id_for_watch_hash(&mut *conn, &token.hash())
            .await?
            .ok_or(ApiError::WatchTokenNotFound)?
    } else {
        match logins::record_watch_poll(&mut conn, &token.hash(), interval_ms).await? {
            Poll::Answered(id) => id,
            Poll::UnknownToken => return Err(ApiError::WatchTokenNotFound),
            Poll::TooSoon { retry_after_ms } => {
                return Err(ApiError::SlowDown {
                    retry_after: (retry_after_ms as u64).div_ceil(1000),
                });
            }
        }
    };
    drop(conn);
    respond_with_state(&state, login_id, &req, query.wait, Audience::Browser).await
}

/// Ask for a new code from the browser, within the same budgets as the platform.
#[utoipa::path(
    post, path = "/v1/watch/{watch_token}/attempts", tag = "browser",
    params(WatchPath),
    responses(
        (status = 201, body = LoginState, description = "new code in `attempt.digit_string`"),
        (status = 404, body = ErrorBody, description = "watch_token_not_found"),
        (status = 409, body = ErrorBody, description = "already_approved, already_redeemed, login_canceled"),
        (status = 429, body = ErrorBody, description = "attempt_budget_exhausted, idenfy_rate_limited"),
        (status = 502, body = ErrorBody, description = "idenfy_rejected"),
        (status = 503, body = ErrorBody, description = "idenfy_unavailable, database_unavailable"),
        (status = 504, body = ErrorBody, description = "idenfy_timeout"),
    )
)]
pub async fn new_attempt(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = parse_token(&path)?;
    let login_id = logins::id_for_watch_hash(&state.pool, &token.hash())
        .await?
        .ok_or(ApiError::WatchTokenNotFound)?;
    let row = service::issue_code(&state, login_id, Source::Watch).await?;
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
    get, path = "/v1/watch/{watch_token}/events", tag = "browser",
    params(WatchPath, EventsQuery, ("Last-Event-ID" = Option<i32>, Header, description = "resume after this event")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description = "as `/v1/logins/{login_id}/events`, without scan_ref or user_ref"),
        (status = 404, body = ErrorBody, description = "watch_token_not_found"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn events(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let token = parse_token(&path)?;
    let login_id = logins::id_for_watch_hash(&state.pool, &token.hash())
        .await?
        .ok_or(ApiError::WatchTokenNotFound)?;
    crate::live::sse::open(
        &state,
        login_id,
        Audience::Browser,
        last_event_id(&req, &query),
    )
    .await
}
