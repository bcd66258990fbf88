//! Configuration: command-line flags, `TIDINGS_*` environment variables and an optional
//! TOML file, with one name for each setting.
//!
//! A setting `max_body_bytes` is the flag `--max-body-bytes`, the environment variable
//! `TIDINGS_MAX_BODY_BYTES` and the TOML key `max_body_bytes`. A flag wins over the
//! environment, which wins over the file (`--config FILE`), which wins over the default.
//! Durations are written `500ms`, `15s`, `10m`, `1h` (a bare number is seconds); `0`
//! turns a duration limit off where the table says so.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `listen` | `127.0.0.1:8080` | address to listen on |
//! | `tls_cert` | none | PEM certificate chain: serve HTTPS (and HTTP/2) instead of plain HTTP, see [`crate::tls`] |
//! | `tls_key` | none | PEM private key of `tls_cert` (both files are read again on `SIGHUP`) |
//! | `engine` | `disk` | where events are stored: `disk`, `memory` (`--memory` for short) or `redis` |
//! | `data_dir` | `./tidings-data` | the disk engine's directory (created if missing) |
//! | `redis_url` | `redis://127.0.0.1:6379` | the Redis engine's server (`rediss://` for TLS, `redis://:password@host/db`) |
//! | `redis_prefix` | `tidings` | the Redis engine's keys start with `{prefix}:`: hubs with the same server and prefix share everything |
//! | `history_max_events` | 1000 | events kept per topic |
//! | `history_max_age` | `1h` | how long events are kept (`0`: no age limit) |
//! | `history_max_bytes` | none | bytes kept per topic (`0`: no byte limit; disk engine) |
//! | `[retention."<pattern>"]` | none | TOML only: per-topic overrides, see [`crate::engine::RetentionRules`] (disk engine) |
//! | `cors_origin` | none | allowed browser origins, exact (repeatable; env: comma-separated) |
//! | `jwt_secret` | none | HMAC secret (HS256/384/512) that tokens are checked with, see [`crate::auth`] |
//! | `jwt_public_key` | none | PEM file of an RSA, EC or Ed25519 public key tokens are checked with |
//! | `jwt_audience` | none | when set, a token's `aud` must name it |
//! | `publish_auth` | `token` with a key, else `open` | `open` or `token`: who may publish |
//! | `subscribe_auth` | `open` | `open` or `token`: who may subscribe and read history |
//! | `max_body_bytes` | 1048576 | largest publish request body (413 beyond) |
//! | `max_topics` | 32 | topics and patterns per subscription (400 beyond) |
//! | `max_connections` | 10000 | open event streams (503 beyond) |
//! | `max_queue_bytes` | 2 × `max_body_bytes` | bytes queued per connection before `slow_client` acts |
//! | `slow_client` | `disconnect` | `disconnect`, `drop-oldest` or `latest-only` |
//! | `keep_alive` | `15s` | comment sent after this much quiet (`0`: never) |
//! | `retry` | `3s` | reconnection time sent to clients, plus 0-1000 ms jitter each |
//! | `padding` | false | 2 KiB comment first, for old polyfills |
//! | `presence` | false | publish `join`/`leave` events when subscribers come and go |
//! | `shutdown_timeout` | `10s` | how long shutdown waits for streams to flush |
//! | `log` | `info` | log filter (tracing `EnvFilter` syntax) |
//! | `log_format` | `human` | `human` or `json` |
//!
//! ```
//! use clap::Parser;
//! use tidings_hub::Config;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     config: Config,
//! }
//!
//! let cli = Cli::parse_from(["tidings", "--listen", "127.0.0.1:0", "--max-topics", "4"]);
//! let settings = cli.config.resolve()?;
//! assert_eq!(settings.max_topics, 4);
//! assert_eq!(settings.max_body_bytes, 1024 * 1024);
//! # Ok::<(), tidings_hub::Error>(())
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tidings::server::SlowClientPolicy;

mod values;

pub use values::{EngineKind, HumanDuration, LogFormat, Secret, SlowClient};

use crate::auth::{Access, AuthSettings, JwtKey};
use crate::error::{Error, ErrorKind};
use crate::http::cors::normalize_origin;
use crate::tls::TlsFiles;

