//! Selection policies: pure functions of a ticket, a key hash or in-flight counts to a
//! backend index. Shared state and request inputs are the balancer's business.

pub mod ketama;
pub mod latency_floor;
pub mod least_request;
pub mod peak_ewma;
pub mod random;
pub mod round_robin;

pub use ketama::Ketama;
pub use latency_floor::{LatencyFloor, Screen};
pub use least_request::LeastRequest;
pub use peak_ewma::PeakEwma;
pub use random::WeightedRandom;
pub use round_robin::Rotation;

/// Whether every weight is the same (then the policies skip their weighted arithmetic).
pub(crate) fn all_equal(weights: &[u32]) -> bool {
    weights.windows(2).all(|pair| pair.first() == pair.last())
}
