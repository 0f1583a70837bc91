//! `facepair dev`: the sandbox. Applies migrations, starts the iDenfy simulator and facepair
//! wired to each other with generated secrets, and a demo platform page that logs a person in
//! through facepair the way a real platform's backend would.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::PgPool;

use crate::app::Application;
use crate::config::Settings;
use crate::domain::Lifetime;
use crate::domain::outbound::WebhookSecret;
use crate::sim::state::Eligibility;
use crate::sim::{SimConfig, Simulator};

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where facepair serves.
    #[arg(
        long,
        env = "FACEPAIR_LISTEN",
        value_name = "FACEPAIR_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Where the iDenfy simulator serves.
    #[arg(
        long,
        env = "FACEPAIR_SIM_LISTEN",
        value_name = "FACEPAIR_SIM_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    pub sim_listen: SocketAddr,
    /// Where the demo platform page serves.
    #[arg(
        long,
        env = "FACEPAIR_DEMO_LISTEN",
        value_name = "FACEPAIR_DEMO_LISTEN",
        default_value = "127.0.0.1:8070"
    )]
    pub demo_listen: SocketAddr,
    /// The API key the sandbox accepts; a fresh one when unset.
    #[arg(long, env = "FACEPAIR_DEV_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The key the simulator signs its webhooks with; a fresh one when unset.
    #[arg(long, env = "FACEPAIR_DEV_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
}

/// A scanRef the simulator knows as ready for face authentication.
pub const DEMO_SCAN_REF: &str = "demo-verified-person";
/// A scanRef that must first complete a full identity verification.
pub const DEMO_UNVERIFIED_SCAN_REF: &str = "demo-unverified-person";

/// The message for a listener that could not be bound, naming what changes its address.
fn taken(what: &str, address: SocketAddr, variable: &str, flag: &str) -> String {
    format!("{what} cannot listen on {address} (set {variable} or pass {flag} to use another)")
}

fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub async fn run(args: DevArgs, pool: PgPool) -> anyhow::Result<()> {
    crate::MIGRATOR.run(&pool).await?;
    let api_key = args.api_key.unwrap_or_else(|| secret("fp_dev_"));
    let idenfy_key = secret("sim_key_");
    let idenfy_secret = secret("sim_secret_");
    let signing_key = args.signing_key.unwrap_or_else(|| secret("sim_signing_"));
    let mut event_key = [0u8; 32];
    rand::rng().fill_bytes(&mut event_key);
    let event_secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(event_key)
    );

    let mut sim_config = SimConfig::for_tests(&idenfy_key, &idenfy_secret, &signing_key);
    sim_config.listen = args.sim_listen;
    sim_config.webhook_retry_delay = Duration::from_secs(2);
    sim_config.expiry_tick = Duration::from_millis(500);
    sim_config.scan_refs = vec![
        (DEMO_SCAN_REF.to_owned(), Eligibility::Authentication),
        (
            DEMO_UNVERIFIED_SCAN_REF.to_owned(),
            Eligibility::Identification,
        ),
    ];
    let sim = Simulator::start(sim_config).await.with_context(|| {
        taken(
            "the simulator",
            args.sim_listen,
            "FACEPAIR_SIM_LISTEN",
            "--sim-listen",
        )
    })?;

    let settings = Settings {
        listen: args.listen,
        public_url: None,
        api_keys: vec![SecretString::from(api_key.clone())],
        idenfy_base_url: sim.base_url().parse()?,
        idenfy_api_key: SecretString::from(idenfy_key),
        idenfy_api_secret: SecretString::from(idenfy_secret),
        idenfy_signing_keys: vec![SecretString::from(signing_key)],
        idenfy_timeout: Duration::from_secs(8),
        code_lifetime: Lifetime::from_seconds(300).expect("static lifetime"),
        max_attempts_per_login: 3,
        max_attempts_per_scan_ref_hour: 30,
        max_attempts_per_scan_ref_hour_total: 60,
        approval_ttl: Duration::from_secs(120),
        poll_interval_seconds: 2,
        webhook_max_bytes: 64 * 1024,
        expiry_interval: Duration::from_secs(1),
        frame_ancestors: vec![format!("http://127.0.0.1:{}", args.demo_listen.port())],
        return_url: None,
        platform_name: Some("Acme Desktop".into()),
        retention: Default::default(),
        limits: Default::default(),
        trusted_proxies: Default::default(),
        workers: None,
        // the demo platform's backend is told of every event, signed with a secret of its own
        events: crate::config::Events {
            endpoints: vec![
                format!("http://127.0.0.1:{}/demo/events", args.demo_listen.port()).parse()?,
            ],
            secrets: vec![WebhookSecret::parse(&event_secret).map_err(anyhow::Error::msg)?],
            allow_private_http: true,
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
        reconcile_after: Some(Duration::from_secs(5)),
    };
    let app = Application::build(settings, pool)
        .await
        .with_context(|| taken("facepair", args.listen, "FACEPAIR_LISTEN", "--listen"))?;
    // where this machine reaches facepair: an unspecified address serves loopback too, and
    // an IPv6 address needs its brackets in a URL
    let reachable = match args.listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let facepair_url = format!("http://{}", SocketAddr::new(reachable, app.port()));
    sim.set_webhook_url(&format!("{facepair_url}/v1/webhooks/idenfy"));

    let demo = Demo {
        facepair_url: facepair_url.clone(),
        api_key: SecretString::from(api_key.clone()),
        http: reqwest::Client::new(),
        phone_url: format!("{}/_sim/app", sim.base_url()),
        event_secret: WebhookSecret::parse(&event_secret).map_err(anyhow::Error::msg)?,
        inbox: Default::default(),
    };
    let demo_server = HttpServer::new({
        let demo = web::Data::new(demo);
        move || {
            App::new()
                .app_data(demo.clone())
                .route("/", web::get().to(demo_page))
                .route("/demo/config", web::get().to(demo_config))
                .route("/demo/logins", web::post().to(demo_create))
                .route("/demo/logins/{id}", web::get().to(demo_get))
                .route("/demo/logins/{id}/{action}", web::post().to(demo_action))
                .route("/demo/events", web::post().to(demo_event))
                .route("/demo/events", web::get().to(demo_inbox))
        }
    })
    .bind(args.demo_listen)
    .with_context(|| {
        taken(
            "the demo page",
            args.demo_listen,
            "FACEPAIR_DEMO_LISTEN",
            "--demo-listen",
        )
    })?
    .workers(1)
    .run();
    let demo_port = args.demo_listen.port();

    println!(
        "\nfacepair sandbox is running (Ctrl-C stops everything)\n\n  \
         demo platform   http://127.0.0.1:{demo_port}/      <- open this, click \"Sign in with your face\"\n  \
         phone (iDenfy)  {}/_sim/app   <- enter the code here\n  \
         facepair API    {facepair_url}   (API key: {api_key})\n  \
         OpenAPI         {facepair_url}/openapi.json\n  \
         simulator       {}/_sim/sessions\n\n  \
         try it with curl:\n    curl -s -X POST {facepair_url}/v1/logins -H 'authorization: Bearer {api_key}' \\\n      \
         -H 'content-type: application/json' -d '{{\"scan_ref\": \"{DEMO_SCAN_REF}\"}}'\n",
        sim.base_url(),
        sim.base_url()
    );

    let (a, b, c) = tokio::join!(
        app.run_until_stopped(),
        sim.run_until_stopped(),
        demo_server
    );
    a?;
    b?;
    c?;
    Ok(())
}

struct Demo {
    facepair_url: String,
    api_key: SecretString,
    http: reqwest::Client,
    phone_url: String,
    /// The secret facepair signs pushed events with, as the platform's backend keeps it.
    event_secret: WebhookSecret,
    /// The last events pushed, newest first, each with its signature check.
    inbox: std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>,
}

