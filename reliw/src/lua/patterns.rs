//! `string.find`, `match`, `gmatch` and `gsub` in linear time.
//!
//! Lua's own matcher backtracks inside one C call, where the budget's
//! hook never runs: `body:match("^%s*(.-)%s*$")` on a large body takes
//! quadratic time, a pattern of many `a?` exponential. These replacements
//! run the pattern through [`crate::lua_pattern`] (the same meaning,
//! compiled to a linear-time regex). Patterns it cannot translate (`%b`,
//! `%f`, back-references, position captures) and `gmatch` patterns that
//! start with `^` use Lua's matcher, on subjects of at most
//! [`NATIVE_LIMIT`] bytes. Plain `find` stays Lua's.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use mlua::{Function, Integer, Lua, LuaString, MultiValue, Table, Value};

use crate::lua_pattern::LuaPattern;

/// The longest subject Lua's backtracking matcher is given.
pub(super) const NATIVE_LIMIT: usize = 16 * 1024;

/// Compiled patterns kept per VM.
const MAX_PATTERNS: usize = 256;

type Cache = Rc<RefCell<HashMap<Vec<u8>, Option<Rc<LuaPattern>>>>>;

fn compiled(cache: &Cache, pattern: &[u8]) -> Option<Rc<LuaPattern>> {
    if let Some(found) = cache.borrow().get(pattern) {
        return found.clone();
    }
    let made = LuaPattern::new(pattern).ok().map(Rc::new);
    let mut cache = cache.borrow_mut();
    if cache.len() >= MAX_PATTERNS {
        cache.clear();
    }
    cache.insert(pattern.to_vec(), made.clone());
    made
}

/// Lua's `posrelat` for an `init`: 0-based; `None` past the end + 1.
fn start(init: Option<Integer>, len: usize) -> Option<usize> {
    let len_i = len as i128;
    let init = i128::from(init.unwrap_or(1));
    let pos = if init > 0 {
        init
    } else if init == 0 || init < -len_i {
        1
    } else {
        len_i + init + 1
    };
    (pos <= len_i + 1).then(|| (pos - 1) as usize)
}

fn native_guard(subject: &[u8], what: &str) -> mlua::Result<()> {
    if subject.len() > NATIVE_LIMIT {
        return Err(mlua::Error::runtime(format!(
            "string.{what}: this pattern has no linear-time form (%b, %f, %1, () or a gmatch '^') \
             and the subject is over {NATIVE_LIMIT} bytes"
        )));
    }
    Ok(())
}

/// The captures of a match as Lua values (the whole match without any).
fn captures(
    lua: &Lua,
    pattern: &LuaPattern,
    caps: &regex::bytes::Captures<'_>,
) -> mlua::Result<Vec<Value>> {
    let n = pattern.capture_count();
    let groups: Vec<usize> = if n == 0 { vec![0] } else { (1..=n).collect() };
    groups
        .into_iter()
        .map(|i| {
            let bytes = caps.get(i).map_or(&b""[..], |m| m.as_bytes());
            lua.create_string(bytes).map(Value::String)
        })
        .collect()
}

