//! Threads pushing to one session while its client reads in fits (see the crate docs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use fastrand::Rng;
use tidings::server::{
    PushOutcome, Session, SessionConfig, SharedBytes, SlowClientPolicy, GAP_EVENT_TYPE,
};
use tidings::wire::{MessageEvent, Parser};
use tidings::Event;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{dechunk, open_session_at, serve_sessions, VIA_HYPER};
use crate::{pick, seeds, GUARD};

/// Threads pushing to one session at once.
const PUSHERS: usize = 3;

/// Where a stream is served (see the module docs).
#[derive(Debug, Clone, Copy)]
enum Path {
    LeanDirect,
    LeanQueued,
    Hyper,
}

const PATHS: [Path; 3] = [Path::LeanDirect, Path::LeanQueued, Path::Hyper];

impl Path {
    fn direct_writes(self) -> bool {
        matches!(self, Path::LeanDirect)
    }

    fn route(self) -> &'static str {
        match self {
            Path::LeanDirect | Path::LeanQueued => "/events",
            Path::Hyper => VIA_HYPER,
        }
    }
}

/// Keep-alive comments as often as the timer allows, so that they race the pushes; no
/// `retry:`; a queue that never fills.
pub(crate) fn roomy(config: SessionConfig) -> SessionConfig {
    config
        .keep_alive(Some(Duration::from_millis(1)))
        .retry(None)
        .max_queue_bytes(256 << 20)
}

/// As [`roomy`], with a queue that a client that pauses overflows.
fn tight(config: SessionConfig) -> SessionConfig {
    roomy(config).max_queue_bytes(6 * 1024)
}

/// A session on `path` and its client, a raw socket whose receive buffer the seed picks.
async fn session_and_client(
    path: Path,
    configure: fn(SessionConfig) -> SessionConfig,
    rng: &mut Rng,
) -> (Session, TcpStream) {
    let (addr, mut sessions) = serve_sessions(path.direct_writes(), configure).await;
    let socket = TcpSocket::new_v4().expect("socket");
    // Not below 4 KiB: with a window that small against loopback's 64 KiB segments, TCP
    // itself can fall into sending a few hundred bytes per delayed acknowledgement.
    if let Some(size) = pick(rng, &[Some(4096), Some(8192), Some(32 * 1024), None]) {
        socket.set_recv_buffer_size(size).expect("rcvbuf");
    }
    let mut client = socket.connect(addr).await.expect("connect");
    let session = open_session_at(&mut client, &mut sessions, path.route()).await;
    (session, client)
}

/// Reads `client` until its response ends (the last chunk, or the connection's end) in
/// reads of sizes the seed picks, pausing after one read in three (often enough for a
/// small queue to overflow), and returns the events of the response body (the body must
/// be chunked; `clean` says whether it ended with the last chunk).
fn read_in_fits(mut client: TcpStream, mut rng: Rng) -> Reader {
    let so_far = Arc::new(Mutex::new(Vec::new()));
    let wire_so_far = Arc::clone(&so_far);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let size = pick(&mut rng, &[7, 512, 4096, 64 * 1024]);
            let n = match client.read(&mut buf[..size]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let ended = {
                let mut wire = wire_so_far.lock().expect("the wire");
                wire.extend_from_slice(&buf[..n]);
                // The last chunk: hyper keeps the connection open for another request.
                wire.ends_with(b"\r\n0\r\n\r\n")
            };
            if ended {
                break;
            }
            if rng.u64(..3) == 0 {
                tokio::time::sleep(Duration::from_micros(rng.u64(..3000))).await;
            }
        }
        let wire = wire_so_far.lock().expect("the wire");
        let head_end = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        let head = String::from_utf8_lossy(&wire[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let (body, clean) = dechunk(&wire[head_end..]);
        let mut parser = Parser::with_max_event_size(1 << 24);
        parser.feed(&body).expect("the body parses");
        let events = std::iter::from_fn(|| parser.next_event()).collect();
        Received { events, clean }
    });
    Reader { task, so_far }
}

/// A client reading its stream: the task, and the bytes it has read so far.
struct Reader {
    task: tokio::task::JoinHandle<Received>,
    so_far: Arc<Mutex<Vec<u8>>>,
}

struct Received {
    events: Vec<MessageEvent>,
    clean: bool,
}