/// The hub's settings as given: every field optional, from flags, the environment, or a
/// TOML file. [`Config::resolve`] turns it into [`Settings`].
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Read settings from this TOML file (flags and environment variables win over it).
    #[arg(long, env = "TIDINGS_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TIDINGS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Serve HTTPS (and HTTP/2) with this PEM certificate chain, the server's certificate
    /// first (as Let's Encrypt's fullchain.pem); needs --tls-key. Both files are read
    /// again on SIGHUP [default: none: plain HTTP].
    #[arg(long, env = "TIDINGS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of the --tls-cert certificate [default: none].
    #[arg(long, env = "TIDINGS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Where events are stored [default: disk].
    #[arg(long, env = "TIDINGS_ENGINE", value_name = "ENGINE")]
    pub engine: Option<EngineKind>,

    /// Keep events in memory only (history is lost on restart): short for --engine memory,
    /// and wins over any engine given elsewhere (TIDINGS_ENGINE, the config file).
    #[arg(long)]
    #[serde(skip)]
    pub memory: bool,

    /// Directory of the disk engine's database, created if missing [default: ./tidings-data].
    #[arg(long, env = "TIDINGS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The Redis engine's server [default: redis://127.0.0.1:6379].
    #[arg(long, env = "TIDINGS_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// The name of a hub family in Redis (its keys start with `{PREFIX}:`); hubs with the
    /// same server and prefix share topics and history [default: tidings].
    #[arg(long, env = "TIDINGS_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// Events kept per topic for replay [default: 1000].
    #[arg(long, env = "TIDINGS_HISTORY_MAX_EVENTS", value_name = "N")]
    pub history_max_events: Option<usize>,

    /// How long events are kept for replay; 0 for no age limit [default: 1h].
    #[arg(long, env = "TIDINGS_HISTORY_MAX_AGE", value_name = "DURATION")]
    pub history_max_age: Option<HumanDuration>,

    /// Bytes kept per topic for replay; 0 for no byte limit (disk engine) [default: none].
    #[arg(long, env = "TIDINGS_HISTORY_MAX_BYTES", value_name = "BYTES")]
    pub history_max_bytes: Option<u64>,

    /// Per-topic retention overrides, `[retention."chat/*"]` tables (TOML file only).
    #[arg(skip)]
    #[serde(default)]
    pub retention: BTreeMap<String, crate::engine::RetentionOverride>,

    /// A browser origin allowed to subscribe and publish cross-origin, exactly as the
    /// browser sends it (e.g. `https://app.example.com`); repeat for more [default: none].
    #[arg(
        long,
        env = "TIDINGS_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub cors_origin: Vec<String>,

    /// The secret (HS256, HS384, HS512) that tokens are checked with; turns on tokens for
    /// publishing. Prefer the environment or the config file to the command line, where
    /// other users of the machine can see it [default: none].
    #[arg(
        long,
        env = "TIDINGS_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<Secret>,

    /// A PEM file with the RSA, EC (P-256, P-384) or Ed25519 public key that tokens are
    /// checked with; turns on tokens for publishing [default: none].
    #[arg(long, env = "TIDINGS_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// When set, a token's `aud` claim must name this audience [default: none].
    #[arg(long, env = "TIDINGS_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Who may publish: `open` (anyone who can reach the hub) or `token` (a token whose
    /// `tidings.publish` claim grants the topics) [default: token when a key is set, else open].
    #[arg(long, env = "TIDINGS_PUBLISH_AUTH", value_name = "ACCESS")]
    pub publish_auth: Option<Access>,

    /// Who may subscribe and read history: `open` or `token` (a token whose
    /// `tidings.subscribe` claim grants the topics) [default: open].
    #[arg(long, env = "TIDINGS_SUBSCRIBE_AUTH", value_name = "ACCESS")]
    pub subscribe_auth: Option<Access>,

    /// Largest publish request body in bytes; larger ones get 413 [default: 1048576].
    #[arg(long, env = "TIDINGS_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Most topics and patterns in one subscription or publish; more get 400 [default: 32].
    #[arg(long, env = "TIDINGS_MAX_TOPICS", value_name = "N")]
    pub max_topics: Option<usize>,

    /// Most open event streams; more get 503 with Retry-After [default: 10000].
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Bytes queued per connection before the slow-client policy acts; at least
    /// --max-body-bytes, so that one publish fits [default: twice --max-body-bytes].
    #[arg(long, env = "TIDINGS_MAX_QUEUE_BYTES", value_name = "BYTES")]
    pub max_queue_bytes: Option<usize>,

    /// What to do with a connection whose queue is full [default: disconnect].
    #[arg(long, env = "TIDINGS_SLOW_CLIENT", value_name = "POLICY")]
    pub slow_client: Option<SlowClient>,

    /// Send a keep-alive comment after this much quiet; 0 for never [default: 15s].
    #[arg(long, env = "TIDINGS_KEEP_ALIVE", value_name = "DURATION")]
    pub keep_alive: Option<HumanDuration>,

    /// Reconnection time sent to clients; each connection adds 0-1000 ms of jitter so a
    /// restart does not bring every client back at once [default: 3s].
    #[arg(long, env = "TIDINGS_RETRY", value_name = "DURATION")]
    pub retry: Option<HumanDuration>,

    /// Open every stream with a 2 KiB comment, for old EventSource polyfills [default: false].
    #[arg(long, env = "TIDINGS_PADDING", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub padding: Option<bool>,

    /// Publish `join` and `leave` events to a subscriber's topics when it connects and
    /// disconnects [default: false].
    #[arg(long, env = "TIDINGS_PRESENCE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub presence: Option<bool>,

    /// How long shutdown waits for open streams to flush before exiting [default: 10s].
    #[arg(long, env = "TIDINGS_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<HumanDuration>,

    /// Log filter, e.g. `info` or `tidings_hub=debug` [default: info].
    #[arg(long, env = "TIDINGS_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log format [default: human].
    #[arg(long, env = "TIDINGS_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The resolved settings the hub runs with. Build it with [`Config::resolve`], or start
