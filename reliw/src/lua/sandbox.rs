//! What Lua code sees: a globals table per chunk, built from a fixed list
//! of safe functions and read-only views of the safe libraries.
//!
//! Each chunk gets its own table and its own library views, so a page
//! that assigns globals or `rawset`s a library view changes nothing for
//! other pages. The real library tables are reachable only through the
//! string metatable, which is hidden (`__metatable = false`).

use mlua::{Function, Lua, LuaSerdeExt as _, Table, Value};

/// Base functions kept (everything else in `_G` is left out).
const BASE: &[&str] = &[
    "assert",
    "error",
    "ipairs",
    "next",
    "pairs",
    "select",
    "tonumber",
    "tostring",
    "type",
    "rawequal",
    "rawget",
    "rawset",
    "rawlen",
    "setmetatable",
    "getmetatable",
    "_VERSION",
];

/// Libraries offered whole, as read-only views.
const LIBRARIES: &[&str] = &["string", "table", "math", "utf8"];

const GUARDED_CATCHERS: &str = r#"
local pcall, xpcall, resume, expired = ...
local function check(ok, ...)
    if not ok and expired() then error((...), 0) end
    return ok, ...
end
return function(...) return check(pcall(...)) end,
    function(f, handler, ...) return check(xpcall(f, handler, ...)) end,
    function(co, ...) return check(resume(co, ...)) end
"#;

/// The parts of `os` that neither touch the system nor leak it.
const OS: &[&str] = &["time", "date", "clock", "difftime"];

/// The entries every environment is made from: base functions, the real
/// library tables (wrapped per chunk) and reliw's own `require` and `print`.
pub(super) fn globals(lua: &Lua, expired: Function) -> mlua::Result<Table> {
    let g = lua.globals();
    let template = lua.create_table()?;
    for name in BASE {
        template.set(*name, g.get::<Value>(*name)?)?;
    }
    for name in LIBRARIES {
        template.set(*name, g.get::<Table>(*name)?)?;
    }
    let string: Table = g.get("string")?;
    // Bytecode out of a function is of no use to a page and the first
    // step of every bytecode exploit.
    string.set("dump", Value::Nil)?;
    let os_real: Table = g.get("os")?;
    let os = lua.create_table()?;
    for name in OS {
        os.set(*name, os_real.get::<Function>(*name)?)?;
    }
    template.set("os", os)?;
    let table: Table = g.get("table")?;
    template.set("unpack", table.get::<Function>("unpack")?)?;
    template.set("print", print(lua)?)?;
    // pcall, xpcall and coroutine.resume catch errors, the budget's too:
    // past the deadline they pass them on, so no loop can catch its way on.
    let (pcall, xpcall, resume): (Function, Function, Function) =
        lua.load(GUARDED_CATCHERS).set_name("=reliw").call((
            g.get::<Function>("pcall")?,
            g.get::<Function>("xpcall")?,
            g.get::<Table>("coroutine")?.get::<Function>("resume")?,
            expired,
        ))?;
    template.set("pcall", pcall)?;
    template.set("xpcall", xpcall)?;
    let coroutine = lua.create_table()?;
    for pair in g.get::<Table>("coroutine")?.pairs::<Value, Value>() {
        let (k, v) = pair?;
        coroutine.set(k, v)?;
    }
    coroutine.set("resume", resume)?;
    template.set("coroutine", coroutine)?;
    template.set("require", require(lua)?)?;
    // Hide the string metatable (its __index is the real `string`).
    let meta: Table = lua.load("return getmetatable('')").eval()?;
    meta.set("__metatable", false)?;
    Ok(template)
}

/// A fresh globals table for one chunk.
pub(super) fn environment(lua: &Lua, template: &Table) -> mlua::Result<Table> {
    let env = lua.create_table()?;
    for pair in template.pairs::<Value, Value>() {
        let (name, value) = pair?;
        let value = match value {
            Value::Table(lib) => Value::Table(read_only(lua, lib)?),
            other => other,
        };
        env.set(name, value)?;
    }
    env.set("_G", env.clone())?;
    Ok(env)
}

/// An empty table that reads through to `lib` and refuses writes.
fn read_only(lua: &Lua, lib: Table) -> mlua::Result<Table> {
    let view = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set("__index", lib)?;
    meta.set(
        "__newindex",
        lua.create_function(|_, (_, key): (Value, Value)| -> mlua::Result<()> {
            Err(mlua::Error::runtime(format!(
                "libraries are read-only (assigning {key:?})"
            )))
        })?,
    )?;
    meta.set("__metatable", false)?;
    view.set_metatable(Some(meta))?;
    Ok(view)
}

/// `print` goes to the server log (debug level), never to stdout.
fn print(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(|_, args: mlua::Variadic<Value>| {
        let line: Vec<String> = args
            .iter()
            .map(|v| match v {
                Value::String(s) => s.to_string_lossy(),
                other => format!("{other:?}"),
            })
            .collect();
        tracing::debug!(target: "lua", "{}", line.join("\t"));
        Ok(())
    })
}

/// `require` for the modules reliw provides: `cjson` (errors raise) and
/// `cjson.safe` (errors come back as `nil, message`).
fn require(lua: &Lua) -> mlua::Result<Function> {
    let cjson = json_module(lua, false)?;
    let safe = json_module(lua, true)?;
    lua.create_function(move |_, name: String| match name.as_str() {
        "cjson" => Ok(cjson.clone()),
        "cjson.safe" => Ok(safe.clone()),
        other => Err(mlua::Error::runtime(format!(
            "module '{other}' is not available to reliw's Lua pages (only cjson and cjson.safe)"
        ))),
    })
}

fn json_module(lua: &Lua, safe: bool) -> mlua::Result<Table> {
    let module = lua.create_table()?;
    let encode = lua.create_function(move |lua, value: Value| {
        let result = lua
            .from_value::<serde_json::Value>(value)
            .and_then(|v| serde_json::to_string(&v).map_err(mlua::Error::external));
        answer(
            lua,
            safe,
            result.and_then(|s| lua.create_string(s).map(Value::String)),
        )
    })?;
    let decode = lua.create_function(move |lua, text: mlua::LuaString| {
        let result = serde_json::from_slice::<serde_json::Value>(&text.as_bytes())
            .map_err(mlua::Error::external)
            .and_then(|v| lua.to_value(&v));
        answer(lua, safe, result)
    })?;
    module.set("encode", encode)?;
    module.set("decode", decode)?;
    module.set("null", lua.null())?;
    Ok(module)
}

/// A result as cjson gives it: raised, or (safe) `nil, message`.
fn answer(lua: &Lua, safe: bool, result: mlua::Result<Value>) -> mlua::Result<mlua::MultiValue> {
    match result {
        Ok(v) => Ok(mlua::MultiValue::from_iter([v])),
        Err(e) if safe => Ok(mlua::MultiValue::from_iter([
            Value::Nil,
            Value::String(lua.create_string(e.to_string())?),
        ])),
        Err(e) => Err(e),
    }
}
