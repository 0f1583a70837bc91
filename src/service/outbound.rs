//! Telling platforms: the events feed and the push of each event to the endpoints as a
//! Standard Webhooks request, claimed in PostgreSQL so any number of instances share the work.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::outbound::{self, EventType, WebhookSecret};
use crate::domain::{EventKind, LoginStatus};
use crate::error::ApiError;
use crate::service::Context;
use crate::store::outbound::{self as store, Claimed, Next, OutboundRow, Tried};

/// One event as the feed lists it and as it is pushed.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboundEvent {
    /// The event's id: the `webhook-id` of its pushes, the same on every retry and replay.
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "login.approved")]
    pub kind: EventType,
    /// When the change happened.
    pub timestamp: DateTime<Utc>,
    pub data: EventData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventData {
    pub login_id: Uuid,
    /// The login's event number, as in its Server-Sent Events' `id:`.
    pub seq: i32,
    /// The login's status after the change.
    pub status: LoginStatus,
    pub attempt_id: Option<Uuid>,
    pub attempt_number: Option<i32>,
    /// iDenfy's failReason, for `login.failed` and `login.exhausted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// For `login.expired`: `code` (the code went unused) or `approval` (not redeemed in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<&'static str>,
}

impl From<&OutboundRow> for OutboundEvent {
    fn from(r: &OutboundRow) -> Self {
        let failed = matches!(r.kind, EventType::Failed | EventType::Exhausted);
        Self {
            id: r.id,
            kind: r.kind,
            timestamp: r.created_at,
            data: EventData {
                login_id: r.login_id,
                seq: r.seq,
                status: r.login_status,
                attempt_id: r.attempt_id,
                attempt_number: r.attempt_number,
                fail_reason: r.fail_reason.clone().filter(|_| failed),
                expired: (r.kind == EventType::Expired).then_some(match r.event_kind {
                    EventKind::ApprovalExpired | EventKind::AttemptSucceeded => "approval",
                    _ => "code",
                }),
            },
        }
    }
}

/// A page of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<OutboundEvent>,
    /// Pass as `after` for the next page: the last event's cursor, or the one asked with.
    pub next_cursor: String,
    /// More events are waiting past this page.
    pub has_more: bool,
}

/// How many events one sequencer statement numbers.
const SEQUENCE_BATCH: i64 = 1000;

/// Numbers every committed event, batch after batch; with `wait`, after any other instance
/// doing it, so that nothing committed before the call is left unnumbered.
async fn sequence_all(ctx: &Context, wait: bool) -> Result<(), sqlx::Error> {
    while store::sequence(&ctx.pool, SEQUENCE_BATCH, wait).await? == SEQUENCE_BATCH as u64 {}
    Ok(())
}

/// Events after `after` in commit order; with `wait`, holds the request until one comes,
/// time is up, or the instance begins to stop.
pub async fn feed(
    ctx: &Context,
    after: i64,
    types: Option<Vec<String>>,
    limit: i64,
    wait: Duration,
) -> Result<EventPage, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    // the first pass waits for any sequencer, so everything committed before the call is
    // listed; later ones only try, and never hold a pooled connection waiting for the lock
    let mut first = true;
    loop {
        sequence_all(ctx, std::mem::take(&mut first)).await?;
        let (rows, top) = store::after(&ctx.pool, after, types.as_deref(), limit + 1).await?;
        let done = !rows.is_empty()
            || tokio::time::Instant::now() >= deadline
            || ctx.shutdown.is_cancelled();
        if done {
            let mut rows = rows;
            let has_more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            // with nothing more to list, the cursor passes every event read, matching or not,
            // so a rare type is not looked for again among them
            let next = match rows.last() {
                Some(last) if has_more => last.position,
                _ => top.max(after),
            };
            let data: Vec<OutboundEvent> = rows.iter().map(OutboundEvent::from).collect();
            return Ok(EventPage {
                data,
                next_cursor: next.to_string(),
                has_more,
            });
        }
        let nap = ctx.settings.events.poll_interval;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + nap)) => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    }
}

