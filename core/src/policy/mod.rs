//! Selection policies: pure functions of a ticket, a key hash or in-flight counts to a
//! backend index. Shared state and request inputs are the balancer's business.

pub mod ketama;
pub mod least_request;
pub mod peak_ewma;
pub mod random;
pub mod round_robin;

pub use ketama::Ketama;
pub use least_request::LeastRequest;
pub use peak_ewma::PeakEwma;
pub use random::WeightedRandom;
pub use round_robin::Rotation;
