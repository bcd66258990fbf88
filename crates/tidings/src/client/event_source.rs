//! [`EventSource`]: the reconnect loop, as a stream of [`Item`]s.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hyper::body::Incoming;

use super::protocol::reconnect_delay;
use super::transport::{self, Attempt, HttpClient, Read};
use super::{Builder, Item, Options, ReadyState};
use crate::error::Error;
use crate::wire::Parser;

/// A connection to a `text/event-stream` URL that reconnects like a browser's
/// `EventSource`, read as a [`Stream`] of [`Item`]s.
///
/// Nothing happens until the stream is first polled (inside a tokio runtime); dropping it
/// closes the connection. See the [module docs](super) for the rules it follows.
///
/// ```
/// use tidings::client::EventSource;
/// use tidings::ErrorKind;
///
/// let error = EventSource::new("ftp://example.com/events").unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::InvalidRequest);
/// ```
pub struct EventSource {
    items: Pin<Box<dyn Stream<Item = Item> + Send>>,
}

impl EventSource {
    /// An event source for `url` with the default options.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest) when `url` is not
    /// an absolute `http` or `https` URL.
    pub fn new(url: &str) -> Result<EventSource, Error> {
        Builder::new(url).build()
    }

    /// A [`Builder`] to set headers, an initial last event id, timeouts and limits.
    pub fn builder(url: &str) -> Builder {
        Builder::new(url)
    }

    pub(crate) fn from_options(options: Options) -> Result<EventSource, Error> {
        let driver = Driver::new(options)?;
        let items = futures_util::stream::unfold(driver, |mut driver| async move {
            let item = driver.next_item().await?;
            Some((item, driver))
        });
        Ok(EventSource {
            items: Box::pin(items),
        })
    }
}

impl Stream for EventSource {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.items.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSource").finish_non_exhaustive()
    }
}

/// Where the reconnect loop is.
enum Phase {
    /// Not started: report `Connecting`, then connect.
    Start,
    /// Send the request now.
    Connect,
    /// Reading an open response.
    Streaming(Incoming),
    /// Waiting this long before connecting again.
    Waiting(Duration),
    /// Closed for good.
    Done,
}

/// The state behind an [`EventSource`]: one parser for the whole life of the source (it
/// keeps the committed last event id and the latest `retry:` across connections).
struct Driver {
    options: Options,
    client: HttpClient,
    parser: Parser,
    phase: Phase,
    /// Items decided but not yet handed out, oldest first.
    pending: VecDeque<Item>,
    /// Attempts since the last one that opened a stream: drives the backoff.
    failures: u32,
}

impl Driver {
    fn new(options: Options) -> Result<Driver, Error> {
        let client = transport::http_client(&options)?;
        let mut parser = Parser::with_max_event_size(options.max_event_size);
        parser.set_last_event_id(options.last_event_id.clone());
        Ok(Driver {
            options,
            client,
            parser,
            phase: Phase::Start,
            pending: VecDeque::new(),
            failures: 0,
        })
    }

    /// The next item, or `None` once the source is closed and everything was handed out.
    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Start => {
                    self.pending.push_back(Item::State(ReadyState::Connecting));
                    self.phase = Phase::Connect;
                }
                Phase::Connect => {
                    let attempt = transport::connect(
                        &self.client,
                        &self.options,
                        self.parser.last_event_id(),
                    )
                    .await;
                    match attempt {
                        Attempt::Open(body) => {
                            self.failures = 0;
                            self.pending.push_back(Item::State(ReadyState::Open));
                            self.phase = Phase::Streaming(body);
                        }
                        Attempt::Stop => self.close(None),
                        Attempt::Fatal(error) => self.close(Some(error)),
                        Attempt::Retry(error) => self.reconnect_later(Some(error)),
                    }
                }
                Phase::Streaming(mut body) => {
                    if let Some(event) = self.parser.next_event() {
                        self.phase = Phase::Streaming(body);
                        return Some(Item::Event(event));
                    }
                    match transport::read(&mut body, self.options.idle_timeout).await {
                        Read::Data(bytes) => match self.parser.feed(&bytes) {
                            Ok(()) => self.phase = Phase::Streaming(body),
                            Err(error) => {
                                // Events completed before the oversized one still count.
                                while let Some(event) = self.parser.next_event() {
                                    self.pending.push_back(Item::Event(event));
                                }
                                self.parser.end_of_stream();
                                self.close(Some(error));
                            }
                        },
                        Read::End => {
                            self.parser.end_of_stream();
                            self.reconnect_later(None);
                        }
                        Read::Failed(error) => {
                            self.parser.end_of_stream();
                            self.reconnect_later(Some(error));
                        }
                    }
                }
                Phase::Waiting(delay) => {
                    tokio::time::sleep(delay).await;
                    self.phase = Phase::Connect;
                }
                Phase::Done => return None,
            }
        }
    }

    /// Closes for good, reporting `error` first if there is one.
    fn close(&mut self, error: Option<Error>) {
        self.pending.extend(error.map(Item::Error));
        self.pending.push_back(Item::State(ReadyState::Closed));
        self.phase = Phase::Done;
    }

    /// The connection ended (cleanly when `error` is `None`): reconnect after the
    /// reconnection time, or close when reconnecting is off.
    fn reconnect_later(&mut self, error: Option<Error>) {
        if !self.options.reconnect {
            return self.close(error);
        }
        self.pending.extend(error.map(Item::Error));
        self.failures = self.failures.saturating_add(1);
        let retry = self.parser.retry().unwrap_or(self.options.retry);
        let delay = reconnect_delay(retry, self.failures, self.options.max_backoff, jitter());
        tracing::debug!(?delay, failures = self.failures, "reconnecting");
        self.pending.push_back(Item::State(ReadyState::Connecting));
        self.phase = Phase::Waiting(delay);
    }
}

/// A random number in `0.0..1.0` for the backoff's jitter. It needs no quality beyond
/// differing between clients and attempts, which the standard library's randomly keyed
/// hasher gives without another dependency.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    hasher.write_u32(nanos);
    // 53 random bits make an f64 in [0, 1) exactly.
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_unit_interval_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }
}
