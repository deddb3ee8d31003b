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
}

impl LocalReply {
    /// Every reason, in the order of their metric slots.
    pub const ALL: [Self; 2] = [Self::NoHealthyBackend, Self::MissingKey];

    /// The word in filter state and access logs, and the `reason` label of
    /// `eisodos_local_replies_total`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoHealthyBackend => "no_healthy_backend",
            Self::MissingKey => "missing_key",
        }
    }

    /// Envoy's response code details for the reply (`%RESPONSE_CODE_DETAILS%`).
    pub fn details(self) -> &'static str {
        match self {
            Self::NoHealthyBackend => "eisodos_no_healthy_backend",
            Self::MissingKey => "eisodos_missing_key",
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
        assert_eq!(
            LocalReply::MissingKey.details(),
            "eisodos_missing_key",
            "no whitespace: Envoy would replace it"
        );
    }
}
