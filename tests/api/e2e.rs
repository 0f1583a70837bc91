//! Real facepair against the real simulator, both on port 0, on real PostgreSQL.

use std::time::Duration;

use facepair::sim::{SimConfig, Simulator};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

pub struct Sandbox {
    pub app: TestApp,
    pub sim_url: String,
    sim: actix_web::dev::ServerHandle,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        drop(self.sim.stop(false));
    }
}

impl Sandbox {
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, |_| {}, |_| {}).await
    }

    pub async fn start_with(
        pool: PgPool,
        tweak_sim: impl FnOnce(&mut SimConfig),
        tweak_app: impl FnOnce(&mut facepair::Settings),
    ) -> Self {
        let mut config = SimConfig::for_tests("idenfy-key", "idenfy-secret", SIGNING_KEY);
        config.scan_refs = vec![(
            SCAN_REF.to_owned(),
            facepair::sim::state::Eligibility::Authentication,
        )];
        tweak_sim(&mut config);
        let sim = Simulator::start(config).await.unwrap();
        let sim_url = sim.base_url();
        let url = sim_url.clone();
        let app = TestApp::spawn_with(pool, move |s| {
            s.idenfy_base_url = url.parse().unwrap();
            tweak_app(s);
        })
        .await;
        sim.set_webhook_url(&app.url("/v1/webhooks/idenfy"));
        let handle = sim.handle();
        tokio::spawn(sim.run_until_stopped());
        Sandbox {
            app,
            sim_url,
            sim: handle,
        }
    }

    pub async fn phone(
        &self,
        code: &str,
        status: &str,
        fail_reason: Option<&str>,
    ) -> reqwest::Response {
        let mut body =
            json!({ "digitString": code, "status": status, "ipAddress": "203.0.113.50" });
        if let Some(r) = fail_reason {
            body["failReason"] = json!(r);
        }
        self.app
            .http
            .post(format!("{}/_sim/app/enter", self.sim_url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn faults(&self, faults: Value) {
        let r = self
            .app
            .http
            .post(format!("{}/_sim/faults", self.sim_url))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn sessions(&self) -> Vec<Value> {
        self.app
            .http
            .get(format!("{}/_sim/sessions", self.sim_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the login reads `status`.
    pub async fn wait_for(&self, login_id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            last = self.app.state(login_id).await;
            if last["status"] == status {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        panic!("login {login_id} never became {status}; last: {last}");
    }
}

fn code_of(login: &Value) -> String {
    login["attempt"]["digit_string"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn lid(login: &Value) -> String {
    login["login_id"].as_str().unwrap().to_owned()
}

#[sqlx::test]
async fn success_end_to_end(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    assert_eq!(code_of(&login).len(), 8);
    assert_eq!(
        sb.phone(&code_of(&login), "SUCCESS", None).await.status(),
        200
    );
    sb.wait_for(&lid(&login), "approved").await;
    let who: Value = sb
        .app
        .post(&format!("/v1/logins/{}/redeem", lid(&login)))
        .await
        .json()
        .await
        .unwrap();
    let sessions = sb.sessions().await;
    assert_eq!(
        who["client_id"], sessions[0]["client_id"],
        "clientId from iDenfy's webhook"
    );
    assert_eq!(who["phone_ip"], "203.0.113.50");
    // the phone cannot reuse the code
    assert_eq!(
        sb.phone(&code_of(&login), "SUCCESS", None).await.status(),
        404
    );
}

#[sqlx::test]
async fn every_failure_kind(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    for (status, reason, want_attempt) in [
        ("FAILED", Some("FACE_MISMATCH"), "failed"),
        ("FAILED", Some("FAKE_FACE"), "failed"),
        ("FAILED", Some("VIRTUAL_CAMERA"), "failed"),
        ("CANCELED", None, "canceled"),
    ] {
        let login = sb.app.login().await;
        sb.phone(&code_of(&login), status, reason).await;
        let state = sb.wait_for(&lid(&login), "failed").await;
        assert_eq!(state["attempt"]["status"], want_attempt);
        assert_eq!(state["attempt"]["fail_reason"].as_str(), reason);
        assert_eq!(state["can_request_new_code"], true);
    }
}

#[sqlx::test]
async fn retry_with_a_fresh_code_then_succeed(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    sb.phone(&code_of(&login), "FAILED", Some("FACE_TOO_SMALL"))
        .await;
    sb.wait_for(&lid(&login), "failed").await;
    let second: Value = sb
        .app
        .post(&format!("/v1/logins/{}/attempts", lid(&login)))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(code_of(&second), code_of(&login));
    sb.phone(&code_of(&second), "SUCCESS", None).await;
    let state = sb.wait_for(&lid(&login), "approved").await;
    assert_eq!(state["attempt"]["number"], 2);
    assert_eq!(
        sb.app
            .post(&format!("/v1/logins/{}/redeem", lid(&login)))
            .await
            .status(),
        200
    );
}

#[sqlx::test]
async fn a_superseded_code_used_late_changes_nothing(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    let second: Value = sb
        .app
        .post(&format!("/v1/logins/{}/attempts", lid(&login)))
        .await
        .json()
        .await
        .unwrap();
    // iDenfy does not know facepair moved on: the old code still works in the app
    assert_eq!(
        sb.phone(&code_of(&login), "SUCCESS", None).await.status(),
        200
    );
    sb.app
        .eventually(Duration::from_secs(5), || async {
            sb.app
                .count("select count(*) from deliveries where verdict = 'late'")
                .await
                == 1
        })
        .await;
    let state = sb.app.state(&lid(&login)).await;
    assert_eq!(state["status"], "pending");
    assert_eq!(state["attempt"]["id"], second["attempt"]["id"]);
}

#[sqlx::test]
async fn cancel_end_to_end(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    assert_eq!(
        sb.app
            .post(&format!("/v1/logins/{}/cancel", lid(&login)))
            .await
            .status(),
        200
    );
    sb.phone(&code_of(&login), "SUCCESS", None).await;
    sb.app
        .eventually(Duration::from_secs(5), || async {
            sb.app
                .count("select count(*) from deliveries where verdict = 'late'")
                .await
                == 1
        })
        .await;
    assert_eq!(sb.app.state(&lid(&login)).await["status"], "canceled");
    assert_eq!(
        sb.app
            .post(&format!("/v1/logins/{}/redeem", lid(&login)))
            .await
            .status(),
        409
    );
}

#[sqlx::test]
async fn expiry_reported_by_idenfy(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    let token = sb
        .app
        .token_of(login["attempt"]["id"].as_str().unwrap())
        .await;
    let r = sb
        .app
        .http
        .post(format!("{}/_sim/sessions/{token}/expire", sb.sim_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state = sb.wait_for(&lid(&login), "expired").await;
    assert_eq!(state["attempt"]["status"], "expired");
    let source: String = sqlx::query_scalar("select outcome_source from attempts")
        .fetch_one(&sb.app.pool)
        .await
        .unwrap();
    assert_eq!(source, "webhook");
}

#[sqlx::test]
async fn expiry_by_facepairs_clock_when_the_webhook_is_lost(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    sb.faults(json!({ "drop_webhooks": 1 })).await;
    let login: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 1 }))
        .await;
    sb.wait_for(&lid(&login), "expired").await;
    sb.app
        .eventually(Duration::from_secs(5), || async {
            sb.app.count("select count(*) from attempts where status = 'expired' and outcome_source = 'clock'").await == 1
        })
        .await;
    let sessions = sb.sessions().await;
    assert_eq!(sessions[0]["status"], "EXPIRED");
    assert_eq!(sessions[0]["webhook_deliveries"][0]["fault"], "dropped");
    assert_eq!(sb.app.count("select count(*) from deliveries").await, 0);
}

#[sqlx::test]
async fn duplicate_deliveries_are_recorded_once(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    sb.faults(json!({ "duplicate_webhooks": 1 })).await;
    let login = sb.app.login().await;
    sb.phone(&code_of(&login), "SUCCESS", None).await;
    sb.app
        .eventually(Duration::from_secs(5), || async {
            sb.app.count("select count(*) from deliveries").await == 2
        })
        .await;
    assert_eq!(
        sb.app
            .count("select count(*) from deliveries where verdict = 'applied'")
            .await,
        1
    );
    assert_eq!(
        sb.app
            .count("select count(*) from deliveries where verdict = 'duplicate'")
            .await,
        1
    );
    assert_eq!(
        sb.app
            .count("select count(*) from events where kind = 'attempt_succeeded'")
            .await,
        1
    );
}

/// The first code's FAILED arrives after the second code's SUCCESS.
#[sqlx::test]
async fn out_of_order_deliveries(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    sb.faults(json!({ "hold_webhooks": true })).await;
    let login = sb.app.login().await;
    sb.phone(&code_of(&login), "FAILED", Some("EYES_CLOSED"))
        .await;
    // the platform heard nothing and asks for a new code
    let second: Value = sb
        .app
        .post(&format!("/v1/logins/{}/attempts", lid(&login)))
        .await
        .json()
        .await
        .unwrap();
    sb.phone(&code_of(&second), "SUCCESS", None).await;
    let r = sb
        .app
        .http
        .post(format!("{}/_sim/webhooks/release", sb.sim_url))
        .json(&json!({ "order": "reverse" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["released"], 2);
    let state = sb.wait_for(&lid(&login), "approved").await;
    assert_eq!(state["attempt"]["number"], 2);
    let verdicts: Vec<String> =
        sqlx::query_scalar("select verdict from deliveries order by received_at")
            .fetch_all(&sb.app.pool)
            .await
            .unwrap();
    assert_eq!(verdicts, ["applied", "late"]);
}

#[sqlx::test]
async fn a_wrong_signature_is_refused_and_retried(pool: PgPool) {
    let sb = Sandbox::start_with(pool, |c| c.webhook_retries = 2, |_| {}).await;
    sb.faults(json!({ "wrong_signature_webhooks": 1 })).await;
    let login = sb.app.login().await;
    sb.phone(&code_of(&login), "SUCCESS", None).await;
    let sim = &sb;
    sb.app
        .eventually(Duration::from_secs(5), || async {
            sim.sessions().await[0]["webhook_deliveries"]
                .as_array()
                .unwrap()
                .len()
                == 3
        })
        .await;
    let deliveries = sb.sessions().await[0]["webhook_deliveries"].clone();
    for d in deliveries.as_array().unwrap() {
        assert_eq!(d["status"], 401);
        assert_eq!(d["fault"], "wrong_signature");
    }
    assert_eq!(sb.app.count("select count(*) from deliveries").await, 0);
    assert_eq!(sb.app.state(&lid(&login)).await["status"], "pending");
}

#[sqlx::test]
async fn idenfy_down_or_slow_at_creation(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.idenfy_timeout = Duration::from_millis(800),
    )
    .await;
    sb.faults(json!({ "api_error_status": 500, "api_error_count": 2 }))
        .await;
    let r = sb.app.create_login(json!({ "scan_ref": SCAN_REF })).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "idenfy_unavailable"
    );

    sb.faults(json!({ "api_error_status": 429, "api_error_count": 1 }))
        .await;
    let r = sb.app.create_login(json!({ "scan_ref": SCAN_REF })).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "idenfy_rate_limited"
    );

    sb.faults(json!({ "api_latency_ms": 1500 })).await;
    let r = sb.app.create_login(json!({ "scan_ref": SCAN_REF })).await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "idenfy_timeout"
    );

    assert_eq!(sb.app.count("select count(*) from logins").await, 0);
    sb.faults(json!({})).await;
    assert_eq!(
        sb.app
            .create_login(json!({ "scan_ref": SCAN_REF }))
            .await
            .status(),
        201
    );
}

/// The phone succeeded but the webhook was lost: after the grace period facepair asks iDenfy,
/// and records iDenfy's answer on the expired attempt (source: reconciliation).
#[sqlx::test]
async fn a_lost_webhook_is_reconciled_with_idenfy(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.reconcile_after = Some(Duration::from_secs(1)),
    )
    .await;
    sb.faults(json!({ "drop_webhooks": 2 })).await;
    let lost: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 5 }))
        .await;
    let unused: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 5 }))
        .await;
    // the person finishes well within the code's lifetime
    assert_eq!(
        sb.phone(&code_of(&lost), "SUCCESS", None).await.status(),
        200
    );
    // readers see the expiry at once; what they saw stays true
    sb.wait_for(&lid(&lost), "expired").await;
    sb.app
        .eventually(Duration::from_secs(8), || async {
            sb.app
                .count("select count(*) from attempts where outcome_source = 'reconciliation'")
                .await
                == 2
        })
        .await;
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "select a.status, a.idenfy_status from attempts a join logins l on l.id = a.login_id order by l.created_at",
    )
    .fetch_all(&sb.app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [
            ("expired".into(), "SUCCESS".into()),
            ("expired".into(), "NO_RESULT".into())
        ]
    );
    assert_eq!(sb.app.state(&lid(&lost)).await["status"], "expired");
    assert_eq!(sb.app.state(&lid(&unused)).await["status"], "expired");
    assert_eq!(sb.app.count("select count(*) from deliveries").await, 0);
    let detail: Value = sqlx::query_scalar(
        "select detail from login_timeline where login_id = $1::uuid and what = 'attempt_expired'",
    )
    .bind(lid(&lost))
    .fetch_one(&sb.app.pool)
    .await
    .unwrap();
    assert_eq!(
        detail["idenfy_status"], "SUCCESS",
        "ops can see the lost webhook in the timeline"
    );
}

