use super::*;

#[test]
fn errors_say_where_without_quoting_the_file() {
    // The file may hold a secret, and start-up errors end up in logs.
    for text in [
        "listen = \"127.0.0.1:1\"\njwt_secret = \"TopSecretValue\n",
        "jwt_secret = [\"TopSecretValue\"]\n",
        "jwt_secret = TopSecretValue\n",
        "jwt_secret = \"\"\"TopSecretValue\nTopSecretValue\"\"\" x\n",
        "jwt-secret = \"TopSecretValue\"\n",
    ] {
        let err = Config::from_toml(text).expect_err(text).to_string();
        assert!(!err.contains("TopSecretValue"), "{err}");
        assert!(err.starts_with("line "), "{err}");
    }
    let err = Config::from_toml("listen = \"127.0.0.1:1\"\nmax_topics = \"many\"\n")
        .expect_err("type")
        .to_string();
    assert!(err.starts_with("line 2, column 14: "), "{err}");
}

#[test]
fn durations() {
    for (text, ms) in [
        ("500ms", 500),
        ("15s", 15_000),
        ("15", 15_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
    ] {
        assert_eq!(
            text.parse::<HumanDuration>().expect(text).0,
            Duration::from_millis(ms)
        );
    }
    for bad in ["", "s", "1x", "-1s", "1.5s"] {
        assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
    }
}

#[test]
fn toml_layers_under_flags() {
    let file = Config::from_toml(
        "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 10\nkeep_alive = \"0\"\nhistory_max_age = 60\ncors_origin = [\"http://a.test\"]\nslow_client = \"drop-oldest\"\n",
    )
    .expect("valid toml");
    assert_eq!(file.max_body_bytes, Some(10));
    let dir = std::env::temp_dir().join(format!("tidings-hub-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("hub.toml");
    std::fs::write(&path, "max_body_bytes = 10\nmax_topics = 3\nhistory_max_age = \"0\"\ncors_origin = [\"http://a.test\"]\n")
        .expect("write");
    let flags = Config {
        config: Some(path),
        max_topics: Some(5),
        ..Config::default()
    };
    let settings = flags.resolve().expect("resolves");
    assert_eq!(settings.max_body_bytes, 10, "from the file");
    assert_eq!(settings.max_topics, 5, "the flag wins");
    assert_eq!(settings.history_max_age, None, "0 turns the age limit off");
    assert_eq!(settings.cors_origins, ["http://a.test"]);
    assert_eq!(settings.listen, Settings::default().listen);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    assert!(Config::from_toml("max_body_byte = 1").is_err());
    let too_long = Config {
        retry: Some(HumanDuration(Duration::from_secs(u64::MAX / 2))),
        ..Config::default()
    };
    assert!(too_long.resolve().is_err());
    for bad in ["keep_alive = -5", "keep_alive = 1.5", "keep_alive = true"] {
        let err = Config::from_toml(bad).expect_err(bad).to_string();
        assert!(err.contains("expected a duration"), "{bad}: {err}");
    }
    let zero = Config {
        max_topics: Some(0),
        ..Config::default()
    };
    assert_eq!(zero.resolve().expect_err("zero").kind(), ErrorKind::Config);
    for bad in [
        "*",
        "example.com",
        "http://a.test/",
        "http://",
        "http://a.test?x=1",
        "http://a.test#f",
        "ftp://a.test",
        "http://a b",
        "http://a.test:99999",
        "http://:80",
        "http://user@a.test",
    ] {
        let c = Config {
            cors_origin: vec![bad.to_owned()],
            ..Config::default()
        };
        assert!(c.resolve().is_err(), "{bad}");
    }
}

#[test]
fn redis_settings_layer_and_are_checked() {
    let file = Config::from_toml(
        "engine = \"redis\"\nredis_url = \"redis://10.0.0.5:6379/2\"\nredis_prefix = \"app\"\n",
    )
    .expect("valid toml");
    assert_eq!(file.engine, Some(EngineKind::Redis));
    let flags = Config {
        redis_prefix: Some("other".into()),
        ..file
    };
    let settings = flags.resolve().expect("valid");
    assert_eq!(settings.redis_url, "redis://10.0.0.5:6379/2");
    assert_eq!(settings.redis_prefix, "other", "a flag wins over the file");

    for (url, prefix, complaint) in [
        ("http://10.0.0.5/", "t", "is not a Redis URL"),
        ("redis://h:6379", "", "redis_prefix"),
        ("redis://h:6379", "a b", "redis_prefix"),
        ("redis://h:6379", "a{b}", "redis_prefix"),
    ] {
        let c = Config {
            engine: Some(EngineKind::Redis),
            redis_url: Some(url.into()),
            redis_prefix: Some(prefix.into()),
            ..Config::default()
        };
        let err = c.resolve().expect_err(url);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains(complaint),
            "{url} {prefix:?}: {err}"
        );
    }
    // Only checked when the Redis engine is chosen.
    let unused = Config {
        memory: true,
        redis_url: Some("nonsense".into()),
        ..Config::default()
    };
    assert!(unused.resolve().is_ok());
}

#[test]
fn origins_are_taken_as_browsers_send_them() {
    let c = Config {
        cors_origin: vec![
            " http://a.test".to_owned(),
            "https://App.Example.com".to_owned(),
            "http://c.test:80".to_owned(),
            "https://d.test:443".to_owned(),
            "http://e.test:8080".to_owned(),
        ],
        ..Config::default()
    };
    assert_eq!(
        c.resolve().expect("valid").cors_origins,
        [
            "http://a.test",
            "https://app.example.com",
            "http://c.test",
            "https://d.test",
            "http://e.test:8080"
        ]
    );
}

#[test]
fn tls_takes_both_files_from_any_layer_or_neither() {
    let file =
        Config::from_toml("tls_cert = \"/etc/tidings/fullchain.pem\"\n").expect("valid toml");
    let both = Config {
        tls_key: Some("/etc/tidings/privkey.pem".into()),
        ..file.clone()
    };
    assert_eq!(
        both.resolve().expect("valid").tls,
        Some(TlsFiles {
            cert: "/etc/tidings/fullchain.pem".into(),
            key: "/etc/tidings/privkey.pem".into(),
        })
    );
    assert_eq!(Config::default().resolve().expect("valid").tls, None);

    let err = file.resolve().expect_err("a certificate without its key");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("tls_key is not"), "{err}");
    let key_only = Config {
        tls_key: Some("/etc/tidings/privkey.pem".into()),
        ..Config::default()
    };
    let err = key_only
        .resolve()
        .expect_err("a key without its certificate");
    assert!(err.to_string().contains("tls_cert is not"), "{err}");
}

#[test]
fn the_queue_bound_follows_the_body_limit_unless_set() {
    let settings = Config::default().resolve().expect("valid");
    assert_eq!(settings.max_queue_bytes, 2 * settings.max_body_bytes);
    assert_eq!(
        settings.max_queue_bytes,
        Settings::default().max_queue_bytes
    );
    let larger_bodies = Config {
        max_body_bytes: Some(4 << 20),
        ..Config::default()
    };
    assert_eq!(
        larger_bodies.resolve().expect("valid").max_queue_bytes,
        8 << 20
    );
    let set = Config {
        max_body_bytes: Some(4 << 20),
        max_queue_bytes: Some(65536),
        ..Config::default()
    };
    assert_eq!(set.resolve().expect("valid").max_queue_bytes, 65536);
}
