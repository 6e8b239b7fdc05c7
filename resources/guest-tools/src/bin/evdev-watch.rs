//! evdev-watch: prints the input events the kernel's evdev devices deliver (L2 program of the rig,
//! run by `l2/input.sh` after it loaded the stock `virtio_input` and `evdev` drivers).
//!
//! Waits (within `--secs`) until at least `--devices` `/dev/input/event<N>` nodes exist, opens
//! every one, names it (`EVIOCGNAME`) and says so:
//!
//! ```text
//! EVDEV-DEVICE dev=<N> name=<name>
//! EVDEV-READY devices=<n>
//! ```
//!
//! then prints one line per event until `--secs` have passed since the start, `--count` events
//! were seen, or (`--until-key CODE`) an `EV_KEY` release (value 0) of key CODE was seen:
//!
//! ```text
//! EVDEV dev=<N> name=<name> type=<n> code=<n> value=<n>
//! ```
//!
//! `<N>` is the node's number, names have whitespace (and `=`) replaced by `_`. With `--no-syn`
//! `EV_SYN` events are neither printed nor counted. At the end:
//! `RIG-RESULT scenario=evdev-watch status=PASS events=<n> devices=<n> stop=count|key|time secs=<s>`
//! (the event that stops the watch is printed and counted first; when it meets both `--until-key`
//! and `--count`, `stop=key`);
//! FAIL (`reason=no-devices`) only when fewer than `--devices` nodes appeared: the watch could not
//! be done. Whether the events are the right ones is for the scenario's test to say.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_tools::error::{Error, Result};
use guest_tools::report::Reporter;

#[derive(Parser, Debug, PartialEq)]
#[command(about = "Print the events of every /dev/input/event* device (rig L2 program)")]
struct Args {
    /// Watch for at most this many seconds (from the start, device wait included).
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Stop after this many events (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop once key CODE is released (an EV_KEY event with this code and value 0).
    #[arg(long, value_name = "CODE")]
    until_key: Option<u16>,
    /// Wait for at least this many event devices; fewer is a FAIL (no-devices).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Neither print nor count EV_SYN events.
    #[arg(long)]
    no_syn: bool,
    /// Scenario name in the result lines.
    #[arg(long, default_value = "evdev-watch")]
    scenario: String,
}

/// `EV_SYN`, the event type that ends a packet of events.
const EV_SYN: u16 = 0;
/// `EV_KEY`, key and button presses (value 1), releases (0) and repeats (2).
const EV_KEY: u16 = 1;
/// `sizeof(struct input_event)` on 64-bit Linux: a 16-byte timeval, type, code, value.
const EVENT_SIZE: usize = 24;
/// Bytes of the device name buffer handed to `EVIOCGNAME`.
const NAME_LEN: usize = 256;

/// `EVIOCGNAME(len)`: `_IOC(_IOC_READ, 'E', 0x06, len)`.
const fn eviocgname(len: usize) -> u64 {
    const IOC_READ: u64 = 2;
    (IOC_READ << 30) | ((len as u64) << 16) | ((b'E' as u64) << 8) | 0x06
}

/// A device name as one result-line word: whitespace and `=` become `_`, nothing left is `-`.
fn name_word(name: &str) -> String {
    let w: String = name
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '=' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if w.is_empty() {
        "-".to_string()
    } else {
        w
    }
}

/// One `struct input_event`: type, code, value (the timestamp is not printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    kind: u16,
    code: u16,
    value: i32,
}

impl Event {
    fn parse(b: &[u8; EVENT_SIZE]) -> Self {
        Event {
            kind: u16::from_ne_bytes([b[16], b[17]]),
            code: u16::from_ne_bytes([b[18], b[19]]),
            value: i32::from_ne_bytes([b[20], b[21], b[22], b[23]]),
        }
    }
}

/// Whether the watch stops after event `e`, the `events`-th counted one, and why (`stop=`).
fn stop_after(args: &Args, events: u64, e: &Event) -> Option<&'static str> {
    if args
        .until_key
        .is_some_and(|k| e.kind == EV_KEY && e.code == k && e.value == 0)
    {
        return Some("key");
    }
    if args.count > 0 && events >= args.count {
        return Some("count");
    }
    None
}

