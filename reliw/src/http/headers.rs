//! Field-value grammar both parsers share (the request codec here, the
//! upstream response parser in `proxy::head`): one definition of a
//! Content-Length and of a token list, so the two sides of the proxy can
//! never disagree on where a body ends.

/// A Content-Length value: 1*DIGIT and nothing else (no sign, no
/// spaces, no list), at most 19 digits so it fits a u64.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The elements of a comma-separated list (`Connection`,
/// `Transfer-Encoding`): trimmed of ASCII whitespace, empty ones skipped.
/// Compare them with `eq_ignore_ascii_case`: nothing is allocated.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether the list `value` holds `token` (case-insensitively).
pub fn has_token(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"1234"), Some(1234));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1,1",
            b"1 ",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_are_trimmed_and_empty_ones_skipped() {
        let got: Vec<&[u8]> = tokens(b" close ,,\tUpgrade,").collect();
        assert_eq!(got, [&b"close"[..], b"Upgrade"]);
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(!has_token(b"keep-alive", "close"));
    }
}
