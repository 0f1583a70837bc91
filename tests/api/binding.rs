//! Codes cost money and approvals are bound to the platform: a code is reserved before iDenfy
//! is paid, strangers cannot spend a person's budget, approvals expire, and the browser never
//! learns the handle that redeems a login.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

/// Sessions iDenfy was asked to create.
async fn sessions_created(app: &TestApp) -> usize {
    app.idenfy
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/partner/authentication-info")
        .count()
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// 200 concurrent requests for a new code for one login, from the platform and the browser,
/// spread over two instances: iDenfy is asked for exactly as many sessions as facepair issued
/// codes, and no answer is 5xx.
#[sqlx::test]
async fn concurrent_new_codes_buy_one_session_each(pool: PgPool) {
    let a = TestApp::spawn_with(pool, |s| s.max_attempts_per_login = 6).await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    let login = a.login().await;
    let id = login["login_id"].as_str().unwrap();
    let token = login["watch_token"].as_str().unwrap();
    let requests = (0..200).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let path = if i % 4 < 2 {
            format!("/v1/logins/{id}/attempts")
        } else {
            format!("/v1/watch/{token}/attempts")
        };
        async move { error_of(app.post(&path).await).await }
    });
    let answers = join_all(requests).await;
    let mut created = 0;
    for (status, body) in &answers {
        assert!(*status < 500, "{status} {body}");
        match status {
            201 => created += 1,
            409 => assert_eq!(body["error"]["code"], "code_being_issued", "{body}"),
            429 => assert_eq!(body["error"]["code"], "attempt_budget_exhausted", "{body}"),
            other => panic!("{other} {body}"),
        }
    }
    assert!(created >= 1);
    let codes = a.count("select count(*) from attempts").await;
    assert_eq!(codes, created + 1, "the first code and one per 201");
    assert_eq!(sessions_created(&a).await as i64, codes);
    assert_eq!(a.count("select count(*) from code_reservations").await, 0);
}

/// The browser may supersede a pending code (the outcome source `watch` is recorded), and a
/// code iDenfy failed to create is released: the next request is not told one is being issued.
#[sqlx::test]
async fn the_browser_supersedes_a_pending_code_and_a_refused_call_releases_its_reservation(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    let login = {
        mock_sessions(&app.idenfy).await;
        app.login().await
    };
    let token = login["watch_token"].as_str().unwrap();
    let response = app.post(&format!("/v1/watch/{token}/attempts")).await;
    let (status, body) = error_of(response).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["attempt"]["number"], 2);
    assert!(body.get("login_id").is_none());
    let source: String = sqlx::query_scalar("select outcome_source from attempts where number = 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(source, "watch");

    // iDenfy refuses once: nothing was bought, and the reservation goes with the refusal
    app.idenfy.reset().await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    let failing = wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(402))
        .mount_as_scoped(&app.idenfy)
        .await;
    let (status, _) = error_of(app.post(&format!("/v1/watch/{token}/attempts")).await).await;
    assert_eq!(status, 502);
    drop(failing);
    mock_sessions(&app.idenfy).await;
    app.eventually(Duration::from_secs(5), || async {
        app.count("select count(*) from code_reservations").await == 0
    })
    .await;
    let (status, body) = error_of(app.post(&format!("/v1/watch/{token}/attempts")).await).await;
    assert_eq!(status, 201, "{body}");
}

