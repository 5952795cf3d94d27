//! WAF rule sets, as RELIW stores them in the `P:WAF` hash (field `__`:
//! global, field `<host>`: that host's): `{ip_header, query: [patterns],
//! headers: {name: [patterns]}}`, patterns in Lua syntax, matched in linear
//! time (see [`crate::lua_pattern`]).
//!
//! Order as RELIW: the global set before the host's; in each set the query
//! rules, then the header rules. RELIW matched query rules against the
//! path only; reliw matches them against the whole request target (path
//! and query string), so rules written for either catch what they meant.
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
    /// `query` or the header name.
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
        let target = req.target.as_bytes();
        if let Some(rule) = self.query.iter().find(|r| r.pattern.is_match(target)) {
            return Some(Hit {
                target: "query",
                rule: &rule.source,
            });
        }
        for (name, rules) in &self.headers {
            for value in req
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v)
            {
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
                target: "query",
                rule: "%.php$"
            })
        );
        let hit = set.check(&head("GET /?p=/wp-admin HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(hit.map(|h| h.rule), Some("wp%-admin"));
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