/// from [`Settings::default`] when embedding the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve HTTPS with these files (`None`: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// Where events are stored.
    pub engine: EngineKind,
    /// The disk engine's directory.
    pub data_dir: PathBuf,
    /// The Redis engine's server.
    pub redis_url: String,
    /// The Redis engine's hub family: its keys start with `{redis_prefix}:`.
    pub redis_prefix: String,
    /// Events kept per topic.
    pub history_max_events: usize,
    /// How long events are kept (`None`: no age limit).
    pub history_max_age: Option<Duration>,
    /// Bytes kept per topic (`None`: no byte limit; disk engine).
    pub history_max_bytes: Option<u64>,
    /// Per-topic retention overrides by topic or pattern (disk engine).
    pub retention: BTreeMap<String, crate::engine::RetentionOverride>,
    /// Allowed browser origins (exact, with credentials). Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Who may publish and subscribe, and the key tokens are checked with.
    pub auth: AuthSettings,
    /// Largest publish request body, in bytes.
    pub max_body_bytes: usize,
    /// Most topics and patterns in one subscription (and one publish).
    pub max_topics: usize,
    /// Most open event streams.
    pub max_connections: usize,
    /// Bytes queued per connection before the slow-client policy acts.
    pub max_queue_bytes: usize,
    /// What happens to a connection whose queue is full.
    pub slow_client: SlowClientPolicy,
    /// Quiet period before a keep-alive comment (`None`: never).
    pub keep_alive: Option<Duration>,
    /// Base reconnection time sent to clients (each adds 0-1000 ms of jitter).
    pub retry: Duration,
    /// Open streams with a 2 KiB comment.
    pub padding: bool,
    /// Publish `join`/`leave` events.
    pub presence: bool,
    /// How long shutdown waits for streams to flush.
    pub shutdown_timeout: Duration,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for Settings {
    /// The defaults of every setting, except that the engine is `memory`: a hub embedded
    /// in a program (or a test) writes nothing to disk unless asked. `tidings serve`
    /// ([`Config::resolve`]) defaults to the `disk` engine in `./tidings-data`.
    fn default() -> Settings {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            engine: EngineKind::Memory,
            data_dir: PathBuf::from("./tidings-data"),
            redis_url: crate::engine::DEFAULT_REDIS_URL.to_owned(),
            redis_prefix: crate::engine::DEFAULT_REDIS_PREFIX.to_owned(),
            history_max_events: crate::engine::DEFAULT_MAX_EVENTS_PER_TOPIC,
            history_max_age: Some(crate::engine::DEFAULT_MAX_AGE),
            history_max_bytes: None,
            retention: BTreeMap::new(),
            cors_origins: Vec::new(),
            auth: AuthSettings::default(),
            max_body_bytes: 1024 * 1024,
            max_topics: 32,
            max_connections: 10_000,
            max_queue_bytes: 2 * 1024 * 1024,
            slow_client: SlowClientPolicy::Disconnect,
            keep_alive: Some(tidings::server::DEFAULT_KEEP_ALIVE),
            retry: tidings::server::DEFAULT_RETRY,
            padding: false,
            presence: false,
            shutdown_timeout: Duration::from_secs(10),
            log: "info".to_owned(),
            log_format: LogFormat::Human,
        }
    }
}

