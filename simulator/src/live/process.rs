//! Child processes of a live network, and the one harness that starts the
//! real binaries (the simulator's live mode and the end-to-end tests both
//! use it): find a binary, run its `init`, spawn it with its standard error
//! in a file, wait for the bound addresses it writes, stop it gracefully or
//! kill it when dropped.

use super::LiveError;
use grompi_ops::bound_addrs::BOUND_ADDRS_FILE;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary `name` in `dir` (`cargo build --bins` puts the workspace's
/// binaries side by side in the target directory).
pub fn find_binary(dir: &Path, name: &str) -> Result<PathBuf, LiveError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LiveError::Setup(format!(
            "{} not found; build the servers first with `cargo build --bins` \
             (same profile as this command) or pass --binaries",
            path.display()
        )))
    }
}

/// Runs `<bin> init --data-dir <data_dir>` and returns what it printed.
pub fn run_init(bin: &Path, data_dir: &Path) -> Result<String, LiveError> {
    let out = Command::new(bin)
        .arg("init")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .map_err(LiveError::io(format!("run {} init", bin.display())))?;
    if !out.status.success() {
        return Err(LiveError::Setup(format!(
            "{} init failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `order-server init` (binary `bin`) over `data_dir` and returns the
/// public key it printed (hex).
pub fn init_order_server(bin: &Path, data_dir: &Path) -> Result<String, LiveError> {
    let stdout = run_init(bin, data_dir)?;
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .map(str::to_owned)
        .ok_or_else(|| {
            LiveError::Setup(format!("order-server init printed no public_key: {stdout}"))
        })
}

/// A server process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawns `binary args...` with standard error appended to `log`.
    pub fn spawn(name: &str, binary: &Path, args: &[&str], log: &Path) -> Result<Self, LiveError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(LiveError::io(format!("open {}", log.display())))?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(LiveError::io(format!("start {}", binary.display())))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// CPU time the process has used so far (user and system, all
    /// threads), where the system tells (Linux); `None` once it exited.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.child
            .as_ref()
            .and_then(|c| cpu_time(&c.id().to_string()))
    }

    /// Resident memory of the process now, in bytes (`VmRSS`), where the
    /// system tells (Linux); `None` once it exited.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.child
            .as_ref()
            .and_then(|c| rss_bytes(&c.id().to_string()))
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file the process's standard error is appended to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn check_running(&mut self) -> Result<(), LiveError> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            return Err(LiveError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log_tail: tail(&self.log, 20),
            });
        }
        Ok(())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit;
    /// returns its exit status. On a timeout the process is left running
    /// (it is still killed when dropped).
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, LiveError> {
        let Some(child) = self.child.as_mut() else {
            return Err(LiveError::Setup(format!(
                "{} was already stopped",
                self.name
            )));
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .map_err(LiveError::io(format!("send SIGTERM to {}", self.name)))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(LiveError::io(format!("wait for {}", self.name)))?
            {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(LiveError::Timeout(format!(
                    "{} to exit after SIGTERM",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit, then
    /// kills it.
    pub fn stop(&mut self, grace: Duration) {
        if self.terminate(grace).is_err() {
            self.kill();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The addresses a server bound, from the [`BOUND_ADDRS_FILE`] it writes
/// into its data directory once its listeners are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct BoundAddrs {
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The Prometheus endpoint, if configured.
    pub metrics: Option<SocketAddr>,
}

/// Removes a server's bound addresses file left by an earlier run, so that
/// waiting after the next start reads the new addresses.
pub fn clear_bound_addrs(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(BOUND_ADDRS_FILE));
}

/// One look at `<data_dir>/bound-addrs.toml`: the addresses once it parses,
/// an error if `process` exited or `deadline` passed.
fn poll_bound_addrs(
    data_dir: &Path,
    process: &mut ServerProcess,
    deadline: Instant,
) -> Result<Option<BoundAddrs>, LiveError> {
    process.check_running()?;
    let path = data_dir.join(BOUND_ADDRS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(addrs) = toml::from_str::<BoundAddrs>(&text)
    {
        return Ok(Some(addrs));
    }
    if Instant::now() > deadline {
        return Err(LiveError::Timeout(format!(
            "{} to bind its listeners ({} never appeared)",
            process.name(),
            path.display()
        )));
    }
    Ok(None)
}

/// How often the bound addresses file is looked for.
const BOUND_POLL: Duration = Duration::from_millis(10);

/// Waits until `<data_dir>/bound-addrs.toml` appears and parses, failing
/// early if `process` exits.
pub fn wait_for_bound_addrs(
    data_dir: &Path,
    process: &mut ServerProcess,
    timeout: Duration,
) -> Result<BoundAddrs, LiveError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(addrs) = poll_bound_addrs(data_dir, process, deadline)? {
            return Ok(addrs);
        }
        std::thread::sleep(BOUND_POLL);
    }
}

/// [`wait_for_bound_addrs`] for async callers: the same check, sleeping
/// on the tokio timer between looks.
pub async fn wait_for_bound_addrs_async(
    data_dir: &Path,
    process: &mut ServerProcess,
    timeout: Duration,
) -> Result<BoundAddrs, LiveError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(addrs) = poll_bound_addrs(data_dir, process, deadline)? {
            return Ok(addrs);
        }
        tokio::time::sleep(BOUND_POLL).await;
    }
}

/// CPU time (user and system, all threads) of process `pid` (`self` for
/// this one), from `/proc/<pid>/stat`; `None` where there is no such file.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    /// The unit of `/proc/<pid>/stat` times (`USER_HZ`), fixed at 100 by
    /// Linux's ABI on every architecture it reports to user space.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields are
    // counted from the last ')'. After it: state (3), ..., utime (14),
    // stime (15).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SECOND,
    ))
}

/// Resident memory (`VmRSS`) of process `pid` (`self` for this one), in
/// bytes, from `/proc/<pid>/status`; `None` where there is no such file.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_this_process_and_grows_with_work() {
        let Some(before) = cpu_time("self") else {
            // Not Linux: nothing to read.
            return;
        };
        // Spin until the reading shows 100 ms more CPU, however busy the
        // machine (other tests share its cores): a reading that does not
        // count this thread's work never gets there within the minute.
        let start = Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after < before + Duration::from_millis(100)
            && start.elapsed() < Duration::from_secs(60)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            after = cpu_time("self").unwrap_or_default();
        }
        assert!(
            after >= before + Duration::from_millis(100),
            "{before:?} -> {after:?} after {:?} of spinning",
            start.elapsed()
        );
        assert_eq!(cpu_time("0"), None);
    }

    #[test]
    fn rss_is_read_for_this_process() {
        if cpu_time("self").is_none() {
            return;
        }
        assert!(rss_bytes("self").unwrap_or_default() > 0);
        assert_eq!(rss_bytes("0"), None);
    }
}
