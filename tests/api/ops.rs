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
    // also from the other connection: the test's pool may hand out a new connection (one it
    // just used is still being returned), which the database now refuses
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&database)
        .execute(&mut other)
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
        "/v1/watch/{watch_token}/cancel",
        "/v1/watch/{watch_token}/events",
        "/pair/{watch_token}",
        "/sdk/v1/facepair-pairing.js",
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

/// A generic client can walk the API from a created login: every operation that takes a
/// `login_id` or a `watch_token` is linked from `POST /v1/logins`, each link names a real
/// operation and its real parameter, and each Server-Sent Event's shape is described.
#[sqlx::test]
async fn the_document_links_a_created_login_to_what_follows_and_describes_each_event(pool: PgPool) {
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
    let mut operations = std::collections::HashMap::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            let params: Vec<(String, String)> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().into(),
                        p["in"].as_str().unwrap().into(),
                    )
                })
                .collect();
            assert!(
                operations.insert(id.clone(), (operation, params)).is_none(),
                "operationId {id} is used twice"
            );
        }
    }
    let mut linked_from_create = std::collections::HashSet::new();
    for (id, (operation, _)) in &operations {
        for response in operation["responses"].as_object().unwrap().values() {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|l| l.1)
            {
                let target = link["operationId"].as_str().unwrap();
                let (_, params) = &operations[target];
                for name in link["parameters"].as_object().unwrap().keys() {
                    assert!(
                        params.iter().any(|(p, _)| p == name),
                        "{id} links to {target} with {name}, which it does not take"
                    );
                }
                if id == "createLogin" {
                    linked_from_create.insert(target.to_owned());
                }
            }
        }
    }
    for (id, (_, params)) in &operations {
        if params
            .iter()
            .any(|(name, at)| at == "path" && (name == "login_id" || name == "watch_token"))
        {
            assert!(
                linked_from_create.contains(id),
                "no link from createLogin to {id}"
            );
        }
        for (name, at) in params {
            assert!(
                at != "path"
                    || doc["paths"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .any(|p| p.contains(&format!("{{{name}}}"))),
                "{id}: {name} is said to be in the path"
            );
        }
    }
    for path in [
        "/v1/logins/{login_id}/events",
        "/v1/watch/{watch_token}/events",
    ] {
        let event = &doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]
            ["schema"];
        let kinds: Vec<&str> = event["properties"]["event"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let all: Vec<&str> = facepair::domain::EventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(kinds, all, "{path}");
        let data = &event["properties"]["data"];
        assert_eq!(data["contentMediaType"], "application/json");
        let reference = data["contentSchema"]["$ref"].as_str().unwrap();
        let name = reference.rsplit('/').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{reference}"
        );
    }
}

/// `wait` and `last_event_id` take any whole number from 0, as the document says (none too
/// large: a wait above 60 is 60), and refuse anything else with 400 `malformed_query`.
#[sqlx::test]
async fn query_numbers_take_any_whole_number_and_refuse_the_rest(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.mock_eligible().await;
    let login = app.login().await;
    let id = login["login_id"].as_str().unwrap();
    for (query, status) in [
        ("wait=0", 200),
        ("wait=99999999999999999999999999", 200),
        ("wait=-1", 400),
        ("wait=1.5", 400),
        ("wait=", 400),
    ] {
        let response = app
            .http
            .get(app.url(&format!("/v1/logins/{id}?{query}")))
            .header("authorization", format!("Bearer {API_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
        if status == 400 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "malformed_query", "{query}");
        }
    }
    for (query, status) in [
        ("last_event_id=99999999999999999999", 200),
        ("last_event_id=-3", 400),
    ] {
        let response = app
            .http
            .get(app.url(&format!("/v1/logins/{id}/events?{query}")))
            .header("authorization", format!("Bearer {API_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
    }
}
