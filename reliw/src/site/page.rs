//! Pages around content: rendered markdown and djot, Lua page output and
//! error pages, all through the site's look ([`crate::look`]): RELIW's
//! sections from `DATA:<host>:template.lua`, reliw's text template
//! `DATA:<host>:template` ([`crate::render`]), or the built-in one.
//!
//! Placeholders a template can use: `title`, `css_file`, `favicon_file`,
//! `published`, `class` (`page` or `error`), `{{{content}}}` (the rendered
//! HTML), and on error pages also `error_code`, `error_message`,
//! `hit_count` (404 only) and `error_image` (the entry's `error` image
//! for that status, if any). Error pages put a ready-made section into
//! `content`, so a template with only `{{{content}}}` shows them too.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::http::Status;
use crate::look::Look;
use crate::render::escape_html;

/// RELIW's defaults for the page assets.
pub const DEFAULT_CSS: &str = "/css/default.css";
pub const DEFAULT_FAVICON: &str = "/images/favicon.svg";

/// The page values of an entry.
pub struct Assets<'a> {
    pub css_file: &'a str,
    pub favicon_file: &'a str,
}

impl Default for Assets<'_> {
    fn default() -> Self {
        Self {
            css_file: DEFAULT_CSS,
            favicon_file: DEFAULT_FAVICON,
        }
    }
}

/// Today's date for `published` (`Wed, 25 Nov 2026`).
fn today() -> String {
    let date = httpdate::fmt_http_date(SystemTime::now());
    date.get(..16).unwrap_or(&date).to_owned()
}

/// Renders markdown or djot source inside the site's look.
pub fn render_markup(
    look: &Look,
    mime: &str,
    source: &[u8],
    title: &str,
    assets: &Assets<'_>,
) -> String {
    let source = String::from_utf8_lossy(source);
    let content = if mime == "text/djot" {
        crate::render::djot(&source)
    } else {
        crate::render::markdown(&source)
    };
    wrap(look, &content, title, "page", assets)
}

/// HTML `content` (a Lua page's, the login form) inside the site's look.
pub fn wrap(look: &Look, content: &str, title: &str, class: &str, assets: &Assets<'_>) -> String {
    let published = today();
    look.page(content, |name| match name {
        "title" => Some(title),
        "css_file" => Some(assets.css_file),
        "favicon_file" => Some(assets.favicon_file),
        "published" => Some(published.as_str()),
        "class" => Some(class),
        _ => None,
    })
}

/// An entry's `error` value as HTML: RELIW's raw HTML snippet, or an
/// image URL (then escaped into an `<img>`).
fn error_html(value: &str, code: &str) -> String {
    if value.trim_start().starts_with('<') {
        value.to_owned()
    } else {
        format!("<img src=\"{}\" alt=\"{code}\">", escape_html(value))
    }
}

/// A short explanation per status.
fn message(status: Status) -> &'static str {
    match status.code() {
        401 => "You need to log in to see this page.",
        403 => "This request is not allowed.",
        404 => "There is no page here.",
        405 => "This page does not take that method.",
        429 => "Too many requests; wait a little and try again.",
        500 => "Something went wrong on our side.",
        501 => "This kind of page is not served here.",
        502 => "The site behind this server did not answer properly.",
        503 => "The service is unavailable right now; try again soon.",
        _ => "The request could not be served.",
    }
}

/// The favicon of RELIW's error pages.
const ERROR_FAVICON: &str = "/images/error/favicon.svg";

