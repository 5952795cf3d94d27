//! The encode step, the last one before a locally made response goes out:
//! picks a content coding by `Accept-Encoding` (the client's q-values
//! first, then `compression.encodings` order) and replaces the body by its
//! encoded form, from the worker's cache of forms when it has it.
//!
//! Contract:
//! - Only a 200 of a listed media type whose body is between `min_size`
//!   and `max_size` is encoded; never a 206, a response already encoded (a
//!   precompressed sibling, chosen in the content step), or one with
//!   `Cache-Control: no-transform`.
//! - Every response that could have been encoded says
//!   `Vary: Accept-Encoding`, whatever was chosen.
//! - An encoded response's ETag is the identity ETag with `-<coding>`
//!   inside the quotes, and it loses `Accept-Ranges` (ranges are served
//!   from the identity form only). A 304 answering such a tag names it
//!   back.
//! - A client that refuses identity and every coding we could use gets
//!   406; a body below `min_size` is then encoded anyway.
//! - A failure to encode is logged and the body goes as it is.

use std::os::unix::fs::FileExt as _;

use bytes::Bytes;

use super::super::{Body, Response, Site};
use crate::compress::{Form, eligible_type, encode};
use crate::config::{CompressionSection, Config};
use crate::http::coding::{
    Accepted, Choice, Coding, named_coding, no_transform, variant_etag, varies_on_encoding,
};
use crate::http::{HeaderValue, RequestHead, ResponseHead, Status};

/// A field's value, among reliw's fields and a Lua page's own.
fn field<'h>(head: &'h ResponseHead, name: &str) -> Option<&'h str> {
    head.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .or_else(|| {
            head.named_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
}

/// Adds `Accept-Encoding` to the response's `Vary` (one field, merged).
pub(in crate::site) fn vary_on_encoding(head: &mut ResponseHead) {
    for (name, value) in &mut head.headers {
        if name.eq_ignore_ascii_case("vary") {
            if !varies_on_encoding(value.as_str()) {
                *value = HeaderValue::Owned(format!("{}, Accept-Encoding", value.as_str()));
            }
            return;
        }
    }
    for (name, value) in &mut head.named_headers {
        if name.eq_ignore_ascii_case("vary") {
            if !varies_on_encoding(value) {
                value.push_str(", Accept-Encoding");
            }
            return;
        }
    }
    head.headers
        .push(("Vary", HeaderValue::Static("Accept-Encoding")));
}

/// Marks `head` as carrying `coding`: Content-Encoding, the variant ETag,
/// no Accept-Ranges, Vary.
pub(in crate::site) fn mark_encoded(head: &mut ResponseHead, coding: Coding) {
    head.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("accept-ranges"));
    head.named_headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("accept-ranges"));
    for (name, value) in &mut head.headers {
        if name.eq_ignore_ascii_case("etag") {
            *value = HeaderValue::Owned(variant_etag(value.as_str(), coding));
        }
    }
    for (name, value) in &mut head.named_headers {
        if name.eq_ignore_ascii_case("etag") {
            *value = variant_etag(value, coding);
        }
    }
    head.headers
        .push(("Content-Encoding", HeaderValue::Static(coding.token())));
    vary_on_encoding(head);
}

impl Site {
    /// The encode step (see the module doc).
    pub fn encode(&self, req: &RequestHead, mut resp: Response, config: &Config) -> Response {
        let cfg = &config.compression;
        if !cfg.enabled {
            return resp;
        }
        let head = &resp.head;
        if head.status == Status::NOT_MODIFIED {
            name_variant(req, &mut resp.head);
            return resp;
        }
        if head.status != Status::OK
            || field(head, "Content-Encoding").is_some()
            || field(head, "Content-Range").is_some()
            || field(head, "Cache-Control").is_some_and(no_transform)
            || !field(head, "Content-Type").is_some_and(|t| eligible_type(t, &cfg.types))
        {
            return resp;
        }
        let len = match &resp.body {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
            Body::Empty => return resp,
        };
        if len == 0 {
            return resp;
        }
        let acc = Accepted::of(req);
        let too_big = len > cfg.max_size;
        if !too_big || cfg.precompressed {
            vary_on_encoding(&mut resp.head);
        }
        let offered: &[Coding] = if too_big || (len < cfg.min_size && acc.identity_ok()) {
            &[]
        } else {
            &cfg.offered
        };
        match acc.choose(offered) {
            Choice::Identity => resp,
            Choice::NotAcceptable => {
                let mut r = Response::error(Status::NOT_ACCEPTABLE);
                vary_on_encoding(&mut r.head);
                r
            }
            Choice::Encoded(coding) => self.encoded(resp, coding, cfg, !acc.identity_ok()),
        }
    }

