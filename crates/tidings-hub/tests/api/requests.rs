//! Bad requests, CORS and limits: every refusal is problem+json with the right status.

use crate::common::{request, TestHub, PATIENCE};
use bytes::Bytes;
use http::Method;
use serde_json::json;
use std::time::Duration;
use tidings_hub::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn bad_requests_are_problem_json() {
    let hub = TestHub::start(Settings {
        max_body_bytes: 256,
        ..Settings::default()
    })
    .await;
    let addr = hub.addr;
    let post = |ct: &'static str, body: &'static str| async move {
        request(
            addr,
            Method::POST,
            "/publish",
            &[("content-type", ct)],
            Bytes::from_static(body.as_bytes()),
        )
        .await
    };
    const JSON: &str = "application/json";
    const FORM: &str = "application/x-www-form-urlencoded";

    // Missing topic: subscribe and publish.
    let d = hub.get("/events").await.assert_problem(400);
    assert!(d.contains("topic"), "{d}");
    post(JSON, r#"{"data":"x"}"#).await.assert_problem(400);
    post(FORM, "data=x").await.assert_problem(400);
    // Invalid topics and patterns.
    hub.get("/events?topic=a*").await.assert_problem(400);
    hub.get("/events?topic=a%0Ab").await.assert_problem(400);
    post(JSON, r#"{"topic":"chat/*","data":"x"}"#)
        .await
        .assert_problem(400);
    // Bad JSON, wrong shapes, unknown fields.
    let d = post(JSON, r#"{"topic":"a","data":"#)
        .await
        .assert_problem(400);
    assert!(d.contains("JSON"), "{d}");
    post(JSON, r#"{"topic":1,"data":"x"}"#)
        .await
        .assert_problem(400);
    post(JSON, r#"{"topic":"a","data":"x","id":"1-0"}"#)
        .await
        .assert_problem(400);
    // The hub's own notice types cannot be forged.
    let d = post(FORM, "topic=a&data=x&event=tidings.gap")
        .await
        .assert_problem(400);
    assert!(d.contains("tidings."), "{d}");
    // A repeated field is refused, not last-one-wins.
    let d = post(JSON, r#"{"topic":"a","topic":"b","data":"x"}"#)
        .await
        .assert_problem(400);
    assert!(d.contains("`topic` is given twice"), "{d}");
    let d = post(
        JSON,
        r#"[{"topic":"a","data":"x"},{"topic":"a","data":"x","data":"y"}]"#,
    )
    .await
    .assert_problem(400);
    assert!(d.contains("batch item 1") && d.contains("`data`"), "{d}");
    post(FORM, "topic=a&data=x&retry=soon")
        .await
        .assert_problem(400);
    // An event type with a line break would inject fields.
    let d = post(FORM, "topic=a&data=x&event=a%0Ab")
        .await
        .assert_problem(400);
    assert!(d.contains("CR or LF"), "{d}");
    post(JSON, r#"{"topic":"a","data":"x","event":"a\r\nid: 9"}"#)
        .await
        .assert_problem(400);
    // A batch with one bad item stores nothing.
    post(
        JSON,
        r#"[{"topic":"half","data":"ok"},{"topic":"half","data":"x","event":"bad\n"}]"#,
    )
    .await
    .assert_problem(400);
    let topics = hub.get("/topics").await.json();
    assert_eq!(topics["topics"], json!([]), "nothing half-applied");
    // Wrong content type.
    post("text/plain", "hello").await.assert_problem(415);
    // Too large, with and without Content-Length.
    let big = "x".repeat(300);
    let reply = request(
        addr,
        Method::POST,
        "/publish",
        &[("content-type", FORM)],
        Bytes::from(format!("topic=a&data={big}")),
    )
    .await;
    let d = reply.assert_problem(413);
    assert!(d.contains("256"), "{d}");
    assert_eq!(chunked_publish_status(addr, &big).await, 413);
    // Unknown route, wrong method.
    let d = hub.get("/nope").await.assert_problem(404);
    assert!(d.contains("/nope"), "{d}");
    hub.get("/topics/a").await.assert_problem(404);
    let reply = request(addr, Method::DELETE, "/publish", &[], Bytes::new()).await;
    reply.assert_problem(405);
    assert_eq!(reply.header("allow"), Some("POST"));
    request(addr, Method::POST, "/events", &[], Bytes::new())
        .await
        .assert_problem(405);
    // Bad query parameters on history.
    hub.get("/topics/a/events?after=yesterday")
        .await
        .assert_problem(400);
    hub.get("/topics/a/events?limit=0")
        .await
        .assert_problem(400);
    hub.get("/topics/a/events?color=red")
        .await
        .assert_problem(400);
    hub.get("/topics/a/events?limit=1&limit=2")
        .await
        .assert_problem(400);
    // Bytes that are not UTF-8 once percent-decoded are refused, not turned into U+FFFD.
    let d = hub.get("/events?topic=%FF").await.assert_problem(400);
    assert!(d.contains("`topic`") && d.contains("UTF-8"), "{d}");
    post(FORM, "topic=%ff&data=x").await.assert_problem(400);
    post(FORM, "topic=a&data=%ff%fe").await.assert_problem(400);
    post(FORM, "topic=a&data=x&event=%ff")
        .await
        .assert_problem(400);
    let topics = hub.get("/topics").await.json();
    assert_eq!(topics["topics"], json!([]), "no topic was made of U+FFFD");
    // An axum extractor's own rejection (a path that is not UTF-8) is problem+json too.
    let d = hub.get("/topics/%FF/events").await.assert_problem(400);
    assert!(d.to_lowercase().contains("utf-8"), "{d}");
}

/// An upload that stalls is answered 408 and its connection closed, instead of holding
/// the connection (and any graceful shutdown) for as long as the client likes.
#[tokio::test(start_paused = true)]
async fn a_stalled_publish_body_is_answered_408() {
    let hub = TestHub::start(Settings::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /publish HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\ntopic=a",
        hub.addr
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    // Nothing more comes; the (paused) clock runs on to the hub's body timeout.
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), tcp.read_to_end(&mut response))
        .await
        .expect("the hub answers and closes")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert_eq!(hub.get("/topics").await.json()["topics"], json!([]));
}

/// Heads that are not HTTP, too many headers, a target that is not a URI, a head too
/// long: each is answered with problem+json too, not an empty body.
#[tokio::test]
async fn malformed_request_heads_get_problem_json() {
    let hub = TestHub::start(Settings::default()).await;
    let many_headers: String = (0..120).map(|i| format!("x-{i}: y\r\n")).collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"BLAH\r\n\r\n".to_vec(), "400"),
        (
            format!("GET /events?topic=a HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
            "431",
        ),
        (
            b"GET /events?topic=\xff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "400",
        ),
        (
            format!("GET /events?topic={} HTTP/1.1\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            "414",
        ),
    ];
    for (request, status) in cases {
        let mut tcp = tokio::net::TcpStream::connect(hub.addr)
            .await
            .expect("connect");
        // The long one may be answered before it is all written.
        let _ = tcp.write_all(&request).await;
        let mut response = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut response)).await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(text.contains("application/problem+json"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let problem: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{problem}"
        );
    }
}

/// Sends a chunked publish (no Content-Length) and returns the status code.
async fn chunked_publish_status(addr: std::net::SocketAddr, filler: &str) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = format!("topic=a&data={filler}");
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    assert!(text.contains("application/problem+json"), "{text}");
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

/// A client that writes a whole request far over the body limit before reading anything,
/// as HTTP clients do, still reads the 413 (the hub reads and drops the rest of the body
/// instead of resetting the connection under the client).
#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_the_413() {
    let hub = TestHub::start(Settings {
        max_body_bytes: 256,
        ..Settings::default()
    })
    .await;
    let body = format!("topic=a&data={}", "x".repeat(4 << 20));
    for chunked in [false, true] {
        let mut tcp = tokio::net::TcpStream::connect(hub.addr)
            .await
            .expect("connect");
        let framing = if chunked {
            "transfer-encoding: chunked".to_owned()
        } else {
            format!("content-length: {}", body.len())
        };
        let mut request = format!(
            "POST /publish HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n",
            hub.addr
        )
        .into_bytes();
        if chunked {
            for piece in body.as_bytes().chunks(64 << 10) {
                request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                request.extend_from_slice(piece);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n\r\n");
        } else {
            request.extend_from_slice(body.as_bytes());
        }
        tokio::time::timeout(PATIENCE, tcp.write_all(&request))
            .await
            .expect("the hub reads the body in time")
            .expect("the whole request is written, not reset");
        let mut response = vec![0; 4096];
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut response))
            .await
            .expect("an answer in time")
            .expect("the answer is read, not reset");
        let text = String::from_utf8_lossy(&response[..n]);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "chunked {chunked}: {text}"
        );
        assert!(text.contains("application/problem+json"), "{text}");
    }
}

#[tokio::test]
async fn cors_preflight_allows_exactly_the_configured_origin() {
    let hub = TestHub::start(Settings {
        cors_origins: vec!["http://allowed.test".to_owned()],
        ..Settings::default()
    })
    .await;
    let addr = hub.addr;
    let preflight = |origin: &'static str| async move {
        request(
            addr,
            Method::OPTIONS,
            "/events?topic=a",
            &[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "last-event-id"),
            ],
            Bytes::new(),
        )
        .await
    };
    let ok = preflight("http://allowed.test").await;
    assert!(ok.status.is_success(), "{:?}", ok.status);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://allowed.test")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let allowed_headers = ok
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for needed in ["last-event-id", "authorization"] {
        assert!(allowed_headers.contains(needed), "{allowed_headers}");
    }

    let other = preflight("http://evil.test").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.header("access-control-allow-credentials"), None);

    let simple = request(
        hub.addr,
        Method::GET,
        "/topics",
        &[("origin", "http://allowed.test")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("http://allowed.test")
    );
    let exposed = simple
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("last-event-id"), "{exposed}");
}

