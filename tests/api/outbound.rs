//! Outbound events: the feed `GET /v1/events` and Standard Webhooks pushed to receivers on
//! loopback (wiremock servers answering as each test needs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use facepair::config::Settings;
use facepair::domain::outbound::{MAX_ENABLED_ENDPOINTS, WebhookSecret};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OLD_SECRET: &str = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3";

/// Pushes to `receivers`, signed with both secrets, retried every second, checked often.
pub(crate) fn pushing_to(receivers: &[&MockServer]) -> impl FnOnce(&mut Settings) {
    let urls: Vec<url::Url> = receivers
        .iter()
        .map(|r| format!("{}/hooks", r.uri()).parse().unwrap())
        .collect();
    move |s| {
        s.events.endpoints = urls;
        s.events.secrets = vec![
            WebhookSecret::parse(SECRET).unwrap(),
            WebhookSecret::parse(OLD_SECRET).unwrap(),
        ];
        s.events.allow_private_http = true;
        s.events.timeout = Duration::from_secs(2);
        s.events.retry_schedule = vec![Duration::from_secs(1); 5];
        s.events.poll_interval = Duration::from_millis(50);
    }
}

/// A Standard Webhooks verifier written from the specification, sharing no code with
/// facepair: the signed content is `id.timestamp.body`, the key the base64 after `whsec_`,
/// the header a space-separated list of `v1,<base64>`, the timestamp within 5 minutes.
fn verify(secret: &str, headers: &HashMap<String, String>, body: &[u8]) -> Result<(), String> {
    let id = headers.get("webhook-id").ok_or("no webhook-id")?;
    let timestamp = headers
        .get("webhook-timestamp")
        .ok_or("no webhook-timestamp")?;
    let signatures = headers
        .get("webhook-signature")
        .ok_or("no webhook-signature")?;
    let sent: i64 = timestamp.parse().map_err(|_| "timestamp not a number")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - sent).abs() > 300 {
        return Err("timestamp outside the tolerance".into());
    }
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    for entry in signatures.split(' ') {
        let (version, signature) = entry.split_once(',').ok_or("entry without a comma")?;
        if version == "v1"
            && BASE64
                .decode(signature)
                .is_ok_and(|s| s.as_slice() == expected.as_slice())
        {
            return Ok(());
        }
    }
    Err("no signature matches".into())
}

#[test]
fn the_verifier_accepts_the_specifications_example() {
    let headers: HashMap<String, String> = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        (
            "webhook-signature",
            "v1,bm9ldHUjKzFob2VudXRob2VodWUzMjRvdWVvdW9ldQo= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([(
        "webhook-timestamp".to_owned(),
        "1614265330".to_owned(),
    )])
    .collect();
    // the example's time is long past: only the signature is checked here
    let err = verify(SECRET, &headers, br#"{"test": 2432232314}"#).unwrap_err();
    assert_eq!(err, "timestamp outside the tolerance");
    let key = BASE64.decode(&SECRET[6..]).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#);
    assert_eq!(
        BASE64.encode(mac.finalize().into_bytes()),
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// One request as a receiver saw it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    headers: HashMap<String, String>,
    path: String,
    raw: Vec<u8>,
    body: Value,
    pub(crate) verified: Result<(), String>,
}

impl Received {
    pub(crate) fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
    fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap()
    }
}

pub(crate) type Answer = dyn Fn(usize, &Received) -> ResponseTemplate + Send + Sync;

/// Records every request, verifies it, and answers with what `answer` says for the n-th
/// request (0-based).
#[derive(Clone)]
pub(crate) struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Answer>,
}

impl Receiver {
    pub(crate) fn new(
        answer: impl Fn(usize, &Received) -> ResponseTemplate + Send + Sync + 'static,
    ) -> Self {
        Self {
            seen: Default::default(),
            answer: Arc::new(answer),
        }
    }

    fn ok() -> Self {
        Self::new(|_, _| ResponseTemplate::new(204))
    }

    pub(crate) async fn start(&self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(self.clone())
            .mount(&server)
            .await;
        server
    }

    pub(crate) fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

impl Respond for Receiver {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let headers = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        let received = Received {
            verified: verify(SECRET, &headers, &request.body)
                .and_then(|_| verify(OLD_SECRET, &headers, &request.body)),
            headers,
            path: request.url.path().to_owned(),
            raw: request.body.clone(),
            body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
        };
        let mut seen = self.seen.lock().unwrap();
        let n = seen.len();
        seen.push(received.clone());
        drop(seen);
        (self.answer)(n, &received)
    }
}

fn attempt_id(login: &Value) -> String {
    login["attempt"]["id"].as_str().unwrap().to_owned()
}

fn login_id(login: &Value) -> String {
    login["login_id"].as_str().unwrap().to_owned()
}

async fn feed(app: &TestApp, query: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/events{query}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
}

/// Every event in the feed, page by page of `limit`.
async fn whole_feed(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let page: Value = feed(app, &format!("?after={cursor}&limit={limit}"))
            .await
            .json()
            .await
            .unwrap();
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            return all;
        }
    }
}

