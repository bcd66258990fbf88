//! Who is subscribed to what: exact topics in one map, patterns by prefix in another, so
//! finding the subscribers of an event costs a few hash lookups per topic, not a scan.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tidings::server::SessionId;

use super::Subscriber;
use crate::topics::{pattern_prefixes, Topic, TopicPattern};

type Members = HashMap<SessionId, Arc<Subscriber>>;

#[derive(Default)]
pub(crate) struct Registry {
    subscribers: Members,
    by_topic: HashMap<Topic, Members>,
    /// Pattern subscribers keyed by prefix: `""` for `*`, `"chat/"` for `chat/*`.
    by_prefix: HashMap<Arc<str>, Members>,
}

impl Registry {
    pub(crate) fn len(&self) -> usize {
        self.subscribers.len()
    }

    pub(crate) fn insert(&mut self, subscriber: Arc<Subscriber>) {
        let id = subscriber.session.id();
        for pattern in subscriber.filter.patterns() {
            let members = match pattern {
                TopicPattern::Exact(topic) => self.by_topic.entry(topic.clone()).or_default(),
                TopicPattern::Prefix(prefix) => {
                    self.by_prefix.entry(Arc::clone(prefix)).or_default()
                }
            };
            members.insert(id, Arc::clone(&subscriber));
        }
        self.subscribers.insert(id, subscriber);
    }

    pub(crate) fn remove(&mut self, id: SessionId) -> Option<Arc<Subscriber>> {
        let subscriber = self.subscribers.remove(&id)?;
        for pattern in subscriber.filter.patterns() {
            match pattern {
                TopicPattern::Exact(topic) => remove_member(&mut self.by_topic, topic, id),
                TopicPattern::Prefix(prefix) => remove_member(&mut self.by_prefix, prefix, id),
            }
        }
        Some(subscriber)
    }

    /// Every subscriber of any of `topics`, each once.
    pub(crate) fn matching(&self, topics: &[Topic]) -> Vec<Arc<Subscriber>> {
        let mut sets: Vec<&Members> = Vec::new();
        for topic in topics {
            sets.extend(self.by_topic.get(topic));
            for prefix in pattern_prefixes(topic.as_str()) {
                sets.extend(self.by_prefix.get(prefix));
            }
        }
        // The common case, one topic and no pattern matching it, needs no de-duplication:
        // a session is in one member set at most once.
        if let [only] = sets.as_slice() {
            return only.values().cloned().collect();
        }
        let mut seen: HashSet<SessionId> = HashSet::new();
        let mut out = Vec::new();
        for (id, subscriber) in sets.into_iter().flatten() {
            if seen.insert(*id) {
                out.push(Arc::clone(subscriber));
            }
        }
        out
    }

    pub(crate) fn count_for(&self, topic: &Topic) -> usize {
        let mut seen: HashSet<SessionId> = HashSet::new();
        if let Some(members) = self.by_topic.get(topic) {
            seen.extend(members.keys().copied());
        }
        for prefix in pattern_prefixes(topic.as_str()) {
            if let Some(members) = self.by_prefix.get(prefix) {
                seen.extend(members.keys().copied());
            }
        }
        seen.len()
    }

    /// The exact topics someone subscribes to (to list topics without events yet).
    pub(crate) fn subscribed_topics(&self) -> impl Iterator<Item = &Topic> {
        self.by_topic.keys()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        self.subscribers.values()
    }
}

fn remove_member<K, Q>(map: &mut HashMap<K, Members>, key: &Q, id: SessionId)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(members) = map.get_mut(key) {
        members.remove(&id);
        if members.is_empty() {
            map.remove(key);
        }
    }
}