/// A client that gives up while iDenfy creates the session does not drop the session: the
/// login is stored all the same. A session iDenfy may have created but did not hand back (a
/// 5xx) stays counted in the scan_ref's budget for the hour; a refusal is not counted.
#[sqlx::test]
async fn a_session_bought_is_stored_or_counted_whoever_leaves(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.max_attempts_per_scan_ref_hour = 3).await;
    mock_check_status(&app.idenfy, "AUTHENTICATION").await;
    let slow = wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({ "token": "SLOWTOKEN0000000000000000000000000001",
                                      "digitString": "12345678", "maxAttemptCount": 3 }))
                .set_delay(Duration::from_secs(1)),
        )
        .mount_as_scoped(&app.idenfy)
        .await;
    let result = app
        .http
        .post(app.url("/v1/logins"))
        .bearer_auth(API_KEY)
        .json(&json!({ "scan_ref": SCAN_REF, "client_ip": "198.51.100.7" }))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));
    app.eventually(Duration::from_secs(5), || async {
        app.count("select count(*) from logins").await == 1
    })
    .await;
    drop(slow);
    assert_eq!(app.count("select count(*) from code_reservations").await, 0);

    let failing = |status| {
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .respond_with(wiremock::ResponseTemplate::new(status))
    };
    let create = || app.create_login(json!({ "scan_ref": SCAN_REF, "client_ip": "198.51.100.7" }));
    // refused: nothing was bought, nothing is counted
    let refused = failing(402).mount_as_scoped(&app.idenfy).await;
    assert_eq!(create().await.status(), 502);
    drop(refused);
    // a 5xx: the session may exist; it counts for the hour
    let broken = failing(500).mount_as_scoped(&app.idenfy).await;
    assert_eq!(create().await.status(), 503);
    drop(broken);
    app.eventually(Duration::from_secs(5), || async {
        app.count("select count(*) from code_reservations where spent")
            .await
            == 1
    })
    .await;
    mock_sessions(&app.idenfy).await;
    assert_eq!(create().await.status(), 201);
    // 1 stored while its client left, 1 spent, 1 just now: the address's 3 are used
    let (status, body) = error_of(create().await).await;
    assert_eq!(
        (status, body["error"]["budget"].as_str()),
        (429, Some("scan_ref_hourly"))
    );
}

/// Twenty strangers who type the person's username on the platform, each from an address of
/// their own, spend all they are allowed; the person still gets a code from their own address.
#[sqlx::test]
async fn strangers_cannot_spend_a_persons_budget(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| {
        s.max_attempts_per_scan_ref_hour = 2;
        s.max_attempts_per_scan_ref_hour_total = 100;
    })
    .await;
    app.mock_eligible().await;
    for stranger in 0..20 {
        let from = format!("203.0.113.{}", stranger + 1);
        let body = json!({ "scan_ref": SCAN_REF, "client_ip": from });
        for _ in 0..2 {
            assert_eq!(app.create_login(body.clone()).await.status(), 201);
        }
        let (status, error) = error_of(app.create_login(body).await).await;
        assert_eq!(status, 429);
        assert_eq!(error["error"]["budget"], "scan_ref_hourly");
    }
    let owner = json!({ "scan_ref": SCAN_REF, "client_ip": "198.51.100.7" });
    assert_eq!(app.create_login(owner).await.status(), 201);

    // the ceiling over all addresses still bounds what a scan_ref costs
    let app2 = TestApp::spawn_with(app.pool.clone(), |s| {
        s.max_attempts_per_scan_ref_hour = 2;
        s.max_attempts_per_scan_ref_hour_total = 41;
    })
    .await;
    let (status, error) = error_of(
        app2.create_login(json!({ "scan_ref": SCAN_REF, "client_ip": "192.0.2.1" }))
            .await,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(error["error"]["budget"], "scan_ref_hourly_total");
}

