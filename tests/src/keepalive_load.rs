//! Steady load over keep-alive connections ([`crate::raw::Connection`]) that records when each
//! request was sent as well as when and how it ended: a test can then count the requests that
//! started inside a window (those a fault could have hit) without exhausting ephemeral ports
//! the way a connection per request does for seconds. A connection that fails is replaced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::raw::Connection;

/// One request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent.
    pub sent: Instant,
    /// When its answer (or its failure) came.
    pub done: Instant,
    /// HTTP status, 0 for a transport error (a reset, a truncated answer, a timeout).
    pub status: u16,
    /// The `x-upstream` that answered, if any.
    pub upstream: Option<String>,
}

/// Load running in the background.
pub struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl KeepAliveLoad {
    /// Starts `connections` clients on 127.0.0.1:`port`, each sending GET `path` on its own
    /// keep-alive connection and pausing `pause` after each answer.
    pub fn start(port: u16, path: &str, connections: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..connections)
            .map(|_| {
                let (stop, samples, path) =
                    (Arc::clone(&stop), Arc::clone(&samples), path.to_owned());
                std::thread::spawn(move || {
                    let mut connection = None;
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let result = match connection.as_mut() {
                            Some(c) => Ok(c),
                            None => Connection::open(port).map(|c| connection.insert(c)),
                        }
                        .and_then(|c| c.get(&path, &[]));
                        let sample = match result {
                            Ok(response) => Sample {
                                sent,
                                done: Instant::now(),
                                status: response.status,
                                upstream: response.header("x-upstream").map(str::to_owned),
                            },
                            Err(_) => {
                                connection = None;
                                Sample {
                                    sent,
                                    done: Instant::now(),
                                    status: 0,
                                    upstream: None,
                                }
                            }
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

    /// Stops the clients (each finishes the request it is in) and returns every sample.
    pub fn stop(mut self) -> Vec<Sample> {
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

impl Drop for KeepAliveLoad {
    fn drop(&mut self) {
        self.halt();
    }
}
