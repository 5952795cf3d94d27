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

/// Which form of the representation tagged `etag` a tag from
/// `If-None-Match` names: `Some(None)` the identity form (`W/` ignored),
/// `Some(Some(c))` its `c`-encoded form (`"abc-br"` for `"abc"`), `None`
/// neither. No allocation: it runs for every conditional request.
pub fn named_coding(tag: &str, etag: &str) -> Option<Option<Coding>> {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    if tag == etag {
        return Some(None);
    }
    let open = etag.strip_suffix('"')?;
    let token = tag
        .strip_prefix(open)?
        .strip_prefix('-')?
        .strip_suffix('"')?;
    Coding::from_token(token).map(Some)
}

/// Whether a tag from `If-None-Match` names `etag` in a form this request
/// may be sent: a coding it accepts, or identity when identity is not
/// refused. (A cache revalidating a brotli copy for a client that takes
/// only gzip must not get a 304.)
pub fn tag_names(tag: &str, etag: &str, accepted: &Accepted) -> bool {
    match named_coding(tag, etag) {
        Some(None) => accepted.identity_ok(),
        Some(Some(c)) => accepted.weight(c) > 0,
        None => false,
    }
}

impl Accepted {
    /// Every `Accept-Encoding` field of a request.
    pub fn of(req: &super::RequestHead) -> Self {
        Self::parse(
            req.headers()
                .filter(|(name, _)| *name == "accept-encoding")
                .filter_map(|(_, v)| std::str::from_utf8(v).ok()),
        )
    }
}

/// Whether a `Cache-Control` value forbids transforming the body.
pub fn no_transform(cache_control: &str) -> bool {
    cache_control
        .split(',')
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

/// Whether a `Vary` value lists `Accept-Encoding` already (or `*`).
pub fn varies_on_encoding(vary: &str) -> bool {
    vary.split(',').any(|t| {
        let t = t.trim();
        t.eq_ignore_ascii_case("accept-encoding") || t == "*"
    })
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
            assert_eq!(named_coding(&v, "\"1-2-3\""), Some(Some(c)));
            assert_eq!(named_coding(&v, "W/\"1-2-3\""), Some(Some(c)));
        }
        assert_eq!(named_coding("\"abc\"", "\"abc\""), Some(None));
        assert_eq!(named_coding("W/\"abc\"", "\"abc\""), Some(None));
        assert_eq!(named_coding("\"abd-gzip\"", "\"abc\""), None);
        assert_eq!(named_coding("\"abc-lzma\"", "\"abc\""), None);
        assert_eq!(named_coding("\"abc-gzip", "\"abc\""), None);
    }

    #[test]
    fn conditional_tags_count_only_for_forms_the_client_takes() {
        let gzip_only = Accepted::parse(["gzip"]);
        let nothing = Accepted::parse([""]);
        let no_identity = Accepted::parse(["br, identity;q=0"]);
        let etag = "\"abc\"";
        assert!(tag_names("\"abc-gzip\"", etag, &gzip_only));
        assert!(!tag_names("\"abc-br\"", etag, &gzip_only));
        assert!(!tag_names("\"abc-br\"", etag, &nothing));
        assert!(tag_names(etag, etag, &nothing));
        assert!(!tag_names(etag, etag, &no_identity));
        assert!(tag_names("\"abc-br\"", etag, &no_identity));
        assert!(no_transform("public, No-Transform"));
        assert!(!no_transform("no-store"));
        assert!(varies_on_encoding("Accept, accept-encoding"));
        assert!(!varies_on_encoding("Accept"));
    }
}
