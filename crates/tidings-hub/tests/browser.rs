//! The page in a real browser: headless Chromium, driven through chromedriver's WebDriver
//! HTTP API, loads `/`, receives a published event through a real `EventSource`, and
//! catches up with `?lastEventId=` after its connection is dropped and restored; on a hub
//! that takes tokens, it says why it was refused, then subscribes and publishes with the
//! token it is given; over HTTPS, the page and its stream come over HTTP/2.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`. Without them the test
//! prints `skipped: browser test (install chromium chromium-driver)` and passes, unless
//! `TIDINGS_REQUIRE_EXTERNAL=1`, when it fails.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::Method;
use serde_json::{json, Value};

use common::{request, TestHub};
use tidings_hub::auth::{issue, Access, AuthSettings, JwtKey, Rights};
use tidings_hub::engine::NewEvent;
use tidings_hub::tls::TlsFiles;
use tidings_hub::topics::{Topic, TopicPattern};
use tidings_hub::Settings;

/// Browser start-up is slow on a busy machine; this bounds every wait in this test.
const BROWSER_PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_live_events_and_catches_up_after_the_connection_drops() {
    in_browser(Scenario::CatchUp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_sends_its_token_to_a_hub_that_takes_tokens() {
    in_browser(Scenario::Token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_streams_and_publishes_over_https_and_http2() {
    in_browser(Scenario::Https).await;
}

/// What a browser test does with the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Live events, and the catch-up after the connection is dropped and restored.
    CatchUp,
    /// A hub that takes tokens for publishing and subscribing: refused without one, and
    /// the page subscribes and publishes once it is given one.
    Token,
    /// A hub serving HTTPS (a certificate made for the test, which the browser is told to
    /// accept): the page, its stream and its publish, over HTTP/2.
    Https,
}

const SECRET: &str = "a secret for the browser test, 32+ bytes";

/// Starts a hub for `scenario`, chromedriver and Chromium, runs the scenario, and stops
/// them all whatever happened.
async fn in_browser(scenario: Scenario) {
    let (Some(chromium), Some(chromedriver)) =
        (find_program("chromium"), find_program("chromedriver"))
    else {
        if std::env::var("TIDINGS_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
            panic!("TIDINGS_REQUIRE_EXTERNAL=1 but chromium/chromedriver are not installed (apt-get install chromium chromium-driver)");
        }
        println!("skipped: browser test (install chromium chromium-driver)");
        return;
    };

    let certificate_dir = tempfile::tempdir().expect("tempdir");
    let hub = match scenario {
        Scenario::CatchUp => TestHub::start_default().await,
        Scenario::Https => {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("rcgen makes a certificate");
            let files = TlsFiles {
                cert: certificate_dir.path().join("cert.pem"),
                key: certificate_dir.path().join("key.pem"),
            };
            std::fs::write(&files.cert, made.cert.pem()).expect("write the certificate");
            std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("write the key");
            TestHub::start(Settings {
                tls: Some(files),
                ..Settings::default()
            })
            .await
        }
        Scenario::Token => {
            TestHub::start(Settings {
                auth: AuthSettings {
                    key: Some(JwtKey::Secret(SECRET.to_owned())),
                    audience: None,
                    publish: Access::Token,
                    subscribe: Access::Token,
                },
                ..Settings::default()
            })
            .await
        }
    };
    let driver_port = free_port();
    let mut driver = Command::new(&chromedriver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver_addr: SocketAddr = ([127, 0, 0, 1], driver_port).into();
    let profile = std::env::temp_dir().join(format!(
        "tidings-browser-test-{}-{driver_port}",
        std::process::id()
    ));
    let _ = std::fs::create_dir_all(&profile);

    let mut session: Option<String> = None;
    let outcome = std::panic::AssertUnwindSafe(drive_page(
        &hub,
        scenario,
        driver_addr,
        &chromium,
        &profile,
        &mut session,
    ))
    .catch_unwind()
    .await;

    // Clean up whatever happened: close the browser, end chromedriver (by its own pid).
    if let Some(id) = session {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            request(
                driver_addr,
                Method::DELETE,
                &format!("/session/{id}"),
                &[],
                Bytes::new(),
            ),
        )
        .await;
    }
    // chromedriver's own shutdown endpoint, then its pid if it is still there.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        try_request(driver_addr, Method::GET, "/shutdown", None),
    )
    .await;
    stop_child(&mut driver).await;
    let _ = std::fs::remove_dir_all(&profile);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drive_page(
    hub: &TestHub,
    scenario: Scenario,
    driver: SocketAddr,
    chromium: &Path,
    profile: &Path,
    session: &mut Option<String>,
) {
    wait_for("chromedriver to be ready", || async move {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            try_request(driver, Method::GET, "/status", None),
        )
        .await
        .ok()
        .flatten()?;
        (reply["value"]["ready"] == true).then_some(())
    })
    .await;

    let capabilities = json!({
        "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1200,1100",
                    // The HTTPS scenario's certificate is made by the test.
                    "--ignore-certificate-errors",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }},
    });
    let created = webdriver(driver, Method::POST, "/session", Some(capabilities)).await;
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_owned();
    *session = Some(id.clone());
    let base = format!("/session/{id}");

    let page = match scenario {
        Scenario::Https => format!("https://localhost:{}/?topic=demo", hub.addr.port()),
        _ => format!("http://{}/?topic=demo", hub.addr),
    };
    webdriver(
        driver,
        Method::POST,
        &format!("{base}/url"),
        Some(json!({ "url": page })),
    )
    .await;
    match scenario {
        Scenario::CatchUp => catch_up(hub, driver, &base).await,
        Scenario::Token => with_a_token(hub, driver, &base).await,
        Scenario::Https => over_https(hub, driver, &base).await,
    }

    // TIDINGS_SCREENSHOT=page.png keeps a picture of the page as the test left it.
    if let Some(path) = std::env::var_os("TIDINGS_SCREENSHOT") {
        let shot = webdriver(driver, Method::GET, &format!("{base}/screenshot"), None).await;
        if let Some(png) = shot["value"].as_str().and_then(decode_base64) {
            let _ = std::fs::write(path, png);
        }
    }
}