/// Deliveries one instance sends at once, and at most to one endpoint: a hanging endpoint
/// holds only its own share, until its timeouts make it back off.
const IN_FLIGHT: usize = 64;
const IN_FLIGHT_PER_ENDPOINT: usize = 8;
/// The most of a response kept with its attempt.
const EXCERPT_BYTES: usize = 256;

/// The instance's delivery worker: numbers committed events, leases due deliveries and sends
/// them, until `stop`. Requests in flight finish (each is bounded by the timeout).
pub async fn run(ctx: Context, stop: CancellationToken) {
    let events = ctx.settings.events.clone();
    let client = match client(&events) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %crate::error::error_chain(&e), "event pushes are off: no HTTP client");
            return;
        }
    };
    let secrets: Arc<[WebhookSecret]> = events.secrets.clone().into();
    let urls: Vec<String> = events.endpoints.iter().map(|u| u.to_string()).collect();
    let mut confirmed: Option<Instant> = None;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut per_endpoint: HashMap<Uuid, usize> = HashMap::new();
    let mut backlog_read = Instant::now() - Duration::from_secs(60);
    // a lease outlives the request and the time to record its outcome
    let lease = events.timeout + Duration::from_secs(20);
    let mut tick = tokio::time::interval(events.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // the last claim found work: more may be due at once
    let mut more_due = false;
    // the endpoint of each push in flight, by its task
    let mut pushing = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                if confirmed.is_none_or(|at| at.elapsed() >= CONFIRM_EVERY) && sync(&ctx, &urls).await {
                    confirmed = Some(Instant::now());
                }
                if let Err(e) = sequence_all(&ctx, false).await {
                    tracing::warn!(error = %crate::error::error_chain(&e), "could not number new events");
                    continue;
                }
                if backlog_read.elapsed() >= Duration::from_secs(5) {
                    backlog_read = Instant::now();
                    if let Ok((oldest, disabled)) = store::backlog(&ctx.pool).await {
                        ctx.metrics.event_oldest_undelivered.set(oldest.max(0.0) as u64);
                        ctx.metrics.event_endpoints_disabled.set(disabled.max(0) as u64);
                    }
                }
            }
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                // this push and every other one already over give their endpoint's place back
                // (a push that panicked too), so that one claim fills all their places
                let over = std::iter::from_fn(|| in_flight.try_join_next_with_id());
                for done in std::iter::once(done).chain(over) {
                    let task = done.map_or_else(|e| e.id(), |(id, ())| id);
                    if let Some(endpoint) = pushing.remove(&task) {
                        release(&mut per_endpoint, endpoint);
                    }
                }
                if !more_due {
                    continue;
                }
            }
        }
        let room = IN_FLIGHT.saturating_sub(in_flight.len());
        if room == 0 {
            continue;
        }
        let rooms: Vec<(Uuid, i64)> = per_endpoint
            .iter()
            .map(|(id, n)| (*id, IN_FLIGHT_PER_ENDPOINT.saturating_sub(*n) as i64))
            .collect();
        let claimed = match store::claim(
            &ctx.pool,
            room as i64,
            lease.as_secs_f64(),
            IN_FLIGHT_PER_ENDPOINT as i64,
            &rooms,
            &urls,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::error::error_chain(&e), "could not claim event deliveries");
                continue;
            }
        };
        // work was found: a push that ends makes room for the next at once, rather than at
        // the next tick (an endpoint's 8 in flight would otherwise cap it at 8 per tick)
        more_due = !claimed.is_empty();
        for c in claimed {
            *per_endpoint.entry(c.endpoint_id).or_default() += 1;
            let push = Push {
                ctx: ctx.clone(),
                client: client.clone(),
                secrets: secrets.clone(),
                lease_ends: Instant::now() + lease,
            };
            let endpoint = c.endpoint_id;
            let task = in_flight.spawn(push.deliver(c));
            pushing.insert(task.id(), endpoint);
        }
    }
    // pushes in flight get a moment to finish; one cut short is sent again after its lease
    let drain = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        in_flight.shutdown().await;
    }
}

