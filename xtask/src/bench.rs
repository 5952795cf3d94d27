//! `cargo xtask bench`: reliw against nginx, side by side in one run.
//!
//! Both servers serve the same files on loopback with one worker each,
//! pinned to CPU 0; wrk runs pinned to CPU 1 with 64 connections. Rounds
//! alternate reliw and nginx so drift in the machine hits both alike. The
//! result per server is the median round; ratios are reliw / nginx. Results
//! go to `target/bench/static.json`. A full run ends with the shield's cases:
//! `bench_xdp` (cost per packet against xdp-filter) and `bench_flood`
//! (legitimate throughput under three floods).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One wrk measurement.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Requests wrk completed.
    pub(crate) requests: u64,
    /// CPU time the server (all its threads and worker processes) spent
    /// per request: less noisy on a shared VM than req/s.
    pub(crate) cpu_us: f64,
}

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) name: &'static str,
}

impl Drop for Running {
    /// SIGTERM first: nginx's master stops its workers only when it is
    /// asked to; a SIGKILLed master leaves them running (and busy).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not start listening on port {port}")
}

fn start_reliw(
    root: &Path,
    dir: &Path,
    www: &Path,
    name: &'static str,
    io: &str,
    sendfile_min: u64,
    extra: serde_json::Value,
) -> Result<(Running, u16)> {
    let port = free_port()?;
    let config = dir.join(format!("{name}.json"));
    let mut json = serde_json::json!({
            "ip": "127.0.0.1",
            "port": port,
            "data_dir": www,
            "workers": 1,
            "log_level": "warn",
            "max_requests_per_connection": 0,
            "backlog": 4096,
            "cache_max_size": 16 << 20,
            "sendfile_min_size": sendfile_min,
            "store": {"backend": "static"},
            "metrics": {"disabled": true},
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            json[k] = v;
        }
    }
    std::fs::write(&config, json.to_string())?;
    let running = Running {
        child: Command::new("taskset")
            .args(["-c", "0"])
            .arg(root.join("target/release/reliw"))
            .args(["serve", "--io", io, "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()
            .context("starting reliw under taskset")?,
        name,
    };
    wait_for_port(port, name)?;
    Ok((running, port))
}

/// `send`: how bodies should leave, on 1 KiB, 100 KiB and 8 MiB files: reliw
/// on io_uring and on epoll, each writing bodies from memory and with
/// sendfile, against nginx (sendfile).
pub(crate) fn run(
    root: &Path,
    duration: u64,
    rounds: usize,
    connections: u32,
    send: bool,
    only: Option<&str>,
) -> Result<()> {
    let wanted = |case: &str| only.is_none_or(|o| o == case);
    // Cases with set-ups of their own, run only when asked for by name.
    let separate = match only {
        Some("flood") => Some((crate::bench_flood::run(root, duration)?.0, "flood.json")),
        Some("xdp") => Some((crate::bench_xdp::run(root, rounds.max(5))?.0, "xdp.json")),
        Some("failover") => Some((
            crate::bench_failover::run(root, duration)?.0,
            "failover.json",
        )),
        _ => None,
    };
    if let Some((table, file)) = separate {
        let results = root.join("target/bench").join(file);
        println!("\n{table}results: {}", results.display());
        return Ok(());
    }
    let dir = root.join("target/bench");
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("__"))?;
    let files: Vec<(&str, usize)> = if send {
        vec![
            ("1k.bin", 1024),
            ("100k.bin", 100 * 1024),
            ("8m.bin", 8 << 20),
        ]
    } else {
        vec![("1k.bin", 1024), ("100k.bin", 100 * 1024)]
    };
    for (name, size) in &files {
        let content: Vec<u8> = (0..*size).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(www.join("__").join(name), content)?;
    }

    let mut servers: Vec<(Running, u16)> = Vec::new();
    if send {
        for (name, io, sendfile_min) in [
            ("uring-memory", "uring", u64::MAX),
            ("uring-sendfile", "uring", 16 * 1024),
            ("epoll-memory", "epoll", u64::MAX),
            ("epoll-sendfile", "epoll", 16 * 1024),
        ] {
            servers.push(start_reliw(
                root,
                &dir,
                &www,
                name,
                io,
                sendfile_min,
                serde_json::Value::Null,
            )?);
        }
    } else {
        servers.push(start_reliw(
            root,
            &dir,
            &www,
            "reliw",
            "auto",
            16 * 1024,
            serde_json::Value::Null,
        )?);
        // The same files through RELIW's pipeline: a route and an entry in
        // Redis (read once, then served from the in-process cache).
        let (redis, redis_port) = start_redis(&dir)?;
        servers.push((redis, 0));
        let route = serde_json::json!([["^/", "files"]]).to_string();
        let entry = serde_json::json!({"methods": {"GET": true}}).to_string();
        redis_cli(redis_port, &["SET", "RLW:API:127.0.0.1", &route])?;
        redis_cli(redis_port, &["SET", "RLW:API:127.0.0.1:files", &entry])?;
        servers.push(start_reliw(
            root,
            &dir,
            &www,
            "reliw-redis",
            "auto",
            16 * 1024,
            serde_json::json!({
                "store": {"backend": "redis"},
                "redis": {"host": "127.0.0.1", "port": redis_port, "db": 13},
            }),
        )?);
    }
    servers.push(start_nginx(&dir, &www, None)?);
    let nginx_index = servers.len() - 1;

    println!(
        "bench: {rounds} rounds x {duration}s, {connections} connections; servers on CPU 0, wrk on CPU 1"
    );
    let mut results = Vec::new();
    let mut table = String::new();
    for (file, size) in files.iter().filter(|_| wanted("static")) {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
        for round in 0..rounds {
            // Rotate who goes first in each round.
            for k in 0..servers.len() {
                let which = (k + round) % servers.len();
                let (server, port) = &servers[which];
                if *port == 0 {
                    continue; // a helper (redis), not a server under test
                }
                let url = format!("http://127.0.0.1:{port}/{file}");
                let s = measured(server, &url, duration, connections)?;
                print_round(file, round, server.name, &s);
                samples[which].push(s);
            }
        }
        let n = median(&samples[nginx_index]);
        let mut entry = serde_json::json!({"file": file, "bytes": size, "nginx": sample_json(&n)});
        for (i, (server, port)) in servers.iter().enumerate() {
            if i == nginx_index || *port == 0 {
                continue;
            }
            let r = median(&samples[i]);
            table.push_str(&summary_line(file, server.name, "nginx", &r, &n));
            add_ratios(&mut entry, server.name, &r, &n);
        }
        results.push(entry);
    }
    if !send {
        drop(servers);
        servers = Vec::new();
        if wanted("tls") {
            let (line, entry) = tls_case(root, &dir, &www, duration, rounds, connections)?;
            table.push_str(&line);
            results.push(entry);
        }
        if wanted("h2") {
            let (lines, entries) = h2_case(root, &dir, &www, duration, rounds, connections)?;
            table.push_str(&lines);
            results.extend(entries);
        }
        if wanted("proxy") {
            let (line, entry) = proxy_case(root, &dir, &www, duration, rounds, connections)?;
            table.push_str(&line);
            results.push(entry);
        }
        if wanted("compress") {
            for coding in ["gzip", "br"] {
                let (line, entry) =
                    compress_case(root, &dir, &www, coding, duration, rounds, connections)?;
                table.push_str(&line);
                results.push(entry);
            }
        }
    }
    let json = serde_json::json!({
        "results": results,
        "duration_s": duration,
        "rounds": rounds,
        "connections": connections,
    });
    drop(servers);
    if !send && only.is_none() {
        let (line, entry) = crate::bench_xdp::run(root, rounds.max(5))?;
        table.push_str(&line);
        results.push(entry);
        let (line, entry) = crate::bench_flood::run(root, duration)?;
        table.push_str(&line);
        results.push(entry);
    }
    let out = dir.join(if send { "send.json" } else { "static.json" });
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("\n{table}results: {}", out.display());
    Ok(())
}

/// 1 KiB over HTTPS with keep-alive: reliw against nginx with the same
/// certificate (made here with openssl), both with session tickets.
fn tls_case(
    root: &Path,
    dir: &Path,
    www: &Path,
    duration: u64,
    rounds: usize,
    connections: u32,
) -> Result<(String, serde_json::Value)> {
    let (cert, key) = bench_certificate(dir)?;
    let ssl = serde_json::json!({"ssl": {"default": {"cert": cert, "key": key}}});
    let (reliw, port) = start_reliw(root, dir, www, "reliw-tls", "auto", 16 * 1024, ssl)?;
    let (nginx, nginx_port) = start_nginx(dir, www, Some((&cert, &key)))?;
    let pair = [(&reliw, port), (&nginx, nginx_port)];
    let url = |port| format!("https://127.0.0.1:{port}/1k.bin");
    let (r, n) = ab_rounds("1k https", pair, url, None, duration, rounds, connections)?;
    let (line, mut entry) = ab_summary("1k https", ["reliw-tls", "nginx-tls"], &r, &n);
    entry["https"] = true.into();
    Ok((line, entry))
}

/// A self-signed P-256 certificate for the HTTPS cases, made with openssl.
fn bench_certificate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("bench.crt"), dir.join("bench.key"));
    crate::run_checked(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    Ok((cert, key))
}