/// CORS does not stop a page of another origin from sending a form POST (it only hides the
/// answer), so the hub refuses publishes from origins that are neither its own nor listed.
#[tokio::test]
async fn a_page_of_another_origin_cannot_publish() {
    for listed in [vec![], vec!["http://allowed.test".to_owned()]] {
        let hub = TestHub::start(Settings {
            cors_origins: listed.clone(),
            ..Settings::default()
        })
        .await;
        let addr = hub.addr;
        let own = format!("http://{addr}");
        let post = |origin: String| async move {
            request(
                addr,
                Method::POST,
                "/publish",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("origin", &origin),
                ],
                Bytes::from_static(b"topic=csrf&data=forged"),
            )
            .await
        };
        let d = post("https://evil.example".to_owned())
            .await
            .assert_problem(403);
        assert!(
            d.contains("https://evil.example") && d.contains("--cors-origin"),
            "{d}"
        );
        post("null".to_owned()).await.assert_problem(403);
        let topics = hub.get("/topics").await.json();
        assert_eq!(topics["topics"], json!([]), "nothing stored");

        assert_eq!(post(own).await.status, 200);
        // Behind a proxy that rewrites Host and says the original in X-Forwarded-Host.
        let proxied = request(
            addr,
            Method::POST,
            "/publish",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "https://hub.example:8443"),
                ("x-forwarded-host", "hub.example:8443"),
            ],
            Bytes::from_static(b"topic=proxied&data=x"),
        )
        .await;
        assert_eq!(proxied.status, 200, "{}", proxied.text());
        let allowed = post("http://allowed.test".to_owned()).await;
        assert_eq!(
            allowed.status == 200,
            !listed.is_empty(),
            "{}",
            allowed.text()
        );
    }
}

