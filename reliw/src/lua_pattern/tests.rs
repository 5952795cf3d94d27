//! Lua's own answers, produced with lua5.4 (`string.find`, `string.match`,
//! `string.gsub`) for each pattern and subject below, and compared with the
//! translation.
#![allow(clippy::unwrap_used)]

use super::*;

type FindCase = (
    &'static [u8],
    &'static [u8],
    Option<(usize, usize)>,
    &'static [&'static [u8]],
);

/// (pattern, subject, find as 0-based [start, end), match captures)
const FIND: &[FindCase] = &[
    (b"^/api/(%w+)$", b"/api/users", Some((0, 10)), &[b"users"]),
    (b"^/api/(%w+)$", b"/api/users/1", None, &[]),
    (b"%.md$", b"/docs/readme.md", Some((12, 15)), &[b".md"]),
    (b"%.md$", b"/docs/readme.md.bak", None, &[]),
    (
        b"^/static/.*",
        b"/static/css/a.css",
        Some((0, 17)),
        &[b"/static/css/a.css"],
    ),
    (b"^/static/.*", b"/x/static/", None, &[]),
    (b"[%w_]+", b"--foo_bar9--", Some((2, 10)), &[b"foo_bar9"]),
    (
        b"%d+%-?%d*",
        b"tel 555-1234 x",
        Some((4, 12)),
        &[b"555-1234"],
    ),
    (b"a-b", b"aaab", Some((0, 4)), &[b"aaab"]),
    (b"[^/]+$", b"/a/b/file.txt", Some((5, 13)), &[b"file.txt"]),
    (
        b"^(.-)%.(%w+)$",
        b"archive.tar.gz",
        Some((0, 14)),
        &[b"archive.tar", b"gz"],
    ),
    (b"%s*", b"  x", Some((0, 2)), &[b"  "]),
    (b"x*", b"aaa", Some((0, 0)), &[b""]),
    (b"[a-z]+", b"ABCdefGHI", Some((3, 6)), &[b"def"]),
    (b"[]]", b"a]b", Some((1, 2)), &[b"]"]),
    (b"[^]]+", b"ab]c", Some((0, 2)), &[b"ab"]),
    (b"[%a-]+", b"-ab-c1", Some((0, 5)), &[b"-ab-c"]),
    (b"^$", b"", Some((0, 0)), &[b""]),
    (b"^$", b"x", None, &[]),
    (b"%%", b"100%", Some((3, 4)), &[b"%"]),
    (b"a?b", b"xxb", Some((2, 3)), &[b"b"]),
    (b"(a)(b)", b"zab", Some((1, 3)), &[b"a", b"b"]),
    (b"%u%l+", b"hello World", Some((6, 11)), &[b"World"]),
    (b"(h)(e)(l)", b"hello", Some((0, 3)), &[b"h", b"e", b"l"]),
    (b"%.%.", b"/a/../b", Some((3, 5)), &[b".."]),
    (b"^/$", b"/", Some((0, 1)), &[b"/"]),
    (b"[0-9a-fA-F]+", b"zz0xBEEF", Some((2, 3)), &[b"0"]),
    (b"%W+", b"ab, cd", Some((2, 4)), &[b", "]),
    (b"%S+", b"  word  ", Some((2, 6)), &[b"word"]),
    (b"[%s%d]+", b"ab 12 3c", Some((2, 7)), &[b" 12 3"]),
    (
        b"(%w+)=(%w+)",
        b"key=value&x=y",
        Some((0, 9)),
        &[b"key", b"value"],
    ),
    (
        b"^%s*(.-)%s*$",
        b"  trim me  ",
        Some((0, 11)),
        &[b"trim me"],
    ),
    (b"%p", b"abc!", Some((3, 4)), &[b"!"]),
    (b"%c", b"a\x09b", Some((1, 2)), &[b"\x09"]),
    (b"%x+", b"ghij0ff", Some((4, 7)), &[b"0ff"]),
    (b"%g+", b" visible ", Some((1, 8)), &[b"visible"]),
    (b"[%u%d]+", b"abC1D2e", Some((2, 6)), &[b"C1D2"]),
    (b"(%d+)", b"no digits", None, &[]),
    (b".-", b"abc", Some((0, 0)), &[b""]),
    (b".+", b"abc", Some((0, 3)), &[b"abc"]),
    (b"a*b*c*", b"xyz", Some((0, 0)), &[b""]),
    (b"$x", b"a$x", Some((1, 3)), &[b"$x"]),
    (b"x^", b"ax^", Some((1, 3)), &[b"x^"]),
    (b"[a-]", b"-", Some((0, 1)), &[b"-"]),
    (b"[-a]", b"-", Some((0, 1)), &[b"-"]),
    (b"[z-a]", b"m", None, &[]),
    (b"%]", b"a]", Some((1, 2)), &[b"]"]),
    (
        b"\xC3\xA9+",
        b"caf\xC3\xA9\xC3\xA9!",
        Some((3, 5)),
        &[b"\xC3\xA9"],
    ),
    (
        b"[\x80-\xFF]+",
        b"na\xC3\xAFve",
        Some((2, 4)),
        &[b"\xC3\xAF"],
    ),
    (b"union|select", b"1 union select 2", None, &[]),
    (b"<script", b"x<script>", Some((1, 8)), &[b"<script"]),
    (b"%.%./", b"../etc", Some((0, 3)), &[b"../"]),
    (b"(['\"])", b"it's", Some((2, 3)), &[b"'"]),
];