impl Config {
    /// Reads the TOML file named by `config` (if any) and layers flags and environment
    /// over it, then defaults under both.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the file cannot be read or parsed (unknown keys are
    /// errors, so a typo is never silently ignored), or a value is out of range.
    pub fn resolve(&self) -> Result<Settings, Error> {
        let file = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        let d = Settings::default();
        let duration_or = |a: Option<HumanDuration>,
                           b: Option<HumanDuration>,
                           def: Option<Duration>| match a.or(b) {
            Some(HumanDuration(Duration::ZERO)) => None,
            Some(HumanDuration(x)) => Some(x),
            None => def,
        };
        let key = match (
            self.jwt_secret.clone().or(file.jwt_secret),
            self.jwt_public_key.clone().or(file.jwt_public_key),
        ) {
            (Some(_), Some(_)) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "both jwt_secret and jwt_public_key are set; tokens are checked with one key, so set one of them",
                ))
            }
            (Some(secret), None) => Some(JwtKey::Secret(secret.0)),
            (None, Some(path)) => Some(JwtKey::PublicKeyFile(path)),
            (None, None) => None,
        };
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(Error::new(
                ErrorKind::Config,
                "tls_cert is set but tls_key is not: HTTPS needs the certificate's private key too",
            )),
            (None, Some(_)) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "tls_key is set but tls_cert is not: HTTPS needs the certificate chain too",
                ))
            }
        };
        let max_body_bytes = self
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(d.max_body_bytes);
        let settings = Settings {
            listen: self.listen.or(file.listen).unwrap_or(d.listen),
            tls,
            engine: if self.memory {
                EngineKind::Memory
            } else {
                self.engine.or(file.engine).unwrap_or_default()
            },
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            redis_url: self
                .redis_url
                .clone()
                .or(file.redis_url)
                .unwrap_or(d.redis_url),
            redis_prefix: self
                .redis_prefix
                .clone()
                .or(file.redis_prefix)
                .unwrap_or(d.redis_prefix),
            history_max_events: self
                .history_max_events
                .or(file.history_max_events)
                .unwrap_or(d.history_max_events),
            history_max_age: duration_or(
                self.history_max_age,
                file.history_max_age,
                d.history_max_age,
            ),
            history_max_bytes: self
                .history_max_bytes
                .or(file.history_max_bytes)
                .filter(|&bytes| bytes > 0),
            retention: file.retention,
            cors_origins: if self.cors_origin.is_empty() {
                file.cors_origin
            } else {
                self.cors_origin.clone()
            }
            .iter()
            .map(|origin| normalize_origin(origin))
            .collect(),
            auth: AuthSettings {
                publish: self
                    .publish_auth
                    .or(file.publish_auth)
                    .unwrap_or(if key.is_some() {
                        Access::Token
                    } else {
                        Access::Open
                    }),
                subscribe: self
                    .subscribe_auth
                    .or(file.subscribe_auth)
                    .unwrap_or(Access::Open),
                audience: self.jwt_audience.clone().or(file.jwt_audience),
                key,
            },
            max_body_bytes,
            max_topics: self.max_topics.or(file.max_topics).unwrap_or(d.max_topics),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            // One publish (up to max_body_bytes) must fit a live subscriber's queue with
            // room to spare, or a single large publish, or a batch that reaches a
            // subscriber faster than it can read, sets off the slow-client policy on
            // subscribers that keep up. Queued events are shared, not copied.
            max_queue_bytes: self
                .max_queue_bytes
                .or(file.max_queue_bytes)
                .unwrap_or(max_body_bytes.saturating_mul(2)),
            slow_client: self
                .slow_client
                .or(file.slow_client)
                .map_or(d.slow_client, SlowClientPolicy::from),
            keep_alive: duration_or(self.keep_alive, file.keep_alive, d.keep_alive),
            retry: self.retry.or(file.retry).map_or(d.retry, |r| r.0),
            padding: self.padding.or(file.padding).unwrap_or(d.padding),
            presence: self.presence.or(file.presence).unwrap_or(d.presence),
            shutdown_timeout: self
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .map_or(d.shutdown_timeout, |t| t.0),
            log: self.log.clone().or(file.log).unwrap_or(d.log),
            log_format: self.log_format.or(file.log_format).unwrap_or(d.log_format),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Parses a TOML file of settings (the keys are the setting names above).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the file cannot be read or is not valid.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("cannot read config file {}", path.display()),
                e,
            )
        })?;
        Config::from_toml(&text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("config file {}: {e}", path.display()),
            )
        })
    }

    /// Parses settings from TOML text.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the text is not valid TOML or has unknown keys.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        toml::from_str(text).map_err(|e| Error::new(ErrorKind::Config, toml_error(text, &e)))
    }
}

