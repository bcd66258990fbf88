//! `tidings serve` as a user runs it: the built binary, a real socket, a real signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tidings-hub/src/engine/redis/test_server.rs"]
mod redis_server;

use redis_server::RedisServer;

const PATIENCE: Duration = Duration::from_secs(20);

/// Starts `tidings` (no subcommand: serve is the default) with the memory engine on a
/// free port and returns the child and the address it printed.
fn start_hub(extra: &[&str]) -> (Child, SocketAddr) {
    start_hub_with(&["--memory"], extra)
}

/// As [`start_hub`], with the engine flags given.
fn start_hub_with(engine: &[&str], extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(engine)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidings starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the hub logs its address before anything else")
            .expect("a log line");
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if let Some(addr) = log["fields"]["address"].as_str() {
            break addr.parse().expect("an address");
        }
    };
    // Keep draining the log so the hub never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

/// Opens `GET /events?topic=a` as curl -N would hold it, and checks the answer is 200.
fn open_stream(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET /events?topic=a HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("response head");
    assert_eq!(&head, b"HTTP/1.1 200");
    stream
}

/// Publishes a form `body` (curl's encoding) and checks the answer is 200.
fn publish_form(addr: SocketAddr, body: &str) {
    let mut publish = connect(addr);
    write!(
        publish,
        "POST /publish HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("publish");
    let mut answer = String::new();
    publish.read_to_string(&mut answer).expect("publish answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tidings serve did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn sigterm_ends_open_streams_and_exits_zero() {
    let (mut child, addr) = start_hub(&["--retry", "2s"]);

    let mut stream = open_stream(addr);
    // SIGHUP (a service manager's reload) does not stop a hub without TLS.
    send_signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still running after SIGHUP"
    );
    publish_form(addr, "topic=a&data=before+shutdown");

    send_signal(&child, "-TERM");
    // The stream delivers what was queued, then ends (the hub closes it).
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("the stream ends");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("data: before shutdown"), "{text}");
    assert!(text.contains("retry: "), "{text}");
    let status = wait_for_exit(&mut child);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn invalid_settings_exit_with_the_usage_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "serve",
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--max-topics",
            "0",
        ])
        .output()
        .expect("tidings runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_topics must be at least 1"), "{stderr}");

    // A value from the environment is named as such (clap names the flag).
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env("TIDINGS_SLOW_CLIENT", "fast")
        .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
        .output()
        .expect("tidings runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("'fast'") && stderr.contains("environment variable TIDINGS_SLOW_CLIENT"),
        "{stderr}"
    );
}

/// Started under a low open-files limit (as shells and systemd start services), the hub
/// raises it to the hard limit and keeps `max_connections` under it, so that it answers
/// 503 past it rather than failing to accept anyone.
#[test]
fn a_low_open_files_limit_is_raised_and_max_connections_fits_under_it() {
    let script = format!(
        "ulimit -Sn 200 && ulimit -Hn 300 && exec '{}' --listen 127.0.0.1:0 --log-format json --memory",
        env!("CARGO_BIN_EXE_tidings")
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut warning = None;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let log: serde_json::Value = serde_json::from_str(&line.expect("a line")).expect("JSON");
        if log["fields"]["address"].is_string() {
            break;
        }
        if log["fields"]["open_files_limit"].is_u64() {
            warning = Some(log);
        }
    }
    // Keep draining the log so the hub never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("the hub's limits");
    send_signal(&child, "-TERM");
    assert!(wait_for_exit(&mut child).success());

    let warning = warning.expect("a warning about the limit");
    assert_eq!(warning["fields"]["open_files_limit"], 300);
    let message = warning["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("lowering max_connections to 172"),
        "{message}"
    );
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    assert!(
        open_files
            .split_whitespace()
            .filter(|w| *w == "300")
            .count()
            == 2,
        "soft raised to hard: {open_files}"
    );
}

/// Two `tidings serve --engine redis` processes on one Redis: a stream on one gets what is
/// published on the other.
#[test]
fn two_hubs_on_one_redis_deliver_each_others_events() {
    let Some(server) = RedisServer::start("tidings serve --engine redis") else {
        return;
    };
    let url = server.url();
    let engine = ["--engine", "redis", "--redis-url", url.as_str()];
    let (mut first, first_addr) = start_hub_with(&engine, &[]);
    let (mut second, second_addr) = start_hub_with(&engine, &[]);

    let mut stream = open_stream(second_addr);
    publish_form(first_addr, "topic=a&data=across+hubs");

    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: across hubs") {
        let n = stream.read(&mut chunk).expect("the event arrives");
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    for child in [&mut first, &mut second] {
        send_signal(child, "-TERM");
        assert_eq!(wait_for_exit(child).code(), Some(0));
    }
}

