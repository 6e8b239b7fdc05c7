//! KVM's binary statistics (KVM_GET_STATS_FD, Linux 5.14+): per-vCPU counters such as `exits`,
//! `io_exits`, `mmio_exits`, `halt_exits`, `irq_exits`, `pf_fixed`, `insn_emulation`. They count
//! the exits KVM handles in the kernel too, which the VMM never sees.
//!
//! File layout (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"): a 24-byte header
//! `{flags, name_size, num_desc, id_offset, desc_offset, data_offset}` (u32 each), `num_desc`
//! descriptors of `16 + name_size` bytes `{flags u32, exponent i16, size u16, offset u32,
//! bucket_size u32, name[name_size]}`, and u64 data at `data_offset + offset`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
/// Sanity bounds: a stats file is a few KiB; refuse anything absurd.
const MAX_DESCRIPTORS: u32 = 4096;
const MAX_NAME_SIZE: u32 = 256;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("KVM stats: {what}"))
}

/// Parses a KVM binary stats file: the first value of every statistic, by name.
pub fn parse(file: &impl FileExt) -> io::Result<BTreeMap<String, u64>> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0)?;
    let name_size = u32_at(&header, 4);
    let num_desc = u32_at(&header, 8);
    let desc_offset = u64::from(u32_at(&header, 16));
    let data_offset = u64::from(u32_at(&header, 20));
    if name_size == 0 || name_size > MAX_NAME_SIZE || num_desc > MAX_DESCRIPTORS {
        return Err(invalid("implausible header"));
    }
    let desc_len = DESC_FIXED_LEN + name_size as usize;
    let mut descs = vec![0u8; desc_len * num_desc as usize];
    file.read_exact_at(&mut descs, desc_offset)?;
    let mut stats = BTreeMap::new();
    for d in descs.chunks_exact(desc_len) {
        let size = u16::from_le_bytes([d[6], d[7]]);
        let offset = u64::from(u32_at(d, 8));
        let name_bytes = &d[DESC_FIXED_LEN..];
        let end = name_bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_bytes.len());
        let name = String::from_utf8_lossy(&name_bytes[..end]).into_owned();
        if size == 0 || name.is_empty() {
            continue;
        }
        let mut value = [0u8; 8];
        file.read_exact_at(&mut value, data_offset + offset)?;
        stats.insert(name, u64::from_le_bytes(value));
    }
    Ok(stats)
}

/// Reads the statistics of a KVM VM or vCPU fd.
pub fn read(fd: &impl AsRawFd) -> io::Result<BTreeMap<String, u64>> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd (or -1); the caller's
    // fd stays valid for the call.
    let ret = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a new fd owned by nobody else.
    let file = unsafe { File::from_raw_fd(ret) };
    parse(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a stats file the way KVM lays it out.
    fn fake_stats(stats: &[(&str, u64)], name_size: usize) -> Vec<u8> {
        let id = b"kvm-1234/vcpu-0\0";
        let desc_offset = HEADER_LEN + id.len();
        let desc_len = DESC_FIXED_LEN + name_size;
        let data_offset = desc_offset + desc_len * stats.len();
        let mut f = Vec::new();
        for v in [
            0,
            name_size as u32,
            stats.len() as u32,
            HEADER_LEN as u32,
            desc_offset as u32,
            data_offset as u32,
        ] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(id);
        for (i, (name, _)) in stats.iter().enumerate() {
            f.extend_from_slice(&0u32.to_le_bytes()); // flags: cumulative, none unit
            f.extend_from_slice(&0i16.to_le_bytes()); // exponent
            f.extend_from_slice(&1u16.to_le_bytes()); // size
            f.extend_from_slice(&((i * 8) as u32).to_le_bytes()); // offset
            f.extend_from_slice(&0u32.to_le_bytes()); // bucket size
            let mut n = name.as_bytes().to_vec();
            n.resize(name_size, 0);
            f.extend_from_slice(&n);
        }
        for (_, v) in stats {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f
    }

    fn temp_file(bytes: &[u8]) -> File {
        let p = std::env::temp_dir().join(format!(
            "vmm-kvm-stats-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    #[test]
    fn parses_names_and_values() {
        let f = temp_file(&fake_stats(
            &[("exits", 57154), ("io_exits", 1189), ("pf_fixed", 31911)],
            48,
        ));
        let s = parse(&f).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s["exits"], 57154);
        assert_eq!(s["io_exits"], 1189);
        assert_eq!(s["pf_fixed"], 31911);
    }

    #[test]
    fn rejects_truncated_and_absurd_files() {
        let good = fake_stats(&[("exits", 1)], 48);
        assert!(parse(&temp_file(&good[..good.len() - 4])).is_err());
        let mut absurd = good.clone();
        absurd[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&temp_file(&absurd)).is_err());
    }

    #[test]
    fn real_vcpu_stats_when_the_kernel_has_them() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm");
            return;
        };
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        match read(&vcpu) {
            Ok(s) => assert!(s.contains_key("exits"), "{s:?}"),
            Err(e) => eprintln!("KVM_GET_STATS_FD unsupported here: {e}"),
        }
    }
}
