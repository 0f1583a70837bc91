//! The one API error type. Every failure a client can see maps to a status, a stable
//! snake_case code and a message; 5xx bodies say nothing internal, the log has the cause.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Invalid;
use crate::idenfy::IdenfyError;
pub use crate::telemetry::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// Valid JSON, but a field has the wrong type, is missing or is unknown; `path` names it
    /// (`.` for the body itself, `tags[1]` inside a list).
    #[error("{}: {reason}", json_place(.path))]
    MismatchedJson { path: String, reason: String },
    #[error("the query string is invalid: {0}")]
    MalformedQuery(String),
    #[error("{0}")]
    InvalidField(#[from] Invalid),
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("`after` must be a cursor this feed gave (a whole number of 0 or more)")]
    InvalidCursor,
    #[error("`types` names an unknown event type: {0:?}")]
    InvalidEventType(String),
    #[error("`limit` must be a whole number from 1 to 1000")]
    InvalidLimit,
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    InvalidSignature(&'static str),
    #[error("no login with this id")]
    LoginNotFound,
    #[error("no login for this watch token")]
    WatchTokenNotFound,
    #[error("no event endpoint with this id")]
    EndpointNotFound,
    #[error("an event endpoint with this URL exists already")]
    EndpointExists,
    #[error("{max} event endpoints are enabled, the most the API adds to; disable one first")]
    TooManyEndpoints { max: i64 },
    #[error("no such route")]
    RouteNotFound,
    #[error("this route does not take that method")]
    MethodNotAllowed { allow: &'static str },
    #[error("iDenfy does not know this scan_ref")]
    UnknownScanRef,
    #[error("this person must complete a full identity verification before face authentication")]
    IdentificationRequired,
    #[error(
        "face authentication is not available for this person: iDenfy's check-status answered type {kind:?}"
    )]
    FaceAuthNotAvailable { kind: String },
    #[error("the login was already redeemed")]
    AlreadyRedeemed,
    #[error("the login is not approved (status: {status})")]
    NotApproved { status: &'static str },
    #[error("the login is already approved; redeem it instead of asking for a new code")]
    AlreadyApproved,
    #[error("the login was canceled")]
    LoginCanceled,
    #[error("a new code is being issued for this login; wait for it")]
    CodeBeingIssued,
    #[error("the approval was not redeemed in time; ask the person to log in again")]
    ApprovalExpired,
    #[error("the login has ended (status: {status})")]
    LoginFinished { status: &'static str },
    #[error("{message}")]
    BudgetExhausted {
        message: &'static str,
        budget: &'static str,
        retry_after: Option<u64>,
    },
    #[error("too many requests ({limit}); wait for Retry-After")]
    RateLimited {
        limit: &'static str,
        retry_after: u64,
    },
    #[error("polling faster than poll_interval_seconds; wait for Retry-After")]
    SlowDown { retry_after: u64 },
    #[error("iDenfy is rate-limiting facepair; try again later")]
    IdenfyRateLimited { retry_after: u64 },
    #[error("iDenfy is unavailable")]
    IdenfyUnavailable(#[source] IdenfyError),
    #[error("iDenfy did not answer in time")]
    IdenfyTimeout(#[source] IdenfyError),
    #[error("iDenfy refused the request")]
    IdenfyRejected(#[source] IdenfyError),
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case; switch on this, not on the message.
    pub code: &'static str,
    pub message: String,
    /// Echoes the `x-request-id` response header; quote it when asking for help.
    pub request_id: String,
    /// For `invalid_field`: which field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// For `attempt_budget_exhausted`: `login`, `scan_ref_hourly` (codes asked from one
    /// address) or `scan_ref_hourly_total` (from all addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<&'static str>,
    /// For `rate_limited`: `logins_per_api_key`, `logins_per_client_ip`, `watch_misses_per_ip`,
    /// `watch_codes_per_token` or `watch_codes_per_ip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
}

/// Every code a client may see. [`Code::facts`] is the one place its string, its HTTP status
/// and its meaning are written; the OpenAPI document comes from it, and a test holds the
/// README's table to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedJson,
    MalformedQuery,
    InvalidCursor,
    InvalidEventType,
    InvalidLimit,
    InvalidField,
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthorized,
    InvalidSignature,
    LoginNotFound,
    WatchTokenNotFound,
    EndpointNotFound,
    EndpointExists,
    TooManyEndpoints,
    RouteNotFound,
    MethodNotAllowed,
    UnknownScanRef,
    IdentificationRequired,
    FaceAuthNotAvailable,
    AlreadyRedeemed,
    NotApproved,
    AlreadyApproved,
    LoginCanceled,
    LoginFinished,
    CodeBeingIssued,
    ApprovalExpired,
    AttemptBudgetExhausted,
    RateLimited,
    SlowDown,
    IdenfyRateLimited,
    IdenfyUnavailable,
    IdenfyTimeout,
    IdenfyRejected,
    DatabaseUnavailable,
    InternalError,
}

impl Code {
    pub const ALL: [Code; 36] = [
        Code::MalformedJson,
        Code::MalformedQuery,
        Code::InvalidCursor,
        Code::InvalidEventType,
        Code::InvalidLimit,
        Code::InvalidField,
        Code::UnsupportedMediaType,
        Code::PayloadTooLarge,
        Code::Unauthorized,
        Code::InvalidSignature,
        Code::LoginNotFound,
        Code::WatchTokenNotFound,
        Code::EndpointNotFound,
        Code::EndpointExists,
        Code::TooManyEndpoints,
        Code::RouteNotFound,
        Code::MethodNotAllowed,
        Code::UnknownScanRef,
        Code::IdentificationRequired,
        Code::FaceAuthNotAvailable,
        Code::AlreadyRedeemed,
        Code::NotApproved,
        Code::AlreadyApproved,
        Code::LoginCanceled,
        Code::LoginFinished,
        Code::CodeBeingIssued,
        Code::ApprovalExpired,
        Code::AttemptBudgetExhausted,
        Code::RateLimited,
        Code::SlowDown,
        Code::IdenfyRateLimited,
        Code::IdenfyUnavailable,
        Code::IdenfyTimeout,
        Code::IdenfyRejected,
        Code::DatabaseUnavailable,
        Code::InternalError,
    ];

    /// The code's string, HTTP status and meaning.
    pub fn facts(self) -> (&'static str, u16, &'static str) {
        match self {
            Code::MalformedJson => (
                "malformed_json",
                400,
                "the body is not valid JSON, or a field has the wrong type or is unknown; the message names the field",
            ),
            Code::MalformedQuery => (
                "malformed_query",
                400,
                "the query string has wrongly typed parameters",
            ),
            Code::InvalidCursor => (
                "invalid_cursor",
                400,
                "the events feed's `after` is not a cursor it gave",
            ),
            Code::InvalidEventType => (
                "invalid_event_type",
                400,
                "the events feed's `types` names an unknown event type; the message names it",
            ),
            Code::InvalidLimit => (
                "invalid_limit",
                400,
                "the events feed's `limit` is not a whole number from 1 to 1000",
            ),
            Code::InvalidField => (
                "invalid_field",
                422,
                "a field failed validation; `field` names it",
            ),
            Code::UnsupportedMediaType => (
                "unsupported_media_type",
                415,
                "the body must be application/json",
            ),
            Code::PayloadTooLarge => ("payload_too_large", 413, "the body exceeds the size limit"),
            Code::Unauthorized => (
                "unauthorized",
                401,
                "missing or invalid `Authorization: Bearer` API key",
            ),
            Code::InvalidSignature => (
                "invalid_signature",
                401,
                "webhook signature missing, malformed or matching no signing key",
            ),
            Code::LoginNotFound => ("login_not_found", 404, "no login with this id"),
            Code::WatchTokenNotFound => (
                "watch_token_not_found",
                404,
                "no login for this watch token",
            ),
            Code::EndpointNotFound => ("endpoint_not_found", 404, "no event endpoint with this id"),
            Code::EndpointExists => (
                "endpoint_exists",
                409,
                "an event endpoint with this URL exists already",
            ),
            Code::TooManyEndpoints => (
                "too_many_endpoints",
                409,
                "as many event endpoints are enabled as the API adds to; disable one first",
            ),
            Code::RouteNotFound => ("route_not_found", 404, "no such route"),
            Code::MethodNotAllowed => (
                "method_not_allowed",
                405,
                "the route exists but not with this method",
            ),
            Code::UnknownScanRef => ("unknown_scan_ref", 404, "iDenfy does not know the scan_ref"),
            Code::IdentificationRequired => (
                "identification_required",
                409,
                "the person must complete a full identity verification first",
            ),
            Code::FaceAuthNotAvailable => (
                "face_auth_not_available",
                409,
                "iDenfy's check-status answered a type other than AUTHENTICATION (e.g. ENROLLMENT); the message names it",
            ),
            Code::AlreadyRedeemed => ("already_redeemed", 409, "the login was redeemed before"),
            Code::NotApproved => ("not_approved", 409, "redeem before an attempt succeeded"),
            Code::AlreadyApproved => (
                "already_approved",
                409,
                "a new code was asked for an approved login",
            ),
            Code::LoginCanceled => (
                "login_canceled",
                409,
                "the login was canceled by the platform",
            ),
            Code::LoginFinished => ("login_finished", 409, "the login can no longer change"),
            Code::CodeBeingIssued => (
                "code_being_issued",
                409,
                "another request is issuing a code for this login; its answer carries the code",
            ),
            Code::ApprovalExpired => (
                "approval_expired",
                409,
                "redeem after the approval expired (FACEPAIR_APPROVAL_TTL_SECONDS)",
            ),
            Code::AttemptBudgetExhausted => (
                "attempt_budget_exhausted",
                429,
                "the login's codes, or the scan_ref's hourly codes from this address or from all, are spent; `budget` names which",
            ),
            Code::RateLimited => (
                "rate_limited",
                429,
                "an abuse limit was hit; `limit` names it; Retry-After",
            ),
            Code::SlowDown => ("slow_down", 429, "polled faster than poll_interval_seconds"),
            Code::IdenfyRateLimited => (
                "idenfy_rate_limited",
                429,
                "iDenfy is rate-limiting facepair",
            ),
            Code::IdenfyUnavailable => (
                "idenfy_unavailable",
                503,
                "iDenfy could not be reached or failed",
            ),
            Code::IdenfyTimeout => ("idenfy_timeout", 504, "iDenfy did not answer in time"),
            Code::IdenfyRejected => (
                "idenfy_rejected",
                502,
                "iDenfy refused facepair's request (credentials, funds, account or request)",
            ),
            Code::DatabaseUnavailable => (
                "database_unavailable",
                503,
                "PostgreSQL is unreachable or overloaded",
            ),
            Code::InternalError => ("internal_error", 500, "a bug; the log has the cause"),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.facts().0
    }

    pub fn status(self) -> u16 {
        self.facts().1
    }
}

impl ApiError {
    pub fn kind(&self) -> Code {
        match self {
            Self::MalformedJson(_) | Self::MismatchedJson { .. } => Code::MalformedJson,
            Self::MalformedQuery(_) => Code::MalformedQuery,
            Self::InvalidCursor => Code::InvalidCursor,
            Self::InvalidEventType(_) => Code::InvalidEventType,
            Self::InvalidLimit => Code::InvalidLimit,
            Self::InvalidField(_) => Code::InvalidField,
            Self::UnsupportedMediaType => Code::UnsupportedMediaType,
            Self::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            Self::Unauthorized => Code::Unauthorized,
            Self::InvalidSignature(_) => Code::InvalidSignature,
            Self::LoginNotFound => Code::LoginNotFound,
            Self::WatchTokenNotFound => Code::WatchTokenNotFound,
            Self::EndpointNotFound => Code::EndpointNotFound,
            Self::EndpointExists => Code::EndpointExists,
            Self::TooManyEndpoints { .. } => Code::TooManyEndpoints,
            Self::RouteNotFound => Code::RouteNotFound,
            Self::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            Self::UnknownScanRef => Code::UnknownScanRef,
            Self::IdentificationRequired => Code::IdentificationRequired,
            Self::FaceAuthNotAvailable { .. } => Code::FaceAuthNotAvailable,
            Self::AlreadyRedeemed => Code::AlreadyRedeemed,
            Self::NotApproved { .. } => Code::NotApproved,
            Self::AlreadyApproved => Code::AlreadyApproved,
            Self::LoginCanceled => Code::LoginCanceled,
            Self::CodeBeingIssued => Code::CodeBeingIssued,
            Self::ApprovalExpired => Code::ApprovalExpired,
            Self::LoginFinished { .. } => Code::LoginFinished,
            Self::BudgetExhausted { .. } => Code::AttemptBudgetExhausted,
            Self::RateLimited { .. } => Code::RateLimited,
            Self::SlowDown { .. } => Code::SlowDown,
            Self::IdenfyRateLimited { .. } => Code::IdenfyRateLimited,
            Self::IdenfyUnavailable(_) => Code::IdenfyUnavailable,
            Self::IdenfyTimeout(_) => Code::IdenfyTimeout,
            Self::IdenfyRejected(_) => Code::IdenfyRejected,
            Self::DatabaseUnavailable(_) => Code::DatabaseUnavailable,
            Self::Internal(_) => Code::InternalError,
        }
    }

    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    pub fn status(&self) -> u16 {
        self.kind().status()
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::SlowDown { retry_after } | Self::IdenfyRateLimited { retry_after } => {
                Some(*retry_after)
            }
            Self::BudgetExhausted { retry_after, .. } => *retry_after,
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::DatabaseUnavailable(_) | Self::IdenfyUnavailable(_) => Some(2),
            _ => None,
        }
    }

    /// What the client may read: the message for 4xx, a fixed sentence for 5xx.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error; quote the request_id when reporting it".into(),
            Self::DatabaseUnavailable(_) => "the database is unavailable; retry shortly".into(),
            Self::IdenfyRejected(e) => match e {
                IdenfyError::PaymentRequired { .. } => {
                    "iDenfy reports no funds or an exceeded limit on facepair's account".into()
                }
                IdenfyError::Unauthorized { .. } => {
                    "iDenfy refused facepair's API credentials or account".into()
                }
                IdenfyError::BadResponse(_) => "iDenfy answered something unreadable".into(),
                _ => "iDenfy refused the request".into(),
            },
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::DatabaseUnavailable(e),
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("57P") || c == "25006") =>
            {
                // shutting down, or read-only (a failover left the connection on a standby)
                crate::store::discard_open_connections();
                Self::DatabaseUnavailable(e)
            }
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| {
                    // connection exceptions, a statement canceled by an operator or a timeout,
                    // too many connections, a database not accepting connections (55000:
                    // facepair's SQL raises it nowhere else) and a lock wait past lock_timeout
                    c.starts_with("08")
                        || c == "57014"
                        || c == "53300"
                        || c == "55000"
                        || c == "55P03"
                }) =>
            {
                Self::DatabaseUnavailable(e)
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<IdenfyError> for ApiError {
    fn from(e: IdenfyError) -> Self {
        match e {
            IdenfyError::NotFound => Self::UnknownScanRef,
            IdenfyError::RateLimited { retry_after } => Self::IdenfyRateLimited {
                retry_after: retry_after.unwrap_or(30).clamp(1, 3600),
            },
            IdenfyError::Timeout => Self::IdenfyTimeout(e),
            IdenfyError::Server { .. } | IdenfyError::Unreachable(_) | IdenfyError::CircuitOpen => {
                Self::IdenfyUnavailable(e)
            }
            IdenfyError::Unauthorized { .. }
            | IdenfyError::PaymentRequired { .. }
            | IdenfyError::Rejected { .. }
            | IdenfyError::BadResponse(_) => Self::IdenfyRejected(e),
        }
    }
}

fn json_place(path: &str) -> String {
    match path {
        "." => "the request body".to_owned(),
        field => format!("the request body's field `{field}`"),
    }
}
