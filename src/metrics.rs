//! Counters for `GET /metrics`, in Prometheus' text format. Plain atomics: nothing on a hot
//! path takes a lock except the labelled iDenfy call counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::idenfy::IdenfyError;
use crate::service::webhook::Verdict;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub logins_created: Counter,
    pub expiry_runs: Counter,
    pub expiry_failures: Counter,
    pub expired_by_clock: Counter,
    pub webhook_rejected_signature: Counter,
    pub sse_opened: Counter,
    pub sse_closed: Counter,
    deliveries: [Counter; Verdict::ALL.len()],
    deliveries_by_key: Mutex<BTreeMap<usize, u64>>,
    idenfy_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    pub fn delivery(&self, verdict: Verdict, key_index: usize) {
        let i = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0);
        self.deliveries[i].inc();
        *self
            .deliveries_by_key
            .lock()
            .unwrap()
            .entry(key_index)
            .or_default() += 1;
    }

    pub fn idenfy_call<T>(&self, operation: &'static str, result: &Result<T, IdenfyError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(IdenfyError::NotFound) => "not_found",
            Err(IdenfyError::Unauthorized { .. }) => "unauthorized",
            Err(IdenfyError::PaymentRequired { .. }) => "payment_required",
            Err(IdenfyError::RateLimited { .. }) => "rate_limited",
            Err(IdenfyError::Rejected { .. }) => "rejected",
            Err(IdenfyError::Server { .. }) => "server_error",
            Err(IdenfyError::Timeout) => "timeout",
            Err(IdenfyError::Unreachable(_)) => "unreachable",
            Err(IdenfyError::BadResponse(_)) => "bad_response",
        };
        *self
            .idenfy_calls
            .lock()
            .unwrap()
            .entry((operation, outcome))
            .or_default() += 1;
    }

    pub fn render(&self, pool: &sqlx::PgPool) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "facepair_logins_created_total",
            "Logins created.",
            self.logins_created.get(),
        );
        counter(
            "facepair_expiry_runs_total",
            "Runs of the expiry task.",
            self.expiry_runs.get(),
        );
        counter(
            "facepair_expiry_failures_total",
            "Runs of the expiry task that failed.",
            self.expiry_failures.get(),
        );
        counter(
            "facepair_attempts_expired_by_clock_total",
            "Attempts recorded as expired by facepair's clock.",
            self.expired_by_clock.get(),
        );
        counter(
            "facepair_webhook_signature_rejections_total",
            "Webhooks refused for a missing or wrong signature.",
            self.webhook_rejected_signature.get(),
        );
        let _ = writeln!(
            out,
            "# HELP facepair_webhook_deliveries_total Verified webhook deliveries by verdict.\n# TYPE facepair_webhook_deliveries_total counter"
        );
        for (verdict, c) in Verdict::ALL.iter().zip(&self.deliveries) {
            let _ = writeln!(
                out,
                "facepair_webhook_deliveries_total{{verdict=\"{}\"}} {}",
                verdict.as_str(),
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP facepair_webhook_deliveries_by_key_total Verified webhook deliveries by the index of the signing key that matched.\n# TYPE facepair_webhook_deliveries_by_key_total counter"
        );
        for (key, n) in self.deliveries_by_key.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "facepair_webhook_deliveries_by_key_total{{key_index=\"{key}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP facepair_idenfy_calls_total Calls to iDenfy by operation and outcome.\n# TYPE facepair_idenfy_calls_total counter"
        );
        for ((op, outcome), n) in self.idenfy_calls.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "facepair_idenfy_calls_total{{operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP facepair_db_pool_connections Database pool connections by state.\n# TYPE facepair_db_pool_connections gauge\nfacepair_db_pool_connections{{state=\"open\"}} {}\nfacepair_db_pool_connections{{state=\"idle\"}} {}",
            pool.size(),
            pool.num_idle()
        );
        out
    }
}