/// A TOML error as people read it: where (line and column) and what, without the
/// excerpt of the file that `toml` would show, which could hold a secret (`jwt_secret`,
/// or a misspelling of it) that would end up in a service's logs.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    match error.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", error.message())
        }
        None => error.message().to_owned(),
    }
}

impl Settings {
    /// Checks values that flags and files cannot rule out by type.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the setting that is out of range.
    pub fn validate(&self) -> Result<(), Error> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let at_most_a_day = [
            ("retry", Some(self.retry)),
            ("keep_alive", self.keep_alive),
            ("shutdown_timeout", Some(self.shutdown_timeout)),
        ];
        for (name, value) in at_most_a_day {
            if value.is_some_and(|v| v > DAY) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{name} must be at most a day (24h)"),
                ));
            }
        }
        let at_least_one = [
            ("history_max_events", self.history_max_events),
            ("max_body_bytes", self.max_body_bytes),
            ("max_topics", self.max_topics),
            ("max_connections", self.max_connections),
            ("max_queue_bytes", self.max_queue_bytes),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{name} must be at least 1"),
                ));
            }
        }
        for origin in &self.cors_origins {
            check_origin(origin)?;
        }
        self.auth.validate()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "data_dir is empty; name a directory, e.g. ./tidings-data",
            ));
        }
        crate::engine::DiskOptions::from_settings(self)?;
        if self.engine == EngineKind::Redis {
            crate::engine::RedisOptions::from_settings(self)?;
        }
        Ok(())
    }
}

/// An origin is `http(s)://host[:port]`, exactly as a browser sends it in `Origin`.
fn check_origin(origin: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Error::new(
            ErrorKind::Config,
            format!("cors_origin {origin:?} {why}; write it as the browser sends it, e.g. https://app.example.com or http://localhost:3000"),
        )
    };
    if origin == "*" {
        return Err(bad("is a wildcard, which browsers refuse with credentials"));
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(bad("has no scheme"));
    };
    if scheme.is_empty() || rest.is_empty() {
        return Err(bad("has no scheme or host"));
    }
    if !matches!(scheme, "http" | "https") {
        return Err(bad("is not http:// or https://"));
    }
    if rest.contains('/') {
        return Err(bad("has a path (or a trailing `/`)"));
    }
    if let Some(c) = rest
        .chars()
        .find(|c| matches!(c, '?' | '#' | '@') || c.is_whitespace())
    {
        return Err(bad(&format!(
            "holds {c:?}: an origin is only a scheme, a host and a port"
        )));
    }
    let (host, port) = match rest.rsplit_once(':').filter(|(_, p)| !p.contains(']')) {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(bad("has an invalid port"));
        }
    }
    if origin != normalize_origin(origin) {
        return Err(bad(&format!(
            "is not as a browser sends it ({:?})",
            normalize_origin(origin)
        )));
    }
    if http::HeaderValue::from_str(origin).is_err() {
        return Err(bad("is not a valid header value"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
