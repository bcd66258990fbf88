//! `tidings publish` end to end: the built binary against a small fake hub that checks each
//! request and answers with ids the way the hub's `POST /publish` does.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};
use support::{read_request, tidings, Request};

/// How the fake hub answers one request: status, content type, body.
type Answer = fn(&Value, &mut u64) -> (u16, &'static str, String);

struct FakeHub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeHub {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("not poisoned").clone()
    }

    fn bodies(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("the request body is JSON"))
            .collect()
    }
}

/// A hub that serves keep-alive connections, assigning ids `1700000000000-<n>` in order.
fn fake_hub(answer: Answer) -> FakeHub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    let next_seq = Arc::new(Mutex::new(0u64));
    thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let recorded = Arc::clone(&recorded);
            let next_seq = Arc::clone(&next_seq);
            thread::spawn(move || {
                while let Some(request) = read_request(&mut socket) {
                    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                    recorded.lock().expect("not poisoned").push(request);
                    let (status, content_type, text) =
                        answer(&body, &mut next_seq.lock().expect("not poisoned"));
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n\
                         Content-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if socket.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeHub { addr, requests }
}

fn assign_ids(body: &Value, seq: &mut u64) -> (u16, &'static str, String) {
    let mut next = || {
        let id = format!("1700000000000-{seq}");
        *seq += 1;
        id
    };
    match body {
        Value::Array(events) => {
            let ids: Vec<String> = events.iter().map(|_| next()).collect();
            (200, "application/json", json!({ "ids": ids }).to_string())
        }
        _ => (200, "application/json", json!({ "id": next() }).to_string()),
    }
}

#[test]
fn one_event_is_posted_as_json_and_its_id_printed() {
    let hub = fake_hub(assign_ids);
    let out = tidings(
        &[
            "publish",
            "--url",
            &hub.url(),
            "--topic",
            "chat",
            "--event",
            "greeting",
            "--retry",
            "3000",
            "-H",
            "Authorization: Bearer t",
            "hello world",
        ],
        b"",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "1700000000000-0\n");

    let requests = hub.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].target, "/publish");
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[0].header("authorization"), Some("Bearer t"));
    assert_eq!(
        hub.bodies(),
        [json!({"topic": "chat", "data": "hello world", "event": "greeting", "retry": 3000})]
    );
}

#[test]
fn several_topics_are_sent_as_an_array() {
    let hub = fake_hub(assign_ids);
    let url = format!("{}/", hub.url());
    let out = tidings(&["publish", "--url", &url, "-t", "a", "-t", "b", "x"], b"");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(hub.requests()[0].target, "/publish");
    assert_eq!(hub.bodies(), [json!({"topic": ["a", "b"], "data": "x"})]);
}

#[test]
fn stdin_lines_go_in_batches_and_every_id_is_printed_in_order() {
    let hub = fake_hub(assign_ids);
    let input: String = (0..1200).map(|i| format!("line {i}\n")).collect();
    let out = tidings(
        &["publish", "--url", &hub.url(), "--topic", "t", "--stdin"],
        input.as_bytes(),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let expected: Vec<String> = (0..1200).map(|i| format!("1700000000000-{i}")).collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected);
    // Not a terminal: no progress line.
    assert_eq!(out.stderr, "");

    let bodies = hub.bodies();
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b.as_array().expect("a batch is an array").len())
        .collect();
    assert_eq!(sizes, [500, 500, 200]);
    assert_eq!(bodies[0][0], json!({"topic": "t", "data": "line 0"}));
    assert_eq!(bodies[2][199], json!({"topic": "t", "data": "line 1199"}));
}

#[test]
fn long_lines_end_a_batch_before_it_outgrows_the_byte_limit() {
    let hub = fake_hub(assign_ids);
    // 500 lines of 3,000 bytes: 1.5 MB in one batch by count, over a hub's 1 MiB limit.
    let line = "y".repeat(3000);
    let input: String = (0..500).map(|_| format!("{line}\n")).collect();
    let out = tidings(
        &["publish", "--url", &hub.url(), "--topic", "big", "-"],
        input.as_bytes(),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 500);

    let requests = hub.requests();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    for request in &requests {
        assert!(
            request.body.len() <= 512 * 1024,
            "{} bytes",
            request.body.len()
        );
    }
    let sent: usize = hub
        .bodies()
        .iter()
        .map(|b| b.as_array().expect("a batch is an array").len())
        .sum();
    assert_eq!(sent, 500);
}

#[test]
fn a_query_in_the_hub_url_stays_after_the_publish_path() {
    let hub = fake_hub(assign_ids);
    let url = format!("{}/?token=t1", hub.url());
    let out = tidings(&["publish", "--url", &url, "-t", "a", "x"], b"");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(hub.requests()[0].target, "/publish?token=t1");
}

#[test]
fn data_dash_reads_stdin_too_with_crlf_lines() {
    let hub = fake_hub(assign_ids);
    let out = tidings(
        &[
            "publish",
            "--url",
            &hub.url(),
            "--topic",
            "t",
            "--batch",
            "2",
            "-",
        ],
        b"a\r\nb\n\nc",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 4);
    assert_eq!(
        hub.bodies(),
        [
            json!([{"topic": "t", "data": "a"}, {"topic": "t", "data": "b"}]),
            json!([{"topic": "t", "data": ""}, {"topic": "t", "data": "c"}]),
        ]
    );
}

#[test]
fn a_problem_answer_prints_its_detail_and_exits_4() {
    let hub = fake_hub(|_, _| {
        (
            400,
            "application/problem+json",
            json!({
                "type": "about:blank",
                "title": "Bad topic",
                "status": 400,
                "detail": "topic `a b` contains a space"
            })
            .to_string(),
        )
    });
    let out = tidings(
        &["publish", "--url", &hub.url(), "--topic", "a b", "x"],
        b"",
    );
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stderr.contains("topic `a b` contains a space"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn an_unexpected_answer_exits_5() {
    let hub = fake_hub(|_, _| (200, "text/html", "<p>hi</p>".to_owned()));
    let out = tidings(&["publish", "--url", &hub.url(), "--topic", "a", "x"], b"");
    assert_eq!(out.code, Some(5), "{out:?}");
}

#[test]
fn an_unreachable_hub_exits_3() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let url = format!("http://{addr}");
    let out = tidings(&["publish", "--url", &url, "--topic", "a", "x"], b"");
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("could not reach the hub"),
        "{}",
        out.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["publish", "x"][..],
        &["publish", "--topic", "a"],
        &["publish", "--topic", "a", "--stdin", "x"],
        &["publish", "--topic", "a", "--url", "ftp://h", "x"],
        &["publish", "--topic", "a", "--batch", "0", "--stdin"],
        &[
            "publish",
            "--topic",
            "a",
            "--url",
            "http://127.0.0.1:99999",
            "x",
        ],
    ] {
        let out = tidings(args, b"");
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
    }
}
