//! HTTPS: the certificate chain and private key the hub serves with (`tls_cert`,
//! `tls_key`), read at start-up and again on `SIGHUP`, so a renewed certificate is taken
//! without a restart.
//!
//! A page served over `https://` may only open event streams to `https://` URLs (a
//! browser blocks mixed content), and over TLS a browser speaks HTTP/2, which lifts its
//! limit of six HTTP/1.1 connections per origin. The hub offers `h2` and `http/1.1` by
//! ALPN, with rustls on ring (TLS 1.2 and 1.3).
//!
//! Both files are PEM: `tls_cert` holds the server's certificate first, then the
//! intermediates (as Let's Encrypt's `fullchain.pem`); `tls_key` its private key (PKCS#8,
//! PKCS#1 RSA or SEC1 EC; `privkey.pem`). A file that holds both may be given for both.
//! The start refuses files that cannot be read, hold no certificate or no key, or whose
//! key is not the certificate's. A certificate that has expired, is not valid yet, or
//! expires within [`EXPIRY_WARNING`] is served, with a warning in the log (at start-up and
//! on each reload), since clients will refuse it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, ErrorKind};

/// How far ahead an expiry is warned of.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// Where the certificate chain and its private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key of the first certificate.
    pub key: PathBuf,
}

/// The certificate the hub serves, swapped whole when the files are read again.
pub(crate) struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads `files`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when a file cannot be read, holds no certificate or no private
    /// key, or the key does not belong to the first certificate.
    pub(crate) fn load(files: TlsFiles) -> Result<Certificates, Error> {
        let certified = read(&files)?;
        warn_of_validity(&files, &certified);
        Ok(Certificates {
            files,
            current: RwLock::new(Arc::new(certified)),
        })
    }

    /// Reads the files again and serves what they now hold to new connections; on an
    /// error the certificate served so far stays (open connections keep theirs either
    /// way).
    ///
    /// # Errors
    /// As [`Certificates::load`].
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let certified = Arc::new(read(&self.files)?);
        warn_of_validity(&self.files, &certified);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = certified;
        Ok(())
    }

    /// A rustls server configuration that serves these certificates, offering HTTP/2 and
    /// HTTP/1.1.
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::with_source(ErrorKind::Config, "TLS cannot be set up", e))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl Certificates {
    /// The certificate a new connection gets.
    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Logs a warning when `certified` is outside its validity period, or leaves it within
/// [`EXPIRY_WARNING`].
fn warn_of_validity(files: &TlsFiles, certified: &CertifiedKey) {
    if let Some(problem) = validity_problem(&certified.cert, std::time::SystemTime::now()) {
        tracing::warn!(cert = %files.cert.display(), "the TLS certificate {problem}");
    }
}

/// What is wrong with when `chain`'s first certificate (the server's own) is valid, at
/// `now`: `None` when it is valid now and for [`EXPIRY_WARNING`] more. The dates of the
/// intermediates are not read (the chain's last certificate stands in for the root).
///
/// The chain is checked by webpki, as a client would, against its own last certificate as
/// the root (so the issuer does not matter here), under a name no certificate has (the
/// time is checked before the name, and only the time is read from the answer).
pub(crate) fn validity_problem(
    chain: &[CertificateDer<'static>],
    now: std::time::SystemTime,
) -> Option<String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::UnixTime;
    use rustls::CertificateError;

    let (end_entity, intermediates) = chain.split_first()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(chain.last()?.clone()).ok()?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .ok()?;
    let name = ServerName::try_from("certificate-validity.invalid").ok()?;
    let check = |at: std::time::SystemTime| {
        let at = UnixTime::since_unix_epoch(at.duration_since(std::time::UNIX_EPOCH).ok()?);
        match verifier.verify_server_cert(end_entity, intermediates, &name, &[], at) {
            Err(rustls::Error::InvalidCertificate(error)) => Some(error),
            _ => None,
        }
    };
    // Whole days, rounded down: "expires in 6 day(s)" six days and some hours ahead.
    let days = |seconds: u64| seconds / (24 * 3600);
    match check(now)? {
        CertificateError::ExpiredContext { time, not_after } => Some(format!(
            "expired {} day(s) ago: clients refuse it",
            days(time.as_secs().saturating_sub(not_after.as_secs()))
        )),
        CertificateError::Expired => Some("has expired: clients refuse it".to_owned()),
        CertificateError::NotValidYetContext { time, not_before } => Some(format!(
            "becomes valid in {} day(s): clients refuse it until then",
            days(not_before.as_secs().saturating_sub(time.as_secs()))
        )),
        CertificateError::NotValidYet => {
            Some("is not valid yet: clients refuse it until it is".to_owned())
        }
        _ => match check(now + EXPIRY_WARNING)? {
            CertificateError::ExpiredContext { time, not_after } => Some(format!(
                "expires in {} day(s): renew it, then send SIGHUP",
                days(
                    not_after
                        .as_secs()
                        .saturating_sub(time.as_secs() - EXPIRY_WARNING.as_secs())
                )
            )),
            CertificateError::Expired => Some(format!(
                "expires within {} days: renew it, then send SIGHUP",
                days(EXPIRY_WARNING.as_secs())
            )),
            _ => None,
        },
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key of `files`, checked to belong together.
fn read(files: &TlsFiles) -> Result<CertifiedKey, Error> {
    let cert_pem = read_file(&files.cert, "tls_cert")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            config_error(format!(
                "tls_cert {} is not a valid PEM file ({e})",
                files.cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(config_error(format!(
            "tls_cert {} holds no certificate: give the PEM chain (-----BEGIN CERTIFICATE-----), the server's certificate first",
            files.cert.display()
        )));
    }
    let key_pem = read_file(&files.key, "tls_key")?;
    if is_encrypted(&key_pem) {
        return Err(config_error(format!(
            "tls_key {} is encrypted; the hub reads unencrypted keys only: write one with `openssl pkey -in {} -out key.pem` (it asks for the passphrase) and keep it readable by the hub's user alone",
            files.key.display(),
            files.key.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no private key".to_owned(),
            other => format!("is not a valid PEM private key ({other})"),
        };
        config_error(format!(
            "tls_key {} {why}: give the certificate's private key in PEM (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
            files.key.display()
        ))
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        let cert = files.cert.display();
        let why = match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("is not the key of the first certificate in tls_cert {cert}")
            }
            other => format!("cannot be used with tls_cert {cert} ({other})"),
        };
        config_error(format!("tls_key {} {why}", files.key.display()))
    })
}

/// Whether a PEM file holds an encrypted key: PKCS#8's `ENCRYPTED PRIVATE KEY`, or
/// OpenSSL's older `Proc-Type: 4,ENCRYPTED` header inside an RSA or EC key block.
fn is_encrypted(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
}

fn read_file(path: &Path, setting: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!("cannot read {setting} {}", path.display()),
            e,
        )
    })
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

#[cfg(test)]
mod tests;
