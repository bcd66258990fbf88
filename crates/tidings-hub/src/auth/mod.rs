//! Who may publish and subscribe: JSON Web Tokens (JWT, RFC 7519) that name the topics.
//!
//! A hub with a key (`jwt_secret` for HMAC, or `jwt_public_key` for RSA, ECDSA or Ed25519
//! signatures) checks a token on every publish, and on every subscription and history
//! read when `subscribe_auth = "token"`. A token grants topics in its `tidings` claim:
//!
//! ```json
//! {"exp": 1795300000, "tidings": {"publish": ["orders", "chat/*"], "subscribe": ["*"]}}
//! ```
//!
//! - `publish`: the topics it may publish to, as topics or patterns (`chat/*`, `*`). Every
//!   topic of every event in a request must be granted, or nothing is stored.
//! - `subscribe`: what it may subscribe to and read the history of. A requested topic is
//!   granted by a pattern that matches it; a requested pattern only by a pattern at least
//!   as wide (`chat/*` is granted by `chat/*` or `*`, not by `chat/room-1`).
//! - `exp` and `nbf` are checked when present (60 s of leeway for clocks), and must be
//!   numbers of seconds; `aud` must name `jwt_audience` when that is set. Other claims
//!   (`sub`, `iss`, ...) are left alone. A header with `crit` extensions is refused.
//!
//! Tokens are checked when a request arrives: a stream that is open when its token
//! expires stays open, and the browser's next reconnect with the same token is refused.
//!
//! Make one with `tidings token` or with any JWT library:
//!
//! ```
//! use tidings_hub::auth::{issue, Rights, Verifier};
//! use tidings_hub::topics::TopicPattern;
//!
//! let secret = b"a secret of at least 32 bytes, please!";
//! let rights = Rights {
//!     publish: vec![TopicPattern::parse("orders")?],
//!     subscribe: vec![TopicPattern::parse("chat/*")?],
//! };
//! let token = issue(secret, &rights, None, None)?;
//! let verifier = Verifier::from_secret(secret, None);
//! assert_eq!(verifier.verify(&token)?, rights);
//! # Ok::<(), tidings_hub::Error>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::topics::{Topic, TopicPattern};

/// The claim that holds a token's rights.
pub const CLAIM: &str = "tidings";

/// Seconds of clock difference allowed when checking `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// HMAC secrets shorter than this are warned about (RFC 7518 §3.2 asks for at least the
/// hash's size: 32 bytes for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether an operation needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Anyone who can reach the hub.
    #[default]
    Open,
    /// Only with a valid token that grants the topics.
    Token,
}

/// The key tokens are checked with.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// A shared secret: tokens signed with HS256, HS384 or HS512.
    Secret(String),
    /// A PEM file with a public key: RSA (RS256-512, PS256-512), ECDSA P-256/P-384
    /// (ES256, ES384) or Ed25519 (EdDSA).
    PublicKeyFile(PathBuf),
}

impl fmt::Debug for JwtKey {
    /// Never shows the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<hidden>)"),
            JwtKey::PublicKeyFile(path) => f.debug_tuple("PublicKeyFile").field(path).finish(),
        }
    }
}

/// The hub's token settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthSettings {
    /// The key tokens are checked with (`None`: tokens cannot be checked, so both kinds of
    /// access must be open).
    pub key: Option<JwtKey>,
    /// When set, a token's `aud` must name it.
    pub audience: Option<String>,
    /// Who may publish.
    pub publish: Access,
    /// Who may subscribe and read history.
    pub subscribe: Access,
}

impl AuthSettings {
    /// Checks that the settings make sense together, and that the key can be read.
    ///
    /// # Errors
    /// As [`AuthSettings::verifier`].
    pub fn validate(&self) -> Result<(), Error> {
        self.verifier().map(|_| ())
    }

    /// The verifier of these settings (`None` when they give no key), once they are
    /// checked to make sense together.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when a kind of access needs a token but there is no key, an
    /// audience is set without a key or empty, the secret is empty, or the public key file
    /// cannot be read or holds no public key the hub can check with.
    pub fn verifier(&self) -> Result<Option<Verifier>, Error> {
        for (name, access) in [
            ("publish_auth", self.publish),
            ("subscribe_auth", self.subscribe),
        ] {
            if access == Access::Token && self.key.is_none() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{name} = token needs a key to check tokens with: set jwt_secret or jwt_public_key"),
                ));
            }
        }
        if self.audience.is_some() && self.key.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "jwt_audience is set but there is no key to check tokens with: set jwt_secret or jwt_public_key too",
            ));
        }
        if self.audience.as_deref() == Some("") {
            return Err(Error::new(
                ErrorKind::Config,
                "jwt_audience is empty; name the audience tokens must carry in `aud`, or leave it out",
            ));
        }
        Verifier::new(self)
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rights {
    /// Topics and patterns it may publish to.
    pub publish: Vec<TopicPattern>,
    /// Topics and patterns it may subscribe to and read the history of.
    pub subscribe: Vec<TopicPattern>,
}

