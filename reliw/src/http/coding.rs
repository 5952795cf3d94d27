//! Content codings: `Accept-Encoding` negotiation (RFC 9110 §12.5.3) and
//! the ETags that tell one coding of a representation from another.
//!
//! Sans-IO like the rest of `http`: the server's preference order comes in
//! as an argument, the choice goes out as a value.

/// A content coding reliw can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coding {
    Gzip,
    Br,
    Zstd,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The token in `Content-Encoding` and `Accept-Encoding`.
    pub const fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// The file name suffix of a precompressed sibling (`app.css.br`).
    pub const fn file_suffix(self) -> &'static str {
        match self {
            Coding::Gzip => ".gz",
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.token().eq_ignore_ascii_case(token))
    }

    /// An index for small per-coding tables.
    pub const fn index(self) -> usize {
        match self {
            Coding::Br => 0,
            Coding::Zstd => 1,
            Coding::Gzip => 2,
        }
    }
}

/// What the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The representation as it is.
    Identity,
    /// Encoded with this coding.
    Encoded(Coding),
    /// The client refused identity and every coding we offer (406).
    NotAcceptable,
}

/// The client's weights, in thousandths (`q=0.5` is 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    codings: [Option<u16>; 3],
    identity: Option<u16>,
    star: Option<u16>,
}

impl Accepted {
    /// Parses every `Accept-Encoding` field value of a request; a
    /// malformed member is skipped, never the whole field.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut acc = Accepted {
            codings: [None; 3],
            identity: None,
            star: None,
        };
        for value in values {
            for member in value.split(',') {
                let mut parts = member.split(';');
                let token = parts.next().unwrap_or("").trim();
                if token.is_empty() {
                    continue;
                }
                let mut q = Some(1000);
                for param in parts {
                    let Some((name, v)) = param.split_once('=') else {
                        continue;
                    };
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(v.trim());
                    }
                }
                let Some(q) = q else { continue };
                // The highest weight given wins when a coding is listed twice.
                let slot = if token == "*" {
                    &mut acc.star
                } else if token.eq_ignore_ascii_case("identity") {
                    &mut acc.identity
                } else if let Some(c) = Coding::from_token(token) {
                    &mut acc.codings[c.index()]
                } else if token.eq_ignore_ascii_case("x-gzip") {
                    &mut acc.codings[Coding::Gzip.index()]
                } else {
                    continue;
                };
                *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
            }
        }
        acc
    }

    /// The weight of `coding`: its own, else `*`'s, else 0 (not listed).
    pub fn weight(&self, coding: Coding) -> u16 {
        self.codings[coding.index()].or(self.star).unwrap_or(0)
    }

    /// Whether identity is acceptable: unless refused by `identity;q=0`,
    /// or by `*;q=0` without an `identity` member.
    pub fn identity_ok(&self) -> bool {
        match (self.identity, self.star) {
            (Some(q), _) => q > 0,
            (None, Some(0)) => false,
            _ => true,
        }
    }

    /// The best of `offered` (the server's preference order breaks ties).
    pub fn best(&self, offered: &[Coding]) -> Option<Coding> {
        let mut best: Option<(Coding, u16)> = None;
        for &c in offered {
            let w = self.weight(c);
            if w > 0 && best.is_none_or(|(_, bw)| w > bw) {
                best = Some((c, w));
            }
        }
        best.map(|(c, _)| c)
    }

    /// The choice for a response that may be encoded with any of `offered`
    /// (empty: it cannot be encoded, say it is too small or a range).
    /// Identity is preferred over a coding only when the client weighs it
    /// higher.
    pub fn choose(&self, offered: &[Coding]) -> Choice {
        match self.best(offered) {
            Some(c) => match self.identity {
                Some(q) if q > self.weight(c) => Choice::Identity,
                _ => Choice::Encoded(c),
            },
            None if self.identity_ok() => Choice::Identity,
            None => Choice::NotAcceptable,
        }
    }
}

/// `q=` value: 0 to 1 with at most three decimals; `None` if malformed.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The ETag of `etag`'s representation encoded with `coding`: the same
/// opaque tag with `-<coding>` inside the quotes (`"abc"` → `"abc-br"`),
/// so a cache never takes one coding's bytes for another's. `W/` stays.
pub fn variant_etag(etag: &str, coding: Coding) -> String {
    match etag.strip_suffix('"') {
        Some(open) => format!("{open}-{}\"", coding.token()),
        None => format!("{etag}-{}", coding.token()),
    }
}

/// The tag a client sent with any coding suffix taken off, and the
/// coding it named: `"abc-br"` → (`"abc"`, Some(Br)).
pub fn strip_variant(tag: &str) -> (std::borrow::Cow<'_, str>, Option<Coding>) {
    let (body, quoted) = match tag.strip_suffix('"') {
        Some(b) => (b, true),
        None => (tag, false),
    };
    for c in Coding::ALL {
        if let Some(base) = body
            .strip_suffix(c.token())
            .and_then(|b| b.strip_suffix('-'))
        {
            let base = if quoted {
                std::borrow::Cow::Owned(format!("{base}\""))
            } else {
                std::borrow::Cow::Borrowed(base)
            };
            return (base, Some(c));
        }
    }
    (std::borrow::Cow::Borrowed(tag), None)
}

