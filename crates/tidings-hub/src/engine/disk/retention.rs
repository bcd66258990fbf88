//! Retention: how many events, how many bytes and how old, per topic, with a global
//! default and overrides for families of topics.
//!
//! The global default comes from the hub's history settings (`history_max_events`,
//! `history_max_bytes`, `history_max_age`). A `[retention."<pattern>"]` table in the TOML
//! file overrides any of them for the topics the pattern names; a limit the table leaves
//! out falls back to the global setting:
//!
//! ```toml
//! history_max_events = 1000
//! history_max_age = "1h"
//!
//! [retention."chat/*"]      # every topic under chat/
//! max_events = 100
//! max_age = "10m"
//!
//! [retention."audit"]       # exactly the topic `audit`
//! max_events = 1000000
//! max_age = "0"             # no age limit
//! max_bytes = 1073741824
//! ```
//!
//! When several tables match a topic, the most specific wins: the exact topic, else the
//! longest pattern. A topic's limits are decided when the engine first sees the topic (at
//! start-up or on its first publish), so a changed file applies after a restart.
//!
//! ```
//! use std::time::Duration;
//! use tidings_hub::engine::{Limits, RetentionOverride, RetentionRules};
//! use tidings_hub::topics::Topic;
//!
//! let global = Limits { max_events: 1000, max_bytes: None, max_age: Some(Duration::from_secs(3600)) };
//! let chat = RetentionOverride { max_events: Some(100), ..RetentionOverride::default() };
//! let rules = RetentionRules::new(global, [("chat/*", &chat)])?;
//! assert_eq!(rules.for_topic(&Topic::new("chat/room-1")?).max_events, 100);
//! assert_eq!(rules.for_topic(&Topic::new("chat/room-1")?).max_age, Some(Duration::from_secs(3600)));
//! assert_eq!(rules.for_topic(&Topic::new("orders")?).max_events, 1000);
//! # Ok::<(), tidings_hub::Error>(())
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::config::HumanDuration;
use crate::error::{Error, ErrorKind};
use crate::topics::{Topic, TopicPattern};

/// The limits one topic's history is kept within. Events beyond any of them are trimmed,
/// oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events kept (at least 1).
    pub max_events: u64,
    /// Most bytes kept (`None`: no byte limit). An event's size is the length of its data,
    /// event type and topic names plus 24 bytes; an event published to several topics
    /// counts toward each.
    pub max_bytes: Option<u64>,
    /// Oldest event kept, by the time it was stored (`None`: no age limit).
    pub max_age: Option<Duration>,
}

/// One `[retention."<pattern>"]` table: the limits it sets for the topics the pattern
/// names; a limit left out falls back to the global history setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionOverride {
    /// Most events kept per topic (at least 1).
    pub max_events: Option<u64>,
    /// Most bytes kept per topic; `0` for no byte limit.
    pub max_bytes: Option<u64>,
    /// How long events are kept; `0` for no age limit.
    pub max_age: Option<HumanDuration>,
}

/// The global limits and the overrides, ready to answer "what are this topic's limits".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRules {
    global: Limits,
    /// Most specific first: exact topics, then prefixes from longest to shortest.
    overrides: Vec<(TopicPattern, Limits)>,
}

impl RetentionRules {
    /// Rules with only the global limits.
    pub fn global(limits: Limits) -> RetentionRules {
        RetentionRules {
            global: limits.at_least_one_event(),
            overrides: Vec::new(),
        }
    }

    /// Rules from the global limits and `(pattern, override)` pairs, as written in the
    /// TOML file.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when a pattern is not a topic or pattern, or an override sets
    /// `max_events = 0`.
    pub fn new<'a, I, P>(global: Limits, overrides: I) -> Result<RetentionRules, Error>
    where
        I: IntoIterator<Item = (P, &'a RetentionOverride)>,
        P: AsRef<str>,
    {
        let mut rules = RetentionRules::global(global);
        for (text, table) in overrides {
            let text = text.as_ref();
            let pattern = TopicPattern::parse(text).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("[retention.{text:?}]: {e}; name a topic (`audit`) or a pattern (`chat/*`, `*`)"),
                )
            })?;
            if table.max_events == Some(0) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("[retention.{text:?}]: max_events must be at least 1"),
                ));
            }
            let limits = Limits {
                max_events: table.max_events.unwrap_or(rules.global.max_events),
                max_bytes: match table.max_bytes {
                    Some(0) => None,
                    Some(n) => Some(n),
                    None => rules.global.max_bytes,
                },
                max_age: match table.max_age {
                    Some(HumanDuration(Duration::ZERO)) => None,
                    Some(HumanDuration(age)) => Some(age),
                    None => rules.global.max_age,
                },
            };
            rules.overrides.retain(|(p, _)| *p != pattern);
            rules.overrides.push((pattern, limits));
        }
        rules
            .overrides
            .sort_by_key(|(pattern, _)| specificity(pattern));
        Ok(rules)
    }

    /// The limits for `topic`: the most specific override that matches, else the global.
    pub fn for_topic(&self, topic: &Topic) -> Limits {
        self.overrides
            .iter()
            .find(|(pattern, _)| pattern.matches(topic))
            .map_or(self.global, |(_, limits)| *limits)
    }

    /// The global limits.
    pub fn global_limits(&self) -> Limits {
        self.global
    }
}

