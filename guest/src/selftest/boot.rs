use super::{check, Outcome, Test};
use crate::arch::{image_pfns, pfn_to_virt, virt_to_pfn, xen_pv};
use crate::boot;

pub const TESTS: &[Test] = &[
    Test { name: "boot::start_info", run: start_info },
    Test { name: "boot::cmdline", run: cmdline },
];

fn start_info() -> Outcome {
    if let Some(si) = boot::xen_pv::start_info() {
        check!(si.magic.starts_with(b"xen-3.0-x86_64"), "magic {:?}", &si.magic[..16]);
        // Any size the toolstack chose, but never more than Xen would let the domain have.
        match hypercall::ops::maximum_reservation() {
            Ok(max) => check!(
                si.nr_pages > 0 && si.nr_pages <= max,
                "nr_pages {} against Xen's maximum reservation of {max} pages",
                si.nr_pages
            ),
            Err(e) => return Outcome::Fail(alloc::format!("XENMEM_maximum_reservation: {e}")),
        }
        check!(
            si.shared_info_maddr % 4096 == 0,
            "shared_info {:#x} unaligned",
            si.shared_info_maddr
        );
        check!(
            si.flags & hypercall::abi::SIF_INITDOMAIN == 0,
            "we are a domU, flags {:#x}",
            si.flags
        );
        let (_, image_end) = image_pfns();
        check!(
            si.first_free_pfn > image_end,
            "first free pfn {:#x} inside the image",
            si.first_free_pfn
        );
        check!(si.first_free_pfn < si.nr_pages, "first free pfn beyond memory");
        for (what, mfn) in [("console", si.console_mfn), ("xenstore", si.store_mfn)] {
            match xen_pv::mfn_to_pfn(mfn) {
                Some(pfn) => check!(
                    pfn >= image_end && pfn < si.first_free_pfn,
                    "{what} page pfn {pfn:#x} outside the builder's area"
                ),
                None => return Outcome::Fail(alloc::format!("{what} mfn {mfn:#x} is not ours")),
            }
        }
        let pt = virt_to_pfn(si.pt_base);
        check!(pt + si.nr_pt_frames == si.first_free_pfn, "page tables not last");
        check!(
            (pfn_to_virt(image_end)..si.pt_base).contains(&si.mfn_list),
            "p2m at {:#x} not between image and page tables",
            si.mfn_list
        );
        check!(si.console_evtchn != 0 && si.store_evtchn != 0, "event channels 0");
        return Outcome::Pass;
    }
    let Some(info) = boot::pvh::boot_info() else {
        return Outcome::Fail("no boot information recorded".into());
    };
    check!(info.start_info_version >= 1, "hvm_start_info version {}", info.start_info_version);
    check!(info.memmap_entries >= 2, "{} memory map entries", info.memmap_entries);
    // Any size the toolstack (or QEMU) chose: with maxmem above memory the map shows maxmem,
    // more than Xen lets the domain have until the balloon gave the rest back.
    check!(info.ram_bytes > 0, "no RAM in the memory map");
    Outcome::Pass
}

/// The command line the kernel booted with was parsed and applied: every option it
/// carries is reflected in the running kernel's state.
fn cmdline() -> Outcome {
    let options = boot::options();
    check!(
        log::max_level() == options.log,
        "log level {} but the command line says {}",
        log::max_level(),
        options.log
    );
    let parsed = crate::cmdline::parse("log=warn tests=mem::,cpu:: frobnicate");
    check!(parsed.log == log::LevelFilter::Warn, "log=warn parsed as {}", parsed.log);
    check!(parsed.tests.selects("mem::heap") && !parsed.tests.selects("time::x"), "tests= list");
    let w: alloc::vec::Vec<_> = parsed.warnings().collect();
    check!(
        w.len() == 1 && matches!(w[0], crate::cmdline::Warning::Unknown("frobnicate")),
        "warnings {w:?}"
    );
    Outcome::Pass
}
