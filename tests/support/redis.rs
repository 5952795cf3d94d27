//! A private redis-server on a free loopback port, and a plain client to
//! provision and inspect it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reliw::config::RedisConfig;

/// A redis-server on loopback; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// A server on `port` with more `redis-server` arguments (a TLS port,
    /// say); `port` stays plain, for provisioning.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // A replica's full sync writes an RDB even with `save ""`:
            // never into the working directory (the repository).
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(["--dbfilename", &format!("reliw-test-{port}.rdb")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by cargo xtask setup) starts");
        let up = crate::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "redis-server did not listen on {port}");
        Self {
            child: Some(child),
            port,
        }
    }

    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Kills the server (its data is gone; the port is free again).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            port: self.port,
            db: 13,
            timeout: 1.0,
            ..RedisConfig::default()
        }
    }

    /// The `redis` JSON of a reliw config for this server.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({"host": "127.0.0.1", "port": self.port, "db": 13, "timeout": 1.0})
    }

    /// A synchronous connection to db 13.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/13", self.port)).unwrap();
        client.get_connection().unwrap()
    }

    /// Writes site data in the site-file format: hashes for RELIW's hash
    /// keys, strings (JSON text for arrays and objects) for the rest.
    pub fn load(&self, data: &serde_json::Value) {
        let mut con = self.client();
        for (key, value) in data.as_object().unwrap() {
            let bare = key.split_once(':').map_or(key.as_str(), |(_, b)| b);
            if reliw::store::is_hash_key(bare) {
                for (field, v) in value.as_object().unwrap() {
                    redis::cmd("HSET")
                        .arg(key)
                        .arg(field)
                        .arg(text(v))
                        .exec(&mut con)
                        .unwrap();
                }
            } else {
                redis::cmd("SET")
                    .arg(key)
                    .arg(text(value))
                    .exec(&mut con)
                    .unwrap();
            }
        }
    }

    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.client()).unwrap()
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
