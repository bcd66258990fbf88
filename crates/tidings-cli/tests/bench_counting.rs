//! `tidings bench` counts delivery exactly: against a scripted server that drops,
//! duplicates and reorders events on purpose, its `--json` numbers are checked one by one.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::Value;
use support::{read_request, tidings};

/// One subscriber as the scripted server keeps it.
struct Subscriber {
    socket: TcpStream,
    /// Which script this connection follows (its accept order).
    script: usize,
    /// Write the body chunked, or raw until close.
    chunked: bool,
    /// An event held back, to send later out of order.
    held: Option<String>,
}

impl Subscriber {
    fn send(&mut self, text: &str) {
        let bytes = if self.chunked {
            format!("{:x}\r\n{text}\r\n", text.len())
        } else {
            text.to_owned()
        };
        let _ = self.socket.write_all(bytes.as_bytes());
    }

    /// What this subscriber's script does with published event `seq`.
    fn deliver(&mut self, seq: u64, data: &str) {
        let event = format!("id: {seq}\ndata: {data}\n\n");
        match (self.script, seq) {
            // Script 0 gets everything, plus one event without a sequence number and a
            // comment (which is no event at all).
            (0, 0) => {
                self.send(": keep-alive\n\ndata: hello\n\n");
                self.send(&event);
            }
            // Script 1 misses 3 and 7.
            (1, 3 | 7) => {}
            // Script 2 gets 5 and 9 twice.
            (2, 5 | 9) => {
                self.send(&event);
                self.send(&event);
            }
            // Script 3 gets 2 after 4, and 6 split across two writes.
            (3, 2) => self.held = Some(event),
            (3, 4) => {
                self.send(&event);
                if let Some(held) = self.held.take() {
                    self.send(&held);
                }
            }
            (3, 6) => {
                let (first, second) = event.split_at(5);
                self.send(first);
                self.send(second);
            }
            _ => self.send(&event),
        }
    }
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    sources: BTreeSet<IpAddr>,
    missing_header: usize,
}

/// Serves `/events` (the first four connections follow scripts 0-3, the fifth is refused
/// with 404) and `POST /publish` (the body is the data of the event to fan out). A
/// publishing connection is closed after every third answer, without a word, as servers
/// close kept-alive connections that sit idle: the bench must send its next request again,
/// on a new connection, and lose nothing.
fn scripted_server() -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("has an address").port();
    let subscribers: Arc<Mutex<Vec<Subscriber>>> = Arc::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (server_seen, accepted) = (seen.clone(), Arc::new(Mutex::new(0usize)));
    thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { continue };
            let subscribers = subscribers.clone();
            let (seen, accepted) = (server_seen.clone(), accepted.clone());
            thread::spawn(move || {
                let mut answered = 0;
                while let Some(request) = read_request(&mut socket) {
                    if request.method == "GET" && request.target == "/events?topic=a" {
                        let mut seen = seen.lock().unwrap();
                        seen.sources.insert(socket.peer_addr().unwrap().ip());
                        if request.header("x-bench") != Some("yes") {
                            seen.missing_header += 1;
                        }
                        let script = {
                            let mut accepted = accepted.lock().unwrap();
                            *accepted += 1;
                            *accepted - 1
                        };
                        if script >= 4 {
                            let _ = socket
                                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                            return;
                        }
                        let chunked = script % 2 == 0;
                        let head = if chunked {
                            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
                        } else {
                            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                        };
                        socket.write_all(head.as_bytes()).unwrap();
                        subscribers.lock().unwrap().push(Subscriber {
                            socket,
                            script,
                            chunked,
                            held: None,
                        });
                        return;
                    }
                    if request.method == "POST" && request.target == "/publish" {
                        let data = String::from_utf8(request.body).unwrap();
                        let seq: u64 = data.split(' ').next().unwrap().parse().unwrap();
                        for subscriber in subscribers.lock().unwrap().iter_mut() {
                            subscriber.deliver(seq, &data);
                        }
                        let _ = socket.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\":\"1\"}\n",
                        );
                        answered += 1;
                        if answered % 3 == 0 {
                            return;
                        }
                        continue;
                    }
                    let _ =
                        socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, seen)
}

#[test]
fn missing_duplicate_and_out_of_order_events_are_counted_exactly() {
    let (port, seen) = scripted_server();
    let events = format!("http://127.0.0.1:{port}/events?topic=a");
    let publish = format!("http://127.0.0.1:{port}/publish");
    let output = tidings(
        &[
            "bench",
            &events,
            "--connections",
            "5",
            "-H",
            "X-Bench: yes",
            "--source",
            "127.0.0.2-127.0.0.3",
            "--publish-url",
            &publish,
            "--body",
            "{seq} {ts_us} {pad:16}",
            "--count",
            "10",
            "--rate",
            "200",
            "--settle",
            "0.1",
            "--drain-timeout",
            "1",
            "--server-pid",
            &std::process::id().to_string(),
            "--json",
        ],
        b"",
    );
    assert_eq!(output.code, Some(0), "stderr: {}", output.stderr);
    let report: Value = serde_json::from_str(&output.stdout).expect("--json prints JSON");

    let subscribers = &report["subscribers"];
    assert_eq!(subscribers["requested"], 5);
    assert_eq!(subscribers["connected"], 4);
    assert_eq!(subscribers["failed"]["HTTP status 404"], 1);
    assert_eq!(report["publisher"]["published"], 10);

    let delivery = &report["delivery"];
    assert_eq!(delivery["expected"], 40, "{delivery}");
    // Script 1 misses two events; everyone else gets all ten.
    assert_eq!(delivery["delivered"], 38, "{delivery}");
    assert_eq!(delivery["missing"], 2, "{delivery}");
    assert_eq!(delivery["duplicate"], 2, "{delivery}");
    assert_eq!(delivery["out_of_order"], 1, "{delivery}");
    assert_eq!(delivery["unparsed"], 1, "{delivery}");
    assert_eq!(delivery["received"], 38 + 2 + 1, "{delivery}");

    let latency = &report["latency_us"];
    assert!(latency["p50"].as_u64().unwrap() <= latency["max"].as_u64().unwrap());
    assert!(report["server"]["rss_connected_kib"].as_u64().unwrap() > 0);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.missing_header, 0, "every subscriber sent -H");
    assert_eq!(
        seen.sources,
        ["127.0.0.2", "127.0.0.3"]
            .map(|a| a.parse().unwrap())
            .into()
    );
}

#[test]
fn holding_connections_without_publishing_reports_no_delivery() {
    let (port, _) = scripted_server();
    let events = format!("http://127.0.0.1:{port}/events?topic=a");
    let output = tidings(
        &["bench", &events, "-c", "3", "--settle", "0", "--json"],
        b"",
    );
    assert_eq!(output.code, Some(0), "stderr: {}", output.stderr);
    let report: Value = serde_json::from_str(&output.stdout).expect("--json prints JSON");
    assert_eq!(report["subscribers"]["connected"], 3);
    assert_eq!(report["publisher"], Value::Null);
    assert_eq!(report["delivery"]["expected"], 0);
    assert_eq!(report["delivery"]["missing"], 0);
}

#[test]
fn a_body_without_seq_is_a_usage_error() {
    let output = tidings(
        &["bench", "http://127.0.0.1:9/events", "--body", "{ts}"],
        b"",
    );
    assert_eq!(output.code, Some(2), "stderr: {}", output.stderr);
    assert!(output.stderr.contains("{seq}"), "{}", output.stderr);
}
