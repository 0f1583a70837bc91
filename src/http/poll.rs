//! The login document as an answer: plain, conditional (`ETag` / `If-None-Match` -> 304) and
//! long-polled (`?wait=N`), for the platform and the browser alike.

use actix_web::http::header::{self, ETAG};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::ApiError;
use crate::service::{self, Audience, Context, LoginState};
use crate::store::logins::LoginRow;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Long-poll: answer as soon as the state differs from `If-None-Match`, or after this many
    /// seconds, or at once when the instance begins to stop. A wait above 60 is taken as 60.
    #[param(schema_with = whole_number)]
    #[serde(default, deserialize_with = "saturating")]
    pub wait: Option<u64>,
}

/// A query parameter that is any whole number from 0: the document states no maximum, so one
/// beyond `u64` is read as `u64::MAX` (for `wait`, as 60) rather than refused.
pub(crate) fn whole_number() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .build()
}

pub(crate) fn saturating<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom("must be a whole number from 0"));
    }
    Ok(Some(text.parse().unwrap_or(u64::MAX)))
}

pub(crate) fn state_response(
    mut builder: actix_web::HttpResponseBuilder,
    state: &Context,
    row: &LoginRow,
    audience: Audience,
) -> HttpResponse {
    let doc = LoginState::build(
        row,
        Utc::now(),
        state.settings.poll_interval_seconds,
        audience,
    );
    builder
        .insert_header((ETAG, doc.etag()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(doc)
}

pub(crate) const MAX_WAIT_SECONDS: u32 = 60;

/// Answers with the login's state: 304 when it matches `If-None-Match`; with `wait`, holds the
/// request until it differs, time is up, or the instance begins to stop (answering before the
/// grace period cuts it). An answer given without waiting must first pass `at_once` (slow_down).
pub(crate) async fn respond_with_state<Gate, Passed>(
    state: &Context,
    id: Uuid,
    req: &HttpRequest,
    wait: Option<u64>,
    audience: Audience,
    at_once: Gate,
) -> Result<HttpResponse, ApiError>
where
    Gate: FnOnce() -> Passed,
    Passed: std::future::Future<Output = Result<(), ApiError>>,
{
    let mut at_once = Some(at_once);
    let known = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let wait = std::time::Duration::from_secs(wait.unwrap_or(0).min(MAX_WAIT_SECONDS.into()));
    // subscribe before reading, so a change between the read and the wait is not missed
    let mut subscription =
        (!wait.is_zero()).then(|| (state.hub.subscribe(id), tokio::time::Instant::now() + wait));
    loop {
        let row = service_find(state, id).await?;
        let read_at = Utc::now();
        // the document is built only when it is sent
        let login_now = service::effective(&row, read_at).1;
        let etag = service::view::etag(row.event_seq, login_now);
        let unchanged = known.as_deref().is_some_and(|k| etag_matches(k, &etag));
        // a plain read (no wait) reads no clock but the document's
        let waiting = subscription
            .as_mut()
            .filter(|_| unchanged && !state.shutdown.is_cancelled())
            .and_then(|(sub, deadline)| {
                let now = tokio::time::Instant::now();
                (now < *deadline).then_some((sub, now, *deadline))
            });
        let Some((sub, now, deadline)) = waiting else {
            if let Some(gate) = at_once.take() {
                gate().await?;
            }
            // while the instance stops, the client's next poll goes to another one
            let closing = state.shutdown.is_cancelled();
            if unchanged {
                let mut answer = HttpResponse::NotModified();
                if closing {
                    answer.force_close();
                }
                return Ok(answer.insert_header((ETAG, etag)).finish());
            }
            let doc = service::view::render(
                &row,
                read_at,
                login_now,
                state.settings.poll_interval_seconds,
                audience,
            );
            let mut answer = HttpResponse::Ok();
            if closing {
                answer.force_close();
            }
            return Ok(answer
                .insert_header(header::ContentType::json())
                .insert_header((ETAG, etag))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(doc));
        };
        // the code's or the approval's expiry changes the document without any event
        let until_expiry = service::view::clock_changes_at(&row, read_at)
            .and_then(|at| (at - Utc::now()).to_std().ok());
        let wake_at = until_expiry
            .map(|d| (now + d + std::time::Duration::from_millis(5)).min(deadline))
            .unwrap_or(deadline);
        // whatever ends the wait, the answer did not come at once
        at_once = None;
        tokio::select! {
            _ = sub.changed() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

async fn service_find(state: &Context, id: Uuid) -> Result<std::sync::Arc<LoginRow>, ApiError> {
    service::read_login(state, id)
        .await?
        .ok_or(ApiError::LoginNotFound)
}

fn etag_matches(header_value: &str, etag: &str) -> bool {
    header_value.trim() == "*"
        || header_value
            .split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag)
}