/// New codes asked from the browser have limits of their own, per watch token and per
/// browser address, held across instances.
#[sqlx::test]
async fn browser_codes_are_limited_per_token_and_per_address(pool: PgPool) {
    let a = TestApp::spawn_with(pool, |s| {
        s.max_attempts_per_login = 100;
        s.limits.watch_codes_per_token_per_hour = 3;
        s.limits.watch_codes_per_ip_per_hour = 5;
    })
    .await;
    a.mock_eligible().await;
    let b = a.second_instance().await;
    let first = a.login().await;
    let token = first["watch_token"].as_str().unwrap();
    for app in [&a, &b, &a] {
        let (status, body) = error_of(app.post(&format!("/v1/watch/{token}/attempts")).await).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = error_of(b.post(&format!("/v1/watch/{token}/attempts")).await).await;
    assert_eq!(
        (status, body["error"]["limit"].as_str()),
        (429, Some("watch_codes_per_token"))
    );
    let second = a.login().await;
    let token = second["watch_token"].as_str().unwrap();
    for app in [&b, &a] {
        let (status, body) = error_of(app.post(&format!("/v1/watch/{token}/attempts")).await).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = error_of(a.post(&format!("/v1/watch/{token}/attempts")).await).await;
    assert_eq!(
        (status, body["error"]["limit"].as_str()),
        (429, Some("watch_codes_per_ip"))
    );
}

/// An approval not redeemed in time reads `expired` everywhere, with an event on the stream;
/// redeeming it then is 409 `approval_expired`. While approved, the document says until when.
#[sqlx::test]
async fn an_approval_expires_unredeemed(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.approval_ttl = Duration::from_secs(2)).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    let events = app
        .http
        .get(app.url(&format!("/v1/logins/{id}/events")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let (status, _) = app
        .webhook(
            login["attempt"]["id"].as_str().unwrap(),
            "SUCCESS",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let approved = app.state(id).await;
    assert_eq!(approved["status"], "approved");
    let until: chrono::DateTime<chrono::Utc> = approved["approval_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(until > chrono::Utc::now());
    // a long poll on the approved document answers when the approval lapses
    let etag = app.get_login(id).await.headers()["etag"].clone();
    let response = app
        .http
        .get(app.url(&format!("/v1/logins/{id}?wait=30")))
        .bearer_auth(API_KEY)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let expired: Value = response.json().await.unwrap();
    assert_eq!(expired["status"], "expired");
    assert!(expired.get("approval_expires_at").is_none());
    let (status, body) = error_of(app.post(&format!("/v1/logins/{id}/redeem")).await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("approval_expired"))
    );
    // the stream hears of it
    let mut text = String::new();
    let mut events = events;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("event: approval_expired") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("the stream tells of the expired approval")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(
        app.count("select count(*) from events where kind = 'approval_expired'")
            .await,
        1
    );
}

/// Retention never strips identity from an approved login whose approval may still be
/// redeemed.
#[sqlx::test]
async fn retention_keeps_a_live_approval(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    app.webhook(
        login["attempt"]["id"].as_str().unwrap(),
        "SUCCESS",
        json!({}),
    )
    .await;
    sqlx::query("update logins set created_at = now() - interval '100 days'")
        .execute(&pool)
        .await
        .unwrap();
    let day = chrono::Duration::days(1);
    let purged = facepair::ops::retention::purge(&pool, day, day)
        .await
        .unwrap();
    assert_eq!(purged.logins, 0);
    let redeemed = app.post(&format!("/v1/logins/{id}/redeem")).await;
    assert_eq!(redeemed.status(), 200);
    let purged = facepair::ops::retention::purge(&pool, day, day)
        .await
        .unwrap();
    assert_eq!(purged.logins, 1);
}

/// The platform's `state` comes back to the browser; the browser never learns `login_id`, in
/// the watch document, its stream or the pairing page.
#[sqlx::test]
async fn the_browser_gets_the_platforms_state_and_never_the_login_id(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    for (state, field) in [("x".repeat(257), "state"), ("a\nb".to_owned(), "state")] {
        let response = app
            .create_login(json!({ "scan_ref": SCAN_REF, "state": state }))
            .await;
        let (status, body) = error_of(response).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some(field))
        );
    }
    assert_eq!(app.count("select count(*) from logins").await, 0);
    let login = app
        .login_with(json!({ "scan_ref": SCAN_REF, "state": "csrf-7Hq2" }))
        .await;
    assert_eq!(login["state"], "csrf-7Hq2");
    let id = login["login_id"].as_str().unwrap();
    let token = login["watch_token"].as_str().unwrap();
    let watch: Value = app
        .http
        .get(app.url(&format!("/v1/watch/{token}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(watch["state"], "csrf-7Hq2");
    let page = app
        .http
        .get(app.url(&format!("/pair/{token}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(id));
    let mut stream = app
        .http
        .get(app.url(&format!("/v1/watch/{token}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.post(&format!("/v1/logins/{id}/cancel")).await.status(),
        200
    );
    let mut text = String::new();
    while !text.contains("event: login_canceled") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("csrf-7Hq2") && !text.contains(id), "{text}");
}
