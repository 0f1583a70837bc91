//! Health, metrics and the OpenAPI document.

use actix_web::{HttpResponse, web};
use serde_json::json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ApiError, Code, ErrorBody, ErrorDetail};
use crate::http::Web;
use crate::http::{events, pair, platform, sdk, watch, webhook};
use crate::service::Context;

/// Alive: answers without touching any dependency.
#[utoipa::path(get, path = "/health/live", tag = "ops", responses((status = 200, description = "the process serves HTTP")))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready: the database answers. `idenfy_breaker` is `open` while creations and new codes fail
/// at once (503 `idenfy_unavailable`) after iDenfy kept failing, `half_open` while one trial
/// call decides; the instance stays ready, since reads, redeems and webhooks still work.
#[utoipa::path(get, path = "/health/ready", tag = "ops", responses(
    (status = 200, description = "PostgreSQL answers; `idenfy_breaker` is `closed`, `open` or `half_open`"),
    (status = 503, body = ErrorBody, description = "database_unavailable"),
))]
pub async fn ready(state: web::Data<Context>) -> Result<HttpResponse, ApiError> {
    sqlx::query("select 1").execute(&state.pool).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "database": "ok",
        "idenfy_breaker": state.idenfy.circuit_phase().as_str(),
    })))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<Context>, shared: web::Data<Web>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render(
            shared.worker_pools.connections(),
            state.idenfy.circuit_phase().as_str(),
            crate::telemetry::lines_dropped(),
        ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::document())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "facepair", description = "Log people in on desktop platforms with iDenfy face authentication and a short digit code."),
    paths(
        platform::create_login, platform::get_login, platform::events, platform::new_attempt, platform::cancel, platform::redeem,
        events::feed, events::create_endpoint, events::list_endpoints, events::disable_endpoint,
        watch::get_watch, watch::events, watch::new_attempt, watch::cancel, pair::page, sdk::module,
        webhook::receive,
        live, ready, metrics, openapi,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Security, &ErrorCodes),
    tags(
        (name = "platform", description = "The platform's backend, with `Authorization: Bearer <api key>`"),
        (name = "browser", description = "The browser, with the watch token alone; no identity data"),
        (name = "idenfy", description = "iDenfy's signed webhook"),
        (name = "ops", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

impl ApiDoc {
    pub fn document() -> serde_json::Value {
        let mut document = serde_json::to_value(Self::openapi()).expect("the document serializes");
        crate::http::document::complete(&mut document);
        document
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Lists every error code with its status in the document's description, and makes the
/// `code` field an enum of them.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut table =
            String::from("\n\n## Error codes\n\n| code | status | meaning |\n|---|---|---|\n");
        for (code, status, meaning) in Code::ALL.map(Code::facts) {
            table.push_str(&format!("| `{code}` | {status} | {meaning} |\n"));
        }
        let description = openapi.info.description.get_or_insert_with(String::new);
        description.push_str(&table);
        if let Some(components) = openapi.components.as_mut()
            && let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(detail))) =
                components.schemas.get_mut("ErrorDetail")
            && let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(code))) =
                detail.properties.get_mut("code")
        {
            code.enum_values = Some(Code::ALL.iter().map(|c| json!(c.as_str())).collect());
        }
    }
}