async fn received(reader: Reader, context: &str) -> Received {
    match tokio::time::timeout(GUARD, reader.task).await {
        Ok(done) => done.expect("the reader finishes"),
        Err(_) => {
            let wire = reader.so_far.lock().expect("the wire");
            let tail = String::from_utf8_lossy(&wire[wire.len().saturating_sub(200)..]);
            panic!(
                "{context}: the stream did not end within the guard; {} bytes came, ending {tail:?}",
                wire.len()
            );
        }
    }
}

/// Event `i` of pusher `k`: its data names both, and a padding whose length and letter
/// the receiver can check (a keep-alive or another pusher's bytes inside an event would
/// show there).
fn event(k: usize, i: usize, rng: &mut Rng) -> Event {
    let len = pick(rng, &[0, 1, 40, 700, 3000, 9000]) + rng.usize(..8);
    let letter = char::from(b'a' + ((k * 7 + i) % 26) as u8);
    let pad: String = std::iter::repeat_n(letter, len).collect();
    Event::new().data(format!("{k} {i} {len} {pad}"))
}

/// Pusher and index of an event made by [`event`], after checking its padding.
fn parse_data(data: &str, seed: u64) -> (usize, usize) {
    let mut fields = data.splitn(4, ' ');
    let mut number = || -> usize {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("seed {seed}: malformed event data {data:.80?}"))
    };
    let (k, i, len) = (number(), number(), number());
    let pad = fields.next().unwrap_or("");
    let letter = char::from(b'a' + ((k * 7 + i) % 26) as u8);
    assert!(
        pad.len() == len && pad.chars().all(|c| c == letter),
        "seed {seed}: event {k}/{i} arrived damaged: {data:.80?}"
    );
    (k, i)
}

/// What each pusher's events arrived as: their indexes, in arrival order.
fn by_pusher(events: &[MessageEvent], seed: u64) -> Vec<Vec<usize>> {
    let mut seen = vec![Vec::new(); PUSHERS];
    for event in events.iter().filter(|e| e.event_type == "message") {
        let (k, i) = parse_data(&event.data, seed);
        seen[k].push(i);
    }
    seen
}

/// One push of events `first..first + count` of pusher `k`, in a way the seed picks:
/// one event, a batch (one queue item), a joined run (bytes shared with other
/// sessions), or bytes already encoded. The policy is `policy` where the call takes one.
fn push(
    session: &Session,
    k: usize,
    first: usize,
    count: usize,
    policy: SlowClientPolicy,
    rng: &mut Rng,
) -> Result<PushOutcome, tidings::Error> {
    let events: Vec<Event> = (first..first + count).map(|i| event(k, i, rng)).collect();
    let parts: Vec<Bytes> = events.iter().map(Event::encode).collect::<Result<_, _>>()?;
    if count == 1 && policy != SlowClientPolicy::Disconnect {
        // Only one event per queue item keeps the policies' counts in events.
        return session.push_bytes(parts[0].clone(), policy);
    }
    match rng.u64(..4) {
        0 if count == 1 => session.push(&events[0]),
        0 | 1 => session.push_batch(&events),
        2 => {
            let joined = SharedBytes::new(Bytes::from(parts.concat()));
            session.push_bytes_joined(&parts, &joined, policy)
        }
        _ => session.push_bytes(Bytes::from(parts.concat()), policy),
    }
}

/// What one pusher thread did.
#[derive(Debug, Default)]
struct Pushed {
    /// Events whose push was accepted (returned `Ok`), counting from 0.
    accepted: usize,
    /// Events the policies reported dropped or replaced.
    lost: u64,
    /// Whether a push was refused because the session had closed.
    refused: bool,
}

