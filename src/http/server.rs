//! The listening socket. A connection whose first request opens a login's event stream is
//! answered here, the route table's response written to the socket as it comes; every other
//! connection is served by actix-http. Why not actix-http for streams too: it keeps two 8 KiB
//! buffers per connection for as long as a stream stays open (BENCHMARKS.md, scenario 3).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{Codec, Message, MessageType};
use actix_http::{
    ConnectionType, HttpService, KeepAlive, Method, Request, Response, ServiceConfig, StatusCode,
    Version,
};
use actix_service::boxed::{self, RcService};
use actix_service::{
    IntoServiceFactory, Service, ServiceExt, ServiceFactory, fn_factory, fn_service, map_config,
};
use actix_web::dev::{AppConfig, Server, ServiceResponse};
use actix_web::web::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

/// How long a client has to send enough of its first request to tell whether it opens a
/// stream (the whole head if it does), as actix-http allows for a head; then it is closed.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream request's head larger than this is left to actix-http.
const HEAD_LIMIT: usize = 8 * 1024;
/// The starts of the requests answered here: `GET /v1/logins/{id}/events` and
/// `GET /v1/watch/{token}/events`.
const STREAMS: [&[u8]; 2] = [b"GET /v1/logins/", b"GET /v1/watch/"];

type Routes = RcService<Request, Response<BoxBody>, actix_web::Error>;

/// Serves `app` on `listener` with `workers` threads, each with its own instance of the route
/// table. `stop` cancelled: idle keep-alive connections close.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    workers: usize,
    stop: CancellationToken,
    app: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    S::Future: 'static,
    S::Service: 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    let local = listener.local_addr()?;
    Ok(Server::build()
        .workers(workers)
        .shutdown_timeout(10)
        .disable_signals()
        .listen("facepair", listener, move || {
            let (app, stop) = (app.clone(), stop.clone());
            fn_factory(move || {
                let (app, stop) = (app(), stop.clone());
                let stop_streams = stop.clone();
                async move {
                    // the host and address it holds are read by nothing: links are built from
                    // FACEPAIR_PUBLIC_URL
                    let routes = map_config(app.into_factory(), |()| AppConfig::default())
                        .new_service(())
                        .await?;
                    let routes: Routes =
                        boxed::rc_service(routes.map(|res: ServiceResponse<B>| {
                            Response::from(res.map_into_boxed_body())
                        }));
                    let h1 = HttpService::build()
                        .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                        .client_request_timeout(HEAD_TIMEOUT)
                        .client_disconnect_timeout(Duration::from_secs(1))
                        // a client that closes its side has left: its stream or long poll
                        // ends at once, not when a write to it fails
                        .h1_allow_half_closed(false)
                        .local_addr(local)
                        .graceful_shutdown_signal(move || stop.clone().cancelled_owned())
                        .h1(fn_factory({
                            let routes = routes.clone();
                            move || std::future::ready(Ok::<_, ()>(routes.clone()))
                        }))
                        .new_service(())
                        .await?;
                    let worker = Rc::new(Worker {
                        routes,
                        h1,
                        codec: ServiceConfig::default(),
                        stop: stop_streams,
                    });
                    Ok::<_, ()>(fn_service(move |io: TcpStream| {
                        connection(io, worker.clone())
                    }))
                }
            })
        })?
        .run())
}

/// What one worker's connections share: its route table, actix-http, the settings (with
/// actix-http's clock) stream requests are read and answered with, and the stop signal.
struct Worker<H> {
    routes: Routes,
    h1: H,
    codec: ServiceConfig,
    stop: CancellationToken,
}

async fn connection<H>(mut io: TcpStream, worker: Rc<Worker<H>>) -> Result<(), ()>
where
    H: Service<(Rewound, Option<SocketAddr>)>,
{
    let peer = io.peer_addr().ok();
    match first_request(&mut io, &worker).await {
        First::Stream(mut req, codec) => {
            req.head_mut().peer_addr = peer;
            stream(io, codec, &worker.routes, req).await;
            Ok(())
        }
        // boxed: a stream's task does not carry the size of actix-http's connection state
        First::Other(head) => Box::pin(worker.h1.call((Rewound { head, io }, peer)))
            .await
            .map(drop)
            .map_err(drop),
        First::TimedOut(codec) => {
            let timeout = Response::with_body(StatusCode::REQUEST_TIMEOUT, ());
            let _ = write_head(&mut io, codec, timeout, BodySize::Sized(0)).await;
            Ok(())
        }
        First::Gone => Ok(()),
    }
}

enum First {
    /// A request that opens an event stream, and the codec that read it.
    Stream(Request, Codec),
    /// Anything else: the bytes read so far, for actix-http.
    Other(Bytes),
    /// Nothing decided within [`HEAD_TIMEOUT`]: answered 408, as actix-http does.
    TimedOut(Codec),
    /// Closed, failed, or the instance is stopping.
    Gone,
}

async fn first_request<H>(io: &mut TcpStream, worker: &Worker<H>) -> First {
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let mut head = BytesMut::with_capacity(1024);
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, io.read_buf(&mut head)) => read,
            () = worker.stop.cancelled() => return First::Gone,
        };
        match read {
            Ok(Ok(0) | Err(_)) => return First::Gone,
            Err(_) => return First::TimedOut(Codec::new(worker.codec.clone())),
            Ok(Ok(_)) => {}
        }
        match judge(&head, &worker.codec) {
            Some(Ok((req, codec))) => return First::Stream(req, codec),
            Some(Err(())) => return First::Other(head.freeze()),
            None => {}
        }
    }
}

