//! Counters for `GET /metrics`, in Prometheus' text format. Plain atomics: nothing on a hot
//! path takes a lock except the labelled iDenfy call counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::Verdict;

/// The iDenfy circuit breaker's phases, each with its own `facepair_idenfy_breaker_state` series.
pub const BREAKER_PHASES: [&str; 3] = ["closed", "open", "half_open"];

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

/// Seconds; a Prometheus histogram's upper bounds.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in LATENCY_BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
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
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub sse_closed: Counter,
    pub notify_batches: Counter,
    pub notify_logins: Counter,
    pub notify_failures: Counter,
    deliveries: [Counter; Verdict::ALL.len()],
    deliveries_by_key: Mutex<BTreeMap<usize, u64>>,
    idenfy_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    idenfy_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    attempts_finished: Mutex<BTreeMap<(&'static str, String), u64>>,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
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

    /// An attempt ended: by outcome and, for failures, iDenfy's failReason.
    pub fn attempt_finished(
        &self,
        outcome: crate::domain::AttemptStatus,
        fail_reason: Option<&str>,
    ) {
        let reason = fail_reason
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        *self
            .attempts_finished
            .lock()
            .unwrap()
            .entry((outcome.as_str(), reason))
            .or_default() += 1;
    }

    /// A call to iDenfy ended after `took`; `outcome` is `ok` or the error's label.
    pub fn idenfy_call(
        &self,
        operation: &'static str,
        outcome: &'static str,
        took: std::time::Duration,
    ) {
        self.idenfy_latency
            .lock()
            .unwrap()
            .entry(operation)
            .or_default()
            .observe(took.as_secs_f64());
        *self
            .idenfy_calls
            .lock()
            .unwrap()
            .entry((operation, outcome))
            .or_default() += 1;
    }

    /// The Prometheus text; `connections` are the request pools' open and idle connections,
    /// `breaker` the iDenfy circuit breaker's phase (one of `BREAKER_PHASES`), `log_lines_dropped` the count kept by
    /// the log output.
    pub fn render(
        &self,
        connections: (u32, usize),
        breaker: &str,
        log_lines_dropped: u64,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP facepair_idenfy_breaker_state The iDenfy circuit breaker: 1 for the phase it is in (while open, creations and new codes fail at once with 503).\n# TYPE facepair_idenfy_breaker_state gauge"
        );
        for phase in BREAKER_PHASES {
            let _ = writeln!(
                out,
                "facepair_idenfy_breaker_state{{state=\"{phase}\"}} {}",
                u8::from(phase == breaker)
            );
        }
        counter(
            &mut out,
            "facepair_logins_created_total",
            "Logins created.",
            self.logins_created.get(),
        );
        counter(
            &mut out,
            "facepair_expiry_runs_total",
            "Runs of the expiry task.",
            self.expiry_runs.get(),
        );
        counter(
            &mut out,
            "facepair_expiry_failures_total",
            "Runs of the expiry task that failed.",
            self.expiry_failures.get(),
        );
        counter(
            &mut out,
            "facepair_attempts_expired_by_clock_total",
            "Attempts the expiry task recorded as expired (from the clock, or after asking iDenfy).",
            self.expired_by_clock.get(),
        );
        counter(
            &mut out,
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
            "# HELP facepair_attempts_finished_total Attempts that ended, by outcome and iDenfy failReason.\n# TYPE facepair_attempts_finished_total counter"
        );
        for ((outcome, reason), n) in self.attempts_finished.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "facepair_attempts_finished_total{{outcome=\"{outcome}\",fail_reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP facepair_idenfy_call_duration_seconds Time to an answer from iDenfy, by operation.\n# TYPE facepair_idenfy_call_duration_seconds histogram"
        );
        for (op, h) in self.idenfy_latency.lock().unwrap().iter() {
            for (bound, count) in LATENCY_BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "facepair_idenfy_call_duration_seconds_bucket{{operation=\"{op}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "facepair_idenfy_call_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "facepair_idenfy_call_duration_seconds_sum{{operation=\"{op}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "facepair_idenfy_call_duration_seconds_count{{operation=\"{op}\"}} {}",
                h.count
            );
        }
        counter(
            &mut out,
            "facepair_login_cache_hits_total",
            "Login reads answered from this instance's cache.",
            self.cache_hits.get(),
        );
        counter(
            &mut out,
            "facepair_login_cache_misses_total",
            "Login reads that went to PostgreSQL.",
            self.cache_misses.get(),
        );
        counter(
            &mut out,
            "facepair_notify_batches_total",
            "NOTIFY statements sent to wake every instance's listeners, each for a batch of changed logins.",
            self.notify_batches.get(),
        );
        counter(
            &mut out,
            "facepair_notify_logins_total",
            "Changed logins announced in those batches.",
            self.notify_logins.get(),
        );
        counter(
            &mut out,
            "facepair_notify_failures_total",
            "NOTIFY batches that could not be sent on a fresh connection either; their logins go with the next batch.",
            self.notify_failures.get(),
        );
        counter(
            &mut out,
            "facepair_log_lines_dropped_total",
            "Log lines dropped because the log output stalled or failed.",
            log_lines_dropped,
        );
        let open = self.sse_opened.get().saturating_sub(self.sse_closed.get());
        let _ = writeln!(
            out,
            "# HELP facepair_sse_streams_open Server-Sent Event streams open now.\n# TYPE facepair_sse_streams_open gauge\nfacepair_sse_streams_open {open}"
        );
        let _ = writeln!(
            out,
            "# HELP facepair_db_pool_connections Database pool connections by state.\n# TYPE facepair_db_pool_connections gauge\nfacepair_db_pool_connections{{state=\"open\"}} {}\nfacepair_db_pool_connections{{state=\"idle\"}} {}",
            connections.0, connections.1
        );
        out
    }
}
