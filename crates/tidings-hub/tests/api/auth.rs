//! Tokens: a hub with a key refuses publishes and (when asked) reads without a token that
//! grants their topics, with 401 or 403 problem+json, and stores nothing it refused.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::common::{request, Reply, TestHub};
use tidings_hub::auth::{issue, Access, AuthSettings, JwtKey, Rights};
use tidings_hub::topics::TopicPattern;
use tidings_hub::Settings;

const SECRET: &str = "a test secret of thirty-two bytes";

fn token(publish: &[&str], subscribe: &[&str]) -> String {
    let patterns = |texts: &[&str]| -> Vec<TopicPattern> {
        texts
            .iter()
            .map(|t| TopicPattern::parse(t).expect(t))
            .collect()
    };
    let rights = Rights {
        publish: patterns(publish),
        subscribe: patterns(subscribe),
    };
    issue(
        SECRET.as_bytes(),
        &rights,
        Some(Duration::from_secs(600)),
        None,
    )
    .expect("token")
}

async fn hub_with(publish: Access, subscribe: Access) -> TestHub {
    TestHub::start(Settings {
        auth: AuthSettings {
            key: Some(JwtKey::Secret(SECRET.to_owned())),
            audience: None,
            publish,
            subscribe,
        },
        ..Settings::default()
    })
    .await
}

async fn publish_with(hub: &TestHub, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(
        hub.addr,
        Method::POST,
        "/publish",
        &all,
        Bytes::from(body.to_owned()),
    )
    .await
}

async fn get_with(hub: &TestHub, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(hub.addr, Method::GET, path, headers, Bytes::new()).await
}

