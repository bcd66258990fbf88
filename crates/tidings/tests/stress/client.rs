//! The `EventSource` client against a server that cuts each connection at a byte of its
//! choosing (see the crate docs).

use std::net::SocketAddr;
use std::time::Duration;

use fastrand::Rng;
use tidings::wire::MessageEvent;

use crate::scripted::{read_request, NO_CONTENT, SSE_HEAD};
use crate::{assert_same_sequence, pick, seeds, GUARD};

/// How many events the cut-anywhere stream carries.
const CUT_EVENTS: usize = 60;

/// Event `k` of the cut-anywhere stream as a client must dispatch it: its type and data
/// follow from the seed and `k` alone, so every connection sends the same events.
fn cut_event(seed: u64, k: usize) -> MessageEvent {
    let mut rng = Rng::with_seed(seed ^ (k as u64) << 20);
    let lines: Vec<String> = (0..1 + rng.usize(..3))
        .map(|line| format!("{k}.{line} {}", "é".repeat(rng.usize(..4))))
        .collect();
    MessageEvent {
        event_type: if rng.bool() { "message" } else { "tick" }.to_owned(),
        data: lines.join("\n"),
        last_event_id: k.to_string(),
    }
}

/// `event` on the wire, with the line ends, comments and field order `rng` picks.
fn cut_event_bytes(event: &MessageEvent, rng: &mut Rng) -> Vec<u8> {
    let end = pick(rng, &["\n", "\r", "\r\n"]);
    let mut lines: Vec<String> = Vec::new();
    if rng.u64(..4) == 0 {
        lines.push(": a comment".to_owned());
    }
    if event.event_type != "message" || rng.bool() {
        lines.push(format!("event: {}", event.event_type));
    }
    lines.extend(event.data.split('\n').map(|line| format!("data: {line}")));
    // The id anywhere in the block: it takes effect only when the block is complete.
    let at = rng.usize(..=lines.len());
    lines.insert(at, format!("id: {}", event.last_event_id));
    let mut bytes = lines.join(end).into_bytes();
    bytes.extend_from_slice(end.as_bytes());
    bytes.extend_from_slice(end.as_bytes());
    bytes
}

/// A server of the cut-anywhere stream: each connection resumes after the request's
/// `Last-Event-ID`, and (two times in three) is cut at a byte the seed picks, by a close
/// or a reset, its bytes written in pieces of the seed's sizes. Once the client has every
/// event, it is told to stop with 204.
async fn cut_anywhere_server(seed: u64) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        for connection in 0u64.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut rng = Rng::with_seed(seed ^ connection << 8);
            let Some(request) = read_request(&mut socket).await else {
                continue;
            };
            let last: usize = request
                .header("last-event-id")
                .map_or(0, |id| id.parse().expect("an id this server sent"));
            if last == CUT_EVENTS {
                let _ = socket.write_all(NO_CONTENT.as_bytes()).await;
                return;
            }
            let mut body = SSE_HEAD.as_bytes().to_vec();
            let head_len = body.len();
            if rng.u64(..4) == 0 {
                body.extend_from_slice("\u{FEFF}".as_bytes()); // one BOM, dropped
            }
            // Something before the first event, or nothing: a BOM must be dropped before
            // any of these, and an empty block must commit no id the last connection left
            // unfinished.
            body.extend_from_slice(pick(
                &mut rng,
                &[&b""[..], b"retry: 1\n", b"retry: 1\n\n", b":hi\n\n"],
            ));
            for k in last + 1..=CUT_EVENTS {
                body.extend(cut_event_bytes(&cut_event(seed, k), &mut rng));
            }
            let cut = if rng.u64(..3) == 0 {
                body.len()
            } else {
                head_len + rng.usize(..body.len() - head_len)
            };
            let mut at = 0;
            while at < cut {
                let piece = (1 + rng.usize(..64)).min(cut - at);
                if socket.write_all(&body[at..at + piece]).await.is_err() {
                    break;
                }
                at += piece;
                if rng.u64(..8) == 0 {
                    tokio::time::sleep(Duration::from_micros(rng.u64(..500))).await;
                }
            }
            if rng.bool() {
                let _ = socket.set_zero_linger(); // a reset, not a close
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_anywhere_resumes_without_a_gap_or_a_duplicate() {
    use futures_util::StreamExt;
    use tidings::client::{EventSource, Item};
    let mut cuts = 0;
    for seed in seeds() {
        let addr = cut_anywhere_server(seed).await;
        let source = EventSource::builder(&format!("http://{addr}/events"))
            .retry(Duration::from_millis(1))
            .max_backoff(Duration::from_millis(5))
            .build()
            .expect("a valid source");
        let items = tokio::time::timeout(GUARD, source.collect::<Vec<Item>>())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: the client did not finish"));
        let connections = items
            .iter()
            .filter(|item| matches!(item, Item::State(tidings::client::ReadyState::Open)))
            .count();
        cuts += connections - 1;
        let events: Vec<MessageEvent> = items
            .into_iter()
            .filter_map(|item| match item {
                Item::Event(event) => Some(event),
                _ => None,
            })
            .collect();
        let expected: Vec<MessageEvent> = (1..=CUT_EVENTS).map(|k| cut_event(seed, k)).collect();
        let context = format!("seed {seed}: events over {connections} connections");
        assert_same_sequence(&events, &expected, &context);
    }
    assert!(cuts > 0, "no connection was cut: nothing was resumed");
}
