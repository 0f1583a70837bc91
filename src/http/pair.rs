//! The hosted pairing page: `<facepair-pairing>` (`http/sdk.rs`) on a page of its own, served
//! with a strict Content Security Policy. It may be framed only by the origins in
//! `FACEPAIR_FRAME_ANCESTORS`. Its language is the login's locale, else `Accept-Language`.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::domain::locale::{self, Locale};
use crate::http::Web;
use crate::http::sdk::{self, MODULE};
use crate::http::watch;
use crate::service::{self, Context};
use crate::store::logins;

const HTML: &str = include_str!("pair/pair.html");
const CSS: &str = include_str!("pair/pair.css");
const JS: &str = include_str!("pair/pair.js");

/// The page for one watch token. Nothing secret is rendered into it: the token is the page's
/// own address, and the component reads the login through the watch API.
#[utoipa::path(
    get, path = "/pair/{watch_token}", operation_id = "pairingPage", tag = "browser",
    params(("watch_token" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String, description = "the pairing page, in the login's language or the browser's"))
)]
pub async fn page(
    state: web::Data<Context>,
    shared: web::Data<Web>,
    path: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    let login = login(&state, &shared, &req, &path).await;
    let login_locale = login
        .as_ref()
        .and_then(|row| row.locale.as_deref())
        .and_then(|l| Locale::parse(l).ok());
    let accept = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok());
    let language = locale::negotiate(login_locale.as_ref(), accept);
    let config = serde_json::json!({
        "parent_origins": state.settings.frame_ancestors,
        "return_url": state.settings.return_url.as_ref().map(url::Url::as_str),
    });
    let platform = login
        .as_ref()
        .and_then(|row| row.platform_name.as_deref())
        .or(state.settings.platform_name.as_deref())
        .map(|name| format!(" platform-name=\"{}\"", escape_attribute(name)))
        .unwrap_or_default();
    let title = sdk::MESSAGES[language]["title"]
        .as_str()
        .unwrap_or("facepair")
        .to_owned();
    let body = HTML
        .replace("{{CONFIG}}", &escape_attribute(&config.to_string()))
        .replace("{{LANG}}", language)
        .replace("{{DIR}}", locale::direction(language))
        .replace("{{TITLE}}", &escape_attribute(&title))
        .replace("{{INTEGRITY}}", &MODULE.integrity)
        .replace("{{MODULE}}", &sdk::versioned_path())
        .replace("{{PLATFORM}}", &platform)
        // last: the request's path must not reach any placeholder still unfilled
        .replace(
            "{{WATCH_URL}}",
            &escape_attribute(&format!("/pair/{}", path.as_str())),
        );
    let ancestors = if state.settings.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        state.settings.frame_ancestors.join(" ")
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                 base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
            ),
        ))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("cache-control", "no-store"))
        .insert_header(("vary", "accept-language"))
        .body(body)
}

/// The token's login, for its locale and platform name. Unknown tokens are counted against
/// the browser's address as the watch API counts them, since the page's language would
/// otherwise tell a valid token from a guess for free. An unknown or refused token, or a
/// database that does not answer, leaves the choice to the browser and the settings.
async fn login(
    state: &Context,
    shared: &Web,
    req: &HttpRequest,
    raw: &str,
) -> Option<std::sync::Arc<logins::LoginRow>> {
    let id = watch::resolve(state, shared, req, raw, |token| {
        watch::by_hash(state, token)
    })
    .await
    .ok()?;
    service::read_login(state, id).await.ok()?
}

pub async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

pub async fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type.to_owned())
        .insert_header(("cache-control", "public, max-age=300"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(body)
}

fn escape_attribute(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
