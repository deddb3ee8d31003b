//! Selection policies: given a ticket (or later, a key or load), which backend.

pub mod round_robin;

pub use round_robin::Rotation;