#[test]
fn the_redis_engine_says_when_redis_cannot_be_reached() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--listen", "127.0.0.1:0", "--engine", "redis"])
        .args(["--redis-url", &url])
        .output()
        .expect("tidings runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach Redis at {url}0")) && stderr.contains("--redis-url"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--listen", "127.0.0.1:0", "--engine", "redis"])
        .args(["--redis-url", "http://127.0.0.1/"])
        .output()
        .expect("tidings runs");
    assert_eq!(output.status.code(), Some(2), "a bad URL is a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a Redis URL"), "{stderr}");
}

/// Runs `tidings ARGS` with `TIDINGS_JWT_SECRET` set to `secret`, and returns its exit code
/// and standard output and error.
/// Runs `tidings` with `args` and the environment variables `env` (and no
/// `TIDINGS_TOKEN` from the caller's): its exit code, trimmed stdout and stderr.
fn tidings(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_remove("TIDINGS_TOKEN")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("tidings runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn tidings_with_secret(secret: &str, args: &[&str]) -> (Option<i32>, String, String) {
    tidings(&[("TIDINGS_JWT_SECRET", secret)], args)
}

#[test]
fn tokens_from_tidings_token_let_publish_and_listen_in() {
    const SECRET: &str = "a secret shared by the hub and the tool";
    let (mut child, addr) = start_hub(&["--jwt-secret", SECRET, "--subscribe-auth", "token"]);
    let url = format!("http://{addr}");
    let run = |args: &[&str]| tidings_with_secret(SECRET, args);

    // Without a token: the hub's 401, exit code 4, and what to do.
    let (code, _, stderr) = run(&["publish", "--url", &url, "-t", "news", "x"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("tidings token"),
        "{stderr}"
    );

    let (code, publisher, stderr) = run(&["token", "--publish", "news", "--ttl", "10m"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, first, stderr) = run(&[
        "publish", "--url", &url, "--token", &publisher, "-t", "news", "one",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = run(&[
        "publish", "--url", &url, "--token", &publisher, "-t", "news", "two",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    // The publish token grants `news` only.
    let (code, _, stderr) = run(&[
        "publish", "--url", &url, "--token", &publisher, "-t", "other", "x",
    ]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");

    let (code, reader, stderr) = run(&["token", "--subscribe", "news"]);
    assert_eq!(code, Some(0), "{stderr}");
    let stream = format!("{url}/events?topic=news");
    let listen = |token: &str| {
        let mut args = vec!["listen", "--no-reconnect", "--max-events", "1", "--json"];
        args.extend(["--last-event-id", &first, "--token", token, &stream]);
        run(&args)
    };
    let (code, line, stderr) = listen(&reader);
    assert_eq!(code, Some(0), "{stderr}");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["data"], "two");
    // A token made with another secret is refused: exit code 4.
    let (_, foreign, _) = tidings_with_secret("another secret entirely", &["token", "-s", "news"]);
    let (code, _, stderr) = listen(&foreign);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");

    send_signal(&child, "-TERM");
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
}

#[test]
fn tidings_token_refuses_what_cannot_work() {
    for (args, expected) in [
        (&["token"][..], "grants nothing"),
        (&["token", "--publish", "chat*"][..], "--publish \"chat*\""),
        (&["token", "--subscribe", ""][..], "--subscribe \"\""),
        (&["token", "-p", "a", "--ttl", "soon"][..], "not a duration"),
        (
            &["token", "-p", "a", "--audience", ""][..],
            "--audience is empty",
        ),
        (
            &[
                "publish",
                "--token",
                "t",
                "-H",
                "authorization: Bearer u",
                "-t",
                "a",
                "x",
            ][..],
            "not both",
        ),
    ] {
        let (code, stdout, stderr) = tidings_with_secret("s", args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = tidings_with_secret("", &["token", "-p", "a"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("secret is empty"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_remove("TIDINGS_JWT_SECRET")
        .args(["token", "-p", "a"])
        .output()
        .expect("tidings runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("set TIDINGS_JWT_SECRET"), "{stderr}");
    // The hub refuses token settings without a key, and two keys.
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_remove("TIDINGS_JWT_SECRET")
        .args([
            "serve",
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--publish-auth",
            "token",
        ])
        .output()
        .expect("tidings runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("publish_auth = token needs a key"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env("TIDINGS_JWT_SECRET", "a secret")
        .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
        .args(["--jwt-public-key", "key.pem"])
        .output()
        .expect("tidings runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--jwt-public-key"), "{stderr}");
}

/// Writes a new self-signed certificate for `localhost` and its key over `cert` and
/// `key`.
fn write_certificate(cert: &std::path::Path, key: &std::path::Path) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("rcgen makes a certificate");
    std::fs::write(cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(key, made.signing_key.serialize_pem()).expect("write the key");
}

#[cfg(unix)]
#[test]
fn https_serves_publish_and_listen_and_sighup_takes_a_renewed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("fullchain.pem");
    let key = dir.path().join("privkey.pem");
    write_certificate(&cert, &key);
    // What the tools trust: the first certificate (self-signed, so its own root).
    let first = dir.path().join("first.pem");
    std::fs::copy(&cert, &first).expect("copy");
    let (cert_arg, key_arg) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let (mut child, addr) = start_hub(&["--tls-cert", cert_arg, "--tls-key", key_arg]);
    let url = format!("https://localhost:{}", addr.port());
    let trusting = |ca: &std::path::Path, args: &[&str]| {
        tidings(&[("TIDINGS_CACERT", ca.to_str().expect("utf-8"))], args)
    };

    let (code, one, stderr) = trusting(&first, &["publish", "--url", &url, "-t", "news", "one"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = trusting(&first, &["publish", "--url", &url, "-t", "news", "two"]);
    assert_eq!(code, Some(0), "{stderr}");
    let stream = format!("{url}/events?topic=news");
    let (code, line, stderr) = tidings(
        &[],
        &[
            "listen",
            "--no-reconnect",
            "--max-events",
            "1",
            "--json",
            "--last-event-id",
            &one,
            "--cacert",
            first.to_str().expect("utf-8"),
            &stream,
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["data"], "two");

    // tidings bench over https: subscribers and publisher both on TLS.
    let bench_stream = format!("{url}/events?topic=bench");
    let (code, report, stderr) = trusting(
        &first,
        &[
            "bench",
            &bench_stream,
            "-c",
            "3",
            "--publish-url",
            &format!("{url}/publish"),
            "--body",
            r#"{"topic":"bench","data":"{seq} {ts}"}"#,
            "--content-type",
            "application/json",
            "--rate",
            "0",
            "--count",
            "5",
            "--settle",
            "0",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("--json prints JSON");
    assert_eq!(report["subscribers"]["connected"], 3, "{report}");
    assert_eq!(report["delivery"]["delivered"], 15, "{report}");
    assert_eq!(report["delivery"]["missing"], 0, "{report}");

    // Without --cacert the certificate is nobody's: the tools say so (exit code 3).
    let (code, _, stderr) = tidings(&[], &["publish", "--url", &url, "-t", "news", "x"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    // Plain http:// to the https port: the hub's 400 says what to do (exit code 4).
    let plain = format!("http://localhost:{}", addr.port());
    let (code, _, stderr) = tidings(&[], &["publish", "--url", &plain, "-t", "news", "x"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
    let plain_stream = format!("{plain}/events?topic=news");
    let (code, _, stderr) = tidings(&[], &["listen", "--no-reconnect", &plain_stream]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("the server said: this port serves HTTPS only"),
        "{stderr}"
    );
    // HTTP/2 without TLS: the hub's GOAWAY says why, and it is not retried (exit code 3).
    let (code, _, stderr) = tidings(&[], &["listen", "--http2-prior-knowledge", &plain_stream]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("this port serves HTTPS only"), "{stderr}");

    // Renewed on disk, then SIGHUP: new connections get the new certificate.
    write_certificate(&cert, &key);
    send_signal(&child, "-HUP");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, _, stderr) = trusting(&cert, &["publish", "--url", &url, "-t", "news", "3"]);
        if code == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is served: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, stderr) = trusting(&first, &["publish", "--url", &url, "-t", "news", "x"]);
    assert_eq!(code, Some(3), "the old certificate is gone: {stderr}");

    // A broken renewal keeps the current certificate, and the hub keeps running.
    std::fs::write(&key, "not a key").expect("write");
    send_signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(200));
    let (code, _, stderr) = trusting(&cert, &["publish", "--url", &url, "-t", "news", "4"]);
    assert_eq!(code, Some(0), "{stderr}");

    // A CA certificate served as the hub's own (what `openssl req -x509` makes by
    // default): refused by the tools, which say why and what to do.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let ca = params.self_signed(&ca_key).expect("a CA certificate");
    std::fs::write(&cert, ca.pem()).expect("write the certificate");
    std::fs::write(&key, ca_key.serialize_pem()).expect("write the key");
    send_signal(&child, "-HUP");
    let deadline = Instant::now() + PATIENCE;
    let stderr = loop {
        let (code, _, stderr) = trusting(&cert, &["publish", "--url", &url, "-t", "news", "5"]);
        if code == Some(3) {
            break stderr;
        }
        assert!(
            Instant::now() < deadline,
            "the CA certificate is served: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        stderr.contains("basicConstraints=critical,CA:FALSE"),
        "{stderr}"
    );

    let (code, _, stderr) = tidings(&[], &["listen", "--cacert", "/nonexistent.pem", &stream]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read --cacert /nonexistent.pem"),
        "{stderr}"
    );

    send_signal(&child, "-TERM");
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
}
