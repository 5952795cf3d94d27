//! The look of a site's pages: reliw's text template
//! (`DATA:<host>:template`, see [`crate::render::Template`]) or RELIW's
//! section model, which a site's `DATA:<host>:template.lua` overrides.
//!
//! RELIW's model: a page is `head .. body .. content .. footer`; an error
//! page is `head .. body .. error_section [.. error_404_footer] ..
//! footer`; `errors[code] = {title = ..., msg = text or list}` names the
//! error's title and message (one of the list, at random). `${name}` in
//! head, body, footer and the error sections is replaced by the value
//! (not escaped, as RELIW); an unknown name is left as written. Content
//! is never substituted. The default sections have RELIW's structure
//! and variables with reliw's own wording.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::render::Template;

/// An error's title and messages (`errors[code]` of a `template.lua`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorText {
    pub title: Option<String>,
    pub msg: Vec<String>,
}

/// RELIW's sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sections {
    pub head: String,
    pub body: String,
    pub footer: String,
    pub error_section: String,
    pub error_404_footer: String,
    pub errors: HashMap<u16, ErrorText>,
}

impl Default for Sections {
    fn default() -> Self {
        Self {
            head: String::from(concat!(
                "<!DOCTYPE html>\n<html>\n<head>\n",
                "<title>${title}</title>\n",
                "<meta charset=\"utf-8\">\n",
                "<link rel=\"stylesheet\" href=\"${css_file}\" type=\"text/css\">\n",
                "<link rel=\"icon\" href=\"${favicon_file}\">\n",
                "</head>\n",
            )),
            body: String::from(concat!(
                "<body>\n<header>\n",
                "<section class=\"${class}\" id=\"title\">${title}</section>\n",
                "</header>\n",
            )),
            footer: String::from("</body></html>"),
            error_section: String::from(concat!(
                "<section id=\"error\">\n<h3>${error_code}</h3>\n",
                "<p class=\"error\">${error_message}</p>\n${img}\n</section>\n",
                "<section id=\"home\"><a href=\"/\">Home</a></section>\n",
            )),
            error_404_footer: String::from(concat!(
                "<footer><p class=\"error\">This address was asked for ",
                "<span>${hit_count}</span> times.</p></footer>\n",
            )),
            errors: HashMap::new(),
        }
    }
}

/// Replaces `${name}` by `value(name)`; unknown names stay as written.
pub fn substitute<'a>(text: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find('}') {
            Some(end) if end > 0 => {
                let name = &after[..end];
                match value(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[at..at + 2 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Sections {
    /// A page: the sections around `content`.
    pub fn page<'a>(
        &self,
        content: &str,
        value: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> String {
        let mut out = substitute(&self.head, value);
        out.push_str(&substitute(&self.body, value));
        out.push_str(content);
        out.push_str(&substitute(&self.footer, value));
        out
    }

    /// An error page; `value` must answer `error_code`, `error_message`,
    /// `img` and (404) `hit_count` besides the page variables.
    pub fn error<'a>(&self, code: u16, value: impl Fn(&str) -> Option<&'a str> + Copy) -> String {
        let mut out = substitute(&self.head, value);
        out.push_str(&substitute(&self.body, value));
        out.push_str(&substitute(&self.error_section, value));
        if code == 404 {
            out.push_str(&substitute(&self.error_404_footer, value));
        }
        out.push_str(&substitute(&self.footer, value));
        out
    }

    /// The title and message a site gives `code`, if any (a message list
    /// gives one of its items at random).
    pub fn error_text(&self, code: u16) -> (Option<&str>, Option<&str>) {
        let Some(text) = self.errors.get(&code) else {
            return (None, None);
        };
        let msg = match text.msg.len() {
            0 => None,
            1 => text.msg.first(),
            n => {
                let pick = getrandom::u32().unwrap_or(0) as usize % n;
                text.msg.get(pick)
            }
        };
        (text.title.as_deref(), msg.map(String::as_str))
    }
}

/// A site's look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    /// reliw's text template (or the built-in one).
    Text(Template),
    /// RELIW's sections, as a `template.lua` left them.
    Sections(Sections),
}

impl Look {
    /// The look of a site without a template of its own.
    pub fn builtin() -> &'static Look {
        static BUILTIN: OnceLock<Look> = OnceLock::new();
        BUILTIN.get_or_init(|| Look::Text(Template::builtin().clone()))
    }

    /// A page around `content` (HTML, inserted as it is).
    pub fn page<'a>(
        &self,
        content: &'a str,
        value: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> String {
        match self {
            Look::Text(t) => t.render(|name| match name {
                "content" => Some(content),
                other => value(other),
            }),
            Look::Sections(s) => s.page(content, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_leaves_unknown_names() {
        let v = |n: &str| (n == "a").then_some("<A>");
        assert_eq!(substitute("x${a}y${b}z${", v), "x<A>y${b}z${");
        assert_eq!(substitute("${}${a", v), "${}${a");
    }

    #[test]
    fn sections_make_pages_and_error_pages() {
        let s = Sections {
            head: "<h ${title}>".into(),
            body: "<b>".into(),
            footer: "</f>".into(),
            error_section: "<e ${error_code} ${error_message}>".into(),
            error_404_footer: "<n ${hit_count}>".into(),
            errors: HashMap::from([(
                404,
                ErrorText {
                    title: Some("Gone".into()),
                    msg: vec!["m".into()],
                },
            )]),
        };
        let v = |n: &str| match n {
            "title" => Some("T"),
            "error_code" => Some("404"),
            "error_message" => Some("m"),
            "hit_count" => Some("3"),
            _ => None,
        };
        assert_eq!(s.page("${title}<p>", v), "<h T><b>${title}<p></f>");
        assert_eq!(s.error(404, v), "<h T><b><e 404 m><n 3></f>");
        assert_eq!(s.error(500, v), "<h T><b><e 404 m></f>");
        assert_eq!(s.error_text(404), (Some("Gone"), Some("m")));
        assert_eq!(s.error_text(500), (None, None));
    }
}
