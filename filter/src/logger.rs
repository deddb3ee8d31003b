//! Routes the `log` macros to Envoy's log and panics to a critical log line. A failed log call
//! is ignored: logging can never be what kills the VM.

use crate::abi::{self, LogLevel};

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

/// Installs the logger and the panic hook. Host calls are refused this early (V8 says
/// `restricted_callback`), so the level is set later by [`follow_host_level`].
pub fn install() {
    // Fails only if a logger is already installed, which is then ours.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(LogLevel::Critical, &format!("eisodos panicked: {info}"));
    }));
}

/// Skips formatting messages Envoy would drop anyway (per-request `debug` lines). Called from
/// `on_configure`.
pub fn follow_host_level() {
    let filter = match abi::log_level() {
        Ok(LogLevel::Trace) => log::LevelFilter::Trace,
        Ok(LogLevel::Debug) => log::LevelFilter::Debug,
        Ok(LogLevel::Info) | Err(_) => log::LevelFilter::Info,
        Ok(LogLevel::Warn) => log::LevelFilter::Warn,
        Ok(LogLevel::Error) | Ok(LogLevel::Critical) => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
}

impl log::Log for HostLogger {
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
        let _ = abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}
