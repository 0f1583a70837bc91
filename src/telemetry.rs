//! Logging: one line per request (id, route pattern, status, latency; never the path, which may
//! hold a watch token), written here under `FACEPAIR_LOG`; other lines take `request_id` from a
//! task-local, not a `tracing` span, which costs more. No secret, code, token or selfie URL.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
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
    let Some(writer) = start_output() else {
        return;
    };
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
        let timestamp = Timestamp::now();
        let timestamp = timestamp.as_str();
        let request_id = REQUEST_ID.try_with(|id| *id).ok();
        let request_id = request_id.as_ref().map(RequestId::as_str);
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

/// When a line is written, as every line shows it: RFC 3339 in UTC, to the microsecond. Kept
/// inline, and its date and time of day formatted once a second per thread: every request
/// writes one.
struct Timestamp {
    bytes: [u8; Timestamp::MAX],
    len: usize,
}

impl Timestamp {
    /// `+262143-12-31T23:59:59.999999Z`, chrono's last, is 30 bytes.
    const MAX: usize = 40;

    fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::at(since_epoch.as_secs(), since_epoch.subsec_micros())
    }

    fn at(secs: u64, micros: u32) -> Self {
        thread_local! {
            /// The last second formatted on this thread, up to its seconds' digits.
            static SECOND: std::cell::RefCell<(u64, String)> =
                const { std::cell::RefCell::new((u64::MAX, String::new())) };
        }
        let mut stamp = Timestamp {
            bytes: [0; Self::MAX],
            len: 0,
        };
        SECOND.with_borrow_mut(|(second, prefix)| {
            if *second != secs {
                let at = i64::try_from(secs)
                    .ok()
                    .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
                    .unwrap_or_default();
                *prefix = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                prefix.pop(); // its `Z`
                *second = secs;
            }
            let mut out = &mut stamp.bytes[..];
            let _ = write!(out, "{prefix}.{micros:06}Z");
            stamp.len = Self::MAX - out.len();
        });
        stamp
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
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
    static REQUEST_ID: RequestId;
}

/// A request's id: the caller's `x-request-id` if it is sane, else a new UUIDv7. Kept inline,
/// so that giving it to the request's task and to its log lines allocates nothing.
#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; RequestId::MAX],
    len: u8,
}

impl RequestId {
    const MAX: usize = 64;

    /// The caller's id, if it is 1 to 64 letters, digits, `-` and `_`.
    pub fn given(id: &[u8]) -> Option<Self> {
        let sane = !id.is_empty()
            && id.len() <= Self::MAX
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        sane.then(|| {
            let mut bytes = [0; Self::MAX];
            bytes[..id.len()].copy_from_slice(id);
            RequestId {
                bytes,
                len: id.len() as u8,
            }
        })
    }

    /// A UUIDv7. Its random bits come from the thread's generator rather than the operating
    /// system, which costs a system call per request.
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let random: [u8; 10] = rand::random();
        let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        let mut bytes = [0; Self::MAX];
        let len = uuid.hyphenated().encode_lower(&mut bytes).len();
        RequestId {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        // only ASCII goes in
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// The id of the request being served, for error bodies.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.as_str().to_owned())
        .unwrap_or_default()
}

/// The id of the request being served, to carry into work it hands to another task.
pub fn current_id() -> Option<RequestId> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// Runs `f` as the request `id`: every line it logs carries the id.
pub async fn in_request<F: std::future::Future>(id: RequestId, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The access line, laid out as [`Lines`] lays out every other line: its fields after
/// `message`, then `target` and `request_id`.
#[derive(serde::Serialize)]
struct Access<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'static str,
    method: &'a str,
    route: &'a str,
    status: u16,
    latency_ms: f64,
    target: &'static str,
    request_id: &'a str,
}

pub fn write_access(
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
    let timestamp = Timestamp::now();
    let access = Access {
        timestamp: timestamp.as_str(),
        level: "INFO",
        message,
        method,
        route,
        status,
        latency_ms,
        target: "facepair::access",
        request_id,
    };
    thread_local! {
        /// The line being written, its memory kept from one line to the next.
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        match FORMAT.get() {
            Some(LogFormat::Text) => {
                let _ = writeln!(
                    line,
                    "{} {:>5} {}: {} method={method} route={route} status={status} latency_ms={latency_ms:.3} request_id={request_id}",
                    access.timestamp, access.level, access.target, access.message
                );
            }
            _ => {
                if serde_json::to_writer(&mut *line, &access).is_err() {
                    return;
                }
                line.push(b'\n');
            }
        }
        send(line);
    });
}

