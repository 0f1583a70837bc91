//! Server-Sent Events of one login: `id:` the per-login event sequence, `event:` its kind,
//! `data:` the login document; `Last-Event-ID` resumes from the events table. Each stream is one
//! future asleep on the hub; a keep-alive every 15 s holds proxies open and finds vanished clients.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use futures_util::stream;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::EventKind;
use crate::error::ApiError;
use crate::live::Subscription;
use crate::service::Context;
use crate::service::{Audience, LoginState};
use crate::store::events;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this event (the same as the `Last-Event-ID` header, for clients that cannot
    /// set headers).
    #[param(schema_with = crate::http::poll::whole_number)]
    #[serde(default, deserialize_with = "crate::http::poll::saturating")]
    pub last_event_id: Option<u64>,
}

pub const LAST_EVENT_ID: &str = "resume after this event; a value that is not a whole number from 0 is ignored, as a browser's EventSource expects";
pub const CAUGHT_UP: &str = "the client has every event of a login that can no longer change: EventSource stops reconnecting";

/// The resume point: the `Last-Event-ID` header, else the query parameter.
pub(crate) fn last_event_id(req: &HttpRequest, query: &EventsQuery) -> Option<i32> {
    let header = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(query.last_event_id)
        .map(|seen| i32::try_from(seen).unwrap_or(i32::MAX))
}

pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a client waits before it reconnects, 1 to 5 s: spread, so the streams of an
/// instance that stopped or failed come back to the others over seconds, not at one instant.
fn retry_ms() -> u32 {
    rand::random_range(1000..5000)
}
const BATCH: i64 = 100;

/// The OpenAPI description of a login's event stream.
pub fn description() -> String {
    let kinds: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| format!("`{}`", k.as_str()))
        .collect();
    format!(
        "`id:` event sequence, `event:` kind ({}), `data:` the LoginState document; a \
         `: keep-alive` comment every 15 s; ends when the login can no longer change",
        kinds.join(", ")
    )
}

struct Stream {
    /// Shared with the worker, not copied: a stream waits long, and a copy would hold
    /// allocations of its own
    state: web::Data<Context>,
    login_id: Uuid,
    audience: Audience,
    last_sent: i32,
    subscription: Subscription,
    keep_alive: tokio::time::Interval,
    phase: Phase,
}

#[derive(PartialEq)]
enum Phase {
    Opening,
    Live,
    Done,
}

/// Opens a stream for a login that exists; `last_event_id` is what the client saw last.
pub async fn open(
    state: &web::Data<Context>,
    login_id: Uuid,
    audience: Audience,
    last_event_id: Option<i32>,
) -> Result<HttpResponse, ApiError> {
    // subscribe before the first read, so nothing between the read and the wait is missed
    let subscription = state.hub.subscribe(login_id);
    let row = crate::service::read_login(state, login_id)
        .await?
        .ok_or(ApiError::LoginNotFound)?;
    // a client that has every event of a login that can no longer change is told to stop:
    // EventSource reconnects after a stream that ends, but not after a 204
    if last_event_id.is_some_and(|seen| seen >= row.event_seq)
        && crate::service::view::settled(&row, chrono::Utc::now())
    {
        return Ok(HttpResponse::NoContent().finish());
    }
    state.metrics.sse_opened.inc();
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let s = Stream {
        state: state.clone(),
        login_id,
        audience,
        last_sent: last_event_id.unwrap_or(0).max(0),
        subscription,
        keep_alive,
        phase: Phase::Opening,
    };
    let body = stream::unfold(s, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.state.metrics.sse_closed.inc();
    }
}

impl Stream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Opening => {
                    self.phase = Phase::Live;
                    let mut out = format!("retry: {}\n\n", retry_ms());
                    match Box::pin(self.pending_events()).await {
                        Ok(Some(events)) => out.push_str(&events),
                        Ok(None) => {}
                        Err(()) => self.phase = Phase::Done,
                    }
                    return Some(Bytes::from(out));
                }
                Phase::Live => {
                    tokio::select! {
                        _ = self.subscription.changed() => {
                            // boxed: a waiting stream does not carry the reads' state
                            match Box::pin(self.pending_events()).await {
                                Ok(Some(events)) => return Some(Bytes::from(events)),
                                Ok(None) => continue,
                                // what woke the stream is unsent: ending it makes the client
                                // reconnect with Last-Event-ID and read it from the table; the
                                // wait is spread so streams that failed together come back apart
                                Err(()) => {
                                    self.phase = Phase::Done;
                                    return Some(Bytes::from(format!("retry: {}\n\n", retry_ms())));
                                }
                            }
                        }
                        _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
                        _ = self.state.shutdown.cancelled() => {
                            self.phase = Phase::Done;
                            return Some(Bytes::from(format!("retry: {}\n: server shutting down, reconnect with Last-Event-ID\n\n", retry_ms())));
                        }
                    }
                }
            }
        }
    }

    /// Everything after `last_sent`, formatted; `Err` after a database failure, which ends the
    /// stream so the client reconnects and resumes.
    async fn pending_events(&mut self) -> Result<Option<String>, ()> {
        let fail = |e: sqlx::Error| {
            tracing::warn!(login_id = %self.login_id, error = %crate::error::error_chain(&e), "SSE read failed; closing the stream");
        };
        // the login first, then only the events its document includes: a change not yet
        // announced here is sent with the wake-up its announcement brings, never under an older
        // document
        let row = crate::service::read_login(&self.state, self.login_id)
            .await
            .map_err(fail)?;
        let Some(row) = row else {
            self.phase = Phase::Done;
            return Ok(None);
        };
        // a wake-up with nothing newer than what was sent (another instance's change already
        // read, or the backstop's check) costs no read of the events
        let mut events = Vec::new();
        if row.event_seq > self.last_sent {
            events = events::after(&self.state.pool, self.login_id, self.last_sent, BATCH)
                .await
                .map_err(fail)?;
            events.retain(|e| e.seq <= row.event_seq);
        }
        let Some(last) = events.last() else {
            if crate::service::view::settled(&row, Utc::now()) {
                self.phase = Phase::Done;
            }
            return Ok(None);
        };
        let doc = LoginState::build(
            &row,
            Utc::now(),
            self.state.settings.poll_interval_seconds,
            self.audience,
        );
        let data = serde_json::to_string(&doc).map_err(|_| ())?;
        let mut out = String::new();
        for event in &events {
            out.push_str(&format!(
                "id: {}\nevent: {}\ndata: {data}\n\n",
                event.seq,
                event.kind.as_str()
            ));
        }
        self.last_sent = last.seq;
        // a full batch means more may follow; only end once caught up
        let settled = crate::service::view::settled(&row, Utc::now());
        if settled && (events.len() as i64) < BATCH && doc.event_seq == last.seq {
            self.phase = Phase::Done;
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_hints_are_spread_over_one_to_five_seconds() {
        let hints: std::collections::HashSet<u32> = (0..200).map(|_| super::retry_ms()).collect();
        assert!(hints.iter().all(|h| (1000..5000).contains(h)), "{hints:?}");
        assert!(hints.len() > 50, "{} distinct hints", hints.len());
    }
}
