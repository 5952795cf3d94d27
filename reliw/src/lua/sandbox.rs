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
    "getmetatable",
    "_VERSION",
];

/// Libraries offered whole, as read-only views.
const LIBRARIES: &[&str] = &["string", "table", "math", "utf8"];

const GUARDED_CATCHERS: &str = r#"
local pcall, xpcall, resume, expired = ...
local setmetatable, rawget, type, error = setmetatable, rawget, type, error
local function check(ok, ...)
    if not ok and expired() then error((...), 0) end
    return ok, ...
end
return function(...) return check(pcall(...)) end,
    function(f, handler, ...) return check(xpcall(f, handler, ...)) end,
    function(co, ...) return check(resume(co, ...)) end,
    -- Finalizers run with hooks off, out of any budget: none allowed.
    function(t, mt)
        if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
            error("__gc metamethods are not allowed in reliw's Lua", 2)
        end
        return setmetatable(t, mt)
    end
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
    guard_long_loops(lua, &string, &g.get::<Table>("table")?)?;
    super::patterns::install(lua, &string)?;
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
    let (pcall, xpcall, resume, setmetatable): (Function, Function, Function, Function) =
        lua.load(GUARDED_CATCHERS).set_name("=reliw").call((
            g.get::<Function>("pcall")?,
            g.get::<Function>("xpcall")?,
            g.get::<Table>("coroutine")?.get::<Function>("resume")?,
            expired,
        ))?;
    template.set("setmetatable", setmetatable)?;
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

/// `string.rep` and `table.move` can loop for 2^63 steps without
/// allocating (so neither the memory limit nor the hook stops them):
/// sizes beyond [`MAX_REPEAT`] are refused up front.
fn guard_long_loops(lua: &Lua, string: &Table, table: &Table) -> mlua::Result<()> {
    let rep: Function = string.get("rep")?;
    string.set(
        "rep",
        lua.create_function(
            move |_, (s, n, sep): (mlua::LuaString, mlua::Integer, Option<mlua::LuaString>)| {
                let piece = s.as_bytes().len() + sep.as_ref().map_or(0, |p| p.as_bytes().len());
                let cost = (n.max(0) as u128) * (piece.max(1) as u128);
                if cost > MAX_REPEAT {
                    return Err(mlua::Error::runtime("string.rep: result too large"));
                }
                rep.call::<Value>((s, n, sep))
            },
        )?,
    )?;
    let mv: Function = table.get("move")?;
    table.set(
        "move",
        lua.create_function(move |_, args: mlua::Variadic<Value>| {
            let f = args.get(1).and_then(Value::as_integer).unwrap_or(0);
            let e = args.get(2).and_then(Value::as_integer).unwrap_or(0);
            if i128::from(e) - i128::from(f) > MAX_REPEAT as i128 {
                return Err(mlua::Error::runtime("table.move: range too large"));
            }
            mv.call::<mlua::MultiValue>(args)
        })?,
    )?;
    Ok(())
}

/// The most bytes (or elements) one `string.rep` or `table.move` may make.
const MAX_REPEAT: u128 = 1 << 30;

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
    lua.create_function(move |lua, name: String| match name.as_str() {
        "cjson" => read_only(lua, cjson.clone()),
        "cjson.safe" => read_only(lua, safe.clone()),
        other => Err(mlua::Error::runtime(format!(
            "module '{other}' is not available to reliw's Lua pages (only cjson and cjson.safe)"
        ))),
    })
}

/// The largest JSON text `cjson.decode` takes.
const MAX_JSON: usize = 4 << 20;

fn json_module(lua: &Lua, safe: bool) -> mlua::Result<Table> {
    let module = lua.create_table()?;
    let encode = lua.create_function(move |lua, value: Value| {
        let result = serde_json::to_string(&value).map_err(mlua::Error::external);
        answer(
            lua,
            safe,
            result.and_then(|s| lua.create_string(s).map(Value::String)),
        )
    })?;
    let decode = lua.create_function(move |lua, text: mlua::LuaString| {
        // The parsed document lives on the Rust heap, outside the VM's
        // limit, until it is converted: its size is bounded here.
        if text.as_bytes().len() > MAX_JSON {
            let too_large = mlua::Error::runtime("cjson.decode: document too large");
            return answer(lua, safe, Err(too_large));
        }
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
