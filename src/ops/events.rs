//! `facepair events`: pushed events and their deliveries (over the `event_delivery_status`
//! view), each delivery's attempts, and replays.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::store::outbound::{Replayed, enable_endpoint, replay};

/// One event's delivery to one endpoint, as the view shows it.
#[derive(Debug, Serialize)]
pub struct DeliveryLine {
    pub position: i64,
    pub event_id: Uuid,
    pub r#type: String,
    pub login_id: Uuid,
    pub event_created_at: DateTime<Utc>,
    pub endpoint_url: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

/// Deliveries, newest event first; only those of events written at or after `since`, and in
/// `state` when given.
pub async fn list(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryLine>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryLine,
        r#"
        select position as "position!", event_id as "event_id!", type as "type!",
               login_id as "login_id!", event_created_at as "event_created_at!",
               endpoint_url as "endpoint_url!", state as "state!", attempts as "attempts!",
               next_attempt_at as "next_attempt_at!", last_status_code, last_error
        from event_delivery_status
        where ($1::timestamptz is null or event_created_at >= $1)
          and ($2::text is null or state = $2)
        order by position desc, endpoint_url
        limit $3
        "#,
        since,
        state,
        limit
    )
    .fetch_all(pool)
    .await
}

/// One request sent for an event.
#[derive(Debug, Serialize)]
pub struct AttemptLine {
    pub endpoint_url: String,
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// Every request sent for `event_id`, oldest first.
pub async fn attempts(pool: &PgPool, event_id: Uuid) -> Result<Vec<AttemptLine>, sqlx::Error> {
    sqlx::query_as!(
        AttemptLine,
        r#"
        select e.url as endpoint_url, a.attempted_at, a.status_code, a.latency_ms, a.error,
               a.response_excerpt
        from event_delivery_attempts a join event_endpoints e on e.id = a.endpoint_id
        where a.event_id = $1
        order by a.attempted_at, a.id
        "#,
        event_id
    )
    .fetch_all(pool)
    .await
}

pub fn render_list(rows: &[DeliveryLine]) -> String {
    let mut out = String::from(
        "POSITION  EVENT                                 TYPE               STATE      TRIES  LAST  ENDPOINT\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<9} {} {:<18} {:<10} {:<6} {:<5} {}",
            r.position,
            r.event_id,
            r.r#type,
            r.state,
            r.attempts,
            r.last_status_code
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            r.endpoint_url
        );
    }
    out
}

pub fn render_attempts(rows: &[AttemptLine]) -> String {
    let mut out =
        String::from("ATTEMPTED AT                    STATUS  MS     ENDPOINT / ERROR / ANSWER\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<31} {:<7} {:<6} {}",
            r.attempted_at.to_rfc3339(),
            r.status_code
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            r.latency_ms,
            r.endpoint_url
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:>47}error: {e}", "");
        }
        if let Some(x) = &r.response_excerpt {
            let _ = writeln!(out, "{:>47}answer: {}", "", x.replace('\n', " "));
        }
    }
    out
}

/// What a replay did, in a line: deliveries being pushed at that moment are named, since
/// they were left to that push rather than queued again.
pub fn render_replayed(done: Replayed) -> String {
    match done.in_flight {
        0 => format!("{} deliveries will be sent again", done.queued),
        n => format!(
            "{} deliveries will be sent again; {n} being pushed right now were left to that push \
             (`facepair events attempts <event id>` shows how it ended)",
            done.queued
        ),
    }
}
