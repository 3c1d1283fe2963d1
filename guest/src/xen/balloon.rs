//! The balloon driver: follows the toolstack's `memory/target` (`xl mem-set`), giving free
//! pages back to Xen and taking them again, so that `xl list` shows what the toolstack asked
//! for. Only pages the frame allocator holds free go (never one in use, granted or pinned),
//! and a reserve stays so the guest keeps working; a target it cannot reach is an ERROR line
//! with the shortfall, and the balloon tries again as memory frees up.

use super::xenstore;
use crate::mm::balloon::{Balloon, Reservation, Short, Step};
use crate::mm::{self, balloon::BATCH};
use crate::pvops::{self, Backend};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use xenbus::control::{self, Feature};

/// Free frames the balloon leaves the guest: room for the heap to grow by a region and for
/// the drivers' pages.
const RESERVE_FRAMES: u64 = 512;
/// Batches moved per [`service`] call, so that a large change does not hold up the loop
/// that calls it (the network, the toolstack's requests) for long.
const BATCHES_PER_SERVICE: usize = 16;

const KIB_PER_PAGE: u64 = crate::arch::PAGE_SIZE / 1024;

struct State {
    balloon: Balloon,
    /// Xen's page count minus ours at the first target: what `memory/target` counts that the
    /// balloon does not (0 under PV, where the two agree).
    offset: i64,
    /// Xen's count at the first target. Under PVH it falls a little as grant-table frames
    /// are placed over RAM pages, which Xen frees: a target up to here with nothing out is
    /// reached (those pages are Xen's to give back, not ours to ask for).
    boot_pages: u64,
    /// The last shortfall said, so a stuck balloon says it once per target, not per try.
    said: Option<(u64, Short)>,
    /// Whether reaching the current target was said.
    reached_said: bool,
}

impl State {
    fn say_reached(&mut self) {
        if !self.reached_said {
            self.reached_said = true;
            crate::println!(
                "balloon: at target {} KiB: {} pages, {} given back",
                TARGET_KIB.load(Ordering::SeqCst),
                Platform.pages(),
                self.balloon.pages_out()
            );
        }
    }
}

static STATE: spin::Mutex<Option<State>> = spin::Mutex::new(None);
/// `memory/target` as last read, in KiB, for [`service`] to apply.
static TARGET_KIB: AtomicU64 = AtomicU64::new(0);
static TARGET_NEWS: AtomicBool = AtomicBool::new(false);

/// The balloon's side of the frame allocator and Xen (the self-tests use it directly).
pub struct Platform;

impl Reservation for Platform {
    fn pages(&mut self) -> u64 {
        match hypercall::ops::current_reservation() {
            Ok(p) => p,
            Err(e) => {
                // Steering blind would be worse than stopping: a count of 0 stops a shrink,
                // and a grow finds nothing out or is refused.
                log::error!("balloon: XENMEM_current_reservation: {e}");
                0
            }
        }
    }

    fn take_unused(&mut self) -> Option<u64> {
        if mm::frame_stats().0 <= RESERVE_FRAMES {
            return None;
        }
        mm::alloc_frame().ok()
    }

    fn put_unused(&mut self, pfn: u64) {
        if let Err(e) = mm::free_frame(pfn) {
            log::error!("balloon: pfn {pfn:#x} back to the allocator: {e:?}");
        }
    }

    fn give_back(&mut self, pfns: &[u64]) -> usize {
        match pvops::backend() {
            // SAFETY: the frames came from the allocator and nothing else has them.
            Backend::XenPv => unsafe { crate::arch::xen_pv::give_back(pfns) },
            // SAFETY: as above; nothing touches a frame the allocator does not hand out.
            Backend::XenPvh => unsafe { crate::arch::xen_pvh::give_back(pfns) },
            Backend::Native => 0,
        }
    }

    fn populate(&mut self, pfns: &[u64]) -> usize {
        match pvops::backend() {
            Backend::XenPv => crate::arch::xen_pv::populate(pfns),
            Backend::XenPvh => crate::arch::xen_pvh::populate(pfns),
            Backend::Native => 0,
        }
    }
}

fn read_target(xs: &mut xenbus::Xenstore<xenstore::Channel>) {
    match control::read_kib(xs, control::MEMORY_TARGET_PATH) {
        Ok(kib) => {
            TARGET_KIB.store(kib, Ordering::SeqCst);
            TARGET_NEWS.store(true, Ordering::SeqCst);
        }
        Err(e) => log::warn!("balloon: {}: {e}; target unchanged", control::MEMORY_TARGET_PATH),
    }
}

