use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

fn id(v: &Value, field: &str) -> String {
    match field {
        "attempt" => v["attempt"]["id"].as_str().unwrap().to_owned(),
        _ => v["login_id"].as_str().unwrap().to_owned(),
    }
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn etag_of(app: &TestApp, lid: &str) -> String {
    let response = app.get_login(lid).await;
    response.headers()["etag"].to_str().unwrap().to_owned()
}

/// A long poll on the login, answered once it differs from `etag` or after `wait` seconds.
async fn long_poll(app: &TestApp, lid: &str, etag: &str, wait: u32) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/logins/{lid}?wait={wait}")))
        .bearer_auth(API_KEY)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap()
}

async fn redeemed_events(app: &TestApp) -> i64 {
    app.count("select count(*) from events where kind = 'login_redeemed'")
        .await
}

/// A login approved by a webhook: its id.
async fn approved_login(app: &TestApp) -> String {
    app.mock_eligible().await;
    let login = app.login().await;
    app.webhook(&id(&login, "attempt"), "SUCCESS", json!({}))
        .await;
    id(&login, "login")
}

#[sqlx::test]
async fn redeem_once_after_approval(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let lid = id(&login, "login");
    assert_eq!(
        code(app.post(&format!("/v1/logins/{lid}/redeem")).await).await,
        (409, "not_approved".into())
    );
    app.webhook(
        &id(&login, "attempt"),
        "SUCCESS",
        json!({ "ipAddress": "203.0.113.9", "riskTags": [] }),
    )
    .await;

    let response = app.post(&format!("/v1/logins/{lid}/redeem")).await;
    assert_eq!(response.status(), 200);
    let who: Value = response.json().await.unwrap();
    assert_eq!(who["scan_ref"], SCAN_REF);
    assert_eq!(who["client_id"], "FD155HLZ5Z");
    assert_eq!(who["user_ref"], "user-42");
    assert_eq!(who["attempt_id"], login["attempt"]["id"]);
    assert_eq!(who["phone_ip"], "203.0.113.9");
    assert_eq!(who["desktop_ip"], "198.51.100.7");
    assert!(who["authenticated_at"].as_str().is_some());

    assert_eq!(
        code(app.post(&format!("/v1/logins/{lid}/redeem")).await).await,
        (409, "already_redeemed".into())
    );
    assert_eq!(app.state(&lid).await["status"], "redeemed");
    assert_eq!(redeemed_events(&app).await, 1);
    // nothing moves a redeemed login
    assert_eq!(
        code(app.post(&format!("/v1/logins/{lid}/attempts")).await).await,
        (409, "already_redeemed".into())
    );
    assert_eq!(
        code(app.post(&format!("/v1/logins/{lid}/cancel")).await).await,
        (409, "already_redeemed".into())
    );
}

#[sqlx::test]
async fn concurrent_redeems_exactly_one_wins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let lid = approved_login(&app).await;
    let other = app.second_instance().await;
    let path = format!("/v1/logins/{lid}/redeem");
    let mut calls = Vec::new();
    for i in 0..16 {
        let target = if i % 2 == 0 { &app } else { &other };
        calls.push(target.post(&path));
    }
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(redeemed_events(&app).await, 1);
}

/// A redeem that waits for the login's row while another transaction cancels the login judges
/// it after the cancel: 409, and the login is never redeemed.
#[sqlx::test]
async fn a_redeem_waiting_on_a_change_of_its_login_is_judged_after_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let lid = approved_login(&app).await;
    let holder = hold_login(&app, &lid, &A_CANCEL).await;
    let redeem = async {
        let response = app.post(&format!("/v1/logins/{lid}/redeem")).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (
            status,
            body["error"]["code"].clone(),
            body["error"]["message"].clone(),
        )
    };
    let ((status, error, message), ()) =
        tokio::join!(redeem, end_once_waited_on(&app, holder, 1, "commit"));
    assert_eq!((status, error), (409, json!("not_approved")), "{message}");
    assert!(message.as_str().unwrap().contains("canceled"), "{message}");
    assert_eq!(app.state(&lid).await["status"], "canceled");
    assert_eq!(redeemed_events(&app).await, 0);
}

