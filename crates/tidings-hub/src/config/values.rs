//! The values settings are written in: durations, secrets, and the named choices
//! (engine, slow-client policy, log format), each as a flag, a variable and a TOML value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tidings::server::SlowClientPolicy;

use crate::error::{Error, ErrorKind};

/// A secret from the settings: shown as `<hidden>` in debug output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The storage engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// In an embedded database in `data_dir`; history survives restarts, and a publish is
    /// answered only once it is on disk.
    #[default]
    Disk,
    /// In this process's memory; history is lost on restart.
    Memory,
    /// In a Redis server shared by several hubs (`redis_url`); every hub delivers every
    /// event, and a client can resume on any of them.
    Redis,
}

/// The slow-client policy, as named in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowClient {
    /// Close the connection; the client reconnects and resumes from history.
    #[default]
    Disconnect,
    /// Drop the oldest queued events and send a gap event.
    DropOldest,
    /// Replace what is queued with the newest event, and send a gap event.
    LatestOnly,
}

impl From<SlowClient> for SlowClientPolicy {
    fn from(value: SlowClient) -> SlowClientPolicy {
        match value {
            SlowClient::Disconnect => SlowClientPolicy::Disconnect,
            SlowClient::DropOldest => SlowClientPolicy::DropOldest,
            SlowClient::LatestOnly => SlowClientPolicy::LatestOnly,
        }
    }
}

/// The log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// A duration written `500ms`, `15s`, `10m` or `1h`; a bare number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = Error;

    fn from_str(s: &str) -> Result<HumanDuration, Error> {
        let text = s.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let invalid = || {
            Error::new(
                ErrorKind::Config,
                format!("{s:?} is not a duration; write e.g. 500ms, 15s, 10m or 1h"),
            )
        };
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        let duration = match unit {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(invalid)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(invalid)?),
            _ => return Err(invalid()),
        };
        Ok(HumanDuration(duration))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration: a whole number of seconds (15) or a string such as \"15s\", \"500ms\", \"2m\", \"1h\"",
            )
        })?;
        match raw {
            Raw::Seconds(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}