impl Limits {
    fn at_least_one_event(self) -> Limits {
        Limits {
            max_events: self.max_events.max(1),
            ..self
        }
    }

    /// Whether a topic holding `events` events of `bytes` bytes, the oldest stored at
    /// `oldest_ms`, is over a limit at `now_ms`.
    pub(super) fn exceeded(
        &self,
        events: u64,
        bytes: u64,
        oldest_ms: Option<u64>,
        now_ms: u64,
    ) -> bool {
        events > self.max_events
            || self.max_bytes.is_some_and(|max| bytes > max)
            || oldest_ms.is_some_and(|oldest| self.too_old(oldest, now_ms))
    }

    /// Whether an event stored at `stored_ms` is past the age limit at `now_ms`.
    pub(super) fn too_old(&self, stored_ms: u64, now_ms: u64) -> bool {
        self.max_age.is_some_and(|age| {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            stored_ms < now_ms.saturating_sub(age_ms)
        })
    }
}

/// Sort key: exact topics first, then longer prefixes before shorter ones.
fn specificity(pattern: &TopicPattern) -> (u8, std::cmp::Reverse<usize>) {
    match pattern {
        TopicPattern::Exact(_) => (0, std::cmp::Reverse(0)),
        TopicPattern::Prefix(prefix) => (1, std::cmp::Reverse(prefix.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid topic")
    }

    #[test]
    fn most_specific_override_wins_and_gaps_fall_back() {
        let global = Limits {
            max_events: 10,
            max_bytes: Some(1000),
            max_age: Some(Duration::from_secs(60)),
        };
        let all = RetentionOverride {
            max_events: Some(20),
            ..RetentionOverride::default()
        };
        let chat = RetentionOverride {
            max_events: Some(5),
            max_bytes: Some(0),
            ..RetentionOverride::default()
        };
        let room = RetentionOverride {
            max_age: Some(HumanDuration(Duration::ZERO)),
            ..RetentionOverride::default()
        };
        let rules = RetentionRules::new(
            global,
            [("*", &all), ("chat/*", &chat), ("chat/vip", &room)],
        )
        .expect("valid");
        assert_eq!(rules.for_topic(&topic("orders")).max_events, 20);
        let chat_limits = rules.for_topic(&topic("chat/a/b"));
        assert_eq!(chat_limits.max_events, 5);
        assert_eq!(chat_limits.max_bytes, None, "0 turns the byte limit off");
        assert_eq!(chat_limits.max_age, Some(Duration::from_secs(60)));
        let vip = rules.for_topic(&topic("chat/vip"));
        assert_eq!(vip.max_age, None);
        assert_eq!(
            vip.max_events, 10,
            "an exact table falls back to the global"
        );
    }

    #[test]
    fn bad_tables_are_config_errors() {
        let global = Limits {
            max_events: 10,
            max_bytes: None,
            max_age: None,
        };
        let zero = RetentionOverride {
            max_events: Some(0),
            ..RetentionOverride::default()
        };
        let fine = RetentionOverride::default();
        for (pattern, table) in [("chat/*", &zero), ("ch*", &fine), ("", &fine)] {
            let err = RetentionRules::new(global, [(pattern, table)]).expect_err(pattern);
            assert_eq!(err.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_events: 2,
            max_bytes: Some(100),
            max_age: Some(Duration::from_secs(10)),
        };
        assert!(!limits.exceeded(2, 100, Some(50_000), 55_000));
        assert!(limits.exceeded(3, 100, Some(50_000), 55_000));
        assert!(limits.exceeded(2, 101, Some(50_000), 55_000));
        assert!(limits.exceeded(2, 100, Some(44_999), 55_000));
        assert!(!limits.exceeded(2, 100, None, 55_000));
    }
}
