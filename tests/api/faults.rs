//! Requests whose clients go away mid-way, statements that fail and NOTIFYs that are lost must
//! leave facepair whole: no connection left in a transaction, no breaker stuck open, no
//! instance serving a stale login.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, PgPool};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    API_KEY, SCAN_REF, SIGNING_KEY, TestApp, hold_lock, lock_waiters, mock_check_status,
    mock_sessions, webhook_body,
};

/// A client that gives up after `after`: its request's future is dropped wherever it waits.
async fn abandoned(request: reqwest::RequestBuilder, after: Duration) {
    let result = request.timeout(after).send().await;
    assert!(
        result.as_ref().is_err_and(|e| e.is_timeout()),
        "the request was meant to be abandoned, got {result:?}"
    );
}

/// facepair's connections left idle inside a transaction, or in a failed one.
async fn idle_in_transaction(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()
           and state like 'idle in transaction%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until a facepair connection waits on a lock in a statement containing `sql`.
async fn no_connection_left_in_a_transaction(app: &TestApp) {
    app.eventually(Duration::from_secs(5), || async {
        idle_in_transaction(&app.pool).await == 0
    })
    .await;
}

/// Requests dropped at each await of the creation and webhook paths (during iDenfy's answer,
/// while waiting for the scan_ref's lock, while a webhook's write waits for its login's row,
/// and a lock wait that fails) leave no connection in a transaction, and the next requests
/// succeed.
#[sqlx::test]
async fn requests_abandoned_at_every_await_leave_no_connection_in_a_transaction(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    // iDenfy slow once: the client leaves while facepair waits for the session
    Mock::given(method("POST"))
        .and(path("/partner/authentication-info"))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_secs(1)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.idenfy)
        .await;
    mock_sessions(&app.idenfy).await;
    let create = || {
        app.http
            .post(app.url("/v1/logins"))
            .bearer_auth(API_KEY)
            .json(&json!({ "scan_ref": SCAN_REF }))
    };
    abandoned(create(), Duration::from_millis(300)).await;

    // the scan_ref's lock held elsewhere: the client leaves during the lock wait
    let key = facepair::store::attempts::scan_ref_lock_key(SCAN_REF);
    let holder = hold_lock(&app.pool, key).await;
    let waiting = tokio::spawn(abandoned(create(), Duration::from_millis(800)));
    lock_waiters(&app, "pg_advisory_xact_lock", 1).await;
    waiting.await.unwrap();
    holder.close().await.unwrap();
    no_connection_left_in_a_transaction(&app).await;

    // a webhook whose sender leaves while another transaction holds its login's row
    let login = app.login().await;
    let login_id = login["login_id"].as_str().unwrap().to_owned();
    let token = app.token_of(login["attempt"]["id"].as_str().unwrap()).await;
    let body = webhook_body(&token, "SUCCESS", json!({}));
    let sha: [u8; 32] = Sha256::digest(body.as_bytes()).into();
    let mut holder = PgConnection::connect_with(&app.pool.connect_options())
        .await
        .unwrap();
    sqlx::query("begin").execute(&mut holder).await.unwrap();
    sqlx::query("select 1 from logins where id = $1::uuid for update")
        .bind(&login_id)
        .execute(&mut holder)
        .await
        .unwrap();
    let signed = || {
        app.http
            .post(app.url("/v1/webhooks/idenfy"))
            .header("content-type", "application/json")
            .header(
                "idenfy-signature",
                facepair::idenfy::signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes()),
            )
            .body(body.clone())
    };
    let waiting = tokio::spawn(abandoned(signed(), Duration::from_millis(800)));
    lock_waiters(&app, "update logins", 1).await;
    waiting.await.unwrap();
    holder.close().await.unwrap();
    no_connection_left_in_a_transaction(&app).await;
    // the webhook runs to its end without its sender: it commits once the row is free and
    // is counted (so announced too); iDenfy's retry finds it a duplicate (below)
    let stored = format!(
        "select count(*) from deliveries where verdict = 'applied' and body_sha256 = '\\x{}'",
        hex::encode(sha)
    );
    app.eventually(Duration::from_secs(5), || async {
        app.count(&stored).await == 1
    })
    .await;
    app.eventually(Duration::from_secs(5), || async {
        app.metric("facepair_webhook_deliveries_total{verdict=\"applied\"}")
            .await
            == 1.0
    })
    .await;

    // a lock wait that fails (canceled by an operator): the transaction is rolled back
    let holder = hold_lock(&app.pool, key).await;
    let failing = tokio::spawn(create().send());
    lock_waiters(&app, "pg_advisory_xact_lock", 1).await;
    sqlx::query(
        "select pg_cancel_backend(pid) from pg_stat_activity
         where datname = current_database() and wait_event_type = 'Lock'
           and query like '%pg_advisory_xact_lock%'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let _ = failing.await.unwrap().unwrap();
    holder.close().await.unwrap();
    no_connection_left_in_a_transaction(&app).await;

    // every connection works: creations, the webhook and reads all succeed, repeatedly
    for _ in 0..8 {
        let response = tokio::time::timeout(Duration::from_secs(5), create().send())
            .await
            .expect("a creation is not stuck behind a lock")
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let response = signed().send().await.unwrap();
    assert_eq!(response.status(), 200);
    let verdict: Value = response.json().await.unwrap();
    assert_eq!(verdict["verdict"], "duplicate");
    assert_eq!(
        app.count("select count(*) from events where kind = 'attempt_succeeded'")
            .await,
        1
    );
    // the event's sequencer may be between two statements of its own transaction just now
    no_connection_left_in_a_transaction(&app).await;
}

/// The trial call after the breaker's cool-down is abandoned by its client: the breaker must
/// not stay open for good (the call goes on and decides), and readiness and /metrics say what
/// it is doing.
#[sqlx::test]
async fn an_abandoned_trial_call_does_not_keep_the_breaker_open(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let breaker = || async {
        let ready: Value = app
            .http
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["idenfy_breaker"].as_str().unwrap().to_owned()
    };
    assert_eq!(breaker().await, "closed");
    let failing = Mock::given(method("GET"))
        .and(path_regex(r"/check-status/$"))
        .respond_with(ResponseTemplate::new(503))
        .mount_as_scoped(&app.idenfy)
        .await;
    let create = || app.create_login(json!({ "scan_ref": SCAN_REF }));
    while breaker().await != "open" {
        assert_eq!(create().await.status(), 503);
    }
    assert_eq!(
        app.metric("facepair_idenfy_breaker_state{state=\"open\"}")
            .await,
        1.0
    );
    drop(failing);
    // iDenfy is back, slowly for the first call: the trial's client leaves before it answers
    Mock::given(method("GET"))
        .and(path_regex(r"/check-status/$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "type": "AUTHENTICATION" }))
                .set_delay(Duration::from_secs(2)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.idenfy)
        .await;
    app.mock_eligible().await;
    app.eventually(Duration::from_secs(10), || async {
        breaker().await == "half_open"
    })
    .await;
    abandoned(
        app.http
            .post(app.url("/v1/logins"))
            .bearer_auth(API_KEY)
            .json(&json!({ "scan_ref": SCAN_REF })),
        Duration::from_millis(300),
    )
    .await;
    // the trial goes on without its client; once it answers, creations go through again
    app.eventually(Duration::from_secs(10), || async {
        create().await.status() == 201
    })
    .await;
    assert_eq!(breaker().await, "closed");
}

/// A NOTIFY batch whose connection broke is sent again on a fresh one: the other instance
/// learns of the change long before its backstop would have found it.
#[sqlx::test]
async fn a_notify_batch_that_fails_is_sent_again(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    let login = a.login().await;
    let id = login["login_id"].as_str().unwrap().to_owned();
    // a new code: the worker serving this client has sent a NOTIFY on its connection
    assert_eq!(
        a.post(&format!("/v1/logins/{id}/attempts")).await.status(),
        201
    );
    // b has the row cached: it answers from memory until told of a change
    b.eventually(Duration::from_secs(5), || async {
        b.state(&id).await;
        b.metric("facepair_login_cache_hits_total").await > 0.0
    })
    .await;
    // break every connection that has sent a NOTIFY
    let killed = a
        .count(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and query like '%pg_notify%') t",
        )
        .await;
    assert!(killed > 0, "no notifying connection found");
    let started = std::time::Instant::now();
    assert_eq!(
        a.post(&format!("/v1/logins/{id}/cancel")).await.status(),
        200
    );
    b.eventually(Duration::from_secs(10), || async {
        b.state(&id).await["status"] == "canceled"
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "b learned of the change only after {:?}, from the backstop",
        started.elapsed()
    );
}

/// A change committed by a transaction that began long ago (it waited on a lock), whose NOTIFY
/// never went out, is found by the backstop all the same.
#[sqlx::test]
async fn the_backstop_finds_a_change_however_late_its_transaction_committed(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    let login = a.login().await;
    let id = login["login_id"].as_str().unwrap().to_owned();
    b.eventually(Duration::from_secs(5), || async {
        b.state(&id).await;
        b.metric("facepair_login_cache_hits_total").await > 0.0
    })
    .await;
    // the change as a writer that crashed after its commit leaves it: no NOTIFY, and an event
    // stamped with its transaction's start an hour ago
    sqlx::query(
        "with l as (
             update logins set status = 'canceled', canceled_at = now(), event_seq = event_seq + 1
             where id = $1::uuid returning id, event_seq)
         insert into events (login_id, seq, kind, source, login_status, created_at)
         select id, event_seq, 'login_canceled', 'platform', 'canceled', now() - interval '1 hour'
         from l",
    )
    .bind(&id)
    .execute(&a.pool)
    .await
    .unwrap();
    b.eventually(Duration::from_secs(15), || async {
        b.state(&id).await["status"] == "canceled"
    })
    .await;
}

/// After a failover that left connections on a read-only node, writes answer 503 (not 500),
/// and once the database takes writes again the read-only connections are not used again.
#[sqlx::test]
async fn a_read_only_database_answers_503_and_its_connections_are_discarded(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    assert_eq!(
        app.create_login(json!({ "scan_ref": SCAN_REF }))
            .await
            .status(),
        201
    );
    let mut admin = PgConnection::connect_with(&app.pool.connect_options())
        .await
        .unwrap();
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let read_only = |on: bool| {
        format!(
            "alter database \"{database}\" {}",
            if on {
                "set default_transaction_read_only = on"
            } else {
                "reset default_transaction_read_only"
            }
        )
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(read_only(true)))
        .execute(&mut admin)
        .await
        .unwrap();
    // every open connection goes, as in a failover: new ones are read-only
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let mut refused = 0;
    for _ in 0..6 {
        let response = app.create_login(json!({ "scan_ref": SCAN_REF })).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "database_unavailable");
        refused += 1;
    }
    assert_eq!(refused, 6);
    sqlx::raw_sql(sqlx::AssertSqlSafe(read_only(false)))
        .execute(&mut admin)
        .await
        .unwrap();
    // the connections opened read-only are closed, not reused: writes succeed at once
    for _ in 0..6 {
        let response = app.create_login(json!({ "scan_ref": SCAN_REF })).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
}