/// The demo backend's event receiver: checks the Standard Webhooks signature and timestamp
/// as a platform would, keeps the event for the page, and answers 204 (401 if refused).
async fn demo_event(demo: web::Data<Demo>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let problem = match timestamp.parse::<i64>() {
        Err(_) => Some("no webhook-timestamp"),
        Ok(t) if (chrono::Utc::now().timestamp() - t).abs() > 300 => Some("timestamp too old"),
        Ok(t) => {
            let expected = demo.event_secret.sign(&id, t, &body);
            let matched = signatures.split(' ').any(|s| {
                use subtle::ConstantTimeEq as _;
                s.len() == expected.len() && bool::from(s.as_bytes().ct_eq(expected.as_bytes()))
            });
            (!matched).then_some("no signature matches")
        }
    };
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut inbox = demo.inbox.lock().expect("inbox");
    inbox.push_front(serde_json::json!({
        "received_at": chrono::Utc::now(),
        "id": id,
        "type": event["type"],
        "login_id": event["data"]["login_id"],
        "verified": problem.is_none(),
        "problem": problem,
    }));
    inbox.truncate(50);
    match problem {
        None => HttpResponse::NoContent().finish(),
        Some(p) => HttpResponse::Unauthorized().body(p),
    }
}

async fn demo_inbox(demo: web::Data<Demo>) -> HttpResponse {
    let inbox = demo.inbox.lock().expect("inbox");
    HttpResponse::Ok().json(inbox.iter().collect::<Vec<_>>())
}

async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("dev/demo.html"))
}

async fn demo_config(demo: web::Data<Demo>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "phone_url": demo.phone_url, "facepair_url": demo.facepair_url, "scan_ref": DEMO_SCAN_REF, "unverified_scan_ref": DEMO_UNVERIFIED_SCAN_REF }))
}

/// The demo's backend calls facepair with the API key, as a platform's backend does; the
/// browser never sees the key.
async fn forward(demo: &Demo, request: reqwest::RequestBuilder) -> HttpResponse {
    let response = request
        .bearer_auth(demo.api_key.expose_secret())
        .send()
        .await;
    match response {
        Ok(r) => {
            let status = actix_web::http::StatusCode::from_u16(r.status().as_u16()).unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = r.bytes().await.unwrap_or_default();
            let mut out = HttpResponse::build(status);
            if let Some(etag) = etag {
                out.insert_header(("etag", etag));
            }
            out.content_type("application/json").body(body)
        }
        Err(_) => HttpResponse::BadGateway().json(serde_json::json!({ "error": { "code": "facepair_unreachable", "message": "facepair did not answer" } })),
    }
}

async fn demo_create(
    demo: web::Data<Demo>,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let mut body = body.into_inner();
    // the demo platform is reached directly, never through a proxy
    let desktop = crate::http::client_ip(&req, &Default::default());
    body["client_ip"] = serde_json::json!(desktop.map(|ip| ip.to_string()));
    body["user_agent"] = serde_json::json!(
        req.headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
    );
    body["user_ref"] = serde_json::json!("demo-user");
    forward(
        &demo,
        demo.http
            .post(format!("{}/v1/logins", demo.facepair_url))
            .json(&body),
    )
    .await
}

async fn demo_get(
    demo: web::Data<Demo>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let mut request = demo.http.get(format!(
        "{}/v1/logins/{}?{}",
        demo.facepair_url,
        path,
        req.query_string()
    ));
    if let Some(v) = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
    {
        request = request.header("if-none-match", v);
    }
    forward(&demo, request).await
}

async fn demo_action(demo: web::Data<Demo>, path: web::Path<(String, String)>) -> HttpResponse {
    let (id, action) = path.into_inner();
    if !matches!(action.as_str(), "attempts" | "redeem" | "cancel") {
        return HttpResponse::NotFound().finish();
    }
    forward(
        &demo,
        demo.http
            .post(format!("{}/v1/logins/{id}/{action}", demo.facepair_url)),
    )
    .await
}
