//! `just demo` as people and scripts use it: the live table on a terminal, driven with keys
//! (kill an upstream, watch it fail over, restore it, watch it come back, quit); the same
//! with commands on a pipe; and `--exit`'s one-shot table. Each runs the demo binary with
//! `--free-ports`, so it does not need 8081-8083, 9901 and 10000 free.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eisodos_tests::exclusive;
use eisodos_tests::pty::PtyChild;

const DEMO: &str = env!("CARGO_BIN_EXE_demo");
/// The demo's backends.
const ALL: [&str; 3] = ["backend_a", "backend_b", "backend_c"];
/// Far beyond what each state needs (Envoy starts in about a second; a killed upstream is
/// ejected after 5 failed requests and back after 2 passing probes, 1 s apart): a slow
/// machine only makes the wait longer.
const STATE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `q` may take: stopping the load, Envoy (SIGTERM) and the upstreams.
const QUIT_TIMEOUT: Duration = Duration::from_secs(30);

/// One backend's line of a frame.
#[derive(Debug, Clone)]
struct Row {
    selected: bool,
    name: String,
    rate: f64,
    share: f64,
    health: String,
    upstream: String,
}

/// One frame of the live table, parsed back from the screen.
#[derive(Debug, Clone)]
struct Frame {
    text: String,
    mode: String,
    rows: Vec<Row>,
    non_200: f64,
    no_answer: f64,
}

impl Frame {
    fn row(&self, name: &str) -> &Row {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.text))
    }

    fn all_healthy_and_serving(&self) -> bool {
        self.rows.len() == 3
            && self
                .rows
                .iter()
                .all(|r| r.health == "healthy" && r.upstream == "ok" && r.rate > 0.0)
    }
}

