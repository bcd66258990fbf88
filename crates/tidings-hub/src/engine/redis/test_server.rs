//! A `redis-server` of the tests' own, on a free loopback port, stopped when dropped.
//!
//! Used by the engine's unit tests and, through `#[path]`, by the hub's integration tests
//! (so it needs nothing but `std`). Without `redis-server` installed, [`RedisServer::start`]
//! prints `skipped: <what> (install redis-server)` and returns `None`, unless
//! `TIDINGS_REQUIRE_EXTERNAL=1`, when it panics.

#![allow(dead_code)] // each test crate that includes it uses its own part

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, ended (by its pid) when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    /// The persistence arguments it was started with (none: it keeps nothing).
    persistence: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` with no persistence on a free loopback port and waits until
    /// it answers. `what` names the test for the skip line.
    pub fn start(what: &str) -> Option<RedisServer> {
        RedisServer::start_with(what, &[])
    }

    /// As [`RedisServer::start`], with every write fsynced to an append-only file in `dir`
    /// before Redis answers (`appendfsync always`), so a SIGKILL loses nothing it answered.
    pub fn start_durable(what: &str, dir: &std::path::Path) -> Option<RedisServer> {
        let dir = dir.to_string_lossy().into_owned();
        RedisServer::start_with(
            what,
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                &dir,
            ],
        )
    }

    /// As [`RedisServer::start`], keeping what `SAVE` writes (a snapshot) in `dir`, and
    /// loading it when started again: Redis back with older data.
    pub fn start_with_snapshots(what: &str, dir: &std::path::Path) -> Option<RedisServer> {
        let dir = dir.to_string_lossy().into_owned();
        RedisServer::start_with(what, &["--appendonly", "no", "--dir", &dir])
    }

    fn start_with(what: &str, persistence: &[&str]) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var("TIDINGS_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
                panic!("TIDINGS_REQUIRE_EXTERNAL=1 but redis-server is not installed (apt-get install redis-server)");
            }
            println!("skipped: {what} (install redis-server)");
            return None;
        }
        let persistence = persistence.iter().map(|a| (*a).to_owned()).collect();
        Some(RedisServer::spawn(free_port(), persistence))
    }

    /// Starts it again, on the same port with the same persistence, after
    /// [`RedisServer::stop`].
    pub fn start_again(&mut self) {
        let persistence = std::mem::take(&mut self.persistence);
        *self = RedisServer::spawn(self.port, persistence);
    }

    fn spawn(port: u16, persistence: Vec<String>) -> RedisServer {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--protected-mode", "no"]);
        if persistence.is_empty() {
            command.args(["--appendonly", "no"]);
        } else {
            command.args(&persistence);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = RedisServer {
            child,
            port,
            persistence,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Ends the server with SIGKILL (what it keeps on disk, if anything, survives).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