/// Whether a tag from `If-None-Match` names `etag` in any coding
/// (weak comparison: `W/` is ignored; `"abc-br"` names `"abc"`).
pub fn tag_names(tag: &str, etag: &str) -> bool {
    let bare = |t: &str| -> String { t.strip_prefix("W/").unwrap_or(t).to_owned() };
    let (base, _) = strip_variant(tag);
    bare(tag) == bare(etag) || bare(&base) == bare(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Coding] = &Coding::ALL;

    fn choose(ae: &str, offered: &[Coding]) -> Choice {
        Accepted::parse([ae]).choose(offered)
    }

    #[test]
    fn plain_lists_pick_the_server_preference() {
        assert_eq!(
            choose("gzip, deflate, br, zstd", ALL),
            Choice::Encoded(Coding::Br)
        );
        assert_eq!(choose("gzip", ALL), Choice::Encoded(Coding::Gzip));
        assert_eq!(choose("GZIP", ALL), Choice::Encoded(Coding::Gzip));
        assert_eq!(choose("x-gzip", ALL), Choice::Encoded(Coding::Gzip));
        assert_eq!(choose("deflate", ALL), Choice::Identity);
        assert_eq!(choose("", ALL), Choice::Identity);
    }

    #[test]
    fn q_values_order_and_refuse() {
        assert_eq!(choose("br;q=0.5, gzip", ALL), Choice::Encoded(Coding::Gzip));
        assert_eq!(
            choose("br;q=0, gzip;q=0.1", ALL),
            Choice::Encoded(Coding::Gzip)
        );
        assert_eq!(choose("gzip;q=0", ALL), Choice::Identity);
        assert_eq!(choose("gzip;q=1.0", ALL), Choice::Encoded(Coding::Gzip));
        assert_eq!(choose("gzip;q=0.001", ALL), Choice::Encoded(Coding::Gzip));
        // Malformed weights drop the member only.
        assert_eq!(choose("br;q=2, gzip", ALL), Choice::Encoded(Coding::Gzip));
        assert_eq!(
            choose("br;q=0.5555, gzip;q=0.1", ALL),
            Choice::Encoded(Coding::Gzip)
        );
        assert_eq!(
            choose("br ; q = 0.9 , zstd;q=0.8", ALL),
            Choice::Encoded(Coding::Br)
        );
    }

    #[test]
    fn star_and_identity() {
        assert_eq!(choose("*", ALL), Choice::Encoded(Coding::Br));
        assert_eq!(
            choose("*;q=0.5, br;q=0", ALL),
            Choice::Encoded(Coding::Zstd)
        );
        // Identity refused and nothing we can encode: 406.
        assert_eq!(choose("identity;q=0", &[]), Choice::NotAcceptable);
        assert_eq!(choose("*;q=0", &[]), Choice::NotAcceptable);
        assert_eq!(choose("*;q=0, identity", &[]), Choice::Identity);
        assert_eq!(
            choose("identity;q=0, gzip", ALL),
            Choice::Encoded(Coding::Gzip)
        );
        assert_eq!(choose("deflate, identity;q=0", ALL), Choice::NotAcceptable);
        // A client that weighs identity higher gets identity.
        assert_eq!(choose("identity, gzip;q=0.5", ALL), Choice::Identity);
        assert_eq!(
            choose("identity;q=0.5, gzip", ALL),
            Choice::Encoded(Coding::Gzip)
        );
    }

    #[test]
    fn several_fields_add_up() {
        let acc = Accepted::parse(["gzip;q=0.2", "zstd"]);
        assert_eq!(acc.choose(ALL), Choice::Encoded(Coding::Zstd));
        assert_eq!(acc.choose(&[Coding::Gzip]), Choice::Encoded(Coding::Gzip));
    }

    #[test]
    fn variant_etags_round_trip() {
        assert_eq!(variant_etag("\"abc\"", Coding::Br), "\"abc-br\"");
        assert_eq!(variant_etag("W/\"abc\"", Coding::Gzip), "W/\"abc-gzip\"");
        for c in Coding::ALL {
            let v = variant_etag("\"1-2-3\"", c);
            assert_eq!(strip_variant(&v), ("\"1-2-3\"".into(), Some(c)));
        }
        assert_eq!(strip_variant("\"abc\""), ("\"abc\"".into(), None));
        assert_eq!(
            strip_variant("abc-zstd"),
            ("abc".into(), Some(Coding::Zstd))
        );
        assert!(tag_names("\"abc-gzip\"", "\"abc\""));
        assert!(tag_names("W/\"abc\"", "\"abc\""));
        assert!(!tag_names("\"abd-gzip\"", "\"abc\""));
    }
}
