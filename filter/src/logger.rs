//! Routes the `log` macros to the host's log and panics to a critical log line. A failed log
//! call is ignored: logging can never be what kills the VM.

use crate::abi::LogLevel;
use crate::host::Host;

/// The `log` crate's logger over a host (a zero-sized one: the logger is a `static`).
pub struct HostLogger<H>(pub H);

/// Installs the logger and the panic hook. Host calls are refused this early (V8 says
/// `restricted_callback`), so the level is set later by [`follow_host_level`].
#[cfg(target_arch = "wasm32")]
pub fn install() {
    use crate::abi_host::AbiHost;

    static LOGGER: HostLogger<AbiHost> = HostLogger(AbiHost);
    // Fails only if a logger is already installed, which is then ours.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = AbiHost.log(LogLevel::Critical, &format!("eisodos panicked: {info}"));
    }));
}

/// Skips formatting messages the host would drop anyway (per-request `debug` lines). Called
/// from `on_configure`.
pub fn follow_host_level(host: &impl Host) {
    let filter = match host.log_level() {
        Ok(LogLevel::Trace) => log::LevelFilter::Trace,
        Ok(LogLevel::Debug) => log::LevelFilter::Debug,
        Ok(LogLevel::Info) | Err(_) => log::LevelFilter::Info,
        Ok(LogLevel::Warn) => log::LevelFilter::Warn,
        Ok(LogLevel::Error) | Ok(LogLevel::Critical) => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
}

impl<H: Host + Send + Sync> log::Log for HostLogger<H> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        let _ = self.0.log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}
