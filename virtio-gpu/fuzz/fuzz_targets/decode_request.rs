//! The command decoder on arbitrary bytes: must never panic; a decoded request re-encodes to
//! a response of the documented size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_gpu_blob::protocol::GpuCommand;
use virtio_gpu_blob::protocol::{decode_request, GpuResponse, HDR_SIZE, MAX_MEM_ENTRIES};

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(req) => {
            let n = match &req.cmd {
                GpuCommand::ResourceAttachBacking { entries, .. }
                | GpuCommand::ResourceCreateBlob { entries, .. } => entries.len(),
                _ => 0,
            };
            assert!(n <= MAX_MEM_ENTRIES as usize);
            assert_eq!(GpuResponse::OkNoData.encode(&req.hdr).len(), HDR_SIZE);
        }
        Err(e) => {
            // Every error maps to an error response type.
            assert!(e.response_type() >= 0x1200);
        }
    }
});
