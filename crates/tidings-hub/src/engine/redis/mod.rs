//! The Redis engine: several hubs share topics, ids and history through one Redis server.
//!
//! - **One id space for every hub.** Ids are assigned by a Lua script inside Redis from
//!   the Redis server's clock and the newest id stored, so ids from any hub are ordered
//!   with each other, and a client can resume on any hub with the id it last got from
//!   another.
//! - **Acknowledged means written to Redis.** [`Engine::append`] returns after the script
//!   that stores the events has run. How durable that is, is Redis's setting: with
//!   `appendonly yes` and `appendfsync always` every answered publish is on Redis's disk;
//!   with Redis's defaults a Redis crash can lose the last second or more.
//! - **Every hub delivers every event.** Each hub tails one stream (the *log*) with
//!   `XREAD BLOCK` and feeds what it reads to its fan-out, so an event published on one
//!   hub reaches the subscribers of all of them through the same path as a local one (see
//!   `tail.rs`). Each log entry names the entry before it, so a tail that was away longer
//!   than the log is kept sees the hole and says so on the feed ([`LiveEvent::Skipped`]);
//!   the fan-out then reads the missing events back from the topics.
//! - **History per topic**, one stream per topic, trimmed to `history_max_events` and
//!   `history_max_age` like the memory engine's, by the same script that appends (and by
//!   reads, for topics that no longer get events). A resume point reads one stream range
//!   per matching topic, in one atomic script, so the gap check and the read see the same
//!   snapshot.
//!
//! # Keys
//!
//! Every key starts with the prefix in braces and a colon (`{tidings}:` by default), so one
//! Redis can hold several independent hub families under different prefixes, and no
//! prefix's keys can be another's, whatever the two prefixes are (`a` and `a:topic` give
//! `{a}:topic:log` and `{a:topic}:log`). The braces are also Redis Cluster's hash tag, so
//! a family's keys would share one slot. The keys themselves (`id`, `origin`, `log`,
//! `topic:<topic>`, `last`, `published`, `trimmed`, `names`, `append:<token>`) are listed
//! with what they hold in `ENGINES.md` ("Keys"), the one list of them.
//!
//! Stream entries have the fields `t` (topics, newline-separated), `d` (data), `e` (type,
//! absent for `message`) and `r` (retry in ms, absent when none).
//!
//! Requirements: Redis 6.2 or later (exclusive stream ranges, `XTRIM MINID`), not in
//! cluster mode (the scripts do not declare the keys they touch), with `maxmemory-policy
//! noeviction` (an evicted key is history lost without a trace).

mod checks;
mod reply;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use tidings::EventId;

use super::{Engine, LiveEvent, NewEvent, ReadBatch, StoredEvent, TopicInfo};
use crate::error::{Error, ErrorKind};
use crate::topics::{Topic, TopicFilter, TopicPattern};
use checks::{check_server, describe};
use reply::{malformed, merge_topics, parse_id, stored_topic};

/// The Redis server the engine connects to when none is named.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The prefix of every key the engine writes, when none is named.
pub const DEFAULT_REDIS_PREFIX: &str = "tidings";

/// About how many entries the log keeps: how far behind a hub's tail can fall (e.g. while
/// it cannot reach Redis) and still catch up from the log alone.
const LOG_LENGTH: u64 = 100_000;
/// How many stored events the live feed holds for a slow fan-out before it lags.
const LIVE_FEED_CAPACITY: usize = 4096;
/// How long a command may take before it fails (a blocking tail read waits less).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

const COMMON: &str = include_str!("common.lua");

/// What the engine runs: the commands its user must be allowed, for messages.
const NEEDED_COMMANDS: &str = "EVALSHA, EVAL, INFO, XREAD and, in scripts, GET, SET, TYPE, \
    XADD, XLEN, XRANGE, XREVRANGE, XTRIM, HGET, HSET, HGETALL, HINCRBY, ZADD, ZRANGE and \
    ZRANGEBYLEX";

