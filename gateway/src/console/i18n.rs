//! English and Simplified Chinese. Texts live in `i18n/en.toml` and `i18n/zh.toml`
//! (embedded), one `[section]` per area; a key is `"section.name"`. The visitor's choice
//! is remembered in the `sb_lang` cookie; without it, `Accept-Language` decides. A key
//! missing from a file shows as the key itself (and the unit test below fails).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

/// Name of the language cookie.
pub const COOKIE: &str = "sb_lang";

/// An interface language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// `"en"` or `"zh"`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The language of a code (`en`, `zh`, `zh-CN`...).
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().to_ascii_lowercase();
        if s.starts_with("zh") {
            Some(Lang::Zh)
        } else if s.starts_with("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The visitor's language: the cookie, else the first language of `Accept-Language`
    /// we have, else English.
    pub fn from_headers(h: &HeaderMap) -> Lang {
        if let Some(l) = super::session::cookie(h, COOKIE).and_then(|c| Lang::parse(&c)) {
            return l;
        }
        h.get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .filter_map(|part| Lang::parse(part.split(';').next().unwrap_or_default()))
                    .next()
            })
            .unwrap_or(Lang::En)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Lang, Self::Rejection> {
        Ok(Lang::from_headers(&parts.headers))
    }
}

type Table = HashMap<String, &'static str>;

fn load(text: &'static str, name: &str) -> Table {
    let mut out = Table::new();
    match text.parse::<toml::Table>() {
        Ok(t) => {
            for (section, v) in t {
                let Some(entries) = v.as_table() else {
                    continue;
                };
                for (k, v) in entries {
                    if let Some(s) = v.as_str() {
                        // Leaked once per key at start: the tables live as long as the
                        // process and templates take `&'static str`.
                        out.insert(format!("{section}.{k}"), &*Box::leak(s.into()));
                    }
                }
            }
        }
        Err(e) => tracing::error!(file = name, error = %e, "console: translation file invalid"),
    }
    out
}

fn tables() -> &'static [Table; 2] {
    static T: OnceLock<[Table; 2]> = OnceLock::new();
    T.get_or_init(|| {
        [
            load(include_str!("i18n/en.toml"), "en.toml"),
            load(include_str!("i18n/zh.toml"), "zh.toml"),
        ]
    })
}

/// The text of `key` in `lang` (the key itself when it is missing).
pub fn text(lang: Lang, key: &str) -> &'static str {
    let t = &tables()[lang as usize];
    match t.get(key) {
        Some(s) => s,
        None => {
            tracing::warn!(key, lang = lang.code(), "console: missing translation");
            // Unknown keys are rare and come from our own templates: leaking is bounded
            // by the number of distinct keys in the code.
            static MISSING: OnceLock<parking_lot::Mutex<HashMap<String, &'static str>>> =
                OnceLock::new();
            let mut m = MISSING.get_or_init(Default::default).lock();
            if let Some(s) = m.get(key) {
                return s;
            }
            let s: &'static str = Box::leak(key.to_owned().into_boxed_str());
            if m.len() < 1024 {
                m.insert(key.to_owned(), s);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_the_same_keys_and_parse() {
        let [en, zh] = tables();
        assert!(en.len() > 20, "en.toml parsed");
        let mut missing: Vec<_> = en.keys().filter(|k| !zh.contains_key(*k)).collect();
        missing.extend(zh.keys().filter(|k| !en.contains_key(*k)));
        missing.sort();
        assert!(missing.is_empty(), "keys in one language only: {missing:?}");
    }

    #[test]
    fn cookie_then_accept_language_then_english() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::from_headers(&h), Lang::En);
        h.insert(
            "accept-language",
            axum::http::HeaderValue::from_static("fr;q=1, zh-CN;q=0.8"),
        );
        assert_eq!(Lang::from_headers(&h), Lang::Zh);
        h.insert(
            "cookie",
            axum::http::HeaderValue::from_static("a=b; sb_lang=en"),
        );
        assert_eq!(Lang::from_headers(&h), Lang::En);
    }
}
