//! Reading the public key that tokens are checked with (`jwt_public_key`): one PEM
//! block, a public key of a kind and size the hub can check signatures with, so that a
//! key that could never verify a token stops the start instead of refusing every token.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::{Error, ErrorKind};

/// The smallest RSA key the signature code (ring) verifies with.
const MIN_RSA_BITS: usize = 2048;

// Object identifiers, DER-encoded, as they appear in a SubjectPublicKeyInfo.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Reads the PEM public key at `path` and the algorithms that go with it.
///
/// # Errors
/// [`ErrorKind::Config`] naming the file and what is wrong: unreadable, not PEM, not one
/// block, a private key or a certificate, a key kind or curve that cannot be checked, an
/// RSA key under 2048 bits.
pub(super) fn read_public_key(path: &Path) -> Result<(DecodingKey, &'static [Algorithm]), Error> {
    let text = std::fs::read(path).map_err(|err| {
        Error::with_source(
            ErrorKind::Config,
            format!("cannot read jwt_public_key {}", path.display()),
            err,
        )
    })?;
    let bad = |why: String| {
        Error::new(
            ErrorKind::Config,
            format!(
                "jwt_public_key {} {why}; give one RSA (2048 bits or more), EC P-256 or P-384, or Ed25519 public key in PEM form (-----BEGIN PUBLIC KEY-----)",
                path.display()
            ),
        )
    };
    let blocks = pem::parse_many(&text).map_err(|err| bad(format!("is not PEM ({err})")))?;
    let block = match blocks.as_slice() {
        [] => return Err(bad("holds no PEM block".to_owned())),
        [block] => block,
        more => return Err(bad(format!("holds {} PEM blocks, not one", more.len()))),
    };
    let der = block.contents();
    match block.tag() {
        "PUBLIC KEY" => {}
        "RSA PUBLIC KEY" => {
            check_rsa_bits(rsa_modulus_bits(der, false)).map_err(bad)?;
            return rsa(&text).map_err(|err| bad(format!("is not a valid RSA key ({err})")));
        }
        tag if tag.contains("PRIVATE KEY") => {
            return Err(bad(
                "holds a private key: the hub needs only the public one (openssl pkey -in KEY.pem -pubout -out public.pem)".to_owned(),
            ))
        }
        "CERTIFICATE" => {
            return Err(bad(
                "holds a certificate: give its public key (openssl x509 -in CERT.pem -pubkey -noout > public.pem)".to_owned(),
            ))
        }
        other => return Err(bad(format!("holds a {other:?} block"))),
    }
    let invalid = |err: jsonwebtoken::errors::Error| bad(format!("is not a valid key ({err})"));
    if contains(der, RSA_ENCRYPTION) {
        check_rsa_bits(rsa_modulus_bits(der, true)).map_err(bad)?;
        rsa(&text).map_err(invalid)
    } else if contains(der, EC_PUBLIC_KEY) {
        if !ec_point_is_uncompressed(der) {
            return Err(bad(
                "holds a compressed EC point, which the signature code cannot use (openssl ec -pubin -in KEY.pem -pubout -conv_form uncompressed -out public.pem)".to_owned(),
            ));
        }
        let algorithms: &'static [Algorithm] = if contains(der, P256) {
            &[Algorithm::ES256]
        } else if contains(der, P384) {
            &[Algorithm::ES384]
        } else {
            return Err(bad(
                "is an EC key on a curve other than P-256 and P-384".to_owned()
            ));
        };
        Ok((
            DecodingKey::from_ec_pem(&text).map_err(invalid)?,
            algorithms,
        ))
    } else if contains(der, ED25519) {
        Ok((
            DecodingKey::from_ed_pem(&text).map_err(invalid)?,
            &[Algorithm::EdDSA],
        ))
    } else {
        Err(bad(
            "is a public key of a kind the hub cannot check".to_owned()
        ))
    }
}