fn event_line(dev: u32, name: &str, e: &Event) -> String {
    format!(
        "EVDEV dev={dev} name={name} type={} code={} value={}",
        e.kind, e.code, e.value
    )
}

/// An open event device.
struct Device {
    index: u32,
    name: String,
    file: File,
}

/// The `/dev/input/event<N>` numbers present, sorted.
fn event_nodes(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("event")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The device's name (`EVIOCGNAME`).
fn device_name(f: &File) -> io::Result<String> {
    let mut buf = [0u8; NAME_LEN];
    // SAFETY: EVIOCGNAME(NAME_LEN) writes at most NAME_LEN bytes into `buf`, which is NAME_LEN
    // bytes long and lives across the call; `f` is an open evdev node.
    let n = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            eviocgname(NAME_LEN) as libc::c_ulong,
            buf.as_mut_ptr(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn open_devices(dir: &Path) -> Result<Vec<Device>> {
    let mut devs = Vec::new();
    for index in event_nodes(dir) {
        let path = dir.join(format!("event{index}"));
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|source| Error::Io {
                what: format!("open {}", path.display()),
                source,
            })?;
        let name = device_name(&file)
            .map(|n| name_word(&n))
            .unwrap_or_else(|_| "-".to_string());
        devs.push(Device { index, name, file });
    }
    Ok(devs)
}

/// Waits until `fds` has a readable entry or `timeout` passes; sets each entry's `revents`.
fn wait_readable(fds: &mut [libc::pollfd], timeout: Duration) -> Result<()> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs that
    // poll(2) may write `revents` into.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Error::Io {
                what: "poll /dev/input/event*".into(),
                source: e,
            });
        }
    }
    Ok(())
}

