//! HTTPS: the hub with `tls_cert` and `tls_key`, over HTTP/2 and HTTP/1.1 (ALPN), to a
//! client that trusts a certificate made for the test; and what a plain `http://`
//! request to that port gets.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::common::{TestHub, PATIENCE};
use tidings::client::{Item, ReadyState};
use tidings_hub::tls::TlsFiles;
use tidings_hub::Settings;

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into
/// `dir`; and its DER, for the client to trust.
fn certificate(dir: &Path) -> (TlsFiles, CertificateDer<'static>) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("write the key");
    (files, made.cert.der().clone())
}

async fn tls_hub(dir: &Path) -> (TestHub, CertificateDer<'static>) {
    tls_hub_with(dir, Settings::default()).await
}

async fn tls_hub_with(dir: &Path, settings: Settings) -> (TestHub, CertificateDer<'static>) {
    let (files, der) = certificate(dir);
    let hub = TestHub::start(Settings {
        tls: Some(files),
        ..settings
    })
    .await;
    (hub, der)
}

/// A TLS connection to `addr` that trusts only `trusted` and offers `alpn`.
async fn connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    connect_tcp(tcp, trusted, alpn).await
}

/// TLS over `tcp`, trusting only `trusted` and offering `alpn`.
async fn connect_tcp(
    tcp: TcpStream,
    trusted: &CertificateDer<'static>,
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("a valid certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").expect("a name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(alpn),
        "ALPN picks what was offered"
    );
    tls
}

/// An HTTP/2 connection (by ALPN) to `addr`, trusting `trusted`.
async fn h2(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
) -> http2::SendRequest<Full<Bytes>> {
    let tls = connect(addr, trusted, b"h2").await;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

/// An HTTP/1.1 connection (by ALPN) to `addr`, trusting `trusted`.
async fn h1(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
) -> http1::SendRequest<Full<Bytes>> {
    let tls = connect(addr, trusted, b"http/1.1").await;
    let (sender, connection) = http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// Reads `body` until its bytes hold `needle`; what was read.
async fn read_until(body: &mut Incoming, needle: &str) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let frame = body
                .frame()
                .await
                .expect("the stream goes on")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                seen.extend_from_slice(&data);
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{needle:?} within {PATIENCE:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        )
    });
    String::from_utf8_lossy(&seen).into_owned()
}

fn publish_request(authority: &str, topic: &str, data: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://{authority}/publish"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::json!({ "topic": topic, "data": data }).to_string(),
        )))
        .expect("request")
}

#[tokio::test]
async fn over_http2_one_connection_carries_a_stream_and_publishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, trusted) = tls_hub(dir.path()).await;
    let authority = format!("localhost:{}", hub.addr.port());
    let mut sender = h2(hub.addr, &trusted).await;

    let subscribe = Request::get(format!("https://{authority}/events?topic=news"))
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(subscribe).await.expect("subscribed");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.into_body();
    read_until(&mut stream, "retry:").await;

    // A second request on the same connection, while the stream is open.
    let published = sender
        .send_request(publish_request(&authority, "news", "over h2"))
        .await
        .expect("published");
    assert_eq!(published.status(), StatusCode::OK);
    let body = published
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let id = serde_json::from_slice::<serde_json::Value>(&body).expect("JSON")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let seen = read_until(&mut stream, "data: over h2\n\n").await;
    assert!(seen.contains(&format!("id: {id}\n")), "{seen:?}");
}

#[tokio::test]
async fn over_http1_a_stream_and_a_publish_work_as_over_plain_tcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, trusted) = tls_hub(dir.path()).await;
    let authority = format!("localhost:{}", hub.addr.port());

    let mut sender = h1(hub.addr, &trusted).await;
    let subscribe = Request::get("/events?topic=news")
        .header("host", &authority)
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(subscribe).await.expect("subscribed");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    let mut stream = response.into_body();
    read_until(&mut stream, "retry:").await;

    let mut publisher = h1(hub.addr, &trusted).await;
    let mut request = publish_request(&authority, "news", "over http/1.1");
    *request.uri_mut() = "/publish".parse().expect("a path");
    request
        .headers_mut()
        .insert("host", authority.parse().expect("a header value"));
    let published = publisher.send_request(request).await.expect("published");
    assert_eq!(published.status(), StatusCode::OK);
    read_until(&mut stream, "data: over http/1.1\n\n").await;
}

