//! Logging: one line per request (id, route pattern, status, latency; never the path, which may
//! hold a watch token), written here under `FACEPAIR_LOG`; other lines take `request_id` from a
//! task-local, not a `tracing` span, which costs more. No secret, code, token or selfie URL.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

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
        sink::send(line);
    });
}

/// Writes every log line that is still on its way (before the process exits).
pub fn flush() {
    sink::flush();
}

/// Log lines dropped since the start because the log output stalled or failed.
pub fn lines_dropped() -> u64 {
    sink::dropped()
}

/// Not `tracing-appender`, whose writer allocates a line per write and frees it on its thread.
/// Writers copy lines whole into one buffer under a lock; one thread writes a millisecond's lines
/// at a time. A line that finds it full, or whose write fails, is dropped and counted.
mod sink {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
    use std::time::{Duration, Instant};

    static SINK: OnceLock<Sink> = OnceLock::new();

    thread_local! {
        /// The writer thread is logging how many lines were dropped.
        static REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// How long the writer lets lines gather after the first of a batch.
    const GATHER: Duration = Duration::from_millis(1);
    /// Bytes waiting before lines are dropped.
    const CAPACITY: usize = 1 << 20;
    /// What each of the two buffers keeps of its memory between batches.
    const KEPT: usize = 64 << 10;

    pub struct Sink {
        state: Mutex<State>,
        /// The writer thread, idle, has lines to write (or a flush to make).
        ready: Condvar,
        /// A batch was written.
        progress: Condvar,
        capacity: usize,
        /// Lines dropped since the start.
        dropped: AtomicU64,
    }

    #[derive(Default)]
    struct State {
        lines: Vec<u8>,
        /// Lines appended since the start, and of those, written.
        appended: u64,
        written: u64,
        /// The writer thread waits for a line to be appended.
        idle: bool,
        /// Someone waits for every line appended so far to be written.
        flush: bool,
        /// Flushes waiting for progress.
        waiting: usize,
        closed: bool,
    }

    pub fn start() {
        let mut started = false;
        let sink = SINK.get_or_init(|| {
            started = true;
            Sink::new(CAPACITY)
        });
        if !started {
            return;
        }
        // a descriptor of its own: a write blocked on a stalled reader holds no lock that
        // anything else writing to stderr would wait for
        use std::os::fd::AsFd as _;
        let out: Box<dyn std::io::Write + Send> =
            match std::io::stderr().as_fd().try_clone_to_owned() {
                Ok(fd) => Box::new(std::fs::File::from(fd)),
                Err(_) => Box::new(std::io::stderr()),
            };
        std::thread::Builder::new()
            .name("facepair-log".into())
            .spawn(move || {
                sink.write_all(out, |n| {
                    tracing::warn!(dropped = n, "{n} log lines were dropped");
                });
            })
            .expect("the log thread starts");
        // a panic is logged like any line, so a stalled reader cannot hang the panicking thread
        std::panic::set_hook(Box::new(|info| {
            let backtrace = std::backtrace::Backtrace::capture();
            tracing::error!("{info}\n{backtrace}");
            flush();
        }));
    }

    pub fn send(line: &[u8]) {
        match SINK.get() {
            Some(sink) => sink.send(line),
            // before `init` (unit tests, library use): straight to stderr
            None => {
                let _ = std::io::stderr().write_all(line);
            }
        }
    }

    pub fn flush() {
        if let Some(sink) = SINK.get() {
            sink.flush(Duration::from_secs(1));
        }
    }

    /// Lines dropped since the start.
    pub fn dropped() -> u64 {
        SINK.get().map_or(0, Sink::dropped)
    }

    impl Sink {
        pub fn new(capacity: usize) -> Self {
            Sink {
                state: Mutex::default(),
                ready: Condvar::new(),
                progress: Condvar::new(),
                capacity,
                dropped: AtomicU64::new(0),
            }
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// Appends a line, or drops it if the buffer has no room for it: never waits for the
        /// output.
        pub fn send(&self, line: &[u8]) {
            let mut state = self.lock();
            if state.lines.len() + line.len() > self.capacity && !REPORTING.get() {
                drop(state);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            state.lines.extend_from_slice(line);
            state.appended += 1;
            let wake = std::mem::take(&mut state.idle);
            // woken while the lock is held, the writer thread would wait for it at once
            drop(state);
            if wake {
                self.ready.notify_one();
            }
        }

        pub fn dropped(&self) -> u64 {
            self.dropped.load(Ordering::Relaxed)
        }

        /// Waits until every line appended before the call is written, for at most `limit`.
        pub fn flush(&self, limit: Duration) {
            let deadline = Instant::now() + limit;
            let mut state = self.lock();
            let target = state.appended;
            while state.written < target && !state.closed {
                state.flush = true;
                self.ready.notify_one();
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                state.waiting += 1;
                state = self
                    .progress
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                state.waiting -= 1;
            }
        }

        /// Ends [`Sink::write_all`] once what was appended is written.
        #[cfg(test)]
        pub fn close(&self) {
            self.lock().closed = true;
            self.ready.notify_one();
            self.progress.notify_all();
        }

        /// The writer thread: while lines keep coming it sleeps on its own timer, so no writer
        /// wakes it; it waits for a line only when a millisecond brought none. After a write that
        /// succeeded, `report` gets the number of lines dropped since its last call, if any.
        pub fn write_all(&self, mut out: impl std::io::Write, mut report: impl FnMut(u64)) {
            let mut batch = Vec::with_capacity(KEPT);
            let mut reported = 0;
            loop {
                // the lines of a millisecond gather; a flush is written at once
                let mut state = self.linger();
                if state.lines.is_empty() && !state.flush && !state.closed {
                    while state.lines.is_empty() && !state.flush && !state.closed {
                        state.idle = true;
                        state = self
                            .ready
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    state.idle = false;
                    drop(state);
                    // the first line after a quiet spell waits for its millisecond's company
                    state = self.linger();
                }
                if state.lines.is_empty() && state.closed {
                    return;
                }
                std::mem::swap(&mut state.lines, &mut batch);
                state.flush = false;
                let (from, upto) = (state.written, state.appended);
                self.progressed(state);
                let wrote = out.write_all(&batch).is_ok();
                batch.clear();
                batch.shrink_to(KEPT);
                if !wrote {
                    // how much of the batch went out is unknown: it counts as dropped
                    self.dropped.fetch_add(upto - from, Ordering::Relaxed);
                }
                let mut state = self.lock();
                state.written = upto;
                self.progressed(state);
                let dropped = self.dropped();
                if wrote && dropped > reported {
                    // the report's own line is never dropped, though it may overfill the buffer
                    REPORTING.set(true);
                    report(dropped - reported);
                    REPORTING.set(false);
                    reported = dropped;
                }
            }
        }

        /// Gives the lock back and wakes whoever waits for a flush: a wake-up costs a system
        /// call, so only if someone waits.
        fn progressed(&self, state: MutexGuard<'_, State>) {
            let waiting = state.waiting > 0;
            drop(state);
            if waiting {
                self.progress.notify_all();
            }
        }

        /// The lock, after [`GATHER`] without it unless a flush or the end is due.
        fn linger(&self) -> MutexGuard<'_, State> {
            let state = self.lock();
            if state.flush || state.closed {
                return state;
            }
            drop(state);
            std::thread::sleep(GATHER);
            self.lock()
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::{Arc, Mutex};

        use super::*;

        /// What the writer wrote, and how many writes it took; each write takes `pause`.
        #[derive(Clone, Default)]
        struct Out(Arc<Mutex<(Vec<u8>, usize)>>, Duration);

        impl std::io::Write for Out {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(self.1);
                let mut out = self.0.lock().unwrap();
                out.0.extend_from_slice(buf);
                out.1 += 1;
                Ok(buf.len())
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl Out {
            fn text(&self) -> (String, usize) {
                let out = self.0.lock().unwrap();
                (String::from_utf8(out.0.clone()).unwrap(), out.1)
            }
        }

        /// Two writers at once, each sending `bursts` of 50 numbered 107-byte lines with pauses
        /// shorter and longer than the writer thread's wait, so that it both lingers and
        /// blocks; checks that each writer's lines came out whole and in order.
        fn send_and_check(sink: &Arc<Sink>, out: &Out, bursts: usize) {
            let senders: Vec<_> = (0..2)
                .map(|t| {
                    let sink = sink.clone();
                    std::thread::spawn(move || {
                        for burst in 0..bursts {
                            for i in 0..50 {
                                let line =
                                    format!("{t} {:04} {}\n", burst * 50 + i, "x".repeat(100));
                                sink.send(line.as_bytes());
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
            sink.flush(Duration::from_secs(5));
            // everything sent before the flush is written when it returns
            let (text, _) = out.text();
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
                    (0..bursts * 50).collect::<Vec<_>>(),
                    "writer {t}'s lines in order"
                );
            }
        }

        #[test]
        fn lines_come_out_whole_in_order_and_in_few_writes_through_bursts_and_pauses() {
            let sink = Arc::new(Sink::new(CAPACITY));
            let out = Out::default();
            let writer = std::thread::spawn({
                let (sink, out) = (sink.clone(), out.clone());
                move || sink.write_all(out, |_| {})
            });
            send_and_check(&sink, &out, 20);
            assert_eq!(sink.dropped(), 0, "a buffer with room drops nothing");
            // lines are written a batch at a time, not one by one
            let (_, writes) = out.text();
            assert!(writes < 200, "{writes} writes for 2,000 lines");
            // a line sent after a long pause (the writer idle, waiting) still comes out
            std::thread::sleep(Duration::from_millis(20));
            sink.send(b"late\n");
            sink.flush(Duration::from_secs(5));
            assert!(out.text().0.ends_with("late\n"));
            sink.close();
            writer.join().unwrap();
        }

        /// An output that takes no write until it is opened: a log reader that stopped
        /// reading.
        #[derive(Clone, Default)]
        struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, Out);

        impl std::io::Write for Gate {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, opened) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
                drop(open);
                self.1.write(buf)
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl Gate {
            fn open(&self) {
                *self.0.0.lock().unwrap() = true;
                self.0.1.notify_all();
            }
        }

        #[test]
        fn a_stalled_output_holds_up_no_writer_and_what_it_drops_is_counted_then_logged() {
            let sink = Arc::new(Sink::new(1_000));
            let gate = Gate::default();
            let writer = std::thread::spawn({
                let (sink, gate) = (sink.clone(), gate.clone());
                let notices = sink.clone();
                move || {
                    sink.write_all(gate, move |n| {
                        notices.send(format!("{n} log lines were dropped\n").as_bytes());
                    });
                }
            });
            // eight writers, 500 lines each, while nothing is written
            let (done, finished) = std::sync::mpsc::channel();
            for t in 0..8 {
                let (sink, done) = (sink.clone(), done.clone());
                std::thread::spawn(move || {
                    for i in 0..500 {
                        sink.send(format!("{t} {i:04} {}\n", "x".repeat(100)).as_bytes());
                    }
                    done.send(()).unwrap();
                });
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            for _ in 0..8 {
                let left = deadline.saturating_duration_since(Instant::now());
                finished
                    .recv_timeout(left)
                    .expect("every writer finished while the output was stalled");
            }
            // all but what the buffer and the stalled write hold, two times 1,000 bytes
            let dropped = sink.dropped();
            assert!(dropped >= 4_000 - 20, "{dropped} of 4,000 lines dropped");

            // the reader reads again: the count is logged, and every line is accounted for
            gate.open();
            let logged = || -> u64 {
                gate.1
                    .text()
                    .0
                    .lines()
                    .filter_map(|l| l.strip_suffix(" log lines were dropped"))
                    .map(|n| n.parse::<u64>().unwrap())
                    .sum()
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while logged() < dropped {
                assert!(Instant::now() < deadline, "the count was not logged");
                sink.flush(Duration::from_millis(100));
            }
            sink.flush(Duration::from_secs(5));
            assert_eq!(
                sink.dropped(),
                dropped,
                "the count's own line was not dropped"
            );
            assert_eq!(logged(), dropped);
            let (text, _) = gate.1.text();
            let written = text.lines().filter(|l| l.ends_with('x')).count() as u64;
            assert_eq!(written + dropped, 4_000);
            sink.close();
            writer.join().unwrap();
        }

        #[test]
        fn lines_whose_write_fails_are_counted() {
            /// An output whose reader has gone.
            struct Closed;

            impl std::io::Write for Closed {
                fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                    Err(std::io::ErrorKind::BrokenPipe.into())
                }

                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }

            let sink = Arc::new(Sink::new(CAPACITY));
            let reported = Arc::new(Mutex::new(0));
            let writer = std::thread::spawn({
                let (sink, reported) = (sink.clone(), reported.clone());
                move || sink.write_all(Closed, |n| *reported.lock().unwrap() += n)
            });
            for i in 0..10 {
                sink.send(format!("line {i}\n").as_bytes());
            }
            sink.flush(Duration::from_secs(5));
            assert_eq!(sink.dropped(), 10);
            // nothing was written, so nothing was logged about it either
            assert_eq!(*reported.lock().unwrap(), 0);
            sink.close();
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
                send(&self.0);
            }
        }
    }
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
