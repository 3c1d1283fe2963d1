//! The table of requests in flight on a request/response ring, one slot per ring entry,
//! for every frontend: a request's id on the ring names its slot and the use of that slot
//! (`generation * size + index`), so a response that names a free slot, or an earlier use
//! of a busy one, or no slot at all, is recognised as bogus and touches nothing. The id is
//! the backend's claim about which request it answers; only [`SlotTable::take`] turns it
//! back into a request, and only once.

use alloc::vec::Vec;

struct Slot<T> {
    generation: u64,
    busy: Option<T>,
}

/// A free slot set aside for a request being built, and the id its request carries. It
/// goes back with [`SlotTable::fill`] (the request is on the ring) or
/// [`SlotTable::cancel`] (it never got there).
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Reservation {
    index: usize,
    id: u64,
}

impl Reservation {
    /// The id the request must carry on the ring.
    pub fn id(&self) -> u64 {
        self.id
    }
}

pub struct SlotTable<T> {
    slots: Vec<Slot<T>>,
    /// Free indices; popped from the end, so slots are handed out from index 0 up.
    free: Vec<usize>,
    /// Uses of a slot its ids tell apart: as many as fit beside the index in the id's bits.
    generations: u64,
}

impl<T> SlotTable<T> {
    /// A table of `size` slots whose ids fit `id_bits` bits (16 for netif's transmit ids,
    /// 64 for blkif's).
    ///
    /// # Panics
    /// If `size` is 0 or above `2^id_bits`: the driver's constants, not the backend's.
    pub fn new(size: usize, id_bits: u32) -> Self {
        let ids = if id_bits >= 64 { u128::from(u64::MAX) + 1 } else { 1u128 << id_bits };
        assert!(size > 0 && size as u128 <= ids, "{size} slots do not fit {id_bits}-bit ids");
        // At most 2^32 generations: `generation * size + index` then fits 64 bits for any
        // size a ring has (<= 2^32 entries).
        let generations = (ids / size as u128).min(1 << 32) as u64;
        SlotTable {
            slots: (0..size).map(|_| Slot { generation: 0, busy: None }).collect(),
            free: (0..size).rev().collect(),
            generations,
        }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Slots holding a request (or reserved for one).
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// A free slot for the next request, or `None` if every slot is in use.
    pub fn reserve(&mut self) -> Option<Reservation> {
        let index = self.free.pop()?;
        let id = self.slots[index].generation * self.slots.len() as u64 + index as u64;
        Some(Reservation { index, id })
    }

    /// The request of `r` went on the ring: its slot holds `value` until the response.
    pub fn fill(&mut self, r: Reservation, value: T) {
        self.slots[r.index].busy = Some(value);
    }

    /// The request of `r` never reached the ring: the slot is free again, its id unused.
    pub fn cancel(&mut self, r: Reservation) {
        self.free.push(r.index);
    }

    /// The busy slot `id` names, if it names one.
    fn index_of(&self, id: u64) -> Option<usize> {
        let size = self.slots.len() as u64;
        let (index, generation) = ((id % size) as usize, id / size);
        let slot = &self.slots[index];
        (slot.generation == generation && slot.busy.is_some()).then_some(index)
    }

    /// The request `id` names, if it is in flight.
    pub fn get(&self, id: u64) -> Option<&T> {
        self.index_of(id).and_then(|i| self.slots[i].busy.as_ref())
    }

    /// Takes the request `id` names out of the table (`None`: a bogus id). Its slot is
    /// free, and its next use has another id.
    pub fn take(&mut self, id: u64) -> Option<T> {
        let index = self.index_of(id)?;
        self.release(index)
    }

    fn release(&mut self, index: usize) -> Option<T> {
        let slot = &mut self.slots[index];
        let value = slot.busy.take()?;
        slot.generation = (slot.generation + 1) % self.generations;
        self.free.push(index);
        Some(value)
    }

    /// Takes every request in flight out of the table (the device is stopping).
    pub fn take_all(&mut self) -> Vec<T> {
        (0..self.slots.len()).filter_map(|i| self.release(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_one_use_of_one_slot() {
        let mut t = SlotTable::new(4, 16);
        let r = t.reserve().unwrap();
        let id = r.id();
        assert_eq!(id, 0);
        t.fill(r, "a");
        assert_eq!(t.get(id), Some(&"a"));
        assert_eq!(t.take(id), Some("a"));
        assert_eq!(t.take(id), None, "a duplicate response");
        // The slot's next use has another id; the old one names nothing.
        let r = t.reserve().unwrap();
        assert_eq!(r.id(), 4);
        t.fill(r, "b");
        assert_eq!(t.take(0), None);
        assert_eq!(t.take(4), Some("b"));
    }

    #[test]
    fn bogus_ids_touch_nothing() {
        let mut t = SlotTable::new(8, 64);
        let r = t.reserve().unwrap();
        let id = r.id();
        t.fill(r, 1);
        for bogus in [id + 1, id + 8, id + (1 << 32), u64::MAX, 7] {
            assert_eq!(t.take(bogus), None, "{bogus:#x}");
        }
        assert_eq!((t.in_use(), t.take(id)), (1, Some(1)));
    }

    #[test]
    fn generations_wrap_within_the_id_bits() {
        // 256 slots, 16-bit ids: 256 generations.
        let mut t = SlotTable::new(256, 16);
        let mut last = 0;
        for _ in 0..300 {
            let r = t.reserve().unwrap();
            last = r.id();
            assert!(last <= u64::from(u16::MAX));
            t.fill(r, ());
            t.take(last).unwrap();
        }
        // Slot 0 is used every time (freed slots go back on top): 300 % 256 = 44 uses past
        // its first wrap.
        assert_eq!(last, 43 * 256);
    }

    #[test]
    fn reservations_cancel_and_the_table_fills() {
        let mut t = SlotTable::new(2, 16);
        let a = t.reserve().unwrap();
        let b = t.reserve().unwrap();
        assert!(t.reserve().is_none());
        assert_eq!(t.free(), 0);
        let b_id = b.id();
        t.cancel(b);
        let again = t.reserve().unwrap();
        assert_eq!(again.id(), b_id, "a cancelled id was never used");
        t.fill(a, 'a');
        t.fill(again, 'b');
        let mut all = t.take_all();
        all.sort();
        assert_eq!((all, t.in_use()), (vec!['a', 'b'], 0));
    }

    #[test]
    #[should_panic]
    fn more_slots_than_ids_is_the_drivers_bug() {
        let _ = SlotTable::<()>::new(1 << 17, 16);
    }
}
