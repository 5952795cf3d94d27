//! String validation of the Host header and the request path, as RELIW did
//! it. This is the first of two fences: the second is the kernel
//! (`openat2` with `RESOLVE_BENEATH`, see `files::open`).

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The Host header, normalised as RELIW did: lower case, port removed,
/// brackets of an IPv6 address removed. `None` when it is not a DNS name
/// (underscores allowed in labels, as RELIW), `localhost`, an IPv4
/// address or a bracketed IPv6 address.
pub fn normalise_host(raw: &str) -> Option<String> {
    normalised_host(raw).map(Cow::into_owned)
}

/// [`normalise_host`], borrowing from `raw` when it is lower-case
/// already (what clients send): no allocation per request.
pub fn normalised_host(raw: &str) -> Option<Cow<'_, str>> {
    let trimmed = raw.trim();
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        let lower = trimmed.to_ascii_lowercase();
        return host_of(&lower).map(|h| Cow::Owned(h.to_owned()));
    }
    host_of(trimmed).map(Cow::Borrowed)
}

/// The host in a lower-case `Host` value, port and IPv6 brackets removed.
fn host_of(lower: &str) -> Option<&str> {
    let host = if let Some(rest) = lower.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        // RELIW keys an IPv6 host without its brackets (`RLW:API:::1`).
        return Some(inside);
    } else {
        match lower.rsplit_once(':') {
            Some((host, port)) if valid_port(port) => host,
            Some(_) => return None,
            None => lower,
        }
    };
    // `__` names the fallback site's data, never a host of its own.
    if host == crate::files::FALLBACK_HOST {
        return None;
    }
    if host == "localhost" || host.parse::<Ipv4Addr>().is_ok() || is_dns_name(host) {
        Some(host)
    } else {
        None
    }
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
        // All-numeric names are malformed IPv4 addresses, not DNS names.
        && !host.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPath(pub &'static str);

/// Validates a request path (without query) and returns it decoded and
/// relative (no leading `/`, no empty or `.` segments), as bytes.
/// `Err` for: no leading `/`, control bytes, backslashes, encoded `.`, `/`
/// or `\`, invalid percent escapes, a NUL or `..` segment after decoding.
pub fn relative_path(path: &str) -> Result<Vec<u8>, BadPath> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(BadPath("path must start with /"));
    }
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
        return Err(BadPath("control byte or backslash in path"));
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"].iter().any(|enc| lower.contains(enc)) {
        return Err(BadPath("encoded dot, slash or backslash in path"));
    }
    let decoded = percent_decode(raw).ok_or(BadPath("invalid percent escape in path"))?;
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
        return Err(BadPath("control byte or backslash in decoded path"));
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(BadPath("'..' segment in path")),
            s => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(s);
            }
        }
    }
    Ok(out)
}

/// [`relative_path`]'s verdict without building the path: the site's
/// front step only needs to know a path is acceptable, on every request.
pub fn check_path(path: &str) -> Result<(), BadPath> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(BadPath("path must start with /"));
    }
    let refused = |b: u8| b < 0x20 || b == 0x7f || b == b'\\';
    if raw.iter().any(|&b| refused(b)) {
        return Err(BadPath("control byte or backslash in path"));
    }
    let encoded = raw.windows(3).any(|w| {
        w[0] == b'%'
            && [b"2e", b"2f", b"5c"]
                .iter()
                .any(|enc| w[1..].eq_ignore_ascii_case(&enc[..]))
    });
    if encoded {
        return Err(BadPath("encoded dot, slash or backslash in path"));
    }
    let mut bad_decoded = false;
    decode_each(raw, |b| bad_decoded |= refused(b))
        .ok_or(BadPath("invalid percent escape in path"))?;
    if bad_decoded {
        return Err(BadPath("control byte or backslash in decoded path"));
    }
    // No encoded slash or dot got this far: segments and dots are literal.
    if path.split('/').any(|segment| segment == "..") {
        return Err(BadPath("'..' segment in path"));
    }
    Ok(())
}

/// Calls `each` with every byte of `raw` percent-decoded; `None` at an
/// invalid escape.
fn decode_each(raw: &[u8], mut each: impl FnMut(u8)) -> Option<()> {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = (*raw.get(i + 1)? as char).to_digit(16)?;
            let lo = (*raw.get(i + 2)? as char).to_digit(16)?;
            each((hi * 16 + lo) as u8);
            i += 3;
        } else {
            each(raw[i]);
            i += 1;
        }
    }
    Some(())
}

pub(crate) fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = (*raw.get(i + 1)? as char).to_digit(16)?;
            let lo = (*raw.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_path_agrees_with_relative_path() {
        for path in [
            "/",
            "/a",
            "/a/b.css",
            "//a",
            "/a/./b",
            "/a/../b",
            "/..",
            "/a/..",
            "/...",
            "/a..b",
            "a",
            "",
            "/a%20b",
            "/%41",
            "/%2e%2e/x",
            "/%2E",
            "/%2f",
            "/%5C",
            "/%zz",
            "/%4",
            "/a\\b",
            "/a\u{7f}",
            "/%00",
            "/%7f",
            "/%5c",
            "/caf%C3%A9",
            "/a?b=1",
            "/a/%",
            "/.%2e/",
        ] {
            assert_eq!(
                check_path(path).is_ok(),
                relative_path(path).is_ok(),
                "{path:?}"
            );
        }
    }

    #[test]
    fn hosts_are_normalised_or_refused() {
        assert_eq!(
            normalise_host("Example.COM:8080").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalise_host("localhost").as_deref(), Some("localhost"));
        assert_eq!(
            normalise_host("198.18.0.1:80").as_deref(),
            Some("198.18.0.1")
        );
        assert_eq!(normalise_host("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(normalise_host("[FD00::1]").as_deref(), Some("fd00::1"));
        assert_eq!(
            normalise_host("_dmarc.Example.com").as_deref(),
            Some("_dmarc.example.com")
        );
        assert_eq!(normalise_host("my_host:80").as_deref(), Some("my_host"));
        for bad in [
            "",
            "__",
            "..",
            "a..b",
            "-a.com",
            "a/b",
            "a\\b",
            "::1",
            "[::1",
            "[zz]",
            "a.com:",
            "a.com:x",
            "999.1.1.1",
            "a com",
        ] {
            assert_eq!(normalise_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_are_decoded_and_confined_to_relative_form() {
        assert_eq!(relative_path("/"), Ok(Vec::new()));
        assert_eq!(relative_path("/a//b/./c.html"), Ok(b"a/b/c.html".to_vec()));
        assert_eq!(relative_path("/sp%20ace"), Ok(b"sp ace".to_vec()));
        // Double encoding decodes once: a literal '%2e%2e' name, not '..'.
        assert_eq!(relative_path("/%252e%252e/x"), Ok(b"%2e%2e/x".to_vec()));
    }

    #[test]
    fn traversal_and_garbage_are_refused() {
        for bad in [
            "",
            "a",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a\0b",
            "/a%00b",
            "/a%0ab",
            "/a\tb",
            "/%zz",
            "/%2",
            "/..",
            "/a/..",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?}");
        }
    }
}
