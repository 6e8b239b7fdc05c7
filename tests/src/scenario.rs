//! Running one rig scenario: build (once per process), boot L1 in QEMU via run.sh, collect lines.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::console_file::{parse_files, save_files, ConsoleFile};
use crate::dmabuf_log::{parse_exports, DmabufExport};
use crate::error::tail;
use crate::facts::{l2_problems, vmm_run_problems};
use crate::paths::{logs_dir, rig_script, workspace_root};
use crate::relay::{l2_console, parse_l2_lines};
use crate::result_line::{parse_lines, LineKind, ResultLine};
use crate::shm::{Fill, ShmFile};
use crate::RigError;

/// Default time QEMU may run for one scenario.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Extra time the harness' watchdog gives run.sh beyond the scenario timeout.
const WATCHDOG_GRACE: Duration = Duration::from_secs(30);
/// run.sh's exit status when QEMU was killed at the timeout, or stopped for a silent L1, before L1
/// reported a result.
const RUN_SH_TIMED_OUT: i32 = 4;
/// Runs of a scenario whose L1 hangs (no result before the timeout) before it is an error.
const HUNG_ATTEMPTS: u32 = 2;
/// How long the harness waits for another process' rig run (run.sh's machine-wide lock).
const LOCK_WAIT_MAX: Duration = Duration::from_secs(30 * 60);

/// One QEMU at a time in this process (run.sh also locks machine-wide).
static RUN_LOCK: Mutex<()> = Mutex::new(());
static BUILT: AtomicBool = AtomicBool::new(false);
static KERNEL_BUILT: AtomicBool = AtomicBool::new(false);

/// The kernel L1 boots (run.sh `--l1-kernel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L1Kernel {
    /// Debian's kernel (`target/rig/vmlinuz`); L1's init loads the KVM/VFIO modules.
    #[default]
    Debian,
    /// The same source built by `resources/rig/build-kernel.sh` with IOMMUFD and the VFIO device
    /// cdev, everything built in (`target/rig/kernel-iommufd/bzImage`).
    Iommufd,
}

impl L1Kernel {
    /// run.sh's name for it.
    pub fn name(self) -> &'static str {
        match self {
            L1Kernel::Debian => "debian",
            L1Kernel::Iommufd => "iommufd",
        }
    }
}

/// The kernel L2 boots (run.sh `--l2-kernel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L2Kernel {
    /// Debian's kernel (`/rig/l2/vmlinuz` in L1); L2 programs load their modules.
    #[default]
    Debian,
    /// build-kernel.sh's kernel (the iommufd L1 kernel, which also has the vfio noiommu mode and
    /// the virtio-gpu DRM driver built in), appended to L1's initramfs as `/rig/l2/vmlinuz-rig`.
    Rig,
}

/// L1's CPU model in QEMU (run.sh `--l1-cpu`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L1Cpu {
    /// `-cpu EPYC,+svm,+npt`: AMD family 0x17 (Zen).
    #[default]
    Zen,
    /// `-cpu EPYC,family=22,+svm,+npt`: AMD family 0x16, not a Zen. The console log is
    /// `target/rig/logs/<scenario>-nonzen.log`, the files go to `.../<scenario>-nonzen/`.
    NonZen,
}

impl L1Cpu {
    /// run.sh's name for it.
    pub fn name(self) -> &'static str {
        match self {
            L1Cpu::Zen => "zen",
            L1Cpu::NonZen => "nonzen",
        }
    }

    /// Suffix of the log file and files directory names.
    fn suffix(self) -> &'static str {
        match self {
            L1Cpu::Zen => "",
            L1Cpu::NonZen => "-nonzen",
        }
    }
}

