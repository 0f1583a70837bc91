//! The counters behind `GET /metrics`, in a prometheus-client registry encoded as Prometheus
//! text. Labels are plain strings named by the layers above; values read only at scrape time
//! (pool, breaker, dropped log lines, open streams) are passed to `render`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::{AttemptStatus, Verdict};

/// The `Content-Type` of what `render` returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The iDenfy circuit breaker's phases, each with its own `facepair_idenfy_breaker_state` series.
pub const BREAKER_PHASES: [&str; 3] = ["closed", "open", "half_open"];

/// Seconds; a Prometheus histogram's upper bounds.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Level = Gauge<u64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key_index: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    endpoint: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    outcome: &'static str,
    fail_reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub logins_created: Counter,
    pub expiry_runs: Counter,
    pub expiry_failures: Counter,
    pub expired_by_clock: Counter,
    pub webhook_rejected_signature: Counter,
    /// With `sse_closed`, the streams open at scrape time; not exposed themselves.
    pub sse_opened: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub sse_closed: Counter,
    pub notify_batches: Counter,
    pub notify_logins: Counter,
    pub notify_failures: Counter,
    /// One per `Verdict::ALL`, in that order: a delivery counts without a lock.
    deliveries: [Counter; Verdict::ALL.len()],
    deliveries_by_key: Family<KeyLabel, Counter>,
    idenfy_calls: Family<CallLabels, Counter>,
    idenfy_latency: Family<OperationLabel, Histogram, fn() -> Histogram>,
    attempts_finished: Family<FinishedLabels, Counter>,
    /// One per `BREAKER_PHASES`, in that order.
    breaker_state: [Level; BREAKER_PHASES.len()],
    log_lines_dropped: Counter,
    sse_streams_open: Level,
    pool_open: Level,
    pool_idle: Level,
    event_pushes: Family<PushLabels, Counter>,
    event_push_latency: Histogram,
    /// Seconds since the oldest event still to be delivered to an enabled endpoint was written.
    pub event_oldest_undelivered: Level,
    pub event_endpoints_disabled: Level,
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let counter = Counter::default();
    registry.register(name, help, counter.clone());
    counter
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    /// Registered in the order /metrics lists them. prometheus-client appends `_total` to
    /// counter names and `.` to help texts.
    fn default() -> Self {
        let mut registry = Registry::default();
        let breaker = Family::<StateLabel, Level>::default();
        registry.register(
            "facepair_idenfy_breaker_state",
            "The iDenfy circuit breaker: 1 for the phase it is in (while open, creations and new codes fail at once with 503)",
            breaker.clone(),
        );
        let breaker_state =
            BREAKER_PHASES.map(|state| breaker.get_or_create_owned(&StateLabel { state }));
        let logins_created = counter(&mut registry, "facepair_logins_created", "Logins created");
        let expiry_runs = counter(
            &mut registry,
            "facepair_expiry_runs",
            "Runs of the expiry task",
        );
        let expiry_failures = counter(
            &mut registry,
            "facepair_expiry_failures",
            "Runs of the expiry task that failed",
        );
        let expired_by_clock = counter(
            &mut registry,
            "facepair_attempts_expired_by_clock",
            "Attempts the expiry task recorded as expired (from the clock, or after asking iDenfy)",
        );
        let webhook_rejected_signature = counter(
            &mut registry,
            "facepair_webhook_signature_rejections",
            "Webhooks refused for a missing or wrong signature",
        );
        let by_verdict = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "facepair_webhook_deliveries",
            "Verified webhook deliveries by verdict",
            by_verdict.clone(),
        );
        let deliveries = Verdict::ALL.map(|verdict| {
            by_verdict.get_or_create_owned(&VerdictLabel {
                verdict: verdict.as_str(),
            })
        });
        let deliveries_by_key = Family::default();
        registry.register(
            "facepair_webhook_deliveries_by_key",
            "Verified webhook deliveries by the index of the signing key that matched",
            deliveries_by_key.clone(),
        );
        let idenfy_calls = Family::default();
        registry.register(
            "facepair_idenfy_calls",
            "Calls to iDenfy by operation and outcome",
            idenfy_calls.clone(),
        );
        let attempts_finished = Family::default();
        registry.register(
            "facepair_attempts_finished",
            "Attempts that ended, by outcome and iDenfy failReason",
            attempts_finished.clone(),
        );
        let idenfy_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "facepair_idenfy_call_duration_seconds",
            "Time to an answer from iDenfy, by operation",
            idenfy_latency.clone(),
        );
        let cache_hits = counter(
            &mut registry,
            "facepair_login_cache_hits",
            "Login reads answered from this instance's cache",
        );
        let cache_misses = counter(
            &mut registry,
            "facepair_login_cache_misses",
            "Login reads that went to PostgreSQL",
        );
        let notify_batches = counter(
            &mut registry,
            "facepair_notify_batches",
            "NOTIFY statements sent to wake every instance's listeners, each for a batch of changed logins",
        );
        let notify_logins = counter(
            &mut registry,
            "facepair_notify_logins",
            "Changed logins announced in those batches",
        );
        let notify_failures = counter(
            &mut registry,
            "facepair_notify_failures",
            "NOTIFY batches that could not be sent on a fresh connection either; their logins go with the next batch",
        );
        let log_lines_dropped = counter(
            &mut registry,
            "facepair_log_lines_dropped",
            "Log lines dropped because the log output stalled or failed",
        );
        let sse_streams_open = Level::default();
        registry.register(
            "facepair_sse_streams_open",
            "Server-Sent Event streams open now",
            sse_streams_open.clone(),
        );
        let pool = Family::<StateLabel, Level>::default();
        registry.register(
            "facepair_db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        let event_pushes = Family::default();
        registry.register(
            "facepair_event_pushes",
            "Requests sent to event endpoints, by endpoint id and outcome (delivered, retry, failed, gone, skipped; put_off: claimed but not sent, its try handed back)",
            event_pushes.clone(),
        );
        let event_push_latency = latency_histogram();
        registry.register(
            "facepair_event_push_duration_seconds",
            "Time to an event endpoint's answer",
            event_push_latency.clone(),
        );
        let event_oldest_undelivered = Level::default();
        registry.register(
            "facepair_event_oldest_undelivered_seconds",
            "Age of the oldest event not yet delivered to an enabled endpoint",
            event_oldest_undelivered.clone(),
        );
        let event_endpoints_disabled = Level::default();
        registry.register(
            "facepair_event_endpoints_disabled",
            "Event endpoints disabled (410 Gone, or by the platform)",
            event_endpoints_disabled.clone(),
        );
        let pool_open = pool.get_or_create_owned(&StateLabel { state: "open" });
        let pool_idle = pool.get_or_create_owned(&StateLabel { state: "idle" });
        Self {
            registry,
            logins_created,
            expiry_runs,
            expiry_failures,
            expired_by_clock,
            webhook_rejected_signature,
            sse_opened: Counter::default(),
            cache_hits,
            cache_misses,
            sse_closed: Counter::default(),
            notify_batches,
            notify_logins,
            notify_failures,
            deliveries,
            deliveries_by_key,
            idenfy_calls,
            idenfy_latency,
            attempts_finished,
            breaker_state,
            log_lines_dropped,
            sse_streams_open,
            pool_open,
            pool_idle,
            event_pushes,
            event_push_latency,
            event_oldest_undelivered,
            event_endpoints_disabled,
        }
    }
}

