//! PostgreSQL restarting under traffic, and a graceful shutdown under load. Each test that
//! stops PostgreSQL runs its own private cluster (scripts/pg with its own data directory and
//! port), so the rest of the suite is not disturbed.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;
use crate::live::Sse;

struct Cluster {
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn pg(&self, action: &str) -> String {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg");
        let out = Command::new(script)
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/pg {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn start() -> (Cluster, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("target/pg-outage-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = Cluster {
            env: vec![
                ("FACEPAIR_PGDATA", dir.display().to_string()),
                ("FACEPAIR_PGPORT", port.to_string()),
            ],
            dir,
        };
        let url = cluster.pg("start");
        (cluster, url)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Webhooks during the outage get 503 and are retried as iDenfy would; polls get 503 with
/// Retry-After; streams resume with Last-Event-ID; afterwards everything recovers without a
/// restart of facepair and every verified webhook is applied exactly once.
#[tokio::test]
async fn postgres_restarts_mid_traffic() {
    let (cluster, url) = Cluster::start();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap();
    facepair::MIGRATOR.run(&pool).await.unwrap();
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;

    const LOGINS: usize = 30;
    let mut logins = Vec::new();
    for _ in 0..LOGINS {
        logins.push(app.login().await);
    }
    let mut tokens = Vec::new();
    for login in &logins {
        tokens.push(app.token_of(login["attempt"]["id"].as_str().unwrap()).await);
    }
    let watched = logins[LOGINS - 1]["login_id"].as_str().unwrap().to_owned();
    let mut sse = Sse::open(&app, &format!("/v1/logins/{watched}/events"), None, true).await;
    assert_eq!(
        sse.next(Duration::from_secs(5)).await.unwrap().kind,
        "login_created"
    );

    // iDenfy: one webhook per session, retried every 100 ms until a 2xx
    let refused = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (http, url, refused) = (
            app.http.clone(),
            app.url("/v1/webhooks/idenfy"),
            refused.clone(),
        );
        let bodies: Vec<String> = tokens
            .iter()
            .map(|t| webhook_body(t, "SUCCESS", json!({})))
            .collect();
        tokio::spawn(async move {
            for body in bodies {
                let sig =
                    facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
                loop {
                    let r = http
                        .post(&url)
                        .header("idenfy-signature", &sig)
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) => {
                            assert_eq!(r.status(), 503, "only 503 while PostgreSQL is away");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("facepair itself went away: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // stop PostgreSQL once a few webhooks went through
    app.eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from deliveries")
            .fetch_one(&app.pool)
            .await
            .unwrap_or(0)
            >= 5
    })
    .await;
    cluster.pg("stop");
    app.eventually(Duration::from_secs(10), || async {
        refused.load(Ordering::Relaxed) >= 3
    })
    .await;
    let poll = app.get_login(&watched).await;
    assert_eq!(poll.status(), 503);
    assert!(poll.headers().get("retry-after").is_some());
    assert_eq!(
        poll.json::<Value>().await.unwrap()["error"]["code"],
        "database_unavailable"
    );
    assert_eq!(
        app.http
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        app.http
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    cluster.pg("start");
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("every webhook delivered")
        .unwrap();
    assert!(refused.load(Ordering::Relaxed) >= 3);

    // everything applied exactly once, with no restart of facepair
    let count = |sql: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("select count(*) from deliveries where verdict = 'applied'").await,
        LOGINS as i64
    );
    assert_eq!(
        count("select count(*) from deliveries").await,
        LOGINS as i64,
        "a refused webhook left nothing behind"
    );
    assert_eq!(
        count("select count(*) from events where kind = 'attempt_succeeded'").await,
        LOGINS as i64
    );
    for login in &logins {
        assert_eq!(
            app.state(login["login_id"].as_str().unwrap()).await["status"],
            "approved"
        );
    }
    // the stream either saw the change or ended; resuming from what it saw misses nothing
    let mut last = 1;
    while let Some(event) = sse.next(Duration::from_secs(5)).await {
        last = event.id;
        if event.kind == "attempt_succeeded" {
            break;
        }
    }
    if last < 2 {
        let mut resumed = Sse::open(
            &app,
            &format!("/v1/logins/{watched}/events"),
            Some(last),
            true,
        )
        .await;
        assert_eq!(
            resumed.next(Duration::from_secs(5)).await.unwrap().kind,
            "attempt_succeeded"
        );
    }
    drop(cluster);
}

/// SIGTERM-like stop while webhooks keep arriving: every webhook answered 2xx is committed,
/// every one that is not is refused cleanly, and open streams end with a reconnect hint.
#[sqlx::test]
async fn graceful_shutdown_under_load(pool: PgPool) {
    // the stopped instance closes its pool; the checks use their own
    let checker = sqlx::postgres::PgPoolOptions::new()
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let checker = checker.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&checker)
                .await
                .unwrap()
        }
    };
    let mut app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let mut logins = Vec::new();
    // enough webhooks that the stop lands while they are still arriving
    for _ in 0..120 {
        logins.push(app.login().await);
    }
    let mut sse = Sse::open(
        &app,
        &format!(
            "/v1/logins/{}/events",
            logins[0]["login_id"].as_str().unwrap()
        ),
        None,
        true,
    )
    .await;
    sse.next(Duration::from_secs(5)).await.unwrap();
    let mut bodies = Vec::new();
    for login in &logins {
        let token = app.token_of(login["attempt"]["id"].as_str().unwrap()).await;
        bodies.push(webhook_body(&token, "SUCCESS", json!({})));
    }
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for chunk in bodies.chunks(30) {
        let (http, url, accepted, chunk) = (
            app.http.clone(),
            app.url("/v1/webhooks/idenfy"),
            accepted.clone(),
            chunk.to_vec(),
        );
        senders.push(tokio::spawn(async move {
            for body in chunk {
                let sig =
                    facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
                if let Ok(r) = http
                    .post(&url)
                    .header("idenfy-signature", sig)
                    .body(body)
                    .send()
                    .await
                    && r.status().is_success()
                {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    app.eventually(Duration::from_secs(5), || async {
        accepted.load(Ordering::SeqCst) >= 5
    })
    .await;
    app.stop().await;
    for s in senders {
        s.await.unwrap();
    }
    // the stream was closed with a reconnect hint
    while sse.next(Duration::from_secs(5)).await.is_some() {}
    let hint = *sse.retry_hints.last().unwrap();
    assert!((1000..5000).contains(&hint), "{hint}");
    let accepted = accepted.load(Ordering::SeqCst) as i64;
    let committed = count("select count(*) from deliveries where verdict = 'applied'").await;
    assert_eq!(
        committed, accepted,
        "every 2xx is a committed delivery, and nothing else was committed"
    );
    assert!(
        accepted < 120,
        "the stop came while webhooks were still arriving"
    );
    assert_eq!(
        count("select count(*) from events where kind = 'attempt_succeeded'").await,
        committed
    );
}

/// PostgreSQL stops while a push is in flight, its answer comes while PostgreSQL is away, and
/// PostgreSQL starts again: without a restart of facepair every event is delivered and
/// recorded once; a push whose outcome could not be recorded in time would be sent again
/// with the same `webhook-id`, so the receiver sees only the events' own ids.
#[tokio::test]
async fn postgres_restarts_mid_delivery() {
    use crate::outbound::{Receiver, pushing_to};
    let (cluster, url) = Cluster::start();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap();
    facepair::MIGRATOR.run(&pool).await.unwrap();
    let receiver = Receiver::new(|n, _| {
        let answer = wiremock::ResponseTemplate::new(200);
        if n == 0 {
            answer.set_delay(Duration::from_secs(5))
        } else {
            answer
        }
    });
    let server = receiver.start().await;
    let app = TestApp::spawn_with(pool, |s| {
        pushing_to(&[&server])(s);
        s.events.timeout = Duration::from_secs(10);
    })
    .await;
    app.mock_eligible().await;
    for _ in 0..10 {
        app.login().await;
    }
    app.eventually(Duration::from_secs(10), || async {
        !receiver.seen().is_empty()
    })
    .await;
    cluster.pg("stop");
    // the first push is answered 2xx while PostgreSQL is away
    app.eventually(Duration::from_secs(10), || async {
        app.metrics().await.contains("outcome=\"delivered\"} ")
    })
    .await;
    cluster.pg("start");
    app.eventually(Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from event_deliveries where state = 'delivered'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap_or(0)
            == 10
    })
    .await;
    let events: Vec<String> = sqlx::query_scalar("select id::text from outbound_events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let seen = receiver.seen();
    let ids: std::collections::HashSet<&str> = seen.iter().map(|r| r.id()).collect();
    let expected: std::collections::HashSet<&str> = events.iter().map(String::as_str).collect();
    assert_eq!(ids, expected);
    assert!(seen.iter().all(|r| r.verified.is_ok()));
    drop(cluster);
}