/// The topics the hub stored anything in, read with a token that may read everything.
async fn stored_topics(hub: &TestHub) -> Vec<String> {
    let all = format!("Bearer {}", token(&[], &["*"]));
    let listing = get_with(hub, "/topics", &[("authorization", &all)]).await;
    assert_eq!(listing.status, 200, "{}", listing.text());
    listing.json()["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter(|row| row["published"].as_u64() > Some(0))
        .map(|row| row["topic"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn publishing_takes_a_token_that_grants_every_topic() {
    let hub = hub_with(Access::Token, Access::Token).await;
    let body = r#"{"topic":"orders","data":"x"}"#;

    let missing = publish_with(&hub, &[], body).await;
    let detail = missing.assert_problem(401);
    assert!(detail.contains("Authorization: Bearer"), "{detail}");
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"tidings\"")
    );

    let garbled = publish_with(&hub, &[("authorization", "Bearer nonsense")], body).await;
    let detail = garbled.assert_problem(401);
    assert!(detail.contains("not a JWT"), "{detail}");
    let challenge = garbled.header("www-authenticate").expect("challenge");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    let granted = format!("Bearer {}", token(&["orders"], &[]));
    let two = publish_with(
        &hub,
        &[
            ("authorization", &granted),
            ("authorization", "Bearer junk"),
        ],
        body,
    )
    .await;
    assert!(two
        .assert_problem(400)
        .contains("several Authorization headers"));
    let basic = publish_with(&hub, &[("authorization", "Basic dXNlcjpwYXNz")], body).await;
    assert!(basic.assert_problem(401).contains("Bearer"));

    let other_topics = format!("Bearer {}", token(&["chat/*"], &[]));
    let refused = publish_with(&hub, &[("authorization", &other_topics)], body).await;
    let detail = refused.assert_problem(403);
    assert!(
        detail.contains("\"orders\"") && detail.contains("chat/*"),
        "{detail}"
    );

    // A batch with one topic not granted stores nothing, not even the granted ones.
    let batch = r#"[{"topic":"chat/a","data":"1"},{"topic":["chat/b","orders"],"data":"2"}]"#;
    publish_with(&hub, &[("authorization", &other_topics)], batch)
        .await
        .assert_problem(403);
    // A token from the query string is not taken for publishing (it would end up in logs).
    let in_query = format!("/publish?access_token={}", token(&["*"], &[]));
    let reply = request(
        hub.addr,
        Method::POST,
        &in_query,
        &[("content-type", "application/json")],
        Bytes::from_static(body.as_bytes()),
    )
    .await;
    reply.assert_problem(401);
    assert_eq!(stored_topics(&hub).await, Vec::<String>::new());

    let granted = format!("Bearer {}", token(&["orders", "chat/*"], &[]));
    let ok = publish_with(&hub, &[("authorization", &granted)], batch).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(stored_topics(&hub).await, ["chat/a", "chat/b", "orders"]);
}

#[tokio::test]
async fn reading_takes_a_token_from_the_header_the_query_or_a_cookie() {
    let hub = hub_with(Access::Token, Access::Token).await;
    let publisher = format!("Bearer {}", token(&["*"], &[]));
    for topics in [json!(["chat/a", "secret/payroll"]), json!("secret")] {
        let data = if topics.is_array() {
            "chat/a"
        } else {
            "secret"
        };
        let body = json!({"topic": topics, "data": data}).to_string();
        let reply = publish_with(&hub, &[("authorization", &publisher)], &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reader = token(&[], &["chat/*"]);

    // No token: 401 on every read route, with what to send.
    for path in ["/events?topic=chat/a", "/topics", "/topics/chat/a/events"] {
        let detail = get_with(&hub, path, &[]).await.assert_problem(401);
        assert!(detail.contains("access_token"), "{path}: {detail}");
    }
    // A publish-only token reads nothing.
    let publish_only = format!("/events?topic=chat/a&access_token={}", token(&["*"], &[]));
    get_with(&hub, &publish_only, &[]).await.assert_problem(403);

    // The query parameter (what EventSource can send), the header, and a cookie among
    // others: each stream gets the next event.
    let bearer = format!("Bearer {reader}");
    let cookie = format!("theme=dark; tidings_token={reader}; other=1");
    let mut streams = vec![
        hub.stream(&format!("/events?topic=chat/a&access_token={reader}"))
            .await,
        hub.stream_with("/events?topic=chat/*", &[("authorization", &bearer)])
            .await,
        hub.stream_with("/events?topic=chat/a", &[("cookie", &cookie)])
            .await,
    ];
    let body = json!({"topic": "chat/a", "data": "live"}).to_string();
    let reply = publish_with(&hub, &[("authorization", &publisher)], &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for stream in &mut streams {
        assert_eq!(stream.expect_event().await.data, "live");
    }

    // Topics and patterns the token does not grant.
    for path in [
        "/events?topic=chat/a&topic=secret",
        "/events?topic=*",
        "/topics/secret/events",
        "/topics/*/events",
    ] {
        let reply = get_with(&hub, path, &[("authorization", &bearer)]).await;
        let detail = reply.assert_problem(403);
        assert!(detail.contains("chat/*"), "{path}: {detail}");
        let challenge = reply.header("www-authenticate").expect("challenge");
        assert!(challenge.contains("insufficient_scope"), "{challenge}");
    }
    // History and the listing show what the token grants only.
    let history = get_with(
        &hub,
        &format!("/topics/chat/a/events?access_token={reader}"),
        &[],
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.text());
    assert_eq!(history.json()["events"][0]["data"], "chat/a");
    // An event stored in several topics lists only those the token may read.
    assert_eq!(history.json()["events"][0]["topics"], json!(["chat/a"]));
    let listing = get_with(&hub, "/topics", &[("authorization", &bearer)]).await;
    let names: Vec<String> = listing.json()["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|row| row["topic"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["chat/a"]);
    // A token twice in the query is a 400, not a guess.
    let twice = format!("/events?topic=chat/a&access_token={reader}&access_token={reader}");
    get_with(&hub, &twice, &[]).await.assert_problem(400);
}

#[tokio::test]
async fn open_reads_and_publish_only_tokens_by_default_with_a_key() {
    // With only a key set (as `--jwt-secret` alone gives), publishing takes a token and
    // subscribing stays open.
    let settings = tidings_hub::Config {
        jwt_secret: Some(tidings_hub::config::Secret(SECRET.to_owned())),
        ..tidings_hub::Config::default()
    }
    .resolve()
    .expect("settings");
    assert_eq!(settings.auth.publish, Access::Token);
    assert_eq!(settings.auth.subscribe, Access::Open);
    let hub = hub_with(settings.auth.publish, settings.auth.subscribe).await;
    publish_with(&hub, &[], r#"{"topic":"a","data":"x"}"#)
        .await
        .assert_problem(401);
    let mut stream = hub.stream("/events?topic=a").await;
    let granted = format!("Bearer {}", token(&["a"], &[]));
    let reply = publish_with(
        &hub,
        &[("authorization", &granted)],
        r#"{"topic":"a","data":"x"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(stream.expect_event().await.data, "x");
    assert_eq!(get_with(&hub, "/topics", &[]).await.status, 200);
}

#[tokio::test]
async fn a_public_key_hub_takes_tokens_signed_with_its_private_key() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let hub = TestHub::start(Settings {
        auth: AuthSettings {
            key: Some(JwtKey::PublicKeyFile(fixtures.join("jwt-es256-public.pem"))),
            audience: Some("tidings-test".to_owned()),
            publish: Access::Token,
            subscribe: Access::Open,
        },
        ..Settings::default()
    })
    .await;
    let private = std::fs::read(fixtures.join("jwt-es256-private.pem")).expect("key");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&private).expect("ec key");
    let sign = |claims: serde_json::Value| {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, &key).expect("sign")
        )
    };
    let body = r#"{"topic":"a","data":"x"}"#;
    let good = sign(json!({"aud": "tidings-test", "tidings": {"publish": ["a"]}}));
    let reply = publish_with(&hub, &[("authorization", &good)], body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let wrong_audience = sign(json!({"aud": "another-service", "tidings": {"publish": ["a"]}}));
    let detail = publish_with(&hub, &[("authorization", &wrong_audience)], body)
        .await
        .assert_problem(401);
    assert!(detail.contains("tidings-test"), "{detail}");
    // A token signed with a secret equal to the public key's text (the old "HS256 with
    // the public key" confusion) is refused.
    let pem = std::fs::read(fixtures.join("jwt-es256-public.pem")).expect("pem");
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"aud": "tidings-test", "tidings": {"publish": ["a"]}}),
        &jsonwebtoken::EncodingKey::from_secret(&pem),
    )
    .expect("sign");
    publish_with(
        &hub,
        &[("authorization", &format!("Bearer {confused}"))],
        body,
    )
    .await
    .assert_problem(401);
}

#[tokio::test]
async fn metrics_count_refusals_publishes_and_deliveries() {
    let hub = hub_with(Access::Token, Access::Open).await;
    let mut stream = hub.stream("/events?topic=a").await;
    let body = r#"{"topic":"a","data":"x"}"#;
    publish_with(&hub, &[], body).await.assert_problem(401);
    let other = format!("Bearer {}", token(&["b"], &[]));
    publish_with(&hub, &[("authorization", &other)], body)
        .await
        .assert_problem(403);
    let granted = format!("Bearer {}", token(&["a"], &[]));
    let ok = publish_with(&hub, &[("authorization", &granted)], body).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(stream.expect_event().await.data, "x");

    let reply = get_with(&hub, "/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    let value = |sample: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    };
    assert_eq!(value("tidings_connections"), 1);
    assert_eq!(value("tidings_published_total"), 1);
    assert_eq!(value("tidings_delivered_total"), 1);
    assert_eq!(value("tidings_refused_total{status=\"401\"}"), 1);
    assert_eq!(value("tidings_refused_total{status=\"403\"}"), 1);
    assert_eq!(
        value("tidings_slow_client_total{action=\"disconnected\"}"),
        0
    );
    assert_eq!(value("tidings_ready"), 1);
    assert!(
        text.contains("# TYPE tidings_delivered_total counter"),
        "{text}"
    );
    assert!(text.contains("tidings_info{version=\""), "{text}");
}