#[sqlx::test]
async fn the_feed_lists_a_logins_events_in_order_and_filters_them(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login_id(&login);
    assert_eq!(
        app.webhook(&attempt_id(&login), "SUCCESS", json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        app.post(&format!("/v1/logins/{id}/redeem")).await.status(),
        200
    );
    let response = feed(&app, "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page: Value = response.json().await.unwrap();
    let types: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["login.created", "login.approved", "login.redeemed"]);
    let approved = &page["data"][1];
    assert_eq!(approved["data"]["login_id"], id.as_str());
    assert_eq!(approved["data"]["status"], "approved");
    assert_eq!(approved["data"]["attempt_number"], 1);
    assert_eq!(approved["data"]["seq"], 2);
    // no identity data in an event
    let text = page.to_string();
    assert!(
        !text.contains(SCAN_REF) && !text.contains("user-42"),
        "{text}"
    );
    assert_eq!(page["has_more"], false);

    // paging: one at a time gives the same events
    let one_by_one = whole_feed(&app, 1).await;
    assert_eq!(&Value::Array(one_by_one), &page["data"]);
    // a filter
    let only: Value = feed(&app, "?types=login.redeemed,login.created")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only["data"].as_array().unwrap().len(), 2);
    // past the end: empty, the cursor kept
    let cursor = page["next_cursor"].as_str().unwrap();
    let past: Value = feed(&app, &format!("?after={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(past["data"], json!([]));
    assert_eq!(past["next_cursor"], cursor);

    // a failed code, a new one, an expiry: each told
    let second = app.login().await;
    app.webhook(
        &attempt_id(&second),
        "FAILED",
        json!({"failReason": "FACE_MISMATCH"}),
    )
    .await;
    let events = whole_feed(&app, 100).await;
    let failed = events.iter().find(|e| e["type"] == "login.failed").unwrap();
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["fail_reason"], "FACE_MISMATCH", "{failed}");
}

#[sqlx::test]
async fn bad_feed_queries_and_strangers_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    for (query, status, code) in [
        ("?after=abc", 400, "invalid_cursor"),
        ("?after=-1", 400, "invalid_cursor"),
        ("?after=", 400, "invalid_cursor"),
        ("?after=99999999999999999999", 400, "invalid_cursor"),
        ("?types=login.created,login.nope", 400, "invalid_event_type"),
        ("?types=", 400, "invalid_event_type"),
        ("?limit=0", 400, "invalid_limit"),
        ("?limit=1001", 400, "invalid_limit"),
        ("?limit=ten", 400, "invalid_limit"),
        ("?wait=-3", 400, "malformed_query"),
    ] {
        let response = feed(&app, query).await;
        assert_eq!(response.status(), status, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{query}");
    }
    // a watch token, a username or nothing is not an API key
    let watch = login["watch_token"].as_str().unwrap();
    for bearer in [Some(watch), Some("user-42"), None] {
        let mut request = app.http.get(app.url("/v1/events"));
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

/// A change that took its place in the outbox and then committed after later ones is listed
/// after them, never skipped by a reader whose cursor passed them meanwhile.
#[sqlx::test]
async fn the_feed_never_skips_an_event_that_committed_late(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let early = app.login().await;
    let cursor = whole_feed(&app, 100).await.len();
    assert_eq!(cursor, 1);
    // a change of `early` writes its event and outbox row, then waits before COMMIT
    let mut late = app.pool.begin().await.unwrap();
    let seq: i32 = sqlx::query_scalar(
        "update logins set event_seq = event_seq + 1, status = 'canceled', canceled_at = now()
         where id = $1::uuid returning event_seq",
    )
    .bind(login_id(&early))
    .fetch_one(&mut *late)
    .await
    .unwrap();
    sqlx::query(
        "with e as (insert into events (login_id, seq, kind, source, login_status)
                    values ($1::uuid, $2, 'login_canceled', 'platform', 'canceled')
                    returning login_id, seq)
         insert into outbound_events (login_id, seq, type)
         select login_id, seq, 'login.canceled' from e",
    )
    .bind(login_id(&early))
    .bind(seq)
    .execute(&mut *late)
    .await
    .unwrap();
    // meanwhile others commit, and a reader reads past them
    for _ in 0..3 {
        app.login().await;
    }
    let before = whole_feed(&app, 2).await;
    assert_eq!(before.len(), 4);
    assert!(before.iter().all(|e| e["type"] == "login.created"));
    let seen_to: Value = feed(&app, "?after=0&limit=1000")
        .await
        .json()
        .await
        .unwrap();
    let cursor = seen_to["next_cursor"].as_str().unwrap().to_owned();
    late.commit().await.unwrap();
    let after: Value = feed(&app, &format!("?after={cursor}&wait=5"))
        .await
        .json()
        .await
        .unwrap();
    let data = after["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{after}");
    assert_eq!(data[0]["type"], "login.canceled");
    assert_eq!(data[0]["data"]["login_id"], login_id(&early).as_str());
}

/// Many changes committing at once on two instances while a reader pages through the feed:
/// every event is read exactly once, each login's in its order.
#[sqlx::test]
async fn the_feed_under_concurrent_commits_skips_and_repeats_nothing(pool: PgPool) {
    let a = Arc::new(TestApp::spawn(pool).await);
    a.mock_eligible().await;
    let b = Arc::new(a.second_instance().await);
    b.mock_eligible().await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let app = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for _ in 0..6 {
                    let login = app.login().await;
                    let id = login_id(&login);
                    app.post(&format!("/v1/logins/{id}/attempts")).await;
                    app.post(&format!("/v1/logins/{id}/cancel")).await;
                }
            })
        })
        .collect();
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let a = a.clone();
        let writers_done = writers_done.clone();
        tokio::spawn(async move {
            let mut read = Vec::new();
            let mut cursor = "0".to_owned();
            // reads while the writers write, then until a page read after they finished is empty
            loop {
                let finished = writers_done.load(Ordering::SeqCst);
                let page: Value = feed(&a, &format!("?after={cursor}&limit=3"))
                    .await
                    .json()
                    .await
                    .unwrap();
                let data = page["data"].as_array().unwrap();
                read.extend(data.iter().cloned());
                cursor = page["next_cursor"].as_str().unwrap().to_owned();
                if finished && data.is_empty() {
                    return read;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    writers_done.store(true, Ordering::SeqCst);
    let read = reader.await.unwrap();
    let stored = a.count("select count(*) from outbound_events").await;
    assert_eq!(
        stored,
        8 * 6 * 3,
        "created, code_issued, canceled per login"
    );
    let ids: HashSet<&str> = read.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), read.len(), "an event was read twice");
    assert_eq!(read.len() as i64, stored, "an event was skipped");
    let mut last: HashMap<&str, i64> = HashMap::new();
    for e in &read {
        let seq = e["data"]["seq"].as_i64().unwrap();
        let previous = last.insert(e["data"]["login_id"].as_str().unwrap(), seq);
        assert!(previous.is_none_or(|p| p < seq), "out of order: {e}");
    }
}

#[sqlx::test]
async fn a_long_poll_answers_when_an_event_commits_and_a_departed_one_holds_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    // a client that gives up while waiting leaves no transaction open
    for _ in 0..3 {
        let gone = tokio::time::timeout(Duration::from_millis(300), feed(&app, "?wait=30")).await;
        assert!(gone.is_err());
    }
    // what began before this and is still open at the end was left by those clients; the
    // instance's own short transactions may be caught between two statements
    let departed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let waiting = {
        let http = app.http.clone();
        let url = app.url("/v1/events?after=0&wait=30");
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    app.login().await;
    let page = waiting.await.unwrap();
    assert_eq!(page["data"][0]["type"], "login.created");
    let left: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity
         where datname = current_database() and state like 'idle in transaction%'
           and xact_start <= $1",
    )
    .bind(departed)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
}

