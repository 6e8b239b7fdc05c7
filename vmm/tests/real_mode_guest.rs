//! Runs tiny real-mode guests on this machine's /dev/kvm through the VMM's own VM setup, vCPU
//! threads, IoManager and event loop (this /dev/kvm can run real-mode code, not Linux).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use devices::pci::HOST_BRIDGE_VENDOR_ID;
use vm_memory::{Bytes, GuestAddress};
use vmm::event_loop::SerialInput;
use vmm::vcpu::{ExitNotifier, VmExit};
use vmm::vm::Vm;

const CODE_ADDR: u64 = 0x1000;

/// Console sink shared with the test.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn kvm_available() -> bool {
    let ok = std::path::Path::new("/dev/kvm").exists();
    if !ok {
        eprintln!("no /dev/kvm: real-mode guest not run");
    }
    ok
}

/// A console whose every write panics (a device bug on the vCPU thread that serves the exit).
struct PanickingConsole;

impl Write for PanickingConsole {
    fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
        panic!("console sink failed on purpose");
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Boots `code` in real mode at CODE_ADDR (CS = 0); returns the exit
/// reason, the console bytes and the exit counts.
fn run_real_mode(code: &[u8]) -> (VmExit, Vec<u8>, vmm::vcpu::ExitStats) {
    run_real_mode_with_input(code, None)
}

/// Same, with `input` (if any) fed to the guest's UART through the event loop.
fn run_real_mode_with_input(
    code: &[u8],
    input: Option<UnixStream>,
) -> (VmExit, Vec<u8>, vmm::vcpu::ExitStats) {
    let out = Capture::default();
    let (exit, stats) = run_real_mode_on(code, input, Box::new(out.clone()));
    let bytes = out.0.lock().unwrap().clone();
    (exit, bytes, stats)
}

/// Same, with the guest console going to `console`.
fn run_real_mode_on(
    code: &[u8],
    input: Option<UnixStream>,
    console: vmm::vm::ConsoleOut,
) -> (VmExit, vmm::vcpu::ExitStats) {
    // The configuration ports: a real-mode guest reads PCI configuration through them.
    let mut vm = Vm::new(
        64 << 20,
        vmm::memory::RamBacking::Anonymous,
        vmm::vm::PciConfigAccess::Io,
    )
    .expect("create VM");
    vm.ram()
        .memory()
        .write_slice(code, GuestAddress(CODE_ADDR))
        .unwrap();
    let exit = Arc::new(ExitNotifier::new().unwrap());
    let legacy = vm
        .add_legacy_devices(console, vmm::acpi_pm_handler(exit.clone()))
        .unwrap();
    let fds = vm.create_vcpus(1, None).unwrap();
    let mut sregs = fds[0].get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    fds[0].set_sregs(&sregs).unwrap();
    let mut regs = fds[0].get_regs().unwrap();
    regs.rip = CODE_ADDR;
    regs.rflags = 2;
    fds[0].set_regs(&regs).unwrap();

    let mut subscribers: Vec<vmm::event_loop::Subscriber> = Vec::new();
    if let Some(input) = input {
        subscribers.push(Arc::new(Mutex::new(SerialInput::new(
            input,
            legacy.serial.clone(),
        ))));
    }
    vmm::run_vcpus_until(vm, fds, legacy.reset_evt, subscribers, exit).unwrap()
}

#[test]
fn serial_output_pci_config_read_and_i8042_reset() {
    if !kvm_available() {
        return;
    }
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03,                   // mov dx, 0x3f8
        0xb0, b'H', 0xee,                   // mov al, 'H'; out dx, al
        0xb0, b'i', 0xee,                   // mov al, 'i'; out dx, al
        0xe4, 0x99, 0xee,                   // in al, 0x99 (no device: 0xff); out dx, al
        0x66, 0xb8, 0x00, 0x00, 0x00, 0x80, // mov eax, 0x8000_0000 (bus 0, slot 0, reg 0)
        0xba, 0xf8, 0x0c, 0x66, 0xef,       // mov dx, 0xcf8; out dx, eax
        0xba, 0xfc, 0x0c, 0x66, 0xed,       // mov dx, 0xcfc; in eax, dx
        0xba, 0xf8, 0x03,                   // mov dx, 0x3f8
        0xee, 0x88, 0xe0, 0xee,             // out dx, al; mov al, ah; out dx, al
        0xb0, 0xfe, 0xe6, 0x64,             // mov al, 0xfe; out 0x64, al (CPU reset)
        0xf4, 0xeb, 0xfd,                   // hlt; jmp hlt
    ];
    let (exit, out, stats) = run_real_mode(&code);
    assert_eq!(exit, VmExit::Reset);
    let mut expected = b"Hi\xff".to_vec();
    expected.extend_from_slice(&HOST_BRIDGE_VENDOR_ID.to_le_bytes());
    assert_eq!(out, expected);
    // H, i, in 0x99, 0xff, 0xcf8, 0xcfc, two vendor bytes, reset.
    assert_eq!(stats.pio.values().sum::<u64>(), 9);
    assert_eq!(stats.pio[&0x3f8], 5);
    // KVM's own counters (where the kernel has KVM_GET_STATS_FD) saw at least those exits.
    if let Some(exits) = stats.kvm.get("exits") {
        assert!(*exits >= 9, "{:?}", stats.kvm);
    }
}

