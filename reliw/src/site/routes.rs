//! RELIW routes: `P:API:<host>` is a JSON array of `[pattern, entry_id,
//! exact?]`. An exact route compares the path for equality; any other is a
//! Lua pattern searched in the path. The first route that matches wins.
//!
//! A pattern that cannot be translated for linear-time matching (see
//! [`crate::lua_pattern`]) is dropped when the routes are loaded, with a
//! reason the caller logs; the other routes still work.

use serde_json::Value;

use crate::lua_pattern::LuaPattern;

enum Matcher {
    Exact(String),
    Pattern(LuaPattern),
}

struct Route {
    matcher: Matcher,
    entry: String,
}

/// The routes of one host, in order.
pub struct Routes {
    routes: Vec<Route>,
}

/// Why a host's routes could not be read at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutesError {
    #[error("routes are not a JSON array: {0}")]
    NotAnArray(String),
}

impl Routes {
    /// Parses the JSON of `P:API:<host>`. Malformed or untranslatable
    /// entries are skipped; each gives one line in the returned warnings.
    pub fn parse(json: &[u8]) -> Result<(Self, Vec<String>), RoutesError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| RoutesError::NotAnArray(e.to_string()))?;
        let Value::Array(items) = value else {
            return Err(RoutesError::NotAnArray(String::from("not an array")));
        };
        let mut routes = Vec::with_capacity(items.len());
        let mut warnings = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(parts) = item.as_array() else {
                warnings.push(format!("route {i}: not an array"));
                continue;
            };
            let (Some(pattern), Some(entry)) =
                (parts.first().and_then(Value::as_str), parts.get(1))
            else {
                warnings.push(format!("route {i}: needs [pattern, entry_id, exact?]"));
                continue;
            };
            let entry = match entry {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    warnings.push(format!("route {i}: entry id must be a string or number"));
                    continue;
                }
            };
            let exact = parts.get(2).is_some_and(|v| v.as_bool() == Some(true));
            let matcher = if exact {
                Matcher::Exact(pattern.to_owned())
            } else {
                match LuaPattern::new(pattern) {
                    Ok(p) => Matcher::Pattern(p),
                    Err(e) => {
                        warnings.push(format!("route {i} ({pattern:?}) dropped: {e}"));
                        continue;
                    }
                }
            };
            routes.push(Route { matcher, entry });
        }
        Ok((Self { routes }, warnings))
    }

    /// The entry id of the first route matching `path`.
    pub fn find(&self, path: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| match &r.matcher {
                Matcher::Exact(p) => p == path,
                Matcher::Pattern(p) => p.is_match(path.as_bytes()),
            })
            .map(|r| r.entry.as_str())
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(json: &str) -> (Routes, Vec<String>) {
        Routes::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn first_match_wins_exact_or_pattern() {
        let (r, warnings) = routes(
            r#"[["/", "home", true], ["^/docs/(.+)%.md$", "docs"], ["^/docs/", "docs-index"], ["%.css$", 7], ["/x", "never", false]]"#,
        );
        assert!(warnings.is_empty());
        assert_eq!(r.find("/"), Some("home"));
        assert_eq!(r.find("/docs/a.md"), Some("docs"));
        assert_eq!(r.find("/docs/"), Some("docs-index"));
        assert_eq!(r.find("/site.css"), Some("7"));
        assert_eq!(r.find("/other"), None);
        // Exact means equality, not a pattern: "/" matches only "/".
        assert_eq!(r.find("/?"), None);
        // Unanchored patterns search anywhere in the path, as in Lua.
        assert_eq!(r.find("/a/x/b"), Some("never"));
    }

    #[test]
    fn bad_entries_are_dropped_with_a_reason_and_the_rest_work() {
        let (r, warnings) =
            routes(r#"[["%b()", "balanced"], "junk", [1, "x"], ["^/ok$", "ok"], ["/y", null]]"#);
        assert_eq!(r.len(), 1);
        assert_eq!(r.find("/ok"), Some("ok"));
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("%b"), "{warnings:?}");
        assert!(Routes::parse(b"{}").is_err());
        assert!(Routes::parse(b"not json").is_err());
    }
}
