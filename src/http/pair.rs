//! The hosted pairing page: plain HTML, CSS and JS, served with a strict Content Security
//! Policy. It may be framed only by the origins in `FACEPAIR_FRAME_ANCESTORS`.

use actix_web::{HttpResponse, web};

use crate::service::Context;

const HTML: &str = include_str!("pair/pair.html");
const CSS: &str = include_str!("pair/pair.css");
const JS: &str = include_str!("pair/pair.js");

/// The page for one watch token. The token is read by the page's script from the URL; the
/// server renders nothing secret into it.
#[utoipa::path(
    get, path = "/pair/{watch_token}", operation_id = "pairingPage", tag = "browser",
    params(("watch_token" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String, description = "the pairing page"))
)]
pub async fn page(state: web::Data<Context>) -> HttpResponse {
    let config = serde_json::json!({
        "parent_origins": state.settings.frame_ancestors,
        "return_url": state.settings.return_url.as_ref().map(url::Url::as_str),
    });
    let body = HTML.replace("{{CONFIG}}", &escape_attribute(&config.to_string()));
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
        .body(body)
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