/// Writes every log line that is still on its way, for at most a second (before the process
/// exits; logging stops). The writer thread is told to stop from a thread of its own, which a
/// stalled output may hold: exit does not wait for it.
pub fn flush() {
    let Some(guard) = OUTPUT
        .get()
        .and_then(|o| o.guard.lock().unwrap_or_else(|e| e.into_inner()).take())
    else {
        return;
    };
    let (done, finished) = std::sync::mpsc::channel();
    let stopping = std::thread::Builder::new()
        .name("facepair-log-stop".into())
        .spawn(move || {
            // waits up to 1.1 s for the writer thread to write what is queued
            drop(guard);
            let _ = done.send(());
        });
    if stopping.is_ok() {
        let _ = finished.recv_timeout(std::time::Duration::from_millis(1500));
    }
}

/// Writes a process's last line (its error) to stderr, waiting a second at most: a stalled
/// stderr does not hold up exit, and one that is gone is ignored.
pub fn last_words(line: String) {
    let (done, finished) = std::sync::mpsc::channel();
    let writing = std::thread::Builder::new().spawn(move || {
        let _ = writeln!(std::io::stderr(), "{line}");
        let _ = done.send(());
    });
    if writing.is_ok() {
        let _ = finished.recv_timeout(std::time::Duration::from_secs(1));
    }
}

/// Log lines dropped since the start: the queue was full (the output stalled), or their
/// write failed.
pub fn lines_dropped() -> u64 {
    OUTPUT.get().map_or(0, |o| {
        o.writer.error_counter().dropped_lines() as u64 + o.failed.load(Ordering::Relaxed)
    })
}

/// Lines waiting for a stalled output before new ones are dropped (about 1 MiB).
const BUFFERED_LINES: usize = 4096;

/// Every line goes through tracing-appender's writer thread, so no request waits for the
/// output; a line that finds its queue full is dropped and counted.
struct Output {
    writer: NonBlocking,
    guard: std::sync::Mutex<Option<WorkerGuard>>,
    /// Lines whose write failed.
    failed: Arc<AtomicU64>,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// stderr for the writer thread: lines gather until its queue is empty (or 64 KiB), then go
/// in one write; the lines a failed write did not finish are counted.
struct Stderr {
    out: Box<dyn std::io::Write + Send>,
    batch: Vec<u8>,
    failed: Arc<AtomicU64>,
}

impl std::io::Write for Stderr {
    /// tracing-appender's thread writes each line whole.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.batch.extend_from_slice(line);
        if self.batch.len() >= 64 << 10 {
            self.flush()?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut written = 0;
        while written < self.batch.len() {
            match self.out.write(&self.batch[written..]) {
                Ok(n) if n > 0 => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        let (done, lost) = self.batch.split_at(written);
        if !lost.is_empty() {
            let lost_lines = lost.iter().filter(|&&b| b == b'\n').count();
            self.failed.fetch_add(lost_lines as u64, Ordering::Relaxed);
            // a line cut short is ended, so the next one starts a line of its own
            if done.last().is_some_and(|&b| b != b'\n') {
                let _ = self.out.write_all(b"\n");
            }
        }
        self.batch.clear();
        self.batch.shrink_to(64 << 10);
        Ok(())
    }
}

fn start_output() -> Option<NonBlocking> {
    let mut started = false;
    let output = OUTPUT.get_or_init(|| {
        started = true;
        // a descriptor of its own: a write blocked on a stalled reader holds no lock that
        // anything else writing to stderr would wait for
        use std::os::fd::AsFd as _;
        let out: Box<dyn std::io::Write + Send> =
            match std::io::stderr().as_fd().try_clone_to_owned() {
                Ok(fd) => Box::new(std::fs::File::from(fd)),
                Err(_) => Box::new(std::io::stderr()),
            };
        let failed = Arc::new(AtomicU64::new(0));
        let stderr = Stderr {
            out,
            batch: Vec::new(),
            failed: failed.clone(),
        };
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(BUFFERED_LINES)
            .thread_name("facepair-log")
            .finish(stderr);
        Output {
            writer,
            guard: std::sync::Mutex::new(Some(guard)),
            failed,
        }
    });
    if !started {
        return None;
    }
    std::thread::Builder::new()
        .name("facepair-log-drops".into())
        .spawn(report_dropped_lines)
        .expect("the log thread starts");
    // a panic is logged like any line, so a stalled reader cannot hang the panicking thread
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        tracing::error!("{info}\n{backtrace}");
    }));
    Some(output.writer.clone())
}