/// How often an instance confirms its configured endpoints (and disables those nobody has
/// confirmed for `store::UNCONFIRMED_AFTER_SECONDS`).
const CONFIRM_EVERY: Duration = Duration::from_secs(60);

/// How long a stopping instance lets its pushes in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

fn release(per_endpoint: &mut HashMap<Uuid, usize>, endpoint: Uuid) {
    if let Some(n) = per_endpoint.get_mut(&endpoint) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_endpoint.remove(&endpoint);
        }
    }
}

async fn sync(ctx: &Context, urls: &[String]) -> bool {
    let done = async {
        let mut conn = ctx.pool.acquire().await?;
        store::sync_configured(&mut conn, urls, None).await
    };
    match done.await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %crate::error::error_chain(&e), "could not record the configured event endpoints");
            false
        }
    }
}

/// The pushes' HTTP client: no redirects followed, a bounded timeout, and names resolved
/// only to public addresses unless private ones are allowed.
pub fn client(events: &crate::config::Events) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // a proxy from the environment would resolve the names itself, past PublicOnly
        .no_proxy()
        .timeout(events.timeout)
        .connect_timeout(events.timeout)
        .user_agent(concat!(
            "facepair/",
            env!("CARGO_PKG_VERSION"),
            " (Standard Webhooks)"
        ))
        .dns_resolver(Arc::new(PublicOnly {
            allow_private: events.allow_private_http,
        }))
        .build()
}

