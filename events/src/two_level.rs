//! The 2-level event channel ABI, guest side: Xen sets a port's bit in
//! `shared_info.evtchn_pending`, then (unless the port's `evtchn_mask` bit is set) the bit of
//! its 64-port word in `vcpu_info.evtchn_pending_sel`, then `evtchn_upcall_pending`, and
//! enters the guest's upcall, which calls [`TwoLevel::demux`].
//!
//! Xen changes these words concurrently with us, so every access is atomic and read-modify-
//! writes are locked instructions, as in Xen's own `evtchn_2l_set_pending`.

use core::mem::{align_of, offset_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use xen_sys::{shared_info, vcpu_info, xen_ulong_t};

use crate::abi::{BadPort, DemuxReport, EventAbi, Unmask};
use crate::{Port, PortOwners};

const WORD_BITS: usize = 64;
/// `evtchn_pending` has one bit per port and as many words as a word has bits.
const WORDS: usize = 64;
/// Ports the 2-level ABI can name on x86-64.
pub const NR_PORTS: usize = WORDS * WORD_BITS;

// The atomic views below reinterpret Xen's fields; they must agree in size and alignment.
const _: () = assert!(size_of::<AtomicU64>() == size_of::<xen_ulong_t>());
const _: () = assert!(align_of::<AtomicU64>() == align_of::<xen_ulong_t>());
// Offsets from `public/xen.h` for x86-64, checked with a C program: xen-sys is bindgen
// output, so these guard against it describing another Xen.
const _: () = assert!(offset_of!(shared_info, evtchn_pending) == 2048);
const _: () = assert!(offset_of!(shared_info, evtchn_mask) == 2560);
const _: () = assert!(size_of::<shared_info>() == 3136);
const _: () = assert!(offset_of!(vcpu_info, evtchn_upcall_pending) == 0);
const _: () = assert!(offset_of!(vcpu_info, evtchn_pending_sel) == 8);

// The guest keeps its view in a `static` and reaches it from any context.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<TwoLevel<'static>>();
};

/// The 2-level event state of one vCPU and where its last scan stopped.
///
/// Shared by reference: see [`EventAbi`] for which calls may overlap.
pub struct TwoLevel<'a> {
    pending: &'a [AtomicU64; WORDS],
    mask: &'a [AtomicU64; WORDS],
    pending_sel: &'a AtomicU64,
    upcall_pending: &'a AtomicU8,
    /// The port the next scan starts at, just after the last port delivered, so a port that
    /// fires again and again cannot keep higher ports waiting. Only `demux` touches it, and
    /// it never runs concurrently with itself, so relaxed accesses suffice.
    resume: AtomicUsize,
    /// With more than one vCPU: which ports are whose, and this vCPU's number (see
    /// [`for_vcpu`](Self::for_vcpu)).
    owners: Option<(&'a PortOwners, u8)>,
}

impl<'a> TwoLevel<'a> {
    /// Views the event fields of `shared` and `vcpu` as atomics.
    ///
    /// For a given vCPU there must be one `TwoLevel` at a time that [`demux`](Self::demux)
    /// is called on, as the scan's resume point lives here; other views may serve the port
    /// operations.
    ///
    /// # Safety
    /// 1. `shared` points to this domain's `shared_info` and `vcpu` to this vCPU's
    ///    `vcpu_info` (inside `shared_info` or registered elsewhere), both mapped and
    ///    writable for `'a`.
    /// 2. For `'a`, this domain accesses `evtchn_pending`, `evtchn_mask`,
    ///    `evtchn_pending_sel` and `evtchn_upcall_pending` only atomically.
    pub unsafe fn new(shared: NonNull<shared_info>, vcpu: NonNull<vcpu_info>) -> Self {
        let s = shared.as_ptr();
        let v = vcpu.as_ptr();
        // SAFETY: the fields are in bounds of live objects (contract 1); the atomic types
        // match them in size and alignment (asserted above) and contract 2 rules out
        // non-atomic access for as long as the references live.
        unsafe {
            TwoLevel {
                pending: &*(&raw const (*s).evtchn_pending).cast::<[AtomicU64; WORDS]>(),
                mask: &*(&raw const (*s).evtchn_mask).cast::<[AtomicU64; WORDS]>(),
                pending_sel: &*(&raw const (*v).evtchn_pending_sel).cast::<AtomicU64>(),
                upcall_pending: &*(&raw const (*v).evtchn_upcall_pending).cast::<AtomicU8>(),
                resume: AtomicUsize::new(0),
                owners: None,
            }
        }
    }