/// The vmm's error reports in a console log, each with the lines that follow it (a KVM error's
/// register dump), so a failure in CI shows why the vmm stopped without the log file.
fn vmm_error_excerpt(log: &str) -> String {
    const FOLLOWING: usize = 4;
    let lines: Vec<&str> = log.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("vmm: KVM error:") || line.contains("vmm: error:") {
            for l in &lines[i..(i + 1 + FOLLOWING).min(lines.len())] {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// A scenario to run in the rig: `resources/rig/scenarios/<name>.sh` inside L1.
pub struct Scenario {
    name: String,
    timeout: Duration,
    fill: Option<Fill>,
    edu: bool,
    e1000e: bool,
    xhci: bool,
    l1_kernel: L1Kernel,
    l2_kernel: L2Kernel,
    l1_cpu: L1Cpu,
    bench: bool,
    l0_root: bool,
    vnc_clients: bool,
    weston_root: bool,
    silent: Option<Duration>,
    retry_hung: bool,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario's (last) `RIG-RESULT` line.
    pub result: ResultLine,
    /// Its `RIG-DATA` lines, in order.
    pub data: Vec<ResultLine>,
    /// The whole console output (also in `log_path`).
    pub log: String,
    /// `target/rig/logs/<scenario>.log`.
    pub log_path: PathBuf,
    /// The ivshmem backing file's 16 MiB after the run.
    pub shm_after: Vec<u8>,
    /// The inner guest's (L2's) own `RIG-RESULT`/`RIG-DATA` lines, relayed on the console by
    /// `rig_run_vmm` as `L2| <uptime> <line>`, with their original keys, in order.
    pub l2: Vec<ResultLine>,
    /// Files the scenario sent over the console (`rig_send_file`), saved under
    /// `target/rig/logs/<scenario>/`, in the order sent.
    pub files: Vec<ConsoleFile>,
    /// One message per file that did not arrive intact (truncated, garbled, wrong checksum).
    pub file_errors: Vec<String>,
}

impl Outcome {
    /// Prints L2's result lines and the scenario's result, then panics with the failure
    /// reason, the vmm's error and the console log's path unless the scenario passed, i.e. it
    /// could run and report its facts. Whether the facts are right is for the test to check.
    pub fn assert_passed(&self) {
        for d in &self.l2 {
            println!("L2: {d}");
        }
        let r = &self.result;
        println!("{r}");
        assert!(
            r.is_pass(),
            "{r}\n(reason {:?}, vmm_error {:?})\n{}log: {}",
            r.reason(),
            r.get("vmm_error"),
            vmm_error_excerpt(&self.log),
            self.log_path.display()
        );
    }

    /// Panics unless the vmm run the scenario reported exited 0 after L2 reached its init,
    /// without a KVM error ([`vmm_run_problems`]); the message lists each wrong fact, the result
    /// line and the console log's path.
    pub fn assert_vmm_ran_clean(&self) {
        let bad = vmm_run_problems(&self.result);
        assert!(
            bad.is_empty(),
            "the vmm run went wrong:\n  {}\n{}\nlog: {}",
            bad.join("\n  "),
            self.result,
            self.log_path.display()
        );
    }

    /// Panics unless L2's program `program` reported PASS and no L2 program reported FAIL
    /// ([`l2_problems`]); returns `program`'s result line.
    pub fn assert_l2_passed(&self, program: &str) -> &ResultLine {
        let bad = l2_problems(&self.l2, program);
        assert!(
            bad.is_empty(),
            "L2's programs:\n  {}\n{}\nlog: {}",
            bad.join("\n  "),
            self.result,
            self.log_path.display()
        );
        self.l2_result(program)
            .unwrap_or_else(|| panic!("no result line from L2's {program}"))
    }

    /// The first `RIG-DATA` value for `key`.
    pub fn data_value(&self, key: &str) -> Option<&str> {
        self.data.iter().find_map(|d| d.get(key))
    }

    /// L2's last `RIG-RESULT` line of L2 program `scenario` (e.g. `bar-pattern`).
    pub fn l2_result(&self, scenario: &str) -> Option<&ResultLine> {
        self.l2
            .iter()
            .rfind(|l| l.kind == LineKind::Result && l.scenario() == scenario)
    }

    /// L2's `RIG-DATA` lines of L2 program `scenario`, in order.
    pub fn l2_data<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a ResultLine> + 'a {
        self.l2
            .iter()
            .filter(move |l| l.kind == LineKind::Data && l.scenario() == scenario)
    }

    /// Every line the vmm run printed (L2's console and the vmm's own log), as relayed by
    /// `rig_run_vmm`, without the `L2| <uptime> ` prefix.
    pub fn vmm_output(&self) -> impl Iterator<Item = &str> {
        l2_console(&self.log)
    }

    /// The dma-bufs the vmm logged as exported (its `dma-buf fdinfo` lines), in order.
    pub fn dmabuf_exports(&self) -> Vec<DmabufExport> {
        parse_exports(self.vmm_output())
    }

    /// The files sent over the console whose name starts with `prefix`, in the order sent.
    pub fn files_named<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a ConsoleFile> + 'a {
        self.files
            .iter()
            .filter(move |f| f.name.starts_with(prefix))
    }
}

impl Scenario {
    /// A run of scenario `name` with the default timeout, a zeroed shm file and none of the
    /// optional devices (`edu`, `e1000e`, `xhci`).
    pub fn new(name: &str) -> Self {
        Scenario {
            name: name.to_string(),
            timeout: DEFAULT_TIMEOUT,
            fill: None,
            edu: false,
            e1000e: false,
            xhci: false,
            l1_kernel: L1Kernel::Debian,
            l2_kernel: L2Kernel::Debian,
            l1_cpu: L1Cpu::Zen,
            bench: false,
            l0_root: false,
            vnc_clients: false,
            weston_root: false,
            silent: None,
            retry_hung: true,
        }
    }

    /// How long QEMU may run (whole seconds; rounded up).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fills the 16 MiB ivshmem backing file before the run (it starts zeroed).
    pub fn shm_fill(mut self, fill: impl FnOnce(&mut [u8]) + Send + 'static) -> Self {
        self.fill = Some(Box::new(fill));
        self
    }

    /// Adds QEMU's `edu` device to L1.
    pub fn edu(mut self, edu: bool) -> Self {
        self.edu = edu;
        self
    }

    /// Adds QEMU's `e1000e` NIC to L1 (run.sh `--e1000e`).
    pub fn e1000e(mut self, e1000e: bool) -> Self {
        self.e1000e = e1000e;
        self
    }

    /// Adds an MSI-only `nec-usb-xhci` controller with a USB keyboard to L1 (run.sh `--xhci`).
    pub fn xhci(mut self, xhci: bool) -> Self {
        self.xhci = xhci;
        self
    }

    /// Boots L1 with `kernel` (run.sh `--l1-kernel`). `L1Kernel::Iommufd` builds it with
    /// build-kernel.sh first (once per process; cached on disk; skipped with `RIG_SKIP_BUILD=1`).
    pub fn l1_kernel(mut self, kernel: L1Kernel) -> Self {
        self.l1_kernel = kernel;
        self
    }

    /// Boots L2 with `kernel` (run.sh `--l2-kernel`). `L2Kernel::Rig` builds it with
    /// build-kernel.sh first (once per process; cached on disk; skipped with `RIG_SKIP_BUILD=1`).
    pub fn l2_kernel(mut self, kernel: L2Kernel) -> Self {
        self.l2_kernel = kernel;
        self
    }

    /// L1's CPU model (run.sh `--l1-cpu`).
    pub fn l1_cpu(mut self, cpu: L1Cpu) -> Self {
        self.l1_cpu = cpu;
        self
    }

    /// Boots L1 with this machine's QEMU in its initramfs (run.sh `--bench`), built by
    /// bench-image.sh before the run (skipped with `RIG_SKIP_BUILD=1`).
    pub fn bench(mut self, bench: bool) -> Self {
        self.bench = bench;
        self
    }

    /// Gives L1 this machine's root directory, read-only over virtio-9p, at `/l0` (run.sh
    /// `--l0-root`; lib.sh's `rig_l0` runs L0's programs in a chroot of it).
    pub fn l0_root(mut self, l0_root: bool) -> Self {
        self.l0_root = l0_root;
        self
    }

    /// Runs `resources/rig/vnc-clients.sh` before the run (skipped with `RIG_SKIP_BUILD=1`): checks
    /// L0's VNC clients and unpacks vncdotool's wheel into `target/rig/vncdotool/` for `rig_l0`.
    pub fn vnc_clients(mut self, vnc_clients: bool) -> Self {
        self.vnc_clients = vnc_clients;
        self
    }

    /// Runs `resources/rig/weston-root.sh` before the run (skipped with `RIG_SKIP_BUILD=1`): the
    /// Debian 13 root with weston in `target/rig/weston-root/` that lib.sh's `rig_weston_*` run in
    /// a chroot inside L1 (needs `l0_root`).
    pub fn weston_root(mut self, weston_root: bool) -> Self {
        self.weston_root = weston_root;
        self
    }

    /// How long L1 may go without a heartbeat before run.sh sends it an NMI and, still silent,
    /// stops QEMU (run.sh `--silent`, whole seconds, at least 10; run.sh's default otherwise).
    pub fn silent(mut self, silent: Duration) -> Self {
        self.silent = Some(silent);
        self
    }

    /// Whether a run whose L1 hung is run once more (the default) or reported at once.
    pub fn retry_hung(mut self, retry: bool) -> Self {
        self.retry_hung = retry;
        self
    }

    /// `target/rig/logs/<scenario>.silent.log`: what run.sh saw of a silent L1 (its CPU's state,
    /// the NMI, whether its heartbeat came back); absent when L1 never went silent.
    pub fn silent_log_path(&self) -> PathBuf {
        logs_dir().join(format!("{}{}.silent.log", self.name, self.l1_cpu.suffix()))
    }

    /// run.sh's command line for this scenario.
    fn command(&self, secs: u64, shm: &Path) -> Command {
        let mut cmd = Command::new(rig_script("run.sh"));
        cmd.arg(&self.name)
            .arg("--timeout")
            .arg(secs.max(1).to_string())
            .arg("--shm")
            .arg(shm);
        if self.edu {
            cmd.arg("--edu");
        }
        if self.e1000e {
            cmd.arg("--e1000e");
        }
        if self.xhci {
            cmd.arg("--xhci");
        }
        if self.l1_kernel != L1Kernel::Debian {
            cmd.arg("--l1-kernel").arg(self.l1_kernel.name());
        }
        if self.l2_kernel == L2Kernel::Rig {
            cmd.arg("--l2-kernel").arg("rig");
        }
        if self.l1_cpu != L1Cpu::Zen {
            cmd.arg("--l1-cpu").arg(self.l1_cpu.name());
        }
        if self.bench {
            cmd.arg("--bench");
        }
        if self.l0_root {
            cmd.arg("--l0-root");
        }
        if let Some(silent) = self.silent {
            cmd.arg("--silent").arg(silent.as_secs().to_string());
        }
        cmd
    }

    /// Builds the rig (once per process; skipped with `RIG_SKIP_BUILD=1`), runs the scenario and
    /// returns its lines. A scenario that reports FAIL is an `Ok` outcome; no result line is an error.
    /// A run whose L1 hung (QEMU killed at the timeout or stopped for a silent L1, no result) is run
    /// once more, saying so, unless `retry_hung(false)`.
    pub fn run(mut self) -> Result<Outcome, RigError> {
        let _guard = RUN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if !in_path("qemu-system-x86_64") {
            return Err(RigError::QemuMissing);
        }
        if !BUILT.load(Ordering::Acquire) && std::env::var_os("RIG_SKIP_BUILD").is_none() {
            build("build.sh")?;
            BUILT.store(true, Ordering::Release);
        }
        if (self.l1_kernel == L1Kernel::Iommufd || self.l2_kernel == L2Kernel::Rig)
            && !KERNEL_BUILT.load(Ordering::Acquire)
            && std::env::var_os("RIG_SKIP_BUILD").is_none()
        {
            build("build-kernel.sh")?;
            KERNEL_BUILT.store(true, Ordering::Release);
        }
        // Seconds: it repacks QEMU and appends it to the L1 image build.sh made.
        if self.bench && std::env::var_os("RIG_SKIP_BUILD").is_none() {
            build("bench-image.sh")?;
        }
        // Seconds once cached (the first time it downloads vncdotool's wheel).
        if self.vnc_clients && std::env::var_os("RIG_SKIP_BUILD").is_none() {
            build("vnc-clients.sh")?;
        }
        // About 25 s the first time (download and unpack), a second once built.
        if self.weston_root && std::env::var_os("RIG_SKIP_BUILD").is_none() {
            build("weston-root.sh")?;
        }
        let shm_contents = ShmFile::contents(self.fill.take());
        let secs = self.timeout.as_secs() + u64::from(self.timeout.subsec_nanos() > 0);
        let log_name = format!("{}{}", self.name, self.l1_cpu.suffix());
        let log_path = logs_dir().join(format!("{log_name}.log"));
        let mut attempt = 1;
        let (shm, console, status) = loop {
            let shm = ShmFile::create(&self.name, &shm_contents)?;

            let cmd = self.command(secs, shm.path());
            let (console, status) = stream(
                cmd,
                &self.name,
                Duration::from_secs(secs) + WATCHDOG_GRACE,
                &log_path,
            )?;
            if self.retry_hung && attempt < HUNG_ATTEMPTS && l1_hung(&status) {
                // L1 gave nothing before the timeout: the emulator hung (TCG, nested). A vmm that
                // hangs inside L1 does not get here: rig_run_vmm's own timeout ends it and the
                // scenario reports that. Keep the log of the hung run and go once more.
                let hung = logs_dir().join(format!("{log_name}.hung-{attempt}.log"));
                let _ = std::fs::rename(&log_path, &hung);
                let _ = std::fs::rename(
                    self.silent_log_path(),
                    logs_dir().join(format!("{log_name}.hung-{attempt}.silent.log")),
                );
                eprintln!(
                    "rig-tests: scenario {}: no result, QEMU killed at the {secs} s timeout or \
                     stopped for a silent L1 (L1 hung); its log is {}; running it once more",
                    self.name,
                    hung.display()
                );
                attempt += 1;
                continue;
            }
            break (shm, console, format!("run.sh {status}"));
        };

        let (lines, bad) = parse_lines(&console);
        for (line, err) in bad {
            eprintln!("rig-tests: malformed rig line ({err}): {line}");
        }
        let mine = |l: &&ResultLine| l.scenario() == self.name;
        let result = lines
            .iter()
            .filter(mine)
            .rfind(|l| l.kind == LineKind::Result)
            .cloned()
            .ok_or_else(|| RigError::NoResult {
                scenario: self.name.clone(),
                why: status.clone(),
                log: log_path.clone(),
                tail: tail(&console, 30),
            })?;
        let data = lines
            .iter()
            .filter(mine)
            .filter(|l| l.kind == LineKind::Data)
            .cloned()
            .collect();
        let shm_after = shm.read()?;
        let l2 = parse_l2_lines(&console);
        let (received, file_errors) = parse_files(&console, &self.name);
        for e in &file_errors {
            eprintln!("rig-tests: file from the console: {e}");
        }
        let files_dir = logs_dir().join(&log_name);
        let files = save_files(received, &files_dir)
            .map_err(|e| RigError::io(format!("save files in {}", files_dir.display()), e))?;
        Ok(Outcome {
            result,
            data,
            log: console,
            log_path,
            shm_after,
            l2,
            files,
            file_errors,
        })
    }
}

/// True when run.sh says QEMU was killed at the timeout, or stopped because L1 went silent, before
/// L1 reported a result.
fn l1_hung(status: &ExitStatus) -> bool {
    status.code() == Some(RUN_SH_TIMED_OUT)
}

/// Runs `resources/rig/<script>` (build.sh, build-kernel.sh) with its output in
/// `target/rig/logs/<script without .sh>.log`, echoing the script's own messages (`rig-...:` lines
/// on stderr: steps, downloads, build-kernel.sh's progress) as they come.
fn build(script: &str) -> Result<(), RigError> {
    let logs = logs_dir();
    std::fs::create_dir_all(&logs)
        .map_err(|e| RigError::io(format!("create {}", logs.display()), e))?;
    let log = logs.join(format!("{}.log", script.trim_end_matches(".sh")));
    eprintln!("rig-tests: resources/rig/{script} (log: {})", log.display());
    let started = Instant::now();
    let mut child = Command::new(rig_script(script))
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RigError::io(format!("run resources/rig/{script}"), e))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RigError::io(
            format!("resources/rig/{script} pipes"),
            std::io::ErrorKind::BrokenPipe.into(),
        ));
    };
    let out_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = BufReader::new(stdout).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let mut err_text = String::new();
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut buf) {
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        if line.starts_with("rig-") {
            eprint!("  {line}");
        }
        err_text.push_str(&line);
        buf.clear();
    }
    let status = child
        .wait()
        .map_err(|e| RigError::io(format!("wait for resources/rig/{script}"), e))?;
    let mut text = out_reader.join().unwrap_or_default();
    text.push_str(&err_text);
    std::fs::write(&log, &text).map_err(|e| RigError::io(format!("write {}", log.display()), e))?;
    if !status.success() {
        return Err(RigError::Build {
            script: script.to_string(),
            status: status.to_string(),
            log,
            tail: tail(&text, 25),
        });
    }
    eprintln!(
        "rig-tests: {script} done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

enum Event {
    /// run.sh got the machine-wide lock and started QEMU.
    Started,
    /// run.sh's stdout closed.
    Done,
}

/// Spawns run.sh in its own process group, echoes its console (stdout) and messages (stderr)
/// line by line to stderr as they come, kills the group if it outlives `limit` after starting.
/// Returns the console text and a description of how run.sh ended.
fn stream(
    mut cmd: Command,
    scenario: &str,
    limit: Duration,
    log_path: &Path,
) -> Result<(String, ExitStatus), RigError> {
    cmd.current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| RigError::io("run resources/rig/run.sh", e))?;
    let pid = child.id();
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => (o, e),
        _ => {
            return Err(RigError::io(
                "run.sh pipes",
                std::io::ErrorKind::BrokenPipe.into(),
            ))
        }
    };

    let (tx, rx) = mpsc::channel::<Event>();
    let killed = std::sync::Arc::new(AtomicBool::new(false));
    let watchdog = {
        let killed = killed.clone();
        thread::spawn(move || {
            let mut deadline = Instant::now() + LOCK_WAIT_MAX;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Event::Started) => deadline = Instant::now() + limit,
                    Ok(Event::Done) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        killed.store(true, Ordering::Release);
                        if let Ok(pgid) = libc::pid_t::try_from(pid) {
                            // SAFETY: kill(2) with a negative pid signals the process group we
                            // created for run.sh (process_group(0)); no memory is involved.
                            unsafe { libc::kill(-pgid, libc::SIGKILL) };
                        }
                        return;
                    }
                }
            }
        })
    };
    let err_reader = {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("rig-run: scenario ") {
                    let _ = tx.send(Event::Started);
                }
                eprintln!("{line}");
            }
        })
    };

    let started = Instant::now();
    let mut console = String::new();
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut in_file = false;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                // The base64 body of a file sent over the console is kept, not echoed.
                if line.starts_with("RIG-FILE-BEGIN ") {
                    in_file = true;
                    eprint!("{line}");
                } else if line.starts_with("RIG-FILE-END ") {
                    in_file = false;
                    eprint!("{line}");
                } else if !in_file {
                    eprint!("{line}");
                }
                console.push_str(&line);
            }
            Err(e) => {
                eprintln!("rig-tests: reading the console: {e}");
                let _ = reader.read_to_end(&mut buf);
                break;
            }
        }
    }
    let status = child.wait();
    let _ = tx.send(Event::Done);
    let _ = watchdog.join();
    let _ = err_reader.join();
    if killed.load(Ordering::Acquire) {
        return Err(RigError::Watchdog {
            scenario: scenario.to_string(),
            after: started.elapsed(),
            log: log_path.to_path_buf(),
        });
    }
    let status = status.map_err(|e| RigError::io("wait for run.sh", e))?;
    Ok((console, status))
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn the_vmm_error_excerpt_keeps_each_report_and_its_register_dump() {
        let log = "boot\nvmm: KVM error: vCPU 0: KVM_EXIT_INTERNAL_ERROR\n  rip=0x1\n  rax=0\n  cr0=1\n  cs=0x10\nlater\nL2| 3.0 vmm: error: no such file\n";
        assert_eq!(
            vmm_error_excerpt(log),
            "vmm: KVM error: vCPU 0: KVM_EXIT_INTERNAL_ERROR\n  rip=0x1\n  rax=0\n  cr0=1\n  cs=0x10\nL2| 3.0 vmm: error: no such file\n"
        );
        assert_eq!(vmm_error_excerpt("all well\n"), "");
    }

    #[test]
    fn stream_collects_the_console_and_the_exit_status() {
        let (console, status) = stream(
            sh("echo 'rig-run: scenario x' >&2; printf 'a\\r\\nRIG-RESULT scenario=x status=PASS\\r\\n'; exit 3"),
            "x",
            Duration::from_secs(30),
            Path::new("/nonexistent.log"),
        )
        .unwrap();
        assert_eq!(console, "a\r\nRIG-RESULT scenario=x status=PASS\r\n");
        assert_eq!(status.code(), Some(3), "{status}");
        assert!(!l1_hung(&status), "exit 3: QEMU ended by itself");
        let (lines, bad) = parse_lines(&console);
        assert!(bad.is_empty());
        assert!(lines[0].is_pass());
    }

    #[test]
    fn the_silence_limit_reaches_run_sh_only_when_set() {
        let args = |s: Scenario| -> Vec<String> {
            s.command(60, Path::new("/dev/shm/x"))
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let set = args(Scenario::new("x").silent(Duration::from_secs(20)));
        let at = set.iter().position(|a| a == "--silent").expect("--silent");
        assert_eq!(set[at + 1], "20");
        assert!(!args(Scenario::new("x")).iter().any(|a| a == "--silent"));
        assert!(Scenario::new("x")
            .silent_log_path()
            .ends_with("logs/x.silent.log"));
    }

    #[test]
    fn only_a_timed_out_run_counts_as_a_hung_l1() {
        let status = |code: i32| sh(&format!("exit {code}")).status().unwrap();
        assert!(l1_hung(&status(4)));
        for code in [0, 1, 2, 3] {
            assert!(!l1_hung(&status(code)), "exit {code}");
        }
    }

    #[test]
    fn watchdog_kills_the_whole_process_group() {
        let started = Instant::now();
        // The grandchild `sleep` keeps stdout open: only a group kill ends the read loop.
        let err = stream(
            sh("echo 'rig-run: scenario x' >&2; sleep 20 & wait"),
            "x",
            Duration::from_millis(300),
            Path::new("/nonexistent.log"),
        )
        .unwrap_err();
        assert!(matches!(err, RigError::Watchdog { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
