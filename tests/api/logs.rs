//! What facepair's log says when PostgreSQL fails: each database error once, without
//! PostgreSQL's source lines.

use facepair::error::{ApiError, error_chain};
use sqlx::PgPool;

/// A port nothing listens on: connections to it are refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