/// HTTP/2 over TLS (ALPN h2), 1 KiB and 100 KiB, many streams on each
/// connection: h2load against reliw and nginx (`http2`), same
/// certificate, same files. h2load's per-request log gives the
/// percentiles (it prints none of its own).
fn h2_case(
    root: &Path,
    dir: &Path,
    www: &Path,
    duration: u64,
    rounds: usize,
    connections: u32,
) -> Result<(String, Vec<serde_json::Value>)> {
    let (cert, key) = bench_certificate(dir)?;
    let ssl = serde_json::json!({"ssl": {"default": {"cert": &cert, "key": &key}}});
    let (reliw, port) = start_reliw(root, dir, www, "reliw-h2", "auto", 16 * 1024, ssl)?;
    let nginx_port = free_port()?;
    let site = format!("root {};", www.join("__").display());
    let conf = write_nginx_conf_as(dir, "nginx-h2", nginx_port, Some((&cert, &key)), "", &site)?;
    // nginx 1.22 (Debian 12) takes `http2` on the listen line.
    let text =
        std::fs::read_to_string(&conf)?.replace(" ssl backlog=4096;", " ssl http2 backlog=4096;");
    std::fs::write(&conf, text)?;
    let nginx = run_nginx(dir, &conf, "nginx-h2", nginx_port)?;
    let clients = (connections / 8).max(2);
    let streams = 32;
    let mut table = String::new();
    let mut entries = Vec::new();
    for file in ["1k.bin", "100k.bin"] {
        let what = format!("h2 {}", file.trim_end_matches(".bin"));
        let pair = [(&reliw, port), (&nginx, nginx_port)];
        let measure = |server: &Running, port: u16| {
            let url = format!("https://127.0.0.1:{port}/{file}");
            with_cpu(server, || h2load(&url, dir, duration, clients, streams))
        };
        let (r, n) = alternating(&what, pair, rounds, measure)?;
        let (line, mut entry) = ab_summary(&what, ["reliw-h2", "nginx-h2"], &r, &n);
        entry["file"] = file.into();
        entry["h2"] = serde_json::json!({"clients": clients, "streams_per_client": streams});
        table.push_str(&line);
        entries.push(entry);
    }
    Ok((table, entries))
}

