//! What a request gets: the site pipeline. For now the static-file part of
//! RELIW's order (validate host and path → method → content → conditional
//! and range); the Redis-backed steps (WAF, proxy, routes, auth, rate limit)
//! slot in between validation and content.

pub mod meta;
pub mod routes;

use bytes::Bytes;

use std::rc::Rc;

use crate::files::cache::{Content, FileCache};
use crate::files::respond::{BodyPlan, plan};
use crate::files::validate::{normalise_host, relative_path};
use crate::files::{FileError, Files};
use crate::http::{Method, RequestHead, ResponseHead, Status};

/// A response body.
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// Part of an open file, sent with sendfile.
    File {
        file: Rc<std::fs::File>,
        start: u64,
        len: u64,
    },
}

/// A response: head and body.
pub struct Response {
    pub head: ResponseHead,
    pub body: Body,
}

impl Response {
    /// A short plain-text error page (no body for HEAD is handled by the caller).
    pub fn error(status: Status) -> Self {
        let text = format!("{} {}\n", status.code(), status.reason());
        let mut head =
            ResponseHead::new(status).header("Content-Type", "text/plain; charset=utf-8");
        head.content_length = text.len() as u64;
        Self {
            head,
            body: Body::Bytes(Bytes::from(text)),
        }
    }

    /// Drops the body but keeps the headers (HEAD).
    pub fn without_body(mut self) -> Self {
        self.body = Body::Empty;
        self
    }
}

/// Serves static files for GET and HEAD.
pub fn serve_static(req: &RequestHead, files: &mut Files, cache: &mut FileCache) -> Response {
    let response = static_response(req, files, cache);
    if req.method == Method::Head {
        response.without_body()
    } else {
        response
    }
}

fn static_response(req: &RequestHead, files: &mut Files, cache: &mut FileCache) -> Response {
    // HTTP/1.0 may omit Host: such requests get the fallback site.
    let host = match req.host.as_deref() {
        None => crate::files::FALLBACK_HOST.to_owned(),
        Some(raw) => match normalise_host(raw) {
            Some(h) => h,
            None => return Response::error(Status::BAD_REQUEST),
        },
    };
    let rel = match relative_path(req.path()) {
        Ok(rel) => rel,
        Err(e) => {
            tracing::debug!(host, path = req.path(), reason = e.0, "bad path");
            return Response::error(Status::BAD_REQUEST);
        }
    };
    if !matches!(req.method, Method::Get | Method::Head) {
        let mut r = Response::error(Status::METHOD_NOT_ALLOWED);
        r.head.headers.push(("Allow", String::from("GET, HEAD")));
        return r;
    }
    match cache.get(files, &host, &rel) {
        Ok(entry) => {
            let p = plan(req, &entry.meta, &entry.etag, &entry.content_type);
            let body = match (p.body, &entry.content) {
                (BodyPlan::Empty, _) => Body::Empty,
                (BodyPlan::Range { start, len }, Content::Bytes(data)) => {
                    Body::Bytes(data.slice(start as usize..(start + len) as usize))
                }
                (BodyPlan::Range { start, len }, Content::File(file)) => Body::File {
                    file: Rc::clone(file),
                    start,
                    len,
                },
            };
            Response { head: p.head, body }
        }
        Err(FileError::NotFound | FileError::Escape) => Response::error(Status::NOT_FOUND),
        Err(FileError::Forbidden) => Response::error(Status::FORBIDDEN),
        Err(FileError::Io(e)) => {
            tracing::error!(host, path = req.path(), error = %e, "reading a file failed");
            Response::error(Status::INTERNAL_SERVER_ERROR)
        }
    }
}
