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
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::broadcast;

use tidings::EventId;

use super::reply::{array, parse_entry, parse_id};
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
                Ok(reply) => pass_on(reply, &live, &mut last).await,
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

/// Sends the entries of one `XREAD` answer to the live feed, with
/// [`LiveEvent::Skipped`] before an entry whose predecessor the tail never passed on.
pub(super) async fn pass_on(
    reply: Value,
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
            let prev = match prev.as_deref() {
                Some("") | None => None,
                Some(p) => Some(parse_id(p)?),
            };
            // No receiver (no fan-out running) is not an error: the events are stored.
            if prev != Some(*last) {
                tracing::warn!(after = %last, next = %event.id, "the Redis log lost entries before this hub read them; the fan-out reads them from the topics");
                let _ = live.send(LiveEvent::Skipped);
            }
            *last = event.id;
            let _ = live.send(LiveEvent::Stored(Arc::new(event)));
        }
    }
    Ok(())
}
