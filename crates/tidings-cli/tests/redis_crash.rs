//! Crash test of the Redis engine, through the `tidings` binary as built: two `tidings
//! serve --engine redis` hubs share a `redis-server` that fsyncs every write before it
//! answers. 4 publishers publish through both hubs and 20 subscribers stream from them
//! (10 on each) while, in turn, each hub and then Redis itself is killed with SIGKILL and
//! started again. Every acknowledged event must reach every subscriber exactly once, in
//! order, with no gap event; an event whose publish was cut off may arrive or not, but
//! never twice and never out of order.
//!
//! Needs `redis-server`; without it the test prints `skipped: … (install redis-server)` and
//! passes, unless `TIDINGS_REQUIRE_EXTERNAL=1`, when it fails.

use std::net::SocketAddr;
use std::time::Duration;

mod crash_support;
#[path = "../../tidings-hub/src/engine/redis/test_server.rs"]
mod redis_server;

use crash_support::disk_support::free_port;
use crash_support::{check_every_subscriber, connected_subscribers, Hub, Publishers, TempDir};
use redis_server::RedisServer;

const SUBSCRIBERS: usize = 20;
const PUBLISHERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_killed_hubs_and_a_killed_redis() {
    let dir = TempDir::new("redis-crash");
    let Some(mut redis) = RedisServer::start_durable("redis crash test", &dir.0) else {
        return;
    };
    let url = redis.url();
    let args = ["--engine", "redis", "--redis-url", url.as_str()];
    let log = dir.0.join("serve-stderr.log");
    let addrs: [SocketAddr; 2] = [
        ([127, 0, 0, 1], free_port()).into(),
        ([127, 0, 0, 1], free_port()).into(),
    ];
    let mut hubs = [
        Some(Hub::start(&args, addrs[0], &log).await),
        Some(Hub::start(&args, addrs[1], &log).await),
    ];

    let subscribers = connected_subscribers(&addrs, SUBSCRIBERS).await;

    let publishers = Publishers::start(&addrs, PUBLISHERS);

    // Kill hub 0, hub 1, then Redis, each after 150 more acknowledged events, with
    // publishes in flight and every subscriber streaming.
    for victim in 0..3 {
        publishers
            .wait_for(150, "publishes to be acknowledged")
            .await;
        if victim < 2 {
            hubs[victim].take().expect("running").kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            hubs[victim] = Some(Hub::start(&args, addrs[victim], &log).await);
        } else {
            redis.stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.start_again();
        }
    }
    let acked = publishers.finish().await;
    // Each subscriber's hub was killed once: it connected at least twice.
    check_every_subscriber(&subscribers, &acked, 2).await;
    eprintln!(
        "{} acknowledged events, two hub kills and a Redis kill: all {SUBSCRIBERS} subscribers got each exactly once, in order",
        acked.len()
    );
    for hub in hubs.into_iter().flatten() {
        hub.kill();
    }
}
