//! Selection policies: given a ticket (or later, a key or load), which backend.

pub mod ketama;
pub mod round_robin;

pub use ketama::Ketama;
pub use round_robin::Rotation;
