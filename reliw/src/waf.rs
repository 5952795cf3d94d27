//! WAF rule sets, as RELIW stores them in the `P:WAF` hash (field `__`:
//! global, field `<host>`: that host's): `{ip_header, query: [patterns],
//! headers: {name: [patterns]}}`, patterns in Lua syntax, matched in linear
//! time (see [`crate::lua_pattern`]).
//!
//! Order as RELIW: the global set before the host's; in each set the query
//! rules, then the header rules. RELIW matched query rules against the
//! path; so does reliw, against the path as sent and as decoded (what the
//! file lookup sees), then against the query string on its own (as sent
//! and form-decoded), then against the whole target. A
//! `$`-anchored rule such as `%.php$` therefore cannot be evaded by
//! appending `?x`, and a rule for a query parameter still catches it.
//!
//! What a hit does beyond the 403 (banning the client in the XDP shield and
//! telling the other nodes) belongs to the shield integration.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::http::RequestHead;
use crate::lua_pattern::LuaPattern;

#[derive(Deserialize)]
struct Raw {
    ip_header: Option<String>,
    #[serde(default)]
    query: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, Vec<String>>,
}

/// One rule: its source text (for logs) and compiled form.
#[derive(Debug)]
pub struct Rule {
    pub source: String,
    pattern: LuaPattern,
}

/// A compiled rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// RELIW's header naming the client address (kept for the shield
    /// integration, which uses it only behind trusted proxies).
    pub ip_header: Option<String>,
    query: Vec<Rule>,
    /// Lower-case header name → rules.
    headers: Vec<(String, Vec<Rule>)>,
}

/// A rule that matched.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    /// `path`, `query` (the query string), `target` (both) or the header name.
    pub target: &'a str,
    pub rule: &'a str,
}

impl RuleSet {
    /// Parses one rule set. Patterns that cannot be translated are left
    /// out, one warning each; the others still apply.
    pub fn parse(json: &[u8]) -> Result<(Self, Vec<String>), String> {
        let raw: Raw = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut warnings = Vec::new();
        let mut compile = |what: &str, sources: Vec<String>| -> Vec<Rule> {
            sources
                .into_iter()
                .filter_map(|source| match LuaPattern::new(&source) {
                    Ok(pattern) => Some(Rule { source, pattern }),
                    Err(e) => {
                        warnings.push(format!("{what} rule {source:?} dropped: {e}"));
                        None
                    }
                })
                .collect()
        };
        let query = compile("query", raw.query);
        let headers = raw
            .headers
            .into_iter()
            .map(|(name, rules)| {
                let rules = compile(&name, rules);
                (name.to_ascii_lowercase(), rules)
            })
            .collect();
        Ok((
            Self {
                ip_header: raw.ip_header,
                query,
                headers,
            },
            warnings,
        ))
    }

    /// The first rule of this set that `req` matches.
    pub fn check<'a>(&'a self, req: &RequestHead) -> Option<Hit<'a>> {
        let (path, query) = match req.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (req.target.as_str(), None),
        };
        let decoded = path
            .contains('%')
            .then(|| crate::files::validate::percent_decode(path.as_bytes()))
            .flatten();
        let decoded_query = query
            .filter(|q| q.contains('%') || q.contains('+'))
            .map(|q| form_decode(q.as_bytes()));
        let targets = [
            ("path", Some(path.as_bytes())),
            ("path", decoded.as_deref()),
            ("query", query.map(str::as_bytes)),
            ("query", decoded_query.as_deref()),
            // Rules written across path and query (`%.php%?`).
            ("target", query.map(|_| req.target.as_bytes())),
        ];
        for (name, value) in targets {
            let Some(value) = value else { continue };
            if let Some(rule) = self.query.iter().find(|r| r.pattern.is_match(value)) {
                return Some(Hit {
                    target: name,
                    rule: &rule.source,
                });
            }
        }
        for (name, rules) in &self.headers {
            for value in req.headers().filter(|(n, _)| n == name).map(|(_, v)| v) {
                if let Some(rule) = rules.iter().find(|r| r.pattern.is_match(value)) {
                    return Some(Hit {
                        target: name,
                        rule: &rule.source,
                    });
                }
            }
        }
        None
    }
}

/// A query string as a form decodes it (`+` is a space; a bad escape
/// stays as it is, so it cannot hide anything).
fn form_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16)).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The first hit across `sets`, in order.
pub fn check<'a>(sets: &'a [RuleSet], req: &RequestHead) -> Option<Hit<'a>> {
    sets.iter().find_map(|s| s.check(req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        crate::http::test_head(raw)
    }

    #[test]
    fn query_then_header_rules() {
        let (set, warnings) = RuleSet::parse(
            br#"{"ip_header": "x-real-ip", "query": ["%.php$", "wp%-admin", "%b()"],
                 "headers": {"User-Agent": ["sqlmap", "^$"]}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let hit = set.check(&head("GET /x.php HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(
            hit,
            Some(Hit {
                target: "path",
                rule: "%.php$"
            })
        );
        // A query string does not hide an anchored path rule.
        let hit = set.check(&head("GET /x.php?x HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(hit.map(|h| (h.target, h.rule)), Some(("path", "%.php$")));
        // Nor does percent-encoding a letter of the path.
        let hit = set.check(&head("GET /x.%70hp HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(hit.map(|h| (h.target, h.rule)), Some(("path", "%.php$")));
        assert_eq!(
            set.check(&head("GET /x.php.html?a=1 HTTP/1.1\r\nHost: a\r\n\r\n")),
            None
        );
        let hit = set.check(&head("GET /?p=/wp-admin HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(
            hit.map(|h| (h.target, h.rule)),
            Some(("query", "wp%-admin"))
        );
        // Encoded in the query string, or spanning path and query.
        let hit = set.check(&head("GET /?p=/wp%2Dadmin HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(
            hit.map(|h| (h.target, h.rule)),
            Some(("query", "wp%-admin"))
        );
        let (cross, _) =
            RuleSet::parse(br#"{"query": ["%.cgi%?cmd="]}"#).unwrap_or_else(|e| panic!("{e}"));
        let hit = cross.check(&head("GET /x.cgi?cmd=id HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(hit.map(|h| h.target), Some("target"));
        let hit = set.check(&head(
            "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: sqlmap/1.7\r\n\r\n",
        ));
        assert_eq!(
            hit,
            Some(Hit {
                target: "user-agent",
                rule: "sqlmap"
            })
        );
        assert_eq!(
            set.check(&head(
                "GET /ok HTTP/1.1\r\nHost: a\r\nUser-Agent: curl\r\n\r\n"
            )),
            None
        );
    }

    #[test]
    fn broken_sets_are_errors() {
        assert!(RuleSet::parse(b"[]").is_err());
        assert!(RuleSet::parse(br#"{"query": "x"}"#).is_err());
        assert!(RuleSet::parse(b"{}").is_ok());
    }
}
