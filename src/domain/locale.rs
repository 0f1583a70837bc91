//! Languages: the tag a platform gives at creation, the code iDenfy is sent, and the language
//! the pairing page speaks (the login's locale, else the browser's `Accept-Language`).

use super::Invalid;

/// iDenfy's locale codes (documentation.idenfy.com/resources/supported-languages), sent in
/// lower case as facepair always has; `zh_tw` is Traditional Chinese.
pub const IDENFY_LOCALES: [&str; 34] = [
    "en", "es", "fr", "ru", "de", "it", "pl", "lt", "lv", "et", "sv", "cs", "ro", "hu", "ja", "bg",
    "nl", "pt", "uk", "sk", "si", "vi", "th", "hi", "id", "hr", "da", "fi", "el", "no", "tr", "sr",
    "zh", "zh_tw",
];

/// The languages the pairing page and the component have messages for, English first.
pub const PAGE_LANGUAGES: [&str; 14] = [
    "en", "de", "fr", "es", "lt", "pl", "ar", "it", "pt", "nl", "ru", "uk", "sv", "cs",
];

/// A BCP 47 language tag as the platform gave it (`de`, `pt-BR`, `zh-Hant-TW`), in its
/// canonical case: language lower, script title, region upper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        canonical(s).map(Self).ok_or_else(|| {
            Invalid::new(
                "locale",
                "must be a language tag such as \"de\" or \"pt-BR\"",
            )
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The language subtag: `pt` for `pt-BR`.
    pub fn language(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }

    /// The code iDenfy knows this language by, if it supports it; `None` leaves the choice to
    /// iDenfy (the account's default) rather than have a session refused.
    pub fn idenfy(&self) -> Option<&'static str> {
        let mut parts = self.0.split('-').skip(1);
        let traditional = parts.any(|p| matches!(p, "Hant" | "TW" | "HK" | "MO"));
        let code = match self.language() {
            "nb" | "nn" => "no",
            // iDenfy's `si` is Slovenian (`sl`); the tag `si` is Sinhala, which it lacks
            "sl" => "si",
            "si" => return None,
            "in" => "id",
            "zh" if traditional => "zh_tw",
            other => other,
        };
        IDENFY_LOCALES.iter().copied().find(|c| *c == code)
    }
}

/// `None` unless `s` is a language (2 or 3 letters) followed by subtags of 1 to 8 letters or
/// digits, split by `-` or `_`, at most 35 characters in all.
fn canonical(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 35 {
        return None;
    }
    let mut out = Vec::new();
    for (i, part) in s.split(['-', '_']).enumerate() {
        let ok = if i == 0 {
            (2..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphabetic())
        } else {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !ok {
            return None;
        }
        out.push(match (i, part.len()) {
            (0, _) => part.to_ascii_lowercase(),
            (_, 4) if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                let lower = part.to_ascii_lowercase();
                lower[..1].to_ascii_uppercase() + &lower[1..]
            }
            (_, 2) => part.to_ascii_uppercase(),
            _ => part.to_ascii_lowercase(),
        });
    }
    Some(out.join("-"))
}

/// The page's language: the first of the login's locale, then the browser's languages by
/// preference (`Accept-Language`, `q=0` excluded), that the page has messages for; else English.
pub fn negotiate(login: Option<&Locale>, accept_language: Option<&str>) -> &'static str {
    let mut wanted: Vec<(f32, String)> = accept_language
        .unwrap_or("")
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0 && !tag.is_empty()).then(|| (q, tag.to_owned()))
        })
        .collect();
    // stable: equal weights keep the browser's order
    wanted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let browser = wanted.iter().filter_map(|(_, tag)| Locale::parse(tag).ok());
    login
        .cloned()
        .into_iter()
        .chain(browser)
        .find_map(|l| PAGE_LANGUAGES.iter().copied().find(|p| *p == l.language()))
        .unwrap_or("en")
}

/// `rtl` for the languages written right to left, else `ltr`.
pub fn direction(language: &str) -> &'static str {
    if matches!(language, "ar" | "he" | "fa" | "ur") {
        "rtl"
    } else {
        "ltr"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Locale {
        Locale::parse(s).unwrap()
    }

    #[test]
    fn tags_are_parsed_into_canonical_case() {
        assert_eq!(l("EN").as_str(), "en");
        assert_eq!(l("pt_br").as_str(), "pt-BR");
        assert_eq!(l("zh-hant-tw").as_str(), "zh-Hant-TW");
        assert_eq!(l("es-419").as_str(), "es-419");
        for bad in [
            "",
            "e",
            "e1",
            "english",
            "de-",
            "de--AT",
            "de AT",
            "1de",
            "de-toolongsubtag",
            &"a-b".repeat(20),
        ] {
            assert!(Locale::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_map_to_idenfy_codes() {
        for (tag, code) in [
            ("de", Some("de")),
            ("de-AT", Some("de")),
            ("pt-BR", Some("pt")),
            ("LT", Some("lt")),
            ("nb-NO", Some("no")),
            ("nn", Some("no")),
            ("sl-SI", Some("si")),
            ("uk-UA", Some("uk")),
            ("zh-CN", Some("zh")),
            ("zh-Hans", Some("zh")),
            ("zh-TW", Some("zh_tw")),
            ("zh-Hant", Some("zh_tw")),
            ("zh-HK", Some("zh_tw")),
            ("in", Some("id")),
            ("ar", None),
            ("ko", None),
            ("si", None),
        ] {
            assert_eq!(l(tag).idenfy(), code, "{tag}");
        }
        // every code iDenfy lists is reached by some tag
        for code in IDENFY_LOCALES {
            let tag = match code {
                "si" => "sl".to_owned(),
                "no" => "nb".to_owned(),
                other => other.replace("_tw", "-TW"),
            };
            assert_eq!(l(&tag).idenfy(), Some(code));
        }
    }

    #[test]
    fn the_login_locale_comes_first_then_the_browser_by_preference() {
        assert_eq!(negotiate(Some(&l("pl")), Some("de-DE,de;q=0.9")), "pl");
        assert_eq!(negotiate(Some(&l("fr-CA")), None), "fr");
        // no messages for Danish: the browser's choice is next
        assert_eq!(negotiate(Some(&l("da")), Some("es-ES")), "es");
        assert_eq!(negotiate(None, Some("da;q=1, lt;q=0.8, de;q=0.9")), "de");
        assert_eq!(negotiate(None, Some("fr;q=0, ar")), "ar");
        assert_eq!(negotiate(None, Some("de;q=0.5,lt")), "lt");
        assert_eq!(negotiate(None, Some("en-GB,en;q=0.9")), "en");
        assert_eq!(negotiate(None, Some("*")), "en");
        assert_eq!(negotiate(None, Some(";;,q=x,")), "en");
        assert_eq!(negotiate(None, None), "en");
        assert_eq!(negotiate(Some(&l("ko")), Some("ko-KR")), "en");
    }

    #[test]
    fn arabic_is_right_to_left() {
        assert_eq!(direction("ar"), "rtl");
        assert_eq!(direction("de"), "ltr");
        for language in PAGE_LANGUAGES {
            assert!(Locale::parse(language).is_ok());
        }
    }
}
