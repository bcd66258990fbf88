//! Reading a publish body into events: the form (urlencoded or multipart), the JSON
//! object and the JSON batch, each checked against every rule before anything is stored.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use serde_json::Value;

use tidings::server::GAP_EVENT_TYPE;
use tidings::Event;

use crate::engine::NewEvent;
use crate::http::problem::Problem;
use crate::topics::Topic;

/// Event types the hub keeps for its own notices ([`GAP_EVENT_TYPE`]).
const RESERVED_TYPE_PREFIX: &str = "tidings.";

/// Largest `retry` a publisher may set: one day, in milliseconds.
const MAX_RETRY_MS: u64 = 86_400_000;

/// One publish request before validation.
#[derive(Default)]
struct Draft {
    topics: Vec<String>,
    data: Option<String>,
    event: Option<String>,
    retry: Option<u64>,
}

/// The event of a form's fields (urlencoded or multipart).
pub(super) fn form_event(
    fields: Vec<(String, String)>,
    max_topics: usize,
) -> Result<NewEvent, Problem> {
    let mut draft = Draft::default();
    for (key, value) in fields {
        let once = |given: bool, name: &str| {
            if given {
                Err(invalid(format!(
                    "the form field `{name}` is given twice; give it once"
                )))
            } else {
                Ok(())
            }
        };
        match &*key {
            "topic" => draft.topics.push(value),
            "data" => {
                once(draft.data.is_some(), "data")?;
                draft.data = Some(value);
            }
            "event" => {
                once(draft.event.is_some(), "event")?;
                draft.event = Some(value);
            }
            "retry" => {
                once(draft.retry.is_some(), "retry")?;
                let ms = value.parse::<u64>().ok().filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
                draft.retry = Some(ms.ok_or_else(|| {
                    invalid(format!("retry {value:?} is not a whole number of milliseconds"))
                })?);
            }
            other => {
                return Err(invalid(format!(
                    "unknown form field `{other}`; the fields are topic (repeatable), data, event and retry"
                )))
            }
        }
    }
    validate(draft, max_topics)
}

/// The fields of a `multipart/form-data` body (`curl -F`, a browser's `FormData`), in
/// order. A file part (`-F data=@event.json`) gives its contents as the value.
pub(super) async fn multipart_fields(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Vec<(String, String)>, Problem> {
    let malformed = |why: String| {
        Problem::bad_request(
            "invalid-multipart",
            "Invalid multipart body",
            format!("the multipart/form-data body could not be read: {why}"),
        )
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|e| malformed(e.to_string()))?;
    let whole = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(whole, boundary);
    let mut fields = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| malformed(e.to_string()))?
    {
        let name = field
            .name()
            .map(str::to_owned)
            .ok_or_else(|| malformed("a part has no field name".to_owned()))?;
        let bytes = field.bytes().await.map_err(|e| malformed(e.to_string()))?;
        let value = String::from_utf8(bytes.to_vec()).map_err(|_| {
            Problem::bad_request(
                "invalid-utf8",
                "Invalid UTF-8",
                format!("the form field `{name}` is not valid UTF-8; names, topics and data must be UTF-8"),
            )
        })?;
        fields.push((name, value));
    }
    Ok(fields)
}

pub(super) fn parse_json(body: &[u8], max_topics: usize) -> Result<(Vec<NewEvent>, bool), Problem> {
    let shape: Shape = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(
            "invalid-json",
            "Invalid JSON",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    match shape {
        Shape::Array(items) => {
            if items.is_empty() {
                return Err(invalid(
                    "an empty batch publishes nothing; send at least one event".to_owned(),
                ));
            }
            let mut events = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let event = json_draft(item)
                    .and_then(|d| validate(d, max_topics))
                    .map_err(|p| Problem {
                        detail: format!("batch item {i}: {}", p.detail),
                        ..p
                    })?;
                events.push(event);
            }
            Ok((events, true))
        }
        item => Ok((vec![validate(json_draft(item)?, max_topics)?], false)),
    }
}