fn run(args: &Args, rep: &Reporter) -> Result<bool> {
    let start = Instant::now();
    let limit = Duration::from_secs_f64(args.secs.max(0.0));
    let dir = Path::new("/dev/input");
    while event_nodes(dir).len() < args.devices && start.elapsed() < limit {
        thread::sleep(Duration::from_millis(100));
    }
    let mut devs = open_devices(dir)?;
    for d in &devs {
        println!("EVDEV-DEVICE dev={} name={}", d.index, d.name);
    }
    println!("EVDEV-READY devices={}", devs.len());
    if devs.len() < args.devices {
        rep.result(
            false,
            &[
                ("reason", "no-devices".into()),
                ("devices", devs.len().to_string()),
                ("wanted", args.devices.to_string()),
            ],
        );
        return Ok(false);
    }

    let mut events = 0u64;
    let mut stop = "time";
    let mut buf = [0u8; EVENT_SIZE * 64];
    'watch: loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        if devs.is_empty() {
            thread::sleep(left);
            break;
        }
        let mut fds: Vec<libc::pollfd> = devs
            .iter()
            .map(|d| libc::pollfd {
                fd: d.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        wait_readable(&mut fds, left)?;
        let mut gone = Vec::new();
        for (i, p) in fds.iter().enumerate() {
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                gone.push(i);
                continue;
            }
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            let d = &mut devs[i];
            let n = match d.file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(source) => {
                    return Err(Error::Io {
                        what: format!("read /dev/input/event{}", d.index),
                        source,
                    })
                }
            };
            for chunk in buf[..n].chunks_exact(EVENT_SIZE) {
                let Ok(raw) = <&[u8; EVENT_SIZE]>::try_from(chunk) else {
                    continue;
                };
                let e = Event::parse(raw);
                if args.no_syn && e.kind == EV_SYN {
                    continue;
                }
                println!("{}", event_line(d.index, &d.name, &e));
                events += 1;
                if let Some(why) = stop_after(args, events, &e) {
                    stop = why;
                    break 'watch;
                }
            }
        }
        // A device that went away (unplugged) is dropped, the others are still watched.
        for i in gone.into_iter().rev() {
            println!("EVDEV-GONE dev={}", devs[i].index);
            devs.remove(i);
        }
    }
    rep.result(
        true,
        &[
            ("events", events.to_string()),
            ("devices", devs.len().to_string()),
            ("stop", stop.into()),
            ("secs", format!("{:.2}", start.elapsed().as_secs_f64())),
        ],
    );
    Ok(true)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    rep.finish(run(&args, &rep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_linux() {
        // EVIOCGNAME(256) as the kernel headers compute it.
        assert_eq!(eviocgname(256), 0x8100_4506);
    }

    #[test]
    fn options() {
        let a = Args::try_parse_from([
            "evdev-watch",
            "--secs=30",
            "--count=4",
            "--no-syn",
            "--devices=2",
            "--until-key=88",
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                secs: 30.0,
                count: 4,
                until_key: Some(88),
                devices: 2,
                no_syn: true,
                scenario: "evdev-watch".into(),
            }
        );
        assert!(Args::try_parse_from(["evdev-watch", "--bogus=1"]).is_err());
        assert!(Args::try_parse_from(["evdev-watch", "--until-key=KEY_F12"]).is_err());
        let a = Args::try_parse_from(["evdev-watch"]).unwrap();
        assert_eq!(a.until_key, None);
    }

    #[test]
    fn stops_on_the_release_of_the_until_key_or_at_the_count() {
        let ev = |kind, code, value| Event { kind, code, value };
        let mut a = Args::try_parse_from(["evdev-watch", "--until-key=88"]).unwrap();
        // Press and repeat of the key, another key's release, a SYN: go on.
        assert_eq!(stop_after(&a, 1, &ev(EV_KEY, 88, 1)), None);
        assert_eq!(stop_after(&a, 2, &ev(EV_KEY, 88, 2)), None);
        assert_eq!(stop_after(&a, 3, &ev(EV_KEY, 30, 0)), None);
        assert_eq!(stop_after(&a, 4, &ev(EV_SYN, 0, 0)), None);
        // The same code and value of another event type (EV_REL = 2): go on.
        assert_eq!(stop_after(&a, 5, &ev(2, 88, 0)), None);
        assert_eq!(stop_after(&a, 6, &ev(EV_KEY, 88, 0)), Some("key"));
        // With a count as well: whichever comes first; the key wins a tie.
        a.count = 3;
        assert_eq!(stop_after(&a, 2, &ev(EV_KEY, 30, 1)), None);
        assert_eq!(stop_after(&a, 3, &ev(EV_KEY, 30, 0)), Some("count"));
        assert_eq!(stop_after(&a, 1, &ev(EV_KEY, 88, 0)), Some("key"));
        assert_eq!(stop_after(&a, 3, &ev(EV_KEY, 88, 0)), Some("key"));
        // Neither option: only time ends the watch.
        let a = Args::try_parse_from(["evdev-watch"]).unwrap();
        assert_eq!(stop_after(&a, 1000, &ev(EV_KEY, 88, 0)), None);
    }

    #[test]
    fn event_lines() {
        let mut raw = [0u8; EVENT_SIZE];
        raw[16..18].copy_from_slice(&1u16.to_ne_bytes());
        raw[18..20].copy_from_slice(&30u16.to_ne_bytes());
        raw[20..24].copy_from_slice(&1i32.to_ne_bytes());
        let e = Event::parse(&raw);
        assert_eq!(
            e,
            Event {
                kind: 1,
                code: 30,
                value: 1
            }
        );
        assert_eq!(
            event_line(3, &name_word("QEMU Virtio Keyboard"), &e),
            "EVDEV dev=3 name=QEMU_Virtio_Keyboard type=1 code=30 value=1"
        );
        raw[20..24].copy_from_slice(&(-5i32).to_ne_bytes());
        assert!(event_line(0, "x", &Event::parse(&raw)).ends_with("value=-5"));
        assert_eq!(name_word(""), "-");
        assert_eq!(name_word("a=b\tc"), "a_b_c");
    }
}
