//! code_reservations: codes being issued. A reservation counts in a scan_ref's hourly budgets
//! from before iDenfy is called until the transaction that stores the code removes it.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub struct NewReservation<'a> {
    pub id: Uuid,
    pub login_id: Uuid,
    pub scan_ref: &'a str,
    /// The address bucket that asked (`domain::network::bucket`), or `unknown`.
    pub requested_from: &'a str,
    /// How long the reservation holds if it is never removed (its instance died).
    pub lease_secs: f64,
}

/// Codes a scan_ref was issued in the last hour, reservations included: from one address and
/// from all, each with when its budget next has room (the hour after the `budget`-th newest
/// code; `None` while fewer were issued); and whether the reservation was taken.
pub struct Used {
    pub from_address: i64,
    pub total: i64,
    pub address_frees_at: Option<DateTime<Utc>>,
    pub total_frees_at: Option<DateTime<Utc>>,
    pub reserved: bool,
}

/// Counts what `r.scan_ref` used of its hourly budgets (`per_address` codes from
/// `r.requested_from`, `total` from everywhere) and, if both have room, reserves a code for
/// `r.login_id`: not taken while another is being issued for the same login, unless that
/// one's lease ended. The caller took the scan_ref's lock in an earlier statement of its
/// transaction, so this one's snapshot sees every code counted before it.
pub async fn reserve(
    conn: &mut PgConnection,
    r: &NewReservation<'_>,
    per_address: i64,
    total: i64,
) -> Result<Used, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        with recent as (
            select a.created_at as at, a.created_at + interval '1 hour' as frees,
                   a.requested_from = $2 as from_address
            from attempts a join logins l on l.id = a.login_id
            where l.scan_ref = $1 and a.created_at > now() - interval '1 hour'
            union all
            -- a code being issued frees its place when its lease ends at the latest
            select created_at, expires_at, requested_from = $2 from code_reservations
            where scan_ref = $1 and expires_at > now()
        ), ranked as (
            select at, frees, coalesce(from_address, false) as from_address,
                   row_number() over (order by at desc) as newest,
                   row_number() over (partition by coalesce(from_address, false) order by at desc) as newest_here
            from recent
        ), used as (
            select count(*) filter (where from_address) as from_address,
                   count(*) as total,
                   max(frees) filter (where from_address and newest_here = $3) as address_frees_at,
                   max(frees) filter (where newest = $4) as total_frees_at
            from ranked
        ), taken as (
            insert into code_reservations (id, login_id, scan_ref, requested_from, expires_at)
            select $5, $6, $1, $2, now() + make_interval(secs => $7) from used
            where used.from_address < $3 and used.total < $4
            on conflict (login_id) where not spent do update
                set id = excluded.id, scan_ref = excluded.scan_ref,
                    requested_from = excluded.requested_from, created_at = now(),
                    expires_at = excluded.expires_at
                where code_reservations.expires_at <= now()
            returning id
        )
        select from_address as "from_address!", total as "total!", address_frees_at,
               total_frees_at, exists(select from taken) as "reserved!"
        from used
        "#,
        r.scan_ref,
        r.requested_from,
        per_address,
        total,
        r.id,
        r.login_id,
        r.lease_secs
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Used {
        from_address: row.from_address,
        total: row.total,
        address_frees_at: row.address_frees_at,
        total_frees_at: row.total_frees_at,
        reserved: row.reserved,
    })
}

/// Removes a reservation: in the transaction that stores its code, or to release it. False
/// if it was gone.
pub async fn remove(conn: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query!("delete from code_reservations where id = $1", id)
        .execute(conn)
        .await?;
    Ok(removed.rows_affected() == 1)
}

/// Keeps a reservation whose session iDenfy may have created but facepair could not store:
/// it counts in the budgets for the hour, and no longer holds its login.
pub async fn spend(conn: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"update code_reservations set spent = true, expires_at = created_at + interval '1 hour'
           where id = $1"#,
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets reservations whose instance died long ago.
pub async fn prune(conn: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query!("delete from code_reservations where expires_at < now() - interval '1 hour'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
