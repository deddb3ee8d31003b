//! An open-loop HTTP/1.1 load generator: requests are due at a fixed rate whatever the answers
//! do, as real traffic arrives, and each latency is measured from the request's *intended*
//! send time (no coordinated omission: a request that waited for a free connection is late
//! from when it was due, not from when it went out).
//!
//! A std thread keeps the schedule (nanosleep, not tokio's 1 ms timer wheel) and hands each due
//! time to a single-threaded tokio runtime, which sends it on an idle keep-alive connection,
//! opening another when all are busy, up to `max_connections`. A request due when all
//! `max_connections` are busy waits for one (counted in `waited`, its wait in its latency);
//! one still unsent or unanswered `grace` after the schedule ends is counted `unfinished`,
//! a failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How one open-loop run goes.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Requests per second.
    pub rate: f64,
    /// How long requests keep arriving.
    pub duration: Duration,
    /// Connections opened before the first request.
    pub initial_connections: usize,
    /// The most connections open at once.
    pub max_connections: usize,
    /// How long to wait for the last answers after the schedule ends.
    pub grace: Duration,
}

/// What an open-loop run measured.
#[derive(Debug, Clone)]
pub struct OpenLoopResult {
    /// Answers received (any status).
    pub answered: u64,
    /// Answers other than 2xx, plus transport errors (unfinished requests not included).
    pub errors: u64,
    /// Requests due when all `max_connections` were busy: sent late.
    pub waited: u64,
    /// Requests not sent, or not answered, by the end of the grace period.
    pub unfinished: u64,
    /// Connections opened (the most in one run, when merged).
    pub connections: usize,
    /// The schedule's span, summed over merged runs (the achieved rate is `answered /
    /// duration`).
    pub duration: Duration,
    /// Latency from the intended send time, µs, of every answered request.
    pub latency_us: Histogram<u64>,
    /// From the intended send time to the request's hand-over to its connection, µs: the
    /// generator's own lateness (a busy machine's scheduling delay, or a wait for a
    /// connection), part of every latency.
    pub send_lag_us: Histogram<u64>,
    /// Answers per `x-upstream` value and per second of the schedule (by due time).
    pub upstreams: Vec<(String, Vec<u64>)>,
}

impl OpenLoopResult {
    /// Adds another run's counts (rounds of one variant, pooled): per-second counts are
    /// added by second of their own run.
    pub fn merge(&mut self, other: &OpenLoopResult) {
        self.answered += other.answered;
        self.errors += other.errors;
        self.waited += other.waited;
        self.unfinished += other.unfinished;
        self.connections = self.connections.max(other.connections);
        self.duration += other.duration;
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.send_lag_us.add(&other.send_lag_us);
        for (name, counts) in &other.upstreams {
            let index = match self.upstreams.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    self.upstreams.push((name.clone(), Vec::new()));
                    self.upstreams.len() - 1
                }
            };
            let own = &mut self.upstreams[index].1;
            if own.len() < counts.len() {
                own.resize(counts.len(), 0);
            }
            for (total, n) in own.iter_mut().zip(counts) {
                *total += n;
            }
        }
    }

    /// Answers per second over the schedule.
    pub fn achieved_rps(&self) -> f64 {
        self.answered as f64 / self.duration.as_secs_f64()
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Share of the answers that came from `name`, over the seconds `from..to` of the
    /// schedule (by due time).
    pub fn share(&self, name: &str, from: usize, to: usize) -> f64 {
        let sum = |counts: &Vec<u64>| -> u64 {
            counts.iter().skip(from).take(to.saturating_sub(from)).sum()
        };
        let total: u64 = self.upstreams.iter().map(|(_, c)| sum(c)).sum();
        let own: u64 = self
            .upstreams
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| sum(c))
            .sum();
        own as f64 / total.max(1) as f64
    }
}

#[derive(Default)]
struct Tally {
    answered: u64,
    non_2xx: u64,
    transport: u64,
    waited: u64,
    upstreams: Vec<(String, Vec<u64>)>,
}

impl Tally {
    fn count(&mut self, name: &str, second: usize) {
        let index = match self.upstreams.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.upstreams.push((name.to_owned(), Vec::new()));
                self.upstreams.len() - 1
            }
        };
        let counts = &mut self.upstreams[index].1;
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
}

struct Pool {
    port: u16,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
    opened: Mutex<usize>,
    /// One permit per connection that may exist: a request holds one while it is sent.
    permits: Semaphore,
}

impl Pool {
    async fn connect(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        *self.opened.lock().expect("pool lock") += 1;
        Some(sender)
    }

    fn take_idle(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }
}

