//! The device's worker thread: fills the guest's event buffers from the pending events and
//! returns the status buffers, when the driver notifies a queue or a handle queued events.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use log_limit::{debug_limit_global, warn_limit_global};
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::events::{Event, EVENT_SIZE};
use super::handle::{Shared, State};
use crate::virtio::{ActivatedQueue, InterruptSource, VirtioInterrupt};
use crate::GUEST_LOG_INTERVAL;

const EVENTQ_TOKEN: u64 = 0;
const STATUSQ_TOKEN: u64 = 1;
const WAKE_TOKEN: u64 = 2;
const KILL_TOKEN: u64 = 3;

/// What one pass over the event queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Delivery {
    /// Buffers returned to the used ring (with an event or refused).
    pub used: u16,
    /// Events written.
    pub events: u16,
    /// The pass stopped at its budget with events and buffers left: run another one.
    pub more: bool,
}

/// Number of chains the driver made available and the device has not taken yet (at most
/// the queue size; a driver claiming more gets nothing from `pop_descriptor_chain` anyway).
fn available(queue: &Queue, mem: &GuestMemoryMmap) -> Result<u16, virtio_queue::Error> {
    let idx = queue.avail_idx(mem, Ordering::Acquire)?;
    Ok(idx.0.wrapping_sub(queue.next_avail()).min(queue.size()))
}

/// Writes `event` into the chain's device-writable part; returns the bytes written, 0 if
/// the chain cannot take an event (too short, nothing writable, outside guest memory).
fn write_event(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    event: Event,
    label: &str,
) -> u32 {
    let mut w = match Writer::new(mem, chain) {
        Ok(w) => w,
        Err(e) => {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {label}: guest error: unusable event buffer: {e}"
            );
            return 0;
        }
    };
    if w.available_bytes() < EVENT_SIZE {
        warn_limit_global!(
            1,
            GUEST_LOG_INTERVAL,
            "virtio-input {label}: guest error: an event buffer with {} writable bytes \
             (an event takes {EVENT_SIZE}); returned unused",
            w.available_bytes()
        );
        return 0;
    }
    match w.write_all(&event.to_le_bytes()) {
        Ok(()) => EVENT_SIZE as u32,
        Err(e) => {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {label}: guest error: writing an event: {e}"
            );
            0
        }
    }
}

/// Moves pending events into the event queue's buffers, one event per buffer, a whole
/// group at a time: a group waits until the driver offers enough buffers for all of it
/// (or all the queue can hold, for a queue smaller than the group). A buffer that cannot
/// take an event is returned with 0 bytes and the event goes into the next one. A pass
/// takes at most one queue's worth of buffers, so a driver re-posting buffers as fast as
/// it can cannot keep the worker (and the pending queue's lock) busy.
pub(super) fn deliver(
    st: &mut State,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    label: &str,
) -> Result<Delivery, virtio_queue::Error> {
    let mut d = Delivery::default();
    let mut budget = queue.size();
    'groups: loop {
        let group = st.pending.first_group_len();
        if group == 0 {
            break;
        }
        let avail = available(queue, mem)?;
        if usize::from(avail) < group && avail < queue.size() {
            break;
        }
        let mut left = group;
        while left > 0 {
            if budget == 0 {
                d.more = available(queue, mem)? > 0;
                break 'groups;
            }
            let Some(event) = st.pending.front() else {
                break 'groups;
            };
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break 'groups;
            };
            budget -= 1;
            let head = chain.head_index();
            let written = write_event(mem, chain, event, label);
            queue.add_used(mem, head, written)?;
            d.used += 1;
            if written > 0 {
                st.pending.pop_front();
                d.events += 1;
                left -= 1;
            }
        }
    }
    Ok(d)
}

/// Takes every status buffer the driver offers (LED changes and the like), logs what it
/// says at debug level and returns it with 0 bytes written. Returns the buffers used.
pub(super) fn drain_status(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    label: &str,
) -> Result<u16, virtio_queue::Error> {
    let mut used = 0;
    for _ in 0..queue.size() {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        match Reader::new(mem, chain) {
            Ok(mut r) if r.available_bytes() >= EVENT_SIZE => {
                let mut b = [0u8; EVENT_SIZE];
                if r.read_exact(&mut b).is_ok() {
                    let e = Event::from_le_bytes(b);
                    debug_limit_global!(
                        10,
                        GUEST_LOG_INTERVAL,
                        "virtio-input {label}: status event type {:#x} code {:#x} value {}",
                        e.kind,
                        e.code,
                        e.value
                    );
                }
            }
            Ok(r) => warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {label}: guest error: a status buffer with {} readable bytes \
                 (an event takes {EVENT_SIZE}); returned unread",
                r.available_bytes()
            ),
            Err(e) => warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {label}: guest error: unusable status buffer: {e}"
            ),
        }
        queue.add_used(mem, head, 0)?;
        used += 1;
    }
    Ok(used)
}

