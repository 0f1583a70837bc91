//! What facepair's log says when PostgreSQL fails: where a refused connection went (never its
//! password), and each database error once, without PostgreSQL's source lines.

use std::time::Duration;

use facepair::error::{ApiError, error_chain};
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpListener;

use crate::helpers::*;

/// A port nothing listens on: connections to it are refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(database_url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_facepair"));
    command
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("FACEPAIR_DB_ACQUIRE_TIMEOUT_MS", "500")
        .env("FACEPAIR_API_KEYS", API_KEY)
        .env("FACEPAIR_IDENFY_BASE_URL", "http://127.0.0.1:9")
        .env("FACEPAIR_IDENFY_API_KEY", "idenfy-key")
        .env("FACEPAIR_IDENFY_API_SECRET", "idenfy-secret")
        .env("FACEPAIR_IDENFY_SIGNING_KEYS", SIGNING_KEY)
        .env("FACEPAIR_LOG_FORMAT", "text")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn a_refused_database_at_start_up_is_named_without_its_password() {
    let port = closed_port();
    let out = serve(&format!(
        "postgres://facepair:hunter2-password@127.0.0.1:{port}/facepair"
    ))
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "could not connect to PostgreSQL (DATABASE_URL): pool timed out while waiting for an \
             open connection; a new connection to PostgreSQL at 127.0.0.1:{port}/facepair fails: \
             error communicating with database: Connection refused"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// PostgreSQL goes away under a running facepair (a proxy in front of it stops listening):
/// the request answers a generic 503, and its log line says the connection was refused, and
/// where.
#[sqlx::test]
async fn a_request_whose_pool_times_out_logs_the_refused_connection(pool: PgPool) {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    let postgres = format!(
        "{}:{}",
        pool.connect_options().get_host(),
        pool.connect_options().get_port()
    );
    let forwarding = tokio::spawn(async move {
        loop {
            let (mut client, _) = proxy.accept().await.unwrap();
            let postgres = postgres.clone();
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(postgres).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let port = closed_port();
    let mut child = serve(&format!(
        "postgres://facepair:hunter2-password@127.0.0.1:{proxy_port}/{database}"
    ))
    .env("FACEPAIR_LISTEN", format!("127.0.0.1:{port}"))
    .spawn()
    .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http
        .get(format!("{base}/health/live"))
        .send()
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "facepair serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // the proxy stops listening: new connections are refused
    forwarding.abort();
    let _ = forwarding.await;
    let response = http
        .get(format!("{base}/v1/logins/{}", uuid::Uuid::new_v4()))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");
    assert_eq!(
        body["error"]["message"],
        "the database is unavailable; retry shortly"
    );

    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = stderr
                .next_line()
                .await
                .unwrap()
                .expect("facepair still runs");
            if line.contains("request failed") {
                return line;
            }
        }
    })
    .await
    .expect("a line for the failed request");
    assert!(
        line.contains(&format!(
            "the database is unavailable: pool timed out while waiting for an open connection; \
             a new connection to PostgreSQL at 127.0.0.1:{proxy_port}/{database} fails: error \
             communicating with database: Connection refused"
        )),
        "{line}"
    );
    assert!(line.contains("code=database_unavailable"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

/// sqlx shows a PostgreSQL error as its message "at line N" (of PostgreSQL's C source), once
/// for sqlx's error and once for the error inside it.
#[sqlx::test]
async fn database_errors_are_logged_once_without_postgres_source_lines(pool: PgPool) {
    let chain = |e: sqlx::Error| error_chain(&ApiError::from(e));

    let e = sqlx::query("select 1 / 0")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(" at line "), "sqlx's own text: {e}");
    assert_eq!(
        chain(e),
        "internal error: error returned from database: division by zero (SQLSTATE 22012)"
    );

    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("set statement_timeout = 1")
        .execute(&mut *conn)
        .await
        .unwrap();
    let e = sqlx::query("select pg_sleep(1)")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(
        chain(e),
        "the database is unavailable: error returned from database: canceling statement due to \
         statement timeout (SQLSTATE 57014)"
    );

    sqlx::query("create table held (id int constraint held_once primary key)")
        .execute(&pool)
        .await
        .unwrap();
    let insert = || sqlx::query("insert into held values (1)").execute(&pool);
    insert().await.unwrap();
    assert_eq!(
        chain(insert().await.unwrap_err()),
        "internal error: error returned from database: duplicate key value violates unique \
         constraint \"held_once\" (SQLSTATE 23505, constraint held_once)"
    );

    use sqlx::Connection as _;
    let port = closed_port();
    let e = sqlx::PgConnection::connect(&format!("postgres://facepair@127.0.0.1:{port}/x"))
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(
        chain(e),
        "the database is unavailable: error communicating with database: Connection refused (os \
         error 111)"
    );
}