#[sqlx::test]
async fn without_idenfy_the_clock_records_the_expiry(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.reconcile_after = Some(Duration::from_millis(500)),
    )
    .await;
    // the EXPIRED webhook is dropped from the start; iDenfy breaks once the session exists,
    // seconds before the reconciliation asks
    sb.faults(json!({ "drop_webhooks": 1 })).await;
    let login: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 3 }))
        .await;
    sb.faults(json!({ "drop_webhooks": 1, "api_error_status": 503, "api_error_count": 1000 }))
        .await;
    sb.wait_for(&lid(&login), "expired").await;
    sb.app
        .eventually(Duration::from_secs(8), || async {
            sb.app.count("select count(*) from attempts where status = 'expired' and outcome_source = 'clock'").await == 1
        })
        .await;
}

/// Five failures in a row open the circuit: calls then fail at once without reaching iDenfy,
/// until a trial call after the cool-down finds it back.
#[sqlx::test]
async fn a_failing_idenfy_opens_the_circuit(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    sb.faults(json!({ "api_error_status": 500, "api_error_count": 1000 }))
        .await;
    let remaining = || async {
        let f: Value = sb
            .app
            .http
            .get(format!("{}/_sim/faults", sb.sim_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        f["api_error_count"].as_u64().unwrap()
    };
    for _ in 0..3 {
        let r = sb.app.create_login(json!({ "scan_ref": SCAN_REF })).await;
        assert_eq!(r.status(), 503);
    }
    let reached = 1000 - remaining().await;
    assert!(
        reached >= 5,
        "{reached} calls reached iDenfy before the circuit opened"
    );
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let r = sb.app.create_login(json!({ "scan_ref": SCAN_REF })).await;
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "idenfy_unavailable"
        );
    }
    assert_eq!(
        1000 - remaining().await,
        reached,
        "no call reached iDenfy while the circuit was open"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "failing fast");
    let refused = sb
        .app
        .metric("facepair_idenfy_calls_total{operation=\"check_status\",outcome=\"circuit_open\"}")
        .await;
    assert!(
        refused >= 20.0,
        "{refused} calls refused by the open circuit"
    );
    assert_eq!(sb.app.count("select count(*) from logins").await, 0);
}
