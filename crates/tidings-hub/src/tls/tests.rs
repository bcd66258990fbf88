use std::path::Path;

use super::*;

/// A self-signed certificate for `localhost` and its key, in PEM.
fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("rcgen makes a certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

fn files(cert: PathBuf, key: PathBuf) -> TlsFiles {
    TlsFiles { cert, key }
}

fn load_error(files: TlsFiles) -> String {
    let err = Certificates::load(files).expect_err("must be refused");
    assert_eq!(err.kind(), ErrorKind::Config);
    err.to_string()
}

/// The DER of the end-entity certificate `certificates` gives a new connection now.
fn served(certificates: &Certificates) -> Vec<u8> {
    certificates.current().cert[0].as_ref().to_vec()
}

/// The DER of a PEM certificate.
fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .as_ref()
        .to_vec()
}

#[test]
fn a_matching_pair_loads_from_two_files_or_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    let cert_path = write(dir.path(), "cert.pem", &cert);
    let key_path = write(dir.path(), "key.pem", &key);
    let certificates = Arc::new(Certificates::load(files(cert_path, key_path)).expect("loads"));
    let config = certificates.server_config().expect("a config");
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(
        served(&certificates),
        der(&cert),
        "the file's certificate is served"
    );

    let both = write(dir.path(), "both.pem", &format!("{cert}{key}"));
    Certificates::load(files(both.clone(), both)).expect("one file with both loads");
}

#[test]
fn files_that_cannot_serve_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();
    let cert_path = write(dir.path(), "cert.pem", &cert);
    let key_path = write(dir.path(), "key.pem", &key);
    let missing = dir.path().join("missing.pem");

    let message = load_error(files(missing.clone(), key_path.clone()));
    assert!(
        message.contains("cannot read tls_cert") && message.contains("missing.pem"),
        "{message}"
    );
    let message = load_error(files(cert_path.clone(), missing));
    assert!(message.contains("cannot read tls_key"), "{message}");

    let message = load_error(files(key_path.clone(), key_path.clone()));
    assert!(message.contains("holds no certificate"), "{message}");
    let message = load_error(files(cert_path.clone(), cert_path.clone()));
    assert!(message.contains("holds no private key"), "{message}");

    let other = write(dir.path(), "other-key.pem", &other_key);
    let message = load_error(files(cert_path.clone(), other));
    assert!(
        message.contains("is not the key of the first certificate in tls_cert"),
        "{message}"
    );

    let broken = write(
        dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
    );
    let message = load_error(files(broken, key_path.clone()));
    assert!(message.contains("is not a valid PEM file"), "{message}");

    for (name, encrypted) in [
        (
            "pkcs8-encrypted.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        ),
        (
            "rsa-encrypted.pem",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n",
        ),
    ] {
        let path = write(dir.path(), name, encrypted);
        let message = load_error(files(cert_path.clone(), path));
        assert!(
            message.contains("is encrypted") && message.contains("openssl pkey"),
            "{message}"
        );
    }

    let not_x509 = write(
        dir.path(),
        "not-x509.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    let message = load_error(files(not_x509, key_path));
    assert!(
        message.contains("cannot be used with tls_cert"),
        "{message}"
    );
}

#[test]
fn a_reload_serves_the_new_files_and_keeps_the_old_on_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first_cert, first_key) = self_signed();
    let cert_path = write(dir.path(), "cert.pem", &first_cert);
    let key_path = write(dir.path(), "key.pem", &first_key);
    let certificates =
        Certificates::load(files(cert_path.clone(), key_path.clone())).expect("loads");
    let first = served(&certificates);

    let (second_cert, second_key) = self_signed();
    write(dir.path(), "cert.pem", &second_cert);
    // Half-renewed: the new certificate beside the old key.
    let err = certificates
        .reload()
        .expect_err("a mismatched pair is refused");
    assert!(err.to_string().contains("is not the key"), "{err}");
    assert_eq!(served(&certificates), first, "the old certificate stays");

    write(dir.path(), "key.pem", &second_key);
    certificates.reload().expect("the renewed pair loads");
    assert_ne!(served(&certificates), first);
    assert_eq!(
        served(&certificates),
        der(&second_cert),
        "the renewed certificate is served"
    );
}

#[test]
fn validity_problems_are_named_with_their_days() {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("a certificate");
    let chain = [cert.der().clone()];
    let at = |y: i32, m: u8, d: u8| {
        let date = rcgen::date_time_ymd(y, m, d);
        std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(
                u64::try_from(date.unix_timestamp()).expect("after 1970"),
            )
    };

    assert_eq!(validity_problem(&chain, at(2025, 6, 1)), None);
    assert_eq!(
        validity_problem(&chain, at(2029, 12, 25)).as_deref(),
        Some("expires in 7 day(s): renew it, then send SIGHUP")
    );
    let an_hour = std::time::Duration::from_secs(3600);
    assert_eq!(
        validity_problem(&chain, at(2029, 12, 25) + an_hour).as_deref(),
        Some("expires in 6 day(s): renew it, then send SIGHUP"),
        "whole days, rounded down"
    );
    assert_eq!(
        validity_problem(&chain, at(2030, 1, 31)).as_deref(),
        Some("expired 30 day(s) ago: clients refuse it")
    );
    assert_eq!(
        validity_problem(&chain, at(2019, 12, 30)).as_deref(),
        Some("becomes valid in 2 day(s): clients refuse it until then")
    );
}