/// A publish body as far as its shape matters: objects keep every member in order
/// (serde_json's `Value` would keep only the last of a repeated key, so that
/// `{"topic":"a","topic":"b"}` would quietly publish to `b`).
enum Shape {
    Object(Vec<(String, Value)>),
    Array(Vec<Shape>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Value>()? {
            members.push(member);
        }
        Ok(Shape::Object(members))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Shape>()? {
            items.push(item);
        }
        Ok(Shape::Array(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
}

fn json_draft(shape: Shape) -> Result<Draft, Problem> {
    let Shape::Object(members) = shape else {
        return Err(invalid(
            "publish a JSON object {\"topic\": ..., \"data\": ...} or an array of them".to_owned(),
        ));
    };
    let mut draft = Draft::default();
    let mut seen: Vec<String> = Vec::with_capacity(members.len());
    for (key, value) in members {
        if seen.contains(&key) {
            return Err(invalid(format!(
                "the field `{key}` is given twice; give it once"
            )));
        }
        seen.push(key.clone());
        match key.as_str() {
            "topic" => draft.topics = json_topics(value)?,
            "data" => draft.data = Some(match value {
                Value::String(s) => s,
                Value::Null => return Err(invalid(
                    "`data` is null; send a string (or any JSON value to publish its JSON text)"
                        .to_owned(),
                )),
                other => other.to_string(),
            }),
            "event" => match value {
                Value::String(s) => draft.event = Some(s),
                Value::Null => {}
                _ => return Err(invalid("`event` must be a string".to_owned())),
            },
            "retry" => match value {
                Value::Number(n) => {
                    draft.retry = Some(n.as_u64().ok_or_else(|| {
                        invalid(format!(
                            "retry {n} is not a whole, non-negative number of milliseconds"
                        ))
                    })?)
                }
                Value::Null => {}
                _ => {
                    return Err(invalid(
                        "`retry` must be a number of milliseconds".to_owned(),
                    ))
                }
            },
            other => {
                return Err(invalid(format!(
                    "unknown field `{other}`; the fields are topic, data, event and retry"
                )))
            }
        }
    }
    Ok(draft)
}

fn json_topics(value: Value) -> Result<Vec<String>, Problem> {
    match value {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(invalid(
                    "`topic` must be a string or an array of strings".to_owned(),
                )),
            })
            .collect(),
        _ => Err(invalid(
            "`topic` must be a string or an array of strings".to_owned(),
        )),
    }
}

/// Checks a draft against every rule and turns it into an event ready to store.
fn validate(draft: Draft, max_topics: usize) -> Result<NewEvent, Problem> {
    if draft.topics.is_empty() {
        return Err(Problem::bad_request(
            "missing-topic",
            "Missing topic",
            "say which topic (or topics) to publish to: a `topic` field",
        ));
    }
    let mut topics: Vec<Topic> = Vec::with_capacity(draft.topics.len());
    for name in &draft.topics {
        let topic = Topic::new(name).map_err(Problem::from)?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    if topics.len() > max_topics {
        return Err(Problem::bad_request(
            "too-many-topics",
            "Too many topics",
            format!(
                "{} topics in one publish; the limit is {max_topics} (max_topics)",
                topics.len()
            ),
        ));
    }
    let Some(data) = draft.data else {
        return Err(invalid(
            "missing `data`; send the event's data (an empty string is fine)".to_owned(),
        ));
    };
    let event_type = draft.event.filter(|t| !t.is_empty());
    if let Some(t) = event_type
        .as_deref()
        .filter(|t| t.starts_with(RESERVED_TYPE_PREFIX))
    {
        return Err(invalid(format!(
            "event type `{t}`: types starting with `{RESERVED_TYPE_PREFIX}` are the hub's own \
             notices (such as `{GAP_EVENT_TYPE}`), so subscribers can trust them; pick another type"
        )));
    }
    let retry = match draft.retry {
        Some(ms) if ms > MAX_RETRY_MS => {
            return Err(invalid(format!(
                "retry {ms} ms is more than a day ({MAX_RETRY_MS} ms)"
            )))
        }
        Some(ms) => Some(Duration::from_millis(ms)),
        None => None,
    };
    // Encode once with the wire encoder, so "valid" means exactly what the stream needs.
    let mut probe = Event::new().id("0-0").data(data.as_str());
    if let Some(t) = &event_type {
        probe = probe.event(t.as_str());
    }
    probe.encode().map_err(|e| invalid(e.to_string()))?;
    Ok(NewEvent {
        topics,
        event_type,
        data,
        retry,
    })
}

fn invalid(detail: String) -> Problem {
    Problem::bad_request("invalid-event", "Invalid event", detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::form;

    fn parse_form(body: &[u8], max_topics: usize) -> Result<NewEvent, Problem> {
        form_event(form::pairs(body, "form")?, max_topics)
    }

    async fn parse_multipart(body: &'static str) -> Result<NewEvent, Problem> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        let fields = multipart_fields(&headers, Bytes::from(body.replace('\n', "\r\n"))).await?;
        form_event(fields, 32)
    }

    #[tokio::test]
    async fn multipart_forms_as_curl_and_browsers_send_them() {
        let e = parse_multipart(
            "--XyZ\nContent-Disposition: form-data; name=\"topic\"\n\na\n\
             --XyZ\nContent-Disposition: form-data; name=\"topic\"\n\nb/c\n\
             --XyZ\nContent-Disposition: form-data; name=\"data\"; filename=\"e.json\"\n\
             Content-Type: application/json\n\n{\"x\": 1}\n--XyZ--\n",
        )
        .await
        .expect("valid");
        assert_eq!(e.topics.len(), 2);
        assert_eq!(e.data, "{\"x\": 1}");
        let unknown = parse_multipart(
            "--XyZ\nContent-Disposition: form-data; name=\"topik\"\n\na\n--XyZ--\n",
        )
        .await
        .expect_err("unknown field");
        assert!(
            unknown.detail.contains("unknown form field `topik`"),
            "{}",
            unknown.detail
        );
        let broken = parse_multipart("--XyZ\nContent-Disposition: form-data; name=\"topic\"\n\na")
            .await
            .expect_err("cut short");
        assert_eq!(broken.status, 400);
        assert!(broken.detail.contains("multipart"), "{}", broken.detail);
    }

    #[test]
    fn form_with_repeated_topics() {
        let e = parse_form(
            b"topic=a&topic=b%2Fc&data=hi+there&event=greet&retry=1500",
            32,
        )
        .expect("valid");
        assert_eq!(e.topics.len(), 2);
        assert_eq!(e.topics[1].as_str(), "b/c");
        assert_eq!(e.data, "hi there");
        assert_eq!(e.event_type.as_deref(), Some("greet"));
        assert_eq!(e.retry, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn json_single_and_batch() {
        let (one, batch) = parse_json(br#"{"topic":"a","data":{"x":1}}"#, 32).expect("valid");
        assert!(!batch);
        assert_eq!(one[0].data, r#"{"x":1}"#);
        let (two, batch) = parse_json(
            br#"[{"topic":["a","b"],"data":"1"},{"topic":"c","data":"2","event":"t"}]"#,
            32,
        )
        .expect("valid");
        assert!(batch);
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].topics.len(), 2);
    }

    #[test]
    fn everything_invalid_is_a_400() {
        for body in [
            &br#"{"data":"x"}"#[..],
            br#"{"topic":"a"}"#,
            br#"{"topic":"a","data":"x","event":"a\nb"}"#,
            br#"{"topic":"a","data":"x","event":"a\rb"}"#,
            br#"{"topic":"a/*","data":"x"}"#,
            br#"{"topic":"","data":"x"}"#,
            br#"{"topic":"a","data":"x","extra":1}"#,
            br#"{"topic":"a","data":"x","retry":-1}"#,
            br#"[{"topic":"a","data":"ok"},{"topic":"a","data":"x","event":"bad\n"}]"#,
            br#"[]"#,
            br#"3"#,
            br#"{"topic":"a""#,
        ] {
            let err = parse_json(body, 32).expect_err(std::str::from_utf8(body).unwrap_or("?"));
            assert_eq!(err.status, 400);
        }
        for body in [
            &b"data=x"[..],
            b"topic=a",
            b"topic=a&data=x&data=y",
            b"topic=a&data=x&retry=soon",
            b"topic=a&data=x&id=1",
        ] {
            assert!(parse_form(body, 32).is_err());
        }
        let many: String = (0..3).map(|i| format!("topic=t{i}&")).collect::<String>() + "data=x";
        assert!(parse_form(many.as_bytes(), 2).is_err());
    }
}