async fn catch_up(hub: &TestHub, driver: SocketAddr, base: &str) {
    wait_for_state(driver, base, "open").await;

    // Dropped before any event arrived, the page still resumes where its subscription
    // started: what was published meanwhile is replayed.
    click(driver, base, "toggle").await;
    wait_for_state(driver, base, "closed").await;
    let early = hub.publish("demo", "missed before any event").await;
    click(driver, base, "toggle").await;
    let rows = wait_for_rows(driver, base, &[early.as_str()]).await;
    assert!(rows[0].replayed, "{rows:?}");
    wait_for_state(driver, base, "open").await;
    click(driver, base, "clear").await;
    wait_for_rows(driver, base, &[]).await;

    // A published event arrives through the page's EventSource.
    let first = hub.publish("demo", "hello from the test").await;
    let rows = wait_for_rows(driver, base, &[first.as_str()]).await;
    assert_eq!(rows[0].data, "hello from the test");
    assert!(!rows[0].replayed);

    // Drop the connection, publish while it is down, restore: the page catches up.
    click(driver, base, "toggle").await;
    wait_for_state(driver, base, "closed").await;
    let missed = [
        hub.publish("demo", "missed one").await,
        hub.publish("demo", "missed two").await,
    ];
    click(driver, base, "toggle").await;
    let expected = [first.as_str(), missed[0].as_str(), missed[1].as_str()];
    let rows = wait_for_rows(driver, base, &expected).await;
    assert!(
        rows[1].replayed && rows[2].replayed,
        "caught-up events are marked: {rows:?}"
    );
    wait_for_state(driver, base, "open").await;

    // And it is live again.
    let live = hub.publish("demo", "live again").await;
    let rows = wait_for_rows(
        driver,
        base,
        &[
            first.as_str(),
            missed[0].as_str(),
            missed[1].as_str(),
            live.as_str(),
        ],
    )
    .await;
    assert!(!rows[3].replayed, "{rows:?}");
}

async fn with_a_token(hub: &TestHub, driver: SocketAddr, base: &str) {
    // Without a token the stream is refused, and the page says why.
    wait_for_state(driver, base, "closed").await;
    let shown = wait_for_text(driver, base, "stream-error").await;
    assert!(
        shown.contains("Unauthorized") && shown.contains("access_token"),
        "{shown}"
    );

    // Given a token, it subscribes (the token in the query) and sees events.
    let rights = Rights {
        publish: vec![TopicPattern::parse("demo").expect("topic")],
        subscribe: vec![TopicPattern::parse("demo").expect("topic")],
    };
    let token = issue(
        SECRET.as_bytes(),
        &rights,
        Some(Duration::from_secs(600)),
        None,
    )
    .expect("token");
    let set_token = format!(
        "const t = document.getElementById('token'); t.value = {}; \
         t.dispatchEvent(new Event('change')); return true;",
        json!(token)
    );
    execute(driver, base, &set_token).await;
    wait_for_state(driver, base, "open").await;
    let id = publish_in_process(hub, "for token holders").await;
    let rows = wait_for_rows(driver, base, &[id.as_str()]).await;
    assert_eq!(rows[0].data, "for token holders");

    // The page's publish form sends the token too.
    click(driver, base, "publish").await;
    let result = wait_for_text(driver, base, "publish-result").await;
    assert!(result.starts_with("stored as "), "{result}");
    let published = result.trim_start_matches("stored as ").to_owned();
    wait_for_rows(driver, base, &[id.as_str(), published.as_str()]).await;
}