/// The receiver checks every request with the verifier above: both secrets sign it, the id is
/// the feed's event id, the body is the feed's event.
#[sqlx::test]
async fn pushes_verify_as_standard_webhooks_under_every_secret(pool: PgPool) {
    let receiver = Receiver::ok();
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    app.mock_eligible().await;
    let login = app.login().await;
    app.webhook(&attempt_id(&login), "SUCCESS", json!({})).await;
    app.post(&format!("/v1/logins/{}/redeem", login_id(&login)))
        .await;
    app.eventually(Duration::from_secs(10), || async {
        receiver.seen().len() >= 3
    })
    .await;
    let seen = receiver.seen();
    let feed = whole_feed(&app, 100).await;
    assert_eq!(seen.len(), 3);
    for (got, listed) in seen.iter().zip(&feed) {
        assert_eq!(got.verified, Ok(()), "{:?}", got.headers);
        assert_eq!(got.id(), listed["id"].as_str().unwrap());
        assert_eq!(&got.body, listed);
        assert_eq!(got.headers["content-type"], "application/json");
        assert_eq!(got.headers["webhook-signature"].split(' ').count(), 2);
    }
    let kinds: Vec<&str> = seen.iter().map(Received::kind).collect();
    assert_eq!(kinds, ["login.created", "login.approved", "login.redeemed"]);
    app.eventually(Duration::from_secs(5), || async {
        app.count("select count(*) from event_deliveries where state = 'delivered'")
            .await
            == 3
    })
    .await;
    assert!(
        app.metrics()
            .await
            .contains("facepair_event_pushes_total{endpoint=\""),
    );
}

/// A receiver that fails twice (a 500, then a 503 with Retry-After) gets the same event a
/// third time, with the same `webhook-id`; each try is recorded.
#[sqlx::test]
async fn a_failing_receiver_gets_the_same_event_again(pool: PgPool) {
    let receiver = Receiver::new(|n, _| match n {
        0 => ResponseTemplate::new(500).set_body_string("database on fire"),
        1 => ResponseTemplate::new(503).insert_header("retry-after", "2"),
        _ => ResponseTemplate::new(200),
    });
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    app.mock_eligible().await;
    app.login().await;
    app.eventually(Duration::from_secs(20), || async {
        app.count("select count(*) from event_deliveries where state = 'delivered'")
            .await
            == 1
    })
    .await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.id() == seen[0].id()));
    let attempts: Vec<(Option<i32>, Option<String>)> = sqlx::query_as(
        "select status_code, response_excerpt from event_delivery_attempts order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        attempts,
        [
            (Some(500), Some("database on fire".into())),
            (Some(503), None),
            (Some(200), None)
        ]
    );
    // Retry-After (2 s) outweighed the schedule's 1 s (±20 %)
    let gap: f64 = sqlx::query_scalar(
        "select extract(epoch from max(attempted_at) filter (where status_code = 200)
                                 - max(attempted_at) filter (where status_code = 503))::float8
         from event_delivery_attempts",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(gap >= 2.0, "retried after {gap} s");
    let metrics = app.metrics().await;
    for series in [
        "outcome=\"retry\"} 2",
        "outcome=\"delivered\"} 1",
        "facepair_event_push_duration_seconds_count 3",
        "facepair_event_oldest_undelivered_seconds ",
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }
    let view: (String, i32, Option<i32>) =
        sqlx::query_as("select state, attempts, last_status_code from event_delivery_status")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(view, ("delivered".into(), 3, Some(200)));
}

/// A receiver that never answers holds only its own deliveries: the other endpoint gets
/// every event while the hanging one has not had a single answer.
#[sqlx::test]
async fn a_hanging_receiver_delays_no_other_endpoint(pool: PgPool) {
    let hanging =
        Receiver::new(|_, _| ResponseTemplate::new(200).set_delay(Duration::from_secs(3600)));
    let hang_server = hanging.start().await;
    let healthy = Receiver::ok();
    let healthy_server = healthy.start().await;
    let app = TestApp::spawn_with(pool, |s| {
        pushing_to(&[&hang_server, &healthy_server])(s);
        // no push of the hanging endpoint times out while the test runs
        s.events.timeout = Duration::from_secs(300);
    })
    .await;
    app.mock_eligible().await;
    for _ in 0..20 {
        app.login().await;
    }
    app.eventually(Duration::from_secs(20), || async {
        healthy.seen().len() == 20
    })
    .await;
    assert!(healthy.seen().iter().all(|r| r.verified.is_ok()));
    // the hanging endpoint has had its share in flight, and no answer yet
    assert!(!hanging.seen().is_empty());
    assert!(hanging.seen().len() <= 8, "{}", hanging.seen().len());
    let answered: i64 = sqlx::query_scalar(
        "select count(*) from event_delivery_attempts a
         join event_endpoints e on e.id = a.endpoint_id where e.url = $1",
    )
    .bind(format!("{}/hooks", hang_server.uri()))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(answered, 0);

    // a replay leaves the 8 pushes in flight to themselves, and says so
    let hang_url = format!("{}/hooks", hang_server.uri());
    app.eventually(Duration::from_secs(10), || async {
        app.count(&format!(
            "select count(*) from event_deliveries d join event_endpoints e on e.id = d.endpoint_id
             where e.url = '{hang_url}' and d.leased_until > now()"
        ))
        .await
            == 8
    })
    .await;
    let cli = |args: &[&str]| crate::ops_tools::cli(&app.pool, args);
    let said = cli(&["events", "replay-since", "1h", "--endpoint", &hang_url]);
    assert!(
        said.starts_with("12 deliveries will be sent again; 8 being pushed right now"),
        "{said}"
    );
}

