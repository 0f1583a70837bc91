//! The events feed, `GET /v1/events`: every public event in commit order, for the platform.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::outbound::EventType;
use crate::error::{ApiError, ErrorBody};
use crate::http::auth::ApiKey;
use crate::service::Context;
use crate::service::outbound::{self, EventPage};

#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// The `next_cursor` of the previous page; absent or `0`: from the first event kept.
    pub after: Option<String>,
    /// Comma-separated event types to list, e.g. `login.approved,login.failed`; absent: all.
    pub types: Option<String>,
    /// Events per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Long-poll: with no event past `after`, wait up to this many seconds for one (at most
    /// 60), answering at once when the instance begins to stop.
    #[param(minimum = 0)]
    pub wait: Option<u32>,
}

const MAX_WAIT_SECONDS: u32 = 60;

impl FeedQuery {
    fn after(&self) -> Result<i64, ApiError> {
        match self.after.as_deref() {
            None => Ok(0),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && !s.starts_with('+'))
                .ok_or(ApiError::InvalidCursor),
        }
    }

    fn types(&self) -> Result<Option<Vec<String>>, ApiError> {
        let Some(list) = self.types.as_deref() else {
            return Ok(None);
        };
        list.split(',')
            .map(|t| {
                EventType::parse(t.trim())
                    .map(|t| t.as_str().to_owned())
                    .ok_or_else(|| ApiError::InvalidEventType(t.chars().take(64).collect()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn limit(&self) -> Result<i64, ApiError> {
        match self.limit.as_deref() {
            None => Ok(100),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=1000).contains(n) && !s.starts_with('+'))
                .ok_or(ApiError::InvalidLimit),
        }
    }
}

/// Events in commit order: an event that committed late comes after those listed before it,
/// never skipped. Page with `after` = the last page's `next_cursor`; event ids are stable,
/// the same as a push's `webhook-id`.
#[utoipa::path(
    get, path = "/v1/events", tag = "platform",
    params(FeedQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody, description = "invalid_cursor, invalid_event_type, invalid_limit, malformed_query"),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn feed(
    state: web::Data<Context>,
    _key: ApiKey,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query.after()?;
    let types = query.types()?;
    let limit = query.limit()?;
    let wait = std::time::Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECONDS).into());
    let page = outbound::feed(&state, after, types, limit, wait).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(page))
}