/// Where the Redis engine connects and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The server, e.g. `redis://127.0.0.1:6379/0` or `rediss://user:pass@host:6380`.
    pub url: String,
    /// The name of the hub family: every key the engine writes starts with `{prefix}:`.
    pub prefix: String,
    /// Events kept per topic (at least 1).
    pub max_events_per_topic: usize,
    /// How long events are kept (`None`: no age limit).
    pub max_age: Option<Duration>,
}

impl RedisOptions {
    /// The options the hub's settings give (`redis_url`, `redis_prefix` and the history
    /// limits), checked.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the URL is not a Redis URL or the prefix is empty or
    /// has spaces, control characters or braces.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<RedisOptions, Error> {
        let options = RedisOptions {
            url: settings.redis_url.clone(),
            prefix: settings.redis_prefix.clone(),
            max_events_per_topic: settings.history_max_events,
            max_age: settings.history_max_age,
        };
        options.check()?;
        Ok(options)
    }

    /// Checks the URL and the prefix, and returns the server as it may be shown.
    fn check(&self) -> Result<String, Error> {
        use redis::IntoConnectionInfo;
        let info = self.url.as_str().into_connection_info().map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                "redis_url is not a Redis URL; write it as redis://host:port/db, rediss://host for TLS, or redis://:password@host",
                e,
            )
        })?;
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!("redis_prefix {:?} must be non-empty, without spaces, control characters or braces (e.g. `tidings` or `myapp-events`)", self.prefix),
            ));
        }
        Ok(describe(&info))
    }
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions {
            url: DEFAULT_REDIS_URL.to_owned(),
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            max_events_per_topic: super::DEFAULT_MAX_EVENTS_PER_TOPIC,
            max_age: Some(super::DEFAULT_MAX_AGE),
        }
    }
}

/// Events in Redis, shared by every hub that uses the same server and prefix: one id
/// space, history per topic, and a tail of the shared log feeding each hub's fan-out (see
/// `ENGINES.md`).
///
/// ```no_run
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tidings_hub::engine::{RedisEngine, RedisOptions};
/// use tidings_hub::{Server, Settings};
///
/// // Two of these, on two machines, serve the same topics and history.
/// let engine = RedisEngine::connect(RedisOptions {
///     url: "redis://10.0.0.5:6379/0".into(),
///     ..RedisOptions::default()
/// })
/// .await?;
/// let settings = Settings { listen: "0.0.0.0:8080".parse().expect("address"), ..Settings::default() };
/// let server = Server::bind_with_engine(settings, Arc::new(engine)).await?;
/// server.run_until(std::future::pending::<()>()).await?;
/// # Ok::<(), tidings_hub::Error>(())
/// # }).unwrap();
/// ```
pub struct RedisEngine {
    store: Arc<Store>,
    live: broadcast::Sender<LiveEvent>,
    tail: JoinHandle<()>,
}

/// The connection and scripts, shared by the engine and its tail.
struct Store {
    conn: ConnectionManager,
    /// The server as it may be shown: no user name, password or query.
    shown_url: String,
    /// Tells this engine's appends from every other's (see [`Store::append_token`]).
    instance: u64,
    appends: std::sync::atomic::AtomicU64,
    /// What every key starts with: `{prefix}:`.
    keys: String,
    max_events_per_topic: usize,
    max_age_ms: u64,
    scripts: Scripts,
    /// What keeps the tail from reading the log, while something does (for `/readyz`).
    tail_trouble: std::sync::Mutex<Option<String>>,
}

