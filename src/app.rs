//! Application::build binds first (tests use port 0), wires the shared state, the route table
//! and the background tasks, and shuts them down together.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http;
use crate::http::auth::ApiKeys;
use crate::idenfy::IdenfyClient;
use crate::live::notify::{GATHER, Notifier};
use crate::live::{self, Hub};
use crate::metrics::Metrics;
use crate::service::{self, Context};

pub struct Application {
    port: u16,
    server: Server,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    notifier_stop: CancellationToken,
    notifier_task: JoinHandle<()>,
    state: Context,
}

impl Application {
    pub async fn build(settings: Settings, pool: PgPool) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.listen)?;
        drop_vanished_clients(&listener)?;
        let address = listener.local_addr()?;
        let public_url = settings
            .public_url
            .as_ref()
            .map_or_else(|| format!("http://{address}"), |u| u.to_string())
            .trim_end_matches('/')
            .to_owned();
        // the notifier outlives the requests still finishing after `stop`: it stops last
        let notifier_stop = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let (notifier, notifier_task) = Notifier::start(
            (*pool.connect_options()).clone(),
            GATHER,
            shutdown.clone(),
            metrics.clone(),
            notifier_stop.clone(),
        );
        let shared = web::Data::new(http::Web {
            api_keys: ApiKeys::new(&settings.api_keys),
            watch_blocks: Default::default(),
            public_url,
            worker_pools: Default::default(),
        });
        let state = Context {
            idenfy: IdenfyClient::new(
                settings.idenfy_base_url.as_str(),
                settings.idenfy_api_key.clone(),
                settings.idenfy_api_secret.clone(),
                settings.idenfy_timeout,
            ),
            metrics,
            hub: Hub::default(),
            notifier,
            settings: Arc::new(settings),
            pool,
            shutdown,
        };

        let stop = state.shutdown.clone();
        let tasks = vec![
            tokio::spawn(live::backstop(
                state.hub.clone(),
                state.pool.clone(),
                std::time::Duration::from_secs(5),
                stop.clone(),
            )),
            tokio::spawn(service::expiry::run(state.clone(), stop.clone())),
            tokio::spawn(crate::memory::return_freed(
                state.hub.cache.clone(),
                crate::memory::EVERY,
                stop.clone(),
            )),
            tokio::spawn(live::listen(
                state.hub.clone(),
                (*state.pool.connect_options()).clone(),
                stop.clone(),
            )),
        ];

        let mut tasks = tasks;
        if let Some(every) = state.settings.retention.every {
            let r = state.settings.retention;
            tasks.push(tokio::spawn(crate::ops::retention::run(
                state.pool.clone(),
                every,
                r.identity,
                r.delivery_bodies,
                stop.clone(),
            )));
        }
        let app_state = state.clone();
        let workers = state
            .settings
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let per_worker = app_state
            .pool
            .options()
            .get_max_connections()
            .div_ceil(workers as u32);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(for_worker(
                    &app_state,
                    &shared.worker_pools,
                    per_worker,
                )))
                .app_data(shared.clone())
                .wrap(from_fn(http::request::request_context))
                .configure(http::configure)
        })
        .workers(workers)
        // a client that closes its side of the connection has left: its request stops being
        // served at once (a Server-Sent Events stream or a long poll would otherwise hold
        // its memory until a write to it failed, up to two keep-alive intervals)
        .h1_allow_half_closed(false)
        .listen(listener)?
        .shutdown_timeout(10)
        .disable_signals()
        .run();
        tracing::info!(%address, "facepair listening");
        Ok(Self {
            port: address.port(),
            server,
            stop,
            tasks,
            notifier_stop,
            notifier_task: tokio::spawn(notifier_task),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &Context {
        &self.state
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// A token that stops this instance gracefully when cancelled.
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Serves until SIGINT/SIGTERM, the token of [`Application::stopper`] cancelled, or
    /// `handle().stop()`: open streams end with a reconnect hint, in-flight requests finish,
    /// then the background tasks stop.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let stop = self.stop.clone();
        let signals = tokio::spawn(async move {
            tokio::select! {
                _ = shutdown_signal() => tracing::info!("shutting down"),
                _ = stop.cancelled() => {}
            }
            stop.cancel();
            handle.stop(true).await;
        });
        let result = self.server.await;
        self.stop.cancel();
        let _ = signals.await;
        for task in self.tasks {
            let _ = task.await;
        }
        self.notifier_stop.cancel();
        let _ = self.notifier_task.await;
        self.state.pool.close().await;
        result
    }
}

/// The context one HTTP worker's requests see: the same, but with a pool of the worker's own.
/// This runs on the worker's thread, and its pool opens connections there when a request
/// first needs them: a socket is driven by the runtime that opened it, and a connection opened
/// on another thread would cost two thread wake-ups on every round trip.
///
/// The worker's NOTIFYs go out on a connection of its own for the same reason. Both end with
/// the worker, after its last request was answered.
fn for_worker(state: &Context, pools: &http::WorkerPools, max_connections: u32) -> Context {
    let connect = (*state.pool.connect_options()).clone();
    let pool = crate::store::hooks(state.pool.options().clone())
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .connect_lazy_with(connect.clone());
    pools.add(pool.clone());
    let (notifier, sender) = Notifier::start(
        connect,
        GATHER,
        state.shutdown.clone(),
        state.metrics.clone(),
        CancellationToken::new(),
    );
    actix_web::rt::spawn(sender);
    Context {
        pool,
        notifier,
        ..state.clone()
    }
}

/// How long data sent to a client may stay unacknowledged before its connection is dropped.
///
/// A client that closes its connection is noticed at once (the server serves no half-closed
/// connections). One that vanishes without closing it, a laptop put to sleep or a network
/// gone, sends nothing more: its stream's next keep-alive comment goes unacknowledged, and
/// the kernel would retransmit it for about 15 minutes before giving up (`tcp_retries2`).
/// With this, the connection is dropped once a write has waited this long for an
/// acknowledgement: a vanished client's stream ends within [`live::sse::KEEP_ALIVE`] plus
/// this. No client that still answers is affected: any acknowledgement resets the clock.
pub const UNACKNOWLEDGED_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sets [`UNACKNOWLEDGED_LIMIT`] on the listening socket; every accepted connection
/// inherits it.
fn drop_vanished_clients(listener: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_user_timeout(Some(UNACKNOWLEDGED_LIMIT))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_inherit_the_unacknowledged_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        drop_vanished_clients(&listener).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(
            socket2::SockRef::from(&accepted)
                .tcp_user_timeout()
                .unwrap(),
            Some(UNACKNOWLEDGED_LIMIT)
        );
    }
}
