//! Running a process from a test: [`run`] feeds optional stdin, reads
//! stdout and stderr on their own threads (a full pipe never blocks the
//! child), kills the child at a deadline (by its own handle) and returns a
//! [`Run`], the one result type of every test crate's process runs (exit
//! code, output, assertions on them). Prints nothing itself; [`Run::show`]
//! is for assertion messages.

use std::borrow::BorrowMut;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A finished process.
#[derive(Debug)]
pub struct Run {
    /// Its exit code; -1 when a signal ended it.
    pub code: i32,
    pub raw_stdout: Vec<u8>,
    pub raw_stderr: Vec<u8>,
    /// Stdout, lossily decoded.
    pub stdout: String,
    /// Stderr, lossily decoded.
    pub stderr: String,
    pub elapsed: Duration,
    /// It was killed at the deadline.
    pub timed_out: bool,
    /// `program args...`, shortened, for messages.
    pub what: String,
}

impl Run {
    /// Stdout as one JSON document; panics showing the output otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.raw_stdout).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not one JSON document ({e}); stderr: {}",
                self.what,
                self.stderr.trim()
            )
        })
    }

    /// Stdout then stderr.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// For assertion messages: the command, its exit, time and output.
    pub fn show(&self) -> String {
        format!(
            "`{}` exit {} in {:.2?}{}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code,
            self.elapsed,
            if self.timed_out {
                " (killed at deadline)"
            } else {
                ""
            },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }

    /// Assert the exit code.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {}", self.show());
        self
    }

    /// [`Run::assert_code`] taking and giving back the run, for chains.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        self.assert_code(code);
        self
    }

    /// Assert exit 0, for chains.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.code(0)
    }

    /// Assert stderr contains `needle` (the run in the message otherwise).
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.show()
        );
        self
    }

    /// Assert it ended by itself, not killed at the deadline.
    #[track_caller]
    pub fn finished(self) -> Self {
        assert!(!self.timed_out, "{}", self.show());
        self
    }

    /// Stdout, asserting it is UTF-8.
    #[track_caller]
    pub fn utf8_stdout(&self) -> String {
        String::from_utf8(self.raw_stdout.clone()).expect("stdout is UTF-8")
    }

    /// Stderr, asserting it is UTF-8.
    #[track_caller]
    pub fn utf8_stderr(&self) -> String {
        String::from_utf8(self.raw_stderr.clone()).expect("stderr is UTF-8")
    }

    /// Assert none of `values` appears in stdout or stderr.
    #[track_caller]
    pub fn no_values(&self, values: &[&str]) -> &Self {
        for v in values {
            assert!(
                !self.stdout.contains(v) && !self.stderr.contains(v),
                "a fixture value leaked:\n{}",
                self.show()
            );
        }
        self
    }
}

/// Run `cmd` (its program, arguments and environment as the caller set
/// them) with stdin from `input` (or `/dev/null`), killing it after
/// `deadline`. `what` names it in messages.
pub fn run(
    mut cmd: impl BorrowMut<Command>,
    deadline: Duration,
    what: &str,
    input: Option<Vec<u8>>,
) -> Run {
    let cmd = cmd.borrow_mut();
    let mut what = what.to_owned();
    if what.len() > 300 {
        let mut end = 300;
        while !what.is_char_boundary(end) {
            end -= 1;
        }
        what.truncate(end);
        what.push_str("...");
    }
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let reader = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    };
    let out_rx = reader(Box::new(child.stdout.take().expect("stdout")));
    let err_rx = reader(Box::new(child.stderr.take().expect("stderr")));
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    // A grandchild (ssh, an agent) may hold the pipes: do not wait for it forever.
    let raw_stdout = out_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let raw_stderr = err_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&raw_stdout).into_owned(),
        stderr: String::from_utf8_lossy(&raw_stderr).into_owned(),
        raw_stdout,
        raw_stderr,
        elapsed,
        timed_out,
        what,
    }
}

/// [`run`] with no stdin and a deadline no test command reaches (10 min),
/// named by its program and arguments, asserting it ended by itself with
/// exit 0 (its output in the message otherwise).
#[track_caller]
pub fn run_ok(mut cmd: impl BorrowMut<Command>) -> Run {
    let what = format!("{:?}", cmd.borrow_mut());
    run(cmd, Duration::from_secs(600), &what, None)
        .finished()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_code_and_stdin_are_kept() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo err >&2; exit 7"]);
        let ran = run(
            cmd,
            Duration::from_secs(30),
            "sh",
            Some(b"{\"a\":1}".to_vec()),
        );
        assert_eq!(ran.code, 7, "{}", ran.show());
        assert_eq!(ran.json()["a"], 1);
        assert_eq!(ran.stderr, "err\n");
        assert!(!ran.timed_out);
    }

    #[test]
    fn a_hang_is_killed_at_the_deadline() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let ran = run(cmd, Duration::from_millis(200), "sleep 30", None);
        assert!(ran.timed_out, "{}", ran.show());
        assert_eq!(ran.code, -1);
    }
}
