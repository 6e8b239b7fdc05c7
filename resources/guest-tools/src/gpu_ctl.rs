//! A user-space virtio-gpu driver for the control queue (the `virtio-gpu` kernel module must not
//! be loaded):
//! 1. [`GpuCtl::open`] finds the device, unbinds it from `virtio-pci` (with
//!    CONFIG_IO_STRICT_DEVMEM=y a claimed BAR cannot be mapped through sysfs), sets Memory Space +
//!    Bus Master + INTx-disable in its command register, parses the virtio-pci capabilities, resets
//!    the device and negotiates VERSION_1 + RESOURCE_BLOB (ACCESS_PLATFORM too if offered: without
//!    a vIOMMU bus addresses are guest-physical), and sets up the control queue in locked pages
//!    (guest-physical addresses from /proc/self/pagemap). No interrupts: completions are polled
//!    from the used ring with a deadline.
//! 2. Requests and responses live in locked arenas ([`DmaPages`]). [`GpuCtl::batch`] sends many
//!    requests with one queue notification per group (as many as the queue's descriptors and the
//!    arenas hold); [`GpuCtl::submit`] sends one and prints a `RIG-DATA` line with its response.
//!
//! A response that does not come before the deadline leaves the ring in an unknown state: the
//! driver then refuses further requests ([`GpuCtl::is_broken`]).

use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::{VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1};

use crate::error::{Error, Result};
use crate::pagemap::{DmaPages, Pagemap, PAGE_SIZE};
use crate::pci::{PciDevice, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY};
use crate::report::{hex, Reporter};
use crate::virtio_gpu_cmd::{self as cmd, Rect, ScanoutBlob};
use crate::virtio_pci::VirtioPci;
use crate::virtqueue::{Buf, SplitQueue};

/// Bytes of the request arena: the most request bytes in flight at once (and the largest request).
pub const REQUEST_ARENA: usize = 1 << 20;
/// Bytes reserved for each response (the largest, OK_DISPLAY_INFO, is 408).
pub const RESPONSE_SLOT: usize = 512;
/// Request bytes are placed at multiples of this in the arena.
const REQUEST_ALIGN: usize = 64;

/// One completed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor id of the used element.
    pub id: u32,
    /// Bytes the device says it wrote.
    pub len: u32,
    /// The response bytes (at most the response length asked for).
    pub bytes: Vec<u8>,
}

impl Used {
    /// The response's `type` (0 if too short).
    pub fn resp_type(&self) -> u32 {
        cmd::resp_type(&self.bytes)
    }
}

/// What a batch got back.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// Per request, in order: its response, or None (lost or never sent).
    pub responses: Vec<Option<Used>>,
    /// Requests sent whose response did not come before the deadline.
    pub lost: usize,
    /// Requests not sent because an earlier group lost a response.
    pub unsent: usize,
    /// Queue notifications (one per group).
    pub notifies: u32,
}

/// The control queue of a virtio-gpu driven from user space.
pub struct GpuCtl<'a> {
    /// The GPU's PCI device.
    pub gpu: PciDevice,
    dev: VirtioPci,
    queue: SplitQueue,
    req: DmaPages,
    resp: DmaPages,
    slots: usize,
    timeout: Duration,
    rep: &'a Reporter,
    broken: bool,
    /// (command name, response type) of every [`GpuCtl::submit`].
    pub log: Vec<(String, u32)>,
}

impl<'a> GpuCtl<'a> {
    /// Opens the virtio-gpu `vendor:device` (step 1 of the module documentation) with a control
    /// queue of at most `max_queue` entries; `timeout` bounds each group's wait for responses.
    /// Prints `RIG-DATA` lines with the device, features and queue.
    pub fn open(
        vendor: u16,
        device: u16,
        max_queue: u16,
        timeout: Duration,
        rep: &'a Reporter,
    ) -> Result<Self> {
        let gpu = PciDevice::find(vendor, device)?;
        rep.log(&format!("lspci: {}", gpu.lspci_line()?));
        let unbound = gpu.unbind()?.unwrap_or_else(|| "none".into());
        let (c0, c1) = gpu.update_command(
            PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE,
            0,
            PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
        )?;
        let dev = VirtioPci::open(&gpu)?;
        let required = (1u64 << VIRTIO_F_VERSION_1) | (1u64 << cmd::F_RESOURCE_BLOB);
        let (offered, accepted) = dev.negotiate(required, 1u64 << VIRTIO_F_ACCESS_PLATFORM)?;
        let cap = |c: &crate::virtio_pci::VirtioCap| format!("bar{}+{:#x}", c.bar, c.offset);
        rep.data(&[
            ("gpu_bdf", gpu.bdf.clone()),
            ("unbound_from", unbound),
            ("command", format!("{c0:#06x}->{c1:#06x}")),
            ("common_cfg", cap(&dev.layout.common)),
            ("notify_cfg", cap(&dev.layout.notify)),
            ("features_offered", hex(offered)),
            ("features_accepted", hex(accepted)),
            ("num_queues", dev.num_queues().to_string()),
        ]);
        let pm = Pagemap::open()?;
        let qsize = dev.queue_max_size(0).min(max_queue);
        if qsize < 2 {
            return Err(Error::Unsupported(format!("control queue size {qsize}")));
        }
        let queue = SplitQueue::new(&pm, qsize)?;
        let (d, a, u) = queue.phys;
        dev.setup_queue(0, qsize, d, a, u)?;
        dev.driver_ok()?;
        rep.data(&[
            ("queue", "0".into()),
            ("size", qsize.to_string()),
            ("desc", hex(d)),
            ("avail", hex(a)),
            ("used", hex(u)),
            ("status", format!("{:#04x}", dev.status())),
        ]);
        // A request takes at least two descriptors (request, response).
        let slots = usize::from(qsize / 2);
        let req = DmaPages::new(&pm, REQUEST_ARENA / PAGE_SIZE)?;
        let resp = DmaPages::new(&pm, (slots * RESPONSE_SLOT).div_ceil(PAGE_SIZE))?;
        Ok(GpuCtl {
            gpu,
            dev,
            queue,
            req,
            resp,
            slots,
            timeout,
            rep,
            broken: false,
            log: Vec::new(),
        })
    }

