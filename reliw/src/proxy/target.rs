//! `P:PROXY:<host>`: where a host's requests are forwarded, as RELIW
//! wrote it: `{target, scheme, port, tls_cafile, tls_capath,
//! tls_handshake_timeout, tls_insecure | tls_no_verify | no_verify_mode}`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How reliw talks to the upstream over TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// Extra trust anchors (PEM), beside the webpki roots.
    pub cafile: Option<PathBuf>,
    /// A directory of PEM files, each added as a trust anchor.
    pub capath: Option<PathBuf>,
    /// `false` when one of the insecure flags is set: any certificate goes.
    pub verify: bool,
}

/// One upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `Some` for `https`.
    pub tls: Option<UpstreamTls>,
    /// From `tls_handshake_timeout` (seconds), else the server's own.
    pub handshake_timeout: Option<Duration>,
    /// `scheme://host[:port]`: the upstream's origin (for `Origin`,
    /// `Referer` and `Access-Control-Allow-Origin`).
    pub origin: String,
    /// The `Host` header the upstream gets.
    pub authority: String,
    /// What its pooled connections are filed under.
    pub pool_key: PoolKey,
}

/// What pooled connections are shared by: same address, same TLS settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub host: String,
    pub port: u16,
    pub tls: Option<UpstreamTls>,
}

impl ProxyTarget {
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Parses the JSON of `P:PROXY:<host>`; the error says what is wrong.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(obj) = value else {
            return Err(String::from("not a JSON object"));
        };
        let text = |key: &str| -> Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("'{key}' must be a string, not {other}")),
            }
        };
        let flag = |key: &str| -> Result<bool, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::Number(n)) => Ok(n.as_f64().is_some_and(|n| n != 0.0)),
                Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" | "1" => Ok(true),
                    "false" | "no" | "off" | "0" | "" => Ok(false),
                    _ => Err(format!("'{key}' must be true or false, not {s:?}")),
                },
                Some(other) => Err(format!("'{key}' must be true or false, not {other}")),
            }
        };
        let host = text("target")?.ok_or("'target' (the upstream host) is missing")?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host)
            .to_owned();
        if host.bytes().any(|b| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || matches!(b, b'/' | b'@' | b'?' | b'#')
        }) {
            return Err(format!(
                "'target' must be a host name or address, not {host:?}"
            ));
        }
        let scheme = text("scheme")?.unwrap_or_else(|| String::from("http"));
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => return Err(format!("'scheme' must be http or https, not {other:?}")),
        };
        let port = match obj.get("port") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_u64().ok_or("'port' must be 1-65535")?),
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.parse().map_err(|_| "'port' must be 1-65535")?),
            Some(other) => return Err(format!("'port' must be a number, not {other}")),
        };
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or("'port' must be 1-65535")?,
        };
        let handshake_timeout = match obj.get("tls_handshake_timeout") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if s > 0.0 && s <= 3600.0 => Some(Duration::from_secs_f64(s)),
                _ => {
                    return Err(String::from(
                        "'tls_handshake_timeout' must be 0-3600 seconds",
                    ));
                }
            },
            Some(other) => {
                return Err(format!(
                    "'tls_handshake_timeout' must be a number of seconds, not {other}"
                ));
            }
        };
        let insecure = flag("tls_insecure")? || flag("tls_no_verify")? || flag("no_verify_mode")?;
        let tls = https.then(|| -> Result<UpstreamTls, String> {
            Ok(UpstreamTls {
                cafile: text("tls_cafile")?.map(PathBuf::from),
                capath: text("tls_capath")?.map(PathBuf::from),
                verify: !insecure,
            })
        });
        let tls = tls.transpose()?;
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let default_port = if https { 443 } else { 80 };
        let authority = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        let origin = format!("{}://{authority}", if https { "https" } else { "http" });
        let pool_key = PoolKey {
            host: host.clone(),
            port,
            tls: tls.clone(),
        };
        Ok(Self {
            host,
            port,
            tls,
            handshake_timeout,
            origin,
            authority,
            pool_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliw_entries_parse_with_defaults() {
        let t = ProxyTarget::parse(br#"{"target":"127.0.0.1","port":8081}"#).unwrap();
        assert_eq!(t.port, 8081);
        assert_eq!(t.tls, None);
        assert_eq!(t.authority, "127.0.0.1:8081");
        assert_eq!(t.origin, "http://127.0.0.1:8081");

        let t = ProxyTarget::parse(
            br#"{"target":"api.example","scheme":"https","tls_cafile":"/ca.pem","tls_handshake_timeout":2}"#,
        )
        .unwrap();
        assert_eq!(t.port, 443);
        assert_eq!(t.authority, "api.example");
        assert_eq!(t.origin, "https://api.example");
        assert_eq!(t.handshake_timeout, Some(Duration::from_secs(2)));
        let tls = t.tls.unwrap();
        assert!(tls.verify);
        assert_eq!(tls.cafile, Some(PathBuf::from("/ca.pem")));

        let t = ProxyTarget::parse(
            br#"{"target":"::1","scheme":"https","port":"8443","no_verify_mode":true}"#,
        )
        .unwrap();
        assert_eq!(t.authority, "[::1]:8443");
        assert_eq!(t.tls.map(|t| t.verify), Some(false));
        for flag in ["tls_insecure", "tls_no_verify", "no_verify_mode"] {
            let json = format!(r#"{{"target":"h","scheme":"https","{flag}":"true"}}"#);
            let t = ProxyTarget::parse(json.as_bytes()).unwrap();
            assert_eq!(t.tls.map(|t| t.verify), Some(false), "{flag}");
        }
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (json, says) in [
            (&br#"{"port":80}"#[..], "target"),
            (br#"{"target":"h","scheme":"ftp"}"#, "scheme"),
            (br#"{"target":"h","port":70000}"#, "port"),
            (br#"{"target":"h","port":0}"#, "port"),
            (br#"{"target":"h/x"}"#, "target"),
            (br#"{"target":"h","tls_insecure":"maybe"}"#, "tls_insecure"),
            (br#"[1]"#, "object"),
            (br#"nope"#, "JSON"),
        ] {
            let e = ProxyTarget::parse(json).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
