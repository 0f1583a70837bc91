//! The route table, wired in one place. Each module exposes its handlers; this file says which
//! path and method reach them, and gives unknown routes, wrong methods and bad bodies the same
//! error body as everything else.

pub mod auth;
pub mod document;
pub mod error;
pub mod events;
pub mod ops;
pub mod pair;
pub mod platform;
pub mod poll;
pub mod request;
pub mod sdk;
pub mod server;
pub mod sse;
pub mod watch;
pub mod webhook;

use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use sqlx::PgPool;

use crate::domain::network::TrustedProxies;
use crate::error::ApiError;

/// The client's address: the peer's, or through trusted proxies their `X-Forwarded-For`
/// (`TrustedProxies::client_address`). Every reader of a request's address asks here.
pub fn client_ip(req: &HttpRequest, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let lines = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.to_str().ok());
    Some(trusted.client_address(peer, lines))
}

/// What only the HTTP side needs, beside the service's `Context`: one per instance, shared by
/// its workers.
pub struct Web {
    pub api_keys: auth::ApiKeys,
    pub watch_blocks: watch::Blocks,
    /// Base URL browsers use, without a trailing slash.
    pub public_url: String,
    pub worker_pools: WorkerPools,
}

/// The pools of this instance's HTTP workers, counted together in the metrics. Their
/// connections belong to the workers' runtimes: they close when the last state holding the
/// pools is dropped, after the workers have stopped.
#[derive(Clone, Default)]
pub struct WorkerPools(Arc<std::sync::Mutex<Vec<PgPool>>>);

impl WorkerPools {
    pub fn add(&self, pool: PgPool) {
        self.0.lock().expect("worker pools").push(pool);
    }

    /// Open and idle connections over all workers.
    pub fn connections(&self) -> (u32, usize) {
        let pools = self.0.lock().expect("worker pools");
        pools.iter().fold((0, 0), |(open, idle), p| {
            (open + p.size(), idle + p.num_idle())
        })
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(16 * 1024)
        .error_handler(json_error);
    let path = web::PathConfig::default().error_handler(|_, _| ApiError::RouteNotFound.into());
    let query = web::QueryConfig::default()
        .error_handler(|e, _| ApiError::MalformedQuery(e.to_string()).into());
    cfg.app_data(json)
        .app_data(path)
        .app_data(query)
        // the platform, with an API key
        .service(resource("/v1/logins", "POST").route(web::post().to(platform::create_login)))
        .service(resource("/v1/logins/{login_id}", "GET").route(web::get().to(platform::get_login)))
        .service(
            resource("/v1/logins/{login_id}/events", "GET").route(web::get().to(platform::events)),
        )
        .service(
            resource("/v1/logins/{login_id}/attempts", "POST")
                .route(web::post().to(platform::new_attempt)),
        )
        .service(
            resource("/v1/logins/{login_id}/cancel", "POST")
                .route(web::post().to(platform::cancel)),
        )
        .service(
            resource("/v1/logins/{login_id}/redeem", "POST")
                .route(web::post().to(platform::redeem)),
        )
        .service(resource("/v1/events", "GET").route(web::get().to(events::feed)))
        .service(
            resource("/v1/event-endpoints", "GET, POST")
                .route(web::get().to(events::list_endpoints))
                .route(web::post().to(events::create_endpoint)),
        )
        .service(
            resource("/v1/event-endpoints/{endpoint_id}/disable", "POST")
                .route(web::post().to(events::disable_endpoint)),
        )
        // browsers, with the watch token, from any origin
        .service(
            watch_resource("/v1/watch/{watch_token}", "GET, OPTIONS")
                .route(web::get().to(watch::get_watch))
                .wrap(watch::cors()),
        )
        .service(
            watch_resource("/v1/watch/{watch_token}/events", "GET, OPTIONS")
                .route(web::get().to(watch::events))
                .wrap(watch::cors()),
        )
        .service(
            watch_resource("/v1/watch/{watch_token}/attempts", "POST, OPTIONS")
                .route(web::post().to(watch::new_attempt))
                .wrap(watch::cors()),
        )
        .service(
            watch_resource("/v1/watch/{watch_token}/cancel", "POST, OPTIONS")
                .route(web::post().to(watch::cancel))
                .wrap(watch::cors()),
        )
        .service(resource("/sdk/v1/facepair-pairing.js", "GET").route(web::get().to(sdk::module)))
        .service(resource("/pair/assets/pair.css", "GET").route(web::get().to(pair::css)))
        .service(resource("/pair/assets/pair.js", "GET").route(web::get().to(pair::js)))
        .service(resource("/pair/{watch_token}", "GET").route(web::get().to(pair::page)))
        // iDenfy
        .service(resource("/v1/webhooks/idenfy", "POST").route(web::post().to(webhook::receive)))
        // ops
        .service(resource("/health/live", "GET").route(web::get().to(ops::live)))
        .service(resource("/health/ready", "GET").route(web::get().to(ops::ready)))
        .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
        .service(resource("/openapi.json", "GET").route(web::get().to(ops::openapi)))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::RouteNotFound)
        }));
}

/// A watch route answering CORS preflights; `watch::cors` adds the headers to every answer.
fn watch_resource(path: &str, allow: &'static str) -> actix_web::Resource {
    resource(path, allow).route(web::method(actix_web::http::Method::OPTIONS).to(watch::preflight))
}

/// A route answering 405 with `Allow` for any other method.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}

fn json_error(e: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    match e {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::Deserialize(e) => ApiError::MalformedJson(e.to_string()),
        other => ApiError::MalformedJson(other.to_string()),
    }
    .into()
}

/// A JSON body whose error names the field that did not fit: actix's `Json` checks the content
/// type and size and parses; serde_path_to_error then reads `T` and knows where it failed
/// (serde's own message says what was expected, not where).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            serde_path_to_error::deserialize(json.await?.into_inner())
                .map(JsonBody)
                .map_err(|e| {
                    ApiError::MismatchedJson {
                        path: e.path().to_string(),
                        reason: e.into_inner().to_string(),
                    }
                    .into()
                })
        })
    }
}