    /// The reporter of the result lines.
    pub fn reporter(&self) -> &'a Reporter {
        self.rep
    }

    /// True after a lost response: the driver sends nothing more.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends `reqs` (each answered with at most `resp_len` bytes) in groups, one notification
    /// per group, each group's responses awaited with the deadline. After a lost response the
    /// rest is not sent. Errors only for requests the arenas cannot hold or a device that
    /// answers with a descriptor id that was not in flight.
    pub fn batch(&mut self, reqs: &[Vec<u8>], resp_len: usize) -> Result<BatchOutcome> {
        if resp_len > RESPONSE_SLOT {
            return Err(Error::Unsupported(format!(
                "responses of {resp_len} bytes do not fit a {RESPONSE_SLOT}-byte slot"
            )));
        }
        let mut out = BatchOutcome {
            responses: vec![None; reqs.len()],
            ..BatchOutcome::default()
        };
        let qsize = usize::from(self.queue.size());
        let mut next = 0;
        while next < reqs.len() {
            if self.broken {
                out.unsent = reqs.len() - next;
                break;
            }
            // Pack a group: request bytes one after the other, a response slot each.
            let mut chains: Vec<Vec<Buf>> = Vec::new();
            let (mut at, mut descs) = (0usize, 0usize);
            while next + chains.len() < reqs.len() && chains.len() < self.slots {
                let r = &reqs[next + chains.len()];
                let slot = chains.len() * RESPONSE_SLOT;
                let (Some(req_segs), Some(resp_segs)) = (
                    self.req.segments(at, r.len()),
                    self.resp.segments(slot, resp_len),
                ) else {
                    if chains.is_empty() {
                        return Err(Error::Unsupported(format!(
                            "a request of {} bytes (response {resp_len}) does not fit the \
                             {REQUEST_ARENA}-byte arena",
                            r.len()
                        )));
                    }
                    break;
                };
                if descs + req_segs.len() + resp_segs.len() > qsize {
                    if chains.is_empty() {
                        return Err(Error::Unsupported(format!(
                            "a request of {} bytes needs {} descriptors, the queue has {qsize}",
                            r.len(),
                            req_segs.len() + resp_segs.len()
                        )));
                    }
                    break;
                }
                self.req.write_bytes(at, r);
                for i in 0..resp_len {
                    self.resp.write_u8(slot + i, 0);
                }
                let buf = |(addr, len): (u64, u64), write| Buf {
                    addr,
                    len: len as u32,
                    write,
                };
                let mut chain: Vec<Buf> = req_segs.into_iter().map(|s| buf(s, false)).collect();
                chain.extend(resp_segs.into_iter().map(|s| buf(s, true)));
                descs += chain.len();
                chains.push(chain);
                at = (at + r.len()).next_multiple_of(REQUEST_ALIGN);
            }
            let refs: Vec<&[Buf]> = chains.iter().map(Vec::as_slice).collect();
            let heads = self.queue.push_batch(&refs)?;
            self.dev.notify(0)?;
            out.notifies += 1;
            let deadline = Instant::now() + self.timeout;
            let mut done = 0;
            while done < heads.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                let (id, len) = match self.queue.wait_used(left) {
                    Ok(u) => u,
                    Err(Error::Timeout { .. }) => {
                        self.broken = true;
                        out.lost = heads.len() - done;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let Some(k) = heads.iter().position(|&h| u32::from(h) == id) else {
                    self.broken = true;
                    return Err(Error::Unsupported(format!(
                        "used element with id {id}, not the head of a request in flight"
                    )));
                };
                let mut bytes = vec![0u8; (len as usize).min(resp_len)];
                self.resp.read_bytes(k * RESPONSE_SLOT, &mut bytes);
                out.responses[next + k] = Some(Used { id, len, bytes });
                done += 1;
            }
            self.dev.read_isr();
            next += heads.len();
        }
        Ok(out)
    }

    /// Sends one command, prints a `RIG-DATA` line with its response (`cmd`, `resp`,
    /// `resp_name`, `used_id`, `used_len`), logs it in [`GpuCtl::log`] and returns the response
    /// bytes (at most `resp_len`). A lost response is an [`Error::Timeout`].
    pub fn submit(&mut self, name: &str, req: &[u8], resp_len: usize) -> Result<Vec<u8>> {
        let out = self.batch(&[req.to_vec()], resp_len)?;
        let Some(Some(used)) = out.responses.into_iter().next() else {
            return Err(Error::Timeout {
                what: format!("the response to {name}"),
                ms: self.timeout.as_millis() as u64,
            });
        };
        let t = used.resp_type();
        self.rep.data(&[
            ("cmd", name.to_string()),
            ("resp", format!("{t:#06x}")),
            ("resp_name", cmd::resp_name(t).to_string()),
            ("used_id", used.id.to_string()),
            ("used_len", used.len.to_string()),
        ]);
        self.log.push((name.to_string(), t));
        Ok(used.bytes)
    }

    /// RESOURCE_CREATE_BLOB `res_id` (blob_mem GUEST, mappable + shareable) from `entries`
    /// (guest-physical address, length), SET_SCANOUT_BLOB on scanout 0 (B8G8R8X8, `width` x
    /// `height`, stride `width * 4`) and RESOURCE_FLUSH, each through [`GpuCtl::submit`].
    /// Returns the three response types.
    pub fn show_blob(
        &mut self,
        res_id: u32,
        entries: &[(u64, u64)],
        size: u64,
        width: u32,
        height: u32,
    ) -> Result<[u32; 3]> {
        let create = create_blob_request(res_id, entries, size);
        let t0 = cmd::resp_type(&self.submit(
            &format!("RESOURCE_CREATE_BLOB/{res_id}"),
            &create,
            cmd::HDR_SIZE,
        )?);
        let t1 = cmd::resp_type(&self.submit(
            &format!("SET_SCANOUT_BLOB/{res_id}"),
            &scanout_request(res_id, width, height),
            cmd::HDR_SIZE,
        )?);
        let t2 = cmd::resp_type(&self.submit(
            &format!("RESOURCE_FLUSH/{res_id}"),
            &cmd::resource_flush(res_id, Rect::sized(width, height)),
            cmd::HDR_SIZE,
        )?);
        Ok([t0, t1, t2])
    }
}