impl Rights {
    /// Whether these rights allow publishing to `topic`.
    pub fn may_publish(&self, topic: &Topic) -> bool {
        self.publish.iter().any(|granted| granted.matches(topic))
    }

    /// Whether these rights allow reading `topic` (subscribing to it, its history).
    pub fn may_read(&self, topic: &Topic) -> bool {
        self.subscribe.iter().any(|granted| granted.matches(topic))
    }

    /// Whether these rights allow subscribing to `wanted` (a topic, or a pattern no wider
    /// than a granted one).
    pub fn may_subscribe(&self, wanted: &TopicPattern) -> bool {
        self.subscribe.iter().any(|granted| granted.covers(wanted))
    }
}

/// The `tidings` claim as it is written in a token.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RightsClaim {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subscribe: Vec<String>,
}

/// The claims [`issue`] writes.
#[derive(Debug, Serialize)]
struct Claims {
    tidings: RightsClaim,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// Checks tokens against the hub's key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier `settings` describe, or `None` when they give no key.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the secret is empty, or the public key file cannot be
    /// read or holds no single public key the hub can check signatures with (RSA of 2048
    /// bits or more, EC P-256 or P-384, Ed25519).
    pub fn new(settings: &AuthSettings) -> Result<Option<Verifier>, Error> {
        let audience = settings.audience.as_deref();
        match &settings.key {
            None => Ok(None),
            Some(JwtKey::Secret(secret)) if secret.is_empty() => Err(Error::new(
                ErrorKind::Config,
                "jwt_secret is empty; give a secret of at least 32 bytes",
            )),
            Some(JwtKey::Secret(secret)) => {
                Ok(Some(Verifier::from_secret(secret.as_bytes(), audience)))
            }
            Some(JwtKey::PublicKeyFile(path)) => {
                let (key, algorithms) = key::read_public_key(path)?;
                Ok(Some(Verifier::with_key(key, algorithms, audience)))
            }
        }
    }

    /// A verifier of HMAC-signed tokens (HS256, HS384, HS512) made with `secret`; with an
    /// `audience`, a token's `aud` must name it.
    pub fn from_secret(secret: &[u8], audience: Option<&str>) -> Verifier {
        Verifier::with_key(
            DecodingKey::from_secret(secret),
            &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            audience,
        )
    }

    fn with_key(key: DecodingKey, algorithms: &[Algorithm], audience: Option<&str>) -> Verifier {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.set_required_spec_claims(&["aud"]);
            }
            None => validation.validate_aud = false,
        }
        Verifier { key, validation }
    }

    /// The rights `token` grants.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidToken`] when the token is not a JWT, its signature or algorithm
    /// does not fit the key, it has expired or is not valid yet, its `aud` is wrong, or its
    /// `tidings` claim is malformed; the message says which, for people.
    pub fn verify(&self, token: &str) -> Result<Rights, Error> {
        let claims = match jsonwebtoken::decode::<Value>(token, &self.key, &self.validation) {
            Ok(data) => data.claims,
            // A malformed part, when there is one, says more than `jsonwebtoken`'s error.
            Err(err) => {
                check_parts(token)?;
                return Err(invalid_token(self.explain(&err)));
            }
        };
        // A token `jsonwebtoken` takes is well formed; it does not look at `crit`.
        check_header(token)?;
        check_times(&claims)?;
        let claim: RightsClaim = match claims.get(CLAIM) {
            None | Some(Value::Null) => RightsClaim::default(),
            Some(value @ Value::Object(_)) => serde_json::from_value(value.clone())
                .map_err(|err| invalid_token(format!("the token's {CLAIM} claim is malformed: {err}")))?,
            Some(_) => {
                return Err(invalid_token(format!(
                    "the token's {CLAIM} claim is not an object such as {{\"publish\": [\"orders\"], \"subscribe\": [\"chat/*\"]}}"
                )))
            }
        };
        Ok(Rights {
            publish: parse_patterns(&claim.publish, "publish")?,
            subscribe: parse_patterns(&claim.subscribe, "subscribe")?,
        })
    }

    fn explain(&self, err: &jsonwebtoken::errors::Error) -> String {
        match err.kind() {
            JwtErrorKind::ExpiredSignature => "the token has expired (its exp is past)".into(),
            JwtErrorKind::ImmatureSignature => {
                "the token is not valid yet (its nbf is in the future)".into()
            }
            JwtErrorKind::InvalidSignature => {
                "the token's signature does not match this hub's key".into()
            }
            JwtErrorKind::InvalidAlgorithm => format!(
                "the token is signed with an algorithm this hub's key does not take (it takes {})",
                self.validation
                    .algorithms
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            JwtErrorKind::InvalidAudience | JwtErrorKind::MissingRequiredClaim(_) => format!(
                "the token's aud does not name this hub's audience {:?}",
                self.validation
                    .aud
                    .iter()
                    .flatten()
                    .next()
                    .map_or("", String::as_str)
            ),
            // The header and the claims' shapes were checked (`check_parts`).
            JwtErrorKind::Json(err) => format!("the token's claims are malformed: {err}"),
            _ => NOT_A_JWT.into(),
        }
    }
}

