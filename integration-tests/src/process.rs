//! Real daemon binaries as child processes. Daemons bind port 0 and log the address they got
//! (JSON logs), which the harness reads, so tests never guess a free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Path of a workspace binary, building it first if this test run has not.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let package = match name {
            "register" => "gw-register",
            "gateway" => "gw-gateway",
            "business-worker" => "gw-business-worker",
            other => panic!("unknown binary {other}"),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", package, "--bin", name]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of {name} failed");
    }
    path
}

/// A running daemon and everything it printed (stdout and stderr, line by line).
pub struct Daemon {
    pub child: Child,
    output: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Daemon {
    /// Starts `binary` with `args` and extra environment.
    pub fn spawn(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin_path(binary));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let (lock, cv) = &*output;
                    lock.lock().unwrap().push(line);
                    cv.notify_all();
                }
            });
        }
        Self { child, output }
    }

    /// Waits for a line satisfying `pred`; returns it.
    pub fn wait_for_line(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.output;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}; output so far:\n{}", lines.join("\n"));
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Waits for a JSON log line whose message is `message`; returns its `fields`.
    pub fn wait_for_log(&self, message: &str, timeout: Duration) -> serde_json::Value {
        let line = self.wait_for_line(timeout, message, |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["fields"]["message"] == message)
        });
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["fields"].clone()
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.0.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`, `USR1`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "process {} did not exit; output:\n{}", self.pid(), self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes a config file into a fresh temporary directory and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh, unique temporary directory for one test.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gwrs-{test}-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
