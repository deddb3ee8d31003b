//! Why eisodos answered a request itself instead of routing it: one word for the access log's
//! filter state, the `reason` label of `eisodos_local_replies_total`, and Envoy's response code
//! details.

/// Why a request was answered locally instead of routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// Health took every backend out (503).
    NoHealthyBackend,
    /// A hashing policy found no key and `on_missing_key` is `reject` (400).
    MissingKey,
    /// Every backend the request may go to is at its `max_requests` (503).
    CircuitOpen,
    /// The request's rate-limit bucket is empty (429).
    RateLimited,
    /// A `deny` rule matched the request (403, or 431 for a size rule).
    Denied,
}

impl LocalReply {
    /// Every reason, in the order of their metric slots.
    pub const ALL: [Self; Self::COUNT] = [
        Self::NoHealthyBackend,
        Self::MissingKey,
        Self::CircuitOpen,
        Self::RateLimited,
        Self::Denied,
    ];

    /// How many reasons there are.
    pub const COUNT: usize = 5;

    /// The word in filter state and access logs, and the `reason` label of
    /// `eisodos_local_replies_total`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoHealthyBackend => "no_healthy_backend",
            Self::MissingKey => "missing_key",
            Self::CircuitOpen => "circuit_open",
            Self::RateLimited => "rate_limited",
            Self::Denied => "denied",
        }
    }

    /// Envoy's response code details for the reply (`%RESPONSE_CODE_DETAILS%`).
    pub fn details(self) -> &'static str {
        match self {
            Self::NoHealthyBackend => "eisodos_no_healthy_backend",
            Self::MissingKey => "eisodos_missing_key",
            Self::CircuitOpen => "eisodos_circuit_open",
            Self::RateLimited => "eisodos_rate_limited",
            Self::Denied => "eisodos_denied",
        }
    }

    /// Its place in [`Self::ALL`].
    pub fn slot(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_has_its_slot_in_all() {
        for (i, reply) in LocalReply::ALL.into_iter().enumerate() {
            assert_eq!(reply.slot(), i, "{reply:?}");
        }
    }

    #[test]
    fn local_replies_are_named_as_the_metric_labels_them() {
        assert_eq!(LocalReply::NoHealthyBackend.name(), "no_healthy_backend");
        assert_eq!(LocalReply::MissingKey.name(), "missing_key");
        assert_eq!(LocalReply::CircuitOpen.name(), "circuit_open");
        assert_eq!(LocalReply::RateLimited.name(), "rate_limited");
        assert_eq!(LocalReply::Denied.name(), "denied");
        assert_eq!(
            LocalReply::MissingKey.details(),
            "eisodos_missing_key",
            "no whitespace: Envoy would replace it"
        );
        for reply in LocalReply::ALL {
            assert_eq!(reply.details(), format!("eisodos_{}", reply.name()));
        }
    }
}