/// An approval that expires while its redeem waits for the login's row (held by a transaction
/// that changes nothing) is judged expired: the judgement is made under the lock.
#[sqlx::test]
async fn an_approval_that_expires_while_its_redeem_waits_is_not_redeemed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let lid = approved_login(&app).await;
    let holder = hold_login(
        &app,
        &lid,
        &[
            "update logins set approval_expires_at = now() + interval '300 milliseconds'
           where id = $1::uuid",
        ],
    )
    .await;
    let path = format!("/v1/logins/{lid}/redeem");
    let redeem = app.post(&path);
    let end = async {
        writes_wait(&app, 1).await;
        // past the new expiry before the row is let go
        tokio::time::sleep(Duration::from_millis(600)).await;
        end_once_waited_on(&app, holder, 1, "commit").await;
    };
    let (response, ()) = tokio::join!(redeem, end);
    assert_eq!(code(response).await, (409, "approval_expired".into()));
    assert_eq!(redeemed_events(&app).await, 0);
}

/// A redeem whose client leaves while it waits for the login's row still commits once the row
/// is free, and is announced with its event number (a change dropped unannounced would reach
/// other instances without one, from the backstop). The platform's retry is told
/// `already_redeemed`.
#[sqlx::test]
async fn a_redeem_whose_client_left_commits_and_is_announced(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let lid = approved_login(&app).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener.listen(facepair::live::CHANNEL).await.unwrap();
    let seq: i32 = sqlx::query_scalar("select event_seq + 1 from logins where id = $1::uuid")
        .bind(&lid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let announced = format!("{lid} {seq}");
    let mut holder = hold_login(&app, &lid, &[]).await;
    let path = format!("/v1/logins/{lid}/redeem");
    let request = app.http.post(app.url(&path)).bearer_auth(API_KEY).send();
    // the client leaves once the redeem waits for the row: its request is dropped
    tokio::select! {
        answer = request => panic!("answered while the row was held: {answer:?}"),
        () = writes_wait(&app, 1) => {}
    }
    sqlx::query("rollback").execute(&mut holder).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while listener.recv().await.unwrap().payload() != announced {}
    })
    .await
    .expect("the redeem is announced with its event number");
    assert_eq!(app.state(&lid).await["status"], "redeemed");
    assert_eq!(
        code(app.post(&path).await).await,
        (409, "already_redeemed".into())
    );
    assert_eq!(redeemed_events(&app).await, 1);
}

#[sqlx::test]
async fn a_new_code_after_failure_and_the_budget(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let lid = id(&login, "login");
    let attempts = format!("/v1/logins/{lid}/attempts");

    app.webhook(
        &id(&login, "attempt"),
        "FAILED",
        json!({ "failReason": "FACE_MISMATCH" }),
    )
    .await;
    let response = app.post(&attempts).await;
    assert_eq!(response.status(), 201);
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["status"], "pending");
    assert_eq!(second["attempt"]["number"], 2);
    assert_ne!(
        second["attempt"]["digit_string"],
        login["attempt"]["digit_string"]
    );

    // superseding a pending code
    let response = app.post(&attempts).await;
    assert_eq!(response.status(), 201);
    let third: Value = response.json().await.unwrap();
    assert_eq!(third["attempt"]["number"], 3);
    assert_eq!(third["can_request_new_code"], false, "budget of 3 spent");
    let superseded: String = sqlx::query_scalar("select status from attempts where number = 2")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(superseded, "superseded");

    // a late webhook for the superseded attempt changes nothing
    let (status, verdict) = app
        .webhook(&id(&second, "attempt"), "SUCCESS", json!({}))
        .await;
    assert_eq!((status, verdict.as_str()), (200, "late"));
    assert_eq!(app.state(&lid).await["status"], "pending");

    let response = app.post(&attempts).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "attempt_budget_exhausted");
    assert_eq!(body["error"]["budget"], "login");
    assert_eq!(app.count("select count(*) from attempts").await, 3);

    // the last code fails: the login is exhausted
    app.webhook(
        &id(&third, "attempt"),
        "FAILED",
        json!({ "failReason": "FAKE_FACE" }),
    )
    .await;
    let state = app.state(&lid).await;
    assert_eq!(state["status"], "exhausted");
    assert_eq!(state["can_request_new_code"], false);
    let history: Vec<String> = sqlx::query_scalar("select status from attempts order by number")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(history, ["failed", "superseded", "failed"]);
}

