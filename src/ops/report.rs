//! `facepair logins list` and `facepair logins show`: the views, as tables for people or JSON
//! for scripts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{AttemptStatus, LoginStatus, Source};

#[derive(Debug, Default)]
pub struct ListFilter {
    pub login_id: Option<Uuid>,
    pub scan_ref: Option<String>,
    pub user_ref: Option<String>,
    pub status: Option<LoginStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub login_id: Option<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
    pub scan_ref: Option<String>,
    pub user_ref: Option<String>,
    pub status: Option<LoginStatus>,
    pub attempts_used: Option<i32>,
    pub max_attempts: Option<i32>,
    pub current_attempt_status: Option<AttemptStatus>,
    pub current_fail_reason: Option<String>,
    pub desktop_ip: Option<String>,
    pub desktop_user_agent: Option<String>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct TimelineEntry {
    pub at: Option<DateTime<Utc>>,
    pub entry: Option<String>,
    pub event_seq: Option<i32>,
    pub what: Option<String>,
    pub source: Option<Source>,
    pub login_status: Option<LoginStatus>,
    pub attempt_number: Option<i32>,
    pub detail: Option<serde_json::Value>,
}

pub async fn list(pool: &PgPool, f: &ListFilter) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as!(
        Summary,
        r#"
        select login_id, created_at, scan_ref, user_ref, status as "status: LoginStatus",
               attempts_used, max_attempts,
               current_attempt_status as "current_attempt_status: AttemptStatus",
               current_fail_reason, desktop_ip, desktop_user_agent, redeemed_at, purged_at
        from login_summaries
        where ($7::uuid is null or login_id = $7)
          and ($1::text is null or scan_ref = $1)
          and ($2::text is null or user_ref = $2)
          and ($3::text is null or status = $3)
          and ($4::timestamptz is null or created_at >= $4)
          and ($5::timestamptz is null or created_at < $5)
        order by created_at desc
        limit $6
        "#,
        f.scan_ref,
        f.user_ref,
        f.status as Option<LoginStatus>,
        f.since,
        f.until,
        f.limit,
        f.login_id
    )
    .fetch_all(pool)
    .await
}

pub async fn show(
    pool: &PgPool,
    login_id: Uuid,
) -> Result<Option<(Summary, Vec<TimelineEntry>)>, sqlx::Error> {
    let filter = ListFilter {
        login_id: Some(login_id),
        limit: 1,
        ..ListFilter::default()
    };
    let summary = list(pool, &filter).await?.pop();
    let Some(summary) = summary else {
        return Ok(None);
    };
    let timeline = sqlx::query_as!(
        TimelineEntry,
        r#"
        select at, entry, event_seq, what, source as "source: Source",
               login_status as "login_status: LoginStatus", attempt_number, detail
        from login_timeline where login_id = $1
        -- a delivery sorts before the events it caused (same transaction, same instant)
        order by at, entry, event_seq
        "#,
        login_id
    )
    .fetch_all(pool)
    .await?;
    Ok(Some((summary, timeline)))
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "-".into())
}

fn text(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// Lays out rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

pub fn render_list(rows: &[Summary]) -> String {
    if rows.is_empty() {
        return "no logins match\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.login_id.map(|i| i.to_string()).unwrap_or_default(),
                time(r.created_at),
                text(r.status.map(LoginStatus::as_str)),
                format!(
                    "{}/{}",
                    r.attempts_used.unwrap_or(0),
                    r.max_attempts.unwrap_or(0)
                ),
                match (r.current_attempt_status, &r.current_fail_reason) {
                    (Some(s), Some(reason)) => format!("{} ({reason})", s.as_str()),
                    (s, _) => text(s.map(AttemptStatus::as_str)),
                },
                text(r.scan_ref.as_deref()),
                text(r.user_ref.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "LOGIN",
            "CREATED (UTC)",
            "STATUS",
            "CODES",
            "LAST ATTEMPT",
            "SCAN_REF",
            "USER_REF",
        ],
        &cells,
    )
}

fn detail_text(detail: &Option<serde_json::Value>) -> String {
    let Some(serde_json::Value::Object(map)) = detail else {
        return String::new();
    };
    let mut pairs: Vec<(&String, &serde_json::Value)> = map.iter().collect();
    pairs.sort_by_key(|(k, _)| k.as_str());
    pairs
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn render_show(summary: &Summary, timeline: &[TimelineEntry]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "login     {}\n",
        summary.login_id.map(|i| i.to_string()).unwrap_or_default()
    ));
    out.push_str(&format!(
        "status    {}   codes {}/{}   last attempt {}{}\n",
        text(summary.status.map(LoginStatus::as_str)),
        summary.attempts_used.unwrap_or(0),
        summary.max_attempts.unwrap_or(0),
        text(summary.current_attempt_status.map(AttemptStatus::as_str)),
        summary
            .current_fail_reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "person    scan_ref {}   user_ref {}\n",
        text(summary.scan_ref.as_deref()),
        text(summary.user_ref.as_deref())
    ));
    out.push_str(&format!(
        "desktop   {}   {}\n",
        text(summary.desktop_ip.as_deref()),
        text(summary.desktop_user_agent.as_deref())
    ));
    out.push_str(&format!("created   {} UTC\n", time(summary.created_at)));
    if summary.purged_at.is_some() {
        out.push_str(&format!(
            "purged    {} UTC (identity data removed)\n",
            time(summary.purged_at)
        ));
    }
    out.push('\n');
    let start = timeline.first().and_then(|e| e.at);
    let rows: Vec<Vec<String>> = timeline
        .iter()
        .map(|e| {
            let elapsed = match (start, e.at) {
                (Some(s), Some(at)) => {
                    format!("+{:.3}s", (at - s).num_milliseconds() as f64 / 1000.0)
                }
                _ => String::new(),
            };
            vec![
                time(e.at),
                elapsed,
                text(e.what.as_deref()),
                text(e.source.map(Source::as_str)),
                e.attempt_number
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                text(e.login_status.map(LoginStatus::as_str)),
                detail_text(&e.detail),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "AT (UTC)",
            "ELAPSED",
            "WHAT",
            "SOURCE",
            "ATTEMPT",
            "LOGIN STATUS",
            "DETAIL",
        ],
        &rows,
    ));
    out
}