    /// Makes this the view of vCPU `vcpu` in a domain where ports are bound to several:
    /// [`demux`](Self::demux) delivers only the ports `owners` records as this vCPU's (Xen
    /// marked the others' words in their own `evtchn_pending_sel`), and unmasking another
    /// vCPU's port is left to Xen, which notifies the right vCPU.
    pub fn for_vcpu(self, owners: &'a PortOwners, vcpu: u8) -> Self {
        TwoLevel { owners: Some((owners, vcpu)), ..self }
    }

    /// Of `bits` in `word`, those of ports this view delivers.
    fn own(&self, word: usize, bits: u64) -> u64 {
        let Some((owners, me)) = self.owners else { return bits };
        let mut own = bits;
        let mut rest = bits;
        while rest != 0 {
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if owners.get(Port((word * WORD_BITS + bit) as u32)) != me {
                own &= !(1 << bit);
            }
        }
        own
    }

    fn owned_elsewhere(&self, port: Port) -> bool {
        self.owners.is_some_and(|(owners, me)| owners.get(port) != me)
    }

    fn locate(port: Port) -> Result<(usize, u64), BadPort> {
        let p = port.0 as usize;
        if p < NR_PORTS {
            Ok((p / WORD_BITS, 1 << (p % WORD_BITS)))
        } else {
            Err(BadPort(port))
        }
    }

    /// Delivers every pending, unmasked event to `handle`, once per event, until no upcall
    /// is pending. Each port's pending bit is cleared before its handler runs, so an event
    /// raised during the handler is delivered again rather than lost.
    ///
    /// Scanning resumes just after the last port delivered (word and bit), as Linux's
    /// `evtchn_2l_handle_events` does, so a busy low port cannot starve higher ones.
    ///
    /// Handlers may mask, unmask and clear ports through `self`: the mask is read again
    /// before each port is taken, so a port masked by an earlier handler keeps its event.
    /// Must not run concurrently with itself for this vCPU (see [`EventAbi`]).
    pub fn demux(&self, mut handle: impl FnMut(Port)) -> DemuxReport {
        let mut delivered = 0u32;
        let mut count = |port| {
            delivered = delivered.saturating_add(1);
            handle(port);
        };
        loop {
            self.upcall_pending.store(0, Ordering::SeqCst);
            self.scan(&mut count);
            if self.upcall_pending.load(Ordering::SeqCst) == 0 {
                return DemuxReport { delivered, ..DemuxReport::default() };
            }
        }
    }

