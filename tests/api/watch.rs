use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

#[sqlx::test]
async fn a_browser_sees_no_identity_data(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let token = login["watch_token"].as_str().unwrap();
    let response = app
        .http
        .get(app.url(&format!("/v1/watch/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("login_id").is_none(),
        "the browser learns no login_id"
    );
    assert_eq!(
        body["attempt"]["digit_string"],
        login["attempt"]["digit_string"]
    );
    let text = body.to_string();
    assert!(
        !text.contains(SCAN_REF)
            && !text.contains("user-42")
            && !text.contains("198.51.100.7")
            && !text.contains(login["login_id"].as_str().unwrap()),
        "{text}"
    );
    assert!(body.get("scan_ref").is_none() && body.get("user_ref").is_none());
}

#[sqlx::test]
async fn unknown_or_malformed_watch_tokens_are_404(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for token in [
        "nope",
        "fpw_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "fpw_%00",
    ] {
        let response = app
            .http
            .get(app.url(&format!("/v1/watch/{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{token}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "watch_token_not_found"
        );
    }
}

/// RFC 8628's rule: never on the first poll, refused when too fast, answered again once the
/// client waits as told; held in PostgreSQL, so it spans instances.
#[sqlx::test]
async fn polling_too_fast_is_told_to_slow_down(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let other = app.second_instance().await;
    app.mock_eligible().await;
    let login = app.login().await;
    let path = format!("/v1/watch/{}", login["watch_token"].as_str().unwrap());

    let first = app.http.get(app.url(&path)).send().await.unwrap();
    assert_eq!(first.status(), 200, "never on the first poll");
    let second = other.http.get(other.url(&path)).send().await.unwrap();
    assert_eq!(
        second.status(),
        429,
        "the other instance knows about the first poll"
    );
    let retry_after: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        second.json::<Value>().await.unwrap()["error"]["code"],
        "slow_down"
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let third = app.http.get(app.url(&path)).send().await.unwrap();
    assert_eq!(third.status(), 200, "waiting as told is not punished");

    // a long poll that waits is not a fast poll (one answered at once is: see below)
    let long = app
        .http
        .get(app.url(&format!("{path}?wait=2")))
        .header("if-none-match", third.headers()["etag"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 304);
}

async fn polled_at(app: &TestApp) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("select watch_polled_at from logins")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A long poll answered at once (no `If-None-Match`, or one the login no longer matches) is
/// a poll like any other: a tight loop of them is told to slow down, on every instance. One
/// that waits is free; of two answered at once together, one is refused.
#[sqlx::test]
async fn a_long_poll_answered_at_once_counts_against_the_interval(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let other = app.second_instance().await;
    app.mock_eligible().await;
    let login = app.login().await;
    let path = format!(
        "/v1/watch/{}?wait=60",
        login["watch_token"].as_str().unwrap()
    );
    let poll = |instance: &TestApp, etag: Option<&str>| {
        let mut request = instance.http.get(instance.url(&path));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };

    let first = poll(&app, None).await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let counted = polled_at(&app).await;
    assert!(counted.is_some());
    for (instance, known) in [(&other, None), (&app, Some("\"stale\"")), (&app, None)] {
        let again = poll(instance, known).await.unwrap();
        assert_eq!(again.status(), 429, "{known:?}");
        let retry_after: u64 = again.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        assert_eq!(
            again.json::<Value>().await.unwrap()["error"]["code"],
            "slow_down"
        );
    }
    assert_eq!(polled_at(&app).await, counted, "a refused poll was counted");

    // one that waits (here until its `wait` is up) is answered, and not counted
    let waited = app
        .http
        .get(app.url(&path.replace("wait=60", "wait=2")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(waited.status(), 304);
    assert_eq!(polled_at(&app).await, counted);

    // the interval has passed: of two answered at once together, on two instances, one is
    let (a, b) = tokio::join!(poll(&app, None), poll(&other, Some("\"stale\"")));
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 429]);
}

#[sqlx::test]
async fn a_browser_may_ask_for_a_new_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    app.webhook(
        login["attempt"]["id"].as_str().unwrap(),
        "FAILED",
        json!({ "failReason": "FACE_TOO_SMALL" }),
    )
    .await;
    let token = login["watch_token"].as_str().unwrap();
    let response = app
        .http
        .post(app.url(&format!("/v1/watch/{token}/attempts")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["attempt"]["number"], 2);
    assert!(body.get("scan_ref").is_none());
    let source: String =
        sqlx::query_scalar("select source from events where kind = 'attempt_issued'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(source, "watch");
}