/// A configured endpoint that no instance confirms any more is disabled ten minutes after
/// the last confirmation, and nothing more is queued for it; one another instance confirmed
/// lately (mid-deploy) stays; configured again, the first is enabled again and queued what
/// was numbered while it was disabled, and nothing from before.
#[sqlx::test]
async fn an_endpoint_no_instance_configures_any_more_is_disabled(pool: PgPool) {
    const REMOVED: &str = "https://removed.example/hooks";
    const ELSEWHERE: &str = "https://mid-deploy.example/hooks";
    sqlx::query(
        "insert into event_endpoints (url, origin, confirmed_at)
         values ($1, 'config', now() - interval '11 minutes'),
                ($2, 'config', now() - interval '2 minutes')",
    )
    .bind(REMOVED)
    .bind(ELSEWHERE)
    .execute(&pool)
    .await
    .unwrap();
    let receiver = Receiver::ok();
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from event_endpoints where disabled_at is not null")
            .await
            == 1
    })
    .await;
    let (url, reason): (String, String) = sqlx::query_as(
        "select url, disabled_reason from event_endpoints where disabled_at is not null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (url.as_str(), reason.as_str()),
        (REMOVED, "no longer configured")
    );
    // not counted among the endpoints disabled for trouble
    let (_, disabled) = facepair::store::outbound::backlog(&app.pool).await.unwrap();
    assert_eq!(disabled, 0);

    app.mock_eligible().await;
    app.login().await;
    app.eventually(Duration::from_secs(10), || async {
        receiver.seen().len() == 1
    })
    .await;
    let queued: Vec<String> = sqlx::query_scalar(
        "select e.url from event_deliveries d join event_endpoints e on e.id = d.endpoint_id
         order by e.url",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        queued,
        [format!("{}/hooks", server.uri()), ELSEWHERE.to_owned()]
    );

    // written long before it was numbered (a sequencer that fell behind): missed all the same
    sqlx::query("update outbound_events set created_at = now() - interval '2 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    // an instance starting with it configured enables it again, with the event it missed
    let mut conn = app.pool.acquire().await.unwrap();
    facepair::store::outbound::sync_configured(&mut conn, &[REMOVED.to_owned()], None)
        .await
        .unwrap();
    assert_eq!(
        app.count("select count(*) from event_endpoints where disabled_at is not null")
            .await,
        0
    );
    let caught_up: Vec<String> = sqlx::query_scalar(
        "select o.type from event_deliveries d join event_endpoints e on e.id = d.endpoint_id
         join outbound_events o on o.id = d.event_id where e.url = $1",
    )
    .bind(REMOVED)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(caught_up, ["login.created"]);

    // removed again after that event was numbered, and its deliveries since removed (as the
    // retention job does): the next catch-up starts after the event all the same
    sqlx::query(
        "update event_endpoints set confirmed_at = now() - interval '11 minutes' where url = $1",
    )
    .bind(REMOVED)
    .execute(&app.pool)
    .await
    .unwrap();
    let configured = [format!("{}/hooks", server.uri()), ELSEWHERE.to_owned()];
    facepair::store::outbound::sync_configured(&mut conn, &configured, None)
        .await
        .unwrap();
    let (removed, disabled): (uuid::Uuid, Option<String>) =
        sqlx::query_as("select id, disabled_reason from event_endpoints where url = $1")
            .bind(REMOVED)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(disabled.as_deref(), Some("no longer configured"));
    assert_eq!(
        app.count(
            "select count(*) from event_endpoints
             where disabled_after_position = (select max(position) from outbound_events)"
        )
        .await,
        1,
        "the disabling marks the newest event numbered"
    );
    sqlx::query("delete from event_deliveries where endpoint_id = $1")
        .bind(removed)
        .execute(&app.pool)
        .await
        .unwrap();
    let second = app.login().await;
    app.eventually(Duration::from_secs(10), || async {
        receiver.seen().len() == 2
    })
    .await;
    let caught_up = configure_again(&mut conn, &app, REMOVED, removed).await;
    assert_eq!(
        caught_up,
        [second["login_id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .unwrap()]
    );

    // disabled by an instance older than the mark: the catch-up goes by the disabling's time
    // (the first event, written two hours before, is not queued again; the second is)
    sqlx::query(
        "update event_endpoints set disabled_at = now(), disabled_reason = 'no longer configured',
             disabled_after_position = null where id = $1",
    )
    .bind(removed)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("delete from event_deliveries where endpoint_id = $1")
        .bind(removed)
        .execute(&app.pool)
        .await
        .unwrap();
    let again = configure_again(&mut conn, &app, REMOVED, removed).await;
    assert_eq!(again, caught_up);
}

/// Configures `url` again, as an instance starting with it would, and lists the logins whose
/// events were queued for its endpoint.
async fn configure_again(
    conn: &mut sqlx::PgConnection,
    app: &TestApp,
    url: &str,
    endpoint: uuid::Uuid,
) -> Vec<uuid::Uuid> {
    facepair::store::outbound::sync_configured(conn, &[url.to_owned()], None)
        .await
        .unwrap();
    sqlx::query_scalar("select login_id from event_deliveries where endpoint_id = $1")
        .bind(endpoint)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// A claim handed back untried (its push was put off) is due again at once, its try not
/// counted; a hand-back or settle from a claim that is no longer the latest changes nothing,
/// even when the newer claim has the same try number.
#[sqlx::test]
async fn a_push_put_off_hands_its_try_back(pool: PgPool) {
    use facepair::store::outbound::{claim, give_back};
    let app = one_due_elsewhere(pool).await;
    let elsewhere = [ELSEWHERE.to_owned()];
    let take = || claim(&app.pool, 10, 60.0, 8, &[], &elsewhere);
    let first = take().await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempts, 1);
    assert!(take().await.unwrap().is_empty(), "leased");
    let (endpoint, event) = (first[0].endpoint_id, first[0].event_id);
    give_back(&app.pool, endpoint, event, first[0].lease)
        .await
        .unwrap();
    let again = take().await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1, "the try put off is not counted");
    assert_ne!(again[0].lease, first[0].lease);
    // the first claim's holder, late, can neither hand back nor settle the new claim, though
    // its try number is the same
    give_back(&app.pool, endpoint, event, first[0].lease)
        .await
        .unwrap();
    facepair::store::outbound::settle(
        &app.pool,
        endpoint,
        event,
        first[0].lease,
        None,
        facepair::store::outbound::Next::Delivered,
    )
    .await
    .unwrap();
    assert!(take().await.unwrap().is_empty());
    assert_eq!(
        app.count("select count(*) from event_deliveries where state = 'pending'")
            .await,
        1
    );
    assert_eq!(
        app.count("select attempts::int8 from event_deliveries")
            .await,
        1
    );
}

/// Configured on another instance only: the test app's worker leaves it alone.
const ELSEWHERE: &str = "https://elsewhere.example/hooks";

/// A test app with one login's delivery due to `ELSEWHERE`.
async fn one_due_elsewhere(pool: PgPool) -> TestApp {
    sqlx::query("insert into event_endpoints (url, origin) values ($1, 'config')")
        .bind(ELSEWHERE)
        .execute(&pool)
        .await
        .unwrap();
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    app.login().await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from event_deliveries").await == 1
    })
    .await;
    app
}

