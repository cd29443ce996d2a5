//! Notification templates, sans-IO: what a push's title and body say, per tenant, per
//! language (the device's, registered with its token: `zh-CN`, `en`) and per message kind,
//! with placeholders, and the privacy switch (the `hidden` template: no sender, no text).
//!
//! A tenant sets its own (`POST /v1/push/templates/set`, stored by the broker, read by the
//! worker with the credentials); whatever it leaves out comes from the built-in Chinese and
//! English defaults. Lookup for a device of language `zh-CN` and a group image: the
//! tenant's `zh-cn`, then `zh`, then its `default_lang`, then `en`, each for
//! `group_image` then `group_other`; the built-in `zh`/`en` set answers the first language
//! of that chain it has.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// The message kinds a template may be given for. `group_*` are group messages, `app` a
/// workbench app's notice, `system` a notice from the tenant, `hidden` what every push says
/// while previews are hidden.
pub const KINDS: [&str; 19] = [
    "text",
    "image",
    "file",
    "voice",
    "video",
    "location",
    "call",
    "other",
    "group_text",
    "group_image",
    "group_file",
    "group_voice",
    "group_video",
    "group_location",
    "group_call",
    "group_other",
    "app",
    "system",
    "hidden",
];

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 5] = ["sender", "group", "app", "text", "file"];

/// Placeholders a `hidden` template may not use: they would show what it hides.
const REVEALING: [&str; 4] = ["sender", "group", "text", "file"];

/// Most languages per tenant, characters per title and body.
pub const MAX_LANGUAGES: usize = 32;
pub const MAX_TITLE: usize = 200;
pub const MAX_BODY: usize = 1000;

/// Why a tenant's templates were refused (the gateway answers 400 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("templates must be an object {{language: {{kind: {{title, body}}}}}}")]
    NotAnObject,
    #[error("at most {MAX_LANGUAGES} languages")]
    TooManyLanguages,
    #[error("{0:?} is not a language tag such as zh-CN or en")]
    BadLanguage(String),
    #[error("{lang}: {kind:?} is not a message kind (one of {})", KINDS.join(", "))]
    UnknownKind { lang: String, kind: String },
    #[error("{lang}.{kind}: expected {{title, body}} with strings")]
    BadTemplate { lang: String, kind: String },
    #[error("{lang}.{kind}: title at most {MAX_TITLE} characters, body 1..={MAX_BODY}")]
    BadLength { lang: String, kind: String },
    #[error("{lang}.{kind}: unknown placeholder {{{name}}} (known: {})", PLACEHOLDERS.join(", "))]
    UnknownPlaceholder {
        lang: String,
        kind: String,
        name: String,
    },
    #[error("{lang}.hidden: {{{name}}} would show what a hidden preview hides")]
    Revealing { lang: String, name: String },
}

/// One title and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub title: String,
    pub body: String,
}

/// A tenant's templates (language tags lower case, `_` as `-`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    by_lang: HashMap<String, HashMap<String, Template>>,
    default_lang: String,
}

/// What a job says about its message: the kind and the placeholders' values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// `text`, `image`, ... (without `group_`), `app`, `system`; empty: the job's own
    /// title and body are shown as they are.
    pub kind: String,
    pub group: bool,
    pub sender: String,
    pub group_name: String,
    pub app: String,
    /// The message's preview.
    pub text: String,
    pub file: String,
}

fn lang_tag(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 35
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_ascii_lowercase().replace('_', "-"))
}

