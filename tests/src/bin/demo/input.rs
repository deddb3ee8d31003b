//! What the person (or script) running the live demo asks for: single keys when stdin is a
//! terminal (read without waiting for Enter), one command per line otherwise, and SIGINT,
//! SIGTERM or SIGHUP as a request to quit. Everything arrives as an [`Event`] on one channel.

use std::io::{BufRead, IsTerminal, Read};
use std::sync::mpsc::Sender;

/// What can be done to the selected (or a named) backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answers [`crate::backends::SLOW_DELAY`] late.
    Slow,
    /// Answers 503.
    Fail,
    /// Stopped, its port refuses.
    Kill,
    /// Healthy and fast again.
    Restore,
}

/// One request from the keyboard, stdin or a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Select the backend at this index (0-based).
    Select(usize),
    /// Do this to the backend at this index, or to the selected one.
    Act(Action, Option<usize>),
    /// Stop the demo.
    Quit,
    /// A line that is no command, to show back.
    Unknown(String),
}

/// The keys' legend, as the table's last line shows it.
pub fn legend(backends: usize) -> String {
    format!(
        "keys: 1-{backends} select  s slow  f fail  k kill  r restore  q quit",
        backends = backends.max(1)
    )
}

/// The event of one key press, if it is one.
pub fn key(byte: u8, backends: usize) -> Option<Event> {
    match byte {
        b'1'..=b'9' => {
            let index = usize::from(byte - b'1');
            (index < backends).then_some(Event::Select(index))
        }
        b's' | b'S' => Some(Event::Act(Action::Slow, None)),
        b'f' | b'F' => Some(Event::Act(Action::Fail, None)),
        b'k' | b'K' => Some(Event::Act(Action::Kill, None)),
        b'r' | b'R' => Some(Event::Act(Action::Restore, None)),
        // Ctrl-C and Ctrl-D as well, for terminals that deliver them as bytes.
        b'q' | b'Q' | 0x03 | 0x04 => Some(Event::Quit),
        _ => None,
    }
}

/// The event of one command line: `quit`, a backend (its number from 1, or its name) to
/// select, or `slow|fail|kill|restore [backend]` (first letters will do). Blank lines are
/// none.
pub fn line(line: &str, names: &[String]) -> Option<Event> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let backend = |word: &str| -> Option<usize> {
        match word.parse::<usize>() {
            Ok(n) => n.checked_sub(1).filter(|i| *i < names.len()),
            Err(_) => names.iter().position(|name| name == word),
        }
    };
    let action = |word: &str| match word {
        "slow" | "s" => Some(Action::Slow),
        "fail" | "f" => Some(Action::Fail),
        "kill" | "k" => Some(Action::Kill),
        "restore" | "r" => Some(Action::Restore),
        _ => None,
    };
    let event = match words.as_slice() {
        [] => return None,
        ["quit" | "q"] => Some(Event::Quit),
        [word] => action(word)
            .map(|a| Event::Act(a, None))
            .or_else(|| backend(word).map(Event::Select)),
        [verb, target] => {
            action(verb).and_then(|a| backend(target).map(|i| Event::Act(a, Some(i))))
        }
        _ => None,
    };
    Some(event.unwrap_or_else(|| Event::Unknown(line.trim().to_owned())))
}

/// Stdin in cbreak mode (each key at once, not echoed; Ctrl-C still a signal) until dropped.
pub struct Cbreak {
    saved: libc::termios,
}

impl Cbreak {
    /// Switches stdin, a terminal, to cbreak mode.
    pub fn enter() -> Result<Self, String> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid pointer to a termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(format!(
                "tcgetattr on stdin: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut cbreak = saved;
        cbreak.c_lflag &= !(libc::ICANON | libc::ECHO);
        cbreak.c_cc[libc::VMIN] = 1;
        cbreak.c_cc[libc::VTIME] = 0;
        // SAFETY: fd 0 and a valid termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &cbreak) } != 0 {
            return Err(format!(
                "tcsetattr on stdin: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self { saved })
    }
}

impl Drop for Cbreak {
    fn drop(&mut self) {
        // SAFETY: fd 0 and the termios read from it.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

/// Reads stdin on a thread of its own and sends its events: keys when stdin is a terminal
/// (then also returns the [`Cbreak`] guard to keep while the demo runs), lines otherwise.
/// The end of a terminal's input quits; the end of piped input does not (the demo runs on
/// until `quit` or a signal).
pub fn spawn_stdin(events: Sender<Event>, names: Vec<String>) -> Result<Option<Cbreak>, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let guard = Cbreak::enter()?;
        let backends = names.len();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut byte) {
                    Ok(1) => {
                        if let Some(event) = key(byte[0], backends) {
                            if events.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    _ => {
                        let _ = events.send(Event::Quit);
                        return;
                    }
                }
            }
        });
        Ok(Some(guard))
    } else {
        std::thread::spawn(move || {
            for text in std::io::stdin().lock().lines() {
                let Ok(text) = text else { return };
                if let Some(event) = line(&text, &names) {
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(None)
    }
}

/// Sends [`Event::Quit`] on SIGINT, SIGTERM or SIGHUP, so the demo stops Envoy and restores
/// the terminal however it is asked to stop.
pub fn spawn_signals(events: Sender<Event>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    // Registered here, before the demo starts, not later on the thread.
    let (mut int, mut term, mut hup) = {
        let _guard = runtime.enter();
        let install = |kind| signal(kind).map_err(|e| format!("signal handler: {e}"));
        (
            install(SignalKind::interrupt())?,
            install(SignalKind::terminate())?,
            install(SignalKind::hangup())?,
        )
    };
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        });
        let _ = events.send(Event::Quit);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["backend_a", "backend_b", "backend_c"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn keys() {
        assert_eq!(key(b'2', 3), Some(Event::Select(1)));
        assert_eq!(key(b'4', 3), None);
        assert_eq!(key(b'k', 3), Some(Event::Act(Action::Kill, None)));
        assert_eq!(key(b'q', 3), Some(Event::Quit));
        assert_eq!(key(b'\n', 3), None);
    }

    #[test]
    fn lines() {
        let names = names();
        assert_eq!(line("  ", &names), None);
        assert_eq!(line("quit", &names), Some(Event::Quit));
        assert_eq!(line("2", &names), Some(Event::Select(1)));
        assert_eq!(line("backend_c", &names), Some(Event::Select(2)));
        assert_eq!(line("kill", &names), Some(Event::Act(Action::Kill, None)));
        assert_eq!(
            line("kill 2", &names),
            Some(Event::Act(Action::Kill, Some(1)))
        );
        assert_eq!(
            line("r backend_b", &names),
            Some(Event::Act(Action::Restore, Some(1)))
        );
        assert_eq!(
            line("kill 4", &names),
            Some(Event::Unknown("kill 4".to_owned()))
        );
        assert_eq!(
            line("dance", &names),
            Some(Event::Unknown("dance".to_owned()))
        );
    }
}
