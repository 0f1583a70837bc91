//! Starts facepair on port 0 against the test's own database, with wiremock playing iDenfy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use facepair::Application;
use facepair::config::Settings;
use facepair::domain::Lifetime;
use facepair::idenfy::signature;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const API_KEY: &str = "test-platform-key-0001";
pub const API_KEY_2: &str = "test-platform-key-0002";
pub const SIGNING_KEY: &str = "test-signing-key-current";
pub const OLD_SIGNING_KEY: &str = "test-signing-key-previous";
pub const SCAN_REF: &str = "8df398bb-7340-11ee-9aec-0221b1f59063";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub idenfy: MockServer,
    pub pool: PgPool,
    pub handle: actix_web::dev::ServerHandle,
    /// The instance's state, shared with its workers.
    pub state: facepair::service::Context,
    stopper: tokio_util::sync::CancellationToken,
    settings: Settings,
    stopped: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn settings(idenfy_uri: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        api_keys: vec![SecretString::from(API_KEY), SecretString::from(API_KEY_2)],
        idenfy_base_url: idenfy_uri.parse().unwrap(),
        idenfy_api_key: SecretString::from("idenfy-key"),
        idenfy_api_secret: SecretString::from("idenfy-secret"),
        idenfy_signing_keys: vec![
            SecretString::from(SIGNING_KEY),
            SecretString::from(OLD_SIGNING_KEY),
        ],
        idenfy_timeout: Duration::from_secs(2),
        code_lifetime: Lifetime::from_seconds(600).unwrap(),
        max_attempts_per_login: 3,
        max_attempts_per_scan_ref_hour: 1000,
        max_attempts_per_scan_ref_hour_total: 1000,
        approval_ttl: Duration::from_secs(120),
        poll_interval_seconds: 2,
        webhook_max_bytes: 64 * 1024,
        expiry_interval: Duration::from_millis(200),
        frame_ancestors: Vec::new(),
        return_url: None,
        platform_name: None,
        retention: Default::default(),
        limits: facepair::config::Limits {
            logins_per_api_key_per_minute: 100_000,
            logins_per_client_ip_per_hour: 100_000,
            watch_misses_per_ip: 100_000,
            watch_codes_per_ip_per_hour: 100_000,
            watch_codes_per_token_per_hour: 100_000,
        },
        trusted_proxies: Default::default(),
        workers: None,
        events: Default::default(),
        reconcile_after: None,
    }
}