/// [`one_due_elsewhere`], with 20,000 more due behind it, each of a login of its own;
/// statistics not yet gathered.
async fn endpoint_with_backlog(pool: PgPool) -> TestApp {
    let app = one_due_elsewhere(pool).await;
    // only the rows matter here, so their events need not exist (the database is the test's);
    // no statistics are gathered but by the test itself
    sqlx::query(
        "alter table event_deliveries drop constraint event_deliveries_event_fk,
             set (autovacuum_enabled = false)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into event_deliveries (endpoint_id, event_id, login_id, position)
        select d.endpoint_id, gen_random_uuid(), gen_random_uuid(), d.position + n
        from event_deliveries d, generate_series(1, 20000) n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app
}

/// A claim reads the deliveries it claims, however many more are due and whether or not
/// PostgreSQL's statistics have caught up with the backlog: a backlog does not slow each
/// push down.
#[sqlx::test]
async fn a_claim_reads_only_what_it_claims_however_long_the_backlog(pool: PgPool) {
    let app = endpoint_with_backlog(pool).await;
    // as the backlog grew faster than statistics follow, then once they caught up
    claim_reads_little(&app).await;
    sqlx::query("analyze event_deliveries, event_endpoints")
        .execute(&app.pool)
        .await
        .unwrap();
    claim_reads_little(&app).await;
}

/// Two instances claiming at once: the second passes over what the first holds and takes the
/// next due deliveries, rather than none.
#[sqlx::test]
async fn a_claim_passes_over_deliveries_another_claim_holds(pool: PgPool) {
    let app = endpoint_with_backlog(pool).await;
    // the first login's next event, due before all others: it waits behind the first one,
    // which the first claim is about to hold
    sqlx::query(
        "insert into event_deliveries (endpoint_id, event_id, login_id, position, next_attempt_at)
        select endpoint_id, gen_random_uuid(), login_id, position + 100000, now() - interval '1 hour'
        from event_deliveries order by position limit 1",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let mut first = app.pool.begin().await.unwrap();
    as_idle_instance(facepair::store::outbound::CLAIM.to_owned())
        .execute(&mut *first)
        .await
        .unwrap();
    // the second claim runs while the first still holds its eight: one that waited for
    // their locks would wait for the first's commit, after this
    tokio::time::timeout(
        Duration::from_secs(5),
        facepair::store::outbound::claim(&app.pool, 64, 60.0, 8, &[], &[ELSEWHERE.to_owned()]),
    )
    .await
    .expect("the second claim waited for rows the first holds")
    .unwrap();
    first.commit().await.unwrap();
    let leased: Vec<i64> = sqlx::query_scalar(
        "select position from event_deliveries where leased_until is not null order by position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let due: Vec<i64> =
        sqlx::query_scalar("select position from event_deliveries order by position limit 16")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        leased, due,
        "each claim leased eight, the login's second event none"
    );
    assert_eq!(
        app.count("select count(*) from event_deliveries where attempts > 1")
            .await,
        0,
        "none leased twice"
    );
}

/// `sql`, the claim or a statement around it, with the claim's parameters as an instance with
/// nothing in flight sends them (64 in all, 8 for each endpoint), pushing to `ELSEWHERE`.
fn as_idle_instance(
    sql: String,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(64_i64)
        .bind(60.0_f64)
        .bind(8_i64)
        .bind(Vec::<uuid::Uuid>::new())
        .bind(Vec::<i64>::new())
        .bind([ELSEWHERE.to_owned()])
}

/// Claims as an idle instance, in a transaction rolled back, and checks what the claim read
/// of `event_deliveries`.
async fn claim_reads_little(app: &TestApp) {
    let explain = format!(
        "explain (analyze, format json) {}",
        facepair::store::outbound::CLAIM
    );
    let mut tx = app.pool.begin().await.unwrap();
    let row = as_idle_instance(explain).fetch_one(&mut *tx).await.unwrap();
    let plan: Value = sqlx::Row::get(&row, 0);
    let leased: Vec<i64> = sqlx::query_scalar(
        "select position from event_deliveries where leased_until is not null order by position",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let first: Vec<i64> =
        sqlx::query_scalar("select position from event_deliveries order by position limit 8")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    // rows each scan of event_deliveries produced or filtered out, over all its loops
    fn read(node: &Value) -> f64 {
        let n = |k: &str| node[k].as_f64().unwrap_or(0.0);
        let own = match node["Relation Name"].as_str() {
            Some("event_deliveries") => {
                (n("Actual Rows") + n("Rows Removed by Filter")) * n("Actual Loops")
            }
            _ => 0.0,
        };
        let below = node["Plans"].as_array().into_iter().flatten().map(read);
        own + below.sum::<f64>()
    }
    let rows = read(&plan[0]["Plan"]);
    // the endpoint's room: its first eight
    assert_eq!(leased, first, "{plan:#}");
    assert!(
        rows < 200.0,
        "{rows} rows of event_deliveries read to claim 8: {plan:#}"
    );
}

/// 410 Gone disables the endpoint: its delivery stays pending for ops, and it is sent no more.
#[sqlx::test]
async fn a_receiver_answering_410_is_disabled(pool: PgPool) {
    let receiver = Receiver::new(|n, _| ResponseTemplate::new(if n == 0 { 410 } else { 200 }));
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    app.mock_eligible().await;
    app.login().await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from event_endpoints where disabled_at is not null")
            .await
            == 1
    })
    .await;
    let reason: String = sqlx::query_scalar("select disabled_reason from event_endpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reason, "answered 410 Gone");
    // a later event is not queued for it at all
    app.login().await;
    let page: Value = feed(&app, "?wait=5&after=1").await.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(app.count("select count(*) from event_deliveries").await, 1);
    assert_eq!(receiver.seen().len(), 1);
    app.eventually(Duration::from_secs(10), || async {
        app.metric("facepair_event_endpoints_disabled").await == 1.0
    })
    .await;
    // ops enable it again and send what it missed, the event never queued for it included
    let cli = |args: &[&str]| crate::ops_tools::cli(&app.pool, args);
    let url = format!("{}/hooks", server.uri());
    assert!(cli(&["events", "enable", &url]).starts_with("enabled"));
    assert!(cli(&["events", "replay-since", "1h"]).starts_with("2 deliveries"));
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from event_deliveries where state = 'delivered'")
            .await
            == 2
    })
    .await;
    let answered: HashSet<String> = receiver
        .seen()
        .iter()
        .skip(1)
        .map(|r| r.id().to_owned())
        .collect();
    let events: HashSet<String> = sqlx::query_scalar("select id::text from outbound_events")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(answered, events);
}

/// Two instances share the deliveries: each event reaches the receiver exactly once.
#[sqlx::test]
async fn two_instances_deliver_each_event_exactly_once(pool: PgPool) {
    let receiver = Receiver::ok();
    let server = receiver.start().await;
    let a = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    b.mock_eligible().await;
    for i in 0..30 {
        let app = if i % 2 == 0 { &a } else { &b };
        let login = app.login().await;
        app.post(&format!("/v1/logins/{}/cancel", login_id(&login)))
            .await;
    }
    a.eventually(Duration::from_secs(30), || async {
        a.count("select count(*) from event_deliveries where state = 'delivered'")
            .await
            == 60
    })
    .await;
    let seen = receiver.seen();
    let ids: HashSet<&str> = seen.iter().map(Received::id).collect();
    assert_eq!(seen.len(), 60, "a delivery was sent twice");
    assert_eq!(ids.len(), 60);
    // each login's events in order
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in &seen {
        let seq = r.body["data"]["seq"].as_i64().unwrap();
        let login = r.body["data"]["login_id"].as_str().unwrap().to_owned();
        assert!(last.insert(login, seq).is_none_or(|p| p < seq));
    }
}

