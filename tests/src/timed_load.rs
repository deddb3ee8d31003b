//! Steady keep-alive load that times every request: a few client threads, each on its own
//! keep-alive connection ([`crate::raw::Connection`]), sending requests back to back until
//! stopped, and recording when each was sent, when its answer came and who answered. For tests
//! that ask "what happened to the requests sent after this moment" (a reconfiguration) and for
//! latency in windows. A broken connection is recorded as a failed request (status 0) and
//! replaced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::raw;

/// One request, answered or failed.
#[derive(Debug, Clone)]
pub struct Timed {
    /// Which client thread sent it.
    pub client: usize,
    /// When it was sent.
    pub sent: Instant,
    /// When the answer (or the error) came.
    pub done: Instant,
    /// HTTP status, 0 for a transport error.
    pub status: u16,
    /// The `x-upstream` that answered, if any.
    pub upstream: Option<String>,
    /// The transport error, if any.
    pub error: Option<String>,
}

impl Timed {
    /// From sending to the answer.
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.sent)
    }
}

/// Load running in the background.
pub struct TimedLoad {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Timed>>>,
    threads: Vec<JoinHandle<()>>,
}

impl TimedLoad {
    /// Starts `clients` threads sending `GET path` to 127.0.0.1:`port`, each pausing `pause`
    /// between requests (zero: back to back).
    pub fn start(port: u16, path: &str, clients: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let (stop, samples, path) =
                    (Arc::clone(&stop), Arc::clone(&samples), path.to_owned());
                std::thread::spawn(move || {
                    let mut connection = None;
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let result = match connection.as_mut() {
                            Some(c) => raw::Connection::get(c, &path, &[]),
                            None => raw::Connection::open(port).and_then(|mut c| {
                                let result = c.get(&path, &[]);
                                connection = Some(c);
                                result
                            }),
                        };
                        let done = Instant::now();
                        let sample = match result {
                            Ok(response) => Timed {
                                client,
                                sent,
                                done,
                                status: response.status,
                                upstream: response.header("x-upstream").map(str::to_owned),
                                error: None,
                            },
                            Err(error) => {
                                connection = None;
                                Timed {
                                    client,
                                    sent,
                                    done,
                                    status: 0,
                                    upstream: None,
                                    error: Some(error),
                                }
                            }
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(sample);
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            samples,
            threads,
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Timed> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the clients and returns every sample.
    pub fn stop(mut self) -> Vec<Timed> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for TimedLoad {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Latency figures of a set of requests.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// How many requests.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

impl Latency {
    /// The figures of `samples` (`None` when there are none).
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Timed>) -> Option<Self> {
        let mut latencies: Vec<Duration> = samples.into_iter().map(Timed::latency).collect();
        latencies.sort();
        let count = latencies.len();
        if count == 0 {
            return None;
        }
        let rank = |q: f64| {
            let index = ((q * count as f64).ceil() as usize).clamp(1, count) - 1;
            latencies.get(index).copied()
        };
        Some(Self {
            count,
            p50: rank(0.50)?,
            p99: rank(0.99)?,
            max: *latencies.last()?,
        })
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{:>6} requests, p50 {:>6.2} ms, p99 {:>6.2} ms, max {:>7.2} ms",
            self.count,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let start = Instant::now();
        let samples: Vec<Timed> = (1..=200u64)
            .map(|ms| Timed {
                client: 0,
                sent: start,
                done: start + Duration::from_millis(ms),
                status: 200,
                upstream: None,
                error: None,
            })
            .collect();
        let latency = Latency::of(&samples).unwrap();
        assert_eq!(latency.count, 200);
        assert_eq!(latency.p50, Duration::from_millis(100));
        assert_eq!(latency.p99, Duration::from_millis(198));
        assert_eq!(latency.max, Duration::from_millis(200));
        assert!(Latency::of(&[]).is_none());
    }
}