/// Starts [`PUSHERS`] threads, each pushing up to `count` events to `session` (stopping
/// at the first refusal), with the seed's mix of push kinds and pauses. `progress` counts
/// the events accepted, all pushers together.
fn start_pushers(
    session: &Session,
    count: usize,
    policy: SlowClientPolicy,
    seed: u64,
    progress: &Arc<AtomicUsize>,
) -> Vec<thread::JoinHandle<Pushed>> {
    (0..PUSHERS)
        .map(|k| {
            let session = session.clone();
            let progress = Arc::clone(progress);
            let mut rng = Rng::with_seed(seed ^ (k as u64 + 1) << 32);
            thread::spawn(move || {
                let mut pushed = Pushed::default();
                while pushed.accepted < count {
                    let n = if policy == SlowClientPolicy::Disconnect {
                        (1 + rng.u64(..3) as usize).min(count - pushed.accepted)
                    } else {
                        1
                    };
                    match push(&session, k, pushed.accepted, n, policy, &mut rng) {
                        Ok(outcome) => {
                            pushed.lost += match outcome {
                                PushOutcome::DroppedOldest(n) | PushOutcome::Replaced(n) => n,
                                PushOutcome::Queued | PushOutcome::Disconnected => 0,
                            };
                            if outcome != PushOutcome::Disconnected {
                                pushed.accepted += n;
                                progress.fetch_add(n, Ordering::Relaxed);
                            }
                        }
                        Err(err) => {
                            assert_eq!(err.kind(), tidings::ErrorKind::Closed, "{err}");
                            pushed.refused = true;
                            return pushed;
                        }
                    }
                    if rng.u64(..8) == 0 {
                        thread::yield_now();
                    }
                    if rng.u64(..32) == 0 {
                        thread::sleep(Duration::from_micros(50 + rng.u64(..300)));
                    }
                }
                pushed
            })
        })
        .collect()
}

fn join(pushers: Vec<thread::JoinHandle<Pushed>>) -> Vec<Pushed> {
    pushers
        .into_iter()
        .map(|p| p.join().expect("a pusher thread"))
        .collect()
}

/// One race, as the seed has it: a session on `path` (configured by `configure`), its
/// client reading in fits, [`PUSHERS`] threads pushing `count` events each under
/// `policy`, and the session closed once the pushers are done, or (`close_early`) once
/// they are somewhere between 0% and 80% through.
async fn race(
    seed: u64,
    path: Path,
    configure: fn(SessionConfig) -> SessionConfig,
    policy: SlowClientPolicy,
    count: usize,
    close_early: bool,
) -> Race {
    let context = format!("seed {seed}, {path:?}, {policy:?}");
    let mut rng = Rng::with_seed(seed);
    let (session, client) = session_and_client(path, configure, &mut rng).await;
    let reader = read_in_fits(client, Rng::with_seed(seed ^ 0xC11E));
    let progress = Arc::default();
    let pushers = start_pushers(&session, count, policy, seed, &progress);
    if close_early {
        let at = rng.usize(..PUSHERS * count * 4 / 5);
        while progress.load(Ordering::Relaxed) < at {
            thread::yield_now();
        }
        session.close();
    }
    let pushed = join(pushers);
    if !close_early {
        session.close();
    }
    let got = received(reader, &context).await;
    let by_pusher = by_pusher(&got.events, seed);
    Race {
        context,
        session,
        pushed,
        got,
        by_pusher,
    }
}

