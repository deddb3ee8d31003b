//! A blocking HTTP client for tests: 4xx/5xx are ordinary responses, 5 s timeouts,
//! no proxy from the environment.

use std::sync::OnceLock;
use std::time::Duration;

/// A response with everything read: status, body and headers.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as UTF-8 (lossy).
    pub body: String,
    /// Every header as (lower-case name, value), in order.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .proxy(None)
            .max_redirects(0)
            .build()
            .into()
    })
}

/// GET `url`.
///
/// # Panics
/// On a transport error (connection refused, timeout...); see [`try_get_with`].
pub fn get(url: &str) -> Response {
    get_with(url, &[])
}

/// GET `url` with extra request headers.
///
/// # Panics
/// On a transport error; see [`try_get_with`].
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Response {
    try_get_with(url, headers).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET `url` with extra request headers; a transport error is returned as its message.
pub fn try_get_with(url: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(Response {
        status,
        body,
        headers,
    })
}
