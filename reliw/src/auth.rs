//! RELIW's logins, sans-IO: form bodies, cookies, password checks, session
//! tokens and the redirect after login. The store calls live in the site
//! pipeline.
//!
//! - Passwords: `USERS:<host>` maps a user to `{"pass": hex, "salt": s}`,
//!   `pass` = HMAC-SHA256(key = salt, message = password), compared in
//!   constant time.
//! - Sessions: a token of 256 random bits (hex), `SESSIONS:<host>:<token>`
//!   → user, with a TTL of [`SESSION_TTL`]; RELIW's 21-character nanoid
//!   tokens are accepted too.
//! - Cookies: `rlw_session_token` (Secure; HttpOnly; SameSite=Lax; Path=/)
//!   and `rlw_redirect` (the local path to return to after login).

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::http::RequestHead;

pub const SESSION_COOKIE: &str = "rlw_session_token";
pub const REDIRECT_COOKIE: &str = "rlw_redirect";
/// How long a session lives (RELIW's three hours).
pub const SESSION_TTL: Duration = Duration::from_secs(3 * 3600);
/// Largest login form read; a larger body is a failed login.
pub const FORM_LIMIT: usize = 16 * 1024;

/// An `application/x-www-form-urlencoded` body; `None` if malformed
/// (bad escapes, not UTF-8).
pub fn parse_form(body: &[u8]) -> Option<HashMap<String, String>> {
    let mut fields = HashMap::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        fields.insert(form_decode(name)?, form_decode(value)?);
    }
    Some(fields)
}

fn form_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                let s = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(s, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(req: &'a RequestHead, name: &str) -> Option<&'a str> {
    req.headers()
        .filter(|(n, _)| *n == "cookie")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// Whether `password` matches the stored `{"pass", "salt"}` record.
pub fn password_matches(record: &[u8], password: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct User {
        pass: String,
        salt: String,
    }
    let Ok(user) = serde_json::from_slice::<User>(record) else {
        return false;
    };
    let Some(expected) = hex_decode(&user.pass) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(user.salt.as_bytes()) else {
        return false;
    };
    mac.update(password.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// The hex HMAC-SHA256 RELIW stores for `password` with `salt`.
pub fn password_hash(salt: &str, password: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(salt.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(password.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fresh session token: 256 bits from the OS, hex.
pub fn new_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex(&bytes))
}

/// Whether a token looks like one reliw or RELIW issues (so junk never
/// reaches the store): reliw's 64 hex digits, or RELIW's nanoid, 21
/// characters of the URL-safe alphabet (`A-Za-z0-9_-`), so a mixed fleet
/// or a switch-over keeps users logged in.
pub fn plausible_token(token: &str) -> bool {
    let reliw = token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit());
    let nanoid = token.len() == NANOID_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    reliw || nanoid
}

/// The length of RELIW's session tokens (nanoid's default).
const NANOID_LEN: usize = 21;

/// Where to go after login: the `rlw_redirect` path if it is a local path
/// (one leading `/`, no scheme, no `//`, no backslash or control bytes),
/// else `/`.
pub fn redirect_target(cookie: Option<&str>) -> &str {
    match cookie {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.bytes().any(|b| b == b'\\' || b < 0x21 || b == 0x7f) =>
        {
            path
        }
        _ => "/",
    }
}

/// `Set-Cookie` for a new session.
pub fn session_cookie(token: &str) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Max-Age={}; Secure; HttpOnly; SameSite=Lax; Path=/",
        SESSION_TTL.as_secs()
    )
}

/// `Set-Cookie` that remembers where an unauthenticated visitor was going.
pub fn redirect_cookie(path: &str) -> String {
    format!("{REDIRECT_COOKIE}={path}; HttpOnly; SameSite=Lax; Path=/")
}

/// `Set-Cookie` values that expire both cookies.
pub fn expired_cookies() -> [String; 2] {
    [SESSION_COOKIE, REDIRECT_COOKIE].map(|name| {
        format!("{name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; HttpOnly; SameSite=Lax; Path=/")
    })
}

/// The login form (inside the site template).
pub const LOGIN_FORM: &str = r#"<section id="login">
<form method="post">
<label>Login <input name="login" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form>
</section>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let f = parse_form(b"login=alice&password=a%20b+c%26&empty=&flag").unwrap_or_default();
        assert_eq!(f.get("login").map(String::as_str), Some("alice"));
        assert_eq!(f.get("password").map(String::as_str), Some("a b c&"));
        assert_eq!(f.get("empty").map(String::as_str), Some(""));
        assert_eq!(f.get("flag").map(String::as_str), Some(""));
        assert!(parse_form(b"").is_some_and(|f| f.is_empty()));
        for bad in [&b"a=%zz"[..], b"a=%4", b"a=%ff%fe", b"%=1"] {
            assert!(parse_form(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn passwords() {
        let record = format!(
            r#"{{"pass": "{}", "salt": "pepper"}}"#,
            password_hash("pepper", "s3cret")
        );
        assert!(password_matches(record.as_bytes(), "s3cret"));
        assert!(!password_matches(record.as_bytes(), "s3cret "));
        assert!(!password_matches(record.as_bytes(), ""));
        assert!(!password_matches(b"{}", "x"));
        assert!(!password_matches(br#"{"pass": "zz", "salt": "s"}"#, "x"));
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            password_hash("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn redirects_stay_local() {
        assert_eq!(
            redirect_target(Some("/private/page?x=1")),
            "/private/page?x=1"
        );
        for bad in [
            None,
            Some(""),
            Some("https://evil.example/"),
            Some("//evil.example/"),
            Some("/\\evil.example"),
            Some("javascript:alert(1)"),
            Some("/a b"),
        ] {
            assert_eq!(redirect_target(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn tokens() {
        let (a, b) = (new_token(), new_token());
        assert!(a.as_deref().is_some_and(plausible_token));
        assert_ne!(a, b);
        assert!(!plausible_token("../../x"));
        // RELIW's nanoid tokens.
        assert!(plausible_token("V1StGXR8_Z5jdHi6B-myT"));
        assert!(!plausible_token("V1StGXR8_Z5jdHi6B-my"), "20 characters");
        assert!(
            !plausible_token("V1StGXR8:Z5jdHi6B-myT"),
            "not the alphabet"
        );
        assert!(!plausible_token("V1StGXR8_Z5jdHi6B-my*"));
    }
}