async fn over_https(hub: &TestHub, driver: SocketAddr, base: &str) {
    wait_for_state(driver, base, "open").await;
    let protocol = execute(
        driver,
        base,
        "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
    )
    .await;
    assert_eq!(protocol, "h2", "the page came over HTTP/2");

    let first = publish_in_process(hub, "over https").await;
    let rows = wait_for_rows(driver, base, &[first.as_str()]).await;
    assert_eq!(rows[0].data, "over https");

    // The page's publish form, over the same HTTP/2 connection as its stream.
    click(driver, base, "publish").await;
    let result = wait_for_text(driver, base, "publish-result").await;
    assert!(result.starts_with("stored as "), "{result}");
    let published = result.trim_start_matches("stored as ").to_owned();
    wait_for_rows(driver, base, &[first.as_str(), published.as_str()]).await;
    let protocol = execute(
        driver,
        base,
        "return performance.getEntriesByType('resource')
            .filter((e) => e.name.includes('/publish')).map((e) => e.nextHopProtocol).join();",
    )
    .await;
    assert_eq!(protocol, "h2", "the publish went over HTTP/2");
}

/// Publishes `data` to `demo` through the hub itself (no token, no HTTP client); its id.
async fn publish_in_process(hub: &TestHub, data: &str) -> String {
    let event = NewEvent {
        topics: vec![Topic::new("demo").expect("topic")],
        event_type: None,
        data: data.to_owned(),
        retry: None,
    };
    let stored = hub.hub.publish(vec![event]).await.expect("stored");
    stored[0].id.to_string()
}

/// Waits until the element `element_id` has text, and returns it.
async fn wait_for_text(driver: SocketAddr, base: &str, element_id: &str) -> String {
    let script = format!("return document.getElementById('{element_id}').textContent;");
    let what = format!("#{element_id} to show a text");
    let script = script.as_str();
    wait_for(&what, || async move {
        let text = execute(driver, base, script).await;
        text.as_str().filter(|t| !t.is_empty()).map(str::to_owned)
    })
    .await
}

/// Standard base64 (WebDriver screenshots), without a dependency for one test.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// One row of the page's log.
#[derive(Debug)]
struct Row {
    id: String,
    data: String,
    replayed: bool,
}

/// Waits until the log holds exactly `ids` (oldest first) and returns its rows.
async fn wait_for_rows(driver: SocketAddr, base: &str, ids: &[&str]) -> Vec<Row> {
    let script = "return Array.from(document.querySelectorAll('#log tr.event')).reverse()\
                  .map(r => [r.dataset.id, r.children[3].textContent, r.classList.contains('replayed')]);";
    let what = format!("the page's log to show {ids:?}");
    wait_for(&what, || async move {
        let value = execute(driver, base, script).await;
        let rows: Vec<Row> = value
            .as_array()?
            .iter()
            .map(|r| Row {
                id: r[0].as_str().unwrap_or_default().to_owned(),
                data: r[1].as_str().unwrap_or_default().to_owned(),
                replayed: r[2] == true,
            })
            .collect();
        let shown: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        (shown == ids).then_some(rows)
    })
    .await
}

async fn wait_for_state(driver: SocketAddr, base: &str, state: &str) {
    let what = format!("the connection state to be {state}");
    wait_for(&what, || async move {
        let value = execute(
            driver,
            base,
            "return document.getElementById('state').dataset.state;",
        )
        .await;
        (value == state).then_some(())
    })
    .await;
}

async fn click(driver: SocketAddr, base: &str, element_id: &str) {
    execute(
        driver,
        base,
        &format!("document.getElementById('{element_id}').click(); return true;"),
    )
    .await;
}

async fn execute(driver: SocketAddr, base: &str, script: &str) -> Value {
    let body = json!({ "script": script, "args": [] });
    webdriver(
        driver,
        Method::POST,
        &format!("{base}/execute/sync"),
        Some(body),
    )
    .await["value"]
        .take()
}

async fn webdriver(driver: SocketAddr, method: Method, path: &str, body: Option<Value>) -> Value {
    let what = format!("{method} {path}");
    tokio::time::timeout(BROWSER_PATIENCE, try_request(driver, method, path, body))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"))
        .unwrap_or_else(|| panic!("{what}: failed"))
}

async fn try_request(
    driver: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<Value> {
    let tcp = tokio::net::TcpStream::connect(driver).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", driver.to_string())
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes))
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .ok()?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body).ok()?;
    if value["value"]["error"].is_string() {
        panic!("WebDriver error: {value}");
    }
    Some(value)
}

/// Polls `check` until it gives a value, failing the test after [`BROWSER_PATIENCE`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + BROWSER_PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn stop_child(child: &mut Child) {
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
