//! Running a scenario as several generator processes whose figures are summed.
//!
//! The parent re-runs its own binary with `--shard i/n` added. A child sets up (connects, when the
//! scenario connects before measuring), prints `READY`, and waits for `GO` on stdin, so all shards
//! start together and the parent can take "before" readings in between. Each answer of a child is
//! one `PART key=value …` line; the parent may send further commands (`CHECK`), and closing a
//! child's stdin ends it. Children print nothing else on stdout (diagnostics go to stderr).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// `--shard i/n`.
#[derive(Debug, Clone, Copy)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (i, n) = s.split_once('/').context("--shard wants i/n")?;
        let (index, count) = (i.parse()?, n.parse()?);
        anyhow::ensure!(count > 0 && index < count, "--shard {s}: need 0 <= i < n");
        Ok(Self { index, count })
    }

    /// The global connection numbers this shard owns.
    pub fn conns(&self, total: usize) -> impl Iterator<Item = usize> + use<> {
        (self.index..total).step_by(self.count)
    }
}

/// One `PART` line as key/value pairs.
pub type Part = HashMap<String, String>;

pub fn parse_part(line: &str) -> Part {
    line.split_whitespace().skip(1).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

pub fn get<T: std::str::FromStr>(p: &Part, key: &str) -> anyhow::Result<T> {
    p.get(key)
        .with_context(|| format!("a shard did not report {key}"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad {key}"))
}

/// CPU use over all shards: the servers and the machine as shard 0 saw them (the windows of the
/// shards nearly coincide), the generator summed over the shards.
pub fn merge_cpu(parts: &[Part]) -> anyhow::Result<crate::procfs::CpuUse> {
    let mut generator = 0.0;
    for p in parts {
        generator += get::<f64>(p, "gen_cores")?;
    }
    Ok(crate::procfs::CpuUse {
        server: get(&parts[0], "server_cores")?,
        generator,
        machine: get(&parts[0], "machine_cores")?,
    })
}

/// The child processes of one scenario.
pub struct Shards {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    lines: mpsc::Receiver<(usize, Option<String>)>,
    timeout: Duration,
}

impl Shards {
    /// Starts `n` copies of this binary with the current arguments plus `--shard i/n` and waits
    /// until every one is `READY`.
    pub fn start(n: usize, timeout: Duration) -> anyhow::Result<Self> {
        Self::start_niced(n, timeout, 0)
    }

    /// [`start`](Self::start) with the children at `nice` (through `nice(1)` when above 0), so a
    /// generator that needs most of the machine cannot starve the servers it measures.
    pub fn start_niced(n: usize, timeout: Duration, nice: u8) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (tx, rx) = mpsc::channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for i in 0..n {
            let mut command = if nice > 0 {
                let mut c = Command::new("nice");
                c.arg("-n").arg(nice.to_string()).arg(&exe);
                c
            } else {
                Command::new(&exe)
            };
            let mut child = command
                .args(&args)
                .arg("--shard")
                .arg(format!("{i}/{n}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting a generator process")?;
            stdins.push(child.stdin.take());
            let out = child.stdout.take().expect("piped");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i, Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
            children.push(child);
        }
        let mut shards = Self { children, stdins, lines: rx, timeout };
        shards.collect("READY")?;
        Ok(shards)
    }

    /// Sends `cmd` to every child.
    pub fn send(&mut self, cmd: &str) -> anyhow::Result<()> {
        for stdin in self.stdins.iter_mut().flatten() {
            writeln!(stdin, "{cmd}")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Waits for one line starting with `what` from every child.
    pub fn collect(&mut self, what: &str) -> anyhow::Result<Vec<Part>> {
        let n = self.children.len();
        let mut got: Vec<Option<Part>> = vec![None; n];
        let deadline = std::time::Instant::now() + self.timeout;
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (i, line) =
                self.lines.recv_timeout(left).with_context(|| format!("generator processes: no {what} in time"))?;
            match line {
                None => bail!("generator process {i} exited before {what}"),
                Some(l) if l.starts_with(what) => got[i] = Some(parse_part(&l)),
                Some(l) => eprintln!("shard {i}: {l}"),
            }
        }
        Ok(got.into_iter().map(|p| p.expect("all present")).collect())
    }

    /// The children's process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Closes every child's stdin and waits for the children to exit.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.stdins.clear();
        for (i, c) in self.children.iter_mut().enumerate() {
            let status = c.wait()?;
            anyhow::ensure!(status.success(), "generator process {i} failed: {status}");
        }
        Ok(())
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The child's side of the protocol.
pub struct Ctl {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
}

impl Ctl {
    pub fn new() -> Self {
        Self { lines: tokio::io::BufReader::new(tokio::io::stdin()).lines() }
    }

    pub async fn say(&self, line: &str) -> anyhow::Result<()> {
        let mut out = tokio::io::stdout();
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
        Ok(())
    }

    /// The parent's next command; `None` once it closed our stdin.
    pub async fn next(&mut self) -> anyhow::Result<Option<String>> {
        Ok(self.lines.next_line().await?)
    }

    /// `READY`, then waits for `GO`.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        self.say("READY").await?;
        match self.next().await? {
            Some(l) if l.trim() == "GO" => Ok(()),
            other => bail!("expected GO from the parent, got {other:?}"),
        }
    }

    /// Waits until the parent closes our stdin (commands other than `expect` are errors).
    pub async fn wait_end(&mut self) -> anyhow::Result<()> {
        if let Some(l) = self.next().await? {
            bail!("unexpected command {l:?}");
        }
        Ok(())
    }
}