/// (subject, pattern, replacement, result, count)
type GsubCase = (
    &'static [u8],
    &'static [u8],
    &'static [u8],
    &'static [u8],
    usize,
);

const GSUB: &[GsubCase] = &[
    (b"hello world", b"o", b"0", b"hell0 w0rld", 2),
    (b"hello world", b"%w+", b"<%0>", b"<hello> <world>", 2),
    (b"hello world", b"(%w+) (%w+)", b"%2 %1", b"world hello", 1),
    (b"abc", b"%w*", b"-", b"-", 1),
    (b"abc", b"x*", b"-", b"-a-b-c-", 4),
    (b"hello world", b"%w*", b"X", b"X X", 2),
    (b"/docs/a.md", b"%.md$", b".html", b"/docs/a.html", 1),
    (b"/a//b///c", b"/+", b"/", b"/a/b/c", 3),
    (b"  trim  ", b"^%s*(.-)%s*$", b"%1", b"trim", 1),
    (b"aaa", b"^a", b"b", b"baa", 1),
    (b"100%", b"%%", b"%%%%", b"100%%", 1),
    (b"", b"x*", b"y", b"y", 1),
    (b"abc", b"", b"-", b"-a-b-c-", 4),
    (b"a.b.c", b"%.", b"/", b"a/b/c", 2),
    (b"key=val", b"(%w+)=(%w+)", b"%2=%1", b"val=key", 1),
];

#[test]
fn find_and_match_agree_with_lua() {
    for (pattern, subject, find, captures) in FIND {
        let p = LuaPattern::new(pattern)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(pattern)));
        let what = format!(
            "{:?} on {:?}",
            String::from_utf8_lossy(pattern),
            String::from_utf8_lossy(subject)
        );
        assert_eq!(p.find(subject), *find, "find {what}");
        assert_eq!(p.is_match(subject), find.is_some(), "is_match {what}");
        let got = p.captures(subject).unwrap_or_default();
        let want: Vec<Vec<u8>> = captures.iter().map(|c| c.to_vec()).collect();
        assert_eq!(got, want, "match {what}");
    }
}

#[test]
fn gsub_agrees_with_lua() {
    for (subject, pattern, repl, result, count) in GSUB {
        let p = LuaPattern::new(pattern).unwrap();
        let repl = std::str::from_utf8(repl).unwrap();
        let (out, n) = p.gsub(subject, repl).unwrap();
        let what = format!(
            "gsub({:?}, {:?}, {repl:?})",
            String::from_utf8_lossy(subject),
            String::from_utf8_lossy(pattern)
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(result),
            "{what}"
        );
        assert_eq!(n, *count, "{what}");
    }
}

#[test]
fn constructs_without_a_linear_equivalent_are_refused() {
    for (pattern, what) in [
        ("%b()", "%b"),
        ("x%f[%w]y", "%f"),
        ("(a)%1", "back-reference"),
        ("()a", "position"),
    ] {
        let err = LuaPattern::new(pattern).unwrap_err().to_string();
        assert!(err.contains(what), "{pattern}: {err}");
    }
    for bad in ["(a", "a)", "[a", "%", "[%"] {
        assert!(
            matches!(LuaPattern::new(bad), Err(PatternError::Malformed { .. })),
            "{bad}"
        );
    }
    let p = LuaPattern::new("(a)").unwrap();
    assert_eq!(p.gsub(b"a", "%2"), Err(PatternError::Replacement));
    assert_eq!(p.gsub(b"a", "%x"), Err(PatternError::Replacement));
}

/// A pattern that makes Lua's backtracking matcher take exponential time
/// on a failing subject finishes at once here.
#[test]
fn matching_stays_linear_on_hostile_input() {
    let p = LuaPattern::new("^(.-)(.-)(.-)(.-)(.-)(.-)(.-)(.-)(.-)(.-)!$").unwrap();
    let subject = vec![b'a'; 20_000];
    let started = std::time::Instant::now();
    assert!(!p.is_match(&subject));
    assert!(p.captures(&subject).is_none());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
