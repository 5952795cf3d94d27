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

    /// A synchronous connection to db 0 (a cluster node's only one).
    pub fn db0(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        client.get_connection().unwrap()
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
        for cmd in provisioning(data) {
            cmd.exec(&mut con).unwrap();
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

/// The commands that write site data in the site-file format: hashes for
/// RELIW's hash keys, strings (JSON text for arrays and objects) for the
/// rest.
fn provisioning(data: &serde_json::Value) -> Vec<redis::Cmd> {
    let mut cmds = Vec::new();
    for (key, value) in data.as_object().unwrap() {
        let bare = key.split_once(':').map_or(key.as_str(), |(_, b)| b);
        if reliw::store::is_hash_key(bare) {
            for (field, v) in value.as_object().unwrap() {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(key).arg(field).arg(text(v));
                cmds.push(cmd);
            }
        } else {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(text(value));
            cmds.push(cmd);
        }
    }
    cmds
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

/// A Redis Cluster of three primaries and three replicas on free loopback
/// ports, made with `redis-cli --cluster create`; every server killed on
/// drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("reliw-cluster-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let port = free_port();
                let conf = dir.join(format!("nodes-{port}.conf"));
                RedisServer::start_with(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        conf.to_str().unwrap(),
                        "--cluster-node-timeout",
                        "1000",
                        // A replica may take over however long ago it
                        // last heard its primary, and syncs at once.
                        "--cluster-replica-validity-factor",
                        "0",
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (installed by cargo xtask setup) runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        let ready = crate::wait_until(Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let info: Option<String> =
                    redis::cmd("CLUSTER").arg("INFO").query(&mut n.db0()).ok();
                info.is_some_and(|i| i.contains("cluster_state:ok"))
            })
        });
        assert!(ready, "the cluster never reached cluster_state:ok");
        // A replica that has not synced yet cannot take over.
        let synced = crate::wait_until(Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut n.db0())
                    .unwrap_or_default();
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        });
        assert!(synced, "the replicas never synced");
        cluster
    }

    /// Seed addresses for `redis.cluster.nodes`.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// A cluster client that follows redirections, for provisioning
    /// (seeded with the servers still running).
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        self.try_client().unwrap()
    }

    /// As [`RedisCluster::client`], for a cluster that may be failing over.
    pub fn try_client(&self) -> redis::RedisResult<redis::cluster::ClusterConnection> {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect();
        redis::cluster::ClusterClient::new(seeds)?.get_connection()
    }

    /// Site data in the site-file format, as [`RedisServer::load`].
    pub fn load(&self, data: &serde_json::Value) {
        let mut con = self.client();
        for cmd in provisioning(data) {
            cmd.exec(&mut con).unwrap();
        }
    }

    /// The port of the server that holds `key`'s slot as primary now.
    pub fn primary_port(&self, key: &str) -> u16 {
        let mut con = self.client();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .unwrap();
        let shards: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => Some(*i),
            _ => None,
        };
        let port = shards.iter().find_map(|shard| {
            let redis::Value::Array(parts) = shard else {
                return None;
            };
            let (from, to) = (int(&parts[0])?, int(&parts[1])?);
            let redis::Value::Array(primary) = &parts[2] else {
                return None;
            };
            (from..=to).contains(&slot).then(|| int(&primary[1]))?
        });
        u16::try_from(port.expect("every slot is served")).unwrap()
    }

    /// Kills the server on `port`.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap()
            .kill();
    }
}
