use super::*;

use std::path::Path;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// Test-only key pairs, committed beside the hub's tests.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn signed(claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    encode(&Header::new(alg), claims, key).expect("sign")
}

fn hs256(claims: &Value) -> String {
    signed(claims, Algorithm::HS256, &EncodingKey::from_secret(SECRET))
}

/// The claims of a token signed with `SECRET`, as JSON.
fn claims_of(token: &str) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(SECRET), &validation)
        .expect("decode")
        .claims
}

fn patterns(texts: &[&str]) -> Vec<TopicPattern> {
    texts
        .iter()
        .map(|t| TopicPattern::parse(t).expect(t))
        .collect()
}

fn error_of(verifier: &Verifier, token: &str) -> String {
    let err = verifier.verify(token).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidToken);
    err.to_string()
}

#[test]
fn issued_tokens_verify_to_their_rights() {
    let rights = Rights {
        publish: patterns(&["orders", "chat/*"]),
        subscribe: patterns(&["*"]),
    };
    let token = issue(SECRET, &rights, Some(Duration::from_secs(3600)), None).expect("issue");
    let verifier = Verifier::from_secret(SECRET, None);
    assert_eq!(verifier.verify(&token).expect("valid"), rights);
    let claims = claims_of(&token);
    assert_eq!(claims["tidings"]["publish"], json!(["orders", "chat/*"]));
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp >= now() + 3590 && exp <= now() + 3600, "{exp}");

    let forever = issue(SECRET, &rights, None, None).expect("issue");
    let claims = claims_of(&forever);
    assert!(claims.get("exp").is_none(), "no ttl, no exp: {claims}");
    assert_eq!(verifier.verify(&forever).expect("valid"), rights);
}

#[test]
fn rights_grant_topics_and_narrower_patterns() {
    let rights = Rights {
        publish: patterns(&["orders", "chat/*"]),
        subscribe: patterns(&["news", "chat/*"]),
    };
    let topic = |t: &str| Topic::new(t).expect(t);
    assert!(rights.may_publish(&topic("orders")));
    assert!(rights.may_publish(&topic("chat/x/y")));
    assert!(!rights.may_publish(&topic("chat")));
    assert!(!rights.may_publish(&topic("news")));
    for yes in ["news", "chat/x", "chat/*", "chat/x/*"] {
        assert!(rights.may_subscribe(&patterns(&[yes])[0]), "{yes}");
    }
    for no in ["*", "news/*", "orders", "chat"] {
        assert!(!rights.may_subscribe(&patterns(&[no])[0]), "{no}");
    }
    assert!(!Rights::default().may_publish(&topic("a")));
}

#[test]
fn a_token_without_the_claim_grants_nothing() {
    let verifier = Verifier::from_secret(SECRET, None);
    let rights = verifier
        .verify(&hs256(&json!({"sub": "x"})))
        .expect("valid");
    assert_eq!(rights, Rights::default());
}

#[test]
fn numeric_dates_may_have_fractions() {
    let verifier = Verifier::from_secret(SECRET, None);
    let exp = now() as f64 + 600.5;
    let token = hs256(&json!({"exp": exp, "iat": 1.5, "tidings": {"publish": ["a"]}}));
    let rights = verifier.verify(&token).expect("valid");
    assert_eq!(rights.publish, patterns(&["a"]));
}

