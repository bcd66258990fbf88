//! Topics, topic patterns and the filter a subscription is made of.
//!
//! A **topic** is a name such as `orders` or `chat/room-1`: 1 to 256 bytes of UTF-8, no
//! control characters, no `*`, and `/` only between non-empty segments (no leading,
//! trailing or doubled `/`). Events are published to one or more topics.
//!
//! A **pattern** ends in `*` and subscribes to a family of topics:
//! - `*` matches every topic;
//! - `chat/*` matches every topic *under* `chat/`: `chat/x` and `chat/x/y`, but **not**
//!   `chat` itself. Subscribe to `chat` and `chat/*` to get both. (A pattern names the
//!   children of a topic; keeping the parent out makes `chat/*` and `chat` independent
//!   choices instead of one implying the other.)
//!
//! `*` anywhere else (`ch*`, `chat/*/x`) is not a pattern and is rejected.
//!
//! ```
//! use tidings_hub::topics::{Topic, TopicFilter};
//!
//! let filter = TopicFilter::parse(["orders", "chat/*"])?;
//! assert!(filter.matches(&Topic::new("orders")?));
//! assert!(filter.matches(&Topic::new("chat/room-1/thread")?));
//! assert!(!filter.matches(&Topic::new("chat")?));
//! # Ok::<(), tidings_hub::Error>(())
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// A valid topic name (see the [module docs](self) for the rules). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Checks `name` against the topic rules.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTopic`] with a message that says which rule was broken.
    pub fn new(name: &str) -> Result<Topic, Error> {
        check_name(name, "topic")?;
        if name.contains('*') {
            return Err(invalid(
                name,
                "`*` is only allowed at the end of a subscription pattern (e.g. `chat/*`), not in a topic",
            ));
        }
        Ok(Topic(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// One entry of a subscription: an exact topic or a pattern ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(Topic),
    /// Every topic whose name starts with this prefix: `""` for `*`, `"chat/"` for
    /// `chat/*`.
    Prefix(Arc<str>),
}

impl TopicPattern {
    /// Reads a topic (`chat/room-1`) or a pattern (`*`, `chat/*`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTopic`] when it is neither.
    pub fn parse(text: &str) -> Result<TopicPattern, Error> {
        if text == "*" {
            return Ok(TopicPattern::Prefix(Arc::from("")));
        }
        match text.strip_suffix("/*") {
            Some(parent) if !parent.is_empty() => {
                check_name(parent, "pattern").map_err(|_| {
                    invalid(text, "the part before `/*` must be a valid topic name")
                })?;
                if parent.contains('*') {
                    return Err(invalid(
                        text,
                        "a pattern has one `*`, at the end after a `/` (e.g. `chat/*`)",
                    ));
                }
                Ok(TopicPattern::Prefix(Arc::from(&text[..text.len() - 1])))
            }
            _ if text.contains('*') => Err(invalid(
                text,
                "a pattern is `*` or ends in `/*` (e.g. `chat/*`); `*` anywhere else is not allowed",
            )),
            _ => Topic::new(text).map(TopicPattern::Exact),
        }
    }

    /// Whether `topic` belongs to this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        match self {
            TopicPattern::Exact(t) => t == topic,
            TopicPattern::Prefix(prefix) => topic.as_str().starts_with(&**prefix),
        }
    }

    /// Whether every topic `other` stands for is one this stands for: a topic covers
    /// itself; a pattern covers the topics it matches and every pattern under its prefix
    /// (`chat/*` covers `chat/x` and `chat/x/*`, not `chat` or `*`).
    pub fn covers(&self, other: &TopicPattern) -> bool {
        match (self, other) {
            (_, TopicPattern::Exact(topic)) => self.matches(topic),
            (TopicPattern::Prefix(mine), TopicPattern::Prefix(theirs)) => {
                theirs.starts_with(&**mine)
            }
            (TopicPattern::Exact(_), TopicPattern::Prefix(_)) => false,
        }
    }

    /// Whether this is a pattern (ends in `*`) rather than one exact topic.
    pub fn is_pattern(&self) -> bool {
        matches!(self, TopicPattern::Prefix(_))
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicPattern::Exact(t) => f.write_str(t.as_str()),
            TopicPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// The set of topics and patterns one subscription (or one history read) asks for.
///
/// Duplicates are removed when parsing, so the length is the number of distinct entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    patterns: Vec<TopicPattern>,
}

impl TopicFilter {
    /// A filter from topic and pattern texts, in order, without duplicates.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTopic`] for the first entry that is not a topic or pattern.
    pub fn parse<I, T>(texts: I) -> Result<TopicFilter, Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut patterns: Vec<TopicPattern> = Vec::new();
        for text in texts {
            let pattern = TopicPattern::parse(text.as_ref())?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(TopicFilter { patterns })
    }

    /// A filter matching every topic (`*`).
    pub fn all() -> TopicFilter {
        TopicFilter {
            patterns: vec![TopicPattern::Prefix(Arc::from(""))],
        }
    }

    /// A filter of exactly one topic.
    pub fn topic(topic: Topic) -> TopicFilter {
        TopicFilter {
            patterns: vec![TopicPattern::Exact(topic)],
        }
    }

    /// The entries of the filter.
    pub fn patterns(&self) -> &[TopicPattern] {
        &self.patterns
    }

    /// The number of distinct entries.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether the filter has no entries (matches nothing).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `topic` belongs to any entry.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    /// Whether any of `topics` belongs to any entry (an event published to several topics
    /// is delivered once if this is true).
    pub fn matches_any(&self, topics: &[Topic]) -> bool {
        topics.iter().any(|t| self.matches(t))
    }

    /// The exact topics of the filter (patterns left out).
    pub fn exact_topics(&self) -> impl Iterator<Item = &Topic> {
        self.patterns.iter().filter_map(|p| match p {
            TopicPattern::Exact(t) => Some(t),
            TopicPattern::Prefix(_) => None,
        })
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The prefixes under which pattern subscribers of `topic` are registered: `""` (for `*`)
/// and every `parent/` of the topic. `chat/x/y` gives `""`, `"chat/"`, `"chat/x/"`.
pub(crate) fn pattern_prefixes(topic: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(
        topic
            .match_indices('/')
            .map(move |(slash, _)| &topic[..=slash]),
    )
}

fn check_name(name: &str, what: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidTopic,
            format!("a {what} must not be empty"),
        ));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(invalid(name, &format!("longer than {MAX_TOPIC_LEN} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            name,
            "control characters (CR, LF, NUL, ...) are not allowed",
        ));
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(invalid(
            name,
            "`/` separates non-empty segments: no leading, trailing or doubled `/`",
        ));
    }
    Ok(())
}

fn invalid(name: &str, why: &str) -> Error {
    let shown: String = name.chars().take(80).collect();
    Error::new(
        ErrorKind::InvalidTopic,
        format!("{shown:?} is not a valid topic or pattern: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid topic")
    }

    #[test]
    fn valid_and_invalid_topics() {
        for ok in ["a", "chat/room-1", "ünï/cödé", "a.b:c"] {
            assert_eq!(topic(ok).as_str(), ok);
        }
        let long = "x".repeat(MAX_TOPIC_LEN + 1);
        for bad in ["", "/a", "a/", "a//b", "a\nb", "a\0", "a*", "*", &long] {
            let err = Topic::new(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidTopic);
        }
    }

    #[test]
    fn patterns() {
        let star = TopicPattern::parse("*").expect("valid");
        assert!(star.matches(&topic("anything/at/all")));

        let chat = TopicPattern::parse("chat/*").expect("valid");
        assert!(chat.matches(&topic("chat/x")));
        assert!(chat.matches(&topic("chat/x/y")));
        assert!(!chat.matches(&topic("chat")), "chat/* does not match chat");
        assert!(!chat.matches(&topic("chatter/x")));
        assert_eq!(chat.to_string(), "chat/*");

        for bad in [
            "ch*", "chat*", "chat/*/x", "*/x", "/*", "**", "a/*/*", "a//*",
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_covers_what() {
        let p = |text: &str| TopicPattern::parse(text).expect(text);
        let yes = [
            ("*", "*"),
            ("*", "a"),
            ("*", "chat/*"),
            ("chat/*", "chat/*"),
            ("chat/*", "chat/x"),
            ("chat/*", "chat/x/*"),
            ("chat/x", "chat/x"),
        ];
        for (granted, wanted) in yes {
            assert!(p(granted).covers(&p(wanted)), "{granted} covers {wanted}");
        }
        let no = [
            ("chat/*", "*"),
            ("chat/*", "chat"),
            ("chat/*", "chatter/*"),
            ("chat/x", "chat/*"),
            ("chat/x", "chat/x/*"),
            ("a", "b"),
        ];
        for (granted, wanted) in no {
            assert!(
                !p(granted).covers(&p(wanted)),
                "{granted} does not cover {wanted}"
            );
        }
    }

    #[test]
    fn filter_dedups_and_matches_any() {
        let f = TopicFilter::parse(["a", "a", "b/*"]).expect("valid");
        assert_eq!(f.len(), 2);
        assert!(f.matches_any(&[topic("z"), topic("b/1")]));
        assert!(!f.matches_any(&[topic("z"), topic("b")]));
        assert_eq!(f.exact_topics().count(), 1);
    }

    #[test]
    fn prefixes_of_a_topic() {
        let all: Vec<&str> = pattern_prefixes("chat/x/y").collect();
        assert_eq!(all, ["", "chat/", "chat/x/"]);
        let one: Vec<&str> = pattern_prefixes("a").collect();
        assert_eq!(one, [""]);
    }
}
