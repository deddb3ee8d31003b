//! Open-loop load: requests are due at a fixed rate whatever the answers do, and a pool of
//! client threads on keep-alive connections sends them. A request that waits for a free
//! client is counted late (the pool is too small for the latency), not silently dropped.
//!
//! Requests differ as users do: every one carries a rate-limit key, most from a wide set of
//! keys each far below the limit, a tenth from one hot key above it (its 429s are expected);
//! a third belong to a few hundred sticky users, who send back the cookie they got.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eisodos_tests::client::Response;
use eisodos_tests::raw::Connection;

use crate::configs::{COOKIE, RATE_KEY_HEADER};

/// A request is late when it waited this long for a free client.
const LATE: Duration = Duration::from_millis(250);
/// Distinct rate-limit keys of the ordinary traffic.
const KEYS: usize = 500;
/// Sticky users.
const USERS: usize = 300;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Answered by an upstream with this status.
    Upstream { status: u16, backend: String },
    /// eisodos answered itself (`x-eisodos-reason`).
    Local { status: u16, reason: String },
    /// Envoy answered without reaching an upstream (a refused connection, a timeout).
    Envoy { status: u16 },
    /// No HTTP answer at all.
    Transport,
}

impl Outcome {
    /// `status reason` for tables: `200 backend_a`, `429 rate_limited`, `503 envoy`.
    pub fn label(&self) -> String {
        match self {
            Outcome::Upstream { status, backend } => format!("{status} {backend}"),
            Outcome::Local { status, reason } => format!("{status} {reason}"),
            Outcome::Envoy { status } => format!("{status} envoy"),
            Outcome::Transport => "transport error".to_owned(),
        }
    }

    fn of(response: &Response) -> Self {
        if let Some(reason) = response.header("x-eisodos-reason") {
            return Outcome::Local {
                status: response.status,
                reason: reason.to_owned(),
            };
        }
        match response.header("x-upstream") {
            Some(backend) => Outcome::Upstream {
                status: response.status,
                backend: backend.to_owned(),
            },
            None => Outcome::Envoy {
                status: response.status,
            },
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Done {
    /// When it was due, since the start of the load.
    pub due: Duration,
    /// When its answer (or failure) came, since the start of the load.
    pub at: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// A sticky user's request that carried a cookie and came back from another backend
    /// than the one its cookie named.
    pub moved: bool,
}

#[derive(Default)]
struct Totals {
    done: Vec<Done>,
    late: u64,
}

/// The load, running until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    totals: Arc<Mutex<Totals>>,
    dispatcher: Option<JoinHandle<u64>>,
    clients: Vec<JoinHandle<()>>,
    start: Instant,
}

struct Job {
    n: u64,
    due: Duration,
}

impl Load {
    /// Sends `rate` requests a second to 127.0.0.1:`port` from `clients` threads.
    pub fn start(port: u16, rate: u32, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let totals = Arc::new(Mutex::new(Totals::default()));
        let start = Instant::now();
        let (send, receive) = mpsc::sync_channel::<Job>(rate as usize * 10);
        let receive = Arc::new(Mutex::new(receive));
        let cookies = Arc::new(Mutex::new(HashMap::<usize, String>::new()));
        let clients = (0..clients)
            .map(|_| {
                let (receive, totals, cookies) = (
                    Arc::clone(&receive),
                    Arc::clone(&totals),
                    Arc::clone(&cookies),
                );
                std::thread::spawn(move || client(port, start, &receive, &totals, &cookies))
            })
            .collect();
        let dispatcher = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || dispatch(&send, rate, start, &stop))
        };
        Self {
            stop,
            totals,
            dispatcher: Some(dispatcher),
            clients,
            start,
        }
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Stops sending, waits for the answers of the requests sent, and returns every request
    /// with the number that were due and the number that were late.
    pub fn stop(mut self) -> (Vec<Done>, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let due = self
            .dispatcher
            .take()
            .and_then(|d| d.join().ok())
            .unwrap_or(0);
        for client in self.clients.drain(..) {
            let _ = client.join();
        }
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = std::mem::take(&mut totals.done);
        done.sort_by_key(|d| d.due);
        (done, due, totals.late)
    }
}

/// Puts a job in the queue each time one is due; returns how many were due. Dropping the
/// sender at the end lets the clients finish the queue and stop.
fn dispatch(send: &SyncSender<Job>, rate: u32, start: Instant, stop: &AtomicBool) -> u64 {
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let due = Duration::from_secs_f64(n as f64 / f64::from(rate));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        if send.send(Job { n, due }).is_err() {
            break;
        }
        n += 1;
    }
    n
}

fn client(
    port: u16,
    start: Instant,
    receive: &Mutex<Receiver<Job>>,
    totals: &Mutex<Totals>,
    cookies: &Mutex<HashMap<usize, String>>,
) {
    let mut connection: Option<Connection> = None;
    loop {
        let job = {
            let receive = receive.lock().unwrap_or_else(|e| e.into_inner());
            match receive.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let late = start.elapsed().saturating_sub(job.due) > LATE;
        let key = if job.n % 10 == 0 {
            "hot".to_owned()
        } else {
            format!("k{}", (job.n * 7919) % KEYS as u64)
        };
        let user = (job.n % 3 == 1).then_some((job.n / 3) as usize % USERS);
        let sent_cookie = user.and_then(|u| {
            cookies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&u)
                .cloned()
        });
        let mut headers = vec![(RATE_KEY_HEADER, key.as_str())];
        let cookie_header = sent_cookie.as_ref().map(|c| format!("{COOKIE}={c}"));
        if let Some(cookie) = &cookie_header {
            headers.push(("cookie", cookie.as_str()));
        }
        let result = match connection.as_mut() {
            Some(c) => c.get("/soak", &headers),
            None => Connection::open(port).and_then(|mut c| {
                let r = c.get("/soak", &headers);
                connection = Some(c);
                r
            }),
        };
        let (outcome, moved) = match result {
            Ok(response) => {
                if response
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    connection = None;
                }
                let got = set_cookie(&response);
                let moved = sent_cookie.is_some() && got.is_some();
                if let (Some(u), Some(value)) = (user, got) {
                    cookies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(u, value);
                }
                (Outcome::of(&response), moved)
            }
            Err(_) => {
                connection = None;
                (Outcome::Transport, false)
            }
        };
        let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
        totals.late += u64::from(late);
        totals.done.push(Done {
            due: job.due,
            at: start.elapsed(),
            outcome,
            moved,
        });
    }
}

/// The value of our cookie in the response's `set-cookie`, if it sets one.
fn set_cookie(response: &Response) -> Option<String> {
    response
        .headers
        .iter()
        .filter(|(name, _)| name == "set-cookie")
        .find_map(|(_, value)| {
            let first = value.split(';').next()?;
            let (name, value) = first.split_once('=')?;
            (name.trim() == COOKIE).then(|| value.trim().to_owned())
        })
}