#[test]
fn refusals_say_why() {
    let verifier = Verifier::from_secret(SECRET, None);
    let expired = hs256(&json!({"exp": now() - 3600, "tidings": {"publish": ["a"]}}));
    assert!(error_of(&verifier, &expired).contains("expired"));
    let early = hs256(&json!({"nbf": now() + 3600}));
    assert!(error_of(&verifier, &early).contains("not valid yet"));
    let other_key = signed(
        &json!({"tidings": {"publish": ["a"]}}),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret, another hub......"),
    );
    assert!(error_of(&verifier, &other_key).contains("signature"));
    assert!(error_of(&verifier, "not.a.token").contains("not a JWT"));
    assert!(error_of(&verifier, "").contains("not a JWT"));
    let bad_pattern = hs256(&json!({"tidings": {"subscribe": ["chat*"]}}));
    assert!(error_of(&verifier, &bad_pattern).contains("tidings.subscribe claim holds \"chat*\""));
    let typo = hs256(&json!({"tidings": {"subscibe": ["a"]}}));
    assert!(error_of(&verifier, &typo).contains("malformed"));
    let not_a_list = hs256(&json!({"tidings": {"publish": "a"}}));
    assert!(error_of(&verifier, &not_a_list).contains("malformed"));
}

#[test]
fn times_that_are_not_numbers_are_refused() {
    let verifier = Verifier::from_secret(SECRET, None);
    for claims in [
        json!({"exp": "0"}),
        json!({"exp": -1}),
        json!({"exp": true}),
        json!({"nbf": "9999999999"}),
        json!({"exp": null}),
    ] {
        let refused = error_of(&verifier, &hs256(&claims));
        assert!(refused.contains("not a time"), "{claims}: {refused}");
    }
    // Numbers too large for a u64 are times all the same.
    for nbf in [json!(1e20), json!(1e308)] {
        let refused = error_of(&verifier, &hs256(&json!({"nbf": nbf})));
        assert!(refused.contains("not valid yet"), "{nbf}: {refused}");
    }
    assert!(verifier.verify(&hs256(&json!({"exp": 1e20}))).is_ok());
}

#[test]
fn headers_must_name_an_algorithm_and_no_critical_extension() {
    let verifier = Verifier::from_secret(SECRET, None);
    let with_header = |header: &str| {
        let good = hs256(&json!({}));
        let (_, rest) = good.split_once('.').expect("three parts");
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header))
    };
    for (header, expected) in [
        ("[]", "not a JSON object"),
        ("{\"typ\":\"JWT\"}", "names no algorithm"),
        (
            "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
            "critical extensions",
        ),
        ("not json", "not JSON"),
        ("{\"alg\":\"none\"}", "algorithm \"none\""),
        ("{\"alg\":\"hs256\"}", "algorithm \"hs256\""),
        ("{\"alg\":\"HS256\",\"kid\":5}", "header is malformed"),
    ] {
        let refused = error_of(&verifier, &with_header(header));
        assert!(refused.contains(expected), "{header}: {refused}");
    }
    // Signed as it is, so that only the header is wrong.
    let signed_with_crit = {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","crit":["exp"]}"#);
        let claims = URL_SAFE_NO_PAD.encode(r#"{"tidings":{"publish":["a"]}}"#);
        let message = format!("{header}.{claims}");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    };
    assert!(error_of(&verifier, &signed_with_crit).contains("critical extensions"));
    let claim_not_an_object = error_of(&verifier, &hs256(&json!({"tidings": 5})));
    assert!(
        claim_not_an_object.contains("not an object"),
        "{claim_not_an_object}"
    );
    assert!(
        !claim_not_an_object.contains("struct"),
        "{claim_not_an_object}"
    );
    assert!(error_of(&verifier, "a.b").contains("not a JWT"));
    assert!(error_of(&verifier, "a.b.c.d").contains("not a JWT"));
}

#[test]
fn unsigned_and_other_algorithm_tokens_are_refused() {
    let verifier = Verifier::from_secret(SECRET, None);
    // alg "none": header {"alg":"none"}, claims granting everything, no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ0aWRpbmdzIjp7InB1Ymxpc2giOlsiKiJdfX0.";
    error_of(&verifier, none);
    // A token signed with an EC key, presented to a hub with a secret.
    let es256 = signed(
        &json!({"tidings": {"publish": ["*"]}}),
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&std::fs::read(fixture("jwt-es256-private.pem")).expect("key"))
            .expect("ec key"),
    );
    assert!(error_of(&verifier, &es256).contains("algorithm"));
}

