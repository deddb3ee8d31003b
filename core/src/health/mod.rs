//! Health: active probes (one prober per process, behind a lease), passive ejection, and the
//! selection of backends that may take requests, all over one shared record.

pub mod lease;
pub mod machine;
pub mod monitor;
pub mod prober;
pub mod record;
pub mod request_outcome;
pub mod selection;
pub mod stale;

pub use machine::{Change, ProbeResult};
pub use monitor::{Followed, Monitor, MonitorKeys, MonitorReport, MonitorTick};
pub use record::{BackendHealth, HealthRecord, HealthStore};
pub use selection::{Mode, Selection};
