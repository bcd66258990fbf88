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
//! - `exp` and `nbf` are checked when present (60 s of leeway for clocks); `aud` must name
//!   `jwt_audience` when that is set. Other claims (`sub`, `iss`, ...) are left alone.
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
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

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
    /// [`ErrorKind::Config`] when a kind of access needs a token but there is no key, the
    /// secret is empty, or the public key file cannot be read or holds no public key.
    pub fn validate(&self) -> Result<(), Error> {
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
        if self.audience.as_deref() == Some("") {
            return Err(Error::new(
                ErrorKind::Config,
                "jwt_audience is empty; name the audience tokens must carry in `aud`, or leave it out",
            ));
        }
        Verifier::new(self).map(|_| ())
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

/// The claims this module reads and writes. `exp`, `iat` and `aud` are written by
/// [`issue`] and checked by `jsonwebtoken` (which takes every form they may have, such as
/// a fractional `exp` or a list of audiences), not read here.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    tidings: Option<RightsClaim>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
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
    /// [`ErrorKind::Config`] when the secret is empty or the public key file cannot be read
    /// or holds no RSA, EC or Ed25519 public key.
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
                let (key, algorithms) = read_public_key(path)?;
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
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| invalid_token(self.explain(&err)))?;
        let claim = data.claims.tidings.unwrap_or_default();
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
            JwtErrorKind::Json(err) => format!("the token's claims are malformed: {err}"),
            _ => "not a JWT: expected three base64url parts separated by dots".into(),
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
        tidings: Some(RightsClaim {
            publish: rights.publish.iter().map(ToString::to_string).collect(),
            subscribe: rights.subscribe.iter().map(ToString::to_string).collect(),
        }),
        exp: ttl.map(|ttl| now.saturating_add(ttl.as_secs().max(1))),
        iat: Some(now),
        aud: audience.map(str::to_owned),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|err| invalid_token(format!("cannot sign the token: {err}")))
}

fn invalid_token(message: String) -> Error {
    Error::new(ErrorKind::InvalidToken, message)
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

/// Reads a PEM public key and the algorithms that go with its kind.
fn read_public_key(path: &Path) -> Result<(DecodingKey, &'static [Algorithm]), Error> {
    let pem = std::fs::read(path).map_err(|err| {
        Error::with_source(
            ErrorKind::Config,
            format!("cannot read jwt_public_key {}", path.display()),
            err,
        )
    })?;
    const RSA: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
    const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
    const ED: &[Algorithm] = &[Algorithm::EdDSA];
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, RSA));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, EC));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, ED));
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "jwt_public_key {} holds no RSA, EC (P-256, P-384) or Ed25519 public key in PEM form (-----BEGIN PUBLIC KEY-----)",
            path.display()
        ),
    ))
}

#[cfg(test)]
mod tests;
