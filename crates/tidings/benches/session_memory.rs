//! Library memory per idle session: the heap bytes one registered session costs (session
//! handle, queue, response stream, channel entry), sockets and HTTP buffers aside.
//!
//! ```text
//! cargo bench -p tidings --bench session_memory
//! ```
//! Counts every allocation with a counting global allocator while 10,000 sessions are
//! created and registered (their keep-alive timers armed by a first poll), and prints
//! the live bytes per session.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use futures_util::FutureExt;
use http_body_util::BodyExt;
use tidings::server::{Channel, Session, SessionConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SESSIONS: usize = 10_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let channel: Channel = Channel::new();
    let mut kept = Vec::with_capacity(SESSIONS);
    let mut streams = Vec::with_capacity(SESSIONS);
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..SESSIONS {
        let (session, mut stream) = Session::new(SessionConfig::new(), ());
        channel.register(&session).expect("register");
        // First poll: preamble written; second: idle, keep-alive timer armed, waker stored.
        while let Some(Some(Ok(_))) = stream.frame().now_or_never() {}
        streams.push(stream);
        kept.push(session);
    }
    let after = LIVE.load(Ordering::Relaxed);
    // The two Vecs above are the test's own bookkeeping, not the library's.
    let bookkeeping = (kept.capacity() * std::mem::size_of_val(&kept[0])
        + streams.capacity() * std::mem::size_of_val(&streams[0])) as isize;
    let per_session = (after - before - bookkeeping) as f64 / SESSIONS as f64;
    println!("idle sessions: {SESSIONS}");
    println!(
        "library heap per idle session: {per_session:.0} bytes (stream struct inline: {} bytes)",
        std::mem::size_of_val(&streams[0])
    );
    assert_eq!(channel.session_count(), SESSIONS);
}
