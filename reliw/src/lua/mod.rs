//! RELIW's Lua: pages (`application/lua` entries) and Lua user data
//! (`DATA:<host>:template.lua`), run in one sandboxed Lua 5.4 VM per
//! worker, reused across requests.
//!
//! The sandbox ([`sandbox`]): the base functions without `load`,
//! `loadfile`, `dofile` or `collectgarbage`; `string`, `table`, `math`,
//! `utf8`, `coroutine`; `os.time/date/clock/difftime` only; no `io`, no
//! `debug`, no `package`. `require` knows `cjson` and `cjson.safe` only.
//! Chunks are loaded as text, never bytecode, compiled once per worker,
//! and given a fresh globals table over read-only libraries at every call.
//!
//! Budgets: the VM has a memory limit (an allocation beyond it fails the
//! call), and every call a deadline checked every
//! [`HOOK_EVERY`] VM instructions; a call past it fails. Either failure is
//! an error for the caller (a 500 and a log line), never a stalled worker.
//! What runs inside one C call, out of the hook's reach, is bounded too:
//! pattern matching is linear-time ([`patterns`]), `string.rep` and
//! `table.move` refuse sizes beyond a GiB, and `__gc` finalizers (run
//! with hooks off) cannot be set.

pub mod page;
mod patterns;
mod sandbox;
pub mod template;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, VmState};

/// The hook runs after this many VM instructions.
pub const HOOK_EVERY: u32 = 1000;

/// Compiled chunks kept per worker before the cache is dropped and refilled.
const MAX_CHUNKS: usize = 512;

/// What one call may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes the whole VM may allocate.
    pub memory: usize,
    /// Wall time one call may take.
    pub time: Duration,
}

/// Why running Lua failed; the message names the chunk.
#[derive(Debug, thiserror::Error)]
pub enum LuaError {
    #[error("{name}: does not compile: {detail}")]
    Compile { name: String, detail: String },
    #[error("{name}: {detail}")]
    Runtime { name: String, detail: String },
    #[error("{name}: ran past its time budget of {ms} ms")]
    Budget { name: String, ms: u128 },
    #[error("{name}: ran out of memory (the VM's limit is {limit} bytes)")]
    Memory { name: String, limit: usize },
    #[error("{name}: {detail}")]
    Result { name: String, detail: String },
    #[error("cannot set up the Lua VM: {0}")]
    Setup(String),
}

/// The VM of one worker.
pub struct LuaRuntime {
    lua: Lua,
    /// The read-only globals every chunk's environment falls back to.
    globals: Table,
    limits: Limits,
    /// The running call's deadline (read by the instruction hook).
    deadline: Rc<Cell<Option<Instant>>>,
    /// Compiled chunks by (chunk name, source hash).
    chunks: HashMap<(String, String), Function>,
}

impl LuaRuntime {
    pub fn new(limits: Limits) -> Result<Self, LuaError> {
        let setup = |e: mlua::Error| LuaError::Setup(e.to_string());
        let libs = StdLib::TABLE
            | StdLib::STRING
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::COROUTINE
            | StdLib::OS;
        let lua = Lua::new_with(libs, LuaOptions::new()).map_err(setup)?;
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let seen = Rc::clone(&deadline);
        let expired = lua
            .create_function(move |_, ()| Ok(seen.get().is_some_and(|at| Instant::now() >= at)))
            .map_err(setup)?;
        let globals = sandbox::globals(&lua, expired).map_err(setup)?;
        lua.set_memory_limit(limits.memory).map_err(setup)?;
        let seen = Rc::clone(&deadline);
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| match seen.get() {
                Some(at) if Instant::now() >= at => {
                    Err(mlua::Error::runtime("time budget exceeded"))
                }
                _ => Ok(VmState::Continue),
            },
        )
        .map_err(setup)?;
        Ok(Self {
            lua,
            globals,
            limits,
            deadline,
            chunks: HashMap::new(),
        })
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Compiles `source` (once per name and hash) and runs `call` with the
    /// chunk under the budget.
    pub fn run<R>(
        &mut self,
        name: &str,
        hash: &str,
        source: &[u8],
        call: impl FnOnce(&Lua, Function) -> mlua::Result<R>,
    ) -> Result<R, LuaError> {
        let chunk = self.chunk(name, hash, source)?;
        // Fresh globals for every call: nothing one request leaves in them
        // reaches the next, and nothing stays allocated between calls.
        let env = sandbox::environment(&self.lua, &self.globals)
            .map_err(|e| LuaError::Setup(e.to_string()))?;
        chunk
            .set_environment(env)
            .map_err(|e| LuaError::Setup(e.to_string()))?;
        let started = Instant::now();
        self.deadline.set(Some(started + self.limits.time));
        let result = call(&self.lua, chunk);
        self.deadline.set(None);
        // Give memory back before the next call needs it.
        if self.lua.used_memory() > self.limits.memory / 2 {
            let _ = self.lua.gc_collect();
        }
        result.map_err(|e| self.classify(name, started, &e))
    }