fn rsa(text: &[u8]) -> Result<(DecodingKey, &'static [Algorithm]), jsonwebtoken::errors::Error> {
    Ok((DecodingKey::from_rsa_pem(text)?, RSA_ALGORITHMS))
}

fn check_rsa_bits(bits: Option<usize>) -> Result<(), String> {
    match bits {
        Some(bits) if bits >= MIN_RSA_BITS => Ok(()),
        Some(bits) => Err(format!(
            "is an RSA key of {bits} bits, under {MIN_RSA_BITS}"
        )),
        None => Err("is not a valid RSA public key".to_owned()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The size of an RSA public key's modulus, in bits: from a SubjectPublicKeyInfo
/// (`spki`), or from a PKCS#1 `RSAPublicKey`.
fn rsa_modulus_bits(der: &[u8], spki: bool) -> Option<usize> {
    let rsa_key = if spki {
        // SEQUENCE { SEQUENCE { algorithm }, BIT STRING { 0 unused bits, RSAPublicKey } }
        let (_, info, _) = element(der)?;
        let (_, _, rest) = element(info)?;
        let (_, bits, _) = element(rest)?;
        bits.get(1..)?
    } else {
        der
    };
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let (_, key, _) = element(rsa_key)?;
    let (tag, modulus, _) = element(key)?;
    if tag != 0x02 {
        return None;
    }
    let start = modulus.iter().position(|&b| b != 0)?;
    let first = modulus[start];
    Some((modulus.len() - start - 1) * 8 + (8 - first.leading_zeros() as usize))
}

/// Whether an EC SubjectPublicKeyInfo holds its point uncompressed (`04 x y`).
fn ec_point_is_uncompressed(der: &[u8]) -> bool {
    // SEQUENCE { SEQUENCE { algorithm, curve }, BIT STRING { 0 unused bits, point } }
    let point = element(der)
        .and_then(|(_, info, _)| element(info))
        .and_then(|(_, _, rest)| element(rest))
        .map(|(_, bits, _)| bits);
    matches!(point, Some([0x00, 0x04, ..]))
}

/// One DER element: its tag, its contents and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn refusal(name: &str) -> String {
        let err = read_public_key(&fixture(name)).map(|_| ()).expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Config);
        err.to_string()
    }

    #[test]
    fn each_kind_gets_the_algorithms_its_key_can_check() {
        let algorithms = |name: &str| read_public_key(&fixture(name)).expect(name).1;
        assert_eq!(algorithms("jwt-es256-public.pem"), [Algorithm::ES256]);
        assert_eq!(algorithms("jwt-ed25519-public.pem"), [Algorithm::EdDSA]);
        assert_eq!(algorithms("jwt-rs256-public.pem"), RSA_ALGORITHMS);
    }

    #[test]
    fn keys_that_could_never_verify_are_refused() {
        for private in [
            "jwt-es256-private.pem",
            "jwt-ed25519-private.pem",
            "jwt-rs256-private.pem",
        ] {
            assert!(refusal(private).contains("private key"), "{private}");
        }
        assert!(refusal("jwt-rs1024-public.pem").contains("1024 bits"));
        assert!(refusal("jwt-p521-public.pem").contains("curve"));
        assert!(refusal("jwt-es256-compressed-public.pem").contains("compressed"));
    }

    #[test]
    fn modulus_sizes_are_read_from_both_forms() {
        let pem = std::fs::read(fixture("jwt-rs256-public.pem")).expect("key");
        let block = pem::parse(pem).expect("pem");
        assert_eq!(rsa_modulus_bits(block.contents(), true), Some(2048));
        assert_eq!(
            rsa_modulus_bits(&[0x30, 0x03, 0x02, 0x01, 0x05], false),
            Some(3)
        );
        assert_eq!(rsa_modulus_bits(&[0x30, 0x05, 0x02], false), None);
        assert_eq!(rsa_modulus_bits(&[], true), None);
    }
}