/// An approval not delivered before it expired is not delivered at all: the receiver hears
/// `login.expired` instead.
#[sqlx::test]
async fn an_approval_that_expired_undelivered_is_replaced_by_login_expired(pool: PgPool) {
    let accepting = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let accepting = accepting.clone();
        Receiver::new(move |_, _| match accepting.load(Ordering::SeqCst) {
            0 => ResponseTemplate::new(503),
            _ => ResponseTemplate::new(200),
        })
    };
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, |s| {
        pushing_to(&[&server])(s);
        s.approval_ttl = Duration::from_secs(1);
    })
    .await;
    app.mock_eligible().await;
    let login = app.login().await;
    app.webhook(&attempt_id(&login), "SUCCESS", json!({})).await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from outbound_events where type = 'login.expired'")
            .await
            == 1
    })
    .await;
    accepting.store(1, Ordering::SeqCst);
    app.eventually(Duration::from_secs(20), || async {
        app.count("select count(*) from event_deliveries where state <> 'pending'")
            .await
            == 3
    })
    .await;
    let delivered: Vec<String> = receiver
        .seen()
        .iter()
        .map(|r| r.kind().to_owned())
        .collect();
    let states: Vec<(String, String)> = sqlx::query_as(
        "select o.type, d.state from event_deliveries d join outbound_events o on o.id = d.event_id order by o.position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            ("login.created".into(), "delivered".into()),
            ("login.approved".into(), "skipped".into()),
            ("login.expired".into(), "delivered".into()),
        ]
    );
    // the approval was never answered 2xx: the receiver saw it only while refusing
    assert!(
        delivered.ends_with(&["login.expired".to_owned()]),
        "{delivered:?}"
    );
    let expired = receiver.seen().into_iter().last().unwrap();
    assert_eq!(expired.body["data"]["expired"], "approval");
}

/// A redirect is an answer like any other: recorded and retried, never followed.
#[sqlx::test]
async fn redirects_are_not_followed(pool: PgPool) {
    let target = Receiver::ok();
    let target_server = target.start().await;
    let location = format!("{}/elsewhere", target_server.uri());
    let redirecting = Receiver::new(move |_, _| {
        ResponseTemplate::new(307).insert_header("location", location.as_str())
    });
    let redirect_server = redirecting.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&redirect_server])).await;
    app.mock_eligible().await;
    app.login().await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from event_delivery_attempts")
            .await
            >= 2
    })
    .await;
    assert!(target.seen().is_empty(), "a redirect was followed");
    let statuses: Vec<Option<i32>> =
        sqlx::query_scalar("select status_code from event_delivery_attempts")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(statuses.iter().all(|s| *s == Some(307)), "{statuses:?}");
}

/// Without FACEPAIR_EVENT_ALLOW_PRIVATE_HTTP, a name resolving to loopback and a plain http
/// URL reach nothing, however they got into the endpoints table.
#[sqlx::test]
async fn private_addresses_and_plain_http_are_refused_at_delivery(pool: PgPool) {
    let receiver = Receiver::ok();
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, |s| {
        pushing_to(&[&server])(s);
        let port = server.address().port();
        s.events
            .endpoints
            .push(format!("https://localhost:{port}/hooks").parse().unwrap());
        s.events.allow_private_http = false;
    })
    .await;
    app.mock_eligible().await;
    app.login().await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(distinct endpoint_id) from event_delivery_attempts")
            .await
            == 2
    })
    .await;
    assert!(receiver.seen().is_empty());
    let tries: Vec<(String, Option<i32>, Option<String>)> = sqlx::query_as(
        "select e.url, a.status_code, a.error from event_delivery_attempts a
         join event_endpoints e on e.id = a.endpoint_id order by a.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (url, status, error) in &tries {
        assert_eq!(*status, None, "{url}");
        let error = error.as_deref().unwrap_or_default();
        let expected = if url.starts_with("http:") {
            "must be an https URL"
        } else {
            "loopback, private or link-local"
        };
        assert!(error.contains(expected), "{url}: {error}");
    }
}

/// The configuration refuses plain http and private addresses, and endpoints without secrets.
#[test]
fn the_configuration_refuses_unsafe_endpoints() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: facepair::config::ServeArgs,
    }
    let base = [
        "facepair",
        "--database-url=postgres://x",
        "--api-keys=0123456789abcdef0123",
        "--idenfy-api-key=k",
        "--idenfy-api-secret=s",
        "--idenfy-signing-keys=0123456789abcdef0123",
    ];
    let settings = |extra: &[&str]| {
        Cli::try_parse_from(base.iter().chain(extra))
            .unwrap()
            .serve
            .settings()
    };
    let secret = format!("--event-secrets={SECRET}");
    for refused in [
        "--event-endpoints=http://platform.example/hooks",
        "--event-endpoints=https://10.0.0.5/hooks",
        "--event-endpoints=https://[::1]/hooks",
    ] {
        let e = settings(&[refused, &secret]).unwrap_err();
        assert_eq!(e.variable, "FACEPAIR_EVENT_ENDPOINTS", "{refused}");
    }
    let e = settings(&["--event-endpoints=https://platform.example/hooks"]).unwrap_err();
    assert_eq!(e.variable, "FACEPAIR_EVENT_SECRETS");
    let e = settings(&[
        "--event-endpoints=https://platform.example/hooks",
        "--event-secrets=plain-secret",
    ])
    .unwrap_err();
    assert_eq!(e.variable, "FACEPAIR_EVENT_SECRETS");
    assert!(!e.to_string().contains("plain-secret"));
    let ok = settings(&["--event-endpoints=https://platform.example/hooks", &secret]).unwrap();
    assert_eq!(ok.events.endpoints.len(), 1);
    let ok = settings(&[
        "--event-endpoints=http://127.0.0.1:9000/hooks",
        &secret,
        "--event-allow-private-http=true",
    ])
    .unwrap();
    assert!(ok.events.allow_private_http);
}

