//! Polling a connection again, at once, when it wakes itself while being polled.
//!
//! hyper hands a request's body to the service through a channel, and the connection's
//! own task is on both ends: the service waits for the body, then the connection reads
//! it and wakes that waiter — its own task, in the middle of its poll. On tokio's
//! multi-threaded runtime a task woken during its own poll counts as yielding: it goes
//! to the back of the queue and another worker thread is woken to share the load. For
//! a publish (`POST` with a small body) that is a futex wake-up, a context switch and a
//! worker that finds nothing to do, for each request: about 20 µs of CPU per publish on
//! the hub's 2-core test machine (88-106 µs before, 68-88 µs after, with one subscriber
//! at 500 publishes/s), a fifth of the publish's cost.
//!
//! [`Repoll`] polls the connection with a waker of its own. A wake-up that comes while
//! the connection is being polled only notes that it wants another poll, which
//! [`Repoll`] does at once, up to [`MAX_REPOLLS`] times (a future that keeps waking
//! itself means to yield, and then does). A wake-up at any other time wakes the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls in a row at most, within one poll of the task.
pub(super) const MAX_REPOLLS: usize = 8;

/// Not being polled: a wake-up wakes the task.
const IDLE: u8 = 0;
/// Being polled: a wake-up asks for another poll.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile.
const WOKEN: u8 = 2;

/// The waker [`Repoll`] polls with.
#[derive(Default)]
struct Gate {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(IDLE) => self.task.wake(),
            Err(_) => {} // already woken during this poll
        }
    }
}

/// Polls futures with one shared [`Gate`]: one per connection.
pub(super) struct Repoller {
    gate: Arc<Gate>,
    waker: Waker,
}

impl Repoller {
    pub(super) fn new() -> Repoller {
        let gate = Arc::new(Gate::default());
        let waker = Waker::from(Arc::clone(&gate));
        Repoller { gate, waker }
    }

    /// `future`, polled again at once when it wakes itself while being polled.
    pub(super) fn poll<'a, F: Future>(&'a self, future: Pin<&'a mut F>) -> Repoll<'a, F> {
        Repoll {
            repoller: self,
            future,
        }
    }
}

/// See the module docs.
pub(super) struct Repoll<'a, F> {
    repoller: &'a Repoller,
    future: Pin<&'a mut F>,
}

impl<F: Future> Future for Repoll<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let repoller = self.repoller;
        let gate = &repoller.gate;
        gate.task.register(cx.waker());
        let mut inner = Context::from_waker(&repoller.waker);
        for _ in 0..MAX_REPOLLS {
            gate.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(output) = self.future.as_mut().poll(&mut inner) {
                gate.state.store(IDLE, Ordering::Release);
                return Poll::Ready(output);
            }
            if gate
                .state
                .compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Poll::Pending;
            }
        }
        // Woken during every poll: it means to yield. Let the task go round the scheduler.
        gate.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Pending, waking itself, `n` times; then ready.
    struct SelfWaking(usize);

    impl Future for SelfWaking {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 == 0 {
                return Poll::Ready(());
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn poll_once<F: Future>(
        repoller: &Repoller,
        future: Pin<&mut F>,
        task: &Arc<Count>,
    ) -> Poll<F::Output> {
        let waker = Waker::from(Arc::clone(task));
        let mut cx = Context::from_waker(&waker);
        std::pin::pin!(repoller.poll(future)).poll(&mut cx)
    }

    #[test]
    fn a_wake_during_the_poll_is_a_poll_at_once_not_a_task_wake() {
        let repoller = Repoller::new();
        let task = Arc::new(Count::default());
        let mut future = std::pin::pin!(SelfWaking(3));
        assert!(poll_once(&repoller, future.as_mut(), &task).is_ready());
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields() {
        let repoller = Repoller::new();
        let task = Arc::new(Count::default());
        let mut future = std::pin::pin!(SelfWaking(MAX_REPOLLS + 1));
        assert!(poll_once(&repoller, future.as_mut(), &task).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "woken to be polled again");
        assert!(poll_once(&repoller, future.as_mut(), &task).is_ready());
    }

    #[test]
    fn a_wake_after_the_poll_wakes_the_task() {
        let repoller = Repoller::new();
        let task = Arc::new(Count::default());
        let (tx, rx) = futures_channel_like();
        let mut future = std::pin::pin!(rx);
        assert!(poll_once(&repoller, future.as_mut(), &task).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        tx();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(poll_once(&repoller, future.as_mut(), &task).is_ready());
    }

    /// A future that is ready once the returned function has been called, and wakes
    /// whoever polled it last when it is.
    fn futures_channel_like() -> (impl Fn(), impl Future<Output = ()>) {
        #[derive(Default)]
        struct Shared {
            set: std::sync::atomic::AtomicBool,
            waker: AtomicWaker,
        }
        let shared = Arc::new(Shared::default());
        let sender = Arc::clone(&shared);
        let send = move || {
            sender.set.store(true, Ordering::SeqCst);
            sender.waker.wake();
        };
        let receive = std::future::poll_fn(move |cx| {
            shared.waker.register(cx.waker());
            if shared.set.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        (send, receive)
    }
}
