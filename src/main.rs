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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate { database } => migrate(database).await,
        Command::Dev { database, dev } => sandbox(database, dev).await,
        Command::Sim(args) => simulate(*args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facepair: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let settings = args.settings()?;
    let pool = connect(&args.database).await?;
    let app = Application::build(settings, pool).await?;
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrate(database: DatabaseArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Text);
    let pool = connect(&database).await?;
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

async fn connect(database: &DatabaseArgs) -> anyhow::Result<sqlx::PgPool> {
    use anyhow::Context as _;
    use secrecy::ExposeSecret as _;
    let options: sqlx::postgres::PgConnectOptions =
        database
            .database_url
            .expose_secret()
            .parse()
            .context("DATABASE_URL is not a valid PostgreSQL connection string")?;
    database
        .pool_options()
        .connect_with(options)
        .await
        .context("could not connect to PostgreSQL (DATABASE_URL)")
}