/// Starts following `memory/target` (Xen only). Without the watch the guest keeps its boot
/// memory, as it did before there was a balloon.
pub fn arm() {
    if !pvops::is_xen() {
        return;
    }
    let pages = match hypercall::ops::current_reservation() {
        Ok(p) => p,
        Err(e) => {
            log::error!("balloon: XENMEM_current_reservation: {e}; xl mem-set will not work");
            return;
        }
    };
    let armed = xenstore::with(|xs| {
        let target = control::read_kib(xs, control::MEMORY_TARGET_PATH)?;
        let offset = (target / KIB_PER_PAGE) as i64 - pages as i64;
        *STATE.lock() = Some(State {
            balloon: Balloon::new(),
            offset,
            boot_pages: pages,
            said: None,
            reached_said: true,
        });
        log::debug!("balloon: {pages} pages, target {target} KiB (offset {offset} pages)");
        // libxl 4.17 makes no control/feature-balloon for the guest to write (EACCES) and
        // does not need it; a toolstack that made one learns we balloon.
        if let Err(e) = control::advertise(xs, &[Feature::Balloon]) {
            log::debug!("balloon: {}: {e}", Feature::Balloon.path());
        }
        xs.watch(
            control::MEMORY_TARGET_PATH,
            "balloon",
            alloc::boxed::Box::new(|xs, _| read_target(xs)),
        )
    });
    match armed {
        Some(Ok(())) => {}
        Some(Err(e)) => log::error!("balloon: cannot follow {}: {e}", control::MEMORY_TARGET_PATH),
        None => log::error!("balloon: no xenstore connection"),
    }
}

/// Moves toward the target a while: call it from the loops that serve the toolstack.
/// Returns whether pages moved (so more may follow at once).
pub fn service() -> bool {
    let mut guard = STATE.lock();
    let Some(state) = guard.as_mut() else { return false };
    if TARGET_NEWS.swap(false, Ordering::SeqCst) {
        let kib = TARGET_KIB.load(Ordering::SeqCst);
        let pages = ((kib / KIB_PER_PAGE) as i64 - state.offset).max(0) as u64;
        if state.balloon.target() != Some(pages) {
            let now = Platform.pages();
            if pages == now {
                log::debug!("balloon: target {kib} KiB ({pages} pages): as we are");
            } else {
                log::info!("balloon: target {kib} KiB ({pages} pages, {now} now)");
            }
            state.balloon.set_target(pages);
            state.said = None;
            // Only a change is news: the watch's first event names the boot memory.
            state.reached_said = pages == now;
        }
    }
    let Some(target) = state.balloon.target() else { return false };
    if target < Platform.pages() {
        mm::trim_heap();
    }
    for _ in 0..BATCHES_PER_SERVICE {
        let step = state.balloon.step(&mut Platform);
        let drifted = matches!(step, Step::Stuck { why: Short::AboveBootMemory, .. })
            && target <= state.boot_pages;
        match step {
            Step::Moved(_) => continue,
            _ if drifted => state.say_reached(),
            Step::Done => state.say_reached(),
            Step::Stuck { pages, why } => {
                if state.said != Some((target, why)) {
                    state.said = Some((target, why));
                    log::error!(
                        "balloon: {} KiB short of target {} KiB: {why}; trying again as memory frees up",
                        pages * KIB_PER_PAGE,
                        TARGET_KIB.load(Ordering::SeqCst)
                    );
                }
            }
        }
        return false;
    }
    true
}

/// What the status page shows: Xen's count of our memory, the toolstack's target, what is
/// given back.
pub fn describe() -> Option<alloc::string::String> {
    let guard = STATE.lock();
    let state = guard.as_ref()?;
    let target = match state.balloon.target() {
        Some(_) => alloc::format!("{} KiB", TARGET_KIB.load(Ordering::SeqCst)),
        None => alloc::string::String::from("none"),
    };
    Some(alloc::format!(
        "{} KiB, target {target}, {} KiB given back",
        Platform.pages() * KIB_PER_PAGE,
        state.balloon.pages_out() * KIB_PER_PAGE
    ))
}

const _: () = assert!(BATCH <= 512, "a step's frame lists live on the stack");
