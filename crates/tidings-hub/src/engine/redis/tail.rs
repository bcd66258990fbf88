//! The live feed of the Redis engine: one task per hub that reads the log stream with
//! `XREAD BLOCK` from the newest id it has passed on, and sends what it reads to the
//! fan-out, in id order.
//!
//! Every log entry names the id before it (`p`). When an entry's `p` is not the id the
//! tail passed on last, entries were trimmed from the log before this hub read them (it
//! could not reach Redis for a long time, the log was cut short, or the data was wiped):
//! the tail sends [`LiveEvent::Skipped`] before that entry, and the fan-out reads what it
//! missed from the topics' streams, as after a lag. If the topics no longer hold it
//! either, the fan-out ends every stream, and each client's resume reports the gap.
//!
//! When Redis cannot be reached, the tail retries with a growing pause (up to 5 s) and
//! goes on from where it stopped, so no event is skipped across an outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::broadcast;

use tidings::EventId;

use super::reply::{array, parse_entry};
use super::Store;
use crate::engine::LiveEvent;

/// How long one `XREAD` waits for new entries before it asks again.
const BLOCK: Duration = Duration::from_secs(1);
/// At most this many entries per `XREAD`.
const BATCH: usize = 1024;
/// The longest pause between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Tails the log of `store` from `last` (the engine's head when it started) until the
/// task is aborted.
pub(super) async fn run(
    client: redis::Client,
    store: Arc<Store>,
    live: broadcast::Sender<LiveEvent>,
    mut last: EventId,
) {
    let log = format!("{}log", store.keys);
    let mut trouble = Trouble::new(&store);
    loop {
        let connected =
            ConnectionManager::new_with_config(client.clone(), super::manager_config()).await;
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) => {
                trouble
                    .wait("cannot reach Redis; live events wait until it is back", &e)
                    .await;
                continue;
            }
        };
        loop {
            let reply: Result<Value, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&log)
                .arg(last.to_string())
                .query_async(&mut conn)
                .await;
            let outcome = match reply {
                Ok(reply) => pass_on(reply, &store, &live, &mut last).await,
                Err(e) => {
                    trouble
                        .wait("cannot read the Redis log; retrying", &e)
                        .await;
                    break;
                }
            };
            match outcome {
                Ok(()) => trouble.over(),
                Err(e) => {
                    trouble
                        .wait("cannot pass on the Redis log; retrying", &e)
                        .await
                }
            }
        }
    }
}

/// A run of failures, with a pause growing from 100 ms to [`MAX_BACKOFF`] between
/// attempts. A single failure is routine (Redis closed an idle connection, a restart; the
/// next attempt reconnects); from the second in a row it is logged, again every minute
/// while it lasts, and when it ends, and meanwhile the engine is not ready (`/readyz` says
/// why).
struct Trouble<'a> {
    store: &'a Store,
    failures: u32,
    since: Instant,
    logged: Instant,
    pause: Duration,
}

impl<'a> Trouble<'a> {
    const FIRST_PAUSE: Duration = Duration::from_millis(100);
    const LOG_EVERY: Duration = Duration::from_secs(60);

    fn new(store: &'a Store) -> Trouble<'a> {
        Trouble {
            store,
            failures: 0,
            since: Instant::now(),
            logged: Instant::now(),
            pause: Trouble::FIRST_PAUSE,
        }
    }

    async fn wait(&mut self, what: &str, error: impl std::fmt::Display) {
        let url = &self.store.shown_url;
        self.failures += 1;
        match self.failures {
            1 => {
                tracing::debug!(%url, %error, "{what}");
                self.since = Instant::now();
            }
            2 => {
                tracing::error!(%url, %error, "{what}");
                self.logged = Instant::now();
            }
            _ if self.logged.elapsed() >= Trouble::LOG_EVERY => {
                let for_s = self.since.elapsed().as_secs();
                tracing::error!(%url, %error, for_s, "{what} (still)");
                self.logged = Instant::now();
            }
            _ => {}
        }
        if self.failures >= 2 {
            *self
                .store
                .tail_trouble
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(format!("{what}: {error}"));
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_BACKOFF);
    }

    fn over(&mut self) {
        if self.failures >= 2 {
            tracing::info!(url = %self.store.shown_url, "the tail reads the Redis log again; live events flow");
            *self
                .store
                .tail_trouble
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        self.failures = 0;
        self.pause = Trouble::FIRST_PAUSE;
    }
}

/// Sends the entries of one `XREAD` answer to the live feed, with
/// [`LiveEvent::Skipped`] before an entry whose predecessor the tail never passed on.
///
/// An entry whose predecessor is *older* than what the tail passed on means Redis came
/// back with older data (a snapshot, or `appendfsync everysec` losing its last second):
/// the events in between are gone from Redis, though this hub delivered them. The tail
/// records that (`Store::record_lost`), so that a client resuming from before them gets a
/// gap event instead of silently missing them.
pub(super) async fn pass_on(
    reply: Value,
    store: &Store,
    live: &broadcast::Sender<LiveEvent>,
    last: &mut EventId,
) -> Result<(), crate::Error> {
    // [[log, [entry, ...]]], or nil when BLOCK ran out.
    for stream in array(reply)? {
        let mut parts = array(stream)?.into_iter();
        let entries = parts.nth(1).map(array).transpose()?.unwrap_or_default();
        for entry in entries {
            let (event, prev) = parse_entry(entry)?;
            if event.id <= *last {
                continue;
            }
            // No receiver (no fan-out running) is not an error: the events are stored.
            if prev != Some(*last) {
                if prev.is_none_or(|prev| prev < *last) {
                    tracing::error!(delivered_through = %last, next = %event.id, "Redis lost events this hub had delivered (it came back with older data); resumes from before them get a gap event");
                    store.record_lost(*last).await?;
                } else {
                    tracing::warn!(after = %last, next = %event.id, "the Redis log lost entries before this hub read them; the fan-out reads them from the topics");
                }
                let _ = live.send(LiveEvent::Skipped);
            }
            *last = event.id;
            let _ = live.send(LiveEvent::Stored(Arc::new(event)));
        }
    }
    Ok(())
}
