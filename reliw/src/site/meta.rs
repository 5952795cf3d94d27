//! Entry metadata: the JSON at `P:API:<host>:<entry_id>`, typed. Parsing
//! is forgiving where RELIW data varies (a method map with `true` or `1`,
//! `try_extensions` as a flag or a list, `whitelisted_ip` as one address or
//! several) and strict where a mistake would change behaviour silently
//! (`methods` is required; a `gsub` pattern must translate).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::lua_pattern::LuaPattern;

/// The extensions RELIW tries when `try_extensions` is simply `true`.
pub const DEFAULT_EXTENSIONS: [&str; 3] = [".lua", ".dj", ".md"];

/// Why metadata was refused (the request gets a 500 and this is logged).
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("entry metadata is not valid: {0}")]
    Invalid(String),
    #[error("entry gsub pattern: {0}")]
    Pattern(#[from] crate::lua_pattern::PatternError),
}

#[derive(Deserialize)]
struct Raw {
    methods: BTreeMap<String, Value>,
    file: Option<String>,
    index: Option<String>,
    #[serde(default)]
    try_extensions: Value,
    gsub: Option<RawGsub>,
    title: Option<String>,
    css_file: Option<String>,
    favicon_file: Option<String>,
    cache_control: Option<String>,
    auth: Option<Value>,
    rate_limit: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    error: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawGsub {
    pattern: String,
    replacement: String,
}

/// A `gsub` remap of the path before it names a file.
#[derive(Clone, Debug)]
pub struct Gsub {
    pub pattern: LuaPattern,
    pub replacement: String,
}

/// Who may see an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Only these users (logged in).
    Users(Vec<String>),
    /// This entry is the login form.
    Login,
    /// This entry logs out.
    Logout,
}

/// A fixed-window limit for one method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub limit: u64,
    pub period_s: u64,
}

/// Rate limits by method, and addresses exempt from them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub by_method: BTreeMap<String, Limit>,
    pub whitelisted: Vec<String>,
}

/// Typed entry metadata.
#[derive(Clone, Debug)]
pub struct EntryMeta {
    /// Allowed methods, upper case, sorted.
    pub methods: Vec<String>,
    pub file: Option<String>,
    pub index: Option<String>,
    pub try_extensions: Vec<String>,
    pub gsub: Option<Gsub>,
    pub title: Option<String>,
    pub css_file: Option<String>,
    pub favicon_file: Option<String>,
    pub cache_control: Option<std::rc::Rc<str>>,
    pub auth: Option<Auth>,
    pub rate_limit: Option<RateLimit>,
    /// Per-status error images (`"404": "/img/404.png"`).
    pub error: BTreeMap<String, String>,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
        Value::Null => false,
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl EntryMeta {
    /// Parses the metadata JSON.
    pub fn parse(json: &[u8]) -> Result<Self, MetaError> {
        let raw: Raw =
            serde_json::from_slice(json).map_err(|e| MetaError::Invalid(e.to_string()))?;
        let methods = raw
            .methods
            .iter()
            .filter(|(_, v)| truthy(v))
            .map(|(m, _)| m.to_ascii_uppercase())
            .collect();
        let try_extensions = match &raw.try_extensions {
            Value::Bool(true) => DEFAULT_EXTENSIONS.map(String::from).to_vec(),
            other => strings(other),
        };
        let gsub = match raw.gsub {
            Some(g) => Some(Gsub {
                pattern: LuaPattern::new(&g.pattern)?,
                replacement: g.replacement,
            }),
            None => None,
        };
        let auth = match &raw.auth {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) if o.get("login").is_some_and(truthy) => Some(Auth::Login),
            Some(Value::Object(o)) if o.get("logout").is_some_and(truthy) => Some(Auth::Logout),
            Some(v @ (Value::Array(_) | Value::String(_))) => Some(Auth::Users(strings(v))),
            Some(other) => return Err(MetaError::Invalid(format!("auth: unexpected {other}"))),
        };
        let rate_limit = match raw.rate_limit {
            None => None,
            Some(map) => {
                let mut rl = RateLimit::default();
                for (key, v) in map {
                    if key == "whitelisted_ip" {
                        rl.whitelisted = strings(&v);
                        continue;
                    }
                    let field = |name: &str| v.get(name).and_then(Value::as_u64);
                    match (field("limit"), field("period")) {
                        (Some(limit), Some(period_s)) if period_s > 0 => {
                            rl.by_method
                                .insert(key.to_ascii_uppercase(), Limit { limit, period_s });
                        }
                        _ => {
                            return Err(MetaError::Invalid(format!(
                                "rate_limit.{key}: needs a numeric limit and a positive period"
                            )));
                        }
                    }
                }
                Some(rl)
            }
        };
        Ok(Self {
            methods,
            file: raw.file,
            index: raw.index,
            try_extensions,
            gsub,
            title: raw.title,
            css_file: raw.css_file,
            favicon_file: raw.favicon_file,
            cache_control: raw.cache_control.map(std::rc::Rc::from),
            auth,
            rate_limit,
            error: raw.error,
        })
    }

