//! A RELIW Lua page: the chunk returns a function, called as
//! `fn(method, query, args, headers, body)` and returning
//! `content, status, headers`.
//!
//! - `query`: the path as sent (not decoded); `args`: the raw query
//!   string (`""` without one); `headers`: lower-case names, the last
//!   value of a repeated field, with `x-client-ip` set to the client and
//!   `x-real-ip` too (RELIW kept a client's own `x-real-ip`; reliw's is
//!   the address it trusts); `body`: a string, or
//!   `nil` without a body.
//! - `status` is required (nil: the caller answers 500). With a
//!   `headers` table the content is sent as it is, with those fields
//!   (`text/html` unless they name a type); without, it goes into the
//!   site's template. A value that is a list gives one field per item
//!   (several `Set-Cookie`s).

use mlua::{Lua, Table, Value};

use super::{LuaError, LuaRuntime};

/// What a page is called with.
pub struct PageRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub args: &'a str,
    /// Lower-case names; later entries replace earlier ones.
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub client: String,
    pub body: Option<&'a [u8]>,
}

/// What a page answered.
#[derive(Debug, PartialEq, Eq)]
pub struct PageResponse {
    pub content: Vec<u8>,
    /// `None`: the page gave no status.
    pub status: Option<u16>,
    /// `Some`: send the content as it is, with these fields.
    pub headers: Option<Vec<(String, String)>>,
}

/// Fields a page may not set: reliw frames the response itself.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "server",
    "date",
];

/// Runs the page in `source` (named `name`, hashed `hash`) for `req`.
pub fn run(
    rt: &mut LuaRuntime,
    name: &str,
    hash: &str,
    source: &[u8],
    req: &PageRequest<'_>,
) -> Result<PageResponse, LuaError> {
    let bad = |detail: String| LuaError::Result {
        name: name.to_owned(),
        detail,
    };
    let raw = rt.run(name, hash, source, |lua, chunk| {
        let page: Value = chunk.call(())?;
        let Value::Function(page) = page else {
            return Ok(Err(format!(
                "the chunk must return a function, not {}",
                page.type_name()
            )));
        };
        let headers = headers_table(lua, req)?;
        let body = match req.body {
            Some(b) => Value::String(lua.create_string(b)?),
            None => Value::Nil,
        };
        let (content, status, headers): (Value, Value, Value) =
            page.call((req.method, req.path, req.args, headers, body))?;
        Ok(convert(content, status, headers))
    })?;
    raw.map_err(bad)
}

fn headers_table(lua: &Lua, req: &PageRequest<'_>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for (name, value) in &req.headers {
        t.set(*name, lua.create_string(value)?)?;
    }
    // Both name the client as reliw determined it (the peer, or what a
    // trusted proxy said): a client cannot name itself.
    t.set("x-client-ip", req.client.as_str())?;
    t.set("x-real-ip", req.client.as_str())?;
    Ok(t)
}

fn convert(content: Value, status: Value, headers: Value) -> Result<PageResponse, String> {
    let content = match content {
        Value::Nil => Vec::new(),
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Integer(n) => n.to_string().into_bytes(),
        Value::Number(n) => n.to_string().into_bytes(),
        other => {
            return Err(format!(
                "content must be a string, not {}",
                other.type_name()
            ));
        }
    };
    let status = match status {
        Value::Nil | Value::Boolean(false) => None,
        Value::Integer(n) => Some(n as f64),
        Value::Number(n) => Some(n),
        Value::String(s) => s.to_str().ok().and_then(|s| s.trim().parse::<f64>().ok()),
        _ => None,
    };
    let status = match status {
        None => None,
        // No 1xx: an interim answer would pair with the next response.
        Some(n) if n.fract() == 0.0 && (200.0..=599.0).contains(&n) => Some(n as u16),
        Some(n) => return Err(format!("status {n} is not an HTTP status code")),
    };
    let headers = match headers {
        Value::Nil => None,
        Value::Table(t) => Some(fields(&t)?),
        other => {
            return Err(format!(
                "headers must be a table, not {}",
                other.type_name()
            ));
        }
    };
    Ok(PageResponse {
        content,
        status,
        headers,
    })
}