/// Replaces the real `string` table's matchers.
pub(super) fn install(lua: &Lua, string: &Table) -> mlua::Result<()> {
    let cache: Cache = Rc::new(RefCell::new(HashMap::new()));

    let native: Function = string.get("find")?;
    let c = Rc::clone(&cache);
    let find = lua.create_function(
        move |lua, (s, p, init, plain): (LuaString, LuaString, Option<Integer>, Value)| {
            let plain_find = !matches!(plain, Value::Nil | Value::Boolean(false));
            let subject = s.as_bytes();
            let Some(pattern) = (!plain_find).then(|| compiled(&c, &p.as_bytes())).flatten() else {
                if !plain_find {
                    native_guard(&subject, "find")?;
                }
                return native.call::<MultiValue>((s.clone(), p.clone(), init, plain));
            };
            let Some(at) = start(init, subject.len()) else {
                return Ok(MultiValue::from_iter([Value::Nil]));
            };
            let Some(caps) = pattern.regex().captures(&subject[at..]) else {
                return Ok(MultiValue::from_iter([Value::Nil]));
            };
            let Some(whole) = caps.get(0) else {
                return Ok(MultiValue::from_iter([Value::Nil]));
            };
            let mut out = vec![
                Value::Integer((at + whole.start() + 1) as Integer),
                Value::Integer((at + whole.end()) as Integer),
            ];
            if pattern.capture_count() > 0 {
                out.extend(captures(lua, &pattern, &caps)?);
            }
            Ok(MultiValue::from_iter(out))
        },
    )?;

    let native: Function = string.get("match")?;
    let c = Rc::clone(&cache);
    let matcher = lua.create_function(
        move |lua, (s, p, init): (LuaString, LuaString, Option<Integer>)| {
            let subject = s.as_bytes();
            let Some(pattern) = compiled(&c, &p.as_bytes()) else {
                native_guard(&subject, "match")?;
                return native.call::<MultiValue>((s.clone(), p.clone(), init));
            };
            let Some(at) = start(init, subject.len()) else {
                return Ok(MultiValue::from_iter([Value::Nil]));
            };
            match pattern.regex().captures(&subject[at..]) {
                Some(caps) => Ok(MultiValue::from_iter(captures(lua, &pattern, &caps)?)),
                None => Ok(MultiValue::from_iter([Value::Nil])),
            }
        },
    )?;

    let native: Function = string.get("gmatch")?;
    let c = Rc::clone(&cache);
    let gmatch = lua.create_function(
        move |lua, (s, p, init): (LuaString, LuaString, Option<Integer>)| {
            let pat_bytes = p.as_bytes();
            let pattern = (pat_bytes.first() != Some(&b'^'))
                .then(|| compiled(&c, &pat_bytes))
                .flatten();
            let Some(pattern) = pattern else {
                native_guard(&s.as_bytes(), "gmatch")?;
                return native.call::<Function>((s.clone(), p.clone(), init));
            };
            let len = s.as_bytes().len();
            let pos = Rc::new(Cell::new(start(init, len).unwrap_or(len)));
            let last: Rc<Cell<Option<usize>>> = Rc::new(Cell::new(None));
            lua.create_function(move |lua, ()| {
                let subject = s.as_bytes();
                loop {
                    let from = pos.get();
                    if from > subject.len() {
                        return Ok(MultiValue::from_iter([Value::Nil]));
                    }
                    let Some(caps) = pattern.regex().captures_at(&subject, from) else {
                        pos.set(subject.len() + 1);
                        return Ok(MultiValue::from_iter([Value::Nil]));
                    };
                    let Some(whole) = caps.get(0) else {
                        return Ok(MultiValue::from_iter([Value::Nil]));
                    };
                    if last.get() == Some(whole.end()) {
                        pos.set(whole.start() + 1);
                        continue;
                    }
                    pos.set(whole.end());
                    last.set(Some(whole.end()));
                    return Ok(MultiValue::from_iter(captures(lua, &pattern, &caps)?));
                }
            })
        },
    )?;

    let native: Function = string.get("gsub")?;
    let c = Rc::clone(&cache);
    let gsub = lua.create_function(
        move |lua, (s, p, repl, n): (LuaString, LuaString, Value, Option<Integer>)| {
            let subject = s.as_bytes();
            let Some(pattern) = compiled(&c, &p.as_bytes()) else {
                native_guard(&subject, "gsub")?;
                return native.call::<MultiValue>((s.clone(), p.clone(), repl, n));
            };
            let anchored = p.as_bytes().first() == Some(&b'^');
            let max = n.unwrap_or(Integer::MAX);
            let (out, count) = substitute(lua, &pattern, &subject, &repl, max, anchored)?;
            Ok(MultiValue::from_iter([
                Value::String(lua.create_string(out)?),
                Value::Integer(count),
            ]))
        },
    )?;

    string.set("find", find)?;
    string.set("match", matcher)?;
    string.set("gmatch", gmatch)?;
    string.set("gsub", gsub)?;
    Ok(())
}

