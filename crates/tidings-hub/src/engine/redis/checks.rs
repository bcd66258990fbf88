//! What the Redis engine checks before it serves: the server (version, role, mode,
//! eviction policy), that its user may run every command the scripts run, and how the
//! server may be named in messages.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;

use tidings::EventId;

use super::Store;
use crate::engine::NewEvent;
use crate::error::{Error, ErrorKind};
use crate::topics::{Topic, TopicFilter};

/// Refuses a server the scripts cannot run on, with a message that says why.
pub(super) async fn check_server(
    conn: &mut ConnectionManager,
    shown_url: &str,
) -> Result<(), Error> {
    let info: String = redis::cmd("INFO").query_async(conn).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Engine,
            format!("Redis at {shown_url} did not answer INFO"),
            e,
        )
    })?;
    let field = |name: &str| info_field(&info, name).to_owned();
    let version = field("redis_version");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 2) {
        return Err(Error::new(
            ErrorKind::Engine,
            format!(
                "Redis at {shown_url} is version {version:?}; the redis engine needs 6.2 or later"
            ),
        ));
    }
    let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    // CONFIG may be renamed away (managed Redis); then nothing can be said.
    if let Some(policy) = policy.ok().and_then(|p| p.into_iter().nth(1)) {
        if policy.starts_with("allkeys-") {
            tracing::warn!(url = %shown_url, %policy, "Redis may evict any key when it is full, and an evicted stream is history lost without a gap event; set maxmemory-policy noeviction (then a full Redis refuses publishes with 503)");
        }
    }
    if is_replica(&info) {
        return Err(Error::new(
            ErrorKind::Engine,
            format!("Redis at {shown_url} is a replica (of {}:{}); point --redis-url at the primary: a replica refuses writes, or takes writes no other hub sees", field("master_host"), field("master_port")),
        ));
    }
    if field("redis_mode") == "cluster" {
        return Err(Error::new(
            ErrorKind::Engine,
            format!("Redis at {shown_url} runs in cluster mode; the redis engine needs a single server (with replicas if you like)"),
        ));
    }
    Ok(())
}

/// The value of `name` in an `INFO` answer (`name:value` lines), or "" when absent.
fn info_field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map_or("", str::trim)
}

/// Whether an `INFO` answer (all of it, or its replication section) is a replica's.
pub(super) fn is_replica(info: &str) -> bool {
    info_field(info, "role") == "slave"
}

impl Store {
    /// The same store under keys of its own (`{prefix}:probe:`), keeping two events per
    /// topic for 1 ms: for [`Store::probe`].
    fn for_probe(&self) -> Store {
        Store {
            conn: self.conn.clone(),
            shown_url: self.shown_url.clone(),
            instance: self.instance,
            appends: std::sync::atomic::AtomicU64::new(0),
            keys: format!("{}probe:", self.keys),
            max_events_per_topic: 2,
            max_age_ms: 1,
            scripts: self.scripts.clone(),
            tail_trouble: std::sync::Mutex::new(None),
        }
    }

    /// Runs every command of the scripts once, on keys of their own that are removed
    /// after: a Redis user not allowed one of them (an ACL) would otherwise get a hub
    /// that starts, says it is ready, and fails its first publish, or the first that
    /// trims.
    pub(super) async fn probe(&self) -> Result<(), Error> {
        let probe = self.for_probe();
        let event = NewEvent {
            topics: vec![Topic::new("probe/x")?],
            event_type: None,
            data: String::new(),
            retry: None,
        };
        let mut outcome = Ok(());
        for _ in 0..3 {
            // The third trims the first by count, then the second (3 ms old) by age.
            let token = probe.append_token();
            outcome = outcome.and(
                probe
                    .append(&token, std::slice::from_ref(&event))
                    .await
                    .map(drop),
            );
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let outcome = outcome
            .and(
                probe
                    .read_after(&TopicFilter::all(), EventId::ZERO, 10)
                    .await
                    .map(drop),
            )
            .and(
                probe
                    .read_after(&TopicFilter::parse(["probe/*"])?, EventId::ZERO, 10)
                    .await
                    .map(drop),
            )
            .and(probe.record_lost(EventId::new(1, 0)).await)
            .and(
                probe
                    .retried("list topics", |mut conn| {
                        let probe = &probe;
                        async move {
                            probe
                                .scripts
                                .topics
                                .arg(&probe.keys)
                                .arg(1)
                                .arg(1)
                                .invoke_async::<Value>(&mut conn)
                                .await
                        }
                    })
                    .await
                    .map(drop),
            );
        let keys = probe.keys.clone();
        let mut unlink = redis::cmd("UNLINK");
        for name in [
            "id",
            "origin",
            "log",
            "topic:probe/x",
            "names",
            "last",
            "published",
            "trimmed",
        ] {
            unlink.arg(format!("{keys}{name}"));
        }
        for n in 0..3 {
            unlink.arg(format!("{keys}append:{:016x}-{n}", probe.instance));
        }
        // Best effort: a user without UNLINK leaves a few hundred bytes behind.
        let mut conn = self.conn.clone();
        let _: Result<(), _> = unlink.query_async(&mut conn).await;
        outcome
    }
}

/// The server a connection info names, as it may be shown in logs and errors: scheme,
/// host and port (or socket path) and database, never a user name, password or query.
pub(super) fn describe(info: &redis::ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}/{db}"),
        redis::ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}/{db}"),
        redis::ConnectionAddr::Unix(path) => format!("redis+unix://{}?db={db}", path.display()),
        _ => format!("Redis database {db}"),
    }
}