#[test]
fn the_audience_is_required_when_set() {
    let verifier = Verifier::from_secret(SECRET, Some("hub-1"));
    let issued = issue(SECRET, &Rights::default(), None, Some("hub-1")).expect("issue");
    assert!(verifier.verify(&issued).is_ok());
    assert!(verifier.verify(&hs256(&json!({"aud": "hub-1"}))).is_ok());
    assert!(verifier
        .verify(&hs256(&json!({"aud": ["other", "hub-1"]})))
        .is_ok());
    assert!(error_of(&verifier, &hs256(&json!({"aud": "hub-2"}))).contains("hub-1"));
    assert!(error_of(&verifier, &hs256(&json!({}))).contains("hub-1"));
    // Without an audience setting, aud is not looked at.
    let open = Verifier::from_secret(SECRET, None);
    assert!(open.verify(&hs256(&json!({"aud": "anything"}))).is_ok());
}

#[test]
fn public_keys_of_each_kind_verify_their_signatures() {
    let cases = [
        ("jwt-es256", Algorithm::ES256),
        ("jwt-ed25519", Algorithm::EdDSA),
        ("jwt-rs256", Algorithm::RS256),
    ];
    for (name, alg) in cases {
        let settings = AuthSettings {
            key: Some(JwtKey::PublicKeyFile(fixture(&format!(
                "{name}-public.pem"
            )))),
            publish: Access::Token,
            ..AuthSettings::default()
        };
        settings.validate().expect(name);
        let verifier = Verifier::new(&settings).expect(name).expect("a key");
        let private = std::fs::read(fixture(&format!("{name}-private.pem"))).expect(name);
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&private),
            _ => EncodingKey::from_rsa_pem(&private),
        }
        .expect(name);
        let token = signed(&json!({"tidings": {"publish": ["a/*"]}}), alg, &key);
        let rights = verifier.verify(&token).expect(name);
        assert_eq!(rights.publish, patterns(&["a/*"]), "{name}");
        // The hub's secret-signed token does not pass a public-key hub.
        assert!(verifier.verify(&hs256(&json!({}))).is_err(), "{name}");
    }
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let needs_key = AuthSettings {
        subscribe: Access::Token,
        ..AuthSettings::default()
    };
    let err = needs_key.validate().expect_err("no key");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string()
            .contains("subscribe_auth = token needs a key"),
        "{err}"
    );

    let empty = AuthSettings {
        key: Some(JwtKey::Secret(String::new())),
        ..AuthSettings::default()
    };
    assert!(empty
        .validate()
        .expect_err("empty")
        .to_string()
        .contains("jwt_secret is empty"));

    let missing = AuthSettings {
        key: Some(JwtKey::PublicKeyFile(fixture("no-such-key.pem"))),
        ..AuthSettings::default()
    };
    assert!(missing
        .validate()
        .expect_err("missing")
        .to_string()
        .contains("cannot read"));

    let not_a_key = AuthSettings {
        key: Some(JwtKey::PublicKeyFile(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
        )),
        ..AuthSettings::default()
    };
    let err = not_a_key.validate().expect_err("not a key");
    assert!(err.to_string().contains("holds no PEM block"), "{err}");

    let audience_without_key = AuthSettings {
        audience: Some("hub".to_owned()),
        ..AuthSettings::default()
    };
    let err = audience_without_key.validate().expect_err("no key");
    assert!(err.to_string().contains("jwt_audience is set but"), "{err}");

    let empty_audience = AuthSettings {
        key: Some(JwtKey::Secret("s".repeat(32))),
        audience: Some(String::new()),
        ..AuthSettings::default()
    };
    assert!(empty_audience.validate().is_err());
}

#[test]
fn debug_output_never_shows_the_secret() {
    let settings = AuthSettings {
        key: Some(JwtKey::Secret("hunter2-hunter2".into())),
        ..AuthSettings::default()
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<hidden>"), "{shown}");
}