/// Removes ANSI escape sequences (CSI: ESC [ parameters final-byte) and carriage returns.
fn plain(screen: &str) -> String {
    let mut out = String::with_capacity(screen.len());
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Every complete frame in the output, in order (a frame ends with the keys' line).
fn frames(output: &str) -> Vec<Frame> {
    let text = plain(output);
    let mut frames = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("eisodos live · ") else {
            continue;
        };
        let mode = rest
            .split(" · ")
            .find_map(|part| part.strip_prefix("mode "))
            .unwrap_or("?")
            .to_owned();
        let mut body = vec![line.to_owned()];
        let mut complete = false;
        while let Some(next) = lines.next_if(|l| !l.starts_with("eisodos live · ")) {
            body.push(next.to_owned());
            if next.starts_with("keys: ") {
                complete = true;
                break;
            }
        }
        if complete {
            frames.push(parse(body, mode));
        }
    }
    frames
}

fn parse(body: Vec<String>, mode: String) -> Frame {
    let number = |s: &str| s.trim_end_matches('%').parse::<f64>().unwrap_or(f64::NAN);
    let mut rows = Vec::new();
    let (mut non_200, mut no_answer) = (f64::NAN, f64::NAN);
    for line in &body {
        let selected = line.starts_with('>');
        let words: Vec<&str> = line.get(1..).unwrap_or("").split_whitespace().collect();
        match words.as_slice() {
            ["non-200", rate] => non_200 = number(rate),
            ["no", "answer", rate] => no_answer = number(rate),
            [name, rate, share, health, _in_flight, upstream @ ..]
                if name.starts_with("backend_") =>
            {
                rows.push(Row {
                    selected,
                    name: (*name).to_owned(),
                    rate: number(rate),
                    share: number(share),
                    health: (*health).to_owned(),
                    upstream: upstream.join(" "),
                })
            }
            _ => {}
        }
    }
    Frame {
        text: body.join("\n"),
        mode,
        rows,
        non_200,
        no_answer,
    }
}

/// Waits for a frame after the first `seen` frames that passes `check`; returns it and how
/// many frames there are up to it.
fn wait_frame(
    output: impl Fn() -> String,
    seen: usize,
    what: &str,
    check: impl Fn(&Frame) -> bool,
) -> (Frame, usize) {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let all = frames(&output());
        if let Some((index, frame)) = all.iter().enumerate().skip(seen).find(|(_, f)| check(f)) {
            return (frame.clone(), index + 1);
        }
        assert!(
            Instant::now() < deadline,
            "no frame with {what} after {STATE_TIMEOUT:?}; the last:\n{}\n\nthe whole output:\n{}",
            all.last().map_or("(none)", |f| f.text.as_str()),
            output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Envoy's pid, from the demo's first line, so a demo that had to be killed does not leave
/// its Envoy behind.
fn envoy_pid(output: &str) -> Option<libc::pid_t> {
    plain(output)
        .lines()
        .find_map(|l| l.strip_prefix("Envoy is up (pid "))
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
}

/// Kills the Envoy of a demo that had to be killed itself (it would run on, orphaned).
fn kill_envoy(demo_output: &str) {
    if let Some(pid) = envoy_pid(demo_output) {
        // SAFETY: kill(2) by the pid the demo reported for the Envoy it started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// The demo on a terminal, stopped (and its Envoy with it) however the test ends.
struct Demo {
    pty: PtyChild,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let output = self.pty.output();
        let status = self.pty.stop();
        // Killed (not exited on its own): its Envoy, a child of it, is still running.
        let killed = status.is_some_and(|s| {
            std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGKILL)
        });
        if killed {
            kill_envoy(&output);
        }
        if std::thread::panicking() {
            eprintln!("===== demo output =====\n{}", plain(&self.pty.output()));
        }
    }
}

/// How many requests a backend's count in one window may be off its exact part. Round-robin
/// deals tickets in one order for all workers, so N consecutive tickets give each of k
/// backends N/k rounded up or down (1). The window is cut where requests arrive at the
/// upstreams, not where they take their ticket: with the demo's 4 clients, each with one
/// request at a time, at most 3 other requests sit between a ticket and its arrival, at each
/// of the window's two edges (3 + 3). The status page takes no ticket.
const SLACK: f64 = 7.0;

/// Whether `names` share the frame's requests equally, give or take [`SLACK`] requests each.
/// The requests are counted from the frame's rates, whose window is at least a second, so
/// the count is at most the real one and the bound errs on the loose side.
fn balanced(frame: &Frame, names: &[&str]) -> Result<(), String> {
    let total: f64 = names.iter().map(|n| frame.row(n).rate).sum();
    if total <= 0.0 {
        return Err(format!("no requests:\n{}", frame.text));
    }
    let expected = 100.0 / names.len() as f64;
    // The share is shown to 0.1%.
    let tolerance = 100.0 * SLACK / total + 0.05;
    for name in names {
        let share = frame.row(name).share;
        if (share - expected).abs() > tolerance {
            return Err(format!(
                "{name}'s share {share}% is not {expected:.1}% ± {tolerance:.1}:\n{}",
                frame.text
            ));
        }
    }
    Ok(())
}

#[track_caller]
fn assert_balanced(frame: &Frame, names: &[&str]) {
    if let Err(why) = balanced(frame, names) {
        panic!("{why}");
    }
}

#[test]
fn live_table_on_a_terminal_shows_failover_and_recovery_driven_by_keys() {
    let _machine = exclusive::machine();
    let mut command = Command::new(DEMO);
    command.arg("--free-ports");
    let mut demo = Demo {
        pty: PtyChild::spawn(command, 100, 40).expect("start the demo on a pty"),
    };

    // Three healthy backends sharing the load: round-robin's third each, give or take the
    // requests in flight at the window's edges.
    let (before, seen) = wait_frame(
        || demo.pty.output(),
        0,
        "three healthy backends serving",
        Frame::all_healthy_and_serving,
    );
    eprintln!("before the kill:\n{}\n", before.text);
    assert_eq!(before.mode, "normal", "{}", before.text);
    assert_eq!(
        (before.non_200, before.no_answer),
        (0.0, 0.0),
        "{}",
        before.text
    );
    assert_balanced(&before, &ALL);
    assert!(before.row("backend_a").selected, "{}", before.text);

    demo.pty.send(b"2").expect("press 2");
    let (_, seen) = wait_frame(
        || demo.pty.output(),
        seen,
        "backend_b selected",
        |f| f.row("backend_b").selected,
    );
    demo.pty.send(b"k").expect("press k");
    // Failed over: eisodos holds backend_b out, and a whole second passed without a failed
    // request, all of it on the other two, half each.
    let (after, seen) = wait_frame(
        || demo.pty.output(),
        seen,
        "backend_b out and no failures",
        |f| {
            let b = f.row("backend_b");
            b.upstream == "killed"
                && b.health != "healthy"
                && b.share == 0.0
                && f.non_200 == 0.0
                && f.no_answer == 0.0
        },
    );
    eprintln!("after the kill:\n{}\n", after.text);
    let b = after.row("backend_b");
    assert!(
        ["unhealthy", "ejected"].contains(&b.health.as_str()),
        "{}",
        after.text
    );
    assert_eq!(after.mode, "normal", "{}", after.text);
    assert_balanced(&after, &["backend_a", "backend_c"]);

    demo.pty.send(b"r").expect("press r");
    let (back, _) = wait_frame(
        || demo.pty.output(),
        seen,
        "backend_b back and a third each",
        |f| f.all_healthy_and_serving() && balanced(f, &ALL).is_ok(),
    );
    eprintln!("after the restore:\n{}\n", back.text);
    assert_eq!((back.non_200, back.no_answer), (0.0, 0.0), "{}", back.text);

    demo.pty.send(b"q").expect("press q");
    let status = demo
        .pty
        .wait_exit(QUIT_TIMEOUT)
        .expect("the demo exits on q");
    assert!(status.success(), "{status}");
    let text = plain(&demo.pty.output());
    assert!(text.trim_end().ends_with("stopped"), "{text}");
    // The terminal is left as found: the cursor shown again.
    assert!(demo.pty.output().contains("\x1b[?25h"));
}

#[test]
fn live_table_on_a_pipe_takes_commands_from_stdin() {
    use std::io::{BufRead, Write};
    let _machine = exclusive::machine();
    let collected = Arc::new(Mutex::new(String::new()));
    let mut demo = Piped(
        Command::new(DEMO)
            .arg("--free-ports")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the demo"),
        Arc::clone(&collected),
    );
    let mut stdin = demo.0.stdin.take().expect("stdin");
    let stdout = demo.0.stdout.take().expect("stdout");
    let reader = {
        let collected = Arc::clone(&collected);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut text = collected.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        })
    };
    let output = || collected.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let (_, seen) = wait_frame(
        output,
        0,
        "three healthy backends serving",
        Frame::all_healthy_and_serving,
    );
    writeln!(stdin, "kill backend_c").expect("write a command");
    let (after, _) = wait_frame(output, seen, "backend_c killed and out", |f| {
        let c = f.row("backend_c");
        c.upstream == "killed" && c.health != "healthy" && c.share == 0.0
    });
    assert_balanced(&after, &["backend_a", "backend_b"]);
    writeln!(stdin, "quit").expect("write quit");
    let status = demo.wait(QUIT_TIMEOUT).expect("the demo exits on quit");
    assert!(status.success(), "{status}");
    reader.join().expect("the reader thread");
    let text = output();
    assert!(
        !text.contains('\x1b'),
        "escape sequences on a pipe:\n{text}"
    );
    assert!(text.trim_end().ends_with("stopped"), "{text}");
}

#[test]
fn exit_prints_the_one_shot_spread() {
    let _machine = exclusive::machine();
    let output = Command::new(DEMO)
        .args(["--free-ports", "--exit", "--requests", "30"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Envoy is up (pid "), "{text}");
    let table: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("backend "))
        .take(5)
        .copied()
        .collect();
    assert_eq!(
        table,
        [
            "backend      requests  percent",
            "backend_a          10    33.3%",
            "backend_b          10    33.3%",
            "backend_c          10    33.3%",
            "non-200             0     0.0%",
        ],
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("connections per Envoy worker: worker_0: ")),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"stopped"), "{text}");
}

/// The demo on pipes, stopped however the test ends: SIGTERM by PID (the demo then stops
/// its Envoy), SIGKILL if it has not exited 10 s later.
struct Piped(Child, Arc<Mutex<String>>);

impl Piped {
    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
                // SAFETY: kill(2) on the demo this test started and has not reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            if self.wait(Duration::from_secs(10)).is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
                let output = self.1.lock().unwrap_or_else(|e| e.into_inner()).clone();
                kill_envoy(&output);
            }
        }
    }
}
