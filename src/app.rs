//! Application::build binds first (tests use port 0), wires the shared state, the route table
//! and the background tasks, and shuts them down together.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
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
        Self::build_with(settings, pool, None).await
    }

    /// As [`Application::build`], with `pool` reaching PostgreSQL through a transaction pooler
    /// when `session` is given: LISTEN and NOTIFY then connect with `session`, directly.
    pub async fn build_with(
        settings: Settings,
        pool: PgPool,
        session: Option<PgConnectOptions>,
    ) -> std::io::Result<Self> {
        let session = session.unwrap_or_else(|| (*pool.connect_options()).clone());
        let listener = TcpListener::bind(settings.listen)?;
        drop_vanished_clients(&listener)?;
        let address = listener.local_addr()?;
        let public_url = public_url(settings.public_url.as_ref().map(url::Url::as_str), address);
        // the notifier outlives the requests still finishing after `stop`: it stops last
        let notifier_stop = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let (notifier, notifier_task) = Notifier::start(
            session.clone(),
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
            tokio::spawn(service::outbound::run(state.clone(), stop.clone())),
            tokio::spawn(crate::memory::return_freed(
                state.hub.cache.clone(),
                crate::memory::EVERY,
                stop.clone(),
            )),
            tokio::spawn(live::listen(
                state.hub.clone(),
                session.clone(),
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
        let server = http::server::serve(listener, workers, stop.clone(), move || {
            App::new()
                .app_data(web::Data::new(for_worker(
                    &app_state,
                    &shared.worker_pools,
                    &session,
                    per_worker,
                )))
                .app_data(shared.clone())
                .wrap(from_fn(http::request::request_context))
                .configure(http::configure)
        })?;
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

/// The context one HTTP worker's requests see: a pool and a NOTIFY connection of its own, opened
/// lazily on the worker's thread, because a socket is driven by the runtime that opened it and
/// another thread's would cost two wake-ups per round trip. Both end with the worker.
fn for_worker(
    state: &Context,
    pools: &http::WorkerPools,
    session: &PgConnectOptions,
    max_connections: u32,
) -> Context {
    let pool = crate::store::hooks(state.pool.options().clone())
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .connect_lazy_with((*state.pool.connect_options()).clone());
    pools.add(pool.clone());
    let (notifier, sender) = Notifier::start(
        session.clone(),
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

/// How long sent data may stay unacknowledged before the connection is dropped: a client that
/// vanished without closing (a laptop asleep) is let go within [`http::sse::KEEP_ALIVE`] plus
/// this, not after the kernel's 15 minutes of retransmits. Any acknowledgement resets the clock.
pub const UNACKNOWLEDGED_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sets [`UNACKNOWLEDGED_LIMIT`] on the listening socket; every accepted connection
/// inherits it.
fn drop_vanished_clients(listener: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_user_timeout(Some(UNACKNOWLEDGED_LIMIT))
}

/// The base URL browsers are given: `FACEPAIR_PUBLIC_URL`, else the listening address. Only a
/// loopback address is one the browser can be assumed to reach (the sandbox's, on the same
/// machine); any other, `0.0.0.0` above all, is named in one warning at start-up.
fn public_url(configured: Option<&str>, address: SocketAddr) -> String {
    let url = match configured {
        Some(url) => url.to_owned(),
        None => {
            let url = format!("http://{address}");
            if !address.ip().is_loopback() {
                tracing::warn!(
                    listen = %address,
                    "FACEPAIR_PUBLIC_URL is not set, so watch_url and the pairing page send \
                     browsers to {url}; set it to the URL browsers reach facepair by"
                );
            }
            url
        }
    };
    url.trim_end_matches('/').into()
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
    fn public_url_is_the_setting_else_the_listening_address() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let (url, log) = logged(|| public_url(Some("https://facepair.example.com/"), any));
        assert_eq!((&*url, &*log), ("https://facepair.example.com", ""));

        let (url, log) = logged(|| public_url(None, any));
        assert_eq!(&*url, "http://0.0.0.0:8080");
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            log.contains("WARN") && log.contains("FACEPAIR_PUBLIC_URL"),
            "{log}"
        );

        for local in ["127.0.0.1:8080", "[::1]:8080"] {
            let (url, log) = logged(|| public_url(None, local.parse().unwrap()));
            assert_eq!((&*url, &*log), (&*format!("http://{local}"), ""));
        }
    }

    /// What `f` returns, and what it logged.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer({
                let lines = lines.clone();
                move || lines.clone()
            })
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

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
