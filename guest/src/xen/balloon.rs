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
pub const RESERVE_FRAMES: u64 = 512;
/// Batches moved per [`service`] call, so that a large change does not hold up the loop
/// that calls it (the network, the toolstack's requests) for long.
const BATCHES_PER_SERVICE: usize = 16;

const KIB_PER_PAGE: u64 = crate::arch::PAGE_SIZE / 1024;

struct State {
    balloon: Balloon,
    /// What `memory/target` counts that the balloon does not, in pages, as Linux reckons
    /// it: 0 under PV; under PVH `static-max` less the RAM in the boot memory map.
    offset: i64,
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
                "balloon: at target {} KiB: {} pages, {} in the balloon",
                TARGET_KIB.load(Ordering::SeqCst),
                self.balloon.pages(),
                self.balloon.pages_out()
            );
        }
    }

    /// The balloon's target for `memory/target` = `kib`.
    fn target_pages(&self, kib: u64) -> u64 {
        ((kib / KIB_PER_PAGE) as i64 - self.offset).max(0) as u64
    }
}

static STATE: spin::Mutex<Option<State>> = spin::Mutex::new(None);
/// `memory/target` as last read, in KiB, for [`service`] to apply.
static TARGET_KIB: AtomicU64 = AtomicU64::new(0);
static TARGET_NEWS: AtomicBool = AtomicBool::new(false);

/// The balloon's side of the frame allocator and Xen (the self-tests use it directly).
pub struct Platform;

impl Reservation for Platform {
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

    unsafe fn give_back(&mut self, pfns: &[u64]) -> usize {
        match pvops::backend() {
            // SAFETY: the caller's contract: the frames came from take_unused, out of the
            // allocator, and nothing else has them.
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

/// With `maxmem` above `memory`, the pfns past the boot memory up to `max_pages`, which the
/// balloon may populate (PV: the p2m and the frame allocator grow to cover them, and the
/// direct map as each is populated). PVH keeps its boot memory map.
fn make_room(balloon: &mut Balloon, max_pages: u64) {
    let max_pages = max_pages.min(crate::arch::DIRECT_MAP_PAGES);
    if pvops::backend() != Backend::XenPv {
        return;
    }
    let boot = crate::arch::xen_pv::nr_pages();
    if max_pages <= boot {
        return;
    }
    if let Err(why) = crate::arch::xen_pv::grow_p2m(max_pages) {
        log::error!("balloon: {why}: the guest cannot grow past its boot memory");
        return;
    }
    mm::grow_frames(max_pages);
    if let Err(e) = balloon.add_unpopulated(boot..max_pages) {
        log::error!("balloon: {e}: the guest cannot grow past its boot memory");
        return;
    }
    log::info!(
        "balloon: may grow from {} to {} KiB (maxmem)",
        boot * KIB_PER_PAGE,
        max_pages * KIB_PER_PAGE
    );
}

/// Starts following `memory/target` (Xen only), and goes to the target it names now:
/// under PVH with `maxmem` above `memory` the boot memory map shows `maxmem` of RAM of which
/// only `memory` is there (populate-on-demand), so the rest must go before anything uses it.
/// Without the watch the guest keeps its boot memory, as it did before there was a balloon.
pub fn arm() {
    let total = match pvops::backend() {
        Backend::XenPv => crate::arch::xen_pv::nr_pages(),
        Backend::XenPvh => match crate::boot::pvh::boot_info() {
            Some(info) => info.ram_bytes / crate::arch::PAGE_SIZE,
            None => return,
        },
        Backend::Native => return,
    };
    let armed = xenstore::with(|xs| {
        let target = control::read_kib(xs, control::MEMORY_TARGET_PATH)?;
        let static_max = control::read_kib(xs, control::MEMORY_STATIC_MAX_PATH);
        let mut balloon = Balloon::new(total);
        let offset = match (&static_max, pvops::backend()) {
            (Ok(max_kib), Backend::XenPvh) => (max_kib / KIB_PER_PAGE) as i64 - total as i64,
            _ => 0,
        };
        match static_max {
            Ok(max_kib) => make_room(&mut balloon, max_kib / KIB_PER_PAGE),
            Err(e) => log::warn!(
                "balloon: {}: {e}; the guest cannot grow past its boot memory",
                control::MEMORY_STATIC_MAX_PATH
            ),
        }
        log::debug!("balloon: {total} pages, target {target} KiB (offset {offset} pages)");
        *STATE.lock() = Some(State { balloon, offset, said: None, reached_said: true });
        // Applied by `service` below, as the watch's news is.
        TARGET_KIB.store(target, Ordering::SeqCst);
        TARGET_NEWS.store(true, Ordering::SeqCst);
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
    // Bounded: each round moves pages or ends it.
    for _ in 0..1 << 16 {
        if !service() {
            break;
        }
    }
}

/// Moves toward the target a while: call it from the loops that serve the toolstack.
/// Returns whether pages moved (so more may follow at once).
pub fn service() -> bool {
    let mut guard = STATE.lock();
    let Some(state) = guard.as_mut() else { return false };
    if TARGET_NEWS.swap(false, Ordering::SeqCst) {
        let kib = TARGET_KIB.load(Ordering::SeqCst);
        let pages = state.target_pages(kib);
        if state.balloon.target() != Some(pages) {
            let now = state.balloon.pages();
            if pages == now {
                log::debug!("balloon: target {kib} KiB ({pages} pages): as we are");
            } else {
                log::info!("balloon: target {kib} KiB ({pages} pages, {now} now)");
            }
            state.balloon.set_target(pages);
            state.said = None;
            // Only a change is news: the first target (and the watch's first event) names
            // the boot memory, unless the boot map shows more than Xen populated.
            state.reached_said = pages == now;
        }
    }
    let Some(target) = state.balloon.target() else { return false };
    if target < state.balloon.pages() {
        mm::trim_heap();
    }
    for _ in 0..BATCHES_PER_SERVICE {
        match state.balloon.step(&mut Platform) {
            Step::Moved(_) => continue,
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
/// in the balloon (given back, or past the boot memory up to maxmem).
pub fn describe() -> Option<alloc::string::String> {
    let guard = STATE.lock();
    let state = guard.as_ref()?;
    let target = match state.balloon.target() {
        Some(_) => alloc::format!("{} KiB", TARGET_KIB.load(Ordering::SeqCst)),
        None => alloc::string::String::from("none"),
    };
    let xens = hypercall::ops::current_reservation()
        .map_or(alloc::string::String::from("?"), |p| alloc::format!("{}", p * KIB_PER_PAGE));
    Some(alloc::format!(
        "{} KiB (Xen counts {xens}), target {target}, {} KiB in the balloon",
        state.balloon.pages() * KIB_PER_PAGE,
        state.balloon.pages_out() * KIB_PER_PAGE
    ))
}

const _: () = assert!(BATCH <= 512, "a step's frame lists live on the stack");