#[tokio::test]
async fn too_many_topics_is_400_and_too_many_connections_is_503() {
    let hub = TestHub::start(Settings {
        max_topics: 2,
        max_connections: 1,
        ..Settings::default()
    })
    .await;
    let d = hub
        .get("/events?topic=a&topic=b&topic=c")
        .await
        .assert_problem(400);
    assert!(d.contains("limit is 2"), "{d}");

    let first = hub.stream("/events?topic=a&topic=b").await;
    let full = hub.get("/events?topic=a").await;
    full.assert_problem(503);
    assert!(full.header("retry-after").is_some(), "Retry-After on 503");
    // An EventSource (it accepts text/event-stream) would take a 503 as final: it gets a
    // stream that says when to come back, why, and ends, so it reconnects then.
    let mut told = hub.stream("/events?topic=a").await;
    let notice = told.next_block().await.expect("a notice");
    let retry: u64 = notice
        .lines()
        .find_map(|line| line.strip_prefix("retry: "))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("a retry line: {notice:?}"));
    assert!((5000..=6000).contains(&retry), "{notice}");
    assert!(notice.contains("event: tidings.unavailable"), "{notice}");
    assert!(notice.contains("too-many-connections"), "{notice}");
    assert!(told.next_block().await.is_none(), "the stream ends");

    drop(first);
    // The slot frees once the hub notices the client left.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.get("/healthz").await.json()["connections"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = hub.stream("/events?topic=a").await;
    let id = hub.publish("a", "x").await;
    assert_eq!(again.expect_event().await.id, id);
}
