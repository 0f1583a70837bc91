//! The pairing component's module, the page's languages, and the watch API as other origins
//! see it: over real HTTP against the real server, with the simulator as iDenfy.

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha384};
use sqlx::PgPool;

use crate::e2e::Sandbox;
use crate::helpers::*;

/// The hash integrators copy from the README is the served file's, and the module may be
/// loaded, cached and revalidated from another origin.
#[sqlx::test]
async fn the_module_is_served_to_any_origin_with_the_readmes_integrity_hash(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = app.url("/sdk/v1/facepair-pairing.js");
    let response = app
        .http
        .get(&url)
        .header("origin", "https://platform.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["cache-control"], "public, no-cache");
    // at its versioned URL, the one the hosted page uses, the module may be cached for good
    let etag = headers["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let versioned = app
        .http
        .get(format!("{url}?v={etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        versioned.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let stale = app.http.get(format!("{url}?v=0")).send().await.unwrap();
    assert_eq!(stale.headers()["cache-control"], "public, no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let body = response.bytes().await.unwrap();
    let integrity = format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha384::digest(&body))
    );
    assert_eq!(headers["x-facepair-integrity"], integrity.as_str());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&format!("integrity=\"{integrity}\"")),
        "README.md must publish the module's hash: integrity=\"{integrity}\""
    );
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("customElements.define('facepair-pairing'"));
    assert!(!text.contains("/*CATALOGS*/"), "the messages are built in");
    let again = app
        .http
        .get(&url)
        .header("if-none-match", headers["etag"].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
}

fn lang_of(page: &str) -> (String, String) {
    let tag = page.lines().find(|l| l.starts_with("<html")).unwrap();
    let attr = |name: &str| {
        tag.split(&format!("{name}=\""))
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    };
    (attr("lang"), attr("dir"))
}

async fn page(app: &TestApp, watch_url: &str, accept_language: Option<&str>) -> String {
    let mut request = app.http.get(watch_url);
    if let Some(a) = accept_language {
        request = request.header("accept-language", a);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["vary"], "accept-language");
    response.text().await.unwrap()
}

/// The login's locale decides the page's language, then the browser's Accept-Language;
/// Arabic reads right to left; a token nobody knows still gets the browser's language.
#[sqlx::test]
async fn the_page_speaks_the_logins_language_else_the_browsers(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.platform_name = Some("Acme <Desk>".into()),
    )
    .await;
    let german = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "locale": "de-AT" }))
        .await;
    let url = german["watch_url"].as_str().unwrap();
    let html = page(&sb.app, url, Some("fr-FR,fr;q=0.9")).await;
    assert_eq!(lang_of(&html), ("de".into(), "ltr".into()));
    assert!(
        html.contains("<title>Mit Ihrem Gesicht anmelden</title>"),
        "{html}"
    );
    assert!(
        html.contains("platform-name=\"Acme &lt;Desk&gt;\""),
        "escaped: {html}"
    );

    let unspecified = sb.app.login_with(json!({ "scan_ref": SCAN_REF })).await;
    let url = unspecified["watch_url"].as_str().unwrap();
    for (accept, want) in [
        (Some("pl-PL,pl;q=0.9,en;q=0.8"), ("pl", "ltr")),
        (Some("da, ar;q=0.7"), ("ar", "rtl")),
        (Some("ko"), ("en", "ltr")),
        (None, ("en", "ltr")),
    ] {
        let html = page(&sb.app, url, accept).await;
        assert_eq!(lang_of(&html), (want.0.into(), want.1.into()), "{accept:?}");
    }
    let unknown = sb.app.url("/pair/fpw_nobody_has_this_token_at_all_0000000");
    assert_eq!(
        lang_of(&page(&sb.app, &unknown, Some("lt")).await),
        ("lt".into(), "ltr".into())
    );
}

