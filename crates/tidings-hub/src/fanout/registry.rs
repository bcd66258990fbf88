//! Who is subscribed to what: exact topics in one map, patterns by prefix in another, so
//! finding the subscribers of an event costs a few hash lookups per topic, not a scan.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use tidings::server::SessionId;

use super::Subscriber;
use crate::topics::{pattern_prefixes, Topic, TopicPattern};

/// The subscribers of one topic or pattern prefix.
#[derive(Default)]
struct Members {
    by_id: HashMap<SessionId, Arc<Subscriber>>,
    /// All of `by_id`, listed once for every event until the members change: an event
    /// to them takes one reference to the list instead of one to each subscriber (a
    /// locked increment, and later a decrement, on each subscriber's memory).
    listed: OnceLock<Arc<[Arc<Subscriber>]>>,
}

impl Members {
    fn insert(&mut self, id: SessionId, subscriber: Arc<Subscriber>) {
        self.by_id.insert(id, subscriber);
        self.listed.take();
    }

    fn remove(&mut self, id: SessionId) {
        if self.by_id.remove(&id).is_some() {
            self.listed.take();
        }
    }

    fn listed(&self) -> Arc<[Arc<Subscriber>]> {
        Arc::clone(
            self.listed
                .get_or_init(|| self.by_id.values().cloned().collect()),
        )
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    subscribers: HashMap<SessionId, Arc<Subscriber>>,
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
    pub(crate) fn matching(&self, topics: &[Topic]) -> Arc<[Arc<Subscriber>]> {
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
            return only.listed();
        }
        let mut seen: HashSet<SessionId> = HashSet::new();
        let mut out = Vec::new();
        for (id, subscriber) in sets.into_iter().flat_map(|members| &members.by_id) {
            if seen.insert(*id) {
                out.push(Arc::clone(subscriber));
            }
        }
        out.into()
    }

    pub(crate) fn count_for(&self, topic: &Topic) -> usize {
        let mut seen: HashSet<SessionId> = HashSet::new();
        if let Some(members) = self.by_topic.get(topic) {
            seen.extend(members.by_id.keys().copied());
        }
        for prefix in pattern_prefixes(topic.as_str()) {
            if let Some(members) = self.by_prefix.get(prefix) {
                seen.extend(members.by_id.keys().copied());
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
        members.remove(id);
        if members.by_id.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tidings::server::{Session, SessionConfig};

    use super::*;
    use crate::fanout::Delivery;
    use crate::topics::TopicFilter;

    fn subscriber(filter: &[&str]) -> Arc<Subscriber> {
        let (session, _stream) = Session::new(SessionConfig::new(), ());
        Arc::new(Subscriber {
            session,
            filter: TopicFilter::parse(filter).unwrap(),
            delivery: Mutex::new(Delivery::Stopped),
        })
    }

    fn ids(subscribers: &[Arc<Subscriber>]) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = subscribers.iter().map(|s| s.session.id()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_listed_members_follow_every_change() {
        let topic = Topic::new("a").unwrap();
        let mut registry = Registry::default();
        let (one, two, three) = (subscriber(&["a"]), subscriber(&["a"]), subscriber(&["a"]));
        registry.insert(Arc::clone(&one));
        registry.insert(Arc::clone(&two));
        let listed = registry.matching(std::slice::from_ref(&topic));
        assert_eq!(ids(&listed), ids(&[one.clone(), two.clone()]));
        // Listed once: the next event shares the list.
        assert!(Arc::ptr_eq(
            &listed,
            &registry.matching(std::slice::from_ref(&topic))
        ));

        registry.remove(one.session.id());
        assert_eq!(
            ids(&registry.matching(std::slice::from_ref(&topic))),
            ids(std::slice::from_ref(&two))
        );
        registry.insert(Arc::clone(&three));
        assert_eq!(
            ids(&registry.matching(std::slice::from_ref(&topic))),
            ids(&[two.clone(), three.clone()])
        );
        // A list taken before a change is the one its event was for.
        assert_eq!(listed.len(), 2);

        // With a pattern beside the topic, each subscriber still comes once.
        let everything = subscriber(&["*", "a"]);
        registry.insert(Arc::clone(&everything));
        assert_eq!(
            ids(&registry.matching(std::slice::from_ref(&topic))),
            ids(&[two, three, everything])
        );
    }
}