/// Each `{name}` in `s` (a `{` without a closing `}` is text).
fn placeholders(s: &str) -> impl Iterator<Item = &str> {
    s.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

impl Templates {
    /// A tenant's templates from the JSON the app server sent (and the broker kept), or
    /// the first reason they are not usable.
    pub fn parse(v: &Value, default_lang: &str) -> Result<Templates, TemplateError> {
        let langs = v.as_object().ok_or(TemplateError::NotAnObject)?;
        if langs.len() > MAX_LANGUAGES {
            return Err(TemplateError::TooManyLanguages);
        }
        let mut by_lang = HashMap::new();
        for (lang, kinds) in langs {
            let tag = lang_tag(lang).ok_or_else(|| TemplateError::BadLanguage(lang.clone()))?;
            let kinds = kinds
                .as_object()
                .ok_or_else(|| TemplateError::BadLanguage(lang.clone()))?;
            let mut set = HashMap::new();
            for (kind, t) in kinds {
                let err = |f: fn(String, String) -> TemplateError| f(lang.clone(), kind.clone());
                if !KINDS.contains(&kind.as_str()) {
                    return Err(err(|lang, kind| TemplateError::UnknownKind { lang, kind }));
                }
                let (Some(title), Some(body)) = (t["title"].as_str(), t["body"].as_str()) else {
                    return Err(err(|lang, kind| TemplateError::BadTemplate { lang, kind }));
                };
                let (tl, bl) = (title.chars().count(), body.chars().count());
                if tl > MAX_TITLE || bl == 0 || bl > MAX_BODY {
                    return Err(err(|lang, kind| TemplateError::BadLength { lang, kind }));
                }
                for name in placeholders(title).chain(placeholders(body)) {
                    if !PLACEHOLDERS.contains(&name) {
                        return Err(TemplateError::UnknownPlaceholder {
                            lang: lang.clone(),
                            kind: kind.clone(),
                            name: name.chars().take(32).collect(),
                        });
                    }
                    if kind == "hidden" && REVEALING.contains(&name) {
                        return Err(TemplateError::Revealing {
                            lang: lang.clone(),
                            name: name.to_owned(),
                        });
                    }
                }
                set.insert(
                    kind.clone(),
                    Template {
                        title: title.to_owned(),
                        body: body.to_owned(),
                    },
                );
            }
            by_lang.insert(tag, set);
        }
        let default_lang = match default_lang {
            "" => String::new(),
            d => lang_tag(d).ok_or_else(|| TemplateError::BadLanguage(d.to_owned()))?,
        };
        Ok(Templates {
            by_lang,
            default_lang,
        })
    }

    /// The broker's `push/templates/get` answer; unusable stored templates (none are
    /// stored unchecked) fall back to the defaults.
    pub fn from_stored(v: &Value) -> Templates {
        let d = v["default_lang"].as_str().unwrap_or_default();
        match Templates::parse(&v["templates"], d) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target: "push", error = %e, "unusable push templates; defaults used");
                Templates::default()
            }
        }
    }

    /// The title and body for a device of language `lang` (empty: unknown). With `hide`
    /// (the tenant's or the user's privacy switch) the `hidden` template, whatever the
    /// kind. A job without a kind keeps its own title and body (unless hidden).
    pub fn render(&self, lang: &str, f: &Fields, own: &Template, hide: bool) -> Template {
        if !hide && f.kind.is_empty() {
            return own.clone();
        }
        let key = if hide {
            "hidden".to_owned()
        } else if f.group && !matches!(f.kind.as_str(), "app" | "system") {
            format!("group_{}", f.kind)
        } else {
            f.kind.clone()
        };
        let fallback = if key.starts_with("group_") {
            "group_other"
        } else {
            "other"
        };
        let t = self.find(lang, &key, fallback);
        let empty = Fields::default();
        let f = if hide { &empty } else { f };
        Template {
            title: fill(&t.title, f),
            body: fill(&t.body, f),
        }
    }

    fn find(&self, lang: &str, key: &str, fallback: &str) -> Template {
        let tag = lang_tag(lang).unwrap_or_default();
        let primary = tag.split('-').next().unwrap_or_default().to_owned();
        let chain = [tag, primary, self.default_lang.clone(), "en".to_owned()];
        for (i, l) in chain.iter().enumerate().filter(|(_, l)| !l.is_empty()) {
            // At the primary-language step a tenant's regional set counts too (`zh-cn`
            // for a `zh-tw` device), the first in order when it has several.
            let mut sets: Vec<&HashMap<String, Template>> =
                self.by_lang.get(l).into_iter().collect();
            if i == 1 {
                let mut regional: Vec<_> = self
                    .by_lang
                    .iter()
                    .filter(|(k, _)| k.split('-').next() == Some(l.as_str()) && *k != l)
                    .collect();
                regional.sort_by(|a, b| a.0.cmp(b.0));
                sets.extend(regional.into_iter().map(|(_, s)| s));
            }
            for set in sets {
                for k in [key, fallback] {
                    if let Some(t) = set.get(k) {
                        return t.clone();
                    }
                }
            }
            if let Some(t) = builtin(l, key).or_else(|| builtin(l, fallback)) {
                return t;
            }
        }
        builtin("en", "other").unwrap_or(Template {
            title: String::new(),
            body: "{text}".into(),
        })
    }
}

