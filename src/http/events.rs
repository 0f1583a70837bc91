//! The events feed, `GET /v1/events`: every public event in commit order, for the platform;
//! and the endpoints events are pushed to, `/v1/event-endpoints`.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::domain::outbound::{self as rules, EventType, WebhookSecret};
use crate::domain::types::Invalid;
use crate::error::{ApiError, ErrorBody};
use crate::http::JsonBody;
use crate::http::auth::ApiKey;
use crate::service::Context;
use crate::service::outbound::{self, Endpoint, EndpointCreated, EventPage};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `next_cursor` of the previous page; absent or `0`: from the first event kept.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub after: Option<String>,
    /// Comma-separated event types to list, e.g. `login.approved,login.failed`; absent: all.
    #[param(schema_with = type_list)]
    pub types: Option<String>,
    /// Events per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Long-poll: with no event past `after`, wait up to this many seconds for one, answering
    /// at once when the instance begins to stop. A wait above 60 is taken as 60.
    #[param(schema_with = crate::http::poll::whole_number)]
    #[serde(default, deserialize_with = "crate::http::poll::saturating")]
    pub wait: Option<u64>,
}

/// The public event types as a JSON Schema enum.
fn type_names() -> Vec<&'static str> {
    EventType::ALL.iter().map(|t| t.as_str()).collect()
}

/// A comma-separated list of event types, as a pattern.
fn type_list() -> utoipa::openapi::schema::Object {
    let one = type_names().join("|").replace('.', r"\.");
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^(?:{one})(?:,(?:{one}))*$")))
        .build()
}

/// A non-empty array of event types.
fn type_array() -> utoipa::openapi::schema::Array {
    let item = utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(type_names()))
        .build();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .min_items(Some(1))
        .build()
}

impl FeedQuery {
    fn after(&self) -> Result<i64, ApiError> {
        match self.after.as_deref() {
            None => Ok(0),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && !s.starts_with('+'))
                .ok_or(ApiError::InvalidCursor),
        }
    }

    fn types(&self) -> Result<Option<Vec<String>>, ApiError> {
        let Some(list) = self.types.as_deref() else {
            return Ok(None);
        };
        let types = EventType::parse_all(list.split(',')).map_err(ApiError::InvalidEventType)?;
        Ok(Some(types.iter().map(|t| t.as_str().to_owned()).collect()))
    }

    fn limit(&self) -> Result<i64, ApiError> {
        match self.limit.as_deref() {
            None => Ok(100),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=1000).contains(n) && !s.starts_with('+'))
                .ok_or(ApiError::InvalidLimit),
        }
    }
}

/// Events in commit order: an event that committed late comes after those listed before it,
/// never skipped. Page with `after` = the last page's `next_cursor`; event ids are stable,
/// the same as a push's `webhook-id`.
#[utoipa::path(
    get, path = "/v1/events", operation_id = "listEvents", tag = "platform",
    params(FeedQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody, description = "invalid_cursor, invalid_event_type, invalid_limit, malformed_query"),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn feed(
    state: web::Data<Context>,
    _key: ApiKey,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query.after()?;
    let types = query.types()?;
    let limit = query.limit()?;
    let wait = std::time::Duration::from_secs(
        query
            .wait
            .unwrap_or(0)
            .min(crate::http::poll::MAX_WAIT_SECONDS.into()),
    );
    let page = outbound::feed(&state, after, types, limit, wait).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(page))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// An https URL that resolves to public addresses only, without a user name or password
    /// (the sandbox allows http and private addresses): refused with 422 `invalid_field`
    /// otherwise, which a schema cannot state in full.
    #[schema(value_type = String, required = true, pattern = r"^https?://\S+$", max_length = 2048, example = "https://platform.example/hooks/facepair")]
    pub url: Option<String>,
    /// Event types to push, e.g. `["login.approved", "login.failed"]`; absent: all.
    #[schema(schema_with = type_array)]
    pub types: Option<Vec<String>>,
    /// `whsec_` and the base64 (padded) of 24-64 bytes; absent: facepair makes one and shows it
    /// once.
    #[schema(
        pattern = r"^whsec_(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$|^whsec_(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/][AQgw]==)?$"
    )]
    pub secret: Option<String>,
}

/// Add an endpoint: from the next event on, every event of its types is pushed to it as a
/// Standard Webhooks request signed with its secret.
#[utoipa::path(
    post, path = "/v1/event-endpoints", operation_id = "createEventEndpoint", tag = "platform",
    request_body = CreateEndpoint,
    security(("api_key" = [])),
    responses(
        (status = 201, body = EndpointCreated, description = "created; keep `secret`, it is not shown again"),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 409, body = ErrorBody, description = "endpoint_exists; too_many_endpoints (16 enabled)"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
        (status = 422, body = ErrorBody, description = "invalid_field (`url`, `types`, `secret`)"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn create_endpoint(
    state: web::Data<Context>,
    _key: ApiKey,
    JsonBody(body): JsonBody<CreateEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let url = body
        .url
        .as_deref()
        .ok_or_else(|| Invalid::new("url", "is required"))?;
    if url.len() > 2048 {
        return Err(Invalid::new("url", "must be at most 2048 characters").into());
    }
    let url: url::Url = url
        .parse()
        .map_err(|_| Invalid::new("url", "is not an absolute URL"))?;
    rules::check_endpoint_url(&url, state.settings.events.allow_private_http)
        .map_err(|e| Invalid::new("url", e))?;
    let types = body
        .types
        .map(|list| {
            if list.is_empty() {
                return Err(Invalid::new(
                    "types",
                    "must name at least one type, or be left out",
                ));
            }
            EventType::parse_all(list.iter().map(String::as_str))
                .map_err(|t| Invalid::new("types", format!("{t:?} is not an event type")))
        })
        .transpose()?;
    if let Some(secret) = &body.secret {
        WebhookSecret::parse(secret).map_err(|e| Invalid::new("secret", e))?;
    }
    let created = outbound::create_endpoint(&state, &url, types, body.secret).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(created))
}

/// Every endpoint events are pushed to, configured or made with this API; no secrets.
#[utoipa::path(
    get, path = "/v1/event-endpoints", operation_id = "listEventEndpoints", tag = "platform",
    security(("api_key" = [])),
    responses(
        (status = 200, body = Vec<Endpoint>),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn list_endpoints(
    state: web::Data<Context>,
    _key: ApiKey,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(outbound::endpoints(&state).await?))
}

/// Stop pushing to an endpoint: nothing more is queued or sent to it. Disabling twice is
/// harmless.
#[utoipa::path(
    post, path = "/v1/event-endpoints/{endpoint_id}/disable", operation_id = "disableEventEndpoint", tag = "platform",
    params(("endpoint_id" = Uuid, Path)),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Endpoint),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 404, body = ErrorBody, description = "endpoint_not_found"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn disable_endpoint(
    state: web::Data<Context>,
    _key: ApiKey,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: uuid::Uuid = path.parse().map_err(|_| ApiError::EndpointNotFound)?;
    Ok(HttpResponse::Ok().json(outbound::disable_endpoint(&state, id).await?))
}