impl Metrics {
    pub fn delivery(&self, verdict: Verdict, key_index: usize) {
        let i = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0);
        self.deliveries[i].inc();
        self.deliveries_by_key
            .get_or_create(&KeyLabel { key_index })
            .inc();
    }

    /// An attempt ended: by outcome and, for failures, iDenfy's failReason.
    pub fn attempt_finished(&self, outcome: AttemptStatus, fail_reason: Option<&str>) {
        let fail_reason = fail_reason
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        self.attempts_finished
            .get_or_create(&FinishedLabels {
                outcome: outcome.as_str(),
                fail_reason,
            })
            .inc();
    }

    /// A pushed event's try ended: `outcome` is what became of the delivery; `took` is `None`
    /// when nothing was sent.
    pub fn event_push(&self, endpoint: &str, outcome: &'static str, took: Option<Duration>) {
        if let Some(took) = took {
            self.event_push_latency.observe(took.as_secs_f64());
        }
        self.event_pushes
            .get_or_create(&PushLabels {
                endpoint: endpoint.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A call to iDenfy ended after `took`; `outcome` is `ok` or the error's label.
    pub fn idenfy_call(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        self.idenfy_latency
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
        self.idenfy_calls
            .get_or_create(&CallLabels { operation, outcome })
            .inc();
    }

    /// The Prometheus text; `connections` are the request pools' open and idle connections,
    /// `breaker` the iDenfy circuit breaker's phase (one of `BREAKER_PHASES`),
    /// `log_lines_dropped` the count kept by the log output.
    pub fn render(
        &self,
        connections: (u32, usize),
        breaker: &str,
        log_lines_dropped: u64,
    ) -> String {
        for (phase, gauge) in BREAKER_PHASES.iter().zip(&self.breaker_state) {
            gauge.set(u64::from(*phase == breaker));
        }
        // The log output keeps this count; the counter only mirrors it.
        self.log_lines_dropped
            .inner()
            .store(log_lines_dropped, Ordering::Relaxed);
        self.sse_streams_open
            .set(self.sse_opened.get().saturating_sub(self.sse_closed.get()));
        self.pool_open.set(connections.0.into());
        self.pool_idle.set(connections.1 as u64);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)
            .expect("our label sets encode without error into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_their_names_and_labels() {
        let m = Metrics::default();
        m.logins_created.inc();
        m.delivery(Verdict::Applied, 1);
        m.attempt_finished(AttemptStatus::Failed, Some("FACE_MISMATCH"));
        m.idenfy_call("check_status", "circuit_open", Duration::from_millis(30));
        m.sse_opened.inc();
        let text = m.render((4, 3), "open", 2);
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "# HELP facepair_logins_created_total Logins created.",
            "# TYPE facepair_logins_created_total counter",
            "facepair_logins_created_total 1",
            "facepair_idenfy_breaker_state{state=\"closed\"} 0",
            "facepair_idenfy_breaker_state{state=\"open\"} 1",
            "facepair_idenfy_breaker_state{state=\"half_open\"} 0",
            "facepair_webhook_deliveries_total{verdict=\"applied\"} 1",
            "facepair_webhook_deliveries_total{verdict=\"unparseable\"} 0",
            "facepair_webhook_deliveries_by_key_total{key_index=\"1\"} 1",
            "facepair_attempts_finished_total{outcome=\"failed\",fail_reason=\"FACE_MISMATCH\"} 1",
            "facepair_idenfy_calls_total{operation=\"check_status\",outcome=\"circuit_open\"} 1",
            "# TYPE facepair_idenfy_call_duration_seconds histogram",
            "facepair_idenfy_call_duration_seconds_bucket{operation=\"check_status\",le=\"0.025\"} 0",
            "facepair_idenfy_call_duration_seconds_bucket{operation=\"check_status\",le=\"0.05\"} 1",
            "facepair_idenfy_call_duration_seconds_bucket{operation=\"check_status\",le=\"1\"} 1",
            "facepair_idenfy_call_duration_seconds_bucket{operation=\"check_status\",le=\"+Inf\"} 1",
            "facepair_idenfy_call_duration_seconds_count{operation=\"check_status\"} 1",
            "facepair_login_cache_misses_total 0",
            "facepair_log_lines_dropped_total 2",
            "# TYPE facepair_sse_streams_open gauge",
            "facepair_sse_streams_open 1",
            "facepair_db_pool_connections{state=\"open\"} 4",
            "facepair_db_pool_connections{state=\"idle\"} 3",
        ] {
            assert!(lines.contains(&line), "{line} not in\n{text}");
        }
        let buckets = lines
            .iter()
            .filter(|l| l.starts_with("facepair_idenfy_call_duration_seconds_bucket{"))
            .count();
        assert_eq!(buckets, LATENCY_BUCKETS.len() + 1);
    }
}
