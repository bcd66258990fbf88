//! `tidings bench`: a load generator for any server-sent events server that measures
//! delivery, not just sending.
//!
//! Subscribers open plain HTTP/1.1 streams (optionally from many source addresses); a
//! publisher sends numbered, time-stamped events at a fixed rate; every event received is
//! checked per connection for missing, duplicate and out-of-order sequence numbers and
//! timed into an HDR histogram; with `--server-pid`, the server's memory per connection and
//! CPU per delivery come from /proc. The whole run is on one thread, so the bench takes at
//! most one core away from the server it measures.
//!
//! The modules follow the run: [`args`] (the command line and the body template),
//! [`subscribers`] and [`publisher`] (the two sides, over [`http1`]), [`stats`] (counting
//! and /proc) and [`report`] (table and JSON).

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::{JoinHandle, LocalSet};

mod args;
mod http1;
mod publisher;
mod report;
mod stats;
mod subscribers;

pub use args::BenchArgs;

use crate::exit;
use publisher::{Outcome, Publisher};
use report::{count_reasons, Delivery, Latency, Report, Server, Subscribers};
use stats::{sample_server, Seen, ServerSample, Tally, TICKS_PER_SECOND};
use subscribers::Plan;

/// How often the waiting loops look at the counters (and redraw the progress bar).
const POLL: Duration = Duration::from_millis(20);

/// Runs `tidings bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tidings bench: could not start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let local = LocalSet::new();
    match local.block_on(&runtime, bench(args)) {
        Ok(report) => report,
        Err((code, message)) => {
            eprintln!("tidings bench: {message}");
            ExitCode::from(code)
        }
    }
}