/// h2load on CPU 1 for `duration` seconds: `clients` connections with
/// `streams` concurrent streams each. Every response must be a 2xx.
fn h2load(url: &str, dir: &Path, duration: u64, clients: u32, streams: u32) -> Result<Sample> {
    let log = dir.join("h2load.log");
    // h2load appends to its log.
    let _ = std::fs::remove_file(&log);
    let out = Command::new("taskset")
        .args(["-c", "1", "h2load", "-t1"])
        .arg(format!("-c{clients}"))
        .arg(format!("-m{streams}"))
        .arg(format!("-D{duration}"))
        .arg("--warm-up-time=1")
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .stderr(Stdio::inherit())
        .output()
        .context("running h2load (cargo xtask setup installs nghttp2-client)")?;
    if !out.status.success() {
        bail!("h2load failed on {url}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sample = Sample {
        rps: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        requests: 0,
        cpu_us: 0.0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        match words.as_slice() {
            ["finished", "in", _, rps, "req/s", ..] => sample.rps = rps.parse()?,
            [
                "requests:",
                total,
                "total",
                _,
                "started",
                _,
                "done",
                ok,
                "succeeded",
                ..,
            ] => {
                sample.requests = ok.parse()?;
                if total != ok {
                    bail!("h2load on {url}: {}", line.trim());
                }
            }
            [
                "status",
                "codes:",
                _,
                "2xx",
                n3,
                "3xx",
                n4,
                "4xx",
                n5,
                "5xx",
            ] if [n3, n4, n5].iter().any(|n| **n != "0") => {
                bail!("h2load on {url}: {}", line.trim());
            }
            _ => {}
        }
    }
    // start (us since the epoch), status, microseconds to the response's end
    let mut micros: Vec<f64> = std::fs::read_to_string(&log)?
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.parse().ok())
        .collect();
    if sample.rps == 0.0 || micros.is_empty() {
        bail!("h2load printed no results for {url}");
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    sample.p50_us = at(0.50);
    sample.p99_us = at(0.99);
    Ok(sample)
}

/// 1 KiB through a reverse proxy with upstream keep-alive: reliw
/// (`P:PROXY`) against nginx (`proxy_pass` to an upstream block with
/// `keepalive`), both in front of the same upstream: an nginx serving the
/// file, on CPU 0 with the proxies.
fn proxy_case(
    root: &Path,
    dir: &Path,
    www: &Path,
    duration: u64,
    rounds: usize,
    connections: u32,
) -> Result<(String, serde_json::Value)> {
    let up_port = free_port()?;
    let site = format!("root {};", www.join("__").display());
    let conf = write_nginx_conf_as(dir, "nginx-upstream", up_port, None, "", &site)?;
    let upstream = run_nginx(dir, &conf, "nginx-upstream", up_port)?;

    let site_file = dir.join("proxy-site.json");
    let entry = serde_json::json!({"target": "127.0.0.1", "port": up_port}).to_string();
    std::fs::write(
        &site_file,
        serde_json::json!({"RLW:PROXY:127.0.0.1": entry}).to_string(),
    )?;
    let store = serde_json::json!({"store": {"backend": "memory", "site_file": site_file}});
    let (reliw, port) = start_reliw(root, dir, www, "reliw-proxy", "auto", 16 * 1024, store)?;

    let nginx_port = free_port()?;
    let pool = format!("upstream backend {{ server 127.0.0.1:{up_port}; keepalive 64; }}");
    let site = "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }";
    let conf = write_nginx_conf_as(dir, "nginx-proxy", nginx_port, None, &pool, site)?;
    let nginx = run_nginx(dir, &conf, "nginx-proxy", nginx_port)?;

    let pair = [(&reliw, port), (&nginx, nginx_port)];
    let url = |port| format!("http://127.0.0.1:{port}/1k.bin");
    let (r, n) = ab_rounds("1k proxy", pair, url, None, duration, rounds, connections)?;
    drop(upstream);
    let (line, mut entry) = ab_summary("1k proxy", ["reliw-proxy", "nginx-proxy"], &r, &n);
    entry["proxy"] = true.into();
    Ok((line, entry))
}

/// A 100 KiB HTML page sent compressed (`coding`: gzip or br) to every
/// request, reliw at its default levels (gzip 6, brotli 5) against nginx
/// with `gzip on` / `brotli on` at the same levels. nginx encodes each
/// response anew (it keeps no encoded forms), so reliw is measured twice:
/// as it runs (encoded forms cached) and with `compression.cache_size: 0`
/// (every response encoded, as nginx does): the second is the
/// encoder-against-encoder figure. Every server is checked to really
/// answer in that coding before the rounds.
fn compress_case(
    root: &Path,
    dir: &Path,
    www: &Path,
    coding: &str,
    duration: u64,
    rounds: usize,
    connections: u32,
) -> Result<(String, serde_json::Value)> {
    std::fs::write(www.join("__/page.html"), html_page(100 * 1024))?;
    let (reliw, port) = start_reliw(
        root,
        dir,
        www,
        "reliw-compress",
        "auto",
        16 * 1024,
        serde_json::Value::Null,
    )?;
    let (uncached, uncached_port) = start_reliw(
        root,
        dir,
        www,
        "reliw-uncached",
        "auto",
        16 * 1024,
        serde_json::json!({"compression": {"cache_size": 0}}),
    )?;
    let nginx_port = free_port()?;
    let (name, module, filter) = match coding {
        "gzip" => (
            "nginx-gzip",
            "",
            "gzip on; gzip_comp_level 6; gzip_min_length 512; gzip_vary on;",
        ),
        _ => (
            "nginx-brotli",
            "/usr/lib/nginx/modules/ngx_http_brotli_filter_module.so",
            "brotli on; brotli_comp_level 5; brotli_min_length 512;",
        ),
    };
    let site = format!(
        "root {}; types {{ text/html html; }} {filter}",
        www.join("__").display()
    );
    let conf = write_nginx_conf_with_module(dir, name, nginx_port, module, &site)?;
    let nginx = run_nginx(dir, &conf, name, nginx_port)?;
    let header = format!("Accept-Encoding: {coding}");
    for (server, p) in [
        ("reliw", port),
        ("reliw-uncached", uncached_port),
        (name, nginx_port),
    ] {
        let encoding = response_encoding(p, "/page.html", &header)?;
        if encoding.as_deref() != Some(coding) {
            bail!("{server} answered {encoding:?} to {header}, not {coding}");
        }
    }
    let url = |port| format!("http://127.0.0.1:{port}/page.html");
    let what = format!("100k {coding}");
    // Each reliw in alternating rounds against the same nginx.
    let against_nginx = |reliw: &Running, port: u16| {
        let pair = [(reliw, port), (&nginx, nginx_port)];
        ab_rounds(
            &what,
            pair,
            url,
            Some(&header),
            duration,
            rounds,
            connections,
        )
    };
    let (r, n) = against_nginx(&reliw, port)?;
    let (mut line, mut entry) = ab_summary(&what, ["reliw-compress", name], &r, &n);
    let (u, n2) = against_nginx(&uncached, uncached_port)?;
    line.push_str(&summary_line(&what, "reliw-uncached", name, &u, &n2));
    add_ratios(&mut entry, "reliw-uncached", &u, &n2);
    entry["file"] = "page.html".into();
    entry["coding"] = coding.into();
    Ok((line, entry))
}

/// About `size` bytes of HTML made of varied words, so it compresses
/// like a real page (3-5x), not like one repeated line.
fn html_page(size: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "edge", "server", "request", "kernel", "packet", "shield", "route", "cache", "header",
        "body", "client", "upstream", "session", "token", "limit", "stream", "worker", "socket",
        "buffer", "page", "metric", "redis", "flood", "visitor",
    ];
    let mut out = b"<!doctype html><html><head><title>bench</title></head><body>\n".to_vec();
    // A fixed LCG: the same page in every run.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut para = 0;
    while out.len() < size {
        out.extend_from_slice(format!("<p id=\"p{para}\">").as_bytes());
        for _ in 0..40 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            out.extend_from_slice(WORDS[(x >> 33) as usize % WORDS.len()].as_bytes());
            out.push(if (x >> 20).is_multiple_of(9) {
                b','
            } else {
                b' '
            });
            if (x >> 40).is_multiple_of(13) {
                out.extend_from_slice(format!("{} ", (x >> 44) % 10_000).as_bytes());
            }
        }
        out.extend_from_slice(b"</p>\n");
        para += 1;
    }
    out.truncate(size - 15);
    out.extend_from_slice(b"</body></html>\n");
    out
}

