//! What the operations and the background tasks work with: the database, iDenfy, the live hub
//! and its notifier, the counters and the rules. HTTP-only pieces live in `http::Web`.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::idenfy::IdenfyClient;
use crate::live::Hub;
use crate::live::notify::Notifier;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Context {
    /// In a request, the pool of the HTTP worker serving it; in background tasks, the
    /// instance's own. The same holds for `notifier`.
    pub pool: PgPool,
    pub idenfy: IdenfyClient,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub hub: Hub,
    pub notifier: Arc<Notifier>,
    /// Cancelled when the instance begins to stop: streams and long polls answer, background
    /// tasks end.
    pub shutdown: CancellationToken,
}