#[sqlx::test]
async fn no_new_code_for_an_approved_or_canceled_login(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let approved = app.login().await;
    app.webhook(&id(&approved, "attempt"), "SUCCESS", json!({}))
        .await;
    let path = format!("/v1/logins/{}/attempts", id(&approved, "login"));
    assert_eq!(
        code(app.post(&path).await).await,
        (409, "already_approved".into())
    );

    let canceled = app.login().await;
    let cid = id(&canceled, "login");
    let response = app.post(&format!("/v1/logins/{cid}/cancel")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "canceled");
    assert_eq!(body["attempt"]["status"], "canceled");
    // twice is harmless
    assert_eq!(
        app.post(&format!("/v1/logins/{cid}/cancel")).await.status(),
        200
    );
    assert_eq!(
        code(app.post(&format!("/v1/logins/{cid}/attempts")).await).await,
        (409, "login_canceled".into())
    );
    assert_eq!(
        code(app.post(&format!("/v1/logins/{cid}/redeem")).await).await,
        (409, "not_approved".into())
    );
    // the person finishing in the app afterwards changes nothing
    let (_, verdict) = app
        .webhook(&id(&canceled, "attempt"), "SUCCESS", json!({}))
        .await;
    assert_eq!(verdict, "late");
    assert_eq!(app.state(&cid).await["status"], "canceled");
    assert_eq!(
        app.count(&format!(
            "select count(*) from events where login_id = '{cid}' and kind = 'login_canceled'"
        ))
        .await,
        1
    );
}

#[sqlx::test]
async fn unknown_logins_are_404(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in [
        "/v1/logins/00000000-0000-0000-0000-000000000000",
        "/v1/logins/not-a-uuid",
    ] {
        let response = app.get_login(path.trim_start_matches("/v1/logins/")).await;
        assert_eq!(
            code(response).await,
            (404, "login_not_found".into()),
            "{path}"
        );
    }
    for action in ["attempts", "cancel", "redeem"] {
        let response = app
            .post(&format!(
                "/v1/logins/00000000-0000-0000-0000-000000000000/{action}"
            ))
            .await;
        assert_eq!(
            code(response).await,
            (404, "login_not_found".into()),
            "{action}"
        );
    }
}

/// A code past its expiry reads as expired at once, and the expiry task records it once even
/// with two instances running.
#[sqlx::test]
async fn expiry_by_facepairs_clock(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let _other = app.second_instance().await;
    app.mock_eligible().await;
    let response = app
        .create_login(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 1 }))
        .await;
    let login: Value = response.json().await.unwrap();
    let lid = id(&login, "login");
    let expires_at: chrono::DateTime<chrono::Utc> = login["attempt"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    app.eventually(Duration::from_secs(5), || async {
        chrono::Utc::now() > expires_at
    })
    .await;
    let state = app.state(&lid).await;
    assert_eq!(state["status"], "expired");
    assert_eq!(state["attempt"]["status"], "expired");
    assert!(state["attempt"].get("digit_string").is_none());
    assert_eq!(state["can_request_new_code"], true);

    app.eventually(Duration::from_secs(5), || async {
        app.count(
            "select count(*) from attempts where status = 'expired' and outcome_source = 'clock'",
        )
        .await
            == 1
    })
    .await;
    // give the other instance's task several more ticks to (wrongly) record it again
    let seq_before = app.count("select max(seq)::bigint from events").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        app.count("select count(*) from events where kind = 'attempt_expired'")
            .await,
        1
    );
    assert_eq!(
        app.count("select max(seq)::bigint from events").await,
        seq_before
    );
    assert_eq!(
        app.count("select count(*) from attempts where digit_string is not null")
            .await,
        0
    );

    // iDenfy's own EXPIRED arriving afterwards is stored and changes nothing
    let (status, verdict) = app
        .webhook(&id(&login, "attempt"), "EXPIRED", json!({}))
        .await;
    assert_eq!((status, verdict.as_str()), (200, "late"));
    // and a fresh code may be had
    assert_eq!(
        app.post(&format!("/v1/logins/{lid}/attempts"))
            .await
            .status(),
        201
    );
}