/// The `Content-Encoding` of a GET with one extra header line.
fn response_encoding(port: u16, path: &str, header: &str) -> Result<Option<String>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    Ok(head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-encoding")
            .then(|| value.trim().to_owned())
    }))
}

/// nginx's config with a dynamic module loaded first (`module` empty: none).
fn write_nginx_conf_with_module(
    dir: &Path,
    name: &str,
    port: u16,
    module: &str,
    site: &str,
) -> Result<PathBuf> {
    let path = write_nginx_conf_as(dir, name, port, None, "", site)?;
    if !module.is_empty() {
        let conf = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("load_module {module};\n{conf}"))?;
    }
    Ok(path)
}

/// Alternating wrk rounds against two servers (who goes first rotates);
/// the median round of each. `header`: one more request header line.
fn ab_rounds(
    what: &str,
    pair: [(&Running, u16); 2],
    url: impl Fn(u16) -> String,
    header: Option<&str>,
    duration: u64,
    rounds: usize,
    connections: u32,
) -> Result<(Sample, Sample)> {
    alternating(what, pair, rounds, |server, port| {
        measured_with(server, &url(port), header, duration, connections)
    })
}

/// Rounds of `measure` against two servers, alternating who goes first;
/// the median round of each.
fn alternating(
    what: &str,
    pair: [(&Running, u16); 2],
    rounds: usize,
    measure: impl Fn(&Running, u16) -> Result<Sample>,
) -> Result<(Sample, Sample)> {
    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for k in 0..2 {
            let which = (k + round) % 2;
            let (server, port) = pair[which];
            let s = measure(server, port)?;
            print_round(what, round, server.name, &s);
            samples[which].push(s);
        }
    }
    Ok((median(&samples[0]), median(&samples[1])))
}