    /// Whether `method` is allowed (HEAD goes with GET).
    pub fn allows(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method) || (method == "HEAD" && self.allows("GET"))
    }

    /// The `Allow` header value for a 405.
    pub fn allow_header(&self) -> String {
        let mut methods = self.methods.clone();
        if self.allows("GET") && !methods.iter().any(|m| m == "HEAD") {
            methods.push(String::from("HEAD"));
        }
        methods.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> EntryMeta {
        EntryMeta::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn a_full_entry() {
        let m = parse(
            r#"{"methods": {"GET": true, "post": 1, "PUT": false}, "file": "index.md", "index": "index.dj",
                "try_extensions": true, "gsub": {"pattern": "^/old/", "replacement": "/new/"},
                "title": "Home", "css_file": "/s.css", "favicon_file": "/f.ico", "cache_control": "no-cache",
                "auth": ["alice", "bob"], "rate_limit": {"GET": {"limit": 10, "period": 60}, "whitelisted_ip": "198.18.0.1"},
                "error": {"404": "/img/404.png"}}"#,
        );
        assert_eq!(m.methods, ["GET", "POST"]);
        assert!(m.allows("GET") && m.allows("HEAD") && m.allows("POST") && !m.allows("PUT"));
        assert_eq!(m.allow_header(), "GET, POST, HEAD");
        assert_eq!(m.try_extensions, [".lua", ".dj", ".md"]);
        let g = m.gsub.as_ref().unwrap_or_else(|| panic!("gsub"));
        assert_eq!(
            g.pattern.gsub(b"/old/a", &g.replacement).map(|r| r.0).ok(),
            Some(b"/new/a".to_vec())
        );
        assert_eq!(
            m.auth,
            Some(Auth::Users(vec!["alice".into(), "bob".into()]))
        );
        let rl = m.rate_limit.unwrap_or_default();
        assert_eq!(
            rl.by_method.get("GET"),
            Some(&Limit {
                limit: 10,
                period_s: 60
            })
        );
        assert_eq!(rl.whitelisted, ["198.18.0.1"]);
        assert_eq!(m.error.get("404").map(String::as_str), Some("/img/404.png"));
    }

    #[test]
    fn login_logout_and_extension_lists() {
        assert_eq!(
            parse(r#"{"methods": {"GET": true, "POST": true}, "auth": {"login": true}}"#).auth,
            Some(Auth::Login)
        );
        assert_eq!(
            parse(r#"{"methods": {"GET": true}, "auth": {"logout": true}}"#).auth,
            Some(Auth::Logout)
        );
        assert_eq!(
            parse(r#"{"methods": {"GET": true}, "try_extensions": [".md"]}"#).try_extensions,
            [".md"]
        );
        assert!(
            parse(r#"{"methods": {"GET": true}}"#)
                .try_extensions
                .is_empty()
        );
    }

    #[test]
    fn broken_metadata_is_refused() {
        for bad in [
            r#"{}"#,
            r#"{"methods": "GET"}"#,
            r#"{"methods": {"GET": true}, "gsub": {"pattern": "%b()", "replacement": ""}}"#,
            r#"{"methods": {"GET": true}, "rate_limit": {"GET": {"limit": 1, "period": 0}}}"#,
            r#"{"methods": {"GET": true}, "auth": 5}"#,
            "not json",
        ] {
            assert!(EntryMeta::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