/// Makes an HS256 token granting `rights`, signed with `secret`, expiring after `ttl`
/// (`None`: never), for `audience` when given (its `aud` claim).
///
/// # Errors
/// [`ErrorKind::InvalidToken`] when signing fails (it does not with a secret).
pub fn issue(
    secret: &[u8],
    rights: &Rights,
    ttl: Option<Duration>,
    audience: Option<&str>,
) -> Result<String, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        tidings: RightsClaim {
            publish: rights.publish.iter().map(ToString::to_string).collect(),
            subscribe: rights.subscribe.iter().map(ToString::to_string).collect(),
        },
        exp: ttl.map(|ttl| now.saturating_add(ttl.as_secs().max(1))),
        iat: now,
        aud: audience.map(str::to_owned),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|err| invalid_token(format!("cannot sign the token: {err}")))
}

fn invalid_token(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidToken, message)
}

const NOT_A_JWT: &str = "not a JWT: expected three base64url parts separated by dots";

/// Says what `jsonwebtoken` reports too vaguely, for a token it refused: the header as
/// [`check_header`] does, a header of the form `jsonwebtoken` reads, claims that are a
/// JSON object.
fn check_parts(token: &str) -> Result<(), Error> {
    check_header(token)?;
    if jsonwebtoken::decode_header(token).is_err() {
        return Err(invalid_token(
            "the token's header is malformed: its typ, cty, kid, jku and x5u must be strings",
        ));
    }
    let claims = token.split('.').nth(1).unwrap_or_default();
    if !part_json(claims, "claims")?.is_object() {
        return Err(invalid_token("the token's claims are not a JSON object"));
    }
    Ok(())
}

/// Checks a token's three parts and its header: a JSON object naming a known algorithm,
/// with no extension the hub would have to understand (`crit`, RFC 7515 §4.1.11), which
/// `jsonwebtoken` does not look at.
fn check_header(token: &str) -> Result<(), Error> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_token(NOT_A_JWT));
    };
    let header = part_json(header, "header fields")?;
    let Some(fields) = header.as_object() else {
        return Err(invalid_token("the token's header is not a JSON object"));
    };
    let Some(alg) = fields.get("alg").and_then(Value::as_str) else {
        return Err(invalid_token("the token's header names no algorithm (alg)"));
    };
    if alg.parse::<Algorithm>().is_err() {
        return Err(invalid_token(format!(
            "the token's algorithm {alg:?} is not one a hub takes (HS256-512, RS256-512, PS256-512, ES256, ES384, EdDSA)"
        )));
    }
    if fields.contains_key("crit") {
        return Err(invalid_token(
            "the token's header lists critical extensions (crit), which this hub does not understand",
        ));
    }
    Ok(())
}

/// One base64url part of a token, read as JSON (`what` names it in the error).
fn part_json(part: &str, what: &str) -> Result<Value, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid_token(NOT_A_JWT))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| invalid_token(format!("the token's {what} are not JSON")))
}

/// Checks `exp` and `nbf` as numbers of any size: `jsonwebtoken` reads them as `u64` and
/// passes over a value it cannot read (a string, or `1e20`).
fn check_times(claims: &Value) -> Result<(), Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let leeway = LEEWAY_SECS as f64;
    for name in ["exp", "nbf"] {
        let Some(value) = claims.get(name) else {
            continue;
        };
        let Some(time) = value.as_f64().filter(|t| *t >= 0.0) else {
            return Err(invalid_token(format!(
                "the token's {name} claim is not a time (a number of seconds since 1970)"
            )));
        };
        if name == "exp" && time < now - leeway {
            return Err(invalid_token("the token has expired (its exp is past)"));
        }
        if name == "nbf" && time > now + leeway {
            return Err(invalid_token(
                "the token is not valid yet (its nbf is in the future)",
            ));
        }
    }
    Ok(())
}

fn parse_patterns(texts: &[String], which: &str) -> Result<Vec<TopicPattern>, Error> {
    texts
        .iter()
        .map(|text| {
            TopicPattern::parse(text).map_err(|err| {
                invalid_token(format!(
                    "the token's {CLAIM}.{which} claim holds {text:?}, which is not a topic or pattern: {err}"
                ))
            })
        })
        .collect()
}

mod key;

#[cfg(test)]
mod tests;