    fn chunk(&mut self, name: &str, hash: &str, source: &[u8]) -> Result<Function, LuaError> {
        let key = (name.to_owned(), hash.to_owned());
        if let Some(f) = self.chunks.get(&key) {
            return Ok(f.clone());
        }
        let compile = |e: mlua::Error| LuaError::Compile {
            name: name.to_owned(),
            detail: e.to_string(),
        };
        let env = self.lua.create_table().map_err(compile)?;
        let f = self
            .lua
            .load(source)
            .set_name(format!("={name}"))
            .set_mode(ChunkMode::Text)
            .set_environment(env)
            .into_function()
            .map_err(compile)?;
        if self.chunks.len() >= MAX_CHUNKS {
            self.chunks.clear();
        }
        self.chunks.insert(key, f.clone());
        Ok(f)
    }

    fn classify(&self, name: &str, started: Instant, e: &mlua::Error) -> LuaError {
        let name = name.to_owned();
        if started.elapsed() >= self.limits.time {
            return LuaError::Budget {
                name,
                ms: self.limits.time.as_millis(),
            };
        }
        if is_memory(e) {
            return LuaError::Memory {
                name,
                limit: self.limits.memory,
            };
        }
        LuaError::Runtime {
            name,
            detail: first_line(e),
        }
    }
}

fn is_memory(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory(cause),
        _ => false,
    }
}

