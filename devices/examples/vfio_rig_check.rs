//! Real-kernel check of `devices::pci` + `devices::vfio`, meant to run inside the rig's L1
//! (root, ivshmem and edu bound to vfio-pci, /dev/kvm):
//!
//!   vfio_rig_check error <BDF>            prints the user-facing error for a device spec
//!   vfio_rig_check run <ivshmem BDF> [<edu BDF>]
//!   vfio_rig_check msix <BDF of a device with MSI-X, e.g. virtio-rng-pci>
//!
//! `run` builds a 64 MiB KVM VM, opens the devices through `VfioPassthrough` (DMA-maps RAM),
//! puts them on a `PciBus`, checks config space and BAR sizing through `PciConfigIo`, runs a
//! 32-bit guest that reads ivshmem BAR2 (expects "L0OK" at offset 0, written by L0 into the
//! shm file), writes "L2W1" at BAR2+4, reads BAR0+8 (trapped), moves BAR2 with config writes and
//! writes "L2W2" at the new BAR2+8 (L0 checks both in the shm file), makes edu DMA a buffer
//! RAM -> device -> RAM, then drops everything. Prints RIG-DATA lines and one RIG-RESULT line.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::pci::{
    BarAllocator, BarSpace, BarWindow, KvmMsiRouter, MsiRouter, PciBus, PciConfigIo,
};
use devices::vfio::{
    DmaBufRegistry, KvmMemorySlots, VfioPassthrough, VfioPciDevice, VfioPciDeviceEnv, VfioRegionSet,
};
use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const SC: &str = "pci-vfio-check";

/// An MsiRouter that programs real KVM GSI routes but, instead of handing the eventfds to KVM,
/// keeps clones so the check can see VFIO signal them.
struct RecordingRouter {
    inner: Arc<KvmMsiRouter>,
    fds: Mutex<Vec<(u32, &'static str, EventFd)>>,
}

impl RecordingRouter {
    fn count(&self, kind: &str) -> u64 {
        let fds = self.fds.lock().unwrap();
        fds.iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(_, _, fd)| fd.read().unwrap_or(0))
            .sum()
    }
}

impl RecordingRouter {
    /// Events on the `i`-th MSI eventfd registered (vector order).
    fn count_gsi_index(&self, i: usize) -> u64 {
        let fds = self.fds.lock().unwrap();
        fds.iter()
            .filter(|(_, k, _)| *k == "msi")
            .nth(i)
            .map_or(0, |(_, _, fd)| fd.read().unwrap_or(0))
    }
}

impl MsiRouter for RecordingRouter {
    fn allocate_gsi(&self) -> Result<u32, String> {
        self.inner.allocate_gsi()
    }
    fn release_gsi(&self, gsi: u32) {
        self.inner.release_gsi(gsi)
    }
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<(), String> {
        self.inner.set_msi_route(gsi, address, data)
    }
    fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> Result<(), String> {
        self.inner.set_msi_routes(routes)
    }
    fn release_gsis(&self, gsis: &[u32]) {
        self.inner.release_gsis(gsis)
    }
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), String> {
        let c = fd.try_clone().map_err(|e| e.to_string())?;
        self.fds.lock().unwrap().push((gsi, "msi", c));
        Ok(())
    }
    fn unregister_irqfd(&self, _fd: &EventFd, gsi: u32) -> Result<(), String> {
        self.fds.lock().unwrap().retain(|(g, _, _)| *g != gsi);
        Ok(())
    }
    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        _r: &EventFd,
        gsi: u32,
    ) -> Result<(), String> {
        let c = fd.try_clone().map_err(|e| e.to_string())?;
        self.fds.lock().unwrap().push((gsi, "intx", c));
        Ok(())
    }
}

fn cfg(io: &mut PciConfigIo, slot: u8, off: u8) -> u32 {
    io.write(
        0,
        &(0x8000_0000u32 | (u32::from(slot) << 11) | u32::from(off)).to_le_bytes(),
    );
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    u32::from_le_bytes(b)
}
fn cfgw(io: &mut PciConfigIo, slot: u8, off: u8, v: &[u8]) {
    io.write(
        0,
        &(0x8000_0000u32 | (u32::from(slot) << 11) | u32::from(off & 0xfc)).to_le_bytes(),
    );
    io.write(4 + u64::from(off & 3), v);
}