/// What Linux's `poweroff` and ACPI reboot (`reboot=a`) write to the FADT's registers: the VM
/// ends as powered off or reset; other sleep states and values do not end it.
#[test]
fn acpi_sleep_control_powers_off_and_the_reset_register_resets() {
    if !kvm_available() {
        return;
    }
    #[rustfmt::skip]
    let poweroff = [
        0xba, 0x00, 0x06,       // mov dx, 0x600 (sleep control)
        0xb0, 0x14, 0xee,       // mov al, S5 << 2 (SLP_EN clear); out dx, al
        0xb0, 0x2c, 0xee,       // mov al, S3 << 2 | SLP_EN; out dx, al (not supported)
        0xba, 0x02, 0x06,       // mov dx, 0x602 (reset register)
        0xb0, 0x02, 0xee,       // mov al, 2 (not the reset value); out dx, al
        0xba, 0x00, 0x06,       // mov dx, 0x600
        0xb0, 0x34, 0xee,       // mov al, S5 << 2 | SLP_EN; out dx, al
        0xf4, 0xeb, 0xfd,       // hlt; jmp hlt
    ];
    let (exit, _, stats) = run_real_mode(&poweroff);
    assert_eq!(exit, VmExit::PowerOff);
    assert_eq!(exit.exit_code(), 0);
    assert_eq!(stats.pio[&0x600], 3);
    #[rustfmt::skip]
    let reset = [
        0xba, 0x02, 0x06,       // mov dx, 0x602
        0xb0, 0x01, 0xee,       // mov al, 1 (the FADT's RESET_VALUE); out dx, al
        0xf4, 0xeb, 0xfd,       // hlt; jmp hlt
    ];
    let (exit, _, _) = run_real_mode(&reset);
    assert_eq!(exit, VmExit::Reset);
}

#[test]
fn host_input_reaches_the_guest_through_the_event_loop() {
    if !kvm_available() {
        return;
    }
    #[rustfmt::skip]
    let code = [
        0xba, 0xfd, 0x03,       // 0:  mov dx, 0x3fd (LSR)
        0xec,                   // 3:  in al, dx
        0xa8, 0x01,             // 4:  test al, 1 (data ready)
        0x74, 0xfb,             // 6:  jz 3
        0xba, 0xf8, 0x03,       // 8:  mov dx, 0x3f8
        0xec, 0xee,             // 11: in al, dx (RBR); out dx, al (echo)
        0x3c, 0x0a,             // 13: cmp al, '\n'
        0x75, 0xef,             // 15: jne 0
        0xb0, 0xfe, 0xe6, 0x64, // 17: reset
        0xf4, 0xeb, 0xfd,       // 21: hlt; jmp hlt
    ];
    let (mut host, guest_side) = UnixStream::pair().unwrap();
    host.write_all(b"echo me\n").unwrap();
    let (exit, out, _) = run_real_mode_with_input(&code, Some(guest_side));
    assert_eq!(exit, VmExit::Reset);
    assert_eq!(out, b"echo me\n");
}

/// A panic on a vCPU thread (here in the serial device, while serving the guest's OUT) ends
/// the VM with an error naming the vCPU, instead of leaving the event loop waiting forever.
#[test]
fn a_panic_on_a_vcpu_thread_ends_the_vm_with_an_error() {
    if !kvm_available() {
        return;
    }
    #[rustfmt::skip]
    let code = [
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8
        0xb0, b'!', 0xee,       // mov al, '!'; out dx, al
        0xf4, 0xeb, 0xfd,       // hlt; jmp hlt
    ];
    // The VMM runs on its own thread so that a hang fails the test instead of blocking it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (exit, _) = run_real_mode_on(&code, None, Box::new(PanickingConsole));
        let _ = tx.send(exit);
    });
    let exit = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the VMM still waits after its vCPU thread panicked");
    assert_eq!(exit.exit_code(), 1, "{exit:?}");
    let VmExit::VcpuPanic { id, message } = &exit else {
        panic!("not a vCPU panic: {exit:?}");
    };
    assert_eq!(*id, 0);
    assert!(
        message.contains("console sink failed on purpose"),
        "{message}"
    );
}

/// Counts the log lines (any thread) that mention port 0x9a.
struct PortLineCounter(std::sync::atomic::AtomicUsize);

impl log::Log for PortLineCounter {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.args().to_string().contains("0x9a") {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

static PORT_LINES: PortLineCounter = PortLineCounter(std::sync::atomic::AtomicUsize::new(0));

/// A guest reading a port no device claims 10000 times gets a handful of log lines for it.
/// (The only test of this binary that installs a logger.)
#[test]
fn unhandled_port_reads_log_a_handful_of_lines() {
    if !kvm_available() {
        return;
    }
    log::set_logger(&PORT_LINES).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    #[rustfmt::skip]
    let code = [
        0xb9, 0x10, 0x27,       // mov cx, 10000
        0xe4, 0x9a,             // in al, 0x9a (no device)
        0xe2, 0xfc,             // loop back to the in
        0xb0, 0xfe, 0xe6, 0x64, // reset
        0xf4, 0xeb, 0xfd,       // hlt; jmp hlt
    ];
    let (exit, _, stats) = run_real_mode(&code);
    assert_eq!(exit, VmExit::Reset);
    assert_eq!(stats.pio[&0x9a], 10000);
    let lines = PORT_LINES.0.load(std::sync::atomic::Ordering::Relaxed);
    assert!(lines <= 4, "{lines} lines for 10000 unhandled reads");
}