/// Lua's `gsub` loop over leftmost-first matches.
fn substitute(
    lua: &Lua,
    pattern: &LuaPattern,
    subject: &[u8],
    repl: &Value,
    max: Integer,
    anchored: bool,
) -> mlua::Result<(Vec<u8>, Integer)> {
    let mut out = Vec::with_capacity(subject.len());
    let (mut src, mut count) = (0usize, 0 as Integer);
    let mut last: Option<usize> = None;
    while count < max && src <= subject.len() {
        let Some(caps) = pattern.regex().captures_at(subject, src) else {
            break;
        };
        let Some(whole) = caps.get(0) else { break };
        if last == Some(whole.end()) {
            // An empty match where the last one ended: Lua copies a byte.
            let upto = (whole.start() + 1).min(subject.len());
            out.extend_from_slice(&subject[src..upto]);
            src = upto;
            if anchored || whole.start() >= subject.len() {
                break;
            }
            continue;
        }
        out.extend_from_slice(&subject[src..whole.start()]);
        count += 1;
        add_value(lua, pattern, &caps, repl, &mut out)?;
        src = whole.end();
        last = Some(whole.end());
        if anchored {
            break;
        }
    }
    if src < subject.len() {
        out.extend_from_slice(&subject[src..]);
    }
    Ok((out, count))
}

fn add_value(
    lua: &Lua,
    pattern: &LuaPattern,
    caps: &regex::bytes::Captures<'_>,
    repl: &Value,
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let whole = caps.get(0).map_or(&b""[..], |m| m.as_bytes());
    let value = match repl {
        Value::String(template) => {
            return expand(&template.as_bytes(), pattern, caps, whole, out);
        }
        Value::Integer(_) | Value::Number(_) => {
            let text = lua.coerce_string(repl.clone())?;
            let template = text.map(|t| t.as_bytes().to_vec()).unwrap_or_default();
            return expand(&template, pattern, caps, whole, out);
        }
        Value::Table(t) => {
            let key = captures(lua, pattern, caps)?
                .into_iter()
                .next()
                .unwrap_or(Value::Nil);
            t.get::<Value>(key)?
        }
        Value::Function(f) => {
            let args = captures(lua, pattern, caps)?;
            f.call::<Value>(MultiValue::from_iter(args))?
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #3 to 'gsub' (string/function/table expected, got {})",
                other.type_name()
            )));
        }
    };
    match value {
        Value::Nil | Value::Boolean(false) => out.extend_from_slice(whole),
        Value::String(v) => out.extend_from_slice(&v.as_bytes()),
        Value::Integer(_) | Value::Number(_) => {
            if let Some(v) = lua.coerce_string(value)? {
                out.extend_from_slice(&v.as_bytes());
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "invalid replacement value (a {})",
                other.type_name()
            )));
        }
    }
    Ok(())
}

