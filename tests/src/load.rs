//! Steady background load: a few client threads sending requests back to back, recording when
//! each answer came and from which upstream, until stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client;

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the answer arrived.
    pub at: Instant,
    /// HTTP status, 0 for a transport error.
    pub status: u16,
    /// The `x-upstream` that answered, if any.
    pub upstream: Option<String>,
}

/// Load running in the background.
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl SteadyLoad {
    /// Starts `threads` clients on `url`, each pausing `pause` between requests.
    pub fn start(url: &str, threads: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, samples, url) =
                    (Arc::clone(&stop), Arc::clone(&samples), url.to_owned());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let sample = match client::try_get_with(&url, &[]) {
                            Ok(response) => Sample {
                                at: Instant::now(),
                                status: response.status,
                                upstream: response.header("x-upstream").map(str::to_owned),
                            },
                            Err(_) => Sample {
                                at: Instant::now(),
                                status: 0,
                                upstream: None,
                            },
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(sample);
                        std::thread::sleep(pause);
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
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the clients and returns every sample.
    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.samples()
    }
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
