//! 16550 UART on the port I/O bus (vm-superio's `Serial`), with host input buffering.

use std::collections::VecDeque;
use std::io::Write;

use log_limit::{debug_limit_global, warn_limit_global};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::trigger::EventFdTrigger;
use crate::GUEST_LOG_INTERVAL;

/// I/O port base of COM1.
pub const SERIAL_COM1_PORT: u16 = 0x3f8;
/// Number of ports a 16550 decodes.
pub const SERIAL_PORT_LEN: u16 = 8;
/// ISA interrupt line of COM1.
pub const SERIAL_COM1_IRQ: u32 = 4;

/// Receive buffer register offset (reading it consumes one input byte).
const RBR_OFFSET: u16 = 0;
/// Host input kept while the UART's 64-byte FIFO is full; beyond this, input is dropped.
const MAX_PENDING_INPUT: usize = 64 * 1024;

/// A 16550 UART whose transmitted bytes go to `W` and whose interrupt is an eventfd.
///
/// Host input that does not fit in the UART FIFO waits in a bounded queue and is moved into
/// the FIFO as the guest reads the receive register, so the event loop never has to poll.
pub struct SerialDevice<W: Write> {
    uart: Serial<EventFdTrigger, NoEvents, W>,
    pending: VecDeque<u8>,
}

impl<W: Write> SerialDevice<W> {
    /// A UART that raises `interrupt` and writes guest output to `out`.
    pub fn new(interrupt: EventFdTrigger, out: W) -> Self {
        SerialDevice {
            uart: Serial::new(interrupt, out),
            pending: VecDeque::new(),
        }
    }

    /// Queues host input for the guest. Returns the number of bytes accepted (bytes beyond the
    /// bounded pending queue are dropped and logged).
    pub fn queue_input(&mut self, input: &[u8]) -> usize {
        let room = MAX_PENDING_INPUT.saturating_sub(self.pending.len());
        let accepted = input.len().min(room);
        if accepted < input.len() {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "serial: input queue full (the guest does not read), dropped {} bytes",
                input.len() - accepted
            );
        }
        self.pending.extend(&input[..accepted]);
        self.refill_fifo();
        accepted
    }

    /// Number of host input bytes not yet in the UART FIFO.
    pub fn pending_input(&self) -> usize {
        self.pending.len()
    }

    /// The output sink.
    pub fn writer(&self) -> &W {
        self.uart.writer()
    }

    fn refill_fifo(&mut self) {
        let n = self.uart.fifo_capacity().min(self.pending.len());
        if n == 0 {
            return;
        }
        let chunk: Vec<u8> = self.pending.drain(..n).collect();
        match self.uart.enqueue_raw_bytes(&chunk) {
            Ok(written) if written < chunk.len() => {
                // Put back what did not fit, in order (cannot happen: n <= capacity).
                for b in chunk[written..].iter().rev() {
                    self.pending.push_front(*b);
                }
            }
            Ok(_) => {}
            Err(e) => warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "serial: failed to deliver input: {e:?}"
            ),
        }
    }
}

impl<W: Write> MutDevicePio for SerialDevice<W> {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        if data.len() != 1 || offset >= SERIAL_PORT_LEN {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "serial: ignored {}-byte read at offset {offset}",
                data.len()
            );
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
        if offset == RBR_OFFSET && !self.pending.is_empty() {
            self.refill_fifo();
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if data.len() != 1 || offset >= SERIAL_PORT_LEN {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "serial: ignored {}-byte write at offset {offset}",
                data.len()
            );
            return;
        }
        if let Err(e) = self.uart.write(offset as u8, data[0]) {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "serial: write to register {offset} failed: {e:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const LSR: u16 = 5;
    const IER: u16 = 1;
    const LSR_DATA_READY: u8 = 0x01;

    fn device() -> (SerialDevice<Vec<u8>>, EventFd) {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = evt.try_clone().unwrap();
        (SerialDevice::new(EventFdTrigger::new(evt), Vec::new()), irq)
    }

    fn base() -> PioAddress {
        PioAddress(SERIAL_COM1_PORT)
    }

    #[test]
    fn guest_output_reaches_the_writer() {
        let (mut s, _irq) = device();
        for b in b"hi\n" {
            s.pio_write(base(), 0, &[*b]);
        }
        assert_eq!(s.writer(), b"hi\n");
    }

    #[test]
    fn input_larger_than_the_fifo_is_delivered_in_order() {
        let (mut s, irq) = device();
        // Enable the received-data interrupt.
        s.pio_write(base(), IER, &[0x01]);
        let input: Vec<u8> = (0..200u8).collect();
        assert_eq!(s.queue_input(&input), input.len());
        assert!(s.pending_input() > 0, "FIFO is 64 bytes, the rest waits");
        assert!(irq.read().unwrap() >= 1, "data-ready interrupt raised");
        let mut got = Vec::new();
        loop {
            let mut lsr = [0u8];
            s.pio_read(base(), LSR, &mut lsr);
            if lsr[0] & LSR_DATA_READY == 0 {
                break;
            }
            let mut b = [0u8];
            s.pio_read(base(), RBR_OFFSET, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, input);
        assert_eq!(s.pending_input(), 0);
    }

    #[test]
    fn pending_input_is_bounded() {
        let (mut s, _irq) = device();
        let big = vec![b'x'; MAX_PENDING_INPUT + 1000];
        let accepted = s.queue_input(&big);
        assert!(accepted <= MAX_PENDING_INPUT);
        assert!(s.pending_input() <= MAX_PENDING_INPUT);
    }

    /// A console that refuses every byte (closed stdout).
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// 10000 bytes to a broken console, odd-sized accesses or input the guest never reads
    /// give a handful of log lines each.
    #[test]
    fn repeated_failures_log_a_handful_of_lines() {
        use crate::test_log::lines_logged_by;
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut broken = SerialDevice::new(EventFdTrigger::new(evt), Broken);
        let output = lines_logged_by(|| {
            for _ in 0..10000 {
                broken.pio_write(base(), 0, b"x");
            }
        });
        assert!(output.len() <= 4, "{} lines: {output:#?}", output.len());
        let (mut s, _irq) = device();
        let odd = lines_logged_by(|| {
            let mut d = [0u8; 2];
            for _ in 0..10000 {
                s.pio_read(base(), 0, &mut d);
                s.pio_write(base(), 9, &[1]);
            }
        });
        assert!(odd.len() <= 8, "{} lines: {odd:#?}", odd.len());
        let input = lines_logged_by(|| {
            for _ in 0..10000 {
                s.queue_input(&[b'y'; 256]);
            }
        });
        assert!(input.len() <= 4, "{} lines: {input:#?}", input.len());
    }

    #[test]
    fn odd_sized_and_out_of_range_accesses_are_ignored() {
        let (mut s, _irq) = device();
        let mut d = [0u8; 2];
        s.pio_read(base(), 0, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        s.pio_write(base(), 0, b"ab");
        s.pio_write(base(), 9, b"c");
        assert!(s.writer().is_empty());
    }
}