impl TestApp {
    /// facepair with an iDenfy that knows [`SCAN_REF`] as ready to authenticate.
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, |_| {}).await
    }

    pub async fn spawn_with(pool: PgPool, tweak: impl FnOnce(&mut Settings)) -> Self {
        let idenfy = MockServer::start().await;
        let mut s = settings(&idenfy.uri());
        tweak(&mut s);
        Self::start(pool, idenfy, s).await
    }

    /// Another instance on the same database and the same iDenfy.
    pub async fn second_instance(&self) -> TestApp {
        let idenfy = MockServer::builder().start().await;
        let mut s = self.settings.clone();
        s.listen = "127.0.0.1:0".parse().unwrap();
        // its own pool, as a separate process would have
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect_with((*self.pool.connect_options()).clone())
            .await
            .unwrap();
        Self::start(pool, idenfy, s).await
    }

    async fn start(pool: PgPool, idenfy: MockServer, s: Settings) -> Self {
        // facepair's log, as `facepair serve` writes it: shown with a failing test's output
        facepair::telemetry::init(facepair::config::LogFormat::Text);
        let settings = s.clone();
        let upstream: u16 = std::env::var("FACEPAIR_PGPORT").map_or(54329, |p| p.parse().unwrap());
        let app = match std::env::var("FACEPAIR_TEST_PGBOUNCER") {
            // scripts/test's second run: requests through PgBouncer in transaction mode, what
            // needs a session directly, as FACEPAIR_DIRECT_DATABASE_URL deploys it (not for a
            // test that runs a PostgreSQL of its own, which PgBouncer does not front)
            Ok(address) if pool.connect_options().get_port() == upstream => {
                let (host, port) = address.rsplit_once(':').expect("host:port");
                let pooled = (*pool.connect_options())
                    .clone()
                    .host(host)
                    .port(port.parse().expect("a port"));
                let requests = facepair::store::hooks(sqlx::postgres::PgPoolOptions::new())
                    .max_connections(10)
                    .test_before_acquire(false)
                    .connect_with(pooled)
                    .await
                    .expect("PgBouncer answers");
                let session = (*pool.connect_options()).clone();
                Application::build_with(s, requests, Some(session)).await
            }
            _ => Application::build(s, pool.clone()).await,
        }
        .expect("facepair starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        let state = app.state().clone();
        let stopper = app.stopper();
        let stopped = Some(tokio::spawn(app.run_until_stopped()));
        TestApp {
            base,
            http: reqwest::Client::new(),
            idenfy,
            pool,
            handle,
            state,
            stopper,
            settings,
            stopped,
        }
    }

    /// Stops this instance gracefully, as SIGTERM would, and waits for it.
    pub async fn stop(&mut self) {
        self.stopper.cancel();
        if let Some(task) = self.stopped.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn mock_eligible(&self) {
        mock_check_status(&self.idenfy, "AUTHENTICATION").await;
        mock_sessions(&self.idenfy).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `POST /v1/event-endpoints` with `body`.
    pub async fn create_endpoint(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/event-endpoints"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn create_login(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/logins"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a login for [`SCAN_REF`] and returns its 201 body.
    pub async fn login(&self) -> Value {
        self.login_with(
            json!({ "scan_ref": SCAN_REF, "user_ref": "user-42", "client_ip": "198.51.100.7" }),
        )
        .await
    }

    /// Creates a login from `body` and returns its 201 body.
    pub async fn login_with(&self, body: Value) -> Value {
        let response = self.create_login(body).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn get_login(&self, id: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/v1/logins/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    pub async fn state(&self, id: &str) -> Value {
        let response = self.get_login(id).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    /// The iDenfy session token facepair stored for an attempt.
    pub async fn token_of(&self, attempt_id: &str) -> String {
        sqlx::query_scalar("select idenfy_token from attempts where id = $1::uuid")
            .bind(attempt_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn send_webhook(&self, body: &[u8], key: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/webhooks/idenfy"))
            .header("content-type", "application/json")
            .header("idenfy-event-type", "FACIAL_AUTHENTICATION")
            .header("idenfy-signature", signature::sign(key.as_bytes(), body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Sends iDenfy's webhook for the attempt and returns (status, verdict).
    pub async fn webhook(&self, attempt_id: &str, status: &str, extra: Value) -> (u16, String) {
        let token = self.token_of(attempt_id).await;
        let body = webhook_body(&token, status, extra);
        let response = self.send_webhook(body.as_bytes(), SIGNING_KEY).await;
        let code = response.status().as_u16();
        let json: Value = response.json().await.unwrap_or(Value::Null);
        (
            code,
            json["verdict"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// The instance's /metrics text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One sample of /metrics, by its full name and labels (e.g. `facepair_sse_streams_open`).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until `check` holds, failing after `within`.
    pub async fn eventually<F, Fut>(&self, within: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if check().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(
                facepair::http::request::contract::undocumented(),
                0,
                "an error answer is missing from the OpenAPI document (see the log)"
            );
        }
        let handle = self.handle.clone();
        drop(handle.stop(false));
    }
}

pub fn webhook_body(token: &str, status: &str, extra: Value) -> String {
    let mut body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "scanRef": SCAN_REF,
        "clientId": "FD155HLZ5Z",
        "token": token,
        "status": status,
        "type": "AUTHENTICATION",
        "method": "FACE_MATCHING",
        "facePhoto": null,
        "ipAddress": null,
        "failReason": null,
        "riskTags": null
    });
    if let Value::Object(map) = extra {
        for (k, v) in map {
            body[k] = v;
        }
    }
    body.to_string()
}

pub async fn mock_check_status(server: &MockServer, kind: &str) {
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/identification/facial-auth/[^/]+/check-status/$",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "type": kind })))
        .mount(server)
        .await;
}

/// A session endpoint that answers like iDenfy: a fresh token and 8-digit code each call.
pub async fn mock_sessions(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/partner/authentication-info"))
        .respond_with(Sessions)
        .mount(server)
        .await;
}

struct Sessions;

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Respond for Sessions {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = SESSION_COUNTER.fetch_add(1, Ordering::Relaxed);
        let token = format!("TOK{}{:0>20}", uuid::Uuid::new_v4().simple(), n)[..40].to_owned();
        ResponseTemplate::new(200).set_body_json(json!({
            "token": token,
            "maxAttemptCount": 3,
            "digitString": format!("{:08}", (n * 7_919 + 12_345_678) % 100_000_000),
        }))
    }
}

/// Another transaction holding the login's row (with `changes` made in it, `$1` the login's
/// id) until it ends: a write to the login (a webhook's, a redeem's) waits for it.
pub async fn hold_login(app: &TestApp, id: &str, changes: &[&'static str]) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect_with(&app.pool.connect_options())
        .await
        .unwrap();
    sqlx::query("begin").execute(&mut holder).await.unwrap();
    let lock = "select 1 from logins where id = $1::uuid for update";
    for sql in std::iter::once(&lock).chain(changes) {
        sqlx::query(*sql)
            .bind(id)
            .execute(&mut holder)
            .await
            .unwrap();
    }
    holder
}

/// What a cancel writes, for [`hold_login`]: a change of the login that a waiting write must
/// judge itself after.
pub const A_CANCEL: [&str; 3] = [
    "update logins set status = 'canceled', canceled_at = now(), event_seq = event_seq + 1
     where id = $1::uuid",
    "update attempts set status = 'canceled', outcome_source = 'platform',
         finished_at = now(), digit_string = null
     where login_id = $1::uuid and status = 'pending'",
    "insert into events (login_id, seq, kind, source, login_status, attempt_id, detail)
     select l.id, l.event_seq, 'login_canceled', 'platform', 'canceled', a.id, '{}'
     from logins l join attempts a on a.login_id = l.id where l.id = $1::uuid",
];

/// Ends `holder`'s transaction with `end` once `writes` statements wait for the login's row.
pub async fn end_once_waited_on(
    app: &TestApp,
    mut holder: sqlx::PgConnection,
    writes: i64,
    end: &'static str,
) {
    writes_wait(app, writes).await;
    sqlx::query(end).execute(&mut holder).await.unwrap();
}

/// Returns once `writes` statements on logins (a webhook's write, a redeem's lock) wait for a
/// login's row.
pub async fn writes_wait(app: &TestApp, writes: i64) {
    lock_waiters(app, "logins", writes).await;
}

/// Returns once at least `n` statements containing `sql` wait for a lock.
pub async fn lock_waiters(app: &TestApp, sql: &str, n: i64) {
    app.eventually(std::time::Duration::from_secs(10), || async {
        app.count(&format!(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'
               and query like '%{sql}%'"
        ))
        .await
            >= n
    })
    .await;
}

/// A transaction of the test's own holding the advisory lock `key`, on a connection outside
/// facepair's pools.
pub async fn hold_lock(pool: &PgPool, key: i64) -> PgConnection {
    let mut conn = PgConnection::connect_with(&pool.connect_options())
        .await
        .unwrap();
    sqlx::query("begin").execute(&mut conn).await.unwrap();
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// The URL of the test's own database, for the `facepair` binary.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").unwrap();
    let db = pool.connect_options().get_database().unwrap().to_owned();
    format!("{}/{db}", base.rsplit_once('/').unwrap().0)
}
