//! The request's context: its id (the caller's `x-request-id` if it is sane), echoed in the
//! response and carried by every line logged while it is served, and its access line.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;

use crate::error::{ApiError, error_chain};
use crate::service::Context;
use crate::store::probe::why_pool_timed_out;
use crate::telemetry::{self, RequestId, write_access};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (the caller's `x-request-id` if it is sane), which every line
/// logged while it is served carries, an `x-request-id` response header and one access log
/// line.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| RequestId::given(v.as_bytes()))
        .unwrap_or_else(RequestId::generate);
    let method = req.method().clone();
    ROUTES.with(|routes| {
        routes.get_or_init(|| req.resource_map().clone());
    });
    let mut abandoned = Abandoned {
        uri: Some(req.uri().clone()),
        id: id.as_str(),
        method: method.as_str(),
        started,
    };
    let result = telemetry::in_request(id, async {
        let result = next.call(req).await;
        if let Ok(res) = &result {
            log_failure(res);
        }
        result
    })
    .await;
    abandoned.uri = None;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    // read after routing, which recorded the resource it chose: before, it would walk the
    // routes a second time
    let (status, route) = match &result {
        Ok(res) => (res.status().as_u16(), res.request().match_pattern()),
        Err(e) => (e.as_response_error().status_code().as_u16(), None),
    };
    if cfg!(debug_assertions)
        && let (Ok(res), Some(route)) = (&result, route.as_deref())
        && let Some(error) = res
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>())
    {
        contract::check(method.as_str(), route, status, error.code());
    }
    let route = route.as_deref().unwrap_or("unmatched");
    write_access(
        id.as_str(),
        method.as_str(),
        route,
        status,
        latency_ms,
        "request",
    );
    let mut res = result?;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    Ok(res)
}

/// The log line of a request that failed on facepair's side (5xx, or iDenfy rate-limiting
/// facepair), with the error's causes. When the pool timed out, it says why no connection
/// opened (refused, and where), which the pool itself does not report: that takes a
/// connection attempt, made after the answer has gone, so the 503 waits for nothing.
fn log_failure<B>(res: &ServiceResponse<B>) {
    let Some(e) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
    else {
        return;
    };
    if e.status() < 500 && !matches!(e, ApiError::IdenfyRateLimited { .. }) {
        return;
    }
    let (code, error) = (e.code(), error_chain(e));
    if let ApiError::DatabaseUnavailable(sqlx::Error::PoolTimedOut) = e
        && let Some(state) = res.request().app_data::<web::Data<Context>>()
        && let Some(request) = telemetry::current_id()
    {
        let pool = state.pool.clone();
        actix_web::rt::spawn(telemetry::in_request(request, async move {
            let why = why_pool_timed_out(&pool).await;
            tracing::error!(code, error = %format!("{error}; {why}"), "request failed");
        }));
        return;
    }
    tracing::error!(code, error = %error, "request failed");
}

/// The access line of a request dropped before it was answered, because its client closed the
/// connection (the server serves no half-closed connections): status 499, as nginx logs it.
/// The request's own work stops at the await it was in; what it committed stays committed.
struct Abandoned<'a> {
    /// Until the request is answered. (The request itself cannot be kept: routing needs it
    /// unshared.)
    uri: Option<actix_web::http::Uri>,
    id: &'a str,
    method: &'a str,
    started: Instant,
}

thread_local! {
    /// The worker's routes, to name an abandoned request's route as the access line does.
    static ROUTES: std::cell::OnceCell<actix_web::dev::ResourceMap> = const { std::cell::OnceCell::new() };
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(uri) = self.uri.take() {
            let route = ROUTES.with(|routes| routes.get()?.match_pattern(uri.path()));
            let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            let route = route.as_deref().unwrap_or("unmatched");
            write_access(
                self.id,
                self.method,
                route,
                499,
                latency_ms,
                "client closed the connection",
            );
        }
    }
}

/// In debug builds (the test suite), every error answered is checked against the OpenAPI
/// document: its status must be listed for the operation, with its code named there.
pub mod contract {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static UNDOCUMENTED: AtomicU64 = AtomicU64::new(0);

    /// Error answers whose status or code the document does not list for their operation.
    pub fn undocumented() -> u64 {
        UNDOCUMENTED.load(Ordering::Relaxed)
    }

    /// (method, path) -> [(status, description)]
    type Responses = HashMap<(String, String), Vec<(u16, String)>>;

    fn responses() -> &'static Responses {
        static DOCUMENT: OnceLock<Responses> = OnceLock::new();
        DOCUMENT.get_or_init(|| {
            let doc = crate::http::ops::ApiDoc::document();
            let mut out = Responses::new();
            for (path, item) in doc["paths"].as_object().into_iter().flatten() {
                for (method, operation) in item.as_object().into_iter().flatten() {
                    let listed = operation["responses"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(status, r)| {
                            Some((status.parse().ok()?, r["description"].as_str()?.to_owned()))
                        })
                        .collect();
                    out.insert((method.to_uppercase(), path.clone()), listed);
                }
            }
            out
        })
    }

    pub fn check(method: &str, route: &str, status: u16, code: &str) {
        // any route answers 405 to a method it does not take
        if code == "method_not_allowed" {
            return;
        }
        let listed = responses().get(&(method.to_owned(), route.to_owned()));
        let documented = listed.is_some_and(|listed| {
            listed
                .iter()
                .any(|(s, description)| *s == status && description.contains(code))
        });
        if !documented {
            UNDOCUMENTED.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                method,
                route,
                status,
                code,
                "an error answer the OpenAPI document does not list for its operation"
            );
        }
    }
}
