//! What `/openapi.json` adds to the annotations: links that let a client (or a stateful test
//! generator) walk from a created login to everything that follows it, and the shape of each
//! Server-Sent Event. utoipa has no builder for either, so they are written as JSON here.

use serde_json::{Value, json};

use crate::domain::EventKind;

/// Operations reached from a login's `login_id`, by operationId.
const BY_LOGIN: [&str; 5] = [
    "getLogin",
    "streamLoginEvents",
    "newLoginAttempt",
    "cancelLogin",
    "redeemLogin",
];
/// Operations reached from a login's `watch_token`.
const BY_WATCH: [&str; 5] = [
    "getWatch",
    "streamWatchEvents",
    "newWatchAttempt",
    "cancelWatch",
    "pairingPage",
];

/// Adds the links and the event schemas to `document`, the annotations' output.
pub fn complete(document: &mut Value) {
    let from_created = links(&BY_LOGIN, "login_id", "$response.body#/login_id").chain(links(
        &BY_WATCH,
        "watch_token",
        "$response.body#/watch_token",
    ));
    link(
        document,
        "/v1/logins",
        "post",
        "201",
        from_created.collect(),
    );
    let by_path = |ops: &[&str], name: &str| {
        links(ops, name, &format!("$request.path.{name}")).collect::<Vec<_>>()
    };
    for (path, method, status) in [
        ("/v1/logins/{login_id}", "get", "200"),
        ("/v1/logins/{login_id}/attempts", "post", "201"),
        ("/v1/logins/{login_id}/cancel", "post", "200"),
    ] {
        link(
            document,
            path,
            method,
            status,
            by_path(&BY_LOGIN, "login_id"),
        );
    }
    for (path, method, status) in [
        ("/v1/watch/{watch_token}", "get", "200"),
        ("/v1/watch/{watch_token}/attempts", "post", "201"),
    ] {
        link(
            document,
            path,
            method,
            status,
            by_path(&BY_WATCH, "watch_token"),
        );
    }
    let disable = links(
        &["disableEventEndpoint"],
        "endpoint_id",
        "$response.body#/id",
    )
    .collect();
    link(document, "/v1/event-endpoints", "post", "201", disable);
    for path in [
        "/v1/logins/{login_id}/events",
        "/v1/watch/{watch_token}/events",
    ] {
        let content = &mut document["paths"][path]["get"]["responses"]["200"]["content"];
        content["text/event-stream"] = json!({ "schema": event_schema() });
    }
}

fn links<'a>(
    ops: &'a [&str],
    name: &'a str,
    value: &'a str,
) -> impl Iterator<Item = (String, Value)> + 'a {
    ops.iter().map(move |op| {
        let link = json!({ "operationId": op, "parameters": { name: value } });
        (op.to_string(), link)
    })
}

fn link(document: &mut Value, path: &str, method: &str, status: &str, links: Vec<(String, Value)>) {
    let response = &mut document["paths"][path][method]["responses"][status];
    assert!(
        response.is_object(),
        "no {status} response on {method} {path}"
    );
    response["links"] = Value::Object(links.into_iter().collect());
}

/// One event as OpenAPI 3.1 tools that parse streams validate it (the `itemSchema` of OpenAPI
/// 3.2): `data` is the login document as JSON.
fn event_schema() -> Value {
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    json!({
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": { "type": "string", "pattern": "^[0-9]+$", "description": "the event's sequence number in its login" },
            "event": { "type": "string", "enum": kinds },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": { "$ref": "#/components/schemas/LoginState" }
            },
            "retry": { "type": "integer", "minimum": 0 }
        }
    })
}
