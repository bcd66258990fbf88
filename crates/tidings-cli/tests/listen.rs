//! `tidings listen` end to end: the built binary against a scripted event-stream server.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::{read_request, tidings, Request};

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";

/// A server whose N-th connection gets `responses[N]` (sent in two writes, to split it
/// across reads) and is then closed, or held open when the response ends in `HOLD`.
/// Connections past the list get 204.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

const HOLD: &str = "<hold>";

fn scripted(responses: Vec<String>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    thread::spawn(move || {
        let mut responses = responses.into_iter();
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let response = responses.next().unwrap_or_else(|| NO_CONTENT.to_owned());
            let recorded = Arc::clone(&recorded);
            thread::spawn(move || {
                let Some(request) = read_request(&mut socket) else {
                    return;
                };
                recorded.lock().expect("not poisoned").push(request);
                let (response, hold) = match response.strip_suffix(HOLD) {
                    Some(rest) => (rest.to_owned(), true),
                    None => (response, false),
                };
                let bytes = response.as_bytes();
                let middle = bytes.len() / 2;
                for part in [&bytes[..middle], &bytes[middle..]] {
                    let _ = socket.write_all(part);
                    let _ = socket.flush();
                    thread::sleep(Duration::from_millis(10));
                }
                if hold {
                    thread::sleep(Duration::from_secs(60));
                }
            });
        }
    });
    Server { addr, requests }
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

fn sse(body: &str) -> String {
    format!("{SSE_HEAD}{body}")
}

#[test]
fn json_lines_have_exactly_event_data_and_last_event_id() {
    let server = scripted(vec![sse(
        "data: first\n\nevent: chat\r\nid: 7\r\ndata: two\r\ndata: lines\r\n\r\n",
    )]);
    let out = tidings(&["listen", &server.url(), "--json", "--no-reconnect"], b"");
    assert_eq!(out.code, Some(0), "{out:?}");

    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"event": "message", "data": "first", "last_event_id": ""}),
            serde_json::json!({"event": "chat", "data": "two\nlines", "last_event_id": "7"}),
        ]
    );
    for line in &lines {
        assert_eq!(line.as_object().map(|o| o.len()), Some(3));
    }
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn the_readable_form_shows_type_id_and_data() {
    let server = scripted(vec![sse("event: chat\nid: 7\ndata: hi\n\n")]);
    let out = tidings(&["listen", &server.url(), "--no-reconnect"], b"");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "chat  (id 7)\n  hi\n\n");
}

#[test]
fn headers_and_the_initial_last_event_id_are_sent() {
    let server = scripted(vec![format!("{}{HOLD}", sse("data: a\n\n"))]);
    let out = tidings(
        &[
            "listen",
            &server.url(),
            "--json",
            "--header",
            "X-Token: abc",
            "-H",
            "X-Other:  spaced",
            "--last-event-id",
            "41-0",
            "--max-events",
            "1",
        ],
        b"",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1);

    let requests = server.requests();
    let first = &requests[0];
    assert_eq!(first.header("x-token"), Some("abc"));
    assert_eq!(first.header("x-other"), Some("spaced"));
    assert_eq!(first.header("last-event-id"), Some("41-0"));
    assert_eq!(first.header("accept"), Some("text/event-stream"));
}

#[test]
fn it_reconnects_with_the_last_id_until_the_server_says_204() {
    let server = scripted(vec![
        sse("retry: 10\nid: 1\ndata: a\n\nid: 2\ndata: unfinished"),
        sse("data: b\n\n"),
    ]);
    let out = tidings(&["listen", &server.url(), "--json"], b"");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");

    let ids: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("last-event-id").map(str::to_owned))
        .collect();
    assert_eq!(ids, [None, Some("1".to_owned()), Some("1".to_owned())]);
}

#[test]
fn an_error_status_exits_4_without_retrying() {
    let server = scripted(vec![
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    ]);
    let out = tidings(&["listen", &server.url()], b"");
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_wrong_content_type_exits_5() {
    let server = scripted(vec![
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<p>".to_owned(),
    ]);
    let out = tidings(&["listen", &server.url()], b"");
    assert_eq!(out.code, Some(5), "{out:?}");
    assert!(out.stderr.contains("text/html"), "{}", out.stderr);
}

#[test]
fn the_idle_timeout_covers_a_server_that_never_answers() {
    // Accepts, reads the request, and says nothing.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let _ = read_request(&mut socket);
            held.push(socket);
        }
    });
    let out = tidings(
        &[
            "listen",
            &format!("http://{addr}/events"),
            "--no-reconnect",
            "--idle-timeout",
            "1",
        ],
        b"",
    );
    assert_eq!(out.code, Some(3), "{out:?}");
    // The idle timeout's second, not the 30 s connect timeout, ended the wait.
    assert!(
        out.stderr.contains("no response within 1000 ms"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_oversized_event_exits_6_and_names_the_option() {
    let server = scripted(vec![sse(&format!("data: {}\n\n", "x".repeat(100)))]);
    let out = tidings(&["listen", &server.url(), "--max-event-size", "32"], b"");
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stderr.contains("--max-event-size"), "{}", out.stderr);
}

#[test]
fn an_unreachable_server_exits_3_without_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let out = tidings(
        &["listen", &format!("http://{addr}/"), "--no-reconnect"],
        b"",
    );
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("could not connect"), "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["listen", "not a url"][..],
        &["listen", "http://127.0.0.1:1/", "--header", "no colon"],
        &["listen", "http://127.0.0.1:1/", "--last-event-id", "a\nb"],
        &["listen", "http://127.0.0.1:99999/"],
        &["listen", "http://127.0.0.1:1/", "--idle-timeout", "0"],
        &["listen"],
    ] {
        let out = tidings(args, b"");
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
}
