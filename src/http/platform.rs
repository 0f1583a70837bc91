//! The platform API, authorised by an API key.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::network::NetworkMatch;
use crate::domain::{Lifetime, Locale, ScanRef, Source, UserRef, types};
use crate::error::{ApiError, ErrorBody};
use crate::http::auth::ApiKey;
use crate::http::poll::{WaitQuery, respond_with_state, state_response};
use crate::http::sse::{self, EventsQuery, last_event_id};
use crate::http::{JsonBody, Web};
use crate::service::{self, Audience, Context, LoginState, NewLoginRequest};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLogin {
    /// scanRef of the person's earlier, approved iDenfy verification.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 40, pattern = "^[A-Za-z0-9_-]+$",
             example = "8df398bb-7340-11ee-9aec-0221b1f59063")]
    pub scan_ref: Option<String>,
    /// The platform's own reference for the person; returned on redeem.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub user_ref: Option<String>,
    /// A language tag (BCP 47, e.g. `de`, `pt-BR`): the pairing page's language, and iDenfy's
    /// app's, sent to iDenfy in its own code; a language iDenfy lacks is not sent.
    #[schema(
        max_length = 35,
        pattern = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$",
        example = "de"
    )]
    pub locale: Option<String>,
    /// The platform's name as the person knows it, shown on the pairing page ("Signing in to
    /// ..."); else `FACEPAIR_PLATFORM_NAME`.
    #[schema(
        min_length = 1,
        max_length = 60,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub platform_name: Option<String>,
    /// Where the desktop that asked seems to be, as the platform sees it ("Vilnius,
    /// Lithuania", "office network"): the pairing page shows it and tells the person not to
    /// type the code if that is not where they are. Removed with the identity data.
    #[schema(
        min_length = 1,
        max_length = 80,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub desktop_place: Option<String>,
    /// How long the code lives: 1 to 2,592,000 seconds; default 600.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 2592000)]
    pub lifetime_seconds: Option<serde_json::Number>,
    /// The desktop's IP address (IPv4 or IPv6) as the platform saw it.
    #[schema(schema_with = ip_address)]
    pub client_ip: Option<String>,
    /// The desktop's user agent.
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub user_agent: Option<String>,
    /// An opaque value of the platform's, handed back to the browser with the outcome (the
    /// pairing page's `postMessage` and return URL): tie the outcome to the browser's session
    /// with it. Never identity data: the browser reads it.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub state: Option<String>,
}

fn ip_address() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let address = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    OneOfBuilder::new()
        .item(address(KnownFormat::Ipv4))
        .item(address(KnownFormat::Ipv6))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "The desktop's IP address (IPv4 or IPv6) as the platform saw it.",
        ))
        .build()
        .into()
}

/// JSON Schema counts `600.0` as an integer; so does facepair.
fn whole_seconds(n: &serde_json::Number) -> Result<i64, types::Invalid> {
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| types::Invalid::new("lifetime_seconds", "must be a whole number of seconds"))
}

impl CreateLogin {
    fn validate(self, default_lifetime: Lifetime) -> Result<NewLoginRequest, ApiError> {
        let scan_ref = self
            .scan_ref
            .ok_or_else(|| types::Invalid::new("scan_ref", "is required"))?;
        Ok(NewLoginRequest {
            scan_ref: ScanRef::parse(&scan_ref)?,
            user_ref: self.user_ref.as_deref().map(UserRef::parse).transpose()?,
            locale: self.locale.as_deref().map(Locale::parse).transpose()?,
            lifetime: self
                .lifetime_seconds
                .as_ref()
                .map(|n| whole_seconds(n).and_then(Lifetime::from_seconds))
                .transpose()?
                .unwrap_or(default_lifetime),
            client_ip: self
                .client_ip
                .as_deref()
                .map(types::parse_client_ip)
                .transpose()?,
            user_agent: self
                .user_agent
                .as_deref()
                .map(types::parse_user_agent)
                .transpose()?,
            state: self.state.map(types::parse_state).transpose()?,
            platform_name: self
                .platform_name
                .as_deref()
                .map(|s| types::parse_display_text("platform_name", s, 60))
                .transpose()?,
            desktop_place: self
                .desktop_place
                .as_deref()
                .map(|s| types::parse_display_text("desktop_place", s, 80))
                .transpose()?,
        })
    }
}