/// What a [`race`] did, and what its client received.
struct Race {
    /// The seed, path and policy, for failure messages.
    context: String,
    session: Session,
    pushed: Vec<Pushed>,
    got: Received,
    /// The indexes of each pusher's events, in arrival order.
    by_pusher: Vec<Vec<usize>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pushers_every_event_once_in_each_pushers_order() {
    const COUNT: usize = 300;
    for seed in seeds() {
        for path in PATHS {
            let race = race(
                seed,
                path,
                roomy,
                SlowClientPolicy::Disconnect,
                COUNT,
                false,
            )
            .await;
            let context = &race.context;
            assert!(
                race.got.clean,
                "{context}: the body ends with its last chunk"
            );
            for (k, seen) in race.by_pusher.iter().enumerate() {
                assert_eq!(
                    race.pushed[k].accepted, COUNT,
                    "{context}: pusher {k} was refused"
                );
                assert!(
                    seen.iter().copied().eq(0..COUNT),
                    "{context}: pusher {k}'s events arrived as {}",
                    describe(seen)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_racing_the_pushers_delivers_exactly_what_was_accepted() {
    const COUNT: usize = 400;
    let mut cut_short = 0;
    for seed in seeds() {
        for path in PATHS {
            let race = race(seed, path, roomy, SlowClientPolicy::Disconnect, COUNT, true).await;
            let context = &race.context;
            cut_short += usize::from(race.pushed.iter().any(|p| p.refused));
            assert!(
                race.got.clean,
                "{context}: the body ends with its last chunk"
            );
            for (k, seen) in race.by_pusher.iter().enumerate() {
                // A push either went out or was refused; the ones accepted before the
                // close are all flushed, and none after it got in.
                let pushed = &race.pushed[k];
                assert!(
                    seen.iter().copied().eq(0..pushed.accepted),
                    "{context}: pusher {k} had {} events accepted ({}), which arrived as {}",
                    pushed.accepted,
                    if pushed.refused {
                        "then refused"
                    } else {
                        "all"
                    },
                    describe(seen)
                );
            }
        }
    }
    assert!(
        cut_short > 0,
        "no close came before the pushers were done: nothing raced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_policies_announce_every_event_they_take() {
    const COUNT: usize = 250;
    for policy in [SlowClientPolicy::DropOldest, SlowClientPolicy::LatestOnly] {
        let mut acted = 0;
        let reason = match policy {
            SlowClientPolicy::DropOldest => "dropped",
            _ => "replaced",
        };
        for seed in seeds() {
            for path in PATHS {
                let race = race(seed, path, tight, policy, COUNT, false).await;
                let context = &race.context;
                assert!(
                    race.got.clean,
                    "{context}: the body ends with its last chunk"
                );
                let mut announced = 0;
                for gap in race
                    .got
                    .events
                    .iter()
                    .filter(|e| e.event_type == GAP_EVENT_TYPE)
                {
                    let gap: serde_json::Value =
                        serde_json::from_str(&gap.data).expect("a JSON gap");
                    assert_eq!(gap["reason"], reason, "{context}: {gap}");
                    announced += gap["dropped"].as_u64().expect("a count");
                }
                let reported: u64 = race.pushed.iter().map(|p| p.lost).sum();
                assert_eq!(
                    announced, reported,
                    "{context}: gap events announce what the pushes were told was lost"
                );
                let mut delivered = 0;
                for (k, seen) in race.by_pusher.iter().enumerate() {
                    assert_eq!(
                        race.pushed[k].accepted, COUNT,
                        "{context}: pusher {k} was refused"
                    );
                    assert!(
                        seen.windows(2).all(|w| w[0] < w[1]),
                        "{context}: pusher {k}'s events arrived out of order or twice: {}",
                        describe(seen)
                    );
                    delivered += seen.len() as u64;
                }
                assert_eq!(
                    delivered + announced,
                    (PUSHERS * COUNT) as u64,
                    "{context}: every event arrives or is announced as lost"
                );
                acted += usize::from(announced > 0);
            }
        }
        assert!(
            acted > 0,
            "{policy:?} never acted: the client never fell behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disconnect_policy_leaves_each_pusher_a_prefix_without_holes() {
    const COUNT: usize = 400;
    let mut disconnected = 0;
    for seed in seeds() {
        for path in PATHS {
            let race = race(
                seed,
                path,
                tight,
                SlowClientPolicy::Disconnect,
                COUNT,
                false,
            )
            .await;
            let context = &race.context;
            let cut = race.session.stats().disconnected_slow;
            for (k, seen) in race.by_pusher.iter().enumerate() {
                // What was queued when the policy fired is gone (the client resumes from
                // its last id); what arrived before it has no holes.
                assert!(
                    seen.iter().copied().eq(0..seen.len()),
                    "{context}: pusher {k}'s events arrived as {}",
                    describe(seen)
                );
                assert!(
                    seen.len() <= race.pushed[k].accepted,
                    "{context}: pusher {k}"
                );
                if !cut {
                    assert_eq!(seen.len(), COUNT, "{context}: pusher {k}, not disconnected");
                }
            }
            if !cut {
                assert!(
                    race.got.clean,
                    "{context}: not disconnected, so a clean end"
                );
            }
            disconnected += usize::from(cut);
        }
    }
    assert!(
        disconnected > 0,
        "the policy never acted: the client never fell behind"
    );
}

/// `seen` in short: runs of consecutive indexes as `a..=b`.
fn describe(seen: &[usize]) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut start = 0;
    for i in 1..=seen.len() {
        if i == seen.len() || seen[i] != seen[i - 1] + 1 {
            if start < seen.len() {
                runs.push(format!("{}..={}", seen[start], seen[i - 1]));
            }
            start = i;
        }
    }
    format!("[{}] ({} events)", runs.join(", "), seen.len())
}
