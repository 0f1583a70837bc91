//! A login's state changes, each in one statement: the login row, the attempt it ends (if
//! any) and its event together. A webhook or a platform call is a handful of round trips to
//! PostgreSQL, not one per table.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Verdict;
use crate::domain::network::NetworkMatch;
use crate::domain::outbound::EventType;
use crate::domain::{AttemptStatus, EventKind, LoginStatus, Source};
use crate::store::attempts::{IdenfyReport, NewAttempt};
use crate::store::deliveries::NewDelivery;
use crate::store::logins::{Joined, LoginRow, NewLogin};

/// What changes on the login row with a new status; the event sequence advances by one.
#[derive(Debug, Default)]
pub struct StatusChange {
    /// An attempt succeeded: the approval may be redeemed for this long.
    pub approved_for: Option<std::time::Duration>,
    pub redeemed: bool,
    pub canceled: bool,
    /// The attempt that just failed does not count toward the budget.
    pub forgive: bool,
}

/// A pending attempt ending with the change. Its digit code is dropped with it.
pub struct Finish<'a> {
    pub attempt_id: Uuid,
    pub status: AttemptStatus,
    pub source: Source,
    pub report: &'a IdenfyReport,
}

/// The event row a change appends (numbered by the login's sequence).
pub struct NewEvent {
    pub kind: EventKind,
    pub source: Source,
    pub attempt_id: Option<Uuid>,
    pub detail: serde_json::Value,
}

pub struct Change<'a> {
    pub login_id: Uuid,
    pub status: LoginStatus,
    pub flags: StatusChange,
    pub finish: Option<Finish<'a>>,
    pub event: NewEvent,
    /// The webhook delivery that caused the change, stored with it (the event names it).
    pub delivery: Option<&'a NewDelivery<'a>>,
    /// The login's event number when it was read: the change is made only if it is still the
    /// same, so nothing committed since the read is overlooked. `None` for a caller holding
    /// the login's row lock since it read it.
    pub read_at_seq: Option<i32>,
}

/// Applies a change to a login, with its public event (if platforms are told of it) in the
/// outbox and the delivery that caused it. Returns the event's sequence number, or
/// `RowNotFound` (and changes nothing) when the login moved past `read_at_seq`.
pub async fn apply(conn: &mut PgConnection, c: Change<'_>) -> Result<i32, sqlx::Error> {
    let f = c.finish.as_ref();
    let report = f.map(|f| f.report);
    let d = c.delivery;
    sqlx::query_scalar!(
        r#"
        with changed as (
            update logins
            set status = $2,
                event_seq = event_seq + 1,
                updated_at = now(),
                approved_at = case when $3::float8 is not null then now() else approved_at end,
                approval_expires_at = case when $3::float8 is not null
                                           then now() + make_interval(secs => $3::float8)
                                           else approval_expires_at end,
                redeemed_at = case when $4 then now() else redeemed_at end,
                canceled_at = case when $5 then now() else canceled_at end,
                attempts_forgiven = attempts_forgiven + case when $6 then 1 else 0 end
            where id = $1 and ($35::int4 is null or event_seq = $35)
            returning id, event_seq, status
        ), finished as (
            -- every other part hangs on the login's: a login changed since it was read
            -- changes nothing at all
            update attempts
            set status = $7, outcome_source = $8, finished_at = now(), digit_string = null,
                idenfy_status = $9, fail_reason = $10, risk_tags = $11, idenfy_session_id = $12,
                client_id = $13, phone_ip = $14, face_photo_url = $15, network_match = $16
            where id = $17 and status = 'pending' and exists (select from changed)
        ), event as (
            insert into events (login_id, seq, kind, source, login_status, attempt_id, delivery_id, detail)
            select id, event_seq, $18, $19, status, $20, $23, $21 from changed
            returning login_id, seq
        ), outbound as (
            insert into outbound_events (login_id, seq, type)
            select login_id, seq, $22 from event where $22::text is not null
        ), stored as (
            insert into deliveries (id, body, body_sha256, content_type, event_type,
                                    signing_key_index, token, idenfy_status, verdict, attempt_id,
                                    login_id, detail)
            select $23::uuid, $24::bytea, $25::bytea, $26::text, $27::text, $28::int4, $29::text,
                   $30::text, $31::text, $32::uuid, $33::uuid, $34::text
            from changed where $23::uuid is not null
        )
        select seq as "seq!" from event
        "#,
        c.login_id,
        c.status as LoginStatus,
        c.flags.approved_for.map(|d| d.as_secs_f64()),
        c.flags.redeemed,
        c.flags.canceled,
        c.flags.forgive,
        f.map(|f| f.status) as Option<AttemptStatus>,
        f.map(|f| f.source) as Option<Source>,
        report.and_then(|r| r.idenfy_status.as_deref()),
        report.and_then(|r| r.fail_reason.as_deref()),
        report.and_then(|r| r.risk_tags.as_deref()),
        report.and_then(|r| r.idenfy_session_id.as_deref()),
        report.and_then(|r| r.client_id.as_deref()),
        report.and_then(|r| r.phone_ip.as_deref()),
        report.and_then(|r| r.face_photo_url.as_deref()),
        report.and_then(|r| r.network_match) as Option<NetworkMatch>,
        f.map(|f| f.attempt_id),
        c.event.kind as EventKind,
        c.event.source as Source,
        c.event.attempt_id,
        c.event.detail,
        EventType::of(c.event.kind, c.status) as Option<EventType>,
        d.map(|d| d.id),
        d.map(|d| d.body),
        d.map(|d| d.body_sha256),
        d.and_then(|d| d.content_type),
        d.and_then(|d| d.event_type),
        d.map(|d| d.signing_key_index),
        d.and_then(|d| d.token),
        d.and_then(|d| d.idenfy_status),
        d.map(|d| d.verdict) as Option<Verdict>,
        d.and_then(|d| d.attempt_id),
        d.and_then(|d| d.login_id),
        d.and_then(|d| d.detail),
        c.read_at_seq
    )
    .fetch_one(conn)
    .await
}

