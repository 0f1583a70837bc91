use serde_json::Value;
use sqlx::{Connection as _, PgPool};

use crate::helpers::*;

#[sqlx::test]
async fn health(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_eq!(
        app.http
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // PostgreSQL goes away for this database: every connection ends, none is accepted
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let admit = |allow: bool| format!("alter database \"{database}\" allow_connections {allow}");
    // a database cannot refuse connections while connected to: this is said from another
    let mut other = sqlx::PgConnection::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(admit(false)))
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // every worker answers for itself: ask more often than there are workers
    for _ in 0..4 {
        let response = app.http.get(app.url("/health/ready")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().get("retry-after").is_some());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "database_unavailable");
    }
    assert_eq!(
        app.http
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // and when it is back, so is facepair, without a restart
    sqlx::query(sqlx::AssertSqlSafe(admit(true)))
        .execute(&mut other)
        .await
        .unwrap();
    for _ in 0..4 {
        let response = app.http.get(app.url("/health/ready")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[sqlx::test]
async fn unknown_routes_and_methods_use_the_error_body(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app.http.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");
    assert_eq!(body["error"]["request_id"], request_id.as_str());
    let response = app.http.delete(app.url("/v1/logins")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers()["allow"],
        "POST",
        "RFC 9110: a 405 says what is allowed"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );
    let response = app
        .http
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[sqlx::test]
async fn openapi_covers_every_route_and_error_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/logins",
        "/v1/logins/{login_id}",
        "/v1/logins/{login_id}/attempts",
        "/v1/logins/{login_id}/cancel",
        "/v1/logins/{login_id}/redeem",
        "/v1/events",
        "/v1/event-endpoints",
        "/v1/event-endpoints/{endpoint_id}/disable",
        "/v1/watch/{watch_token}",
        "/v1/watch/{watch_token}/attempts",
        "/v1/webhooks/idenfy",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    let codes = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    for code in facepair::error::Code::ALL.map(facepair::error::Code::as_str) {
        assert!(codes.iter().any(|c| c == code), "{code}");
        assert!(doc["info"]["description"].as_str().unwrap().contains(code));
    }
}

/// The README's error table lists every code with the status it is answered with.
#[test]
fn the_readme_lists_every_error_code_with_its_status() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for code in facepair::error::Code::ALL {
        let (name, status, _) = code.facts();
        let row = readme
            .lines()
            .find(|l| {
                l.split('|')
                    .nth(1)
                    .is_some_and(|first| first.contains(&format!("`{name}`")))
            })
            .unwrap_or_else(|| panic!("README has no row for `{name}`"));
        let columns: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(
            columns.contains(&status.to_string().as_str()),
            "`{name}` is {status}: {row}"
        );
    }
}