/// What the bytes read so far are: a request that opens a stream, with the codec that read it;
/// `Err` anything else; `None` not known yet.
fn judge(head: &BytesMut, config: &ServiceConfig) -> Option<Result<(Request, Codec), ()>> {
    let started = |p: &[u8]| p.starts_with(&head[..head.len().min(p.len())]);
    if !STREAMS.iter().any(|p| started(p)) || head.len() > HEAD_LIMIT {
        return Some(Err(()));
    }
    let mut codec = Codec::new(config.clone());
    let mut rest = head.clone();
    match codec.decode(&mut rest) {
        // bytes after the head (a pipelined request) leave it to actix-http, which queues
        Ok(Some(Message::Item(req))) if rest.is_empty() && opens_a_stream(&codec, &req) => {
            Some(Ok((req, codec)))
        }
        Ok(None) => None,
        _ => Some(Err(())),
    }
}

/// A GET of `…/{id}/events` without a body, an upgrade or `Expect`, on HTTP/1.1.
fn opens_a_stream(codec: &Codec, req: &Request) -> bool {
    let events = STREAMS.iter().any(|p| {
        let prefix = std::str::from_utf8(&p[4..]).unwrap_or_default();
        req.path()
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(id, tail)| !id.is_empty() && tail == "events")
    });
    events
        && req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && codec.message_type() == MessageType::None
        && !codec.upgrade()
        && !req.head().headers.contains_key("expect")
}

/// Answers `req` through the route table and writes the response as its body comes, until it
/// ends or the client leaves; then closes the connection.
async fn stream(mut io: TcpStream, codec: Codec, routes: &Routes, req: Request) {
    let res = tokio::select! {
        res = routes.call(req) => res.unwrap_or_else(Response::from),
        () = gone(&mut io) => return,
    };
    let (res, mut body) = res.into_parts();
    let size = body.size();
    // the response's head goes back to actix-http's pool before the body's long wait
    let Ok(mut codec) = write_head(&mut io, codec, res, size).await else {
        return;
    };
    loop {
        let next = tokio::select! {
            next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)) => next,
            () = gone(&mut io) => return,
        };
        let chunk = match next {
            // an empty chunk would end a chunked body
            Some(Ok(chunk)) if chunk.is_empty() => continue,
            Some(Ok(chunk)) => Some(chunk),
            // the client sees a body cut short, not a whole one
            Some(Err(_)) => return,
            None => None,
        };
        let done = chunk.is_none();
        let mut out = BytesMut::new();
        if codec.encode(Message::Chunk(chunk), &mut out).is_err()
            || io.write_all(&out).await.is_err()
            || done
        {
            break;
        }
    }
    let _ = io.shutdown().await;
}

/// Writes the status line and headers as actix-http would, with `connection: close`; the codec
/// then frames the body.
async fn write_head(
    io: &mut TcpStream,
    mut codec: Codec,
    mut res: Response<()>,
    size: BodySize,
) -> io::Result<Codec> {
    res.head_mut().set_connection_type(ConnectionType::Close);
    let mut out = BytesMut::new();
    codec.encode(Message::Item((res, size)), &mut out)?;
    io.write_all(&out).await?;
    Ok(codec)
}

/// Ends when the client closes its side, the connection fails, or the client sends anything:
/// a stream's client sends nothing after its request.
async fn gone(io: &mut TcpStream) {
    let _ = io.read(&mut [0u8; 1]).await;
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Rewound {
    head: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.head.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.head.len().min(buf.remaining());
        buf.put_slice(&self.head.split_to(n));
        if self.head.is_empty() {
            // lets go of the allocation, which an empty view would keep
            self.head = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(head: &str) -> Option<bool> {
        let config = ServiceConfig::default();
        judge(&BytesMut::from(head), &config).map(|r| r.is_ok())
    }

    #[actix_web::test]
    async fn only_a_whole_bodiless_get_of_an_event_stream_is_taken() {
        let host = "Host: f\r\n";
        for path in ["/v1/logins/x/events", "/v1/watch/t/events?last_event_id=3"] {
            assert_eq!(
                judged(&format!("GET {path} HTTP/1.1\r\n{host}\r\n")),
                Some(true),
                "{path}"
            );
        }
        for head in [
            format!("GET /v1/logins/x/events/ HTTP/1.1\r\n{host}\r\n"),
            format!("GET /v1/logins//events HTTP/1.1\r\n{host}\r\n"),
            format!("GET /v1/logins/x/events HTTP/1.0\r\n{host}\r\n"),
            format!("GET /v1/logins/x/events HTTP/1.1\r\n{host}Content-Length: 2\r\n\r\n{{}}"),
            format!("GET /v1/logins/x/events HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n"),
            format!("GET /v1/logins/x/events HTTP/1.1\r\n{host}Expect: 100-continue\r\n\r\n"),
            format!(
                "GET /v1/logins/x/events HTTP/1.1\r\n{host}Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"
            ),
            format!(
                "GET /v1/logins/x/events HTTP/1.1\r\n{host}\r\nGET /health/live HTTP/1.1\r\n{host}\r\n"
            ),
            format!(
                "GET /v1/logins/x/events HTTP/1.1\r\n{host}X-Padding: {}\r\n\r\n",
                "x".repeat(HEAD_LIMIT)
            ),
            format!("HEAD /v1/logins/x/events HTTP/1.1\r\n{host}\r\n"),
            format!("POST /v1/logins HTTP/1.1\r\n{host}\r\n"),
            "GET /v1/logins/x/events HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(),
        ] {
            assert_eq!(judged(&head), Some(false), "{head:.120}");
        }
        // a start that may still become one is read further
        for head in ["G", "GET /v1/wat", "GET /v1/logins/x/events HTTP/1.1\r\nHo"] {
            assert_eq!(judged(head), None, "{head}");
        }
    }
}
