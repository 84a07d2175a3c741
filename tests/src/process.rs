//! Child processes owned by a test: output goes to a log file, the process is killed when its
//! handle drops, and when a test is failing (the thread is panicking) the log's tail is printed so
//! the failure explains itself.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting or stopping a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("creating log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How a child relates to the process that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed when the handle drops (tests).
    Owned,
    /// Survives its starter in its own process group (`make cluster`); stopped by PID later.
    Detached,
}

/// A running child process with its log file.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    lifetime: Lifetime,
}

impl ManagedProcess {
    /// Starts `cmd` with stdout and stderr appended to `log_path`.
    pub fn spawn(
        name: impl Into<String>,
        mut cmd: Command,
        log_path: &Path,
        lifetime: Lifetime,
    ) -> Result<Self, ProcessError> {
        let name = name.into();
        let log = File::create(log_path).map_err(|source| ProcessError::Log {
            path: log_path.to_owned(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| ProcessError::Log {
            path: log_path.to_owned(),
            source,
        })?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        Self::start(name, cmd, log_path, lifetime)
    }

    /// Starts `cmd` with its stdout and stderr as pipes for the caller, who writes them to
    /// `log_path` in a format of its own (the process kubelet timestamps every line).
    pub fn spawn_piped(
        name: impl Into<String>,
        mut cmd: Command,
        log_path: &Path,
        lifetime: Lifetime,
    ) -> Result<(Self, ChildStdout, ChildStderr), ProcessError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = Self::start(name.into(), cmd, log_path, lifetime)?;
        match (process.child.stdout.take(), process.child.stderr.take()) {
            (Some(out), Some(err)) => Ok((process, out, err)),
            _ => Err(ProcessError::Spawn {
                program: process.name.clone(),
                name: process.name.clone(),
                source: std::io::Error::other("stdout or stderr not piped"),
            }),
        }
    }

    fn start(
        name: String,
        mut cmd: Command,
        log_path: &Path,
        lifetime: Lifetime,
    ) -> Result<Self, ProcessError> {
        if lifetime == Lifetime::Detached {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.clone(),
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        Ok(Self {
            name,
            child,
            log_path: log_path.to_owned(),
            lifetime,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    /// Asks the process to stop (SIGTERM), repeats the request halfway through `grace` (a second
    /// SIGTERM makes Kubernetes components skip their graceful path), then kills it.
    pub fn stop(&mut self, grace: Duration) {
        for _ in 0..2 {
            if self.exited().is_some() {
                return;
            }
            terminate(self.child.id());
            let deadline = Instant::now() + grace / 2;
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if self.lifetime == Lifetime::Detached {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}), last lines ----\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(60)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `pid` through kill(1); the workspace forbids the unsafe libc call.
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Whether a process with this PID exists.
pub fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// The last `lines` lines of a text file, or a note that it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