    /// One pass over the words selected in `evtchn_pending_sel`.
    fn scan(&self, handle: &mut impl FnMut(Port)) {
        let mut words = self.pending_sel.swap(0, Ordering::SeqCst);
        let resume = self.resume.load(Ordering::Relaxed);
        let start_word = resume / WORD_BITS;
        let start_bit = resume % WORD_BITS;
        let mut word = start_word;
        let mut first_visit = true;

        while words != 0 {
            let ahead = words & (u64::MAX << word);
            if ahead == 0 {
                word = 0;
                first_visit = false;
                continue;
            }
            word = ahead.trailing_zeros() as usize;

            // The start word is scanned twice: from the resume bit up on the first visit,
            // then whole after wrapping around, so its lower bits come last.
            let resuming = word == start_word && first_visit;
            let mut bit = if resuming { start_bit } else { 0 };
            loop {
                // Read afresh for each port: the last handler may have masked the next one.
                let active = self.own(
                    word,
                    self.pending[word].load(Ordering::SeqCst)
                        & !self.mask[word].load(Ordering::SeqCst),
                );
                let bits = active & (u64::MAX << bit);
                if bits == 0 {
                    break;
                }
                bit = bits.trailing_zeros() as usize;
                let b = 1 << bit;
                // Only the guest clears pending bits; a bit already clear was taken by
                // another vCPU and is not ours to deliver.
                if self.pending[word].fetch_and(!b, Ordering::SeqCst) & b != 0 {
                    handle(Port((word * WORD_BITS + bit) as u32));
                }
                let next = word * WORD_BITS + bit + 1;
                self.resume.store(next % NR_PORTS, Ordering::Relaxed);
                bit = next % WORD_BITS;
                if bit == 0 {
                    break;
                }
            }

            if !resuming {
                words &= !(1 << word);
            }
            word = (word + 1) % WORDS;
            first_visit = false;
        }
    }
}

