//! `GET /sdk/v1/facepair-pairing.js`: the `<facepair-pairing>` custom element, an ES module that
//! any origin may load (the hosted page uses it too), with every language's messages built in.
//! Messages are JSON catalogs (`sdk/messages/`): the browser reads them with no parser to ship.

use std::sync::LazyLock;

use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha384};

const SOURCE: &str = include_str!("sdk/facepair-pairing.js");
const PLACEHOLDER: &str = "/*CATALOGS*/{}";

/// Each language's catalog, as written. English is complete; the others may lack a message.
pub const CATALOGS: [(&str, &str); 14] = [
    ("en", include_str!("sdk/messages/en.json")),
    ("de", include_str!("sdk/messages/de.json")),
    ("fr", include_str!("sdk/messages/fr.json")),
    ("es", include_str!("sdk/messages/es.json")),
    ("lt", include_str!("sdk/messages/lt.json")),
    ("pl", include_str!("sdk/messages/pl.json")),
    ("ar", include_str!("sdk/messages/ar.json")),
    ("it", include_str!("sdk/messages/it.json")),
    ("pt", include_str!("sdk/messages/pt.json")),
    ("nl", include_str!("sdk/messages/nl.json")),
    ("ru", include_str!("sdk/messages/ru.json")),
    ("uk", include_str!("sdk/messages/uk.json")),
    ("sv", include_str!("sdk/messages/sv.json")),
    ("cs", include_str!("sdk/messages/cs.json")),
];

/// The module as served, its ETag and its Subresource Integrity value.
pub struct Module {
    pub body: String,
    pub etag: String,
    pub integrity: String,
}

pub static MODULE: LazyLock<Module> = LazyLock::new(build);

/// [`merged`], made once: the hosted page reads its title from it.
pub static MESSAGES: LazyLock<Map<String, Value>> = LazyLock::new(merged);

fn parse(language: &str, text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => panic!("sdk/messages/{language}.json is not a JSON object"),
    }
}

/// Each language's messages over English's: a message a language lacks is English's, and a
/// key English lacks is dropped, so the browser never shows a key.
pub fn merged() -> Map<String, Value> {
    let english = parse("en", CATALOGS[0].1);
    CATALOGS
        .iter()
        .map(|(language, text)| {
            let own = parse(language, text);
            let messages: Map<String, Value> = english
                .iter()
                .map(|(key, en)| (key.clone(), own.get(key).unwrap_or(en).clone()))
                .collect();
            ((*language).to_owned(), Value::Object(messages))
        })
        .collect()
}

fn build() -> Module {
    assert!(SOURCE.contains(PLACEHOLDER));
    let body = SOURCE.replacen(PLACEHOLDER, &Value::Object(MESSAGES.clone()).to_string(), 1);
    let digest = Sha384::digest(body.as_bytes());
    let integrity = format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    let etag = format!("\"{}\"", hex::encode(&digest[..12]));
    Module {
        body,
        etag,
        integrity,
    }
}

/// This release's module at a URL of its own (`?v=` its ETag), which may be cached for good.
pub fn versioned_path() -> String {
    format!(
        "/sdk/v1/facepair-pairing.js?v={}",
        MODULE.etag.trim_matches('"')
    )
}

/// The module, loadable from any origin (it carries nothing secret), with its integrity value
/// in a header too. At its versioned URL it is cached for a year; at the plain one it is
/// revalidated by ETag on every use, so a page pinning a new integrity value never meets an old
/// module in a cache.
#[utoipa::path(
    get, path = "/sdk/v1/facepair-pairing.js", operation_id = "pairingComponent", tag = "browser",
    responses(
        (status = 200, content_type = "text/javascript", body = String, description = "the `<facepair-pairing>` custom element", headers(("ETag" = String))),
        (status = 304, description = "unchanged since If-None-Match"),
    )
)]
pub async fn module(req: HttpRequest) -> HttpResponse {
    let module = &*MODULE;
    let versioned = req.query_string() == versioned_path().split_once('?').unwrap_or_default().1;
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "public, no-cache"
    };
    let unchanged = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == module.etag));
    let mut answer = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header(("cache-control", cache))
        .insert_header(("etag", module.etag.as_str()))
        .insert_header(("access-control-allow-origin", "*"))
        .insert_header(("cross-origin-resource-policy", "cross-origin"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("x-facepair-integrity", module.integrity.as_str()));
    if unchanged {
        return answer.finish();
    }
    answer
        .content_type("text/javascript; charset=utf-8")
        .body(module.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::locale::PAGE_LANGUAGES;

    #[test]
    fn every_language_has_every_message_english_has() {
        let english = parse("en", CATALOGS[0].1);
        for (language, text) in CATALOGS {
            let own = parse(language, text);
            let missing: Vec<_> = english.keys().filter(|k| !own.contains_key(*k)).collect();
            assert!(missing.is_empty(), "{language} lacks {missing:?}");
            let extra: Vec<_> = own.keys().filter(|k| !english.contains_key(*k)).collect();
            assert!(
                extra.is_empty(),
                "{language} has keys English lacks: {extra:?}"
            );
            for (key, value) in &own {
                let text = value.as_str().unwrap_or_else(|| panic!("{language}.{key}"));
                assert!(!text.trim().is_empty(), "{language}.{key} is empty");
                // the same placeholders as English, so none is shown raw or lost
                let names = |s: &str| {
                    let mut v: Vec<String> = s
                        .split('{')
                        .skip(1)
                        .filter_map(|p| p.split_once('}').map(|(n, _)| n.to_owned()))
                        .collect();
                    v.sort();
                    v
                };
                assert_eq!(
                    names(text),
                    names(english[key].as_str().unwrap()),
                    "{language}.{key}"
                );
            }
        }
    }

    #[test]
    fn the_catalogs_are_the_page_languages() {
        let served: Vec<&str> = CATALOGS.iter().map(|(l, _)| *l).collect();
        assert_eq!(served, PAGE_LANGUAGES);
    }

    #[test]
    fn a_missing_message_falls_back_to_english_never_to_its_key() {
        let english = parse("en", CATALOGS[0].1);
        let merged = merged();
        for (language, messages) in &merged {
            let messages = messages.as_object().unwrap();
            assert_eq!(messages.len(), english.len(), "{language}");
            for (key, text) in messages {
                assert_ne!(text.as_str().unwrap(), key, "{language}.{key}");
            }
        }
        assert!(
            MODULE
                .body
                .contains("\"fail_other\":\"La vérification du visage")
        );
        assert!(!MODULE.body.contains(PLACEHOLDER));
    }
}