/// The table line and JSON entry of a two-server case: reliw `r` against
/// the reference `n`.
fn ab_summary(
    what: &str,
    [reliw, reference]: [&str; 2],
    r: &Sample,
    n: &Sample,
) -> (String, serde_json::Value) {
    let line = summary_line(what, reliw, reference, r, n);
    let mut entry = serde_json::json!({"file": "1k.bin"});
    entry[reference] = sample_json(n);
    add_ratios(&mut entry, reliw, r, n);
    (line, entry)
}

/// One line of the result table: reliw `r` against the reference `n`.
fn summary_line(what: &str, reliw: &str, reference: &str, r: &Sample, n: &Sample) -> String {
    format!(
        "{what:>9}: {reliw:<12} {:>9.0} req/s (p50 {:.0}us, p99 {:.0}us, cpu {:.1}us/req) | {reference} {:>9.0} req/s (p50 {:.0}us, p99 {:.0}us, cpu {:.1}us/req) | ratio {:.2}x, p99 ratio {:.2}, cpu ratio {:.2}\n",
        r.rps,
        r.p50_us,
        r.p99_us,
        r.cpu_us,
        n.rps,
        n.p50_us,
        n.p99_us,
        n.cpu_us,
        r.rps / n.rps,
        r.p99_us / n.p99_us,
        r.cpu_us / n.cpu_us,
    )
}

