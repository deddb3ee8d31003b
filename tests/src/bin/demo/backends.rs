//! The demo's upstreams as a person drives them: slowed down, failing, killed (the port
//! refuses) and restored (started again on the same port, healthy and fast), with their hit
//! counts kept across restarts.

use std::time::Duration;

use eisodos_tests::upstream::Upstream;

/// How much `slow` adds to every answer.
pub const SLOW_DELAY: Duration = Duration::from_millis(200);

/// What the demo has done to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Answers 200 at once.
    Ok,
    /// Answers 200 after [`SLOW_DELAY`].
    Slow,
    /// Answers 503 to everything, health probes included.
    Failing,
    /// Stopped: its port refuses connections.
    Killed,
}

impl Condition {
    /// How the table shows it.
    pub fn label(self) -> &'static str {
        match self {
            Condition::Ok => "ok",
            Condition::Slow => "slow +200ms",
            Condition::Failing => "failing 503",
            Condition::Killed => "killed",
        }
    }
}

/// One upstream, running or killed.
pub struct Backend {
    name: String,
    port: u16,
    upstream: Option<Upstream>,
    /// Hits of the upstreams killed before the running one.
    earlier_hits: u64,
    condition: Condition,
}

impl Backend {
    /// Takes over a running upstream.
    pub fn new(upstream: Upstream) -> Self {
        Self {
            name: upstream.name().to_owned(),
            port: upstream.port(),
            upstream: Some(upstream),
            earlier_hits: 0,
            condition: Condition::Ok,
        }
    }

    /// The upstream's (and its cluster's) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests received since the demo started, over every restart.
    pub fn hits(&self) -> u64 {
        self.earlier_hits + self.upstream.as_ref().map_or(0, Upstream::hits)
    }

    /// Requests the upstream is answering now (0 when killed).
    pub fn in_flight(&self) -> u64 {
        self.upstream.as_ref().map_or(0, Upstream::in_flight)
    }

    /// What the demo has done to it.
    pub fn condition(&self) -> Condition {
        self.condition
    }

    /// Server-side errors of the running upstream.
    pub fn errors(&self) -> Vec<String> {
        self.upstream
            .as_ref()
            .map_or_else(Vec::new, Upstream::errors)
    }

    /// Every answer [`SLOW_DELAY`] late (starts it first when killed).
    pub fn slow(&mut self) -> Result<(), String> {
        let upstream = self.running()?;
        upstream.set_status(200);
        upstream.set_delay(SLOW_DELAY);
        self.condition = Condition::Slow;
        Ok(())
    }

    /// Every answer a 503, health probes included (starts it first when killed).
    pub fn fail(&mut self) -> Result<(), String> {
        let upstream = self.running()?;
        upstream.set_delay(Duration::ZERO);
        upstream.set_status(503);
        self.condition = Condition::Failing;
        Ok(())
    }

    /// Stops the upstream: its listener and every connection close, the port refuses.
    pub fn kill(&mut self) {
        if let Some(upstream) = self.upstream.take() {
            self.earlier_hits += upstream.hits();
        }
        self.condition = Condition::Killed;
    }

    /// Healthy and fast again: started on its port when killed, else reset.
    pub fn restore(&mut self) -> Result<(), String> {
        let upstream = self.running()?;
        upstream.set_delay(Duration::ZERO);
        upstream.set_status(200);
        self.condition = Condition::Ok;
        Ok(())
    }

    /// The running upstream, started again on the same port when killed.
    fn running(&mut self) -> Result<&Upstream, String> {
        if self.upstream.is_none() {
            let upstream = Upstream::builder(&self.name)
                .port(self.port)
                .try_start()
                .map_err(|e| format!("restart {}: {e}", self.name))?;
            self.condition = Condition::Ok;
            self.upstream = Some(upstream);
        }
        self.upstream
            .as_ref()
            .ok_or_else(|| format!("{} is not running", self.name))
    }
}
