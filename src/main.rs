//! The `facepair` command line. Parses flags, then hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use facepair::config::{DatabaseArgs, LogFormat, ServeArgs};
use facepair::dev::DevArgs;
use facepair::sim::{SimArgs, Simulator};
use facepair::{Application, MIGRATOR, telemetry};

#[derive(Parser)]
#[command(
    name = "facepair",
    version,
    about = "Log people in with iDenfy face authentication and a short digit code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (migrations must have been applied: `facepair migrate`).
    #[command(after_help = facepair::config::DURATIONS)]
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations, then exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// The sandbox: migrations, the iDenfy simulator, facepair and a demo platform page,
    /// wired together with generated secrets.
    Dev {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        dev: DevArgs,
    },
    /// Play iDenfy: its face-authentication API, signed webhooks, a phone page and faults.
    Sim(Box<SimArgs>),
    /// Read logins and their history (ops).
    Logins {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        command: LoginsCommand,
    },
    /// Read pushed events, their deliveries and attempts, and send them again (ops).
    Events {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Remove identity data and raw webhook bodies past their retention window.
    Purge {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Purge identity data of finished logins older than this (e.g. 90d).
        #[arg(long)]
        older_than: String,
        /// Purge raw webhook bodies older than this; defaults to --older-than.
        #[arg(long)]
        bodies_older_than: Option<String>,
    },
}

#[derive(Subcommand)]
enum LoginsCommand {
    /// Logins, newest first.
    List {
        #[arg(long)]
        scan_ref: Option<String>,
        #[arg(long)]
        user_ref: Option<String>,
        /// pending, approved, redeemed, failed, expired, canceled or exhausted.
        #[arg(long)]
        status: Option<String>,
        /// Created at or after: an RFC 3339 time or a duration ago (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Created before: an RFC 3339 time or a duration ago.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One login's whole story.
    Show {
        login_id: uuid::Uuid,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Deliveries of events to endpoints, newest event first.
    List {
        /// Events written at or after: an RFC 3339 time or a duration ago (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// pending, delivered, failed or skipped.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every request sent for one event: status, latency, error, the answer's first bytes.
    Attempts {
        event_id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Send one event again, with the same webhook-id, to every endpoint or one.
    Replay {
        event_id: uuid::Uuid,
        /// Only to the endpoint with this URL.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Enable an endpoint again (after it answered 410, or was disabled); then replay-since
    /// sends what it missed.
    Enable {
        /// The endpoint's URL, as `facepair events list` shows it.
        url: String,
    },
    /// Send every event written since a time again (after an endpoint's outage), also those
    /// never queued for an endpoint while it was disabled.
    ReplaySince {
        /// An RFC 3339 time or a duration ago (2h, 1d).
        since: String,
        /// Only to the endpoint with this URL.
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate { database } => migrate(database).await,
        Command::Dev { database, dev } => sandbox(database, dev).await,
        Command::Sim(args) => simulate(*args).await,
        Command::Logins { database, command } => logins(database, command).await,
        Command::Events { database, command } => events(database, command).await,
        Command::Purge {
            database,
            older_than,
            bodies_older_than,
        } => purge(database, older_than, bodies_older_than).await,
    };
    facepair::telemetry::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            facepair::telemetry::last_words(format!(
                "facepair: {}",
                facepair::error::error_chain(e.as_ref())
            ));
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let settings = args.settings()?;
    let pool = connect(&args.database).await?;
    // a PostgreSQL that stops answering would otherwise hold the start-up here, unlogged
    tokio::time::timeout(std::time::Duration::from_secs(30), schema_is_current(&pool))
        .await
        .map_err(|_| {
            anyhow::anyhow!("PostgreSQL did not answer which migrations it has within 30 s")
        })??;
    let session = direct_options(&args.database)?;
    let app = Application::build_with(settings, pool, session).await?;
    app.run_until_stopped().await?;
    Ok(())
}

/// Refuses a database that lacks one of this build's migrations, or holds one applied from
/// other SQL: its statements would fail, or run without the indexes they were written for.
/// Newer ones (a deploy under way) are fine.
async fn schema_is_current(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("select version, checksum from _sqlx_migrations where success")
            .fetch_all(pool)
            .await
            .or_else(|e| match e.as_database_error().and_then(|d| d.code()) {
                // undefined_table: never migrated
                Some(code) if code == "42P01" => Ok(Vec::new()),
                _ => Err(e),
            })?;
    for m in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        match applied.iter().find(|(version, _)| *version == m.version) {
            None => anyhow::bail!(
                "the database lacks migration {} ({}): run `facepair migrate`",
                m.version,
                m.description
            ),
            Some((_, checksum)) if checksum[..] != m.checksum[..] => anyhow::bail!(
                "the database's migration {} ({}) was applied from other SQL than this build's",
                m.version,
                m.description
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

async fn migrate(database: DatabaseArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Text);
    // a migration holds a session's advisory lock: not through a transaction pooler
    let direct = DatabaseArgs {
        database_url: database
            .direct_database_url
            .clone()
            .unwrap_or(database.database_url.clone()),
        direct_database_url: None,
        ..database
    };
    let pool = connect(&direct).await?;
    MIGRATOR.run(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn sandbox(database: DatabaseArgs, dev: DevArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Text);
    let pool = connect(&database).await?;
    facepair::dev::run(dev, pool).await
}

async fn simulate(args: SimArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Text);
    let sim = Simulator::start(args.config()?).await?;
    println!(
        "iDenfy simulator on {} (phone page: {}/_sim/app)",
        sim.base_url(),
        sim.base_url()
    );
    sim.run_until_stopped().await?;
    Ok(())
}

async fn logins(database: DatabaseArgs, command: LoginsCommand) -> anyhow::Result<()> {
    use facepair::ops::{parse_since, report};
    let pool = connect(&database).await?;
    match command {
        LoginsCommand::List {
            scan_ref,
            user_ref,
            status,
            since,
            until,
            limit,
            json,
        } => {
            use facepair::domain::LoginStatus;
            let status = status
                .map(|s| {
                    LoginStatus::parse(&s).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--status: {s:?} is not a login status ({})",
                            LoginStatus::ALL.map(LoginStatus::as_str).join(", ")
                        )
                    })
                })
                .transpose()?;
            let filter = report::ListFilter {
                login_id: None,
                scan_ref,
                user_ref,
                status,
                since: since
                    .as_deref()
                    .map(parse_since)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--since: {e}"))?,
                until: until
                    .as_deref()
                    .map(parse_since)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--until: {e}"))?,
                limit: limit.clamp(1, 10_000),
            };
            let rows = report::list(&pool, &filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", report::render_list(&rows));
            }
        }
        LoginsCommand::Show { login_id, json } => {
            let Some((summary, timeline)) = report::show(&pool, login_id).await? else {
                anyhow::bail!("no login {login_id}");
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "login": summary, "timeline": timeline })
                    )?
                );
            } else {
                print!("{}", report::render_show(&summary, &timeline));
            }
        }
    }
    Ok(())
}