/// Ops read deliveries and attempts with `facepair events` and send an event again: the
/// receiver gets it with the same `webhook-id`.
#[sqlx::test]
async fn ops_list_attempts_and_replay_from_the_command_line(pool: PgPool) {
    let receiver = Receiver::new(|n, _| match n {
        0 => ResponseTemplate::new(500).set_body_string("try later"),
        _ => ResponseTemplate::new(200).set_body_string("ok"),
    });
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    app.mock_eligible().await;
    let login = app.login().await;
    app.post(&format!("/v1/logins/{}/cancel", login_id(&login)))
        .await;
    app.eventually(Duration::from_secs(15), || async {
        app.count("select count(*) from event_deliveries where state = 'delivered'")
            .await
            == 2
    })
    .await;
    let cli = |args: &[&str]| crate::ops_tools::cli(&app.pool, args);
    let list: Value = serde_json::from_str(&cli(&["events", "list", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["type"], "login.canceled");
    assert_eq!(list[1]["type"], "login.created");
    assert_eq!(list[1]["attempts"], 2);
    assert_eq!(list[1]["last_status_code"], 200);
    let created = list[1]["event_id"].as_str().unwrap().to_owned();
    let attempts: Value =
        serde_json::from_str(&cli(&["events", "attempts", &created, "--json"])).unwrap();
    let statuses: Vec<(i64, &str)> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["status_code"].as_i64().unwrap(),
                a["response_excerpt"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(500, "try later"), (200, "ok")]);
    assert!(cli(&["events", "list"]).contains("login.canceled"));
    assert!(cli(&["events", "attempts", &created]).contains("try later"));

    // one event again, then everything of the last hour
    assert!(cli(&["events", "replay", &created]).starts_with("1 deliveries"));
    app.eventually(Duration::from_secs(10), || async {
        receiver.seen().len() == 4
    })
    .await;
    assert!(cli(&["events", "replay-since", "1h"]).starts_with("2 deliveries"));
    app.eventually(Duration::from_secs(10), || async {
        receiver.seen().len() == 6
    })
    .await;
    let seen = receiver.seen();
    let created_pushes = seen.iter().filter(|r| r.id() == created).count();
    assert_eq!(created_pushes, 4, "2 tries, a replay, a replay since");
    assert!(seen.iter().all(|r| r.verified.is_ok()));
}

/// The platform adds an endpoint by API with a type filter: it is pushed only those types,
/// signed with its own secret (shown once, never listed); disabled, it is queued nothing more.
#[sqlx::test]
async fn endpoints_made_by_api_get_their_types_signed_with_their_secret(pool: PgPool) {
    let receiver = Receiver::new(|_, _| ResponseTemplate::new(200));
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, |s| {
        s.events.allow_private_http = true;
        s.events.poll_interval = Duration::from_millis(50);
    })
    .await;
    app.mock_eligible().await;
    let endpoints = app.url("/v1/event-endpoints");
    let url = format!("{}/hooks", server.uri());
    let response = app
        .create_endpoint(json!({"url": url, "types": ["login.canceled"], "secret": SECRET}))
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["secret"], SECRET);
    assert_eq!(created["origin"], "api");
    assert_eq!(created["types"], json!(["login.canceled"]));
    let id = created["id"].as_str().unwrap().to_owned();
    // a second endpoint, with a secret made by facepair
    let other: Value = app
        .create_endpoint(json!({"url": format!("{}/other", server.uri())}))
        .await
        .json()
        .await
        .unwrap();
    assert!(other["secret"].as_str().unwrap().starts_with("whsec_"));
    WebhookSecret::parse(other["secret"].as_str().unwrap()).unwrap();

    for (body, status, code, field) in [
        (json!({"url": url}), 409, "endpoint_exists", None),
        (json!({}), 422, "invalid_field", Some("url")),
        (
            json!({"url": "ftp://x.example/"}),
            422,
            "invalid_field",
            Some("url"),
        ),
        (
            json!({"url": "https://y.example/", "types": ["login.nope"]}),
            422,
            "invalid_field",
            Some("types"),
        ),
        (
            json!({"url": "https://y.example/", "types": []}),
            422,
            "invalid_field",
            Some("types"),
        ),
        (
            json!({"url": "https://y.example/", "secret": "hunter2"}),
            422,
            "invalid_field",
            Some("secret"),
        ),
        (
            json!({"url": "https://y.example/", "extra": 1}),
            400,
            "malformed_json",
            None,
        ),
    ] {
        let response = app.create_endpoint(body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body}");
        if let Some(field) = field {
            assert_eq!(error["error"]["field"], field, "{body}");
        }
    }
    let no_key = app.http.get(&endpoints).send().await.unwrap();
    assert_eq!(no_key.status(), 401);

    let login = app.login().await;
    app.post(&format!("/v1/logins/{}/cancel", login_id(&login)))
        .await;
    app.eventually(Duration::from_secs(10), || async {
        receiver.seen().len() == 3
    })
    .await;
    let seen = receiver.seen();
    let generated = other["secret"].as_str().unwrap();
    for r in &seen {
        let secret = if r.path == "/hooks" {
            SECRET
        } else {
            generated
        };
        assert_eq!(verify(secret, &r.headers, &r.raw), Ok(()), "{}", r.path);
    }
    let kinds = |path: &str| -> Vec<String> {
        seen.iter()
            .filter(|r| r.path == path)
            .map(|r| r.kind().to_owned())
            .collect()
    };
    assert_eq!(kinds("/hooks"), ["login.canceled"]);
    assert_eq!(kinds("/other"), ["login.created", "login.canceled"]);
    let listed: Value = app
        .http
        .get(&endpoints)
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains("whsec_"), "{listed}");

    let disable = |id: String| {
        app.http
            .post(app.url(&format!("/v1/event-endpoints/{id}/disable")))
            .bearer_auth(API_KEY)
            .send()
    };
    let disabled: Value = disable(id.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(disabled["disabled_reason"], "disabled by the platform");
    for unknown in [uuid::Uuid::new_v4().to_string(), "nope".into()] {
        let response = disable(unknown).await.unwrap();
        assert_eq!(response.status(), 404);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "endpoint_not_found");
    }
    let second = app.login().await;
    app.post(&format!("/v1/logins/{}/cancel", login_id(&second)))
        .await;
    let page: Value = feed(&app, "?after=2&wait=5").await.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let queued: i64 =
        sqlx::query_scalar("select count(*) from event_deliveries where endpoint_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(queued, 1, "nothing queued after it was disabled");
}

