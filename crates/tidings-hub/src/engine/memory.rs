//! The memory engine: bounded per-topic history in this process, lost on restart.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::broadcast;

use tidings::{EventId, IdGenerator};

use super::{Engine, LiveEvent, NewEvent, ReadBatch, StoredEvent, TopicInfo};
use crate::error::Error;
use crate::topics::{Topic, TopicFilter, TopicPattern};

/// Default retention: the newest 1000 events of each topic.
pub const DEFAULT_MAX_EVENTS_PER_TOPIC: usize = 1000;
/// Default retention: events younger than one hour.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// How many stored events the live feed holds for a slow fan-out before it lags (and the
/// fan-out catches up from history).
const LIVE_FEED_CAPACITY: usize = 4096;

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Events kept in memory, per topic, bounded by count and by age.
///
/// Each topic keeps its newest `max_events_per_topic` events that are younger than
/// `max_age`; an event published to several topics stays readable through each topic for
/// as long as that topic keeps it. Per topic the engine remembers the newest id it
/// trimmed, so a resume from before it reports a gap. Everything is lost when the process
/// ends: a client resuming with an id from before this engine started gets a gap too,
/// because the engine's origin is its start time.
///
/// Topics are never forgotten (only their events are trimmed), so each topic ever
/// published to costs a few hundred bytes for the life of the process.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tidings_hub::engine::{Engine, MemoryEngine, NewEvent};
/// use tidings_hub::topics::{Topic, TopicFilter};
/// use tidings::EventId;
///
/// let engine = MemoryEngine::new(100, None);
/// let stored = engine
///     .append(vec![NewEvent {
///         topics: vec![Topic::new("a")?, Topic::new("b")?],
///         event_type: None,
///         data: "hello".into(),
///         retry: None,
///     }])
///     .await?;
/// let batch = engine.read_after(&TopicFilter::parse(["a", "b"])?, EventId::ZERO, 10).await?;
/// assert_eq!(batch.events.len(), 1, "published to two topics, read once");
/// assert_eq!(batch.events[0].id, stored[0].id);
/// # Ok::<(), tidings_hub::Error>(())
/// # }).unwrap();
/// ```
pub struct MemoryEngine {
    state: Mutex<State>,
    live: broadcast::Sender<LiveEvent>,
    max_events_per_topic: usize,
    max_age: Option<Duration>,
    clock: Clock,
}

struct State {
    ids: IdGenerator,
    origin: EventId,
    topics: BTreeMap<Topic, TopicLog>,
}