fn run_guest(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    code: &[u8],
    router: &devices::pci::PciBarRouter,
) -> Result<u32, String> {
    mem.write_slice(code, GuestAddress(0x1000)).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    let cs = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 8,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let ds = kvm_segment {
        selector: 16,
        type_: 3,
        ..cs
    };
    sregs.cs = cs;
    sregs.ds = ds;
    sregs.es = ds;
    sregs.fs = ds;
    sregs.gs = ds;
    sregs.ss = ds;
    sregs.cr0 |= 1;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0x1000;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    let mut mmio_exits = 0;
    loop {
        match vcpu.run() {
            Ok(VcpuExit::MmioRead(a, d)) => {
                mmio_exits += 1;
                router.read(BarSpace::Mmio, a, d)
            }
            Ok(VcpuExit::MmioWrite(a, d)) => {
                mmio_exits += 1;
                router.write(BarSpace::Mmio, a, d)
            }
            Ok(VcpuExit::IoOut(0xf4, _)) => return Ok(mmio_exits),
            Ok(e) => return Err(format!("unexpected exit {e:?}")),
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        }
    }
}

fn mov_eax_from(a: u32) -> Vec<u8> {
    let mut v = vec![0xa1];
    v.extend(a.to_le_bytes());
    v
}
fn mov_to_from_eax(a: u32) -> Vec<u8> {
    let mut v = vec![0xa3];
    v.extend(a.to_le_bytes());
    v
}
fn mov_imm(a: u32, imm: &[u8; 4]) -> Vec<u8> {
    let mut v = vec![0xc7, 0x05];
    v.extend(a.to_le_bytes());
    v.extend(imm);
    v
}

/// `msix <BDF>`: a device with MSI-X (e.g. QEMU's virtio-rng-pci): enable MSI-X and program two
/// vectors the way a guest does (config writes, trapped table writes), then have VFIO fire each
/// vector (VFIO_IRQ_SET_ACTION_TRIGGER loopback) and check its eventfd was signalled.
fn check_msix(bdf: &str) -> Vec<String> {
    let mut fails = Vec::new();
    let kvm = Kvm::new().unwrap();
    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.create_irq_chip().unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let passthrough = VfioPassthrough::new(vm.clone());
    let regions = passthrough.open(bdf, &mem).unwrap();
    let recorder = Arc::new(RecordingRouter {
        inner: Arc::new(KvmMsiRouter::new(vm.clone(), 256)),
        fds: Mutex::new(Vec::new()),
    });
    let dev = VfioPciDevice::new(
        regions.clone(),
        VfioPciDeviceEnv {
            slots: Arc::new(KvmMemorySlots::new(vm.clone(), 1, 32)),
            irq_router: Some(recorder.clone()),
            intx_gsi: None,
            registry: None,
            page_size: 4096,
        },
    )
    .unwrap();
    let mut bus = PciBus::new();
    let mut bars = BarAllocator::new(
        BarWindow::new(0xc000_0000, 0x3ec0_0000),
        None,
        Some(BarWindow::new(0x1000, 0xf000)),
    )
    .unwrap();
    let slot = bus
        .add_device(Arc::new(Mutex::new(dev)), &mut bars)
        .unwrap();
    let router = bus.router();
    let mut io = PciConfigIo::new(Arc::new(Mutex::new(bus)));
    let mut ptr = (cfg(&mut io, slot, 0x34) & 0xfc) as u8;
    let mut cap = None;
    for _ in 0..48 {
        if ptr < 0x40 {
            break;
        }
        let dw = cfg(&mut io, slot, ptr);
        if dw & 0xff == 0x11 {
            cap = Some((ptr, dw));
            break;
        }
        ptr = ((dw >> 8) & 0xfc) as u8;
    }
    let Some((c, dw0)) = cap else {
        fails.push("no-msix-cap".into());
        return fails;
    };
    let table = cfg(&mut io, slot, c + 4);
    let bir = (table & 7) as u8;
    let bar_lo = cfg(&mut io, slot, 0x10 + 4 * bir);
    let table_addr = u64::from(bar_lo & !0xf) + u64::from(table & !7);
    let vectors = ((dw0 >> 16) & 0x7ff) + 1;
    for v in 0..2u64 {
        let e = table_addr + 16 * v;
        router.write(BarSpace::Mmio, e, &(0xfee0_0000u32).to_le_bytes());
        router.write(BarSpace::Mmio, e + 4, &0u32.to_le_bytes());
        router.write(BarSpace::Mmio, e + 8, &(0x40 + v as u32).to_le_bytes());
        router.write(BarSpace::Mmio, e + 12, &0u32.to_le_bytes());
    }
    let mut back = [0u8; 4];
    router.read(BarSpace::Mmio, table_addr + 24, &mut back);
    cfgw(&mut io, slot, c + 3, &[0x80]);
    let mut counts = Vec::new();
    for v in 0..2u32 {
        let r = regions.device().trigger_irq(2, v);
        std::thread::sleep(Duration::from_millis(50));
        counts.push(format!(
            "{}:{}",
            r.is_ok(),
            recorder.count_gsi_index(v as usize)
        ));
    }
    cfgw(&mut io, slot, c + 3, &[0x00]);
    let left = recorder.fds.lock().unwrap().len();
    println!(
        "RIG-DATA scenario={SC} msix_cap={c:#x} msix_vectors={vectors} msix_table_bar={bir} table_entry1_data={:#x} msix_trigger={} msix_irqfds_after_disable={left}",
        u32::from_le_bytes(back),
        counts.join(",")
    );
    if counts.iter().any(|c| c != "true:1") || left != 0 || u32::from_le_bytes(back) != 0x41 {
        fails.push("msix".into());
    }
    fails
}

