//! Strict `application/x-www-form-urlencoded` decoding, for form bodies and query strings.
//!
//! `form_urlencoded::parse` turns bytes that are not UTF-8 into U+FFFD, so `topic=%FF`
//! would quietly become a topic named "\u{FFFD}". Here such a name or value is a 400 that
//! says which parameter it was.

use std::borrow::Cow;

use super::problem::Problem;

/// The name/value pairs of `input`, in order: split at `&` and the first `=`, `+` read as
/// a space, then percent-decoded. `what` names the input in errors ("form", "query").
pub fn pairs(input: &[u8], what: &str) -> Result<Vec<(String, String)>, Problem> {
    input
        .split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &b""[..]),
            };
            let name = decode(name).ok_or_else(|| not_utf8(format!("a {what} parameter name")))?;
            let value = decode(value)
                .ok_or_else(|| not_utf8(format!("the value of the {what} parameter `{name}`")))?;
            Ok((name, value))
        })
        .collect()
}

/// One name or value, decoded; `None` when the bytes it stands for are not UTF-8.
fn decode(raw: &[u8]) -> Option<String> {
    let spaced: Cow<'_, [u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    String::from_utf8(percent_encoding::percent_decode(&spaced).collect()).ok()
}

fn not_utf8(what: String) -> Problem {
    Problem::bad_request(
        "invalid-utf8",
        "Invalid UTF-8",
        format!(
            "{what} is not valid UTF-8 once percent-decoded; names, topics and data must be UTF-8"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(input: &str) -> Vec<(String, String)> {
        pairs(input.as_bytes(), "query").expect("valid")
    }

    #[test]
    fn pairs_are_split_and_decoded_like_a_browser_form() {
        assert_eq!(
            decoded("topic=a&topic=chat%2F*&data=two+words%21&flag&&x="),
            [
                ("topic".to_owned(), "a".to_owned()),
                ("topic".to_owned(), "chat/*".to_owned()),
                ("data".to_owned(), "two words!".to_owned()),
                ("flag".to_owned(), String::new()),
                ("x".to_owned(), String::new()),
            ]
        );
        // A real U+FFFD, and a stray `%`, are kept as they are.
        assert_eq!(
            decoded("d=%EF%BF%BD%zz"),
            [("d".to_owned(), "\u{FFFD}%zz".to_owned())]
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_by_name() {
        let error = pairs(b"topic=%FF", "query").expect_err("not UTF-8");
        assert_eq!(error.status, 400);
        assert!(error.detail.contains("`topic`"), "{}", error.detail);
        let error = pairs(b"a=1&%C3=x", "form").expect_err("not UTF-8");
        assert!(
            error.detail.contains("form parameter name"),
            "{}",
            error.detail
        );
        assert!(pairs(b"data=\xff", "form").is_err());
    }
}
