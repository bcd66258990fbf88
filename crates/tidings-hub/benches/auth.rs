//! What checking a token costs a request: `Verifier::verify` on the tokens a hub takes,
//! HS256 (a `jwt_secret`) and ES256, EdDSA and RS256 (a `jwt_public_key`).
//!
//! Run: `cargo bench -p tidings-hub --bench auth -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tidings_hub::auth::{Access, AuthSettings, JwtKey, Verifier};

const SECRET: &str = "a benchmark secret of 32 bytes..";

fn claims() -> serde_json::Value {
    json!({"exp": 4_000_000_000u64, "tidings": {"publish": ["orders", "chat/*"], "subscribe": ["chat/*"]}})
}

fn public_key_verifier(name: &str, alg: Algorithm) -> (Verifier, String) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let settings = AuthSettings {
        key: Some(JwtKey::PublicKeyFile(
            fixtures.join(format!("{name}-public.pem")),
        )),
        publish: Access::Token,
        ..AuthSettings::default()
    };
    let verifier = Verifier::new(&settings)
        .expect("valid key")
        .expect("a verifier");
    let private = std::fs::read(fixtures.join(format!("{name}-private.pem"))).expect("key");
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&private),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&private),
        _ => EncodingKey::from_rsa_pem(&private),
    }
    .expect("private key");
    let token = jsonwebtoken::encode(&Header::new(alg), &claims(), &key).expect("sign");
    (verifier, token)
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    let hs256 = Verifier::from_secret(SECRET.as_bytes(), None);
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    group.bench_function("HS256", |b| {
        b.iter(|| hs256.verify(black_box(&token)).expect("valid"))
    });
    for (name, alg) in [
        ("jwt-es256", Algorithm::ES256),
        ("jwt-ed25519", Algorithm::EdDSA),
        ("jwt-rs256", Algorithm::RS256),
    ] {
        let (verifier, token) = public_key_verifier(name, alg);
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| verifier.verify(black_box(&token)).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