#[sqlx::test]
async fn a_success_after_expiry_is_late(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.expiry_interval = Duration::from_secs(3600)).await;
    app.mock_eligible().await;
    let login: Value = app
        .login_with(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 1 }))
        .await;
    let expires_at: chrono::DateTime<chrono::Utc> = login["attempt"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.eventually(Duration::from_secs(5), || async {
        chrono::Utc::now() > expires_at
    })
    .await;
    // the expiry task has not run; the webhook itself records the expiry first
    let (status, verdict) = app
        .webhook(&id(&login, "attempt"), "SUCCESS", json!({}))
        .await;
    assert_eq!((status, verdict.as_str()), (200, "late"));
    assert_eq!(app.state(&id(&login, "login")).await["status"], "expired");
    assert_eq!(
        app.count("select count(*) from attempts where outcome_source = 'clock'")
            .await,
        1
    );
}

#[sqlx::test]
async fn etag_and_not_modified(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let lid = id(&login, "login");
    let response = app.get_login(&lid).await;
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let get = |etag: String| {
        app.http
            .get(app.url(&format!("/v1/logins/{lid}")))
            .bearer_auth(API_KEY)
            .header("if-none-match", etag)
            .send()
    };
    let response = get(etag.clone()).await.unwrap();
    assert_eq!(response.status(), 304);
    app.webhook(&id(&login, "attempt"), "SUCCESS", json!({}))
        .await;
    let response = get(etag.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(response.headers()["etag"].to_str().unwrap(), etag);
}

#[sqlx::test]
async fn long_poll_answers_when_the_webhook_lands(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let lid = id(&login, "login");
    let etag = etag_of(&app, &lid).await;
    let other = app.second_instance().await;
    let started = std::time::Instant::now();
    let poll = long_poll(&app, &lid, &etag, 20);
    let attempt = id(&login, "attempt");
    // the webhook lands on the other instance
    let (response, _) = tokio::join!(poll, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.webhook(&attempt, "SUCCESS", json!({})).await
    });
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered on the change, not at the deadline"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "approved"
    );

    // unchanged until the deadline: 304
    let etag = etag_of(&app, &lid).await;
    let response = long_poll(&app, &lid, &etag, 1).await;
    assert_eq!(response.status(), 304);
}

/// An instance that begins to stop answers its long polls at once (304: nothing changed),
/// rather than hold them until its shutdown grace period cuts them.
#[sqlx::test]
async fn long_polls_answer_at_once_when_the_instance_stops(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let lid = id(&login, "login");
    let token = login["watch_token"].as_str().unwrap();
    let mut polls = Vec::new();
    for (path, auth) in [
        (format!("/v1/logins/{lid}"), true),
        (format!("/v1/watch/{token}"), false),
    ] {
        let mut plain = app.http.get(app.url(&path));
        if auth {
            plain = plain.bearer_auth(API_KEY);
        }
        let first = plain.send().await.unwrap();
        assert_eq!(first.status(), 200);
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let mut long = app
            .http
            .get(app.url(&format!("{path}?wait=30")))
            .header("if-none-match", etag);
        if auth {
            long = long.bearer_auth(API_KEY);
        }
        polls.push(tokio::spawn(long.send()));
    }
    let hub = app.state.hub.clone();
    app.eventually(Duration::from_secs(5), || {
        let waiting = hub.subscribers();
        async move { waiting == 2 }
    })
    .await;

    let answered = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut statuses = Vec::new();
        for poll in polls {
            let response = tokio::time::timeout_at(deadline, poll)
                .await
                .expect("answered when the instance began to stop")
                .unwrap()
                .unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    let ((), statuses) = tokio::join!(app.stop(), answered);
    assert_eq!(statuses, [304, 304]);
}
