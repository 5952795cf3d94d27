//! A site's `template.lua` (`DATA:<host>:template.lua`, else the `__`
//! one): a chunk returning a table whose `head`, `body`, `footer`,
//! `error_section`, `error_404_footer` and `errors[code]` replace RELIW's
//! defaults ([`crate::look::Sections`]). It is run once per cache fill,
//! not per request; the sections it gives are kept as text.

use mlua::{Table, Value};

use super::{LuaError, LuaRuntime};
use crate::look::{ErrorText, Sections};

/// Runs `source` and merges what it returns over the default sections.
pub fn sections(
    rt: &mut LuaRuntime,
    name: &str,
    hash: &str,
    source: &[u8],
) -> Result<Sections, LuaError> {
    let merged = rt.run(name, hash, source, |_, chunk| {
        let value: Value = chunk.call(())?;
        let Value::Table(t) = value else {
            return Ok(Err(format!(
                "template.lua must return a table, not {}",
                value.type_name()
            )));
        };
        Ok(merge(&t))
    })?;
    merged.map_err(|detail| LuaError::Result {
        name: name.to_owned(),
        detail,
    })
}

fn merge(t: &Table) -> Result<Sections, String> {
    let mut s = Sections::default();
    let text = |key: &str| -> Result<Option<String>, String> {
        match t.get::<Value>(key).map_err(|e| e.to_string())? {
            Value::Nil => Ok(None),
            Value::String(v) => Ok(Some(v.to_string_lossy())),
            other => Err(format!("{key} must be a string, not {}", other.type_name())),
        }
    };
    for (key, slot) in [
        ("head", &mut s.head),
        ("body", &mut s.body),
        ("footer", &mut s.footer),
        ("error_section", &mut s.error_section),
        ("error_404_footer", &mut s.error_404_footer),
    ] {
        if let Some(v) = text(key)? {
            *slot = v;
        }
    }
    match t.get::<Value>("errors").map_err(|e| e.to_string())? {
        Value::Nil => {}
        Value::Table(errors) => {
            for pair in errors.pairs::<Value, Value>() {
                let (code, entry) = pair.map_err(|e| e.to_string())?;
                let code = match code {
                    Value::Integer(n) => u16::try_from(n).ok(),
                    Value::String(s) => s.to_str().ok().and_then(|s| s.parse().ok()),
                    _ => None,
                };
                let Some(code) = code.filter(|c| (100..=599).contains(c)) else {
                    return Err(String::from("errors keys must be status codes"));
                };
                let Value::Table(entry) = entry else {
                    return Err(format!("errors[{code}] must be a table"));
                };
                s.errors.insert(code, error_text(code, &entry)?);
            }
        }
        other => return Err(format!("errors must be a table, not {}", other.type_name())),
    }
    Ok(s)
}

fn error_text(code: u16, entry: &Table) -> Result<ErrorText, String> {
    let title = match entry.get::<Value>("title").map_err(|e| e.to_string())? {
        Value::Nil => None,
        Value::String(v) => Some(v.to_string_lossy()),
        _ => return Err(format!("errors[{code}].title must be a string")),
    };
    let msg = match entry.get::<Value>("msg").map_err(|e| e.to_string())? {
        Value::Nil => Vec::new(),
        Value::String(v) => vec![v.to_string_lossy()],
        Value::Table(list) => list
            .sequence_values::<mlua::LuaString>()
            .map(|m| m.map(|m| m.to_string_lossy()))
            .collect::<mlua::Result<Vec<_>>>()
            .map_err(|_| format!("errors[{code}].msg must be a list of strings"))?,
        _ => return Err(format!("errors[{code}].msg must be a string or a list")),
    };
    Ok(ErrorText { title, msg })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lua::Limits;

    fn run(source: &str) -> Result<Sections, LuaError> {
        let mut rt = LuaRuntime::new(Limits {
            memory: 16 << 20,
            time: Duration::from_millis(200),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        sections(&mut rt, "template.lua", source, source.as_bytes())
    }

    #[test]
    fn overrides_merge_over_the_defaults() {
        let s = run(r#"return {
            footer = "<footer>${title}</footer></body></html>",
            errors = { [404] = { title = "Lost", msg = { "a", "b" } }, ["500"] = { msg = "x" } },
        }"#)
        .unwrap_or_else(|e| panic!("{e}"));
        let d = Sections::default();
        assert_eq!(s.head, d.head, "what is not named stays");
        assert_eq!(s.footer, "<footer>${title}</footer></body></html>");
        assert_eq!(
            s.errors.get(&404),
            Some(&ErrorText {
                title: Some("Lost".into()),
                msg: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(s.errors.get(&500).map(|e| e.msg.len()), Some(1));
    }

    #[test]
    fn bad_templates_are_errors() {
        for bad in [
            "return 'x'",
            "return { head = 1 }",
            "return { errors = { [404] = 'x' } }",
            "return { errors = { oops = {} } }",
            "error('no')",
        ] {
            assert!(run(bad).is_err(), "{bad}");
        }
    }
}