    /// `resp` with its body encoded, or as it was when encoding fails or
    /// does not pay (`must`: the client refused identity, so the encoded
    /// form goes even when it is no smaller).
    fn encoded(
        &self,
        mut resp: Response,
        coding: Coding,
        cfg: &CompressionSection,
        must: bool,
    ) -> Response {
        let key = resp.form_key.clone();
        let cached = key
            .as_deref()
            .and_then(|k| self.forms.borrow().get(k, coding))
            .filter(|form| !(must && matches!(form, Form::NotSmaller)));
        let was_cached = cached.is_some();
        let form = match cached {
            Some(form) => {
                if matches!(form, Form::Encoded(_)) {
                    self.node.compressed(coding.token(), "cached");
                }
                form
            }
            None => {
                let identity = match identity_bytes(&resp.body) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "reading a body to encode failed");
                        return resp;
                    }
                };
                let (form, keep) = match encode(coding, cfg, &identity) {
                    Ok(out) if out.len() < identity.len() => {
                        (Form::Encoded(Bytes::from(out)), true)
                    }
                    // Larger than identity: only for this client, never kept.
                    Ok(out) if must => (Form::Encoded(Bytes::from(out)), false),
                    Ok(_) => (Form::NotSmaller, true),
                    Err(e) => {
                        tracing::error!(error = %e, coding = coding.token(), "encoding failed");
                        return resp;
                    }
                };
                if let Some(k) = key
                    && keep
                {
                    self.forms.borrow_mut().insert(k, coding, form.clone());
                }
                form
            }
        };
        let Form::Encoded(bytes) = form else {
            return resp;
        };
        if !was_cached {
            self.node.compressed(coding.token(), "encoded");
        }
        mark_encoded(&mut resp.head, coding);
        resp.head.content_length = bytes.len() as u64;
        resp.body = Body::Bytes(bytes);
        resp
    }
}

/// The identity body as bytes (a file part is read with one pread).
fn identity_bytes(body: &Body) -> std::io::Result<Bytes> {
    match body {
        Body::Bytes(b) => Ok(b.clone()),
        Body::File { file, start, len } => {
            let mut data = vec![0; *len as usize];
            file.read_exact_at(&mut data, *start)?;
            Ok(Bytes::from(data))
        }
        Body::Empty => Ok(Bytes::new()),
    }
}

/// A 304 for a tag the client had in an encoded form it may still get:
/// name that form back (and vary, as its 200 did).
fn name_variant(req: &RequestHead, head: &mut ResponseHead) {
    let Some(etag) = field(head, "ETag").map(str::to_owned) else {
        return;
    };
    let Some(inm) = req.header_str("if-none-match") else {
        return;
    };
    let accepted = Accepted::of(req);
    let found = inm
        .split(',')
        .map(str::trim)
        .find_map(|tag| match named_coding(tag, &etag) {
            Some(Some(c)) if accepted.weight(c) > 0 => Some(c),
            _ => None,
        });
    if let Some(coding) = found {
        for (name, value) in &mut head.headers {
            if name.eq_ignore_ascii_case("etag") {
                *value = HeaderValue::Owned(variant_etag(&etag, coding));
            }
        }
        vary_on_encoding(head);
    }
}