/// The new login: its state, and the watch token to hand to the browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginCreated {
    #[serde(flatten)]
    pub login: LoginState,
    /// Lets a browser read this login (no identity data) and follow it live. Shown once.
    pub watch_token: String,
    /// The hosted pairing page for this login.
    pub watch_url: String,
}

/// Who logged in; returned once.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redeemed {
    pub login_id: Uuid,
    pub scan_ref: Option<String>,
    /// iDenfy's clientId of the verified person.
    pub client_id: Option<String>,
    pub user_ref: Option<String>,
    pub attempt_id: Uuid,
    /// When iDenfy's success was recorded.
    pub authenticated_at: DateTime<Utc>,
    /// iDenfy's riskTags, e.g. `UNTRUSTED_ENVIRONMENT`.
    pub risk_tags: Vec<String>,
    /// The phone's IP address as iDenfy reported it.
    pub phone_ip: Option<String>,
    /// The desktop's IP address given at creation.
    pub desktop_ip: Option<String>,
    /// How the phone's network relates to the desktop's: a phishing signal. `different`
    /// means the selfie was taken on another network than the one asking to log in.
    pub network_match: NetworkMatch,
}

fn login_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::LoginNotFound)
}

/// Create a login: check eligibility at iDenfy and issue the first digit code. Only a
/// check-status type of `AUTHENTICATION` proceeds; `IDENTIFICATION` is 409
/// `identification_required`, any other type 409 `face_auth_not_available` naming it.
#[utoipa::path(
    post, path = "/v1/logins", operation_id = "createLogin", tag = "platform",
    request_body = CreateLogin,
    security(("api_key" = [])),
    responses(
        (status = 201, body = LoginCreated, description = "created; show `attempt.digit_string`"),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 404, body = ErrorBody, description = "unknown_scan_ref"),
        (status = 409, body = ErrorBody, description = "identification_required, face_auth_not_available"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
        (status = 422, body = ErrorBody, description = "invalid_field"),
        (status = 429, body = ErrorBody, description = "attempt_budget_exhausted, rate_limited, idenfy_rate_limited (Retry-After)"),
        (status = 502, body = ErrorBody, description = "idenfy_rejected"),
        (status = 503, body = ErrorBody, description = "idenfy_unavailable, database_unavailable"),
        (status = 504, body = ErrorBody, description = "idenfy_timeout"),
    )
)]
pub async fn create_login(
    state: web::Data<Context>,
    shared: web::Data<Web>,
    key: ApiKey,
    JsonBody(body): JsonBody<CreateLogin>,
) -> Result<HttpResponse, ApiError> {
    let request = body.validate(state.settings.code_lifetime)?;
    let (row, watch_token) = service::create_login(&state, &key.0, request).await?;
    let login = LoginState::build(
        &row,
        Utc::now(),
        state.settings.poll_interval_seconds,
        Audience::Platform,
    );
    let created = LoginCreated {
        watch_url: format!("{}/pair/{}", shared.public_url, watch_token.expose()),
        watch_token: watch_token.expose().to_owned(),
        login,
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/logins/{}", row.id)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(created))
}

/// Read a login. Supports `If-None-Match` (304) and long-polling with `?wait=N`.
#[utoipa::path(
    get, path = "/v1/logins/{login_id}", operation_id = "getLogin", tag = "platform",
    params(("login_id" = Uuid, Path), WaitQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = LoginState, headers(("ETag" = String))),
        (status = 304, description = "unchanged since If-None-Match"),
        (status = 400, body = ErrorBody, description = "malformed_query"),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 404, body = ErrorBody, description = "login_not_found"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn get_login(
    state: web::Data<Context>,
    _key: ApiKey,
    path: web::Path<String>,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = login_id(&path)?;
    let no_gate = || std::future::ready(Ok(()));
    respond_with_state(&state, id, &req, query.wait, Audience::Platform, no_gate).await
}

/// Issue a fresh code: after a failed, expired or canceled attempt, or superseding a pending one.
#[utoipa::path(
    post, path = "/v1/logins/{login_id}/attempts", operation_id = "newLoginAttempt", tag = "platform",
    params(("login_id" = Uuid, Path)),
    security(("api_key" = [])),
    responses(
        (status = 201, body = LoginState, description = "new code in `attempt.digit_string`"),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 404, body = ErrorBody, description = "login_not_found"),
        (status = 409, body = ErrorBody, description = "already_approved, already_redeemed, login_canceled, code_being_issued"),
        (status = 429, body = ErrorBody, description = "attempt_budget_exhausted, idenfy_rate_limited"),
        (status = 502, body = ErrorBody, description = "idenfy_rejected"),
        (status = 503, body = ErrorBody, description = "idenfy_unavailable, database_unavailable"),
        (status = 504, body = ErrorBody, description = "idenfy_timeout"),
    )
)]
pub async fn new_attempt(
    state: web::Data<Context>,
    _key: ApiKey,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = service::issue_code(&state, login_id(&path)?, Source::Platform, None).await?;
    Ok(state_response(
        HttpResponse::Created(),
        &state,
        &row,
        Audience::Platform,
    ))
}

