//! The API's errors as HTTP answers: the status and code from `error::Code`, `Retry-After`,
//! and one JSON body. The request's log line for a failure is written by
//! `request::request_context`, which may need to ask the database why it failed.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::error::{ApiError, ErrorBody, ErrorDetail};

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Self::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, *allow));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.public_message(),
                request_id: crate::telemetry::current_request_id(),
                field: match self {
                    Self::InvalidField(i) => Some(i.field),
                    _ => None,
                },
                budget: match self {
                    Self::BudgetExhausted { budget, .. } => Some(budget),
                    _ => None,
                },
                limit: match self {
                    Self::RateLimited { limit, .. } => Some(limit),
                    _ => None,
                },
            },
        })
    }
}