/// reliw's sample and its ratios to the reference in a JSON entry.
fn add_ratios(entry: &mut serde_json::Value, reliw: &str, r: &Sample, n: &Sample) {
    entry[reliw] = sample_json(r);
    entry[format!("{reliw}_rps_ratio")] = (r.rps / n.rps).into();
    entry[format!("{reliw}_p99_ratio")] = (r.p99_us / n.p99_us).into();
    entry[format!("{reliw}_cpu_ratio")] = (r.cpu_us / n.cpu_us).into();
}

fn print_round(what: &str, round: usize, name: &str, s: &Sample) {
    println!(
        "  {what:>9} round {} {name:<12} {:>10.0} req/s  p50 {:>7.0}us  p99 {:>7.0}us  cpu {:>5.1}us/req",
        round + 1,
        s.rps,
        s.p50_us,
        s.p99_us,
        s.cpu_us
    );
}

/// nginx on CPU 0 serving `www/__`, plain or with TLS.
fn start_nginx(dir: &Path, www: &Path, tls: Option<(&Path, &Path)>) -> Result<(Running, u16)> {
    let port = free_port()?;
    let conf = write_nginx_conf(dir, &www.join("__"), port, tls)?;
    let name = if tls.is_some() { "nginx-tls" } else { "nginx" };
    Ok((run_nginx(dir, &conf, name, port)?, port))
}