/// Runs `schedule` against 127.0.0.1:`port`. `on_second(s)` is called as the first request
/// due in second `s` of the schedule is handed over, for scenarios that change an upstream
/// mid-run.
pub fn run(port: u16, schedule: Schedule, mut on_second: impl FnMut(usize)) -> OpenLoopResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("load generator runtime");
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, usize)>();
    let scheduled = (schedule.rate * schedule.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / schedule.rate);
    let pool = Arc::new(Pool {
        port,
        idle: Mutex::new(Vec::new()),
        opened: Mutex::new(0),
        permits: Semaphore::new(schedule.max_connections),
    });
    let tally = Arc::new(Mutex::new(Tally::default()));
    let histogram =
        || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    let latency = Arc::new(Mutex::new((histogram(), histogram())));
    runtime.block_on(async {
        for _ in 0..schedule.initial_connections.min(schedule.max_connections) {
            if let Some(sender) = pool.connect().await {
                pool.idle.lock().expect("pool lock").push(sender);
            }
        }
    });
    let start = Instant::now() + Duration::from_millis(50);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for i in 0..scheduled {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let s = (due - start).as_secs() as usize;
                if due_tx.send((due, s)).is_err() {
                    break;
                }
            }
        });
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            let mut current = usize::MAX;
            while let Some((due, second)) = due_rx.recv().await {
                if second != current {
                    current = second;
                    on_second(second);
                }
                let (pool, tally, latency) =
                    (Arc::clone(&pool), Arc::clone(&tally), Arc::clone(&latency));
                tasks.spawn(send_one(pool, tally, latency, due, second));
            }
            let end = start + schedule.duration + schedule.grace;
            while Instant::now() < end && !tasks.is_empty() {
                let _ = tokio::time::timeout_at(end.into(), tasks.join_next()).await;
            }
            tasks.abort_all();
        });
    });
    drop(runtime);
    let tally = std::mem::take(&mut *tally.lock().expect("tally lock"));
    let (latency_us, send_lag_us) = latency.lock().expect("histogram lock").clone();
    let opened = *pool.opened.lock().expect("pool lock");
    OpenLoopResult {
        answered: tally.answered,
        errors: tally.non_2xx + tally.transport,
        waited: tally.waited,
        unfinished: scheduled.saturating_sub(tally.answered + tally.transport),
        connections: opened,
        duration: schedule.duration,
        latency_us,
        send_lag_us,
        upstreams: tally.upstreams,
    }
}

async fn send_one(
    pool: Arc<Pool>,
    tally: Arc<Mutex<Tally>>,
    latency: Arc<Mutex<(Histogram<u64>, Histogram<u64>)>>,
    due: Instant,
    second: usize,
) {
    let permit = match pool.permits.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            tally.lock().expect("tally lock").waited += 1;
            match pool.permits.acquire().await {
                Ok(permit) => permit,
                Err(_) => return,
            }
        }
    };
    let sender = match pool.take_idle() {
        Some(sender) => Some(sender),
        None => pool.connect().await,
    };
    let Some(mut sender) = sender else {
        tally.lock().expect("tally lock").transport += 1;
        return;
    };
    if sender.ready().await.is_err() {
        tally.lock().expect("tally lock").transport += 1;
        return;
    }
    let lag = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
    let request = Request::get("/")
        .header("host", "bench.eisodos")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let outcome = match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status();
            let upstream = crate::loadgen::upstream_of(response.headers());
            response
                .into_body()
                .collect()
                .await
                .ok()
                .map(|_| (status, upstream))
        }
        Err(_) => None,
    };
    let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut t = tally.lock().expect("tally lock");
    match outcome {
        Some((status, upstream)) => {
            t.answered += 1;
            if !status.is_success() {
                t.non_2xx += 1;
            }
            if let Some(name) = upstream {
                t.count(&name, second);
            }
            let mut histograms = latency.lock().expect("histogram lock");
            let _ = histograms.0.record(micros.max(1));
            let _ = histograms.1.record(lag.max(1));
            drop(histograms);
            drop(t);
            pool.idle.lock().expect("pool lock").push(sender);
        }
        None => t.transport += 1,
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use eisodos_tests::upstream::Upstream;

    fn schedule(rate: f64, max_connections: usize) -> Schedule {
        Schedule {
            rate,
            duration: Duration::from_secs(1),
            initial_connections: 1,
            max_connections,
            grace: Duration::from_secs(5),
        }
    }

    #[test]
    fn latency_counts_from_the_intended_send_time_when_connections_run_out() {
        // One connection to an upstream answering in 20 ms serves at most 50 rq/s; 200 are due
        // in the second. Measured from the actual send, every latency would be ~20 ms; from
        // the due time, the queue shows: the last requests wait most of 3 s.
        let upstream = Upstream::builder("only")
            .delay(Duration::from_millis(20))
            .start();
        let result = run(upstream.port(), schedule(200.0, 1), |_| {});
        assert_eq!(result.connections, 1);
        assert!(result.waited > 100, "{}", result.waited);
        assert!(
            result.percentile_ms(0.99) > 1_000.0,
            "p99 {} ms",
            result.percentile_ms(0.99)
        );
        assert!(result.percentile_ms(0.5) > 200.0);
        assert_eq!(result.answered + result.unfinished, 200);
    }

    #[test]
    fn more_connections_are_opened_rather_than_queueing() {
        let upstream = Upstream::builder("only")
            .delay(Duration::from_millis(20))
            .start();
        let result = run(upstream.port(), schedule(200.0, 64), |_| {});
        // (Not `waited == 0`: a stall of the busy machine may hold 64 connections at once.)
        assert_eq!((result.answered, result.errors), (200, 0));
        assert!(result.connections > 1, "{}", result.connections);
        assert!(result.share("only", 0, 1) > 0.99);
    }

    #[test]
    fn merged_runs_add_counts_by_second_of_their_own_run() {
        let upstream = Upstream::builder("only").start();
        let mut a = run(upstream.port(), schedule(50.0, 4), |_| {});
        let b = run(upstream.port(), schedule(50.0, 4), |_| {});
        a.merge(&b);
        assert_eq!(a.answered, 100);
        assert_eq!(a.duration, Duration::from_secs(2));
        assert_eq!(a.upstreams, vec![("only".to_owned(), vec![100])]);
        assert_eq!(a.latency_us.len(), 100);
    }
}
