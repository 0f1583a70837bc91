//! Logging: one JSON (or human) line per request with its id, route, status and latency.
//! Secrets, digit codes, tokens and selfie URLs are never logged: the access line carries the
//! route pattern, never the path (which may hold a watch token).
//!
//! Every other line logged while serving a request carries the request's `request_id`, read
//! from the request's task-local rather than from a `tracing` span: a span per request, its
//! fields formatted as JSON when it opens, cost more than the rest of a cached poll's logging
//! (BENCHMARKS.md). The access line itself is written here rather than as a `tracing` event,
//! for the same reason. It obeys the same filter (`FACEPAIR_LOG`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_env("FACEPAIR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    sink::start();
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink::Line::default)
        // colours only for a person at a terminal, never into files or collectors
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(Lines(format))
        .try_init();
}

/// How every line but the access line is written: the keys of the access line (`timestamp`,
/// `level`, the event's fields with its `message`, `target`), then `request_id` while a
/// request is served and `span`, the innermost span's name, inside one.
struct Lines(LogFormat);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // lines from crates that log through `log` carry their own target
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = Fields::default();
        event.record(&mut fields);
        let timestamp = timestamp();
        let request_id = REQUEST_ID.try_with(Clone::clone).ok();
        let span = ctx.lookup_current().map(|span| span.name());
        match self.0 {
            LogFormat::Json => {
                let mut line = vec![
                    ("timestamp", timestamp.into()),
                    ("level", meta.level().as_str().into()),
                ];
                line.extend(fields.0);
                line.push(("target", meta.target().into()));
                if let Some(id) = request_id {
                    line.push(("request_id", id.into()));
                }
                if let Some(span) = span {
                    line.push(("span", span.into()));
                }
                let line = serde_json::to_string(&InOrder(&line)).map_err(|_| std::fmt::Error)?;
                writeln!(writer, "{line}")
            }
            LogFormat::Text => {
                let level = meta.level().as_str();
                if writer.has_ansi_escapes() {
                    write!(writer, "{timestamp} \x1b[1m{level:>5}\x1b[0m ")?;
                } else {
                    write!(writer, "{timestamp} {level:>5} ")?;
                }
                write!(writer, "{}:", meta.target())?;
                if let Some(span) = span {
                    write!(writer, " {span}:")?;
                }
                let mut rest = String::new();
                for (key, value) in fields.0 {
                    match (key, value) {
                        ("message", Value::String(m)) => write!(writer, " {m}")?,
                        (key, Value::String(v)) => write!(rest, " {key}={v}")?,
                        (key, v) => write!(rest, " {key}={v}")?,
                    }
                }
                if let Some(id) = request_id {
                    write!(rest, " request_id={id}")?;
                }
                writeln!(writer, "{rest}")
            }
        }
    }
}