async fn bench(args: BenchArgs) -> Result<ExitCode, (u8, String)> {
    let usage = |message: String| (exit::USAGE, message);
    let tls = http1::tls_connector(&args.cacert).map_err(usage)?;
    let target = http1::Target::resolve(&args.url, &tls)
        .await
        .map_err(usage)?;
    let publisher = match &args.publish_url {
        Some(url) => Some(Publisher {
            target: http1::Target::resolve(url, &tls).await.map_err(usage)?,
            method: args.method.clone(),
            content_type: args.content_type.clone(),
            headers: args.publish_headers.clone(),
            body: args.body.clone(),
            rate: args.rate,
            count: args.count,
            timeout: Duration::from_secs_f64(args.connect_timeout),
        }),
        None => None,
    };
    let sample = |what: &str| -> Result<Option<ServerSample>, (u8, String)> {
        if args.server_pids.is_empty() {
            return Ok(None);
        }
        sample_server(&args.server_pids)
            .map(Some)
            .map_err(|e| (exit::FAILURE, format!("{what}: {e}")))
    };
    let count = if publisher.is_some() { args.count } else { 0 };
    let progress = progress_bar();

    // Connect every subscriber, paced.
    let before = sample("before connecting")?;
    let tally = Rc::new(RefCell::new(Tally::new()));
    let plan = Rc::new(Plan {
        request: Plan::request(&target, &args.headers),
        target,
        fields: args.body.fields(),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        max_event_size: args.max_event_size,
        tally: tally.clone(),
    });
    let sources = args.source_addresses();
    let connect_start = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.connect_rate.max(0.001));
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(args.connections);
    let mut seen = Vec::with_capacity(args.connections);
    progress.set_length(args.connections as u64);
    progress.set_message("connecting");
    for i in 0..args.connections {
        tokio::time::sleep_until((connect_start + pace.mul_f64(i as f64)).into()).await;
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let connection_seen = Rc::new(RefCell::new(Seen::new(count)));
        seen.push(connection_seen.clone());
        tasks.push(tokio::task::spawn_local(subscribers::subscribe(
            plan.clone(),
            source,
            connection_seen,
        )));
        progress.set_position(tally.borrow().connected);
    }
    loop {
        let (connected, failed) = {
            let tally = tally.borrow();
            (tally.connected, tally.failed.len() as u64)
        };
        progress.set_position(connected);
        if connected + failed >= args.connections as u64 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let connected_sample = sample("after connecting")?;

    // Publish, and wait for the deliveries.
    let outcome = Rc::new(RefCell::new(Outcome::default()));
    let cpu_start = sample("before publishing")?;
    let publish_start = Instant::now();
    if let Some(publisher) = publisher {
        let connected = tally.borrow().connected;
        progress.set_length(connected * count);
        progress.set_position(0);
        progress.set_message("delivering");
        let publishing = tokio::task::spawn_local({
            let outcome = outcome.clone();
            async move { publisher.run(outcome).await }
        });
        let mut drain_deadline = None;
        loop {
            let (delivered, alive) = {
                let tally = tally.borrow();
                (tally.delivered, tally.connected - tally.ended_early)
            };
            progress.set_position(delivered);
            if publishing.is_finished() {
                let published = outcome.borrow().published.iter().filter(|p| **p).count();
                let expected = connected * published as u64;
                let deadline = *drain_deadline.get_or_insert_with(|| {
                    Instant::now() + Duration::from_secs_f64(args.drain_timeout)
                });
                if delivered >= expected || alive == 0 || Instant::now() >= deadline {
                    break;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let cpu_end = sample("at the end")?;
    progress.finish_and_clear();
    // Stop reading before counting, so the numbers cannot move under the count.
    for task in &tasks {
        task.abort();
    }

    let report = build_report(
        &args,
        &tally.borrow(),
        &outcome.borrow(),
        &seen,
        connect_seconds,
        publish_start,
        [before, connected_sample, cpu_start, cpu_end],
    );
    let mut stdout = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(stdout))
    } else {
        write!(stdout, "{}", report.table())
    };
    written.map_err(|e| (exit::FAILURE, format!("writing the report: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Puts the counters together; `samples` are the server's before connecting, after
/// connecting, before publishing and at the end.
fn build_report(
    args: &BenchArgs,
    tally: &Tally,
    outcome: &Outcome,
    seen: &[Rc<RefCell<Seen>>],
    connect_seconds: f64,
    publish_start: Instant,
    samples: [Option<ServerSample>; 4],
) -> Report {
    let published = outcome.published.iter().filter(|p| **p).count() as u64;
    // A connection that never connected had no chance to miss anything.
    let missing: u64 = seen
        .iter()
        .map(|s| s.borrow())
        .filter(|s| s.connected)
        .map(|s| s.missing(&outcome.published))
        .sum();
    let delivery_seconds = tally
        .last_delivery
        .map(|last| last.saturating_duration_since(publish_start).as_secs_f64())
        .unwrap_or(0.0);
    let latency = &tally.latency_us;
    let server = match samples {
        [Some(before), Some(connected), Some(start), Some(end)] => {
            let cpu_seconds =
                end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / TICKS_PER_SECOND;
            Some(Server {
                pids: args.server_pids.clone(),
                rss_before_kib: before.rss_kib,
                rss_connected_kib: connected.rss_kib,
                rss_per_connection_bytes: (tally.connected > 0).then(|| {
                    (connected.rss_kib as f64 - before.rss_kib as f64) * 1024.0
                        / tally.connected as f64
                }),
                cpu_seconds,
                cpu_per_delivery_us: (tally.delivered > 0)
                    .then(|| cpu_seconds * 1e6 / tally.delivered as f64),
            })
        }
        _ => None,
    };
    Report {
        subscribers: Subscribers {
            requested: args.connections as u64,
            connected: tally.connected,
            failed: count_reasons(&tally.failed),
            ended_early: tally.ended_early,
            connect_seconds,
        },
        publisher: args.publish_url.as_ref().map(|_| {
            let seconds = outcome
                .span
                .map(|(first, last)| (last - first).as_secs_f64())
                .unwrap_or(0.0);
            report::Publisher {
                published,
                failed: count_reasons(&outcome.failures),
                seconds,
                per_second: if seconds > 0.0 {
                    published as f64 / seconds
                } else {
                    0.0
                },
            }
        }),
        delivery: Delivery {
            expected: tally.connected * published,
            delivered: tally.delivered,
            missing,
            duplicate: tally.duplicate,
            out_of_order: tally.out_of_order,
            unparsed: tally.unparsed,
            received: tally.received,
            per_second: if delivery_seconds > 0.0 {
                tally.delivered as f64 / delivery_seconds
            } else {
                0.0
            },
        },
        latency_us: (!latency.is_empty()).then(|| Latency {
            p50: latency.value_at_quantile(0.5),
            p99: latency.value_at_quantile(0.99),
            p999: latency.value_at_quantile(0.999),
            max: latency.max(),
            mean: latency.mean(),
        }),
        server,
    }
}

/// A progress bar on standard error when it is a terminal, else one that draws nothing.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}
