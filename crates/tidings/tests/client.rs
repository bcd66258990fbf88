//! The EventSource client against scripted servers on real loopback sockets.
//!
//! Each scripted server answers its N-th connection with the N-th script: exact bytes cut
//! into chosen chunks, with pauses between them so that they reach the client as separate
//! reads, then a close (or a hold). Connections past the script get 204, which closes the
//! client, so every test ends by itself. The server records every request it gets.
//!
//! Timing never decides pass or fail beyond generous bounds: pauses only make splits across
//! reads likely; the assertions hold whichever way the bytes arrive.

#![cfg(feature = "client")]

mod scripted;

use scripted::*;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use tidings::client::{EventSource, Item};
use tidings::ErrorKind;
use tokio::net::TcpListener;

#[tokio::test]
async fn events_arrive_and_each_request_carries_the_protocol_headers() {
    let server = scripted(vec![vec![
        send(
            "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=UTF-8\r\n\
             Connection: close\r\n\r\n",
        ),
        send("data: a\n\n: comment\nevent: greeting\ndata: b\ndata:  c\nid: 1\n\n"),
    ]])
    .await;
    let source = quick(&server.url("/events?topic=x"))
        .header("X-Token", "t0k")
        .build()
        .expect("valid");

    assert_eq!(
        all_described(source).await,
        [
            "connecting",
            "open",
            r#"event message "a" id="""#,
            r#"event greeting "b\n c" id="1""#,
            "connecting",
            "closed",
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.target, "/events?topic=x");
    assert_eq!(first.header("accept"), Some("text/event-stream"));
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    assert_eq!(first.header("x-token"), Some("t0k"));
    assert_eq!(first.header("last-event-id"), None);
    assert_eq!(requests[1].header("last-event-id"), Some("1"));
}

#[tokio::test]
async fn a_crlf_split_across_reads_is_one_line_end() {
    let server = scripted(vec![stream(&[
        b"data: a\r",
        b"\ndata: b\r",
        b"\n\r",
        b"\n",
    ])])
    .await;
    let events = events_from(&server).await;
    assert_eq!(events, [r#"event message "a\nb" id="""#]);
}

#[tokio::test]
async fn one_bom_is_dropped_per_connection_even_split_across_reads() {
    let server = scripted(vec![
        stream(&[b"\xEF\xBB", b"\xBFdata: x\n\n"]),
        // A new connection starts a new stream: its BOM is dropped too, but a second BOM
        // is content, making `\u{FEFF}data` an unknown field.
        stream(&[b"\xEF\xBB\xBFdata: y\n\n\xEF\xBB\xBFdata: lost\n\n"]),
    ])
    .await;
    let events = events_from(&server).await;
    assert_eq!(
        events,
        [r#"event message "x" id="""#, r#"event message "y" id="""#]
    );
}

#[tokio::test]
async fn utf8_split_across_reads_decodes_whole() {
    let server = scripted(vec![stream(&[
        b"data: caf\xC3",
        b"\xA9 \xE2\x82",
        b"\xAC\n\n",
        b"data: bad \xFF\n\n",
    ])])
    .await;
    let events = events_from(&server).await;
    assert_eq!(
        events,
        [
            r#"event message "café €" id="""#,
            "event message \"bad \u{fffd}\" id=\"\""
        ]
    );
}

#[tokio::test]
async fn an_id_inside_an_unfinished_event_is_not_sent_back() {
    let server = scripted(vec![stream(&[
        b"id: 1\ndata: a\n\n",
        b"id: 2\ndata: b\n", // cut off: no blank line before the connection ends
    ])])
    .await;
    let events = events_from(&server).await;
    assert_eq!(events, [r#"event message "a" id="1""#]);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("last-event-id"), Some("1"));
}

#[tokio::test]
async fn an_abrupt_drop_reconnects_with_the_last_committed_id() {
    // The server writes half an event and the connection is reset rather than closed.
    let server = scripted(vec![vec![
        send(SSE_HEAD),
        send("id: 5\ndata: whole\n\nid: 6\ndata: ha"),
        Step::Pause(20),
        Step::Reset,
    ]])
    .await;
    let items = all_described(quick(&server.url("/")).build().expect("valid")).await;
    assert!(items.contains(&r#"event message "whole" id="5""#.to_owned()));
    assert!(items.contains(&"error Io".to_owned()), "{items:?}");
    assert!(!items.iter().any(|i| i.contains("ha\"")), "{items:?}");
    let requests = server.requests();
    assert_eq!(requests[1].header("last-event-id"), Some("5"));
}

#[tokio::test]
async fn last_event_id_is_sent_only_when_non_empty() {
    let server = scripted(vec![
        stream(&[b"data: a\n\n"]),
        stream(&[b"id: 7\ndata: b\n\nid\ndata: c\n\n"]),
        stream(&[b"data: d\n\n"]),
    ])
    .await;
    let source = quick(&server.url("/"))
        .last_event_id("seed")
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert!(items.contains(&r#"event message "c" id="""#.to_owned()));

    let ids: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("last-event-id").map(str::to_owned))
        .collect();
    assert_eq!(
        ids,
        [Some("seed".to_owned()), Some("seed".to_owned()), None, None]
    );
}

#[tokio::test]
async fn the_servers_retry_sets_the_reconnection_time() {
    // The client's own default (60 s) would outlast the test's limit: reconnecting at all
    // shows that `retry: 50` (with its space) was honoured.
    let server = scripted(vec![stream(&[b"retry: 50\ndata: a\n\n"])]).await;
    let source = EventSource::builder(&server.url("/"))
        .retry(Duration::from_secs(60))
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert_eq!(items.last().map(String::as_str), Some("closed"));

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    // Jitter only adds to the wait, so it is never shorter than the server asked.
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(50));
}

#[tokio::test]
async fn no_content_closes_without_an_error_or_a_reconnect() {
    let server = scripted(vec![vec![send(NO_CONTENT)]]).await;
    let items = all_described(quick(&server.url("/")).build().expect("valid")).await;
    assert_eq!(items, ["connecting", "closed"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_server_error_fails_for_good() {
    let server = scripted(vec![vec![send(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/event-stream\r\n\
         Content-Length: 10\r\nConnection: close\r\n\r\ndata: x\n\n\n",
    )]])
    .await;
    let items = all_items(quick(&server.url("/")).build().expect("valid")).await;
    let described: Vec<_> = items.iter().map(describe).collect();
    assert_eq!(described, ["connecting", "error Status", "closed"]);
    if let Item::Error(error) = &items[1] {
        assert_eq!(error.kind(), ErrorKind::Status);
        assert_eq!(error.status().map(|s| s.as_u16()), Some(500));
        assert!(error.to_string().contains("500"), "{error}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_refusal_says_what_the_servers_problem_detail_says() {
    let body = r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"the token has expired\nget a new one"}"#;
    let server = scripted(vec![vec![send(format!(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/problem+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))]])
    .await;
    let items = all_items(quick(&server.url("/")).build().expect("valid")).await;
    let Item::Error(error) = &items[1] else {
        panic!("an error: {items:?}");
    };
    assert_eq!(error.status().map(|s| s.as_u16()), Some(401));
    assert!(
        error
            .to_string()
            .ends_with("; the server said: the token has expired\\nget a new one"),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_content_type_fails_for_good() {
    let server = scripted(vec![vec![
        send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"),
        send("data: x\n\n"),
    ]])
    .await;
    let items = all_described(quick(&server.url("/")).build().expect("valid")).await;
    assert_eq!(items, ["connecting", "error ContentType", "closed"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn redirects_are_followed_and_reconnects_go_to_the_original_url() {
    let server = scripted(vec![
        vec![send(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: /moved?x=1\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        )],
        vec![send(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: stream\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        )],
        stream(&[b"id: 1\ndata: a\n\n"]),
        // The reconnect: back at the original URL.
        vec![send(NO_CONTENT)],
    ])
    .await;
    let source = quick(&server.url("/start"))
        .header("Authorization", "Bearer same-origin")
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert!(items.contains(&r#"event message "a" id="1""#.to_owned()));

    let requests = server.requests();
    let targets: Vec<_> = requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/start", "/moved?x=1", "/stream", "/start"]);
    // Same origin all along: the credentials go with every hop.
    assert!(requests
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer same-origin")));
    assert_eq!(requests[3].header("last-event-id"), Some("1"));
}

#[tokio::test]
async fn a_redirect_to_another_origin_drops_credentials() {
    // `localhost` and `127.0.0.1` are different origins on the same listener.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = serve(
        listener,
        vec![
            vec![send(format!(
                "HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}/elsewhere\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            ))],
            stream(&[b"data: a\n\n"]),
        ],
    );
    let source = quick(&server.url("/start"))
        .header("Authorization", "Bearer only-for-127")
        .header("Cookie", "session=1")
        .header("X-Trace", "kept")
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert!(items.contains(&r#"event message "a" id="""#.to_owned()));

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[1].header("host"),
        Some(&*format!("localhost:{port}"))
    );
    assert_eq!(requests[1].header("authorization"), None);
    assert_eq!(requests[1].header("cookie"), None);
    assert_eq!(requests[1].header("x-trace"), Some("kept"));
    // The reconnect starts over at the original URL, with the credentials.
    assert_eq!(requests[2].target, "/start");
    assert_eq!(
        requests[2].header("authorization"),
        Some("Bearer only-for-127")
    );
}

#[tokio::test]
async fn too_many_redirects_fail_for_good() {
    let redirect = || {
        vec![send(
            "HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
        )]
    };
    let server = scripted(vec![redirect(), redirect(), redirect(), redirect()]).await;
    let source = quick(&server.url("/"))
        .max_redirects(2)
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert_eq!(items, ["connecting", "error Status", "closed"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_silent_stream_reconnects_after_the_idle_timeout() {
    let server = scripted(vec![vec![send(SSE_HEAD), send("data: a\n\n"), Step::Hold]]).await;
    let source = quick(&server.url("/"))
        .idle_timeout(Duration::from_millis(300))
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert_eq!(
        items,
        [
            "connecting",
            "open",
            r#"event message "a" id="""#,
            "error IdleTimeout",
            "connecting",
            "closed",
        ]
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn comments_keep_an_idle_timeout_from_firing() {
    let mut script = vec![send(SSE_HEAD)];
    for _ in 0..15 {
        script.push(send(": keep-alive\n"));
        script.push(Step::Pause(100));
    }
    script.push(send("data: after comments\n\n"));
    let server = scripted(vec![script]).await;
    let source = quick(&server.url("/"))
        .idle_timeout(Duration::from_secs(1))
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert!(!items.iter().any(|i| i.starts_with("error")), "{items:?}");
    assert!(items.contains(&r#"event message "after comments" id="""#.to_owned()));
}

#[tokio::test]
async fn an_oversized_event_fails_with_event_too_large() {
    let big = format!("data: {}\n\n", "x".repeat(200));
    let server = scripted(vec![stream(&[b"data: small\n\n", big.as_bytes()])]).await;
    let source = quick(&server.url("/"))
        .max_event_size(64)
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert_eq!(
        items,
        [
            "connecting",
            "open",
            r#"event message "small" id="""#,
            "error EventTooLarge",
            "closed",
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn without_reconnect_the_end_of_the_stream_closes() {
    let server = scripted(vec![stream(&[b"data: a\n\n"])]).await;
    let source = quick(&server.url("/"))
        .reconnect(false)
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert_eq!(
        items,
        ["connecting", "open", r#"event message "a" id="""#, "closed"]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn connection_failures_are_reported_and_retried() {
    // Bind, then free the port, so connecting to it is refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let mut source = quick(&format!("http://{addr}/")).build().expect("valid");
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let next = tokio::time::timeout(Duration::from_secs(20), source.next()).await;
        let item = next.expect("items keep coming").expect("never ends");
        seen.push(describe(&item));
    }
    assert_eq!(
        seen,
        [
            "connecting",
            "error Connect",
            "connecting",
            "error Connect",
            "connecting"
        ]
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge() {
    use hyper::server::conn::http2;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&versions);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let mut seen = seen.lock().expect("not poisoned");
                    seen.push((
                        request.version(),
                        request.headers().get("last-event-id").cloned(),
                    ));
                    let response = if seen.len() == 1 {
                        http::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(Full::new(Bytes::from_static(b"id: h\ndata: over h2\n\n")))
                    } else {
                        http::Response::builder()
                            .status(204)
                            .body(Full::new(Bytes::new()))
                    };
                    Ok::<_, Infallible>(response.expect("valid response"))
                }
            });
            tokio::spawn(async move {
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });

    let source = quick(&format!("http://{addr}/"))
        .http2_prior_knowledge(true)
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert!(items.contains(&r#"event message "over h2" id="h""#.to_owned()));
    assert_eq!(items.last().map(String::as_str), Some("closed"));
    let versions = versions.lock().expect("not poisoned").clone();
    assert_eq!(versions.len(), 2);
    assert!(versions.iter().all(|(v, _)| *v == http::Version::HTTP_2));
    assert_eq!(
        versions[1].1.as_ref().map(|v| v.as_bytes()),
        Some(&b"h"[..])
    );
}

/// A TLS server (the committed self-signed certificate for `localhost` and `127.0.0.1`)
/// offering h2 and http/1.1 by ALPN; every request gets one event, then the body ends.
/// Records the HTTP version of each request.
async fn tls_server() -> (SocketAddr, Arc<Mutex<Vec<http::Version>>>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let cert = CertificateDer::from(include_bytes!("fixtures/cert.der").to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        include_bytes!("fixtures/key.der").to_vec(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("the fixture certificate and key match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&versions);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    seen.lock().expect("not poisoned").push(request.version());
                    async move {
                        http::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(Full::new(Bytes::from_static(b"data: over tls\n\n")))
                            .map_err(|e| e.to_string())
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, versions)
}

#[tokio::test]
async fn https_negotiates_http2_and_trusts_added_roots() {
    let (addr, versions) = tls_server().await;
    let source = EventSource::builder(&format!("https://localhost:{}/", addr.port()))
        .add_root_certificate(include_bytes!("fixtures/cert.der").to_vec())
        .reconnect(false)
        .build()
        .expect("valid");
    let items = all_described(source).await;
    assert_eq!(
        items,
        [
            "connecting",
            "open",
            r#"event message "over tls" id="""#,
            "closed"
        ]
    );
    assert_eq!(
        *versions.lock().expect("not poisoned"),
        [http::Version::HTTP_2]
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connection_error() {
    let (addr, versions) = tls_server().await;
    let source = EventSource::builder(&format!("https://127.0.0.1:{}/", addr.port()))
        .reconnect(false)
        .build()
        .expect("valid");
    let items = all_items(source).await;
    let described: Vec<_> = items.iter().map(describe).collect();
    assert_eq!(described, ["connecting", "error Connect", "closed"]);
    if let Item::Error(error) = &items[1] {
        assert!(error.to_string().contains("certificate"), "{error}");
    }
    assert!(versions.lock().expect("not poisoned").is_empty());
}