/// Runs nginx on CPU 0 with `conf` and waits for `port`.
fn run_nginx(dir: &Path, conf: &Path, name: &'static str, port: u16) -> Result<Running> {
    let running = Running {
        child: Command::new("taskset")
            .args(["-c", "0", "nginx", "-c"])
            .arg(conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.stderr")))?)
            .spawn()
            .context("starting nginx under taskset")?,
        name,
    };
    wait_for_port(port, name)?;
    Ok(running)
}

/// A private redis-server for the bench (CPU 1, with wrk: it is not on
/// the hot path once reliw cached the route).
fn start_redis(dir: &Path) -> Result<(Running, u16)> {
    let port = free_port()?;
    let running = Running {
        child: Command::new("taskset")
            .args(["-c", "1", "redis-server", "--port"])
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("redis.log"))?)
            .spawn()
            .context("starting redis-server (cargo xtask setup installs it)")?,
        name: "redis",
    };
    wait_for_port(port, "redis")?;
    Ok((running, port))
}

fn redis_cli(port: u16, args: &[&str]) -> Result<()> {
    crate::run_checked(
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "-n", "13"])
            .args(args)
            .stdout(Stdio::null()),
    )
}

fn sample_json(s: &Sample) -> serde_json::Value {
    serde_json::json!({"rps": s.rps, "p50_us": s.p50_us, "p99_us": s.p99_us, "cpu_us_per_request": s.cpu_us})
}

/// The round with the median req/s, with the median CPU per request of
/// all rounds.
fn median(samples: &[Sample]) -> Sample {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.cpu_us.total_cmp(&b.cpu_us));
    let cpu_us = sorted[sorted.len() / 2].cpu_us;
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    Sample {
        cpu_us,
        ..sorted[sorted.len() / 2]
    }
}

/// nginx's config: plain, or TLS with `cert` and `key` (then named
/// `nginx-tls.*`, so both can run at once).
fn write_nginx_conf(
    dir: &Path,
    root: &Path,
    port: u16,
    tls: Option<(&Path, &Path)>,
) -> Result<PathBuf> {
    let name = if tls.is_some() { "nginx-tls" } else { "nginx" };
    let site = format!("root {};", root.display());
    write_nginx_conf_as(dir, name, port, tls, "", &site)
}

/// nginx's config named `name`: `http_extra` at the http level, `site`
/// inside the server block.
fn write_nginx_conf_as(
    dir: &Path,
    name: &str,
    port: u16,
    tls: Option<(&Path, &Path)>,
    http_extra: &str,
    site: &str,
) -> Result<PathBuf> {
    let listen = match tls {
        None => format!("listen 127.0.0.1:{port} backlog=4096;"),
        Some((cert, key)) => format!(
            "listen 127.0.0.1:{port} ssl backlog=4096;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;\n        ssl_session_tickets on;",
            cert.display(),
            key.display()
        ),
    };
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    types {{ application/octet-stream bin; }}
    {http_extra}
    server {{
        {listen}
        {site}
    }}
}}
"#,
        dir = dir.display(),
    );
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    Ok(path)
}

