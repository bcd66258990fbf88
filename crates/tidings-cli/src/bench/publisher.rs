//! The publisher: one keep-alive HTTP/1.1 connection sending the rendered body template
//! `count` times at a fixed rate, each request answered before the next is sent, and
//! reconnecting when the server closes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::args::Template;
use super::http1::{read_head, refusal, Stream, Target};

/// What to publish, and how fast.
pub struct Publisher {
    /// Where to send.
    pub target: Target,
    /// The request method.
    pub method: String,
    /// The Content-Type of each body.
    pub content_type: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The body of each event.
    pub body: Template,
    /// Events per second; 0 means back to back.
    pub rate: f64,
    /// How many events.
    pub count: u64,
    /// How long one request may wait for its whole answer.
    pub timeout: Duration,
}

/// After this many requests in a row got no answer in time, the rest are not sent.
const GIVE_UP_AFTER_TIMEOUTS: usize = 3;

/// How publishing went; `published[seq]` is whether event `seq` was accepted (2xx).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per sequence number: accepted by the server.
    pub published: Vec<bool>,
    /// Why the requests that failed failed (one entry per failed request).
    pub failures: Vec<String>,
    /// When the first request was sent and the last answer came.
    pub span: Option<(Instant, Instant)>,
}

impl Publisher {
    /// Publishes every event, recording each one's outcome as it goes.
    pub async fn run(&self, outcome: Rc<RefCell<Outcome>>) {
        let start = Instant::now();
        let interval = (self.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.rate));
        let mut connection: Option<Stream> = None;
        let mut buf = Vec::new();
        outcome.borrow_mut().published = vec![false; self.count as usize];
        let mut timeouts_in_a_row = 0;
        for seq in 0..self.count {
            if timeouts_in_a_row == GIVE_UP_AFTER_TIMEOUTS {
                let left = self.count - seq;
                outcome.borrow_mut().failures.extend((0..left).map(|_| {
                    format!("not sent: {GIVE_UP_AFTER_TIMEOUTS} requests in a row got no answer")
                }));
                break;
            }
            if let Some(interval) = interval {
                tokio::time::sleep_until((start + interval.mul_f64(seq as f64)).into()).await;
            }
            let request = self.request(seq);
            let sent = self.send(&mut connection, &mut buf, &request);
            let result = match tokio::time::timeout(self.timeout, sent).await {
                Ok(result) => {
                    timeouts_in_a_row = 0;
                    result
                }
                Err(_) => {
                    timeouts_in_a_row += 1;
                    Err(format!("no answer within {} s", self.timeout.as_secs_f64()))
                }
            };
            let mut outcome = outcome.borrow_mut();
            match result {
                Ok(()) => outcome.published[seq as usize] = true,
                Err(reason) => {
                    connection = None;
                    outcome.failures.push(reason);
                }
            }
            let first = outcome.span.map_or(start, |(first, _)| first);
            outcome.span = Some((first, Instant::now()));
        }
    }

    fn request(&self, seq: u64) -> Vec<u8> {
        let body = self.body.render(seq);
        let mut request = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.method,
            self.target.path_and_query,
            self.target.authority,
            self.content_type,
            body.len()
        );
        for (name, value) in &self.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(&body);
        request
    }

    /// Sends one request on the open connection (opening one if needed) and reads the
    /// whole answer. A kept-alive connection that the server has closed meanwhile (servers
    /// close idle ones) fails before any byte of an answer: the request is sent once more,
    /// on a new connection, since the server cannot have taken it.
    async fn send(
        &self,
        connection: &mut Option<Stream>,
        buf: &mut Vec<u8>,
        request: &[u8],
    ) -> Result<(), String> {
        let reused = connection.is_some();
        match self.exchange(connection, buf, request).await {
            Err(Unanswered(_)) if reused => {
                *connection = None;
                self.exchange(connection, buf, request)
                    .await
                    .map_err(|Unanswered(reason)| reason)?
            }
            result => result.map_err(|Unanswered(reason)| reason)?,
        }
    }

    /// One request and its answer: `Err` only when the answer never started (the outer
    /// `Err` is a failure after it did, or an HTTP status that is not success).
    async fn exchange(
        &self,
        connection: &mut Option<Stream>,
        buf: &mut Vec<u8>,
        request: &[u8],
    ) -> Result<Result<(), String>, Unanswered> {
        let stream = match connection {
            Some(stream) => stream,
            None => connection.insert(
                self.target
                    .connect(None)
                    .await
                    .map_err(|e| Unanswered(format!("connect: {e}")))?,
            ),
        };
        let failed = |connection: &mut Option<Stream>, reason: String| {
            *connection = None;
            reason
        };
        if let Err(e) = stream.write_all(request).await {
            return Err(Unanswered(failed(connection, format!("sending: {e}"))));
        }
        buf.clear();
        let mut head = match read_head(stream, buf).await {
            Ok(head) => head,
            Err(reason) if buf.is_empty() => return Err(Unanswered(failed(connection, reason))),
            Err(reason) => return Ok(Err(failed(connection, reason))),
        };
        if !(200..300).contains(&head.status) {
            // A refusal: its reason, and no reuse of a connection left mid-answer.
            let reason = refusal(stream, &mut head, buf).await;
            *connection = None;
            return Ok(Err(reason));
        }
        let answer = async {
            let mut done = head.framing.decode(buf, |_| {})?;
            let mut chunk = [0u8; 4096];
            while !done {
                let n = stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("reading the answer: {e}"))?;
                if n == 0 {
                    done = true;
                    head.close = true;
                } else {
                    done = head.framing.decode(&chunk[..n], |_| {})?;
                }
            }
            Ok::<(), String>(())
        };
        if let Err(reason) = answer.await {
            return Ok(Err(failed(connection, reason)));
        }
        if head.close {
            *connection = None;
        }
        Ok(Ok(()))
    }
}

/// Why a request got no answer at all (see [`Publisher::send`]).
struct Unanswered(String);
