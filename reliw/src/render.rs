//! Page rendering: markdown and djot to HTML, and a small logic-less
//! template format for the page around it.
//!
//! RELIW's `template.lua` was Lua code; reliw does not execute site code.
//! A user template (`DATA:<host>:template`) is text with two kinds of
//! placeholders: `{{name}}` is replaced by the value HTML-escaped,
//! `{{{name}}}` by the value as it is (for the rendered content). Unknown
//! names become empty. There are no loops, conditions or includes, so a
//! template can neither run code nor take unbounded time: rendering is one
//! pass over the parsed parts.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// Markdown (CommonMark with tables, footnotes, strikethrough) to HTML.
pub fn markdown(source: &str) -> String {
    use pulldown_cmark::{Options, Parser, html};
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_FOOTNOTES | Options::ENABLE_STRIKETHROUGH;
    let mut out = String::with_capacity(source.len() * 3 / 2);
    html::push_html(&mut out, Parser::new_ext(source, options));
    out
}

/// Djot to HTML.
pub fn djot(source: &str) -> String {
    jotdown::html::render_to_string(jotdown::Parser::new(source))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Escaped(String),
    Raw(String),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template: '{{{{' at byte {0} is never closed")]
    Unclosed(usize),
    #[error("template: bad placeholder name at byte {0} (letters, digits, '_' only)")]
    BadName(usize),
}

/// The page around rendered content when the site has no template of its own.
const DEFAULT_TEMPLATE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<link rel="stylesheet" href="{{css_file}}">
<link rel="icon" href="{{favicon_file}}">
</head>
<body>
<main>
{{{content}}}
</main>
<footer>{{published}}</footer>
</body>
</html>
"#;

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let raw = rest[open..].starts_with("{{{");
            let (start, close) = if raw {
                (open + 3, "}}}")
            } else {
                (open + 2, "}}")
            };
            let Some(len) = rest[start..].find(close) else {
                return Err(TemplateError::Unclosed(offset + open));
            };
            let name = rest[start..start + len].trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TemplateError::BadName(offset + open));
            }
            parts.push(if raw {
                Part::Raw(name.to_owned())
            } else {
                Part::Escaped(name.to_owned())
            });
            let consumed = start + len + close.len();
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The built-in page template.
    pub fn builtin() -> &'static Template {
        static BUILTIN: OnceLock<Template> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            Template::parse(DEFAULT_TEMPLATE).unwrap_or(Template { parts: Vec::new() })
        })
    }

    /// Fills the placeholders from `value(name)`.
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Escaped(name) => {
                    let _ = write!(out, "{}", escape_html(value(name).unwrap_or("")));
                }
                Part::Raw(name) => out.push_str(value(name).unwrap_or("")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_djot_render() {
        assert_eq!(
            markdown("# Hi\n\n*there*"),
            "<h1>Hi</h1>\n<p><em>there</em></p>\n"
        );
        assert!(markdown("| a |\n|---|\n| b |").contains("<table>"));
        let d = djot("# Hi\n\n_there_");
        assert!(
            d.contains("<h1") && d.contains("Hi</h1>") && d.contains("<em>there</em>"),
            "{d}"
        );
    }

    #[test]
    fn templates_escape_unless_triple_braced() {
        let t = Template::parse("<title>{{title}}</title>{{{content}}}{{ missing }}")
            .unwrap_or_else(|e| panic!("{e}"));
        let page = t.render(|name| match name {
            "title" => Some("<script>x</script> & co"),
            "content" => Some("<p>ok</p>"),
            _ => None,
        });
        assert_eq!(
            page,
            "<title>&lt;script&gt;x&lt;/script&gt; &amp; co</title><p>ok</p>"
        );
    }

    #[test]
    fn broken_templates_are_refused() {
        assert_eq!(
            Template::parse("a {{title"),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(Template::parse("{{a b}}"), Err(TemplateError::BadName(0)));
        assert_eq!(Template::parse("{{}}"), Err(TemplateError::BadName(0)));
    }

    #[test]
    fn the_builtin_template_has_every_slot() {
        let page = Template::builtin().render(|name| match name {
            "title" => Some("T"),
            "content" => Some("<p>C</p>"),
            "css_file" => Some("/s.css"),
            _ => None,
        });
        assert!(
            page.contains("<title>T</title>")
                && page.contains("<p>C</p>")
                && page.contains("/s.css")
        );
    }
}