/// Stores a new login with its first attempt and its `login_created` event (sequence 1),
/// removes the code's `reservation`, and reads them back as
/// [`find`](crate::store::logins::find) would: one statement, so one transaction of its own.
pub async fn create(
    conn: impl sqlx::PgExecutor<'_>,
    l: &NewLogin<'_>,
    a: &NewAttempt<'_>,
    reservation: Uuid,
    detail: serde_json::Value,
) -> Result<LoginRow, sqlx::Error> {
    sqlx::query_as!(
        Joined,
        r#"
        with released as (
            delete from code_reservations where id = $25
        ), login as (
            insert into logins (id, scan_ref, user_ref, locale, lifetime_seconds, max_attempts,
                                client_ip, user_agent, api_key_id, watch_token_hash, status,
                                event_seq, state, platform_name, desktop_place)
            values ($1, $2, $3, $4, $5, $6, $7::text::inet, $8, $9, $10, $20, 1, $19, $23, $24)
            returning *
        ), attempt as (
            insert into attempts (id, login_id, number, idenfy_token, digit_string,
                                  idenfy_max_attempt_count, expires_at, requested_from)
            values ($11, $1, $17, $12, $13, $14, $15, $18)
            returning *
        ), event as (
            insert into events (login_id, seq, kind, source, login_status, attempt_id, detail)
            values ($1, 1, $21, $22, $20, $11, $16)
        ), outbound as (
            insert into outbound_events (login_id, seq, type) values ($1, 1, $26)
        )
        select l.id as "id!", l.scan_ref, l.user_ref, l.locale,
               l.lifetime_seconds as "lifetime_seconds!", l.max_attempts as "max_attempts!",
               l.attempts_forgiven as "attempts_forgiven!", host(l.client_ip) as client_ip,
               l.status as "status!: LoginStatus", l.event_seq as "event_seq!",
               l.created_at as "created_at!", l.approved_at, l.approval_expires_at, l.redeemed_at,
               l.canceled_at, l.state, l.platform_name, l.desktop_place,
               a.id as "attempt_id!", a.number as "attempt_number!",
               a.status as "attempt_status!: AttemptStatus", a.digit_string,
               a.idenfy_max_attempt_count, a.created_at as "attempt_created_at!",
               a.expires_at as "expires_at!", a.finished_at,
               a.outcome_source as "outcome_source: Source", a.fail_reason, a.risk_tags,
               a.client_id, a.phone_ip, a.network_match as "network_match: NetworkMatch"
        from login l cross join attempt a
        "#,
        l.id,
        l.scan_ref,
        l.user_ref,
        l.locale,
        l.lifetime_seconds,
        l.max_attempts,
        l.client_ip,
        l.user_agent,
        l.api_key_id,
        l.watch_token_hash,
        a.id,
        a.idenfy_token,
        a.digit_string,
        a.idenfy_max_attempt_count,
        a.expires_at,
        detail,
        a.number,
        a.requested_from,
        l.state,
        LoginStatus::Pending as LoginStatus,
        EventKind::LoginCreated as EventKind,
        Source::Platform as Source,
        l.platform_name,
        l.desktop_place,
        reservation,
        EventType::Created as EventType
    )
    .fetch_one(conn)
    .await
    .map(Joined::into_row)
}
