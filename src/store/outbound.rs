//! outbound_events, event_endpoints, event_deliveries and event_delivery_attempts: what a
//! platform is told, where it is pushed, and every try.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::outbound::EventType;
use crate::domain::{EventKind, LoginStatus};

/// The advisory lock one sequencer at a time holds while it numbers committed events.
fn sequencer_key() -> i64 {
    super::lock_key("outbound_sequencer", b"")
}

/// Numbers committed, unnumbered events in insert order (one login's in its order, since
/// each change holds the login's row lock until it commits) and queues a delivery of each
/// to every enabled endpoint that takes its type. Another instance doing it already: with
/// `wait`, numbers what is left once it is done (a reader then sees every event committed
/// before it asked); without, returns 0.
pub async fn sequence(pool: &PgPool, limit: i64, wait: bool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock($1) as "locked!""#,
        sequencer_key()
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked && !wait {
        return Ok(0);
    }
    if !locked {
        // a statement of its own inside the transaction: a dropped wait still rolls back
        sqlx::query!("select pg_advisory_xact_lock($1)", sequencer_key())
            .execute(&mut *tx)
            .await?;
    }
    // the statement's snapshot is taken after the lock: it sees every number given before
    let numbered = sqlx::query_scalar!(
        r#"
        with todo as (
            select id, serial from outbound_events where position is null
            order by serial limit $1 for update
        ), base as (
            select coalesce(max(position), 0) as top from outbound_events
        ), numbered as (
            select t.id, b.top + row_number() over (order by t.serial) as position
            from todo t cross join base b
        ), positioned as (
            update outbound_events o set position = n.position
            from numbered n where o.id = n.id
            returning o.id, o.position, o.type, o.login_id
        ), queued as (
            insert into event_deliveries (endpoint_id, event_id, login_id, position)
            select e.id, p.id, p.login_id, p.position
            from positioned p join event_endpoints e
              on e.disabled_at is null and (e.types is null or p.type = any(e.types))
        )
        select count(*) as "count!" from positioned
        "#,
        limit
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(numbered as u64)
}

/// One public event, with what its payload says.
#[derive(Debug, Clone)]
pub struct OutboundRow {
    pub id: Uuid,
    pub position: i64,
    pub kind: EventType,
    pub login_id: Uuid,
    pub seq: i32,
    pub created_at: DateTime<Utc>,
    pub event_kind: EventKind,
    pub login_status: LoginStatus,
    pub attempt_id: Option<Uuid>,
    pub attempt_number: Option<i32>,
    pub fail_reason: Option<String>,
}

/// Numbered events after `position`, in order, only `types` when given; and the highest
/// position numbered, read by the same statement (so in one snapshot: every lower one is
/// committed with it).
pub async fn after(
    conn: &PgPool,
    position: i64,
    types: Option<&[String]>,
    limit: i64,
) -> Result<(Vec<OutboundRow>, i64), sqlx::Error> {
    let found = sqlx::query!(
        r#"
        select t.top as "top!", p.id as "id?", p.position as "position?",
               p.type as "kind?: EventType", p.login_id as "login_id?", p.seq as "seq?",
               p.created_at as "created_at?", p.kind as "event_kind?: EventKind",
               p.login_status as "login_status?: LoginStatus", p.attempt_id,
               p.number as "attempt_number?", p.fail_reason as "fail_reason?"
        from (select coalesce(max(position), 0) as top from outbound_events) t
        left join lateral (
            select o.id, o.position, o.type, o.login_id, o.seq, e.created_at, e.kind,
                   e.login_status, e.attempt_id, a.number, a.fail_reason
            from outbound_events o
            join events e on e.login_id = o.login_id and e.seq = o.seq
            left join attempts a on a.id = e.attempt_id
            where o.position > $1 and ($2::text[] is null or o.type = any($2))
            order by o.position
            limit $3
        ) p on true
        order by p.position
        "#,
        position,
        types,
        limit
    )
    .fetch_all(conn)
    .await?;
    let top = found.first().map_or(0, |r| r.top);
    let rows = found
        .into_iter()
        .filter_map(|r| {
            Some(OutboundRow {
                id: r.id?,
                position: r.position?,
                kind: r.kind?,
                login_id: r.login_id?,
                seq: r.seq?,
                created_at: r.created_at?,
                event_kind: r.event_kind?,
                login_status: r.login_status?,
                attempt_id: r.attempt_id,
                attempt_number: r.attempt_number,
                fail_reason: r.fail_reason,
            })
        })
        .collect();
    Ok((rows, top))
}

/// One event, numbered or not.
pub async fn find(
    conn: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<OutboundRow>, sqlx::Error> {
    sqlx::query_as!(
        OutboundRow,
        r#"
        select o.id, coalesce(o.position, 0) as "position!", o.type as "kind: EventType",
               o.login_id, o.seq, e.created_at, e.kind as "event_kind: EventKind",
               e.login_status as "login_status: LoginStatus", e.attempt_id,
               a.number as "attempt_number?", a.fail_reason as "fail_reason?"
        from outbound_events o
        join events e on e.login_id = o.login_id and e.seq = o.seq
        left join attempts a on a.id = e.attempt_id
        where o.id = $1
        "#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// The longest an endpoint answering 5xx, 429 or nothing is left alone before its next due
/// delivery is tried.
const ENDPOINT_PAUSE_SECONDS: f64 = 60.0;

/// How long a configured endpoint stays enabled without an instance confirming it: well
/// over the confirmation interval, so a deploy's old and new instances can overlap.
pub const UNCONFIRMED_AFTER_SECONDS: f64 = 600.0;

/// Confirms this instance's configured endpoints: new ones enabled, one configured again after
/// it was dropped enabled again and queued what was numbered meanwhile (the last day of it;
/// `facepair events replay-since` sends older events), one disabled by a 410
/// still disabled. A configured endpoint no instance has confirmed for
/// [`UNCONFIRMED_AFTER_SECONDS`] is disabled as no longer configured, so no event is queued
/// for it that nobody would send.
pub async fn sync_configured(
    conn: &mut PgConnection,
    urls: &[String],
    types: Option<&[String]>,
) -> Result<(), sqlx::Error> {
    // under the sequencer's lock, so no event is numbered between the catch-up and the
    // endpoint's enabling; the URLs in one order, so instances confirming at once never wait
    // on each other in a cycle
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query!("select pg_advisory_xact_lock($1)", sequencer_key())
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        r#"
        with back as (
            select e.id, coalesce(e.disabled_after_position,
                                  -- disabled by an instance that predates the mark; only
                                  -- the last day matters below
                                  (select coalesce(max(o.position), 0) from outbound_events o
                                   where o.created_at < e.disabled_at - interval '1 minute'
                                     and o.created_at >= now() - interval '1 day 1 minute')) as mark
            from event_endpoints e
            where e.url = any($1) and e.disabled_reason = 'no longer configured'
        ), missed as (
            -- every event numbered after the disabling; a day at most, so one statement under
            -- the lock stays short
            insert into event_deliveries (endpoint_id, event_id, login_id, position)
            select b.id, o.id, o.login_id, o.position
            from back b join outbound_events o
              on o.position > b.mark
             and o.created_at >= now() - interval '1 day'
             and ($2::text[] is null or o.type = any($2))
            on conflict (endpoint_id, event_id) do nothing
        )
        insert into event_endpoints (url, origin, types)
        select u, 'config', $2 from unnest($1::text[]) as u order by u
        on conflict (url) do update
        set origin = 'config', types = excluded.types, secrets = null, confirmed_at = now(),
            disabled_at = case when event_endpoints.disabled_reason = 'no longer configured'
                               then null else event_endpoints.disabled_at end,
            disabled_reason = case when event_endpoints.disabled_reason = 'no longer configured'
                                   then null else event_endpoints.disabled_reason end,
            disabled_after_position = null
        "#,
        urls,
        types
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query!(
        r#"
        -- what was numbered before this statement's snapshot was queued for the endpoint; what
        -- commits after it is numbered higher (the sequencer numbers under its lock, in order)
        update event_endpoints
        set disabled_at = now(), disabled_reason = 'no longer configured',
            disabled_after_position = (select coalesce(max(position), 0) from outbound_events)
        where id in (select id from event_endpoints
                     where origin = 'config' and disabled_at is null
                       and confirmed_at < now() - make_interval(secs => $1)
                     for update skip locked)
        "#,
        UNCONFIRMED_AFTER_SECONDS
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A delivery an instance has leased and now sends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub endpoint_id: Uuid,
    pub url: String,
    /// An API endpoint's own secrets; `None` for a configured one.
    pub secrets: Option<Vec<String>>,
    pub event_id: Uuid,
    /// Tries counted so far, this one included.
    pub attempts: i32,
    /// The lease's end as stored: it names this claim, which alone may settle or hand back
    /// the delivery.
    pub lease: DateTime<Utc>,
    /// The event is `login.approved` and its approval has expired meanwhile.
    pub stale: bool,
}

/// The claim behind [`claim`], with its parameters in that order: public so a test can read
/// its plan.
pub const CLAIM: &str = r#"
    with eligible as (
        select e.id, coalesce(r.left_, $3) as room
        from event_endpoints e
        left join unnest($4::uuid[], $5::int8[]) as r(id, left_) on r.id = e.id
        where e.disabled_at is null and (e.retry_at is null or e.retry_at <= now())
          and (e.origin <> 'config' or e.url = any($6::text[]))
    ), candidates as (
        -- each endpoint's first due deliveries, up to its room, from its own index range: one
        -- another instance holds is passed over for the next, and PostgreSQL checks each again
        -- at its newest version as it locks it (read committed), so one settled, leased or
        -- replayed meanwhile is left alone
        select c.endpoint_id, c.event_id, c.next_attempt_at, c.position
        from eligible e cross join lateral (
            select d.endpoint_id, d.event_id, d.next_attempt_at, d.position
            from event_deliveries d
            where d.endpoint_id = e.id and d.state = 'pending'
              and d.next_attempt_at <= now()
              and (d.leased_until is null or d.leased_until < now())
              -- the login's first pending one: its events arrive in order. "Not settled", as
              -- event_deliveries_unsettled_idx says it, so that the due index cannot serve this
              and d.position = (
                  select min(p.position) from event_deliveries p
                  where p.endpoint_id = d.endpoint_id and p.login_id = d.login_id
                    and p.state not in ('delivered', 'failed', 'skipped'))
            order by d.next_attempt_at, d.position
            limit least(e.room, $1)
            for update skip locked
        ) c
    ), due as (
        select endpoint_id, event_id from candidates
        order by next_attempt_at, position
        limit $1
    ), leased as (
        update event_deliveries d
        set leased_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
        from due where d.endpoint_id = due.endpoint_id and d.event_id = due.event_id
        returning d.endpoint_id, d.event_id, d.attempts, d.login_id, d.leased_until
    )
    select l.endpoint_id, e.url, e.secrets, l.event_id, l.attempts,
           l.leased_until as lease,
           (o.type = 'login.approved'
            and coalesce(g.approval_expires_at <= now(), true)) as stale
    from leased l
    join event_endpoints e on e.id = l.endpoint_id
    join outbound_events o on o.id = l.event_id
    join logins g on g.id = l.login_id
"#;

/// Leases up to `limit` due deliveries for `lease_seconds`, skipping rows another instance
/// holds, endpoints backing off and configured endpoints not in this instance's
/// `configured` list (its secrets sign for those); at most `room` of them per endpoint (`rooms` lists the
/// endpoints with less, this instance having some in flight). A delivery behind an earlier
/// one of the same login to the same endpoint waits: one login's events arrive in order.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease_seconds: f64,
    room: i64,
    rooms: &[(Uuid, i64)],
    configured: &[String],
) -> Result<Vec<Claimed>, sqlx::Error> {
    let (ids, left): (Vec<Uuid>, Vec<i64>) = rooms.iter().copied().unzip();
    // planned at each call, not once per connection: a plan made while the table was small
    // (a new deployment) scans it once per row when it has grown, and claims stall
    sqlx::query_as::<_, Claimed>(CLAIM)
        .bind(limit)
        .bind(lease_seconds)
        .bind(room)
        .bind(&ids)
        .bind(&left)
        .bind(configured)
        .persistent(false)
        .fetch_all(pool)
        .await
}

/// What one try came to.
#[derive(Debug, Clone)]
pub struct Tried {
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// What becomes of the delivery after a try.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Delivered,
    /// Tried again after this many seconds; with `endpoint_too`, the endpoint pauses too (at
    /// most a minute).
    Retry {
        after_seconds: f64,
        endpoint_too: bool,
    },
    Failed,
    /// The endpoint answered 410: it is disabled, the delivery stays pending.
    Gone,
    /// No longer matters; nothing was sent.
    Skipped,
}

impl Next {
    /// Its name in metrics and logs.
    pub fn outcome(self) -> &'static str {
        match self {
            Next::Delivered => "delivered",
            Next::Gone => "gone",
            Next::Retry { .. } => "retry",
            Next::Failed => "failed",
            Next::Skipped => "skipped",
        }
    }
}

/// Records a try (none when `tried` is `None`) and what follows, ending the claim whose lease
/// ends at `lease`. A lease that ran out and was claimed again (or replayed) meanwhile is no
/// longer this claim's: only the try is recorded.
pub async fn settle(
    pool: &PgPool,
    endpoint_id: Uuid,
    event_id: Uuid,
    lease: DateTime<Utc>,
    tried: Option<&Tried>,
    next: Next,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(t) = tried {
        sqlx::query!(
            r#"
            insert into event_delivery_attempts
                (endpoint_id, event_id, status_code, latency_ms, error, response_excerpt)
            values ($1, $2, $3, $4, $5, $6)
            "#,
            endpoint_id,
            event_id,
            t.status_code,
            t.latency_ms,
            t.error,
            t.response_excerpt
        )
        .execute(&mut *tx)
        .await?;
    }
    let (state, after, endpoint_wait, gone) = match next {
        Next::Delivered => ("delivered", None, None, false),
        Next::Retry {
            after_seconds,
            endpoint_too,
        } => (
            "pending",
            Some(after_seconds),
            // the endpoint as a whole waits a short while only: one payload it keeps refusing
            // must not hold back the others for its own long schedule
            endpoint_too.then_some(after_seconds.min(ENDPOINT_PAUSE_SECONDS)),
            false,
        ),
        Next::Failed => ("failed", None, None, false),
        Next::Gone => ("pending", Some(0.0), None, true),
        Next::Skipped => ("skipped", None, None, false),
    };
    let still_held = sqlx::query!(
        r#"
        update event_deliveries
        set state = $3, leased_until = null,
            next_attempt_at = case when $4::float8 is null then next_attempt_at
                                   else now() + make_interval(secs => $4) end,
            finished_at = case when $3 = 'pending' then null else now() end
        where endpoint_id = $1 and event_id = $2 and leased_until = $5 and state = 'pending'
        "#,
        endpoint_id,
        event_id,
        state,
        after,
        lease
    )
    .execute(&mut *tx)
    .await?;
    if still_held.rows_affected() == 0 {
        return tx.commit().await;
    }
    sqlx::query!(
        r#"
        update event_endpoints
        set retry_at = case when $2::float8 is null then null
                            else now() + make_interval(secs => $2) end,
            disabled_at = case when $3 then now() else disabled_at end,
            disabled_reason = case when $3 then 'answered 410 Gone' else disabled_reason end
        where id = $1 and (retry_at is not null or $2::float8 is not null or $3)
        "#,
        endpoint_id,
        endpoint_wait,
        gone
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Ends the claim whose lease ends at `lease` without a try: nothing was sent, so its try is
/// not counted, and the delivery is due again at once.
pub async fn give_back(
    pool: &PgPool,
    endpoint_id: Uuid,
    event_id: Uuid,
    lease: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        update event_deliveries set attempts = attempts - 1, leased_until = null
        where endpoint_id = $1 and event_id = $2 and leased_until = $3 and state = 'pending'
        "#,
        endpoint_id,
        event_id,
        lease
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What [`replay`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replayed {
    /// Deliveries queued to be sent now.
    pub queued: i64,
    /// Deliveries being pushed right now, left to that push (its outcome is recorded).
    pub in_flight: i64,
}

/// Queues events to be sent now (`event` alone, or every one written since `since`) to every
/// enabled endpoint that takes their type, or to the one with `endpoint_url`: deliveries that
/// exist go back to pending, missing ones (an endpoint added or disabled meanwhile) are
/// added. Event ids stay the same.
pub async fn replay(
    conn: impl sqlx::PgExecutor<'_>,
    event: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    endpoint_url: Option<&str>,
) -> Result<Replayed, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        with matching as (
            select e.id as endpoint_id, o.id as event_id, o.login_id, o.position
            from outbound_events o
            join event_endpoints e
              on e.disabled_at is null and (e.types is null or o.type = any(e.types))
            where o.position is not null
              and ($1::uuid is null or o.id = $1)
              and ($2::timestamptz is null or o.created_at >= $2)
              and ($3::text is null or e.url = $3)
        ), queued as (
            insert into event_deliveries (endpoint_id, event_id, login_id, position)
            select endpoint_id, event_id, login_id, position from matching
            on conflict (endpoint_id, event_id) do update
            set state = 'pending', next_attempt_at = now(), leased_until = null, finished_at = null,
                -- a finished one starts its schedule again; one being pushed now is left to it
                attempts = case when event_deliveries.state = 'pending'
                                then event_deliveries.attempts else 0 end
            where event_deliveries.leased_until is null or event_deliveries.leased_until < now()
            returning 1
        )
        select (select count(*) from queued) as "queued!",
               (select count(*) from matching) as "matching!"
        "#,
        event,
        since,
        endpoint_url
    )
    .fetch_one(conn)
    .await?;
    Ok(Replayed {
        queued: row.queued,
        in_flight: row.matching - row.queued,
    })
}

/// Enables the endpoint with `url` again (after a 410, or disabled by the platform), its
/// backoff cleared. Whether there was one.
pub async fn enable_endpoint(
    conn: impl sqlx::PgExecutor<'_>,
    url: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        update event_endpoints set disabled_at = null, disabled_reason = null, retry_at = null
        where url = $1
        "#,
        url
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ops figures: the age of the oldest undelivered event, endpoints disabled (by a 410 or
/// the platform, not those no longer configured).
pub async fn backlog(conn: impl sqlx::PgExecutor<'_>) -> Result<(f64, i64), sqlx::Error> {
    // planned at each call, for the same reason as `claim`
    sqlx::query_as(
        r#"
        select
          coalesce((select extract(epoch from now() - min(o.created_at))::float8
                    from event_deliveries d join outbound_events o on o.id = d.event_id
                    join event_endpoints e on e.id = d.endpoint_id
                    where d.state = 'pending' and e.disabled_at is null), 0),
          -- an endpoint no longer configured is not in trouble
          (select count(*) from event_endpoints
           where disabled_at is not null
             and disabled_reason is distinct from 'no longer configured')
        "#,
    )
    .persistent(false)
    .fetch_one(conn)
    .await
}

/// An endpoint as the API shows it (never its secrets).
#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: Uuid,
    pub url: String,
    pub origin: String,
    pub types: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

/// What adding an endpoint came to.
pub enum Added {
    New(EndpointRow),
    UrlTaken,
    /// `max_enabled` endpoints are enabled already.
    Full,
}

/// A new API endpoint, unless one has that URL or `max_enabled` are enabled. Under an advisory
/// lock, so instances adding at once cannot pass the limit together: each statement after it
/// sees what the one before committed.
pub async fn create_endpoint(
    pool: &PgPool,
    url: &str,
    types: Option<&[String]>,
    secrets: &[String],
    max_enabled: i64,
) -> Result<Added, sqlx::Error> {
    let mut tx = super::begin_locked(pool, super::lock_key("event_endpoints", b"")).await?;
    let found = sqlx::query!(
        r#"
        select exists(select from event_endpoints where url = $1) as "taken!",
               (select count(*) from event_endpoints where disabled_at is null) as "enabled!"
        "#,
        url
    )
    .fetch_one(&mut *tx)
    .await?;
    if found.taken {
        return Ok(Added::UrlTaken);
    }
    if found.enabled >= max_enabled {
        return Ok(Added::Full);
    }
    // an instance confirming its configured endpoints takes no lock: it may add the URL first
    let row = sqlx::query_as!(
        EndpointRow,
        r#"
        insert into event_endpoints (url, origin, types, secrets)
        values ($1, 'api', $2, $3)
        on conflict (url) do nothing
        returning id, url, origin, types, created_at, disabled_at, disabled_reason
        "#,
        url,
        types,
        secrets
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map_or(Added::UrlTaken, Added::New))
}

/// Every endpoint, oldest first.
pub async fn endpoints(conn: impl sqlx::PgExecutor<'_>) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRow,
        r#"
        select id, url, origin, types, created_at, disabled_at, disabled_reason
        from event_endpoints order by created_at, url
        "#
    )
    .fetch_all(conn)
    .await
}

/// Disables an endpoint (nothing more is queued or sent to it); disabling twice keeps the
/// first time. `None` if there is no such endpoint.
pub async fn disable_endpoint(
    conn: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRow,
        r#"
        update event_endpoints
        set disabled_at = coalesce(disabled_at, now()),
            disabled_reason = coalesce(disabled_reason, 'disabled by the platform')
        where id = $1
        returning id, url, origin, types, created_at, disabled_at, disabled_reason
        "#,
        id
    )
    .fetch_optional(conn)
    .await
}
