//! The connection pool as facepair builds it: a connection never goes back to the pool with a
//! transaction left open, and never when it is broken.

use std::time::Duration;

use facepair::config::DatabaseArgs;
use secrecy::SecretString;
use sqlx::PgPool;

/// facepair's own pool (`store::pool_options`), with one connection.
async fn single(pool: &PgPool) -> PgPool {
    let database = DatabaseArgs {
        // the connection options below are what is used; the URL is not read
        database_url: SecretString::from("unused"),
        direct_database_url: None,
        db_max_connections: 1,
        db_acquire_timeout: Duration::from_secs(5),
    };
    facepair::store::pool_options(&database)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap()
}

/// A transaction dropped before its end (a request that failed half-way) is rolled back when
/// its connection goes back to the pool, not when the connection is next used: its locks must
/// not outlive the request.
#[sqlx::test]
async fn a_dropped_transaction_releases_its_locks_at_once(pool: PgPool) {
    sqlx::query("create table held (id int primary key)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("insert into held values (1)")
        .execute(&pool)
        .await
        .unwrap();
    let app = single(&pool).await;
    let pid: i32 = {
        let mut tx = app.begin().await.unwrap();
        sqlx::query("select id from held where id = 1 for update")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("select pg_advisory_xact_lock(42)")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
        // dropped here without commit or rollback
    };
    // the pool's only connection is not used again; its transaction must end anyway
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state: Option<String> =
            sqlx::query_scalar("select state from pg_stat_activity where pid = $1")
                .bind(pid)
                .fetch_one(&pool)
                .await
                .unwrap();
        if state.as_deref() == Some("idle") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped transaction is still open: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut other = pool.begin().await.unwrap();
    sqlx::query("select id from held where id = 1 for update nowait")
        .execute(&mut *other)
        .await
        .expect("the row lock was released");
    let advisory: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock(42)")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(advisory, "the advisory lock was released");
    // and the connection is still good
    let again: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(again, pid);
}

/// A connection that broke (its backend was terminated while it sat in the pool) fails its
/// query once and is closed, not handed out again.
#[sqlx::test]
async fn a_broken_connection_is_not_handed_out_again(pool: PgPool) {
    let app = single(&pool).await;
    let first: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&app)
        .await
        .unwrap();
    let terminated: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(terminated);
    // the pool's idle connection is dead: its next query fails
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sqlx::query_scalar::<_, i32>("select pg_backend_pid()")
        .fetch_one(&app)
        .await
        .is_ok_and(|pid| pid == first)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the terminated backend still answers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // and the pool replaced it rather than handing it out again
    for _ in 0..3 {
        let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&app)
            .await
            .expect("a fresh connection");
        assert_ne!(pid, first);
    }
}
