//! When a certificate is valid: `notBefore` and `notAfter` read from its
//! DER (RFC 5280: Certificate → TBSCertificate → Validity), with a reader
//! of just the DER this needs. Sans-IO.

/// A DER element: (tag, contents, what follows).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// A certificate's validity, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Validity {
    pub(super) not_before: i64,
    pub(super) not_after: i64,
}

/// The validity of a DER certificate.
pub(super) fn validity(der: &[u8]) -> Option<Validity> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer, then validity.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, validity, _) = element(rest)? else {
        return None;
    };
    let (before_tag, before, rest) = element(validity)?;
    let (after_tag, after, _) = element(rest)?;
    Some(Validity {
        not_before: parse_time(before_tag, std::str::from_utf8(before).ok()?)?,
        not_after: parse_time(after_tag, std::str::from_utf8(after).ok()?)?,
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, text: &str) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    // ASCII digits only, before any slicing by position.
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: i64 = digits[..2].parse().ok()?;
            // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_read_from_a_real_certificate() {
        let mut params = rcgen::CertificateParams::new(vec![String::from("a.test")]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 12, 7);
        let cert = params.self_signed(&key).unwrap();
        // 2026-12-07T00:00:00Z and 2030-01-02T00:00:00Z
        assert_eq!(
            validity(cert.der()),
            Some(Validity {
                not_before: 1_796_601_600,
                not_after: 1_893_542_400
            })
        );
        // GeneralizedTime past 2049.
        params.not_after = rcgen::date_time_ymd(2051, 6, 30);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            validity(cert.der()).map(|v| v.not_after),
            Some(2_571_696_000)
        );
    }

    #[test]
    fn garbage_is_no_date() {
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        // Multi-byte characters where digits belong: no panic.
        assert_eq!(parse_time(UTC_TIME, "ééé000000Z"), None);
        assert_eq!(parse_time(GENERALIZED_TIME, "2030€0000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, "991301000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, "700101000000Z"), Some(0));
    }
}
