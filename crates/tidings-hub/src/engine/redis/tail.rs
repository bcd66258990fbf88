//! The live feed of the Redis engine: one task per hub that reads the log stream with
//! `XREAD BLOCK` from the newest id it has passed on, and sends what it reads to the
//! fan-out, in id order.
//!
//! Every log entry names the id before it (`p`). When an entry's `p` is not the id the
//! tail passed on last, entries were trimmed from the log before this hub read them (it
//! could not reach Redis for a long time, or the log was cut short): the tail reads the
//! missing events back from the topics' streams, in id order, before going on. What the
//! topics no longer hold either is gone; that is logged as an error, and a client that
//! resumes from before it gets a gap event.
//!
//! When Redis cannot be reached, the tail retries with a growing pause (up to 5 s) and
//! goes on from where it stopped, so no event is skipped across an outage.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::broadcast;

use tidings::EventId;

use super::{array, parse_entry, parse_id, Store};
use crate::engine::StoredEvent;
use crate::topics::TopicFilter;

/// How long one `XREAD` waits for new entries before it asks again.
const BLOCK: Duration = Duration::from_secs(1);
/// At most this many entries per `XREAD`.
const BATCH: usize = 1024;
/// The longest pause between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How many events one gap-filling read takes.
const FILL_PAGE: usize = 1024;

/// Tails the log of `store` from `last` (the engine's head when it started) until the
/// task is aborted.
pub(super) async fn run(
    client: redis::Client,
    store: Arc<Store>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    mut last: EventId,
) {
    let log = format!("{}log", store.prefix);
    let mut trouble = Trouble::new(&store.shown_url);
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
                        .wait("lost Redis while tailing its log; retrying", &e)
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

/// A run of failures: logged once when it starts and once when it ends, with a pause
/// growing from 100 ms to [`MAX_BACKOFF`] between attempts.
struct Trouble<'a> {
    url: &'a str,
    failing: bool,
    pause: Duration,
}

impl<'a> Trouble<'a> {
    const FIRST_PAUSE: Duration = Duration::from_millis(100);

    fn new(url: &'a str) -> Trouble<'a> {
        Trouble {
            url,
            failing: false,
            pause: Trouble::FIRST_PAUSE,
        }
    }

    async fn wait(&mut self, what: &str, error: impl std::fmt::Display) {
        if !self.failing {
            tracing::error!(url = %self.url, %error, "{what}");
            self.failing = true;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_BACKOFF);
    }

    fn over(&mut self) {
        if self.failing {
            tracing::info!(url = %self.url, "Redis answers again; live events flow");
            self.failing = false;
        }
        self.pause = Trouble::FIRST_PAUSE;
    }
}

/// Sends the entries of one `XREAD` answer to the live feed, after filling any gap before
/// them from the topics.
pub(super) async fn pass_on(
    reply: Value,
    store: &Store,
    live: &broadcast::Sender<Arc<StoredEvent>>,
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
            let prev = match prev.as_deref() {
                Some("") | None => None,
                Some(p) => Some(parse_id(p)?),
            };
            if prev != Some(*last) {
                fill_gap(store, live, last, event.id).await?;
            }
            *last = event.id;
            // No receiver (no fan-out running) is not an error: the event is stored.
            let _ = live.send(Arc::new(event));
        }
    }
    Ok(())
}

/// Passes on every stored event after `last` and before `until`, read from the topics.
async fn fill_gap(
    store: &Store,
    live: &broadcast::Sender<Arc<StoredEvent>>,
    last: &mut EventId,
    until: EventId,
) -> Result<(), crate::Error> {
    let all = TopicFilter::all();
    let mut reported = false;
    loop {
        let batch = store.read_after(&all, *last, FILL_PAGE).await?;
        if batch.complete_after > *last && !reported {
            tracing::error!(
                after = %last,
                trimmed_through = %batch.complete_after,
                "events were trimmed from Redis before this hub read them; clients resuming from before them get a gap event"
            );
            reported = true;
        }
        let mut reached = !batch.more;
        for event in batch.events {
            if event.id >= until {
                reached = true;
                break;
            }
            *last = event.id;
            let _ = live.send(event);
        }
        if reached {
            return Ok(());
        }
    }
}