/// The API adds endpoints while fewer than `MAX_ENABLED_ENDPOINTS` are enabled, counted under
/// a lock: two instances taking the last place at once add one endpoint, not two.
#[sqlx::test]
async fn the_api_adds_endpoints_up_to_the_limit_even_from_two_instances_at_once(pool: PgPool) {
    // a configured endpoint takes a place too
    let receiver = Receiver::ok().start().await;
    let a = TestApp::spawn_with(pool, pushing_to(&[&receiver])).await;
    a.eventually(Duration::from_secs(10), || async {
        a.count("select count(*) from event_endpoints where origin = 'config'")
            .await
            == 1
    })
    .await;
    let b = a.second_instance().await;
    let named = |name: &str| json!({"url": format!("https://{name}.example/hooks")});
    let mut ids = Vec::new();
    for i in 2..MAX_ENABLED_ENDPOINTS {
        let created = a.create_endpoint(named(&format!("hooks-{i}"))).await;
        assert_eq!(created.status(), 201);
        ids.push(created.json::<Value>().await.unwrap()["id"].clone());
    }
    // both wait for the lock held here, then run one after the other
    let key = facepair::store::lock_key("event_endpoints", b"");
    let mut held = hold_lock(&a.pool, key).await;
    let (first, second, ()) = tokio::join!(
        a.create_endpoint(named("last-a")),
        b.create_endpoint(named("last-b")),
        async {
            lock_waiters(&a, &format!("pg_advisory_xact_lock({key})"), 2).await;
            sqlx::query("commit").execute(&mut held).await.unwrap();
        }
    );
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let refused: Value = if first.status() == 409 { first } else { second }
        .json()
        .await
        .unwrap();
    assert_eq!(refused["error"]["code"], "too_many_endpoints");
    assert_eq!(
        a.count("select count(*) from event_endpoints where disabled_at is null")
            .await,
        MAX_ENABLED_ENDPOINTS
    );
    // a URL taken is named as such, however full
    let taken = b.create_endpoint(named("hooks-2")).await;
    assert_eq!(taken.status(), 409);
    assert_eq!(
        taken.json::<Value>().await.unwrap()["error"]["code"],
        "endpoint_exists"
    );
    // a disabled endpoint frees its place
    let id = ids[0].as_str().unwrap();
    let disabled = a.post(&format!("/v1/event-endpoints/{id}/disable")).await;
    assert_eq!(disabled.status(), 200);
    assert_eq!(
        b.create_endpoint(named("after-disable")).await.status(),
        201
    );
    let full = a.create_endpoint(named("one-too-many")).await;
    assert_eq!(full.status(), 409);
    assert_eq!(
        full.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_endpoints"
    );
}

/// A URL an instance's configuration adds while a create is adding it is `endpoint_exists`,
/// not a failure: instances confirming their configured endpoints take no lock.
#[sqlx::test]
async fn a_url_configured_during_a_create_is_endpoint_exists(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = "https://meanwhile.example/hooks";
    let mut configuring = app.pool.begin().await.unwrap();
    sqlx::query("insert into event_endpoints (url, origin) values ($1, 'config')")
        .bind(url)
        .execute(&mut *configuring)
        .await
        .unwrap();
    let (response, ()) = tokio::join!(app.create_endpoint(json!({ "url": url })), async {
        // the create's insert waits for the uncommitted row with its URL
        lock_waiters(
            &app,
            "insert into event_endpoints (url, origin, types, secrets)",
            1,
        )
        .await;
        configuring.commit().await.unwrap();
    });
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "endpoint_exists"
    );
}

/// A filter that matches nothing still moves the cursor past what it read, so a consumer of
/// a rare type does not read the same events again at every poll; and an event that comes
/// later is still listed.
#[sqlx::test]
async fn a_filter_matching_nothing_moves_the_cursor_past_what_it_read(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login_id(&login);
    let all: Value = feed(&app, "").await.json().await.unwrap();
    let top = all["next_cursor"].as_str().unwrap().to_owned();
    assert_ne!(top, "0");
    let none: Value = feed(&app, "?types=login.redeemed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        none["next_cursor"],
        top.as_str(),
        "the cursor passes what was read"
    );
    assert_eq!(
        app.post(&format!("/v1/logins/{id}/cancel")).await.status(),
        200
    );
    let later: Value = feed(&app, &format!("?after={top}&types=login.canceled"))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = later["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["login.canceled"]);
}

/// Retention removes a finished push's record (and its tries) once it is older than the body
/// window, and keeps the public event and every record still young or unfinished.
#[sqlx::test]
async fn retention_removes_old_push_records_and_keeps_the_events(pool: PgPool) {
    let receiver = Receiver::ok();
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    app.mock_eligible().await;
    let login = app.login().await;
    app.webhook(&attempt_id(&login), "SUCCESS", json!({})).await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from event_deliveries where state = 'delivered'")
            .await
            == 2
    })
    .await;
    // the first push finished 40 days ago, the second just now
    sqlx::query(
        "update event_deliveries set finished_at = now() - interval '40 days'
         where position = (select min(position) from event_deliveries)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let purged = facepair::ops::retention::purge(
        &app.pool,
        chrono::Duration::days(30),
        chrono::Duration::days(35),
    )
    .await
    .unwrap();
    assert_eq!(purged.push_records, 1);
    assert_eq!(app.count("select count(*) from event_deliveries").await, 1);
    assert_eq!(
        app.count("select count(*) from event_delivery_attempts")
            .await,
        1,
        "the removed push's tries went with it"
    );
    assert_eq!(app.count("select count(*) from outbound_events").await, 2);
}

/// A settle that comes after its lease ran out and the delivery was claimed again records its
/// try and changes nothing else: the delivery is the new holder's.
#[sqlx::test]
async fn a_settle_from_a_lost_lease_leaves_the_delivery_to_its_new_holder(pool: PgPool) {
    use facepair::store::outbound::{Next, Tried, settle};
    let receiver = Receiver::ok();
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, pushing_to(&[&server])).await;
    app.mock_eligible().await;
    app.login().await;
    app.eventually(Duration::from_secs(10), || async {
        app.count("select count(*) from event_deliveries where state = 'delivered'")
            .await
            == 1
    })
    .await;
    // as if claim 1's lease ran out and claim 2 holds it now
    type Held = (uuid::Uuid, uuid::Uuid, chrono::DateTime<chrono::Utc>);
    let (endpoint, event, lease): Held = sqlx::query_as(
        "update event_deliveries set state = 'pending', attempts = 2, finished_at = null,
             leased_until = now() + interval '1 minute'
         returning endpoint_id, event_id, leased_until",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let tried = Tried {
        status_code: Some(500),
        latency_ms: 3,
        error: None,
        response_excerpt: None,
    };
    let late = Next::Retry {
        after_seconds: 3600.0,
        endpoint_too: true,
    };
    let lost = lease - chrono::Duration::seconds(30);
    settle(&app.pool, endpoint, event, lost, Some(&tried), late)
        .await
        .unwrap();
    let (state, held, retry_at): (String, bool, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(
            "select d.state, d.leased_until is not null, e.retry_at
             from event_deliveries d join event_endpoints e on e.id = d.endpoint_id",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((state.as_str(), held, retry_at), ("pending", true, None));
    assert_eq!(
        app.count("select count(*) from event_delivery_attempts where status_code = 500")
            .await,
        1,
        "the late try is still recorded"
    );
    // the holder's own settle counts
    settle(&app.pool, endpoint, event, lease, None, Next::Delivered)
        .await
        .unwrap();
    assert_eq!(
        app.count("select count(*) from event_deliveries where state = 'delivered'")
            .await,
        1
    );
}
