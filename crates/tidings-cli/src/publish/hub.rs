//! The hub's `POST /publish` as `tidings publish` talks to it: the endpoint under the
//! base URL, an HTTP client (plain or TLS), and every failure turned into the message and
//! exit code a person needs.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{Failure, PublishArgs};
use crate::exit;

/// The largest answer read from the hub: ids for a batch fit easily.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The hub's publish endpoint and an HTTP client for it (plain or TLS).
pub(super) struct Hub {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl Hub {
    pub(super) fn new(args: &PublishArgs) -> Result<Hub, Failure> {
        let usage = |message: String| Failure::new(exit::USAGE, message);
        let endpoint = publish_endpoint(&args.url).map_err(usage)?;
        let headers = args
            .token
            .add_to(&args.headers)
            .map_err(usage)?
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| usage(format!("`{name}` is not a valid header name")))?;
                let value = HeaderValue::from_str(value).map_err(|_| {
                    usage(format!("the value of `{name}` is not a valid header value"))
                })?;
                Ok((name, value))
            })
            .collect::<Result<_, Failure>>()?;

        let tls = crate::tls_client_config(&args.cacert).map_err(usage)?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        Ok(Hub {
            client: Client::builder(TokioExecutor::new()).build(connector),
            endpoint,
            headers,
            timeout: Duration::from_secs(args.timeout),
        })
    }

    /// POSTs one JSON body and reads the JSON answer, turning every failure into the
    /// message and exit code a person needs.
    pub(super) async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        body: Vec<u8>,
    ) -> Result<T, Failure> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.endpoint.clone();
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));

        let endpoint = &self.endpoint;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                Failure::new(
                    exit::CONNECTION,
                    format!(
                        "could not reach the hub at {endpoint}: {}",
                        tidings::client::describe_error(&e)
                    ),
                )
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    Failure::new(
                        exit::CONNECTION,
                        format!(
                            "the connection to {endpoint} failed while reading the answer: {e}"
                        ),
                    )
                })?
                .to_bytes();
            Ok::<_, Failure>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                Failure::new(
                    exit::CONNECTION,
                    format!(
                        "{endpoint} did not answer within {} s",
                        self.timeout.as_secs()
                    ),
                )
            })??;

        if !status.is_success() {
            let reason = tidings::client::refusal_reason(&body);
            return Err(Failure {
                too_large: status == http::StatusCode::PAYLOAD_TOO_LARGE,
                ..Failure::new(exit::STATUS, format!("the hub answered {status}: {reason}"))
            });
        }
        serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                exit::CONTENT_TYPE,
                format!("the hub's answer ({status}) is not the expected JSON: {e}"),
            )
        })
    }
}

/// The hub's `POST /publish` URL under the base URL `url` (whose query, if any, is kept).
fn publish_endpoint(url: &str) -> Result<Uri, String> {
    let base: Uri = url
        .parse()
        .map_err(|_| format!("`{url}` is not a valid URL"))?;
    if !matches!(base.scheme_str(), Some("http" | "https")) || base.host().is_none() {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    }
    if crate::has_invalid_port(&base) {
        return Err(format!(
            "`{url}` has an invalid port (ports go from 0 to 65535)"
        ));
    }
    let path = base.path().trim_end_matches('/');
    let path_and_query = match base.query() {
        Some(query) => format!("{path}/publish?{query}"),
        None => format!("{path}/publish"),
    };
    let mut parts = base.into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| format!("`{url}` is not a valid URL"))?,
    );
    Uri::from_parts(parts).map_err(|_| format!("`{url}` is not a valid URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_under_the_base_path_and_keeps_the_query() {
        let endpoint = |url: &str| publish_endpoint(url).map(|u| u.to_string());
        assert_eq!(
            endpoint("http://127.0.0.1:8080").as_deref(),
            Ok("http://127.0.0.1:8080/publish")
        );
        assert_eq!(
            endpoint("https://example.com/hub/?token=a%20b").as_deref(),
            Ok("https://example.com/hub/publish?token=a%20b")
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://x/",
            "http://127.0.0.1:99999",
            "http://",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