/// An error page. `hits` is shown on 404s; `extra` is the entry's
/// `error` value for this status.
pub fn error_page(look: &Look, status: Status, hits: Option<i64>, extra: Option<&str>) -> String {
    let code = status.code().to_string();
    let hit_count = hits.map(|h| h.to_string()).unwrap_or_default();
    let image_url = extra.filter(|v| !v.trim_start().starts_with('<'));
    let extra = extra.map(|v| error_html(v, &code)).unwrap_or_default();
    let published = today();
    if let Look::Sections(sections) = look {
        let (title, msg) = sections.error_text(status.code());
        let title = title.map_or_else(|| status.reason().to_owned(), str::to_owned);
        let msg = msg.unwrap_or(message(status));
        return sections.error(status.code(), |name| match name {
            "title" => Some(title.as_str()),
            "css_file" => Some(DEFAULT_CSS),
            "favicon_file" => Some(ERROR_FAVICON),
            "published" => Some(published.as_str()),
            "class" => Some("error"),
            "error_code" => Some(code.as_str()),
            "error_message" => Some(msg),
            "hit_count" => Some(if hit_count.is_empty() {
                "0"
            } else {
                hit_count.as_str()
            }),
            "img" => Some(extra.as_str()),
            _ => None,
        });
    }
    let msg = message(status);
    let mut section = format!(
        "<section id=\"error\">\n<h1>{code} {}</h1>\n<p class=\"error\">{}</p>\n",
        escape_html(status.reason()),
        escape_html(msg)
    );
    if !extra.is_empty() {
        let _ = writeln!(section, "{extra}");
    }
    if hits.is_some() {
        let _ = writeln!(
            section,
            "<p class=\"hits\">This address was asked for {} times.</p>",
            escape_html(&hit_count)
        );
    }
    section.push_str("<p><a href=\"/\">Home</a></p>\n</section>\n");
    let title = format!("{code} {}", status.reason());
    let Look::Text(template) = look else {
        return section;
    };
    template.render(|name| match name {
        "title" => Some(title.as_str()),
        "css_file" => Some(DEFAULT_CSS),
        "favicon_file" => Some(DEFAULT_FAVICON),
        "published" => Some(published.as_str()),
        "class" => Some("error"),
        "content" => Some(section.as_str()),
        "error_code" => Some(code.as_str()),
        "error_message" => Some(msg),
        "hit_count" => Some(hit_count.as_str()),
        // The entry's value as a URL (templates written for image URLs),
        // and as HTML.
        "error_image" => image_url,
        "error_html" => Some(extra.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_show_code_hits_and_image() {
        let page = error_page(
            Look::builtin(),
            Status::NOT_FOUND,
            Some(42),
            Some("/img/404\".png"),
        );
        assert!(page.contains("404 Not Found"), "{page}");
        assert!(page.contains("42 times"));
        assert!(page.contains("src=\"/img/404&quot;.png\""));
        let page = error_page(Look::builtin(), Status::SERVICE_UNAVAILABLE, None, None);
        assert!(page.contains("503") && !page.contains("times"));
        // RELIW's error entries are HTML, inserted as they are.
        let page = error_page(
            Look::builtin(),
            Status::NOT_FOUND,
            None,
            Some("<b>gone</b>"),
        );
        assert!(page.contains("<b>gone</b>"), "{page}");
        // RELIW's sections, with a site's own title and message.
        let mut sections = crate::look::Sections::default();
        sections.errors.insert(
            404,
            crate::look::ErrorText {
                title: Some("Lost".into()),
                msg: vec!["Nobody here".into()],
            },
        );
        let page = error_page(&Look::Sections(sections), Status::NOT_FOUND, Some(7), None);
        assert!(
            page.contains("<title>Lost</title>")
                && page.contains("Nobody here")
                && page.contains(">7<"),
            "{page}"
        );
    }

    #[test]
    fn markup_renders_in_the_template() {
        let t = crate::render::Template::parse("<t>{{title}}</t>{{{content}}}|{{css_file}}")
            .unwrap_or_else(|e| panic!("{e}"));
        let page = render_markup(
            &Look::Text(t),
            "text/markdown",
            b"# Hi",
            "A & B",
            &Assets::default(),
        );
        assert_eq!(page, "<t>A &amp; B</t><h1>Hi</h1>\n|/css/default.css");
    }
}