/// Interrupts the driver for queue `index` if something was used and it wants to know.
fn notify(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    index: u16,
    used: u16,
    interrupt: &dyn VirtioInterrupt,
) -> Result<(), virtio_queue::Error> {
    if used > 0 && queue.needs_notification(mem)? {
        interrupt.trigger(InterruptSource::Queue(index));
    }
    Ok(())
}

/// The queues the worker serves.
pub(super) struct Queues {
    pub event: ActivatedQueue,
    pub status: Option<ActivatedQueue>,
}

struct Worker {
    shared: Arc<Shared>,
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queues: Queues,
}

impl Worker {
    fn serve_events(&mut self) {
        let label = self.shared.profile.label;
        let q = &mut self.queues.event;
        let result = {
            let mut st = self.shared.lock();
            deliver(&mut st, &mut q.queue, &self.mem, label)
        };
        let result = result.and_then(|d| {
            notify(
                &mut q.queue,
                &self.mem,
                q.index,
                d.used,
                self.interrupt.as_ref(),
            )?;
            Ok(d.more)
        });
        match result {
            // Another pass through epoll, after the handles had a chance at the lock.
            Ok(true) => {
                let _ = self.shared.wake.write(1);
            }
            Ok(false) => {}
            Err(e) => warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {label}: guest error: event queue: {e}"
            ),
        }
    }

    fn serve_status(&mut self) {
        let label = self.shared.profile.label;
        let Some(q) = self.queues.status.as_mut() else {
            return;
        };
        let result = drain_status(&mut q.queue, &self.mem, label).and_then(|used| {
            notify(
                &mut q.queue,
                &self.mem,
                q.index,
                used,
                self.interrupt.as_ref(),
            )
        });
        if let Err(e) = result {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {label}: guest error: status queue: {e}"
            );
        }
    }
}

/// The worker thread's body: until `kill` fires, serve the event queue when the driver
/// notifies it or a handle queued events, and the status queue when the driver notifies
/// it.
pub(super) fn run(
    shared: Arc<Shared>,
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queues: Queues,
    kill: EventFd,
) {
    let label = shared.profile.label;
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log::error!("virtio-input {label}: epoll: {e}");
            return;
        }
    };
    let mut fds = vec![
        (queues.event.notify.as_raw_fd(), EVENTQ_TOKEN),
        (shared.wake.as_raw_fd(), WAKE_TOKEN),
        (kill.as_raw_fd(), KILL_TOKEN),
    ];
    if let Some(q) = &queues.status {
        fds.push((q.notify.as_raw_fd(), STATUSQ_TOKEN));
    }
    for (fd, token) in fds {
        let ev = EpollEvent::new(EventSet::IN, token);
        if let Err(e) = epoll.ctl(ControlOperation::Add, fd, ev) {
            log::error!("virtio-input {label}: epoll add: {e}");
            return;
        }
    }
    let mut w = Worker {
        shared,
        mem,
        interrupt,
        queues,
    };
    // Buffers and events that came before the worker.
    w.serve_status();
    w.serve_events();
    let mut events = [EpollEvent::default(); 4];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("virtio-input {label}: epoll wait: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            // Non-blocking eventfds: a spurious wakeup reads EAGAIN, which is fine.
            match ev.data() {
                KILL_TOKEN => return,
                EVENTQ_TOKEN => {
                    let _ = w.queues.event.notify.read();
                    w.serve_events();
                }
                WAKE_TOKEN => {
                    let _ = w.shared.wake.read();
                    w.serve_events();
                }
                STATUSQ_TOKEN => {
                    if let Some(q) = &w.queues.status {
                        let _ = q.notify.read();
                    }
                    w.serve_status();
                }
                _ => {}
            }
        }
    }
}
