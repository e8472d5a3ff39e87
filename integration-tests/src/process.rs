//! Real daemon binaries as child processes. Daemons bind port 0 and log the address they got
//! (JSON logs), which the harness reads, so tests never guess a free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Path of a workspace binary, freshly built: `cargo test -p gw-integration-tests` does not
/// rebuild other packages' binaries, so the first use in a test process runs `cargo build` for it
/// (a no-op when it is up to date).
pub fn bin_path(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let package = match name {
            "register" => "gw-register",
            "gateway" => "gw-gateway",
            // The stock worker ships the chat app, so it is built by the chat demo's package.
            "business-worker" => "gw-chat-demo",
            "gatewayrs" => "gatewayrs",
            "chat-web" => "gw-chat-demo",
            "http-api" => "gw-http-api",
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
        built.push(name.to_string());
    }
    path
}

/// A thread appending each line of `pipe` to `output` and waking its waiters.
fn collect_lines(
    pipe: impl std::io::Read + Send + 'static,
    output: Arc<(Mutex<Vec<String>>, Condvar)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let (lock, cv) = &*output;
            lock.lock().unwrap().push(line);
            cv.notify_all();
        }
    })
}

/// A running daemon and everything it printed (stdout and stderr, line by line).
pub struct Daemon {
    /// The process.
    pub child: Child,
    output: Arc<(Mutex<Vec<String>>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `binary` with `args` and extra environment.
    pub fn spawn(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_exe(&bin_path(binary), args, env)
    }

    /// Starts the executable at `exe`.
    pub fn spawn_exe(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let binary = exe.display().to_string();
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Each daemon gets its own pid/log/socket directory unless the test chose one.
        if !env.iter().any(|(k, _)| *k == "GW_RUN_DIR") {
            cmd.env("GW_RUN_DIR", temp_dir("run"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::from_command(cmd, &binary)
    }

    /// Starts the executable at `exe` in the working directory `dir`.
    pub fn spawn_exe_in(exe: &Path, args: &[&str], dir: &Path) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Self::from_command(cmd, &exe.display().to_string())
    }

    fn from_command(mut cmd: Command, binary: &str) -> Self {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(collect_lines(pipe, output.clone()));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(collect_lines(pipe, output.clone()));
        }
        Self { child, output, readers }
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

    /// Its process id.
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
                // Let the readers take in everything the process printed (bounded: a child of
                // the process may still hold the pipe).
                let until = Instant::now() + Duration::from_secs(2);
                while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
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

/// Sends a signal by name to any pid.
pub fn signal_pid(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// What a CLI invocation printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a CLI command of a binary to completion.
///
/// A binary a test has just copied can be "busy" (ETXTBSY) for a moment: another test thread
/// that forks between the copy's open and close hands the write descriptor to its child until
/// that child execs. The spawn is retried for up to 5 s while that is the error.
pub fn cli(exe: &Path, args: &[&str]) -> CliOutput {
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        match Command::new(exe).args(args).stdin(Stdio::null()).output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => break result.unwrap_or_else(|e| panic!("run {}: {e}", exe.display())),
        }
    };
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The pids of the worker processes of the business-worker master `name`, from its `status`.
pub fn worker_pids(exe: &Path, config: &str, name: &str) -> Vec<u32> {
    let row = format!(" {name}-");
    cli(exe, &["--config", config, "status"])
        .stdout
        .lines()
        .filter(|l| l.contains(&row))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Runs `reload` of the business-worker master `name` and checks it replaced every worker process;
/// returns the new processes' pids.
pub fn reload_every_process(exe: &Path, config: &str, name: &str) -> Vec<u32> {
    let old = worker_pids(exe, config, name);
    let out = cli(exe, &["--config", config, "reload"]);
    assert_eq!(out.code, Some(0), "reload: {}", out.text());
    assert!(out.stdout.contains("reload complete"), "{}", out.stdout);
    let new = worker_pids(exe, config, name);
    assert_eq!(new.len(), old.len(), "as many worker processes as before: {old:?} -> {new:?}");
    assert!(new.iter().all(|p| !old.contains(p)), "reload replaced every process: {old:?} -> {new:?}");
    new
}

/// A string field of a JSON log line (`fields.KEY`).
pub fn log_field(json_line: &str, key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap_or_else(|e| panic!("{e}: {json_line}"));
    v["fields"][key].as_str().unwrap_or_else(|| panic!("no {key} in {json_line}")).to_string()
}

/// Waits for a line containing `needle` in a file (a daemon's log); returns the line.
pub fn wait_for_file_line(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {needle:?} in {}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Puts a fresh copy of the worker binary at `path` (a new inode, as a deploy would), for the
/// reload tests.
pub fn install_binary(path: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(bin_path("business-worker"), &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A business-worker master started with `start -d` from its own copy of the binary (so a test
/// can replace it and reload), running 2 processes of `app`: `(directory, binary, config path)`.
/// `extra` is more TOML appended to the config (such as an `[http_app]` section). Its `/metrics`
/// is on a port of its own, logged in `rw.log` ("serving /metrics").
pub fn start_reloadable_workers(
    test: &str,
    app: &str,
    register: std::net::SocketAddr,
    secret: &str,
    extra: &str,
) -> (PathBuf, PathBuf, String) {
    let dir = temp_dir(test);
    let bin = dir.join("business-worker");
    install_binary(&bin);
    let top = format!("name = \"rw\"\napp = \"{app}\"");
    let cfg = start_worker_master(&bin, &dir, &top, register, secret, "127.0.0.1:0", extra);
    (dir, bin, cfg)
}

/// Writes a config file into a fresh temporary directory and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `<name>.toml` in `dir` for a business-worker master of `count` echo processes named
/// `name`, linked to `register` with fast reconnects, logging JSON to `dir`, with `/metrics` on
/// `admin` (`""`: none). Returns the config path as a string, for the command line.
pub fn echo_worker_config(
    dir: &Path,
    name: &str,
    count: usize,
    secret: &str,
    register: std::net::SocketAddr,
    admin: &str,
) -> String {
    let text = format!(
        "name = \"{name}\"\napp = \"echo\"\ncount = {count}\nsecret = \"{secret}\"\nregisters = [\"{register}\"]\n\
         grace_period = \"5s\"\n[link]\nreconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n[log]\nformat = \"json\"\n\
         [process]\nrun_dir = \"{}\"\nadmin = \"{admin}\"\n",
        dir.display()
    );
    write_config(dir, &format!("{name}.toml"), &text).to_str().unwrap().to_string()
}

/// Writes the config of a business-worker master that a test runs as a daemon (fast links, JSON
/// logs, its files in `dir`), starts it with `start -d` and returns the config's path. `top` holds
/// top-level keys (`name`, `app`, …), `sections` whole sections appended at the end.
pub fn start_worker_master(
    exe: &Path,
    dir: &Path,
    top: &str,
    registers: std::net::SocketAddr,
    secret: &str,
    admin: &str,
    sections: &str,
) -> String {
    let text = format!(
        "{top}\ncount = 2\nsecret = \"{secret}\"\nregisters = [\"{registers}\"]\ngrace_period = \"5s\"\n\
         [link]\nreconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n[log]\nformat = \"json\"\n\
         [process]\nrun_dir = \"{}\"\nadmin = \"{admin}\"\n{sections}",
        dir.display()
    );
    let config = write_config(dir, "worker.toml", &text).to_str().expect("utf-8 path").to_string();
    let out = cli(exe, &["--config", &config, "start", "-d"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    config
}

/// Stops a detached daemon (`<exe> --config <config> stop`) if the test panics before stopping it
/// itself, so a failed test leaves no master and workers running. Hold it for the test's length.
pub struct StopOnPanic {
    exe: PathBuf,
    config: String,
}

impl StopOnPanic {
    /// Guards the daemon started from `exe` with `config`.
    pub fn new(exe: &Path, config: &str) -> Self {
        Self { exe: exe.to_path_buf(), config: config.to_string() }
    }
}

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = cli(&self.exe, &["--config", &self.config, "stop"]);
            eprintln!("test failed: stopped its daemon ({}): {}", self.config, out.text());
        }
    }
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

/// CPU time (user + system) a process has used so far: `"self"` or a pid, from `/proc/<p>/stat`.
pub fn cpu_time(process: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at field 3; utime and stime
    // are fields 14 and 15, in USER_HZ (100 per second on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}