struct TopicLog {
    /// Retained events, oldest first, ids increasing.
    events: VecDeque<Arc<StoredEvent>>,
    /// The newest id trimmed from this topic (or the engine's origin).
    trimmed_through: EventId,
    last_id: Option<EventId>,
    published: u64,
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEngine")
            .field("max_events_per_topic", &self.max_events_per_topic)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl MemoryEngine {
    /// An engine keeping, per topic, at most `max_events_per_topic` events (at least 1) no
    /// older than `max_age` (`None`: no age limit).
    pub fn new(max_events_per_topic: usize, max_age: Option<Duration>) -> MemoryEngine {
        MemoryEngine::with_clock(max_events_per_topic, max_age, Arc::new(wall_clock_ms))
    }

    /// As [`MemoryEngine::new`] with a clock giving milliseconds since the Unix epoch
    /// (for tests of age-based retention).
    pub fn with_clock(
        max_events_per_topic: usize,
        max_age: Option<Duration>,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> MemoryEngine {
        let origin = EventId::new(clock(), 0);
        let (live, _) = broadcast::channel(LIVE_FEED_CAPACITY);
        MemoryEngine {
            state: Mutex::new(State {
                ids: IdGenerator::after(origin),
                origin,
                topics: BTreeMap::new(),
            }),
            live,
            max_events_per_topic: max_events_per_topic.max(1),
            max_age,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the logs consistent (every mutation is a
        // push or pop that completes), so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn age_cutoff(&self, now_ms: u64) -> Option<u64> {
        self.max_age
            .map(|age| now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)))
    }
}

impl TopicLog {
    fn new(origin: EventId) -> TopicLog {
        TopicLog {
            events: VecDeque::new(),
            trimmed_through: origin,
            last_id: None,
            published: 0,
        }
    }

    /// Drops events beyond the count limit and (with a cutoff) those stored before it.
    fn trim(&mut self, max_events: usize, cutoff_ms: Option<u64>) {
        while self.events.len() > max_events {
            self.pop_oldest();
        }
        if let Some(cutoff) = cutoff_ms {
            while self.events.front().is_some_and(|e| e.id.ms < cutoff) {
                self.pop_oldest();
            }
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.trimmed_through = self.trimmed_through.max(old.id);
        }
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<StoredEvent>>, Error> {
        let now = (self.clock)();
        let cutoff = self.age_cutoff(now);
        let mut state = self.lock();
        let origin = state.origin;
        let mut stored = Vec::with_capacity(events.len());
        for event in events {
            let id = state.ids.next_at(now);
            let event = Arc::new(StoredEvent::new(id, event));
            for topic in &event.topics {
                let log = state
                    .topics
                    .entry(topic.clone())
                    .or_insert_with(|| TopicLog::new(origin));
                log.events.push_back(Arc::clone(&event));
                log.last_id = Some(id);
                log.published += 1;
                log.trim(self.max_events_per_topic, cutoff);
            }
            stored.push(event);
        }
        // Sent under the lock that assigned the ids, so the live feed is in id order.
        // No receiver (no fan-out running) is not an error: the events are stored.
        for event in &stored {
            let _ = self.live.send(LiveEvent::Stored(Arc::clone(event)));
        }
        Ok(stored)
    }

    async fn read_after(
        &self,
        filter: &TopicFilter,
        after: EventId,
        limit: usize,
    ) -> Result<ReadBatch, Error> {
        let cutoff = self.age_cutoff((self.clock)());
        let mut state = self.lock();
        let origin = state.origin;
        let max_events = self.max_events_per_topic;
        let mut matched: Vec<&TopicLog> = Vec::new();
        let mut complete_after = origin;
        let mut seen_topics: BTreeSet<&Topic> = BTreeSet::new();
        // Trim the matching topics first (a mutable pass), then read them.
        for_each_matching(&mut state.topics, filter, |log| {
            log.trim(max_events, cutoff)
        });
        for_each_matching_ref(&state.topics, filter, |topic, log| {
            if !seen_topics.insert(topic) {
                return;
            }
            complete_after = complete_after.max(log.trimmed_through);
            matched.push(log);
        });

        // k-way merge of the matched logs from just after `after`, by id; an event in
        // several matched topics has one id and is taken once.
        let mut heap: BinaryHeap<Reverse<(EventId, usize, usize)>> = BinaryHeap::new();
        for (i, log) in matched.iter().enumerate() {
            let start = log.events.partition_point(|e| e.id <= after);
            if let Some(e) = log.events.get(start) {
                heap.push(Reverse((e.id, i, start)));
            }
        }
        let mut events: Vec<Arc<StoredEvent>> = Vec::new();
        let mut more = false;
        while let Some(Reverse((id, i, pos))) = heap.pop() {
            if events.last().is_some_and(|last| last.id == id) {
                // The same event through another topic.
            } else if events.len() == limit {
                more = true;
                break;
            } else {
                events.push(Arc::clone(&matched[i].events[pos]));
            }
            if let Some(next) = matched[i].events.get(pos + 1) {
                heap.push(Reverse((next.id, i, pos + 1)));
            }
        }
        Ok(ReadBatch {
            events,
            complete_after,
            more,
        })
    }

    async fn head(&self) -> Result<EventId, Error> {
        Ok(self.lock().ids.last())
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, Error> {
        let cutoff = self.age_cutoff((self.clock)());
        let mut state = self.lock();
        Ok(state
            .topics
            .iter_mut()
            .map(|(topic, log)| {
                log.trim(self.max_events_per_topic, cutoff);
                TopicInfo {
                    topic: topic.clone(),
                    last_id: log.last_id,
                    retained: log.events.len() as u64,
                    published: log.published,
                }
            })
            .collect())
    }

    fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }
}

/// Calls `f` for every topic log matching `filter` (a topic matched by two entries of the
/// filter is visited twice).
fn for_each_matching(
    topics: &mut BTreeMap<Topic, TopicLog>,
    filter: &TopicFilter,
    mut f: impl FnMut(&mut TopicLog),
) {
    for pattern in filter.patterns() {
        match pattern {
            TopicPattern::Exact(topic) => {
                if let Some(log) = topics.get_mut(topic) {
                    f(log);
                }
            }
            TopicPattern::Prefix(prefix) => {
                let range =
                    topics.range_mut::<str, _>((Bound::Included(&**prefix), Bound::Unbounded));
                for (topic, log) in range {
                    if !topic.as_str().starts_with(&**prefix) {
                        break;
                    }
                    f(log);
                }
            }
        }
    }
}

/// As [`for_each_matching`], read-only, handing out references that live as long as the map.
fn for_each_matching_ref<'a>(
    topics: &'a BTreeMap<Topic, TopicLog>,
    filter: &TopicFilter,
    mut f: impl FnMut(&'a Topic, &'a TopicLog),
) {
    for pattern in filter.patterns() {
        match pattern {
            TopicPattern::Exact(topic) => {
                if let Some((topic, log)) = topics.get_key_value(topic) {
                    f(topic, log);
                }
            }
            TopicPattern::Prefix(prefix) => {
                let range = topics.range::<str, _>((Bound::Included(&**prefix), Bound::Unbounded));
                for (topic, log) in range {
                    if !topic.as_str().starts_with(&**prefix) {
                        break;
                    }
                    f(topic, log);
                }
            }
        }
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::engine::test_support::{
        self, data, fill_a_past_its_limit, filter, first_of_a_was_trimmed, new_event,
        reads_merge_in_order,
    };

    #[tokio::test]
    async fn ids_increase_across_topics_and_reads_merge_in_order() {
        reads_merge_in_order(&MemoryEngine::new(100, None)).await;
    }

    #[tokio::test]
    async fn count_retention_reports_what_was_trimmed() {
        // The memory engine trims as it appends.
        let engine = MemoryEngine::new(2, None);
        let (origin, ids) = fill_a_past_its_limit(&engine).await;
        first_of_a_was_trimmed(&engine, origin, &ids).await;
    }

    #[tokio::test]
    async fn age_retention_uses_the_clock() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock = {
            let now = Arc::clone(&now);
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let engine = MemoryEngine::with_clock(100, Some(Duration::from_secs(10)), clock);
        let old = engine
            .append(vec![new_event(&["a"], "old")])
            .await
            .expect("append")[0]
            .id;
        now.fetch_add(6_000, Ordering::SeqCst);
        engine
            .append(vec![new_event(&["a"], "new")])
            .await
            .expect("append");
        now.fetch_add(6_000, Ordering::SeqCst);
        let a = engine
            .read_after(&filter(&["a"]), EventId::ZERO, 10)
            .await
            .expect("read");
        assert_eq!(data(&a), ["new"]);
        assert_eq!(a.complete_after, old);
    }

    #[tokio::test]
    async fn live_feed_is_in_id_order() {
        test_support::live_feed_is_in_id_order(&MemoryEngine::new(10, None)).await;
    }

    #[tokio::test]
    async fn encoded_once_with_id_and_type() {
        let engine = MemoryEngine::new(10, None);
        let mut event = new_event(&["a"], "x\ny");
        event.event_type = Some("t".into());
        let stored = engine.append(vec![event]).await.expect("append");
        let bytes = stored[0].encoded().expect("encodes");
        let expected = format!("id: {}\nevent: t\ndata: x\ndata: y\n\n", stored[0].id);
        assert_eq!(&bytes[..], expected.as_bytes());
        assert_eq!(
            bytes.as_ptr(),
            stored[0].encoded().expect("encodes").as_ptr(),
            "shared, not re-encoded"
        );
    }
}