/// The Lua scripts, each with the shared helpers (`common.lua`) in front of it.
#[derive(Clone)]
struct Scripts {
    start: Script,
    append: Script,
    read: Script,
    topics: Script,
    lost: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            start: script(include_str!("start.lua")),
            append: script(include_str!("append.lua")),
            read: script(include_str!("read.lua")),
            topics: script(include_str!("topics.lua")),
            lost: script(include_str!("lost.lua")),
        }
    }
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("url", &self.store.shown_url)
            .field("keys", &self.store.keys)
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects to the Redis server `options.url` names, checks that it can run the
    /// engine, and starts tailing its log.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the URL is not a Redis URL or the prefix is not usable
    /// (see [`RedisOptions::from_settings`]); [`ErrorKind::Engine`] when
    /// the server cannot be reached, refuses the connection (e.g. a wrong password) or a
    /// command the engine needs (an ACL), is a replica, is older than 6.2 or runs in
    /// cluster mode.
    pub async fn connect(options: RedisOptions) -> Result<RedisEngine, Error> {
        let shown_url = options.check()?;
        let client = redis::Client::open(options.url.as_str()).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("redis_url for {shown_url} cannot be used"),
                e,
            )
        })?;
        let refused = |e: redis::RedisError| {
            let message = if e.to_string().contains("DB index is out of range") {
                format!("Redis at {shown_url} has no such database; use a lower number in --redis-url (Redis has 16, 0-15, unless its `databases` setting says otherwise)")
            } else if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() {
                format!(
                    "cannot reach Redis at {shown_url}; start it, or name another with --redis-url"
                )
            } else {
                format!("Redis at {shown_url} refused the redis engine; its user must be allowed {NEEDED_COMMANDS}")
            };
            Error::with_source(ErrorKind::Engine, message, e)
        };
        let mut conn = ConnectionManager::new_with_config(client.clone(), manager_config())
            .await
            .map_err(refused)?;
        check_server(&mut conn, &shown_url).await?;
        let scripts = Scripts::new();
        let keys = format!("{{{}}}:", options.prefix);
        let head: String = scripts
            .start
            .arg(&keys)
            .invoke_async(&mut conn)
            .await
            .map_err(refused)?;
        let head = parse_id(&head)?;
        // The tail's command, tried once now: a user that may not run it would otherwise
        // start a hub that stores events and delivers none.
        let _: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(format!("{keys}log"))
            .arg(head.to_string())
            .query_async(&mut conn)
            .await
            .map_err(refused)?;
        tracing::info!(url = %shown_url, prefix = %options.prefix, %head, "redis engine connected");

        let store = Arc::new(Store {
            conn,
            shown_url,
            instance: crate::hub::random_u64(),
            appends: std::sync::atomic::AtomicU64::new(0),
            keys,
            max_events_per_topic: options.max_events_per_topic.max(1),
            max_age_ms: options
                .max_age
                .map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
            scripts,
            tail_trouble: std::sync::Mutex::new(None),
        });
        store.probe().await.map_err(|e| {
            Error::with_source(
                ErrorKind::Engine,
                format!("Redis at {} refused a command the redis engine needs; its user must be allowed {NEEDED_COMMANDS}", store.shown_url),
                e,
            )
        })?;
        let (live, _) = broadcast::channel(LIVE_FEED_CAPACITY);
        let tail = tokio::spawn(tail::run(client, Arc::clone(&store), live.clone(), head));
        Ok(RedisEngine { store, live, tail })
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
}

impl Store {
    /// An engine error that says what failed, without naming the server (the message
    /// reaches HTTP clients; logs name it).
    fn engine_error(&self, what: &str, e: redis::RedisError) -> Error {
        let message = if e.is_timeout() {
            format!("Redis did not answer in time ({} s) to {what}; if that was a write, it may still be done", RESPONSE_TIMEOUT.as_secs())
        } else {
            format!("Redis failed to {what}")
        };
        Error::with_source(ErrorKind::Engine, message, e)
    }