fn main() {
    env_logger::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("msix") {
        let fails = check_msix(&args[2]);
        if fails.is_empty() {
            println!("RIG-RESULT scenario={SC} status=PASS");
        } else {
            println!(
                "RIG-RESULT scenario={SC} status=FAIL reason={}",
                fails.join(",")
            );
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("error") {
        // Show the user-facing error for a device spec.
        let kvm = Kvm::new().unwrap();
        let vm = Arc::new(kvm.create_vm().unwrap());
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        match VfioPassthrough::new(vm).open(&args[2], &mem) {
            Ok(_) => println!("RIG-DATA scenario={SC} error_case={} opened=yes", args[2]),
            Err(e) => {
                for line in e.to_string().lines() {
                    println!("VFIO-ERROR {} | {line}", args[2]);
                }
            }
        }
        return;
    }
    let iv = &args[2];
    let edu = args.get(3);
    let mut fails: Vec<String> = Vec::new();

    let kvm = Kvm::new().unwrap();
    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.create_irq_chip().unwrap();
    let ram = 64usize << 20;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram)]).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    // SAFETY: mem lives until the end of main.
    unsafe {
        vm.set_user_memory_region(kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram as u64,
            userspace_addr: host,
        })
        .unwrap()
    };

    let registry = vfio_dmabuf::DeviceRegistry::shared();
    let passthrough = VfioPassthrough::new(vm.clone());
    let slots = Arc::new(KvmMemorySlots::new(vm.clone(), 1, 32));
    let msi = Arc::new(KvmMsiRouter::new(vm.clone(), 256));
    let env = || VfioPciDeviceEnv {
        slots: slots.clone(),
        irq_router: Some(msi.clone()),
        intx_gsi: None,
        registry: Some(Arc::new(DmaBufRegistry(registry.clone()))),
        page_size: 4096,
    };

    let t = Instant::now();
    let iv_regions = passthrough.open(iv, &mem).unwrap_or_else(|e| {
        println!("RIG-RESULT scenario={SC} status=FAIL reason=open-ivshmem");
        eprintln!("{e}");
        std::process::exit(1)
    });
    let open_ms = t.elapsed().as_millis();
    let iv_dev = VfioPciDevice::new(iv_regions.clone(), env()).unwrap();
    let mut bus = PciBus::new();
    let mut bars = BarAllocator::new(BarWindow::new(0xc000_0000, 0x3ec0_0000), None, None).unwrap();
    let iv_slot = bus
        .add_device(Arc::new(Mutex::new(iv_dev)), &mut bars)
        .unwrap();
    let recorder = Arc::new(RecordingRouter {
        inner: msi.clone(),
        fds: Mutex::new(Vec::new()),
    });
    let edu_dev = edu.map(|bdf| {
        let r = passthrough.open(bdf, &mem).unwrap();
        let d = VfioPciDevice::new(
            r.clone(),
            VfioPciDeviceEnv {
                irq_router: Some(recorder.clone()),
                intx_gsi: Some(10),
                ..env()
            },
        )
        .unwrap();
        (
            r,
            bus.add_device(Arc::new(Mutex::new(d)), &mut bars).unwrap(),
        )
    });
    let router = bus.router();
    let bus = Arc::new(Mutex::new(bus));
    let mut io = PciConfigIo::new(bus.clone());

    let id = cfg(&mut io, iv_slot, 0);
    let class = cfg(&mut io, iv_slot, 8) >> 8;
    let b0 = cfg(&mut io, iv_slot, 0x10);
    let b2 = cfg(&mut io, iv_slot, 0x18);
    let b3 = cfg(&mut io, iv_slot, 0x1c);
    cfgw(&mut io, iv_slot, 0x18, &[0xff; 4]);
    let size2 = cfg(&mut io, iv_slot, 0x18);
    cfgw(&mut io, iv_slot, 0x18, &b2.to_le_bytes());
    cfgw(&mut io, iv_slot, 0x10, &[0xff; 4]);
    let size0 = cfg(&mut io, iv_slot, 0x10);
    cfgw(&mut io, iv_slot, 0x10, &b0.to_le_bytes());
    println!("RIG-DATA scenario={SC} iv_id={id:#010x} iv_class={class:#08x} iv_bar0={b0:#010x} iv_bar0_sizing={size0:#010x} iv_bar2={b2:#010x} iv_bar2_hi={b3:#x} iv_bar2_sizing={size2:#010x} open_ms={open_ms}");
    if id != 0x1110_1af4 {
        fails.push("iv-id".into());
    }
    if size2 != 0xff00_000c {
        fails.push("bar2-sizing".into());
    }
    let bar0 = b0 & !0xf;
    let bar2 = b2 & !0xf;
    {
        let reg = registry.read().unwrap();
        let (k, info) = reg
            .lookup_gpa(u64::from(bar2) + 0x10)
            .expect("BAR2 in region table");
        println!(
            "RIG-DATA scenario={SC} table_bar2_index={} table_bar2_pieces={} table_bar2_base={:#x}",
            k.index,
            info.mmap_pieces.len(),
            info.guest_base
        );
    }

    // Guest: read BAR2[0] (L0's pattern), write BAR2[4], read BAR0[8] (trapped), write BAR0[0].
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut code = Vec::new();
    code.extend(mov_eax_from(bar2));
    code.extend(mov_to_from_eax(0x2000));
    code.extend(mov_imm(bar2 + 4, b"L2W1"));
    code.extend(mov_eax_from(bar0 + 8));
    code.extend(mov_to_from_eax(0x2004));
    code.extend(mov_imm(bar0, &[0, 0, 0, 0]));
    code.extend([0xe6, 0xf4, 0xeb, 0xfe]);
    match run_guest(&mut vcpu, &mem, &code, &router) {
        Ok(exits) => {
            let got: [u8; 4] = mem.read_obj(GuestAddress(0x2000)).unwrap();
            let ivpos: u32 = mem.read_obj(GuestAddress(0x2004)).unwrap();
            println!("RIG-DATA scenario={SC} guest1_read={} guest1_ivposition={ivpos:#x} guest1_mmio_exits={exits}", String::from_utf8_lossy(&got));
            if &got != b"L0OK" {
                fails.push("bar2-read".into());
            }
            if exits != 2 {
                fails.push("exit-count".into());
            }
        }
        Err(e) => {
            println!(
                "RIG-DATA scenario={SC} guest1_error={}",
                e.replace(' ', "_")
            );
            fails.push("guest1".into());
        }
    }

    // Guest moves BAR2 (config write through 0xCF8/0xCFC), then touches it at the new place.
    let new2 = 0xd000_0000u32;
    cfgw(&mut io, iv_slot, 0x18, &(new2 | 0xc).to_le_bytes());
    cfgw(&mut io, iv_slot, 0x1c, &0u32.to_le_bytes());
    let mut code = Vec::new();
    code.extend(mov_imm(new2 + 8, b"L2W2"));
    code.extend(mov_eax_from(new2));
    code.extend(mov_to_from_eax(0x2008));
    code.extend([0xe6, 0xf4, 0xeb, 0xfe]);
    match run_guest(&mut vcpu, &mem, &code, &router) {
        Ok(exits) => {
            let got: [u8; 4] = mem.read_obj(GuestAddress(0x2008)).unwrap();
            println!(
                "RIG-DATA scenario={SC} guest2_read={} guest2_mmio_exits={exits}",
                String::from_utf8_lossy(&got)
            );
            if &got != b"L0OK" || exits != 0 {
                fails.push("moved-bar2".into());
            }
        }
        Err(e) => {
            println!(
                "RIG-DATA scenario={SC} guest2_error={}",
                e.replace(' ', "_")
            );
            fails.push("guest2".into());
        }
    }
    if registry
        .read()
        .unwrap()
        .lookup_gpa(u64::from(new2))
        .is_none()
    {
        fails.push("table-after-move".into());
    }

    // edu: DMA guest RAM -> device -> guest RAM through the IOMMU mapping of guest RAM.
    if let Some((edu_r, edu_slot)) = &edu_dev {
        let eid = cfg(&mut io, *edu_slot, 0);
        let cmd = cfg(&mut io, *edu_slot, 4) & 0xffff;
        cfgw(&mut io, *edu_slot, 4, &((cmd | 0x6) as u16).to_le_bytes());
        let src = 0x30_0000u64;
        let dst = 0x31_0000u64;
        let pattern: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
        mem.write_slice(&pattern, GuestAddress(src)).unwrap();
        let w = |off: u64, v: u64| edu_r.write(0, off, &v.to_le_bytes());
        let busy = |r: &Arc<devices::vfio::VfioDeviceRegions>| {
            let mut b = [0u8; 8];
            r.read(0, 0x98, &mut b);
            u64::from_le_bytes(b) & 1 != 0
        };
        let wait = |r| {
            let t = Instant::now();
            while busy(r) && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            !busy(r)
        };
        w(0x80, src);
        w(0x88, 0x40000);
        w(0x90, 256);
        w(0x98, 1);
        let ok1 = wait(edu_r);
        w(0x80, 0x40000);
        w(0x88, dst);
        w(0x90, 256);
        w(0x98, 1 | 2);
        let ok2 = wait(edu_r);
        let mut back = vec![0u8; 256];
        mem.read_slice(&mut back, GuestAddress(dst)).unwrap();
        let same = back == pattern;
        println!("RIG-DATA scenario={SC} edu_id={eid:#010x} edu_cmd={cmd:#x} edu_dma_done={ok1}/{ok2} edu_dma_roundtrip={same}");
        if !same {
            fails.push("edu-dma".into());
        }

        // Interrupts: INTx is live from the start; then MSI; then back to INTx.
        let raise = |settle: bool| {
            edu_r.write(0, 0x60, &1u32.to_le_bytes());
            std::thread::sleep(Duration::from_millis(if settle { 300 } else { 100 }));
            edu_r.write(0, 0x64, &1u32.to_le_bytes());
        };
        raise(true);
        let intx = recorder.count("intx");
        // Find edu's MSI capability through the config mechanism, as a guest would.
        let mut ptr = (cfg(&mut io, *edu_slot, 0x34) & 0xfc) as u8;
        let mut msi_cap = None;
        for _ in 0..48 {
            if ptr < 0x40 {
                break;
            }
            let dw = cfg(&mut io, *edu_slot, ptr);
            if dw & 0xff == 0x05 {
                msi_cap = Some(ptr);
                break;
            }
            ptr = ((dw >> 8) & 0xfc) as u8;
        }
        let mut msi_count = 0;
        if let Some(c) = msi_cap {
            cfgw(&mut io, *edu_slot, c + 4, &0xfee0_0000u32.to_le_bytes());
            cfgw(&mut io, *edu_slot, c + 8, &0u32.to_le_bytes());
            cfgw(&mut io, *edu_slot, c + 12, &[0x41, 0x00]);
            cfgw(&mut io, *edu_slot, c + 2, &[0x01]);
            raise(true);
            msi_count = recorder.count("msi");
            cfgw(&mut io, *edu_slot, c + 2, &[0x00]);
        }
        let intx_back = recorder
            .fds
            .lock()
            .unwrap()
            .iter()
            .any(|(_, k, _)| *k == "intx");
        println!(
            "RIG-DATA scenario={SC} edu_intx_events={intx} edu_msi_cap={msi_cap:?} edu_msi_events={msi_count} edu_intx_rewired={intx_back}"
        );
        if intx == 0 || msi_count == 0 || !intx_back {
            fails.push("edu-irq".into());
        }
    }

    drop(io);
    drop(router);
    drop(bus);
    let left = registry.read().unwrap().device_ids().len();
    println!("RIG-DATA scenario={SC} registry_devices_after_drop={left}");
    if left != 0 {
        fails.push("drop".into());
    }
    if fails.is_empty() {
        println!("RIG-RESULT scenario={SC} status=PASS");
    } else {
        println!(
            "RIG-RESULT scenario={SC} status=FAIL reason={}",
            fails.join(",")
        );
    }
}
