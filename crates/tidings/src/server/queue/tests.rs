use super::*;

fn queue(items: &[usize]) -> QueueState {
    let mut q = QueueState::default();
    for &len in items {
        q.bytes += len;
        q.items.push_back(Bytes::from(vec![b'x'; len]));
    }
    q
}

fn writes(mut q: QueueState) -> Vec<usize> {
    let mut out = Vec::new();
    while !q.items.is_empty() {
        out.push(take_write(&mut q).len());
    }
    assert_eq!(q.bytes, 0, "accounting returns to zero");
    out
}

#[test]
fn small_items_are_batched_large_ones_pass_through() {
    assert_eq!(writes(queue(&[10, 20, 30])), [60]);
    assert_eq!(writes(queue(&[10, 5000, 20, 30])), [10, 5000, 50]);
    assert_eq!(writes(queue(&[16384, 16384])), [16384, 16384]);
    // Batches are cut near BATCH_BYTES.
    let many = vec![4000; 10];
    assert_eq!(writes(queue(&many)), [16000, 16000, 8000]);
}

/// A transport that takes everything, and records each write.
#[derive(Default)]
struct Recording {
    writes: Mutex<Vec<Bytes>>,
}

impl DirectWrite for Recording {
    fn try_write(&self, data: Outgoing<'_>) -> DirectOutcome {
        self.writes.lock().unwrap().push(data.bytes().clone());
        DirectOutcome::Written
    }
}

/// A queue whose transport takes everything it is offered.
fn with_transport(max_bytes: usize) -> (Link, Arc<Recording>) {
    let link = Link::new(max_bytes);
    let transport = Arc::new(Recording::default());
    link.set_direct(transport.clone());
    (link, transport)
}

fn parts(lens: &[usize]) -> (Vec<Bytes>, SharedBytes) {
    let parts: Vec<Bytes> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| Bytes::from(vec![b'a' + i as u8; len]))
        .collect();
    let joined = SharedBytes::new(parts.concat().into());
    (parts, joined)
}

fn queued(link: &Link) -> Vec<usize> {
    link.lock().items.iter().map(Bytes::len).collect()
}

#[test]
fn replayed_history_does_not_count_against_the_bound() {
    let big_replay = || (0..10).map(|_| Bytes::from(vec![b'r'; 100]));
    for policy in [
        SlowClientPolicy::Disconnect,
        SlowClientPolicy::DropOldest,
        SlowClientPolicy::LatestOnly,
    ] {
        // A replay of 1,000 bytes into a queue bounded at 150, then live events: the
        // client has not fallen behind on anything yet, so no policy acts.
        let link = Link::new(150);
        link.push_unbounded(big_replay()).unwrap();
        for _ in 0..3 {
            let outcome = link.push(Bytes::from_static(&[b'l'; 40]), None, policy);
            assert_eq!(outcome.unwrap(), PushOutcome::Queued, "{policy}");
        }
        assert_eq!(queued(&link).len(), 13, "{policy}");
        // One more live event passes the bound for live events: now the policy acts.
        let outcome = link.push(Bytes::from_static(&[b'l'; 40]), None, policy);
        assert_ne!(outcome.unwrap(), PushOutcome::Queued, "{policy}");
    }

    // Taking the replay out gives the whole bound back to live events.
    let link = Link::new(150);
    link.push_unbounded(big_replay()).unwrap();
    let mut q = link.lock();
    while q.replay_bytes > 0 {
        take_write(&mut q);
    }
    assert_eq!((q.bytes, q.bounded_bytes()), (0, 0));
}

#[test]
fn joined_parts_go_out_in_one_direct_write_and_unjoined_ones_are_queued() {
    let (link, transport) = with_transport(1000);
    let (parts, joined) = parts(&[10, 20, 30]);
    let outcome = link.push_parts(&parts, Some(&joined), SlowClientPolicy::Disconnect);
    assert_eq!(outcome.unwrap(), PushOutcome::Queued);
    assert_eq!(*transport.writes.lock().unwrap(), [joined.bytes().clone()]);
    assert!(queued(&link).is_empty());

    // Without the joined bytes, the same parts are queued even though the wire is free.
    let outcome = link.push_parts(&parts, None, SlowClientPolicy::Disconnect);
    assert_eq!(outcome.unwrap(), PushOutcome::Queued);
    assert_eq!(transport.writes.lock().unwrap().len(), 1);
    assert_eq!(queued(&link), [10, 20, 30]);
}

#[test]
fn joined_parts_that_cannot_go_direct_are_queued_one_by_one_under_the_policy() {
    // As separate pushes would: each part is an event the policy counts on its own.
    for (policy, expected, left) in [
        (
            SlowClientPolicy::DropOldest,
            PushOutcome::DroppedOldest(3),
            vec![40, 50],
        ),
        (
            SlowClientPolicy::LatestOnly,
            PushOutcome::Replaced(4),
            vec![50],
        ),
        (
            SlowClientPolicy::Disconnect,
            PushOutcome::Disconnected,
            vec![],
        ),
    ] {
        let (link, transport) = with_transport(150);
        // The consumer is writing: nothing may go direct until it releases the wire.
        link.claim_wire();
        let (first, _) = parts(&[60, 60]);
        for part in first {
            link.push(part, None, policy).unwrap();
        }
        let (parts, joined) = parts(&[100, 40, 50]);
        let outcome = link.push_parts(&parts, Some(&joined), policy).unwrap();
        assert_eq!(outcome, expected, "{policy}");
        assert_eq!(queued(&link), left, "{policy}");
        assert!(transport.writes.lock().unwrap().is_empty(), "{policy}");
        assert_eq!(
            link.is_closed(),
            policy == SlowClientPolicy::Disconnect,
            "{policy}"
        );
    }
}

#[test]
fn a_large_item_is_the_same_shared_bytes() {
    let mut q = queue(&[]);
    let big = Bytes::from(vec![b'x'; 8192]);
    q.bytes += big.len();
    q.items.push_back(big.clone());
    let out = take_write(&mut q);
    assert_eq!(out.as_ptr(), big.as_ptr(), "no copy");
}