/// `s` with its placeholders filled in.
fn fill(s: &str, f: &Fields) -> String {
    let mut out = String::with_capacity(s.len() + f.text.len());
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let value = after.split_once('}').and_then(|(name, tail)| {
            let v = match name {
                "sender" => &f.sender,
                "group" => &f.group_name,
                "app" => &f.app,
                "text" => &f.text,
                "file" => &f.file,
                _ => return None,
            };
            Some((v, tail))
        });
        match value {
            Some((v, tail)) => {
                out.push_str(v);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The built-in templates of `lang` (`zh`, `en`) for `kind`.
pub fn builtin(lang: &str, kind: &str) -> Option<Template> {
    let (title, body) = match (lang, kind) {
        ("zh", "text" | "other") => ("{sender}", "{text}"),
        ("zh", "image") => ("{sender}", "[图片]"),
        ("zh", "file") => ("{sender}", "[文件] {file}"),
        ("zh", "voice") => ("{sender}", "[语音]"),
        ("zh", "video") => ("{sender}", "[视频]"),
        ("zh", "location") => ("{sender}", "[位置]"),
        ("zh", "call") => ("{sender}", "[通话]"),
        ("zh", "group_text" | "group_other") => ("{group}", "{sender}: {text}"),
        ("zh", "group_image") => ("{group}", "{sender}: [图片]"),
        ("zh", "group_file") => ("{group}", "{sender}: [文件] {file}"),
        ("zh", "group_voice") => ("{group}", "{sender}: [语音]"),
        ("zh", "group_video") => ("{group}", "{sender}: [视频]"),
        ("zh", "group_location") => ("{group}", "{sender}: [位置]"),
        ("zh", "group_call") => ("{group}", "{sender}: [通话]"),
        ("zh", "app") => ("{app}", "您收到一条来自“{app}”的消息"),
        ("zh", "system") => ("系统通知", "{text}"),
        ("zh", "hidden") => ("新消息", "您有一条新消息"),
        ("en", "text" | "other") => ("{sender}", "{text}"),
        ("en", "image") => ("{sender}", "[Image]"),
        ("en", "file") => ("{sender}", "[File] {file}"),
        ("en", "voice") => ("{sender}", "[Voice message]"),
        ("en", "video") => ("{sender}", "[Video]"),
        ("en", "location") => ("{sender}", "[Location]"),
        ("en", "call") => ("{sender}", "[Call]"),
        ("en", "group_text" | "group_other") => ("{group}", "{sender}: {text}"),
        ("en", "group_image") => ("{group}", "{sender}: [Image]"),
        ("en", "group_file") => ("{group}", "{sender}: [File] {file}"),
        ("en", "group_voice") => ("{group}", "{sender}: [Voice message]"),
        ("en", "group_video") => ("{group}", "{sender}: [Video]"),
        ("en", "group_location") => ("{group}", "{sender}: [Location]"),
        ("en", "group_call") => ("{group}", "{sender}: [Call]"),
        ("en", "app") => ("{app}", "You have a new message from “{app}”"),
        ("en", "system") => ("Notice", "{text}"),
        ("en", "hidden") => ("New message", "You have a new message"),
        _ => return None,
    };
    Some(Template {
        title: title.into(),
        body: body.into(),
    })
}

/// The built-in templates as JSON (`{zh: {kind: {title, body}}, en: ...}`), for the docs
/// and `POST /v1/push/templates/get`.
pub fn builtin_json() -> Value {
    let mut out = Map::new();
    for lang in ["zh", "en"] {
        let mut set = Map::new();
        for kind in KINDS {
            if let Some(t) = builtin(lang, kind) {
                set.insert(kind.into(), json!({"title": t.title, "body": t.body}));
            }
        }
        out.insert(lang.into(), Value::Object(set));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: &str, group: bool) -> Fields {
        Fields {
            kind: kind.into(),
            group,
            sender: "Alice".into(),
            group_name: "Ops".into(),
            app: "Approvals".into(),
            text: "hello".into(),
            file: "q3.pdf".into(),
        }
    }

    fn own() -> Template {
        Template {
            title: "T".into(),
            body: "B".into(),
        }
    }

    #[test]
    fn defaults_by_language_and_kind() {
        let t = Templates::default();
        let r = t.render("zh-CN", &fields("image", false), &own(), false);
        assert_eq!((r.title.as_str(), r.body.as_str()), ("Alice", "[图片]"));
        let r = t.render("en-US", &fields("file", true), &own(), false);
        assert_eq!(
            (r.title.as_str(), r.body.as_str()),
            ("Ops", "Alice: [File] q3.pdf")
        );
        let r = t.render("zh", &fields("app", false), &own(), false);
        assert_eq!(r.body, "您收到一条来自“Approvals”的消息");
        let r = t.render("fr", &fields("text", false), &own(), false);
        assert_eq!((r.title.as_str(), r.body.as_str()), ("Alice", "hello"));
        // An unknown kind falls back to `other` / `group_other`.
        let r = t.render("en", &fields("sticker", true), &own(), false);
        assert_eq!(r.body, "Alice: hello");
        // No kind: the job's own words.
        assert_eq!(t.render("en", &Fields::default(), &own(), false), own());
    }

    #[test]
    fn hidden_previews_use_the_hidden_template_for_every_kind() {
        let t = Templates::default();
        for kind in ["text", "file", "app", ""] {
            let r = t.render("en", &fields(kind, true), &own(), true);
            assert_eq!(r.body, "You have a new message", "{kind}");
            assert!(!r.title.contains("Alice") && !r.title.contains("Ops"));
        }
        let r = t.render("zh-Hans-CN", &fields("text", false), &own(), true);
        assert_eq!(r.body, "您有一条新消息");
    }

    #[test]
    fn a_tenants_templates_win_and_fall_back_by_language() {
        let t = Templates::parse(
            &json!({
                "zh-CN": {"text": {"title": "{sender}（{group}）", "body": "新消息：{text}"}},
                "en": {"group_other": {"title": "[{group}]", "body": "{sender} wrote"}},
            }),
            "zh-CN",
        )
        .expect("valid");
        let r = t.render("zh_cn", &fields("text", false), &own(), false);
        assert_eq!(r.body, "新消息：hello");
        // zh-TW: no tenant template for zh-tw or zh; the tenant default zh-cn applies.
        let r = t.render("zh-TW", &fields("text", false), &own(), false);
        assert_eq!(r.body, "新消息：hello");
        // zh-TW image: zh built-in (zh is in the chain before the tenant's default).
        let r = t.render("zh-TW", &fields("image", false), &own(), false);
        assert_eq!(r.body, "[图片]");
        let r = t.render("en-GB", &fields("image", true), &own(), false);
        assert_eq!(
            (r.title.as_str(), r.body.as_str()),
            ("[Ops]", "Alice wrote")
        );
        // A device of no language: the tenant's default language.
        let r = t.render("", &fields("text", false), &own(), false);
        assert_eq!(r.title, "Alice（Ops）");
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let cases = [
            (json!([]), "must be an object"),
            (json!({"zh CN": {}}), "language tag"),
            (
                json!({"en": {"sticker": {"title": "", "body": "x"}}}),
                "not a message kind",
            ),
            (
                json!({"en": {"text": {"title": "x"}}}),
                "expected {title, body}",
            ),
            (
                json!({"en": {"text": {"title": "x", "body": ""}}}),
                "body 1..=",
            ),
            (
                json!({"en": {"text": {"title": "{name}", "body": "x"}}}),
                "unknown placeholder {name}",
            ),
            (
                json!({"en": {"hidden": {"title": "x", "body": "{text}"}}}),
                "would show",
            ),
        ];
        for (v, want) in cases {
            let e = Templates::parse(&v, "").expect_err("refused").to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
        assert!(Templates::parse(&json!({}), "not a tag!").is_err());
        // Stray braces are text.
        let t = Templates::parse(
            &json!({"en": {"text": {"title": "{", "body": "a{b {text}"}}}),
            "",
        )
        .expect("valid");
        let r = t.render("en", &fields("text", false), &own(), false);
        assert_eq!((r.title.as_str(), r.body.as_str()), ("{", "a{b hello"));
    }
}