/// End the login. A pending code stops working; canceling twice is harmless.
#[utoipa::path(
    post, path = "/v1/logins/{login_id}/cancel", operation_id = "cancelLogin", tag = "platform",
    params(("login_id" = Uuid, Path)),
    security(("api_key" = [])),
    responses(
        (status = 200, body = LoginState),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 404, body = ErrorBody, description = "login_not_found"),
        (status = 409, body = ErrorBody, description = "already_redeemed, login_finished"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn cancel(
    state: web::Data<Context>,
    _key: ApiKey,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = service::cancel(&state, login_id(&path)?).await?;
    Ok(state_response(
        HttpResponse::Ok(),
        &state,
        &row,
        Audience::Platform,
    ))
}

/// Consume an approved login, exactly once, and learn who logged in.
#[utoipa::path(
    post, path = "/v1/logins/{login_id}/redeem", operation_id = "redeemLogin", tag = "platform",
    params(("login_id" = Uuid, Path)),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Redeemed),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 404, body = ErrorBody, description = "login_not_found"),
        (status = 409, body = ErrorBody, description = "already_redeemed, not_approved, approval_expired"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn redeem(
    state: web::Data<Context>,
    _key: ApiKey,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = service::redeem(&state, login_id(&path)?).await?;
    let redeemed = Redeemed {
        login_id: row.id,
        scan_ref: row.scan_ref,
        client_id: row.attempt.client_id,
        user_ref: row.user_ref,
        attempt_id: row.attempt.id,
        authenticated_at: row
            .attempt
            .finished_at
            .or(row.approved_at)
            .unwrap_or(row.created_at),
        risk_tags: row.attempt.risk_tags.unwrap_or_default(),
        phone_ip: row.attempt.phone_ip,
        desktop_ip: row.client_ip,
        network_match: row.attempt.network_match.unwrap_or(NetworkMatch::Unknown),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(redeemed))
}

/// Follow a login live: Server-Sent Events, resumable with `Last-Event-ID`.
#[utoipa::path(
    get, path = "/v1/logins/{login_id}/events", operation_id = "streamLoginEvents", tag = "platform",
    params(("login_id" = Uuid, Path), EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = sse::LAST_EVENT_ID)),
    security(("api_key" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = sse::description()),
        (status = 204, description = sse::CAUGHT_UP),
        (status = 400, body = ErrorBody, description = "malformed_query"),
        (status = 401, body = ErrorBody, description = "unauthorized"),
        (status = 404, body = ErrorBody, description = "login_not_found"),
        (status = 503, body = ErrorBody, description = "database_unavailable"),
    )
)]
pub async fn events(
    state: web::Data<Context>,
    _key: ApiKey,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = login_id(&path)?;
    sse::open(&state, id, Audience::Platform, last_event_id(&req, &query)).await
}