/// The page's language tells a known token from a guess, so the page counts unknown tokens
/// against the address as the watch API does: guessing through it is refused just the same.
#[sqlx::test]
async fn guessing_tokens_through_the_page_is_counted(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |s| s.limits.watch_misses_per_ip = 2).await;
    for n in 0..3 {
        let html = page(
            &app,
            &app.url(&format!("/pair/fpw_guess_{n}_000000000000000000000000000")),
            Some("pl"),
        )
        .await;
        assert_eq!(lang_of(&html).0, "pl", "the page itself is served");
    }
    let response = app
        .http
        .get(app.url("/v1/watch/fpw_guess_3_000000000000000000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["limit"], "watch_misses_per_ip");
}

/// A platform's language tag reaches iDenfy as iDenfy's own code, and a language iDenfy
/// lacks is left out rather than have the session refused.
#[sqlx::test]
async fn locales_reach_idenfy_in_its_own_codes(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    for (given, sent) in [
        ("pt-BR", json!("pt")),
        ("sl", json!("si")),
        ("nb-NO", json!("no")),
        ("zh-Hant-TW", json!("zh_tw")),
        ("LT", json!("lt")),
        ("ar", Value::Null),
    ] {
        let login = sb
            .app
            .login_with(json!({ "scan_ref": SCAN_REF, "locale": given }))
            .await;
        let state = sb.app.state(login["login_id"].as_str().unwrap()).await;
        assert_eq!(state["locale"], canonical(given), "stored as given");
        let sessions = sb.sessions().await;
        assert_eq!(sessions.last().unwrap()["locale"], sent, "{given}");
    }
    let response = sb
        .app
        .create_login(json!({ "scan_ref": SCAN_REF, "locale": "en glish" }))
        .await;
    assert_eq!(response.status(), 422);
}

fn canonical(tag: &str) -> &str {
    match tag {
        "LT" => "lt",
        other => other,
    }
}

/// A page of another origin may read, follow and end a login with its watch token, and
/// never learns the login id.
#[sqlx::test]
async fn the_watch_api_answers_other_origins_and_the_browser_may_cancel(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    let token = login["watch_token"].as_str().unwrap();
    let id = login["login_id"].as_str().unwrap();
    let watch = sb.app.url(&format!("/v1/watch/{token}"));
    let response = sb
        .app
        .http
        .get(&watch)
        .header("origin", "https://platform.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("etag")
    );
    let preflight = sb
        .app
        .http
        .request(reqwest::Method::OPTIONS, format!("{watch}/events"))
        .header("origin", "https://platform.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(
        preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("last-event-id")
    );

    for _ in 0..2 {
        let canceled = sb
            .app
            .http
            .post(format!("{watch}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(canceled.status(), 200, "canceling twice is harmless");
        assert_eq!(canceled.headers()["access-control-allow-origin"], "*");
        let body: Value = canceled.json().await.unwrap();
        assert_eq!(body["status"], "canceled");
        assert!(body.get("login_id").is_none() && body.get("scan_ref").is_none());
    }
    assert_eq!(sb.app.state(id).await["status"], "canceled");
    // the phone's result for a canceled login changes nothing, and the simulated phone says so
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    let phone: Value = sb.phone(code, "SUCCESS", None).await.json().await.unwrap();
    assert_eq!(phone["receiverVerdict"], "late", "{phone}");
    assert_eq!(sb.app.state(id).await["status"], "canceled");

    let unknown = sb
        .app
        .http
        .post(
            sb.app
                .url("/v1/watch/fpw_nobody_has_this_token_at_all_0000000/cancel"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.headers()["access-control-allow-origin"], "*");
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "watch_token_not_found");

    // a redeemed login cannot be canceled from the browser
    let login = sb.app.login().await;
    let token = login["watch_token"].as_str().unwrap();
    let id = login["login_id"].as_str().unwrap();
    sb.phone(
        login["attempt"]["digit_string"].as_str().unwrap(),
        "SUCCESS",
        None,
    )
    .await;
    let approved = sb.wait_for(id, "approved").await;
    assert_eq!(approved["attempt"]["network_match"], "different");
    assert_eq!(
        sb.app
            .post(&format!("/v1/logins/{id}/redeem"))
            .await
            .status(),
        200
    );
    let late = sb
        .app
        .http
        .post(sb.app.url(&format!("/v1/watch/{token}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["error"]["code"], "already_redeemed");
}

/// What the pairing page shows about a login is the platform's, per login: its name (over
/// FACEPAIR_PLATFORM_NAME) and the desktop's place, both in the browser's document; the
/// place is identity data that retention removes.
#[sqlx::test]
async fn a_login_carries_the_platforms_name_and_the_desktops_place(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.platform_name = Some("Configured".into()),
    )
    .await;
    let login = sb
        .app
        .login_with(json!({
            "scan_ref": SCAN_REF, "platform_name": "  Acme Bank ", "desktop_place": "Vilnius, Lithuania"
        }))
        .await;
    let token = login["watch_token"].as_str().unwrap();
    let doc: Value = sb
        .app
        .http
        .get(sb.app.url(&format!("/v1/watch/{token}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["platform_name"], "Acme Bank", "trimmed");
    assert_eq!(doc["desktop_place"], "Vilnius, Lithuania");
    let html = page(&sb.app, login["watch_url"].as_str().unwrap(), None).await;
    assert!(html.contains("platform-name=\"Acme Bank\""), "{html}");
    let plain = sb.app.login_with(json!({ "scan_ref": SCAN_REF })).await;
    let html = page(&sb.app, plain["watch_url"].as_str().unwrap(), None).await;
    assert!(html.contains("platform-name=\"Configured\""), "{html}");

    let place: Option<String> =
        sqlx::query_scalar("select desktop_place from logins where id = $1::uuid")
            .bind(login["login_id"].as_str().unwrap())
            .fetch_one(&sb.app.pool)
            .await
            .unwrap();
    assert_eq!(place.as_deref(), Some("Vilnius, Lithuania"));
}