impl EventAbi for TwoLevel<'_> {
    fn demux(&self, handle: &mut dyn FnMut(Port)) -> DemuxReport {
        TwoLevel::demux(self, handle)
    }

    /// Stops `port` from interrupting us; its events stay pending until [`unmask`](Self::unmask).
    fn mask(&self, port: Port) -> Result<(), BadPort> {
        let (word, bit) = Self::locate(port)?;
        self.mask[word].fetch_or(bit, Ordering::SeqCst);
        Ok(())
    }

    /// Lets `port` interrupt us again. An event that arrived while masked did not mark its
    /// word in `evtchn_pending_sel`; this marks it, as Xen would have, and returns
    /// [`Unmask::ForceUpcallCheck`] if that made an upcall pending: Xen delivers it on its
    /// next return to the guest (a running [`demux`](Self::demux) picks it up too). A port
    /// of another vCPU stays masked, and [`Unmask::NeedsHypercall`] has Xen unmask it and
    /// notify that vCPU.
    fn unmask(&self, port: Port) -> Result<Unmask, BadPort> {
        let (word, bit) = Self::locate(port)?;
        if self.owned_elsewhere(port) {
            return Ok(Unmask::NeedsHypercall);
        }
        self.mask[word].fetch_and(!bit, Ordering::SeqCst);
        if self.pending[word].load(Ordering::SeqCst) & bit == 0 {
            return Ok(Unmask::Done);
        }
        let sel = 1 << word;
        if self.pending_sel.fetch_or(sel, Ordering::SeqCst) & sel != 0 {
            // The word was already selected, so an upcall is already on its way.
            return Ok(Unmask::Done);
        }
        self.upcall_pending.store(1, Ordering::SeqCst);
        Ok(Unmask::ForceUpcallCheck)
    }

    /// Whether an event is pending on `port` (masked or not).
    fn is_pending(&self, port: Port) -> Result<bool, BadPort> {
        let (word, bit) = Self::locate(port)?;
        Ok(self.pending[word].load(Ordering::SeqCst) & bit != 0)
    }

    /// Consumes a pending event on `port` without delivering it: for a masked port that
    /// is polled (SCHEDOP_poll) rather than served by the upcall.
    fn clear_pending(&self, port: Port) -> Result<bool, BadPort> {
        let (word, bit) = Self::locate(port)?;
        Ok(self.pending[word].fetch_and(!bit, Ordering::SeqCst) & bit != 0)
    }

    fn max_ports(&self) -> u32 {
        NR_PORTS as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{FakeXen, TwoLevelXen};

    fn delivered(ev: &TwoLevel<'_>) -> Vec<u32> {
        let mut out = Vec::new();
        ev.demux(|p| out.push(p.0));
        out
    }

    #[test]
    fn single_event_once() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        mem.raise(5);
        assert_eq!(ev.upcall_pending.load(Ordering::SeqCst), 1);
        assert_eq!(delivered(&ev), [5]);
        assert_eq!(ev.upcall_pending.load(Ordering::SeqCst), 0);
        assert_eq!(ev.pending_sel.load(Ordering::SeqCst), 0);
        assert_eq!(ev.pending[0].load(Ordering::SeqCst), 0);
        assert_eq!(delivered(&ev), []);
    }

    #[test]
    fn repeated_raises_before_delivery_coalesce() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        mem.raise(9);
        mem.raise(9);
        assert_eq!(delivered(&ev), [9]);
    }

    #[test]
    fn many_events_across_words() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        let ports = [0, 1, 63, 64, 127, 128, 2048, 2049, 4032, 4095];
        for &p in ports.iter().rev() {
            mem.raise(p);
        }
        assert_eq!(delivered(&ev), ports);
        assert!(ev.pending.iter().all(|w| w.load(Ordering::SeqCst) == 0));
    }

    #[test]
    fn every_port_is_deliverable() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        for p in 0..NR_PORTS as u32 {
            mem.raise(p);
        }
        let mut got = delivered(&ev);
        got.sort_unstable();
        assert_eq!(got, (0..NR_PORTS as u32).collect::<Vec<_>>());
    }

    #[test]
    fn polled_ports_are_read_and_cleared_without_delivery() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        ev.mask(Port(70)).unwrap();
        assert_eq!(ev.is_pending(Port(70)), Ok(false));
        mem.raise(70);
        assert_eq!(ev.is_pending(Port(70)), Ok(true));
        assert_eq!(ev.clear_pending(Port(70)), Ok(true));
        assert_eq!(ev.clear_pending(Port(70)), Ok(false));
        assert_eq!(ev.unmask(Port(70)), Ok(Unmask::Done), "nothing left to deliver");
        assert_eq!(delivered(&ev), []);
        assert_eq!(ev.is_pending(Port(4096)), Err(BadPort(Port(4096))));
    }

    #[test]
    fn masked_events_stay_pending_until_unmasked() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        ev.mask(Port(9)).unwrap();
        mem.raise(9);
        mem.raise(10);
        assert_eq!(delivered(&ev), [10]);
        assert_ne!(ev.pending[0].load(Ordering::SeqCst) & (1 << 9), 0, "still pending");
        // A masked event does not select its word or raise an upcall on its own.
        ev.mask(Port(11)).unwrap();
        ev.mask(Port(200)).unwrap();
        mem.raise(11);
        mem.raise(200);
        assert_eq!(ev.upcall_pending.load(Ordering::SeqCst), 0);
        assert_eq!(delivered(&ev), []);

        assert_eq!(ev.unmask(Port(9)), Ok(Unmask::ForceUpcallCheck));
        assert_eq!(ev.unmask(Port(11)), Ok(Unmask::Done), "word 0 already selected");
        assert_eq!(ev.unmask(Port(200)), Ok(Unmask::ForceUpcallCheck));
        // The scan resumes after port 10, the last one delivered.
        assert_eq!(delivered(&ev), [11, 200, 9]);
        // Unmasking a port with nothing pending raises nothing.
        ev.mask(Port(9)).unwrap();
        assert_eq!(ev.unmask(Port(9)), Ok(Unmask::Done));
        assert_eq!(delivered(&ev), []);
    }

    #[test]
    fn each_vcpu_delivers_only_its_own_ports() {
        let x = TwoLevelXen::new();
        let owners = PortOwners::new();
        let (boot, other) = (x.view_of(&owners, 0), x.view_of(&owners, 1));
        // Ports 5 and 6 share a word; 6 and 70 are vCPU 1's.
        for p in [5, 6, 70] {
            boot.unmask(Port(p)).unwrap();
        }
        owners.set(Port(6), 1).unwrap();
        owners.set(Port(70), 1).unwrap();
        x.raise_on(5, 0);
        x.raise_on(6, 1);
        x.raise_on(70, 1);
        assert_eq!(x.upcall_pending_of(1).load(Ordering::SeqCst), 1);
        assert_eq!(delivered(&boot), [5]);
        assert_eq!(boot.is_pending(Port(6)), Ok(true), "left for its vCPU");
        assert_eq!(delivered(&other), [6, 70]);
        assert_eq!(delivered(&boot), []);

        // Unmasking another vCPU's port is Xen's to do, so that its vCPU hears of it.
        boot.mask(Port(6)).unwrap();
        x.raise_on(6, 1);
        assert_eq!(delivered(&other), []);
        assert_eq!(boot.unmask(Port(6)), Ok(Unmask::NeedsHypercall));
        assert_eq!(delivered(&other), [], "still masked");
        x.unmask_hypercall(6, 1);
        assert_eq!(delivered(&boot), []);
        assert_eq!(delivered(&other), [6]);
        assert_eq!(other.unmask(Port(6)), Ok(Unmask::Done));
    }

    #[test]
    fn bad_ports_are_errors() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        assert_eq!(ev.mask(Port(4096)), Err(BadPort(Port(4096))));
        assert_eq!(ev.unmask(Port(u32::MAX)), Err(BadPort(Port(u32::MAX))));
    }

    #[test]
    fn a_self_raising_port_does_not_starve_higher_ones() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        mem.raise(1);
        mem.raise(2);
        mem.raise(4000);
        let mut order = Vec::new();
        ev.demux(|p| {
            order.push(p.0);
            // Port 1 fires again every time it is handled, for a while.
            if p.0 == 1 && order.len() < 50 {
                mem.raise(1);
            }
        });
        let first = |port| order.iter().position(|&p| p == port).unwrap();
        assert!(first(2) <= 2 && first(4000) <= 2, "{order:?}");
        assert_eq!(order.iter().filter(|&&p| p == 2).count(), 1);
        assert_eq!(order.iter().filter(|&&p| p == 4000).count(), 1);
        assert!(order.iter().filter(|&&p| p == 1).count() >= 25);
    }

    #[test]
    fn scanning_resumes_after_the_last_port_delivered() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        mem.raise(70);
        assert_eq!(delivered(&ev), [70]);
        assert_eq!(ev.resume.load(Ordering::Relaxed), 64 + 7);
        // Next time: the rest of word 1, later words, then from the top, word 1 last.
        for p in [3, 65, 71, 200] {
            mem.raise(p);
        }
        assert_eq!(delivered(&ev), [71, 200, 3, 65]);
    }

    #[test]
    fn resume_point_wraps_past_the_last_port() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        mem.raise(4095);
        assert_eq!(delivered(&ev), [4095]);
        assert_eq!(ev.resume.load(Ordering::Relaxed), 0);
        mem.raise(127);
        mem.raise(64);
        assert_eq!(delivered(&ev), [64, 127]);
        assert_eq!(ev.resume.load(Ordering::Relaxed), 2 * 64);
    }

    #[test]
    fn each_event_is_handled_exactly_once_under_interleaving() {
        let mem = TwoLevelXen::new();
        let ev = mem.abi();
        let x = mem.abi();
        let mut raised = vec![0u32; NR_PORTS];
        let mut handled = vec![0u32; NR_PORTS];
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..200 {
            // Raise distinct ports (a port raised twice before delivery is one event).
            for _ in 0..20 {
                let p = next() % NR_PORTS as u32;
                if x.pending[p as usize / 64].load(Ordering::SeqCst) & (1 << (p % 64)) == 0 {
                    mem.raise(p);
                    raised[p as usize] += 1;
                }
            }
            ev.demux(|p| {
                handled[p.0 as usize] += 1;
                // Handlers raise other events sometimes, as completions do.
                let q = next() % NR_PORTS as u32;
                if q.is_multiple_of(4)
                    && x.pending[q as usize / 64].load(Ordering::SeqCst) & (1 << (q % 64)) == 0
                {
                    mem.raise(q);
                    raised[q as usize] += 1;
                }
            });
        }
        assert_eq!(raised, handled);
    }
}