/// A replacement string: `%0`-`%9` and `%%`.
fn expand(
    template: &[u8],
    pattern: &LuaPattern,
    caps: &regex::bytes::Captures<'_>,
    whole: &[u8],
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let n = pattern.capture_count();
    let mut i = 0;
    while i < template.len() {
        let b = template[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        match template.get(i + 1) {
            Some(b'%') => out.push(b'%'),
            Some(d @ b'0'..=b'9') => {
                let k = usize::from(d - b'0');
                if k == 0 || (k == 1 && n == 0) {
                    out.extend_from_slice(whole);
                } else if k <= n {
                    out.extend_from_slice(caps.get(k).map_or(&b""[..], |m| m.as_bytes()));
                } else {
                    return Err(mlua::Error::runtime(format!(
                        "invalid capture index %{k} in replacement string"
                    )));
                }
            }
            _ => {
                return Err(mlua::Error::runtime(
                    "invalid use of '%' in replacement string",
                ));
            }
        }
        i += 2;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::lua::{Limits, LuaRuntime};

    /// Each expression gives the same answer as Lua's own matcher.
    #[test]
    fn agrees_with_lua() {
        let reference = mlua::Lua::new();
        let mut rt = LuaRuntime::new(Limits {
            memory: 16 << 20,
            time: Duration::from_millis(500),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            "string.find('hello world', 'o w')",
            "string.find('hello world', 'l+')",
            "string.find('hello world', '(l+)(o)')",
            "string.find('hello', 'l', -2)",
            "string.find('hello', 'l', 10)",
            "string.find('hello', '', 6)",
            "string.find('a.b', '.', 1, true)",
            "string.find('abc', '^b')",
            "string.find('abc', '^b', 2)",
            "string.match('  trim me  ', '^%s*(.-)%s*$')",
            "string.match('key=value', '(%w+)=(%w+)')",
            "string.match('2026-12-02', '(%d+)-(%d+)')",
            "string.match('abc', 'x')",
            "string.match('abc', '.', -1)",
            "('x=1&y=2'):match('y=(%d)')",
            "string.match('[[x]]', '%[(.-)%]')",
            "table.concat({string.gsub('hello world', 'o', '0')}, ',')",
            "table.concat({string.gsub('hello world', '(o)', '[%1%0]')}, ',')",
            "table.concat({string.gsub('abc', '', '-')}, ',')",
            "table.concat({string.gsub('abc', 'x*', '-')}, ',')",
            "table.concat({string.gsub('hello', 'l', 'L', 1)}, ',')",
            "table.concat({string.gsub('hello', '^h', 'H')}, ',')",
            "table.concat({string.gsub('$name is $age', '%$(%w+)', {name = 'Ann', age = 3})}, ',')",
            "table.concat({string.gsub('a b c', '%w', function(c) if c == 'b' then return nil end return c:upper() end)}, ',')",
            "table.concat({string.gsub('a+b', '%+', '%%')}, ',')",
            "table.concat({string.gsub('x', 'x', 5)}, ',')",
            "(function() local t = {} for k, v in string.gmatch('a=1, b=2', '(%w+)=(%w+)') do t[#t+1] = k .. v end return table.concat(t, ';') end)()",
            "(function() local t = {} for w in ('one two  three'):gmatch('%a+') do t[#t+1] = w end return table.concat(t, ';') end)()",
            "(function() local t = {} for w in ('abc'):gmatch('') do t[#t+1] = '[' .. w .. ']' end return table.concat(t) end)()",
            "(function() local t = {} for w in ('aaa'):gmatch('a*') do t[#t+1] = '[' .. w .. ']' end return table.concat(t) end)()",
            "(function() local t = {} for w in ('THE (quick) fox'):gmatch('%((%a+)%)') do t[#t+1] = w end return table.concat(t) end)()",
            "string.find('f(a(b)c)', '%b()')",
            "table.concat({string.gsub('THE (quick) fox', '%f[%a]%a+', 'W')}, ',')",
            "string.find(12345, '34')",
        ];
        for case in cases {
            let source = format!("return {case}");
            let want: Vec<String> = reference
                .load(source.as_str())
                .eval::<mlua::MultiValue>()
                .unwrap_or_else(|e| panic!("{case}: {e}"))
                .iter()
                .map(|v| format!("{v:?}"))
                .collect();
            let got = rt
                .run("case.lua", &source, source.as_bytes(), |_, f| {
                    let v: mlua::MultiValue = f.call(())?;
                    Ok(v.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>())
                })
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn hostile_patterns_take_linear_time() {
        let mut rt = LuaRuntime::new(Limits {
            memory: 64 << 20,
            time: Duration::from_millis(2000),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        for source in [
            "local s = 'a' .. string.rep(' ', 1 << 20) .. 'b' return #s:match('^%s*(.-)%s*$')",
            "return (string.rep('a', 40)):match(string.rep('a?', 40) .. string.rep('a', 40)) ~= nil",
            "local n = 0 for _ in string.rep('a', 1 << 20):gmatch('a*b') do n = n + 1 end return n",
        ] {
            let r = rt.run("hostile.lua", source, source.as_bytes(), |_, f| {
                f.call::<mlua::Value>(())
            });
            assert!(r.is_ok(), "{source}: {r:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // No linear form and a large subject: refused, not run.
        let source = "return string.rep('(', 1 << 20):find('%b()')";
        let r = rt.run("b.lua", source, source.as_bytes(), |_, f| {
            f.call::<mlua::Value>(())
        });
        assert!(r.is_err());
    }
}