#[tokio::test]
async fn the_library_client_follows_a_stream_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, trusted) = tls_hub(dir.path()).await;
    let url = format!("https://localhost:{}/events?topic=news", hub.addr.port());
    let mut source = tidings::client::EventSource::builder(&url)
        .add_root_certificate(trusted.as_ref().to_vec())
        .build()
        .expect("a valid client");
    let published = {
        let mut sender = h2(hub.addr, &trusted).await;
        let authority = format!("localhost:{}", hub.addr.port());
        async move {
            // Published once the subscription is open (the client has seen `open`).
            sender
                .send_request(publish_request(&authority, "news", "to the client"))
                .await
                .expect("published")
                .status()
        }
    };
    let mut published = Some(published);
    let data = tokio::time::timeout(PATIENCE, async {
        loop {
            match source.next().await.expect("the stream goes on") {
                Item::State(ReadyState::Open) => {
                    let publish = published.take().expect("one open");
                    assert_eq!(publish.await, StatusCode::OK);
                }
                Item::Event(event) if !event.data.is_empty() => return event.data,
                Item::Error(err) => panic!("the client failed: {err}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the event arrives");
    assert_eq!(data, "to the client");
}

#[tokio::test]
async fn plain_http_to_the_https_port_is_told_to_use_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, _) = tls_hub(dir.path()).await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    tcp.write_all(
        b"GET /events?topic=a HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the hub answers and closes")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.contains("urn:tidings:problem:tls-required"),
        "{answer}"
    );
    assert!(answer.contains("use an https:// URL"), "{answer}");
}

#[tokio::test]
async fn http2_without_tls_to_the_https_port_gets_goaway_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, _) = tls_hub(dir.path()).await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    // The preface in two writes, as a slow client might send it.
    tcp.write_all(b"PRI * HTTP/2.0\r\n").await.expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    tcp.write_all(b"\r\nSM\r\n\r\n").await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the hub answers and closes")
        .expect("read");
    // The server's SETTINGS (empty), then GOAWAY: last stream 0, INADEQUATE_SECURITY.
    assert_eq!(&answer[..9], &[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let goaway = &answer[9..];
    assert_eq!(goaway[3], 0x7, "a GOAWAY frame: {answer:?}");
    assert_eq!(&goaway[9..17], &[0, 0, 0, 0, 0, 0, 0, 0xc]);
    let length =
        usize::from(goaway[0]) << 16 | usize::from(goaway[1]) << 8 | usize::from(goaway[2]);
    assert_eq!(goaway.len(), 9 + length);
    assert_eq!(
        std::str::from_utf8(&goaway[17..]).expect("text"),
        "this port serves HTTPS only: use an https:// URL"
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused_and_the_hub_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, trusted) = tls_hub(dir.path()).await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("rcgen makes a certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(other.cert.der().clone())
        .expect("a valid certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let refused = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await;
    assert!(refused.is_err(), "the handshake fails on the client's side");

    // A client that trusts it is served as before.
    let mut sender = h1(hub.addr, &trusted).await;
    let health = Request::get("/healthz")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(health).await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn files_that_cannot_serve_stop_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, _) = certificate(dir.path());
    let swapped = TlsFiles {
        cert: files.key.clone(),
        key: files.cert.clone(),
    };
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        tls: Some(swapped),
        ..Settings::default()
    };
    let err = tidings_hub::Server::bind(settings)
        .await
        .expect_err("a key is not a certificate");
    assert_eq!(err.kind(), tidings_hub::ErrorKind::Config);
    assert!(err.to_string().contains("holds no certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_over_tls_is_disconnected_and_frees_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        max_connections: 1,
        max_queue_bytes: 16 * 1024,
        ..Settings::default()
    };
    let (hub, trusted) = tls_hub_with(dir.path(), settings).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = socket.connect(hub.addr).await.expect("connect");
    let mut tls = connect_tcp(tcp, &trusted, b"http/1.1").await;
    tls.write_all(
        b"GET /events?topic=slow HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .expect("subscribe");
    let fanout = Arc::clone(hub.hub.fanout());
    tokio::time::timeout(PATIENCE, async {
        while fanout.connections() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stream is registered");

    // The client reads nothing more: TLS records pile up until the policy disconnects it.
    let data = "x".repeat(32 * 1024);
    for _ in 0..200 {
        let event = tidings_hub::engine::NewEvent {
            topics: vec![tidings_hub::topics::Topic::new("slow").expect("topic")],
            event_type: None,
            data: data.clone(),
            retry: None,
        };
        hub.hub.publish(vec![event]).await.expect("stored");
        if fanout.counts().disconnected_slow > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(fanout.counts().disconnected_slow, 1, "the policy acts");
    tokio::time::timeout(PATIENCE, async {
        while fanout.connections() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the disconnected stream leaves the hub, and its slot with it");

    // The slot is free: another subscriber gets in.
    let mut sender = h1(hub.addr, &trusted).await;
    let subscribe = Request::get("/events?topic=slow")
        .header("host", "localhost")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(subscribe).await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body();
    read_until(&mut stream, "retry:").await;
    assert_eq!(fanout.connections(), 1);
}
