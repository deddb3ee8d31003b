//! Whether a finished request says its backend failed: the input of passive ejection.
//!
//! A 5xx says so. So does a response the upstream cut short: once the status line went to the
//! client, Envoy keeps that status (a 200, say) in `response.code` and says what happened only
//! in `response.code_details`, `upstream_reset_after_response_started{<why>}` (a reset, a
//! connection closed early, a protocol error). Envoy's own outlier detection counts those as
//! failures; eisodos did not, so a backend that broke every response after its headers was
//! never ejected.

/// The `response.code_details` prefix of a response the upstream cut short.
pub const CUT_SHORT: &[u8] = b"upstream_reset_after_response_started";

/// `Some(failed)` for a request that got a response with status `code`; `None` when no
/// response was sent (`code` 0: the client went away first), which says nothing of the
/// backend. `details` (the `response.code_details` bytes) is asked for only when the status
/// alone does not say the backend failed.
pub fn backend_failed(code: i64, details: impl FnOnce() -> Option<Vec<u8>>) -> Option<bool> {
    if code <= 0 {
        return None;
    }
    if code >= 500 {
        return Some(true);
    }
    Some(details().is_some_and(|d| d.starts_with(CUT_SHORT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_5xx_fails_without_reading_the_details() {
        let unread = || -> Option<Vec<u8>> { panic!("details read") };
        assert_eq!(backend_failed(503, unread), Some(true));
        assert_eq!(backend_failed(500, unread), Some(true));
    }

    #[test]
    fn no_response_says_nothing() {
        assert_eq!(backend_failed(0, || None), None);
    }

    #[test]
    fn a_response_cut_short_after_its_headers_fails() {
        for why in ["protocol_error", "remote_reset", "connection_termination"] {
            let details = format!("upstream_reset_after_response_started{{{why}}}");
            assert_eq!(
                backend_failed(200, || Some(details.into_bytes())),
                Some(true),
                "{why}"
            );
        }
    }

    #[test]
    fn a_whole_response_below_500_succeeds() {
        assert_eq!(
            backend_failed(200, || Some(b"via_upstream".to_vec())),
            Some(false)
        );
        assert_eq!(
            backend_failed(404, || Some(b"via_upstream".to_vec())),
            Some(false)
        );
        assert_eq!(backend_failed(200, || None), Some(false));
        // A client that went away mid-response is not the backend's failure.
        assert_eq!(
            backend_failed(200, || Some(b"downstream_remote_disconnect".to_vec())),
            Some(false)
        );
    }
}