fn wrk(url: &str, header: Option<&str>, duration: u64, connections: u32) -> Result<Sample> {
    let mut command = Command::new("taskset");
    command.args(["-c", "1", "wrk", "-t1", "--latency", "--timeout", "10s"]);
    if let Some(h) = header {
        command.args(["-H", h]);
    }
    let out = command
        .arg(format!("-c{connections}"))
        .arg(format!("-d{duration}s"))
        .arg(url)
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk")?;
    if !out.status.success() {
        bail!("wrk failed on {url}");
    }
    let (sample, errors) = parse_wrk(&out.stdout)?;
    if !errors.is_empty() {
        bail!("wrk reported errors on {url}: {errors}");
    }
    if sample.rps == 0.0 {
        bail!("wrk printed no Requests/sec for {url}");
    }
    Ok(sample)
}

/// wrk's report: the sample, and its error lines (non-2xx, socket errors).
pub(crate) fn parse_wrk(stdout: &[u8]) -> Result<(Sample, String)> {
    let mut sample = Sample {
        rps: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        requests: 0,
        cpu_us: 0.0,
    };
    let mut errors = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => sample.rps = v.parse()?,
            [n, "requests", "in", ..] => sample.requests = n.parse()?,
            ["50%", v] => sample.p50_us = micros(v)?,
            ["99%", v] => sample.p99_us = micros(v)?,
            ["Non-2xx", ..] | ["Socket", "errors:", ..] => {
                errors.push_str(line.trim());
                errors.push(' ');
            }
            _ => {}
        }
    }
    Ok((sample, errors.trim_end().to_owned()))
}

/// wrk against `server`, with the CPU time it used per request.
fn measured(server: &Running, url: &str, duration: u64, connections: u32) -> Result<Sample> {
    measured_with(server, url, None, duration, connections)
}

/// [`measured`] with one more request header line.
fn measured_with(
    server: &Running,
    url: &str,
    header: Option<&str>,
    duration: u64,
    connections: u32,
) -> Result<Sample> {
    with_cpu(server, || wrk(url, header, duration, connections))
}

/// Runs `load` against `server` and adds the CPU time the server used
/// per request to its sample.
fn with_cpu(server: &Running, load: impl FnOnce() -> Result<Sample>) -> Result<Sample> {
    let pid = server.child.id();
    let before = cpu_seconds(pid)?;
    let mut sample = load()?;
    let used = cpu_seconds(pid)? - before;
    sample.cpu_us = used * 1e6 / sample.requests.max(1) as f64;
    Ok(sample)
}

/// User plus system CPU seconds of a process and its children (nginx's
/// workers are children of the master we started).
fn cpu_seconds(pid: u32) -> Result<f64> {
    // /proc reports clock ticks of USER_HZ, which Linux fixes at 100.
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc stat line")?
            .parse::<f64>()?)
    };
    // utime and stime: fields 14 and 15, counted after the ")".
    let mut total = (ticks(11)? + ticks(12)?) / TICKS;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace() {
        if let Ok(child) = child.parse() {
            total += cpu_seconds(child)?;
        }
    }
    Ok(total)
}

/// wrk's latency with its unit (`us`, `ms`, `s`) in microseconds.
fn micros(v: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        bail!("unknown latency unit in {v}")
    };
    Ok(num.parse::<f64>()? * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_units() {
        assert_eq!(micros("250.00us").ok(), Some(250.0));
        assert_eq!(micros("1.50ms").ok(), Some(1500.0));
        assert_eq!(micros("2.00s").ok(), Some(2_000_000.0));
        assert!(micros("3m").is_err());
    }
}