    /// Runs `op` on the shared connection and, when the connection turns out to have
    /// dropped (Redis closed it while idle, a `CLIENT KILL`, a Redis restart), once more
    /// on the connection the manager makes anew, so such a drop costs no request. Appends
    /// are safe to run twice: their token makes a second run return the first one's ids.
    async fn retried<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Error>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match op(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() => {
                tracing::debug!(error = %e, "the Redis connection dropped; trying once more");
                op(self.conn.clone()).await
            }
            other => other,
        };
        result.map_err(|e| self.engine_error(what, e))
    }

    /// Records that the events up to `through` were lost from Redis: reads report
    /// everything at or before it as possibly trimmed (the origin is raised to it).
    async fn record_lost(&self, through: EventId) -> Result<(), Error> {
        self.retried("record lost events", |mut conn| async move {
            self.scripts
                .lost
                .arg(&self.keys)
                .arg(through.to_string())
                .invoke_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// A token no other append of any hub has: this engine's random instance number and
    /// a count.
    fn append_token(&self) -> String {
        let n = self
            .appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{:016x}-{n}", self.instance)
    }

    /// Runs the append script for `events` with `token` (see [`Store::append_token`]) and
    /// returns their ids, in order.
    async fn append(&self, token: &str, events: &[NewEvent]) -> Result<Vec<String>, Error> {
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .arg(&self.keys)
            .arg(token)
            .arg(self.max_events_per_topic)
            .arg(self.max_age_ms)
            .arg(LOG_LENGTH);
        for event in events {
            let topics: Vec<&str> = event.topics.iter().map(Topic::as_str).collect();
            let event_type = event.event_type.as_ref();
            invocation
                .arg(topics.join("\n"))
                .arg(&event.data)
                .arg(event_type.map_or(String::new(), |t| format!("={t}")))
                .arg(
                    event
                        .retry
                        .map_or(String::new(), |r| r.as_millis().to_string()),
                );
        }
        let ids: Vec<String> = self
            .retried("store events", |mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if ids.len() != events.len() {
            return Err(malformed("append"));
        }
        Ok(ids)
    }

    async fn read_after(
        &self,
        filter: &TopicFilter,
        after: EventId,
        limit: usize,
    ) -> Result<ReadBatch, Error> {
        let limit = limit.max(1);
        if after == EventId::new(u64::MAX, u64::MAX) {
            // Nothing can follow the last possible id (and Redis refuses to look).
            return Ok(ReadBatch::default());
        }
        let mut invocation = self.scripts.read.prepare_invoke();
        invocation
            .arg(&self.keys)
            .arg(after.to_string())
            .arg(limit + 1)
            .arg(self.max_events_per_topic)
            .arg(self.max_age_ms);
        for pattern in filter.patterns() {
            match pattern {
                TopicPattern::Exact(topic) => invocation.arg(format!("={topic}")),
                TopicPattern::Prefix(prefix) => invocation.arg(format!("*{prefix}")),
            };
        }
        let reply: Value = self
            .retried("read events", |mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        merge_topics(reply, limit)
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<StoredEvent>>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self
            .store
            .append(&self.store.append_token(), &events)
            .await?;
        ids.iter()
            .zip(events)
            .map(|(id, event)| Ok(Arc::new(StoredEvent::new(parse_id(id)?, event))))
            .collect()
    }

    async fn read_after(
        &self,
        filter: &TopicFilter,
        after: EventId,
        limit: usize,
    ) -> Result<ReadBatch, Error> {
        self.store.read_after(filter, after, limit).await
    }

    async fn head(&self) -> Result<EventId, Error> {
        let store = &*self.store;
        let head: String = store
            .retried("tell the newest id", |mut conn| async move {
                store
                    .scripts
                    .start
                    .arg(&store.keys)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        parse_id(&head)
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, Error> {
        let store = &*self.store;
        let rows: Vec<(String, String, u64, u64)> = store
            .retried("list topics", |mut conn| async move {
                store
                    .scripts
                    .topics
                    .arg(&store.keys)
                    .arg(store.max_events_per_topic)
                    .arg(store.max_age_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let mut topics = rows
            .into_iter()
            .map(|(topic, last, published, retained)| {
                Ok(TopicInfo {
                    topic: stored_topic(&topic)?,
                    last_id: Some(parse_id(&last)?),
                    retained,
                    published,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(topics)
    }

    fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }

    async fn ready(&self) -> Result<(), Error> {
        let store = &*self.store;
        let replication: String = store
            .retried("answer INFO", |mut conn| async move {
                redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if checks::is_replica(&replication) {
            return Err(Error::new(
                ErrorKind::Engine,
                "Redis is a replica now; it refuses writes (point the hubs at the primary)",
            ));
        }
        let trouble = store
            .tail_trouble
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match trouble {
            Some(why) => Err(Error::new(
                ErrorKind::Engine,
                format!("live events from Redis are not flowing: {why}"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;