fn fields(t: &Table) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (name, value) = pair.map_err(|e| e.to_string())?;
        let Value::String(name) = name else {
            return Err(String::from("header names must be strings"));
        };
        let name = name.to_string_lossy().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(format!("header name {name:?} is not a token"));
        }
        if FRAMING.contains(&name.as_str()) {
            continue;
        }
        let values = match value {
            Value::Table(list) => list
                .sequence_values::<Value>()
                .collect::<mlua::Result<Vec<_>>>()
                .map_err(|e| e.to_string())?,
            one => vec![one],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.to_string_lossy(),
                Value::Integer(n) => n.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "header {name}: a {} is not a field value",
                        other.type_name()
                    ));
                }
            };
            if text.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(format!("header {name}: value holds a control byte"));
            }
            out.push((name.clone(), text));
        }
    }
    // pairs() has no order; a stable one keeps responses comparable.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lua::Limits;

    fn call(source: &str, req: &PageRequest<'_>) -> Result<PageResponse, LuaError> {
        let mut rt = LuaRuntime::new(Limits {
            memory: 16 << 20,
            time: Duration::from_millis(200),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        run(&mut rt, "page.lua", source, source.as_bytes(), req)
    }

    fn req() -> PageRequest<'static> {
        PageRequest {
            method: "POST",
            path: "/app/x%20y",
            args: "a=1&b=2",
            headers: vec![("user-agent", b"curl"), ("x-real-ip", b"203.0.113.9")],
            client: String::from("198.18.0.7"),
            body: Some(b"hello"),
        }
    }

    #[test]
    fn pages_get_reliws_arguments() {
        let page = r#"return function(method, query, args, headers, body)
            return table.concat({method, query, args, headers["user-agent"],
                headers["x-client-ip"], headers["x-real-ip"], body}, "|"), 200
        end"#;
        let r = call(page, &req()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&r.content),
            "POST|/app/x%20y|a=1&b=2|curl|198.18.0.7|198.18.0.7|hello"
        );
        assert_eq!((r.status, r.headers), (Some(200), None));
        let mut no_body = req();
        no_body.body = None;
        no_body.headers.clear();
        let page = "return function(m, q, a, h, b) return tostring(b) .. h['x-real-ip'], 201 end";
        let r = call(page, &no_body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (String::from_utf8_lossy(&r.content).as_ref(), r.status),
            ("nil198.18.0.7", Some(201))
        );
    }

    #[test]
    fn headers_and_statuses() {
        let page = r#"return function()
            return '{"ok":true}', 201, {["Content-Type"] = "application/json",
                ["set-cookie"] = {"a=1", "b=2"}, ["Content-Length"] = "999", ["X-N"] = 5}
        end"#;
        let r = call(page, &req()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, Some(201));
        assert_eq!(
            r.headers,
            Some(vec![
                ("content-type".into(), "application/json".into()),
                ("set-cookie".into(), "a=1".into()),
                ("set-cookie".into(), "b=2".into()),
                ("x-n".into(), "5".into()),
            ])
        );
        let r = call("return function() return 'x' end", &req());
        assert_eq!(r.ok().and_then(|r| r.status), None, "no status");
        for bad in [
            "return 1",
            "return function() return 'x', 200, {['bad name'] = 'v'} end",
            "return function() return 'x', 200, {a = 'v\\r\\nInjected: 1'} end",
            "return function() return 'x', 99 end",
            "return function() return 'x', 101 end",
            "return function() return 'x', 200, {a = 'v\\1'} end",
            "return function() return {}, 200 end",
            "return function() error('boom') end",
            "return function( end",
        ] {
            assert!(call(bad, &req()).is_err(), "{bad}");
        }
    }
}
