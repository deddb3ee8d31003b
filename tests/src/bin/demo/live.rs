//! The live demo: a light steady load through Envoy and, every second, a table of where it
//! went (each upstream's own hit counter), what eisodos thinks of each backend and its mode
//! (the status page), and the requests each upstream is answering. Keys or stdin commands
//! slow down, fail, kill and restore upstreams meanwhile, so failover and recovery show.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eisodos_tests::client;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use serde_json::Value;

use crate::backends::{Backend, SLOW_DELAY};
use crate::frame::{self, Frame, Row};
use crate::input::{self, Action, Event};

/// Load clients, each with one request at a time.
const CLIENTS: usize = 4;
/// Each client's bound: light enough to leave the machine to Envoy, enough to see shares.
const PER_CLIENT_RATE: u32 = 25;
/// How often the table refreshes, and the window its rates and shares cover.
const REFRESH: Duration = Duration::from_secs(1);
/// Where the shipped config serves eisodos' status page.
const STATUS_PATH: &str = "/.eisodos/status";

/// Runs until `q`, `quit`, or SIGINT / SIGTERM / SIGHUP.
pub fn run(envoy: &Envoy, upstreams: Vec<Upstream>) -> Result<(), String> {
    let mut backends: Vec<Backend> = upstreams.into_iter().map(Backend::new).collect();
    let names: Vec<String> = backends.iter().map(|b| b.name().to_owned()).collect();
    let (events, received) = mpsc::channel();
    input::spawn_signals(events.clone())?;
    let _cbreak = input::spawn_stdin(events.clone(), names.clone())?;
    let terminal = std::io::stdout().is_terminal();

    println!(
        "\nLoad: {CLIENTS} clients, at most {PER_CLIENT_RATE} requests/s each, to {}\n\
         Status page: curl {}   admin: {}\n\
         in flight: requests the upstream is answering now; health and mode: eisodos' status page.\n\
         {}\n",
        envoy.url("/"),
        envoy.url(STATUS_PATH),
        envoy.admin_url("/"),
        if terminal {
            "Keys act on the selected backend (>)."
        } else {
            "Commands on stdin, one a line: N (select), slow|fail|kill|restore [N], quit."
        }
    );

    let load = Load::start(&envoy.url("/"), CLIENTS, PER_CLIENT_RATE);
    let mut screen = Screen::new(terminal);
    let mut selected = 0usize;
    let mut message = String::new();
    let started = Instant::now();
    let mut before = Counts::take(&backends, &load);
    let mut next = started + REFRESH;
    let mut shown: Option<Frame> = None;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match received.recv_timeout(wait) {
            Ok(Event::Quit) => break,
            Ok(event) => {
                message = apply(event, &mut backends, &mut selected);
                // Answer a key at once, on the last measured frame, on a terminal; piped
                // output stays one block per second.
                if let (true, Some(frame)) = (terminal, shown.as_mut()) {
                    refresh_controls(frame, &backends, selected, &message);
                    screen.draw(&frame::render(frame));
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Counts::take(&backends, &load);
                let status = client::try_get_with(&envoy.url(STATUS_PATH), &[])
                    .ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| serde_json::from_str::<Value>(&r.body).ok());
                let frame = measure(
                    &before,
                    &now,
                    status.as_ref(),
                    &backends,
                    selected,
                    &message,
                    started.elapsed(),
                );
                screen.draw(&frame::render(&frame));
                shown = Some(frame);
                before = now;
                next += REFRESH;
                // Behind (a slow status page, a busy machine): skip, do not catch up.
                if next <= Instant::now() {
                    next = Instant::now() + REFRESH;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    load.stop();
    drop(screen);
    for backend in &backends {
        for error in backend.errors() {
            eprintln!("{}: server error: {error}", backend.name());
        }
    }
    Ok(())
}

/// Does what `event` asks; returns the line to show.
fn apply(event: Event, backends: &mut [Backend], selected: &mut usize) -> String {
    match event {
        Event::Quit => "quitting".to_owned(),
        Event::Unknown(text) => {
            format!("unknown command {text:?}: N (select), slow|fail|kill|restore [N], quit")
        }
        Event::Select(index) => match backends.get(index) {
            Some(backend) => {
                *selected = index;
                format!("{} selected", backend.name())
            }
            None => format!("no backend {}", index + 1),
        },
        Event::Act(action, target) => {
            let index = target.unwrap_or(*selected);
            let Some(backend) = backends.get_mut(index) else {
                return format!("no backend {}", index + 1);
            };
            let name = backend.name().to_owned();
            let done = match action {
                Action::Slow => backend
                    .slow()
                    .map(|()| format!("{name} slowed: +{} ms per answer", SLOW_DELAY.as_millis())),
                Action::Fail => backend
                    .fail()
                    .map(|()| format!("{name} failing: 503 to everything, probes too")),
                Action::Kill => {
                    backend.kill();
                    Ok(format!("{name} killed: its port refuses connections"))
                }
                Action::Restore => backend
                    .restore()
                    .map(|()| format!("{name} restored: 200 at once")),
            };
            done.unwrap_or_else(|e| e)
        }
    }
}

/// What the counters said at one moment.
struct Counts {
    at: Instant,
    hits: Vec<u64>,
    non_200: u64,
    no_answer: u64,
}

impl Counts {
    fn take(backends: &[Backend], load: &Load) -> Self {
        Self {
            at: Instant::now(),
            hits: backends.iter().map(Backend::hits).collect(),
            non_200: load.non_200.load(Ordering::SeqCst),
            no_answer: load.no_answer.load(Ordering::SeqCst),
        }
    }
}

/// The frame for the window from `before` to `now`.
fn measure(
    before: &Counts,
    now: &Counts,
    status: Option<&Value>,
    backends: &[Backend],
    selected: usize,
    message: &str,
    uptime: Duration,
) -> Frame {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let deltas: Vec<u64> = now
        .hits
        .iter()
        .zip(&before.hits)
        .map(|(n, b)| n.saturating_sub(*b))
        .collect();
    let total: u64 = deltas.iter().sum();
    let text = |pointer: &str| {
        status
            .and_then(|s| s.pointer(pointer))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let rows = backends
        .iter()
        .zip(&deltas)
        .enumerate()
        .map(|(index, (backend, delta))| Row {
            name: backend.name().to_owned(),
            selected: index == selected,
            rate: *delta as f64 / seconds,
            share: if total == 0 {
                0.0
            } else {
                *delta as f64 * 100.0 / total as f64
            },
            health: health(status, backend.name()).to_owned(),
            in_flight: backend.in_flight(),
            condition: backend.condition().label().to_owned(),
        })
        .collect();
    Frame {
        policy: text("/policy"),
        mode: text("/mode"),
        uptime_s: uptime.as_secs(),
        rows,
        non_200_rate: now.non_200.saturating_sub(before.non_200) as f64 / seconds,
        no_answer_rate: now.no_answer.saturating_sub(before.no_answer) as f64 / seconds,
        message: message.to_owned(),
        legend: input::legend(backends.len()),
    }
}

/// Updates what a command changes (selection, conditions, in flight, the message) in a frame
/// already measured.
fn refresh_controls(frame: &mut Frame, backends: &[Backend], selected: usize, message: &str) {
    for (index, (row, backend)) in frame.rows.iter_mut().zip(backends).enumerate() {
        row.selected = index == selected;
        row.condition = backend.condition().label().to_owned();
        row.in_flight = backend.in_flight();
    }
    message.clone_into(&mut frame.message);
}

/// A backend's health as the status page tells it.
fn health(status: Option<&Value>, cluster: &str) -> &'static str {
    let Some(backend) = status
        .and_then(|s| s["backends"].as_array())
        .and_then(|all| all.iter().find(|b| b["cluster"] == cluster))
    else {
        return "?";
    };
    match (backend["healthy"].as_bool(), backend["ejected"].as_bool()) {
        (Some(false), _) => "unhealthy",
        (Some(true), Some(true)) => "ejected",
        (Some(true), _) => "healthy",
        _ => "?",
    }
}

/// The steady load: clients sending one request at a time, each at most at its rate.
struct Load {
    stop: Arc<AtomicBool>,
    non_200: Arc<AtomicU64>,
    no_answer: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, clients: usize, per_client_rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let non_200 = Arc::new(AtomicU64::new(0));
        let no_answer = Arc::new(AtomicU64::new(0));
        let period = Duration::from_secs(1) / per_client_rate.max(1);
        let threads = (0..clients)
            .map(|_| {
                let (stop, non_200, no_answer, url) = (
                    Arc::clone(&stop),
                    Arc::clone(&non_200),
                    Arc::clone(&no_answer),
                    url.to_owned(),
                );
                std::thread::spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        match client::try_get_with(&url, &[]) {
                            Ok(r) if r.status == 200 => {}
                            Ok(_) => {
                                non_200.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => {
                                no_answer.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        // Paced, never catching up after a slow answer: a bound, not a target.
                        next = (next + period).max(Instant::now());
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                })
            })
            .collect();
        Self {
            stop,
            non_200,
            no_answer,
            threads,
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Where frames go: redrawn in place on a terminal, one block after another otherwise.
struct Screen {
    terminal: bool,
    /// Lines of the frame on screen, to move back over.
    drawn: usize,
}

impl Screen {
    fn new(terminal: bool) -> Self {
        if terminal {
            // Hide the cursor while redrawing (shown again on drop).
            print!("\x1b[?25l");
        }
        Self { terminal, drawn: 0 }
    }

    fn draw(&mut self, lines: &[String]) {
        let mut out = std::io::stdout().lock();
        if self.terminal && self.drawn > 0 {
            // Up to the frame's first line, column 0, and clear from there down.
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn);
        }
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        if !self.terminal {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        self.drawn = lines.len();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.terminal {
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
        }
    }
}
