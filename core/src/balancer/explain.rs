//! What a request's decision is called where operators read it: Envoy's access log and
//! tracer, through filter state the filter sets (see the README, "The decision in access
//! logs and traces"). One word per request, so the filter sets it with one host call.

use super::policy::Reason;
use crate::health::Mode;

/// Why a request went to the backend it went to.
///
/// The selection mode wins over the policy: in panic or backup mode the notable fact is that
/// health narrowed (or stopped narrowing) the choice, whichever policy then picked. Affinity
/// wins over the mode: the cookie chose, and health only allowed that backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Round-robin: the request's ticket in the one global order.
    Ticket,
    /// Consistent hashing or IP hash: the key's backend on the ring, or the next one along it
    /// when the key's own cannot take requests (unhealthy, ejected, a backup, or not in the
    /// request's traffic-splitting subset).
    Hash,
    /// Least-request: the fewest requests in flight (or the lowest latency cost).
    LeastRequest,
    /// Weighted random.
    Random,
    /// A hashing policy did not follow the key: the request had none (`on_missing_key:
    /// round_robin`), no candidate owns a point on the ring, or, with `bounded_load_factor`,
    /// a backend on the way that could take requests was full and the walk went on past it.
    Fallback,
    /// Panic mode: too few primaries healthy, so the policy chose among all primaries.
    Panic,
    /// Backup mode: no primary healthy, so the policy chose among the backups.
    Backup,
    /// Sticky sessions: the request's `session_affinity` cookie named a backend that may take
    /// it, so the policy was not asked.
    Affinity,
}

impl Why {
    /// The reason `reason` under selection `mode`.
    pub fn of(reason: Reason, mode: Mode) -> Self {
        match (mode, reason) {
            (_, Reason::Affinity) => Self::Affinity,
            (Mode::Panic, _) => Self::Panic,
            (Mode::Backup, _) => Self::Backup,
            (_, Reason::Ticket(_)) => Self::Ticket,
            (_, Reason::Random) => Self::Random,
            (_, Reason::LeastRequest(_)) => Self::LeastRequest,
            (_, Reason::Hash { spilled: true, .. } | Reason::HashFallback(_)) => Self::Fallback,
            (_, Reason::Hash { .. }) => Self::Hash,
        }
    }

    /// The word in filter state and access logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ticket => "ticket",
            Self::Hash => "hash",
            Self::LeastRequest => "least_request",
            Self::Random => "random",
            Self::Fallback => "fallback",
            Self::Panic => "panic",
            Self::Backup => "backup",
            Self::Affinity => "affinity",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inflight::Commit;
    use crate::ticket::{Ticket, TicketSource};

    fn ticket() -> Ticket {
        Ticket {
            value: 7,
            source: TicketSource::Shared,
        }
    }

    #[test]
    fn the_policy_names_the_reason_in_normal_mode() {
        let hash = |spilled| Reason::Hash {
            hash: 1,
            skipped: 2,
            spilled,
        };
        let cases = [
            (Reason::Ticket(ticket()), "ticket"),
            (Reason::Random, "random"),
            (Reason::LeastRequest(Commit::Written), "least_request"),
            (hash(false), "hash"),
            (hash(true), "fallback"),
            (Reason::HashFallback(ticket()), "fallback"),
        ];
        for (reason, name) in cases {
            assert_eq!(Why::of(reason, Mode::Normal).name(), name, "{reason:?}");
        }
    }

    #[test]
    fn affinity_wins_over_the_mode() {
        for mode in [Mode::Normal, Mode::Panic, Mode::Backup] {
            assert_eq!(Why::of(Reason::Affinity, mode).name(), "affinity");
        }
    }

    #[test]
    fn panic_and_backup_modes_win_over_the_policy() {
        for reason in [
            Reason::Ticket(ticket()),
            Reason::Random,
            Reason::HashFallback(ticket()),
        ] {
            assert_eq!(Why::of(reason, Mode::Panic), Why::Panic);
            assert_eq!(Why::of(reason, Mode::Backup), Why::Backup);
        }
    }
}
