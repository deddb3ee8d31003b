//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending
//! its next request when the last answer arrived, for a fixed time. Latencies go into an HDR
//! histogram as measured, uncorrected: no coordinated-omission rewrite (wrk 4.1's rewrite
//! reports invented medians when latencies are bimodal).

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests answered with any status.
    pub requests: u64,
    /// Answers other than 2xx, plus transport errors.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub latency_us: Histogram<u64>,
    /// Answers per `x-upstream` value seen, in first-seen order.
    pub upstreams: Vec<(String, u64)>,
}

impl LoadResult {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs the load against 127.0.0.1:`port` for `duration` over `connections` connections.
/// Each request carries `x-user-id: <connection>-<n % 64>` so hashing policies see many keys.
pub fn run(port: u16, connections: usize, duration: Duration) -> LoadResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("load generator runtime");
    runtime.block_on(async move {
        let deadline = Instant::now() + duration;
        let start = Instant::now();
        let tasks: Vec<_> = (0..connections)
            .map(|c| tokio::spawn(connection(port, c, deadline)))
            .collect();
        let mut total = Outcome::new();
        for task in tasks {
            if let Ok(outcome) = task.await {
                total.merge(outcome);
            }
        }
        LoadResult {
            requests: total.requests,
            errors: total.errors,
            elapsed: start.elapsed(),
            latency_us: total.latency_us,
            upstreams: total.upstreams,
        }
    })
}

struct Outcome {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    upstreams: Vec<(String, u64)>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            upstreams: Vec::new(),
        }
    }

    fn count_upstream(&mut self, name: &str, n: u64) {
        match self.upstreams.iter_mut().find(|(seen, _)| seen == name) {
            Some((_, count)) => *count += n,
            None => self.upstreams.push((name.to_owned(), n)),
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.errors += other.errors;
        let _ = self.latency_us.add(&other.latency_us);
        for (name, n) in other.upstreams {
            self.count_upstream(&name, n);
        }
    }
}

async fn connection(port: u16, index: usize, deadline: Instant) -> Outcome {
    let mut outcome = Outcome::new();
    let mut n: u64 = 0;
    'reconnect: while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            outcome.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            outcome.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let request = Request::get("/")
                .header("host", "bench.eisodos")
                .header("x-user-id", format!("{index}-{}", n % 64))
                .body(Empty::<Bytes>::new())
                .expect("request");
            n += 1;
            let sent = Instant::now();
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(_) => {
                    outcome.errors += 1;
                    continue 'reconnect;
                }
            };
            let status = response.status();
            let upstream = upstream_of(response.headers());
            if response.into_body().collect().await.is_err() {
                outcome.errors += 1;
                continue 'reconnect;
            }
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = outcome.latency_us.record(micros.max(1));
            outcome.requests += 1;
            if !status.is_success() {
                outcome.errors += 1;
            }
            if let Some(name) = upstream {
                outcome.count_upstream(&name, 1);
            }
        }
    }
    outcome
}

/// The upstream that answered: the bench upstreams' `x-upstream` header.
pub fn upstream_of(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
