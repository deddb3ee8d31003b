//! A child process on a pseudo-terminal, as a person at a terminal runs it: its stdin,
//! stdout and stderr are the terminal, it leads a session of its own with that terminal as
//! its controlling one, and the test types keys and reads the screen's bytes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`PtyChild::stop`] waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reader may take to read what an exited child wrote last.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running child on a pseudo-terminal. Dropping it stops the child (SIGTERM by PID, then
/// SIGKILL) if it still runs.
pub struct PtyChild {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl std::fmt::Debug for PtyChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtyChild")
            .field("pid", &self.child.id())
            .field("exit", &self.exit)
            .finish()
    }
}

impl PtyChild {
    /// Spawns `command` on a new pseudo-terminal of `columns` × `rows`.
    pub fn spawn(mut command: Command, columns: u16, rows: u16) -> Result<Self, String> {
        let (master, slave) = open_pty(columns, rows)?;
        let stdio = |fd: &OwnedFd| -> Result<Stdio, String> {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| format!("dup the pty: {e}"))
        };
        command
            .stdin(stdio(&slave)?)
            .stdout(stdio(&slave)?)
            .stderr(stdio(&slave)?);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // A session of its own, with the terminal (now its stdin) as the controlling one.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("spawn {command:?}: {e}"))?;
        // The child holds the terminal side now; once it (and its children) close it, reads
        // on the master side end.
        drop(command);
        drop(slave);
        let master = File::from(master);
        let mut reading = master
            .try_clone()
            .map_err(|e| format!("dup the pty master: {e}"))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                // Linux answers EIO once no process has the terminal side open.
                while let Ok(n @ 1..) = reading.read(&mut buffer) {
                    output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(buffer.get(..n).unwrap_or_default());
                }
            })
        };
        Ok(Self {
            child,
            master,
            output,
            reader: Some(reader),
            exit: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types `bytes` on the terminal.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.master
            .write_all(bytes)
            .and_then(|()| self.master.flush())
            .map_err(|e| format!("write to the pty: {e}"))
    }

    /// Everything the child wrote to the terminal so far (lossy UTF-8, with its escapes).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits up to `within` for the child to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if self.exit.is_some() {
                return self.exit;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                self.drain();
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to [`DRAIN_TIMEOUT`]) for the reader to take the last bytes: it ends once
    /// nothing has the terminal side open any more.
    fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.reader.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
        }
    }

    /// Stops the child if it still runs: SIGTERM by PID, up to 10 s to exit, then SIGKILL.
    /// Returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            if self.wait_exit(STOP_TIMEOUT).is_none() {
                let _ = self.child.kill();
                self.exit = self.child.wait().ok();
            }
        }
        self.exit
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new pseudo-terminal pair (master, slave), both close-on-exec.
fn open_pty(columns: u16, rows: u16) -> Result<(OwnedFd, OwnedFd), String> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out-pointers; a null name and termios are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return Err(format!("openpty: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: openpty succeeded: both are open descriptors this function now owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl on an open descriptor.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(format!(
                "fcntl FD_CLOEXEC: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok((master, slave))
}
