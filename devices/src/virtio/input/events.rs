//! Input events and the bounded queue of the ones waiting for guest buffers.

use std::collections::VecDeque;

use super::config::codes::{EV_SYN, SYN_REPORT};

/// Size of one event on the queues: `le16 type; le16 code; le32 value`.
pub(super) const EVENT_SIZE: usize = 8;

/// How many events may wait for guest buffers; beyond that the oldest groups are dropped.
pub const PENDING_EVENTS: usize = 1024;

/// The most events one injection produces: X, Y, three buttons, the wheel and `EV_SYN`.
pub(super) const MAX_GROUP: usize = 7;

/// One evdev event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Event {
    pub kind: u16,
    pub code: u16,
    pub value: u32,
}

impl Event {
    pub const fn new(kind: u16, code: u16, value: u32) -> Self {
        Event { kind, code, value }
    }

    /// `EV_SYN`/`SYN_REPORT`, the end of a group.
    pub const SYN: Event = Event::new(EV_SYN, SYN_REPORT, 0);

    pub fn is_syn(&self) -> bool {
        *self == Self::SYN
    }

    /// The wire format.
    pub fn to_le_bytes(self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[0..2].copy_from_slice(&self.kind.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    pub fn from_le_bytes(b: [u8; EVENT_SIZE]) -> Self {
        Event {
            kind: u16::from_le_bytes([b[0], b[1]]),
            code: u16::from_le_bytes([b[2], b[3]]),
            value: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// The events of one injection, ending with `EV_SYN` (no allocation).
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    events: [Event; MAX_GROUP],
    len: usize,
}

impl Group {
    pub fn new() -> Self {
        Group {
            events: [Event::SYN; MAX_GROUP],
            len: 0,
        }
    }

    /// Adds an event; a full group keeps room for the final `EV_SYN` and ignores more.
    pub fn push(&mut self, e: Event) {
        if self.len + 1 < MAX_GROUP {
            self.events[self.len] = e;
            self.len += 1;
        }
    }

    /// The events with the terminating `EV_SYN`.
    pub fn finish(mut self) -> Self {
        self.events[self.len] = Event::SYN;
        self.len += 1;
        self
    }

    pub fn events(&self) -> &[Event] {
        &self.events[..self.len]
    }
}

/// Events waiting for guest buffers: whole `EV_SYN`-terminated groups, at most `capacity`
/// events. A new group that does not fit pushes out the oldest groups, so what the guest
/// gets late is still whole groups in order, and a waiting press is never kept while the
/// release after it is dropped (a release whose press was dropped is ignored by the guest).
#[derive(Debug)]
pub(super) struct Pending {
    events: VecDeque<Event>,
    capacity: usize,
}

impl Pending {
    pub fn new(capacity: usize) -> Self {
        Pending {
            events: VecDeque::new(),
            capacity,
        }
    }

    /// Queues `group` (which ends with `EV_SYN`); returns how many old groups were dropped
    /// to make room. A group larger than the whole queue is dropped itself (counted as 1).
    pub fn push_group(&mut self, group: &[Event]) -> usize {
        if group.len() > self.capacity {
            return 1;
        }
        let mut dropped = 0;
        while self.events.len() + group.len() > self.capacity {
            while let Some(e) = self.events.pop_front() {
                if e.is_syn() {
                    break;
                }
            }
            dropped += 1;
        }
        self.events.extend(group.iter().copied());
        dropped
    }

    /// The number of events up to and including the first `EV_SYN` (0 when empty).
    pub fn first_group_len(&self) -> usize {
        self.events
            .iter()
            .position(Event::is_syn)
            .map_or(self.events.len(), |i| i + 1)
    }

    pub fn front(&self) -> Option<Event> {
        self.events.front().copied()
    }

    pub fn pop_front(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn clear(&mut self) {
        self.events.clear();
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: u16) -> [Event; 2] {
        [Event::new(1, code, 1), Event::SYN]
    }

    #[test]
    fn events_have_the_little_endian_wire_format() {
        let e = Event::new(0x0003, 0x0001, 0xfffe_0102);
        assert_eq!(e.to_le_bytes(), [3, 0, 1, 0, 0x02, 0x01, 0xfe, 0xff]);
        assert_eq!(Event::from_le_bytes(e.to_le_bytes()), e);
    }

    #[test]
    fn a_group_always_ends_with_syn_and_never_overflows() {
        let mut g = Group::new();
        for code in 0..20 {
            g.push(Event::new(1, code, 1));
        }
        let g = g.finish();
        assert_eq!(g.events().len(), MAX_GROUP);
        assert!(g.events().last().unwrap().is_syn());
        assert_eq!(g.events()[5], Event::new(1, 5, 1));
        assert_eq!(Group::new().finish().events(), [Event::SYN]);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_whole_groups() {
        let mut p = Pending::new(6);
        assert_eq!(p.push_group(&key(1)), 0);
        let three = [Event::new(1, 2, 1), Event::new(1, 3, 1), Event::SYN];
        assert_eq!(p.push_group(&three), 0);
        assert_eq!(p.len(), 5);
        // 5 + 2 > 6: key 1's group goes, the rest stays in order.
        assert_eq!(p.push_group(&key(4)), 1);
        let codes: Vec<u16> = p.iter().map(|e| e.code).collect();
        assert_eq!(codes, [2, 3, 0, 4, 0]);
        // 5 + 3 > 6: the oldest group (3 events) makes enough room.
        assert_eq!(p.push_group(&three), 1);
        assert_eq!(p.len(), 5);
        assert_eq!(p.push_group(&[Event::SYN; 5]), 2);
        assert_eq!(p.len(), 5);
        assert!(p.iter().all(Event::is_syn));
    }

    #[test]
    fn the_queue_never_grows_past_its_capacity() {
        let mut p = Pending::new(PENDING_EVENTS);
        let mut dropped = 0;
        for i in 0..10_000u16 {
            dropped += p.push_group(&key(i));
            assert!(p.len() <= PENDING_EVENTS);
        }
        assert_eq!(p.len(), PENDING_EVENTS);
        assert_eq!(dropped, 10_000 - PENDING_EVENTS / 2);
        // The newest groups are the ones kept.
        assert_eq!(p.front().unwrap().code, 10_000 - PENDING_EVENTS as u16 / 2);
        assert_eq!(Pending::new(2).push_group(&[Event::SYN; 3]), 1);
    }

    #[test]
    fn first_group_len_counts_up_to_the_first_syn() {
        let mut p = Pending::new(16);
        assert_eq!(p.first_group_len(), 0);
        p.push_group(&[Event::new(3, 0, 5), Event::new(3, 1, 6), Event::SYN]);
        p.push_group(&key(9));
        assert_eq!(p.first_group_len(), 3);
        p.pop_front();
        assert_eq!(p.first_group_len(), 2);
        p.pop_front();
        p.pop_front();
        assert_eq!(p.first_group_len(), 2);
        p.clear();
        assert!(p.is_empty());
    }
}