/// RESOURCE_CREATE_BLOB of a guest blob (mappable + shareable) with `entries` (address, length).
pub fn create_blob_request(res_id: u32, entries: &[(u64, u64)], size: u64) -> Vec<u8> {
    let ents: Vec<(u64, u32)> = entries.iter().map(|&(a, l)| (a, l as u32)).collect();
    cmd::resource_create_blob(
        res_id,
        cmd::BLOB_MEM_GUEST,
        cmd::BLOB_FLAG_USE_MAPPABLE | cmd::BLOB_FLAG_USE_SHAREABLE,
        0,
        size,
        &ents,
    )
}

/// SET_SCANOUT_BLOB of `res_id` on scanout 0: the whole `width` x `height` XRGB8888 image at
/// offset 0, stride `width * 4`.
pub fn scanout_request(res_id: u32, width: u32, height: u32) -> Vec<u8> {
    cmd::set_scanout_blob(&ScanoutBlob {
        scanout_id: 0,
        resource_id: res_id,
        rect: Rect::sized(width, height),
        width,
        height,
        format: cmd::FORMAT_B8G8R8X8_UNORM,
        stride: width * 4,
        offset: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_requests_carry_the_entries_and_the_image() {
        let c = create_blob_request(7, &[(0x8_0000_0000, 0x1000), (0x1000, 0x2000)], 0x3000);
        assert_eq!(c.len(), 56 + 2 * 16);
        assert_eq!(&c[36..40], &2u32.to_le_bytes()); // nr_entries
        assert_eq!(&c[56..64], &0x8_0000_0000u64.to_le_bytes());
        assert_eq!(&c[80..84], &0x2000u32.to_le_bytes());
        let s = scanout_request(9, 64, 32);
        assert_eq!(&s[44..48], &9u32.to_le_bytes()); // resource_id
        assert_eq!(&s[64..68], &256u32.to_le_bytes()); // strides[0]
    }
}