/// Logs the count of dropped lines whenever it grew within a second: a report that is
/// dropped itself is followed by another once the output reads again.
fn report_dropped_lines() {
    let mut reported = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let dropped = lines_dropped();
        if dropped > reported {
            tracing::warn!(dropped, "{dropped} log lines were dropped since the start");
            reported = dropped;
        }
    }
}

fn send(line: &[u8]) {
    let _ = match OUTPUT.get() {
        Some(output) => output.writer.clone().write_all(line),
        // before `init` (unit tests, library use): straight to stderr
        None => std::io::stderr().write_all(line),
    };
}

/// The whole cause chain on one line, for logs, each cause once: a cause whose text its
/// parent's message already carries (`error communicating with database: {0}`) is skipped.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = cause_text(e);
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// One cause's own text. A database error reads as its message, SQLSTATE and constraint:
/// sqlx's `Display` of a PostgreSQL error adds the line of PostgreSQL's C source that raised
/// it, which says nothing about facepair. Its detail is left out, as it may quote a row.
fn cause_text(e: &(dyn std::error::Error + 'static)) -> String {
    use sqlx::error::DatabaseError;
    // sqlx::Error::Database's source is the boxed error itself
    let (prefix, db): (&str, &dyn DatabaseError) = match e.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(db)) => ("error returned from database: ", &**db),
        _ => match e.downcast_ref::<Box<dyn DatabaseError>>() {
            Some(db) => ("", &**db),
            None => return e.to_string(),
        },
    };
    let mut text = format!("{prefix}{}", db.message());
    if let Some(code) = db.code() {
        text.push_str(&format!(" (SQLSTATE {code}"));
        if let Some(constraint) = db.constraint() {
            text.push_str(&format!(", constraint {constraint}"));
        }
        text.push(')');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_chrono_writes_them_across_seconds_and_years() {
        let seconds: [u64; 8] = [
            0,
            59,
            60,
            951_782_400,     // 2000-02-29
            1_795_000_000,   // 2026
            1_795_000_001,   // the next second, from the same thread's cache
            253_402_300_799, // 9999-12-31T23:59:59
            253_402_300_800, // year 10,000
        ];
        for secs in seconds {
            for micros in [0, 7, 120_000, 999_999] {
                let expected = chrono::DateTime::from_timestamp(secs as i64, micros * 1_000)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                assert_eq!(Timestamp::at(secs, micros).as_str(), expected);
            }
        }
        let now = Timestamp::now();
        let read = chrono::DateTime::parse_from_rfc3339(now.as_str()).unwrap();
        assert!((chrono::Utc::now() - read.to_utc()).num_seconds().abs() < 2);
    }

    /// An output that takes `room` bytes, then fails every write.
    struct Output {
        room: usize,
        taken: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Output {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.room -= n;
            self.taken.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_a_failed_write_did_not_finish_are_counted() {
        let failed = Arc::new(AtomicU64::new(0));
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        // room for the first line and part of the second
        let output = Output {
            room: 12,
            taken: taken.clone(),
        };
        let mut out = Stderr {
            out: Box::new(output),
            batch: Vec::new(),
            failed: failed.clone(),
        };
        for line in [b"line one\n", b"line two\n", b"line 333\n"] {
            out.write_all(line).unwrap();
        }
        std::io::Write::flush(&mut out).unwrap();
        assert_eq!(
            failed.load(Ordering::Relaxed),
            2,
            "the cut line and the next"
        );
        assert_eq!(&taken.lock().unwrap()[..], b"line one\nlin");
        std::io::Write::flush(&mut out).unwrap();
        assert_eq!(failed.load(Ordering::Relaxed), 2, "counted once");
    }

    #[test]
    fn a_callers_request_id_is_kept_only_if_sane() {
        let longest = "a".repeat(64);
        for sane in ["abc-DEF_123", "x", longest.as_str()] {
            assert_eq!(RequestId::given(sane.as_bytes()).unwrap().as_str(), sane);
        }
        let too_long = "a".repeat(65);
        for insane in ["", "a b", "a\"b", "é", too_long.as_str()] {
            assert!(RequestId::given(insane.as_bytes()).is_none(), "{insane}");
        }
        let generated = RequestId::generate();
        let uuid = uuid::Uuid::parse_str(generated.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(generated.as_str(), uuid.hyphenated().to_string());
        assert_ne!(generated.as_str(), RequestId::generate().as_str());
    }
}
