//! The subscriber side: one task per connection, each a hand-written HTTP/1.1 GET whose
//! body goes through [`tidings::wire::Parser`], every event checked against its
//! connection's [`Seen`] set and timed into the shared [`Tally`].

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidings::wire::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::args::Field;
use super::http1::{read_head, refusal, Framing, Stream, Target};
use super::stats::{read_fields, Arrival, Seen, Tally};

/// Each connection's read buffer: big enough to take a 16 KiB event in a few reads, small
/// enough that 15,000 of them stay under 150 MB.
const READ_BUFFER: usize = 8 * 1024;

/// What every subscriber shares: the request to send and the place to count.
pub struct Plan {
    /// Where to connect and what to ask for.
    pub target: Target,
    /// The GET request, written once.
    pub request: Vec<u8>,
    /// How to read the data's numbers.
    pub fields: Vec<Field>,
    /// Give up on a connection whose head has not come by then.
    pub connect_timeout: Duration,
    /// The parser's bound on one event.
    pub max_event_size: usize,
    /// The counters.
    pub tally: Rc<RefCell<Tally>>,
}

impl Plan {
    /// Writes the subscribe request for `target` with the extra `headers`.
    pub fn request(target: &Target, headers: &[(String, String)]) -> Vec<u8> {
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
            target.path_and_query, target.authority
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.into_bytes()
    }
}

/// Runs one subscriber until its stream ends or the bench drops the task; its sequence
/// numbers go into `seen`.
pub async fn subscribe(plan: Rc<Plan>, source: Option<IpAddr>, seen: Rc<RefCell<Seen>>) {
    let opened = tokio::time::timeout(plan.connect_timeout, open(&plan, source)).await;
    let (mut stream, mut buf, mut framing) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(reason)) => return plan.tally.borrow_mut().failed.push(reason),
        Err(_) => {
            return plan
                .tally
                .borrow_mut()
                .failed
                .push("timed out waiting for the response head".to_owned())
        }
    };
    plan.tally.borrow_mut().connected += 1;
    seen.borrow_mut().connected = true;

    let mut parser = Parser::with_max_event_size(plan.max_event_size);
    // One buffer per connection: the body's start left over from the head, then each read.
    buf.reserve(READ_BUFFER.saturating_sub(buf.len()));
    loop {
        let mut bad = None;
        let ended = framing.decode(&buf, |body| {
            if bad.is_none() {
                bad = parser.feed(body).err();
            }
        });
        buf.clear();
        if bad.is_some() || !matches!(ended, Ok(false)) {
            break;
        }
        count_events(&plan, &mut parser, &seen);
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    count_events(&plan, &mut parser, &seen);
    plan.tally.borrow_mut().ended_early += 1;
}

/// Connects, sends the request and reads a `200 text/event-stream` head.
async fn open(plan: &Plan, source: Option<IpAddr>) -> Result<(Stream, Vec<u8>, Framing), String> {
    let mut stream = plan
        .target
        .connect(source)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&plan.request)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::new();
    let mut head = read_head(&mut stream, &mut buf).await?;
    if head.status != 200 {
        return Err(refusal(&mut stream, &mut head, &buf).await);
    }
    let essence = head
        .content_type
        .as_deref()
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase());
    if essence.as_deref() != Some("text/event-stream") {
        return Err(format!(
            "content type {:?}, not text/event-stream",
            head.content_type.unwrap_or_default()
        ));
    }
    Ok((stream, buf, head.framing))
}

/// Pops every dispatched event and counts it.
fn count_events(plan: &Plan, parser: &mut Parser, seen: &RefCell<Seen>) {
    let mut now = None;
    while let Some(event) = parser.next_event() {
        let (received_at, received_us) = *now.get_or_insert_with(|| {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (Instant::now(), since_epoch.as_micros() as u64)
        });
        let mut tally = plan.tally.borrow_mut();
        tally.received += 1;
        let Some((seq, sent_us)) = read_fields(&event.data, &plan.fields) else {
            tally.unparsed += 1;
            continue;
        };
        let arrival = seen.borrow_mut().record(seq);
        match arrival {
            Arrival::Duplicate => tally.duplicate += 1,
            Arrival::Unknown => tally.unparsed += 1,
            Arrival::InOrder | Arrival::OutOfOrder => {
                if arrival == Arrival::OutOfOrder {
                    tally.out_of_order += 1;
                }
                tally.delivered += 1;
                tally.last_delivery = Some(received_at);
                if let Some(sent_us) = sent_us {
                    let latency = received_us.saturating_sub(sent_us).max(1);
                    tally.latency_us.saturating_record(latency);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_extra_headers() {
        let target = Target {
            authority: "127.0.0.1:9".to_owned(),
            path_and_query: "/events?topic=a".to_owned(),
            address: "127.0.0.1:9".parse().unwrap(),
            tls: None,
        };
        let request = Plan::request(&target, &[("Authorization".into(), "Bearer t".into())]);
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET /events?topic=a HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\nAuthorization: Bearer t\r\n\r\n"
        );
    }
}