/// Resolves a name and refuses it if any address is not public: a name that points inside
/// the network (or is rebound to do so after the URL was checked) reaches nothing.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addrs.iter().any(|a| !outbound::is_public(a.ip())) {
                return Err(format!(
                    "{host} resolves to a loopback, private or link-local address"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

struct Push {
    ctx: Context,
    client: reqwest::Client,
    secrets: Arc<[WebhookSecret]>,
    lease_ends: Instant,
}

impl Push {
    #[tracing::instrument(skip_all, fields(endpoint = %c.endpoint_id, event = %c.event_id, attempt = c.attempts))]
    async fn deliver(self, c: Claimed) {
        let endpoint = c.endpoint_id.to_string();
        if c.stale {
            // the approval could no longer be used: its login.expired follows
            self.settle(&c, None, Next::Skipped).await;
            self.ctx.metrics.event_push(&endpoint, "skipped", None);
            return;
        }
        let row = match store::find(&self.ctx.pool, c.event_id).await {
            Ok(Some(row)) => row,
            // removed by retention with its deliveries
            Ok(None) => return,
            Err(e) => {
                // a failed try, nothing sent: retried by the schedule, which a lasting error
                // runs through to `failed` rather than looping
                let error = crate::error::error_chain(&e).to_string();
                tracing::warn!(%error, "could not read the event to push");
                let error = format!("the event could not be read: {error}");
                return self.failed_unsent(&c, error, false).await;
            }
        };
        let allow_private = self.ctx.settings.events.allow_private_http;
        if let Err(refused) = url::Url::parse(&c.url)
            .map_err(|_| "is not a URL")
            .and_then(|u| outbound::check_endpoint_url(&u, allow_private))
        {
            let error = format!("the endpoint URL {refused}");
            return self.failed_unsent(&c, error, true).await;
        }
        // a push that could outlast the lease could meet another instance's: leave it to that one
        if Instant::now() + self.ctx.settings.events.timeout + Duration::from_secs(1)
            > self.lease_ends
        {
            tracing::warn!("an event push was put off: too little of its lease was left");
            return self.give_back(&c).await;
        }
        let body = serde_json::to_vec(&OutboundEvent::from(&row)).expect("events serialize");
        let id = row.id.to_string();
        let timestamp = Utc::now().timestamp();
        let started = Instant::now();
        let sent = self
            .client
            .post(&c.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                outbound::signature_header(&self.secrets_for(&c), &id, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        let (tried, retry_after, endpoint_down) = match sent {
            Ok(mut response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let excerpt = excerpt(&mut response).await;
                let tried = Tried {
                    status_code: Some(i32::from(status.as_u16())),
                    latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
                    error: None,
                    response_excerpt: excerpt,
                };
                let down = status.is_server_error() || status.as_u16() == 429;
                (tried, retry_after, down)
            }
            Err(e) => {
                // the URL may carry a platform's token: neither the log nor ops need it
                let e = e.without_url();
                let reason = if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    format!("could not connect: {}", crate::error::error_chain(&e))
                } else {
                    crate::error::error_chain(&e).to_string()
                };
                let tried = Tried {
                    status_code: None,
                    latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
                    error: Some(reason.chars().take(500).collect()),
                    response_excerpt: None,
                };
                (tried, None, true)
            }
        };
        let took = started.elapsed();
        let next = match tried.status_code {
            Some(s) if (200..300).contains(&s) => Next::Delivered,
            Some(410) => Next::Gone,
            _ => self.after_failure(&c, retry_after, endpoint_down),
        };
        let outcome = next.outcome();
        self.ctx.metrics.event_push(&endpoint, outcome, Some(took));
        if next == Next::Gone {
            tracing::warn!("the event endpoint answered 410 Gone: it is disabled");
        } else if next != Next::Delivered {
            tracing::info!(status = ?tried.status_code, error = ?tried.error, outcome, "an event push failed");
        }
        self.settle(&c, Some(&tried), next).await;
    }

    /// Records a try that failed before anything was sent, and what follows by the schedule
    /// (`endpoint_too`: the endpoint itself is at fault and waits as well).
    async fn failed_unsent(&self, c: &Claimed, error: String, endpoint_too: bool) {
        let tried = Tried {
            status_code: None,
            latency_ms: 0,
            error: Some(error),
            response_excerpt: None,
        };
        let next = self.after_failure(c, None, endpoint_too);
        let endpoint = c.endpoint_id.to_string();
        self.ctx.metrics.event_push(&endpoint, next.outcome(), None);
        self.settle(c, Some(&tried), next).await;
    }

    /// Hands the claim back untried (its try is not counted); the metric counts it.
    async fn give_back(&self, c: &Claimed) {
        self.ctx
            .metrics
            .event_push(&c.endpoint_id.to_string(), "put_off", None);
        let given = store::give_back(&self.ctx.pool, c.endpoint_id, c.event_id, c.lease);
        if let Err(e) = given.await {
            tracing::warn!(error = %crate::error::error_chain(&e), "could not hand back an event push; it is tried again when its lease ends");
        }
    }

    /// An API endpoint's own secrets, else the configured ones.
    fn secrets_for(&self, c: &Claimed) -> Vec<WebhookSecret> {
        match &c.secrets {
            Some(own) => own
                .iter()
                .filter_map(|s| WebhookSecret::parse(s).ok())
                .collect(),
            None => self.secrets.to_vec(),
        }
    }

    /// The next step after a failed try: a retry by the schedule, or `failed` once it is spent.
    fn after_failure(
        &self,
        c: &Claimed,
        retry_after: Option<Duration>,
        endpoint_down: bool,
    ) -> Next {
        match outbound::retry_delay(
            &self.ctx.settings.events.retry_schedule,
            c.attempts.max(1) as usize,
            retry_after,
            rand::random::<f64>(),
        ) {
            Some(after) => Next::Retry {
                after_seconds: after.as_secs_f64(),
                endpoint_too: endpoint_down,
            },
            None => Next::Failed,
        }
    }

    /// Records the outcome, trying again while PostgreSQL is away and the lease holds; past
    /// it the delivery is sent again (same `webhook-id`) by whichever instance claims it.
    async fn settle(&self, c: &Claimed, tried: Option<&Tried>, next: Next) {
        loop {
            let settled = store::settle(
                &self.ctx.pool,
                c.endpoint_id,
                c.event_id,
                c.lease,
                tried,
                next,
            );
            match settled.await {
                Ok(()) => return,
                Err(e) if Instant::now() + Duration::from_millis(500) < self.lease_ends => {
                    tracing::warn!(error = %crate::error::error_chain(&e), "could not record an event push; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::error_chain(&e), "could not record an event push; it will be sent again");
                    return;
                }
            }
        }
    }
}

/// The start of the answer's body, as text, for the attempt's record.
async fn excerpt(response: &mut reqwest::Response) -> Option<String> {
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(EXCERPT_BYTES);
    // PostgreSQL's text refuses NUL, and a terminal showing the record obeys escapes
    let text: String = String::from_utf8_lossy(&kept)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (!text.is_empty()).then_some(text)
}

/// An event endpoint as the API shows it; its secrets are never shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    /// `api` (made with this API) or `config` (FACEPAIR_EVENT_ENDPOINTS).
    pub origin: String,
    /// The event types pushed to it; `null`: all.
    pub types: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// `answered 410 Gone` or `disabled by the platform`.
    pub disabled_reason: Option<String>,
}

impl From<store::EndpointRow> for Endpoint {
    fn from(r: store::EndpointRow) -> Self {
        Self {
            id: r.id,
            url: r.url,
            origin: r.origin,
            types: r.types,
            created_at: r.created_at,
            disabled_at: r.disabled_at,
            disabled_reason: r.disabled_reason,
        }
    }
}

/// A new endpoint and the secret its pushes are signed with, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointCreated {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_` and base64: verify every push with it.
    pub secret: String,
}

/// Stores an endpoint made by the platform; from the next numbered event on it is pushed
/// every event of `types` (all when `None`), signed with `secret` (a new one when `None`).
pub async fn create_endpoint(
    ctx: &Context,
    url: &url::Url,
    types: Option<Vec<EventType>>,
    secret: Option<String>,
) -> Result<EndpointCreated, ApiError> {
    let secret = secret.unwrap_or_else(|| {
        use base64::Engine as _;
        let key: [u8; 32] = rand::random();
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    });
    let types: Option<Vec<String>> =
        types.map(|t| t.iter().map(|t| t.as_str().to_owned()).collect());
    let added = store::create_endpoint(
        &ctx.pool,
        url.as_str(),
        types.as_deref(),
        std::slice::from_ref(&secret),
        outbound::MAX_ENABLED_ENDPOINTS,
    )
    .await?;
    let row = match added {
        store::Added::New(row) => row,
        store::Added::UrlTaken => return Err(ApiError::EndpointExists),
        store::Added::Full => {
            return Err(ApiError::TooManyEndpoints {
                max: outbound::MAX_ENABLED_ENDPOINTS,
            });
        }
    };
    tracing::info!(endpoint = %row.id, "event endpoint created");
    Ok(EndpointCreated {
        endpoint: row.into(),
        secret,
    })
}

pub async fn endpoints(ctx: &Context) -> Result<Vec<Endpoint>, ApiError> {
    Ok(store::endpoints(&ctx.pool)
        .await?
        .into_iter()
        .map(Endpoint::from)
        .collect())
}

pub async fn disable_endpoint(ctx: &Context, id: Uuid) -> Result<Endpoint, ApiError> {
    let row = store::disable_endpoint(&ctx.pool, id)
        .await?
        .ok_or(ApiError::EndpointNotFound)?;
    Ok(row.into())
}
