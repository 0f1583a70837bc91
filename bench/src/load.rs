//! The HTTP load generator and its latency figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use facepair::idenfy::signature;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use uuid::Uuid;

use crate::server::SIGNING_KEY;

pub struct Run {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

pub fn summarise(mut latencies: Vec<Duration>, errors: usize, took: Duration) -> Run {
    latencies.sort();
    Run {
        rate: latencies.len() as f64 / took.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        errors,
    }
}

/// One keep-alive HTTP/1.1 connection on hyper directly (without reqwest's pool), driven by
/// the task that sends on it: no hand-over between tasks, whose CPU would be taken from
/// facepair on a shared machine.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    connection: std::pin::Pin<Box<Connection>>,
    authority: String,
}

type Connection = hyper::client::conn::http1::Connection<
    hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    Full<Bytes>,
>;

impl Conn {
    async fn open(url: &str) -> anyhow::Result<Conn> {
        let authority = url.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            connection: Box::pin(connection),
            authority,
        })
    }

    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
    }

    /// The status and the whole body; `None` if the connection failed.
    pub async fn send(&mut self, request: http::Request<Full<Bytes>>) -> Option<(u16, Bytes)> {
        let exchange = async {
            self.sender.ready().await.ok()?;
            let response = self.sender.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        tokio::select! {
            answered = exchange => answered,
            // the connection's future ends only when the connection does
            _ = self.connection.as_mut() => None,
        }
    }
}

/// `workers` clients on connections of their own, each sending its next request as soon as the
/// last was answered, for `secs`; `one(conn, i)` sends request `i` and says if it succeeded.
/// One current-thread runtime per CPU and one task per client: an answer wakes only its own.
pub async fn closed_loop<F, Fut>(
    url: &str,
    workers: usize,
    secs: Duration,
    first: usize,
    one: F,
) -> anyhow::Result<(Vec<Duration>, usize, Duration, usize)>
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Conn, bool)> + 'static,
{
    let one = Arc::new(one);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(first));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, workers.max(1));
    // every thread has its connections open before the clock starts
    let opened = Arc::new(std::sync::Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let share = workers / threads + usize::from(t < workers % threads);
        let (url, one, counter, opened) =
            (url.to_owned(), one.clone(), counter.clone(), opened.clone());
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<(Vec<Duration>, usize)> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let conns = runtime.block_on(async {
                    let mut conns = Vec::with_capacity(share);
                    for _ in 0..share {
                        conns.push(Conn::open(&url).await?);
                    }
                    anyhow::Ok(conns)
                });
                opened.wait();
                let deadline = Instant::now() + secs;
                let clients = tokio::task::LocalSet::new();
                let clients_done: Vec<_> = conns?
                    .into_iter()
                    .map(|mut conn| {
                        let (one, counter) = (one.clone(), counter.clone());
                        clients.spawn_local(async move {
                            let mut latencies = Vec::new();
                            let mut errors = 0;
                            while Instant::now() < deadline {
                                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let t = Instant::now();
                                let (back, ok) = one(conn, i).await;
                                conn = back;
                                if ok {
                                    latencies.push(t.elapsed());
                                } else {
                                    errors += 1;
                                }
                            }
                            (latencies, errors)
                        })
                    })
                    .collect();
                runtime.block_on(clients.run_until(async {
                    let mut all = Vec::new();
                    let mut errors = 0;
                    for client in clients_done {
                        let (latencies, n) = client.await?;
                        all.extend(latencies);
                        errors += n;
                    }
                    Ok((all, errors))
                }))
            },
        ));
    }
    let (results, took) = tokio::task::spawn_blocking(move || {
        opened.wait();
        let started = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("load generator thread"))
            .collect();
        (results, started.elapsed())
    })
    .await?;
    let mut all = Vec::new();
    let mut errors = 0;
    for r in results {
        let (l, e) = r?;
        all.extend(l);
        errors += e;
    }
    let used = counter.load(std::sync::atomic::Ordering::Relaxed);
    Ok((all, errors, took, used))
}

pub fn webhook_body(token: &str) -> String {
    json!({
        "id": Uuid::new_v4(), "scanRef": token, "clientId": "BENCHCLIENT", "token": token,
        "status": "SUCCESS", "type": "AUTHENTICATION", "method": "FACE_MATCHING", "facePhoto": null,
        "ipAddress": "203.0.113.7", "failReason": null, "riskTags": []
    })
    .to_string()
}

pub async fn send_webhook(http: &reqwest::Client, url: &str, token: &str) -> bool {
    let body = webhook_body(token);
    let sig = signature::sign(SIGNING_KEY.as_bytes(), body.as_bytes());
    match http
        .post(format!("{url}/v1/webhooks/idenfy"))
        .header("content-type", "application/json")
        .header("idenfy-event-type", "FACIAL_AUTHENTICATION")
        .header("idenfy-signature", sig)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().is_success() && r.text().await.is_ok_and(|t| t.contains("\"applied\"")),
        Err(_) => false,
    }
}