async fn events(database: DatabaseArgs, command: EventsCommand) -> anyhow::Result<()> {
    use facepair::ops::{events, parse_since};
    let pool = connect(&database).await?;
    match command {
        EventsCommand::List {
            since,
            state,
            limit,
            json,
        } => {
            let since = since
                .as_deref()
                .map(parse_since)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            if let Some(s) = state.as_deref()
                && !["pending", "delivered", "failed", "skipped"].contains(&s)
            {
                anyhow::bail!("--state: {s:?} is not pending, delivered, failed or skipped");
            }
            let rows = events::list(&pool, since, state.as_deref(), limit.clamp(1, 10_000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", events::render_list(&rows));
            }
        }
        EventsCommand::Attempts { event_id, json } => {
            let rows = events::attempts(&pool, event_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", events::render_attempts(&rows));
            }
        }
        EventsCommand::Replay { event_id, endpoint } => {
            let done = events::replay(&pool, Some(event_id), None, endpoint.as_deref()).await?;
            if done.queued + done.in_flight == 0 {
                anyhow::bail!("no delivery of event {event_id} to replay");
            }
            println!("{}", events::render_replayed(done));
            if done.queued == 0 {
                anyhow::bail!(
                    "event {event_id} is being pushed now; replay it once that push is recorded"
                );
            }
        }
        EventsCommand::Enable { url } => {
            if !events::enable_endpoint(&pool, &url).await? {
                anyhow::bail!("no event endpoint {url}");
            }
            println!("enabled {url}");
        }
        EventsCommand::ReplaySince { since, endpoint } => {
            let since = parse_since(&since).map_err(|e| anyhow::anyhow!("since: {e}"))?;
            let done = events::replay(&pool, None, Some(since), endpoint.as_deref()).await?;
            println!("{}", events::render_replayed(done));
        }
    }
    Ok(())
}

async fn purge(
    database: DatabaseArgs,
    older_than: String,
    bodies_older_than: Option<String>,
) -> anyhow::Result<()> {
    use facepair::ops::parse_duration;
    let identity = parse_duration(&older_than).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    let bodies = match bodies_older_than {
        Some(b) => parse_duration(&b).map_err(|e| anyhow::anyhow!("--bodies-older-than: {e}"))?,
        None => identity,
    };
    let pool = connect(&database).await?;
    let purged = facepair::ops::retention::purge(&pool, identity, bodies).await?;
    println!(
        "purged identity data of {} logins ({} attempts), {} raw webhook bodies and {} event push records",
        purged.logins, purged.attempts, purged.delivery_bodies, purged.push_records
    );
    Ok(())
}

/// `FACEPAIR_DIRECT_DATABASE_URL`'s options, if it is set.
fn direct_options(
    database: &DatabaseArgs,
) -> anyhow::Result<Option<sqlx::postgres::PgConnectOptions>> {
    use anyhow::Context as _;
    use secrecy::ExposeSecret as _;
    database
        .direct_database_url
        .as_ref()
        .map(|url| url.expose_secret().parse())
        .transpose()
        .context("FACEPAIR_DIRECT_DATABASE_URL is not a valid PostgreSQL connection string")
}

async fn connect(database: &DatabaseArgs) -> anyhow::Result<sqlx::PgPool> {
    use anyhow::Context as _;
    use secrecy::ExposeSecret as _;
    let options: sqlx::postgres::PgConnectOptions =
        database
            .database_url
            .expose_secret()
            .parse()
            .context("DATABASE_URL is not a valid PostgreSQL connection string")?;

    match facepair::store::pool_options(database)
        .connect_with(options.clone())
        .await
    {
        // the pool retried a refused connection until it timed out, and says only that
        Err(e @ sqlx::Error::PoolTimedOut) => {
            let why = facepair::store::probe::why_no_connection(&options).await;
            anyhow::bail!("could not connect to PostgreSQL (DATABASE_URL): {e}; {why}")
        }
        connected => connected.context("could not connect to PostgreSQL (DATABASE_URL)"),
    }
}
