//! Virtqueue handling: pop each descriptor chain, read the request (bounded), decode it once,
//! execute it, write the response, return the chain to the used ring.

use std::io::{Read, Write};

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestAddressSpace;

use crate::device::GpuDevice;
use crate::protocol::{decode_header, decode_request, GpuResponse, MAX_REQUEST_SIZE};
use crate::GUEST_LOG_INTERVAL;

/// The two virtio-gpu queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// controlq (index 0).
    Control,
    /// cursorq (index 1).
    Cursor,
}

/// Errors of the queue itself (not of a request): the device cannot use the ring.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Updating the used ring or reading the ring indexes failed.
    #[error("virtqueue: {0}")]
    Virtio(#[from] virtio_queue::Error),
    /// The queue was served before the device was given guest memory.
    #[error("the device has no guest memory yet (not activated)")]
    NotActivated,
}

impl<M: GuestAddressSpace> GpuDevice<M> {
    /// Processes every available request of `queue`. Returns whether the driver must be
    /// interrupted (something was used and the driver wants to be told).
    pub fn process_queue(
        &mut self,
        queue: &mut Queue,
        kind: QueueKind,
    ) -> Result<bool, QueueError> {
        let mem = self.memory().ok_or(QueueError::NotActivated)?;
        let mem = &*mem;
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let written = self.process_chain(chain, mem, kind);
            queue.add_used(mem, head, written)?;
            used_any = true;
        }
        Ok(used_any && queue.needs_notification(mem)?)
    }

    fn process_chain(
        &mut self,
        chain: virtio_queue::DescriptorChain<&M::M>,
        mem: &M::M,
        kind: QueueKind,
    ) -> u32 {
        let mut reader = match Reader::new(mem, chain.clone()) {
            Ok(r) => r,
            Err(e) => {
                log_limit::warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: guest error: unreadable request chain: {e}"
                );
                return 0;
            }
        };
        let mut writer = match Writer::new(mem, chain) {
            Ok(w) => w,
            Err(e) => {
                log_limit::warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: guest error: unwritable response chain: {e}"
                );
                return 0;
            }
        };
        let want = reader.available_bytes().min(MAX_REQUEST_SIZE);
        let mut buf = vec![0u8; want];
        if let Err(e) = reader.read_exact(&mut buf) {
            log_limit::warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-gpu: guest error: reading request: {e}"
            );
            return 0;
        }
        let (hdr, response) = match decode_request(&buf) {
            Ok(req) => {
                let resp = self.handle(&req);
                (req.hdr, resp)
            }
            Err(e) => {
                log_limit::warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: guest error: {e}"
                );
                let hdr = decode_header(&buf).unwrap_or_default();
                (hdr, GpuResponse::Err(e.response_type()))
            }
        };
        let bytes = response.encode(&hdr);
        if writer.available_bytes() < bytes.len() {
            if kind == QueueKind::Control || writer.available_bytes() > 0 {
                log_limit::warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: guest error: response of {} bytes does not fit in {}",
                    bytes.len(),
                    writer.available_bytes()
                );
            }
            return 0;
        }
        match writer.write_all(&bytes) {
            Ok(()) => bytes.len() as u32,
            Err(e) => {
                log_limit::warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: guest error: writing response: {e}"
                );
                0
            }
        }
    }
}