/// When a line is written, as every line shows it.
fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A JSON object with its keys in the order given.
struct InOrder<'a>(&'a [(&'static str, Value)]);

impl serde::Serialize for InOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// An event's fields in the order they were given, as JSON values.
#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        // what `log` records besides the message is already in the normalized metadata
        if !field.name().starts_with("log.") {
            self.0.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, for error bodies.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

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
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let method = req.method().to_string();
    ROUTES.with(|routes| {
        routes.get_or_init(|| req.resource_map().clone());
    });
    let mut abandoned = Abandoned {
        uri: Some(req.uri().clone()),
        id: &id,
        method: &method,
        started,
    };
    let result = REQUEST_ID.scope(id.clone(), next.call(req)).await;
    abandoned.uri = None;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    // read after routing, which recorded the resource it chose: before, it would walk the
    // routes a second time
    let (status, route) = match &result {
        Ok(res) => (res.status().as_u16(), res.request().match_pattern()),
        Err(e) => (e.as_response_error().status_code().as_u16(), None),
    };
    let route = route.as_deref().unwrap_or("unmatched");
    write_access(&id, &method, route, status, latency_ms, "request");
    let mut res = result?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    Ok(res)
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

/// The access line, laid out as [`Lines`] lays out every other line: its fields after
/// `message`, then `target` and `request_id`.
#[derive(serde::Serialize)]
struct Access<'a> {
    timestamp: String,
    level: &'static str,
    message: &'static str,
    method: &'a str,
    route: &'a str,
    status: u16,
    latency_ms: f64,
    target: &'static str,
    request_id: &'a str,
}

fn write_access(
    request_id: &str,
    method: &str,
    route: &str,
    status: u16,
    latency_ms: f64,
    message: &'static str,
) {
    if !tracing::enabled!(target: "facepair::access", tracing::Level::INFO) {
        return;
    }
    let access = Access {
        timestamp: timestamp(),
        level: "INFO",
        message,
        method,
        route,
        status,
        latency_ms,
        target: "facepair::access",
        request_id,
    };
    let mut line = Vec::with_capacity(256);
    match FORMAT.get() {
        Some(LogFormat::Text) => {
            let _ = writeln!(
                line,
                "{} {:>5} {}: {} method={method} route={route} status={status} latency_ms={latency_ms:.3} request_id={request_id}",
                access.timestamp, access.level, access.target, access.message
            );
        }
        _ => {
            if serde_json::to_writer(&mut line, &access).is_err() {
                return;
            }
            line.push(b'\n');
        }
    }
    sink::send(line);
}

/// Writes every log line that is still on its way (before the process exits).
pub fn flush() {
    sink::flush();
}

/// Log lines reach stderr through one thread, which writes the lines of a millisecond in one
/// system call. A request then costs a channel send rather than a write and a lock its
/// worker shares with the others; while lines keep coming the thread sleeps on its own
/// timer, so the send wakes nobody. Lines stay whole and in order; a full channel makes
/// writers wait rather than lose lines. On a normal exit [`flush`] writes what is left; a
/// process killed outright loses at most the last millisecond.
mod sink {
    use std::io::Write as _;
    use std::sync::OnceLock;
    use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
    use std::time::Duration;

    enum Message {
        Line(Vec<u8>),
        Flush(SyncSender<()>),
    }

    static SINK: OnceLock<SyncSender<Message>> = OnceLock::new();

    /// How long the writer lets lines gather after the first of a batch.
    const GATHER: Duration = Duration::from_millis(1);
    /// Lines waiting before writers wait too.
    const CAPACITY: usize = 4096;

    pub fn start() {
        SINK.get_or_init(|| {
            let (tx, rx) = sync_channel(CAPACITY);
            std::thread::Builder::new()
                .name("facepair-log".into())
                .spawn(move || write_all(rx, std::io::stderr()))
                .expect("the log thread starts");
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                flush();
                default_hook(info);
            }));
            tx
        });
    }

    pub fn send(line: Vec<u8>) {
        match SINK.get() {
            Some(tx) => {
                let _ = tx.send(Message::Line(line));
            }
            // before `init` (unit tests, library use): straight to stderr
            None => {
                let _ = std::io::stderr().write_all(&line);
            }
        }
    }

    pub fn flush() {
        if let Some(tx) = SINK.get() {
            let (done, written) = sync_channel(1);
            if tx.send(Message::Flush(done)).is_ok() {
                let _ = written.recv_timeout(Duration::from_secs(1));
            }
        }
    }

    /// Waits for lines only after a millisecond without any: while lines keep coming, the
    /// thread is asleep in its own timer, never in the channel, so no writer has to wake it.
    fn write_all(rx: Receiver<Message>, mut out: impl std::io::Write) {
        let mut batch = Vec::with_capacity(64 * 1024);
        let mut flushed = Vec::new();
        // the last pass wrote lines, and the thread has slept since
        let (mut wrote, mut slept) = (false, false);
        loop {
            let first = match rx.try_recv() {
                Ok(first) => first,
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) if wrote && !slept => {
                    slept = true;
                    std::thread::sleep(GATHER);
                    continue;
                }
                Err(TryRecvError::Empty) => match rx.recv() {
                    Ok(first) => {
                        slept = false;
                        first
                    }
                    Err(_) => return,
                },
            };
            let mut message = Some(first);
            // lines found after a sleep have had their millisecond to gather
            let mut gathered = std::mem::take(&mut slept);
            loop {
                match message.take() {
                    Some(Message::Line(line)) => batch.extend_from_slice(&line),
                    Some(Message::Flush(done)) => flushed.push(done),
                    None => {}
                }
                // a flush is written at once
                if !flushed.is_empty() || batch.len() >= 1 << 20 {
                    break;
                }
                match rx.try_recv() {
                    Ok(next) => message = Some(next),
                    Err(_) if !gathered => {
                        gathered = true;
                        std::thread::sleep(GATHER);
                    }
                    Err(_) => break,
                }
            }
            let _ = out.write_all(&batch);
            wrote = !batch.is_empty();
            batch.clear();
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::{Arc, Mutex};

        use super::*;

        /// What the writer wrote, and how many writes it took.
        #[derive(Clone, Default)]
        struct Out(Arc<Mutex<(Vec<u8>, usize)>>);

        impl std::io::Write for Out {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let mut out = self.0.lock().unwrap();
                out.0.extend_from_slice(buf);
                out.1 += 1;
                Ok(buf.len())
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        fn flush(tx: &SyncSender<Message>) {
            let (done, written) = sync_channel(1);
            tx.send(Message::Flush(done)).unwrap();
            written.recv_timeout(Duration::from_secs(5)).unwrap();
        }

        #[test]
        fn lines_come_out_whole_in_order_and_in_few_writes_through_bursts_and_pauses() {
            let (tx, rx) = sync_channel(CAPACITY);
            let out = Out::default();
            let writer = std::thread::spawn({
                let out = out.clone();
                move || write_all(rx, out)
            });
            // two writers at once, in bursts, with pauses shorter and longer than the
            // writer's wait, so it both lingers and blocks
            let senders: Vec<_> = (0..2)
                .map(|t| {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        for burst in 0..20 {
                            for i in 0..50 {
                                let line =
                                    format!("{t} {:04} {}\n", burst * 50 + i, "x".repeat(100));
                                tx.send(Message::Line(line.into_bytes())).unwrap();
                            }
                            let pause = [0, 500, 3_000][burst % 3];
                            std::thread::sleep(Duration::from_micros(pause));
                        }
                    })
                })
                .collect();
            for s in senders {
                s.join().unwrap();
            }
            flush(&tx);
            let (text, writes) = {
                let out = out.0.lock().unwrap();
                (String::from_utf8(out.0.clone()).unwrap(), out.1)
            };
            // everything sent before the flush is written when it returns
            for t in 0..2 {
                let seen: Vec<usize> = text
                    .lines()
                    .filter(|l| l.starts_with(&format!("{t} ")))
                    .map(|l| {
                        assert_eq!(l.len(), 2 + 4 + 1 + 100, "a whole line: {l}");
                        l[2..6].parse().unwrap()
                    })
                    .collect();
                assert_eq!(
                    seen,
                    (0..1000).collect::<Vec<_>>(),
                    "writer {t}'s lines in order"
                );
            }
            // lines are written a batch at a time, not one by one
            assert!(writes < 200, "{writes} writes for 2,000 lines");
            // a line sent after a long pause (the writer blocked in the channel) still comes out
            std::thread::sleep(Duration::from_millis(20));
            tx.send(Message::Line(b"late\n".to_vec())).unwrap();
            flush(&tx);
            assert!(out.0.lock().unwrap().0.ends_with(b"late\n"));
            drop(tx);
            writer.join().unwrap();
        }
    }

    /// One log line from the JSON or text layer, sent when the layer is done with it.
    #[derive(Default)]
    pub struct Line(Vec<u8>);

    impl std::io::Write for Line {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Drop for Line {
        fn drop(&mut self) {
            if !self.0.is_empty() {
                send(std::mem::take(&mut self.0));
            }
        }
    }
}

/// A UUIDv7 for a request without an `X-Request-Id`. Its random bits come from the thread's
/// generator rather than the operating system, which costs a system call per request.
fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}