/// The message of an error without its traceback.
fn first_line(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::CallbackError { cause, .. } => return first_line(cause),
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    };
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> LuaRuntime {
        LuaRuntime::new(Limits {
            memory: 16 << 20,
            time: Duration::from_millis(200),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn eval(rt: &mut LuaRuntime, source: &str) -> Result<String, LuaError> {
        rt.run("test.lua", source, source.as_bytes(), |_, f| {
            let v: mlua::Value = f.call(())?;
            Ok(format!("{v:?}"))
        })
    }

    #[test]
    fn the_sandbox_has_no_way_out() {
        let mut rt = runtime();
        for source in [
            "return io.open('/etc/passwd')",
            "return os.execute('true')",
            "return os.getenv('HOME')",
            "return require('os')",
            "return load('return 1')()",
            "return dofile('/etc/passwd')",
            "return loadfile('/etc/passwd')",
            "return debug.getinfo(1)",
            "return string.dump(function() end)",
            "return collectgarbage('count')",
            "return package.loadlib",
        ] {
            assert!(eval(&mut rt, source).is_err(), "{source}");
        }
        // Bytecode is refused at load time.
        let bytecode = b"\x1bLua\x54\x00";
        let r = rt.run("bc.lua", "bc", bytecode, |_, f| f.call::<()>(()));
        assert!(matches!(r, Err(LuaError::Compile { .. })), "{r:?}");
        // What pages use is there.
        let ok = eval(
            &mut rt,
            "return string.format('%d-%s', math.floor(2.5), table.concat({'a','b'})) .. os.date('!%Y', 0) .. utf8.char(72)",
        );
        assert_eq!(ok.ok().as_deref(), Some("String(\"2-ab1970H\")"));
    }

    #[test]
    fn libraries_are_shared_read_only_and_globals_are_per_chunk() {
        let mut rt = runtime();
        assert!(eval(&mut rt, "string.upper = nil return 1").is_err());
        assert!(eval(&mut rt, "getmetatable('').__index.upper = nil return 1").is_err());
        assert_eq!(
            eval(&mut rt, "return string.upper('a')").ok().as_deref(),
            Some("String(\"A\")")
        );
        let once = "leaked = (leaked or 0) + 1 return leaked";
        assert_eq!(eval(&mut rt, once).ok().as_deref(), Some("Integer(1)"));
        assert_eq!(
            eval(&mut rt, once).ok().as_deref(),
            Some("Integer(1)"),
            "the next call starts with fresh globals"
        );
        assert_eq!(eval(&mut rt, "return leaked").ok().as_deref(), Some("Nil"));
        assert!(eval(&mut rt, "require('cjson').encode = nil return 1").is_err());
        // Finalizers run with hooks off: refused.
        assert!(
            eval(
                &mut rt,
                "setmetatable({}, {__gc = function() while true do end end}) return 1"
            )
            .is_err()
        );
        assert!(eval(&mut rt, "return setmetatable({}, {__index = {a = 1}}).a").is_ok());
    }

    #[test]
    fn runaway_code_is_stopped() {
        let mut rt = runtime();
        let started = Instant::now();
        let r = eval(&mut rt, "while true do end");
        assert!(matches!(r, Err(LuaError::Budget { .. })), "{r:?}");
        // pcall cannot catch its way past the budget.
        for catcher in [
            "while true do pcall(function() while true do end end) end",
            "while true do xpcall(function() while true do end end, function(e) return e end) end",
            "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
            "while true do pcall(pcall, function() while true do end end) end",
        ] {
            let r = eval(&mut rt, catcher);
            assert!(
                matches!(r, Err(LuaError::Budget { .. })),
                "{catcher}: {r:?}"
            );
        }
        // Before the deadline pcall works as usual.
        assert_eq!(
            eval(&mut rt, "return select(2, pcall(error, 'x', 0))")
                .ok()
                .as_deref(),
            Some("String(\"x\")")
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let r = eval(&mut rt, "local t = {} for i = 1, 1e9 do t[i] = i end");
        assert!(
            matches!(
                r,
                Err(LuaError::Memory { .. }) | Err(LuaError::Budget { .. })
            ),
            "{r:?}"
        );
        let r = eval(&mut rt, "return string.rep('x', 1 << 30)");
        assert!(r.is_err(), "{r:?}");
        // Long C loops that allocate nothing are refused up front.
        for slow in [
            "return string.rep('', math.maxinteger)",
            "return ('x'):rep(math.maxinteger, '')",
            "return table.move({}, 1, math.maxinteger, 1)",
        ] {
            let started = Instant::now();
            assert!(eval(&mut rt, slow).is_err(), "{slow}");
            assert!(started.elapsed() < Duration::from_secs(1), "{slow}");
        }
        // The VM is still usable afterwards.
        assert_eq!(
            eval(&mut rt, "return 1 + 1").ok().as_deref(),
            Some("Integer(2)")
        );
    }

    #[test]
    fn json_modules() {
        let mut rt = runtime();
        let r = eval(
            &mut rt,
            "local json = require('cjson') local t = json.decode('{\"a\":[1,2]}') return json.encode({n = t.a[2]})",
        );
        assert_eq!(r.ok().as_deref(), Some("String(\"{\\\"n\\\":2}\")"));
        let r = eval(
            &mut rt,
            "local json = require('cjson.safe') local v, err = json.decode('{') return tostring(v) .. ' ' .. type(err)",
        );
        assert_eq!(r.ok().as_deref(), Some("String(\"nil string\")"));
        assert!(eval(&mut rt, "return require('cjson').decode('{')").is_err());
        assert!(eval(&mut rt, "return require('socket')").is_err());
    }
}
