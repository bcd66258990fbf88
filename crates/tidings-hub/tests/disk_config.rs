//! The disk engine's settings: it is what `tidings serve` runs by default, `--memory`
//! keeps the memory engine, and retention comes from the history settings plus
//! `[retention."<pattern>"]` tables.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tidings_hub::config::EngineKind;
use tidings_hub::engine::DiskOptions;
use tidings_hub::topics::Topic;
use tidings_hub::{Config, ErrorKind, Settings};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    Cli::try_parse_from(std::iter::once("tidings").chain(args.iter().copied())).map(|c| c.config)
}

#[test]
fn serve_defaults_to_the_disk_engine_in_tidings_data() {
    let settings = parse(&[]).expect("parses").resolve().expect("resolves");
    assert_eq!(settings.engine, EngineKind::Disk);
    assert_eq!(settings.data_dir, PathBuf::from("./tidings-data"));
    assert_eq!(settings.history_max_bytes, None);
    // Embedding keeps memory unless asked, so a test or an app writes nothing to disk.
    assert_eq!(Settings::default().engine, EngineKind::Memory);
}

#[test]
fn memory_flag_and_data_dir_flag() {
    let memory = parse(&["--memory"]).expect("parses").resolve().expect("ok");
    assert_eq!(memory.engine, EngineKind::Memory);
    let engine = parse(&["--engine", "memory"]).expect("parses");
    assert_eq!(engine.resolve().expect("ok").engine, EngineKind::Memory);
    // `--memory` wins over an engine from anywhere else (TIDINGS_ENGINE, most often).
    let both = parse(&["--memory", "--engine", "disk"]).expect("parses");
    assert_eq!(both.resolve().expect("ok").engine, EngineKind::Memory);
    let dir = parse(&["--data-dir", "/var/lib/tidings", "--history-max-bytes", "0"])
        .expect("parses")
        .resolve()
        .expect("ok");
    assert_eq!(dir.data_dir, PathBuf::from("/var/lib/tidings"));
    assert_eq!(dir.history_max_bytes, None, "0 means no byte limit");
    assert!(
        parse(&["--data-dir", ""]).is_err(),
        "an empty flag is refused"
    );
    let empty = Config {
        data_dir: Some(PathBuf::new()),
        ..Config::default()
    }
    .resolve();
    assert_eq!(empty.expect_err("empty").kind(), ErrorKind::Config);
}

#[test]
fn retention_tables_override_the_history_settings() {
    let file = Config::from_toml(
        r#"
engine = "disk"
data_dir = "/srv/tidings"
history_max_events = 500
history_max_age = "2h"
history_max_bytes = 1000000

[retention."chat/*"]
max_events = 50
max_age = "10m"

[retention."audit"]
max_age = "0"
max_bytes = 0
"#,
    )
    .expect("valid toml");
    assert_eq!(file.data_dir, Some(PathBuf::from("/srv/tidings")));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hub.toml");
    std::fs::write(
        &path,
        "[retention.\"chat/*\"]\nmax_events = 50\nmax_age = \"10m\"\n",
    )
    .expect("write");
    let settings = Config {
        config: Some(path),
        history_max_events: Some(500),
        ..Config::default()
    }
    .resolve()
    .expect("resolves");
    let rules = DiskOptions::from_settings(&settings)
        .expect("valid")
        .retention;
    let chat = rules.for_topic(&Topic::new("chat/lobby").expect("topic"));
    assert_eq!(chat.max_events, 50);
    assert_eq!(chat.max_age, Some(Duration::from_secs(600)));
    let other = rules.for_topic(&Topic::new("orders").expect("topic"));
    assert_eq!(other.max_events, 500, "the flag's global limit");
    assert_eq!(
        other.max_age,
        Some(Duration::from_secs(3600)),
        "the default"
    );

    let with_file = Config::from_toml(
        "history_max_bytes = 1000\n[retention.audit]\nmax_age = \"0\"\nmax_bytes = 0\n",
    )
    .expect("valid");
    let settings = Settings {
        history_max_bytes: with_file.history_max_bytes,
        retention: with_file.retention,
        ..Settings::default()
    };
    let rules = DiskOptions::from_settings(&settings)
        .expect("valid")
        .retention;
    let audit = rules.for_topic(&Topic::new("audit").expect("topic"));
    assert_eq!((audit.max_age, audit.max_bytes), (None, None));
    let orders = rules.for_topic(&Topic::new("orders").expect("topic"));
    assert_eq!(orders.max_bytes, Some(1000));
}

#[test]
fn bad_retention_tables_are_config_errors() {
    assert!(
        Config::from_toml("[retention.\"chat/*\"]\nmax_event = 5\n").is_err(),
        "a typo inside a table is an error"
    );
    for bad in [
        "[retention.\"ch*\"]\nmax_events = 5\n",
        "[retention.\"chat/*\"]\nmax_events = 0\n",
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, bad).expect("write");
        let err = Config {
            config: Some(path),
            ..Config::default()
        }
        .resolve()
        .expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        assert!(err.to_string().contains("retention"), "{err}");
    }
}
