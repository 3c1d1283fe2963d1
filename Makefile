# The two commands a user needs:  make run  (boot under Xen in the rig)  and  make test.
# Everything installs what it needs (Rust toolchain and target, QEMU, Xen/Linux packages).

TOOLCHAIN := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
TARGET    := x86_64-unknown-none
IMAGE     := target/$(TARGET)/release/guest
CARGO     := cargo +$(TOOLCHAIN)
# Scratch disks (the rig backs each with a fresh file): xvdb writable, for the block tests,
# writes, and xvdc read-only; and a network interface on dom0's bridge.
DEVICES   := disk=["format=raw,vdev=xvdb,access=rw,target=scratch","format=raw,vdev=xvdc,access=ro,target=scratch"] vif=["bridge=xenbr0"]
# What the guest may do with them: the block tests overwrite only the disk named scratch=
# and read only the one named rodisk= (without these they skip).
DISK_ROLES := scratch=xvdb rodisk=xvdc
# The scratch disk served by QEMU in dom0 (qdisk) instead of blkback. The read-only one stays on
# blkback: Debian's QEMU 7.2 refuses a read-only qdisk ("realization of device xen-disk failed:
# Block node is read-only", measured with and without no-discard), which no guest can pass.
QDISK_DEVICES := disk=["format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target=scratch","format=raw,vdev=xvdc,access=ro,target=scratch"] vif=["bridge=xenbr0"]
# The scratch disk alone, for the block benchmarks (which overwrite it).
SCRATCH   := disk=["format=raw,vdev=xvdb,access=rw,target=scratch"]
NET       := vif=["bridge=xenbr0"]
# A guest under disk and network load through a save, restore, checkpoint or migration: the
# first step comes between two of blkfill's writes, each later one with a TCP echo open across
# it and dom0's network checks after it; the disk must hold the whole pattern at the end. The
# disk is 256 MiB: dom0 sees blkfill's first "acked" line (and pauses the guest) when the guest
# has filled 14-58 MiB (measured), and the step must come before the fill is over.
SUSPEND_LOAD := @suspend-at=acked @disk-mb=256 @net \
	extra="log=info tests=console::,time:: app=blkfill dev=xvdb seed=7 stay" $(SCRATCH) $(NET)
# vCPU hotplug: a guest given 2 of 4 vCPUs (maxvcpus), its smp tests on those, then
# `xl vcpu-set` to 4, 1 and 3; after each the guest must say how many vCPUs it has in service,
# each of which answered a call.
VCPU_SET  := @shutdown @vcpu-set=4,1,3 maxvcpus=4 vcpus=2 \
	extra="log=info tests=console::,smp:: stay" vif=[] disk=[]
# Extra kernel command line for run-native, e.g. make run-native CMDLINE="log=debug"
CMDLINE   ?= log=info
# The rig's package cache, where linux-domu.sh builds the peer (the rig scripts take it from
# the environment too).
RIG_WORK  ?= target/rig

.PHONY: all deps build run run-pvh run-native test test-host test-native test-xen test-xen-pvh \
	test-xen-other faults bench fuzz lint clean

all: build

# rustup does not install a pinned toolchain by itself here (RUSTUP_AUTO_INSTALL=0).
deps:
	@rustup toolchain list | grep -q '^$(TOOLCHAIN)' || \
	    rustup toolchain install $(TOOLCHAIN) --profile minimal -c clippy -c rustfmt
	@rustup target list --installed --toolchain $(TOOLCHAIN) | grep -qx '$(TARGET)' || \
	    rustup target add --toolchain $(TOOLCHAIN) $(TARGET)
	@command -v qemu-system-x86_64 >/dev/null || \
	    { apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null; }
	@# The rig's host side and its tools are Python (stdlib only).
	@command -v python3 >/dev/null || \
	    { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
	@# A C compiler and Xen's public headers: guest/tests/xen_headers.rs checks every shared
	@# layout against them.
	@{ command -v cc && test -e /usr/include/stdio.h && test -e /usr/include/xen/io/blkif.h; } \
	    >/dev/null || \
	    { apt-get update -qq && apt-get install -y -qq gcc libc6-dev libxen-dev >/dev/null; }

build: deps
	$(CARGO) build --release -p guest --target $(TARGET)

# The main job: the guest as a PV domU created by `xl create` in the Xen rig, with the rig's
# scratch disk, a read-only disk and a vif, so that every driver is at work.
run: build
	rig/xen-rig.py $(IMAGE) xen.cfg 'extra="log=info tests=all $(DISK_ROLES)" $(DEVICES)'

# The same, as a PVH domU.
run-pvh: build
	rig/xen-rig.py $(IMAGE) xen-pvh.cfg 'extra="log=info tests=all $(DISK_ROLES)" $(DEVICES)'

run-native: build
	rig/run-native.sh $(IMAGE) "$(CMDLINE)"

test: test-host test-native test-xen test-xen-other faults
	@echo "make test: all suites passed"

test-host: deps lint
	$(CARGO) test --workspace
	rig/test-netbench.sh
	python3 rig/test_bench.py
	python3 rig/test_xen_rig.py
	python3 fuzz/test_campaign.py

# shellcheck and pyflakes from Debian (pyflakes3 runs on Debian's python3, the same 3.11 the
# rig's Python needs).
lint: deps
	@{ command -v shellcheck && command -v pyflakes3; } >/dev/null || \
	    { apt-get update -qq && apt-get install -y -qq shellcheck pyflakes3 >/dev/null; }
	shellcheck rig/*.sh rig/hotplug/* .ci/run
	pyflakes3 rig/*.py fuzz/*.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release -p guest --target $(TARGET) -- -D warnings

# A fuzz campaign (fuzz/campaign.py): each fuzz target (fuzz/src/targets/) under libFuzzer for
# FUZZ_SECONDS on its checked-in corpus (fuzz/corpus/<target>/, minimised afterwards), one row
# per target in fuzz/campaigns.tsv (executions, coverage, corpus, outcome), which carries the
# counts over from campaign to campaign; `fuzz/campaign.py summary` prints the README's table.
# cargo-fuzz on stable Rust, hence no sanitizer, but with coverage guidance. A panic, an input
# running over 10 s or one using over 2 GiB fails it; the input is saved under
# fuzz/artifacts/<target>/ and `cargo fuzz run --sanitizer none --features libfuzzer <target>
# <file>` replays it. (test-host runs every target briefly too.)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := cmdline console xenstore blkfront netfront netwire handshake
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --version 0.13.2 --locked
	@# libfuzzer-sys builds libFuzzer, which is C++.
	@command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
	TOOLCHAIN=$(TOOLCHAIN) python3 fuzz/campaign.py run --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Natively under QEMU: the default run, the same on four CPUs (-smp 4: the MADT and
# INIT-SIPI-SIPI start), with the pv_ops call sites left indirect, the smallest and a large
# memory size, an unknown option (which must be reported, not fatal), a deliberate page fault
# (which must be), and a stack overflow (caught by the guard page, reported from the fault
# stack).
test-native: build
	rig/check-notes.py $(IMAGE)
	rig/run-native.sh $(IMAGE) "log=info"
	rig/run-native.sh --smp 4 $(IMAGE) "log=info"
	rig/run-native.sh $(IMAGE) "log=info nopvpatch"
	rig/run-native.sh --memory 32 $(IMAGE) "log=warn frobnicate=1"
	rig/run-native.sh --memory 1024 $(IMAGE) "log=warn tests=mem::,time::"
	rig/run-native.sh --expect-fatal "FATAL: unhandled trap 14 (#PF page fault)" \
	    $(IMAGE) "log=warn tests=boot:: fault=pf"
	rig/run-native.sh --expect-fatal "the kernel stack overflowed into its guard page" \
	    $(IMAGE) "log=warn tests=boot:: fault=stack"

# Under Xen, in one boot of the rig: xen.cfg as it is (FIFO event channels), the same with the
# pv_ops call sites left indirect, 32 MiB, 1 GiB with two vCPUs, an unknown option, the
# 2-level event ABI, `xl shutdown` of a guest that stays up (with disks and a vif for the
# frontend, block and network tests, and dom0's network checks of @net; ballooned by
# `xl mem-set` up to maxmem, down to a quarter and back under a TCP stream, @mem-set), the whole suite with
# disks, a vif and two vCPUs in 16 MiB, `xl reboot`, app=blksum on
# a random image (the rig compares with dom0's sha256sum) and app=blkfill (the rig regenerates
# the pattern), and xen.cfg as it is with a user's root and data disk (xvda, xvdb), which must
# come out byte-identical (@intact); a checkpoint (xl save -c) and an xl save + xl restore
# of a guest without devices and with three vCPUs, and a save + restore mid-blkfill, a
# checkpoint and another save of one with a disk and a vif under load (@suspend,
# SUSPEND_LOAD); four vCPUs (the smp tests); vCPU hotplug (VCPU_SET); then a deliberate page
# fault, which must crash the domain after the dump.
# --control-timeout: dom0's hotplug scripts for two disks and a vif alone can take 20 s on a
# loaded host, before the guest even starts.
test-xen: build target/blk-random.img target/blk-zero.img
	rig/test-check-console.sh
	rig/xen-rig.py --expect-bulk --timeout 600 --control-timeout 60 $(IMAGE) xen.cfg "" 'extra="log=info nopvpatch"' \
	    "memory=32" "memory=1024 vcpus=2" \
	    'extra="log=debug frobnicate=1"' 'extra="log=info evtchn=2l"' \
	    '@net @mem-set=128,16,64 maxmem=128 extra="log=warn stay $(DISK_ROLES)" $(DEVICES)' '@reboot extra="log=warn stay"' \
	    '@net memory=16 vcpus=2 extra="log=warn stay $(DISK_ROLES)" $(DEVICES)' \
	    '@image=xvdb:target/blk-random.img extra="log=warn tests=console:: app=blksum dev=xvdb"' \
	    '@image=xvdb:target/blk-zero.img extra="log=warn tests=console:: app=blkfill dev=xvdb seed=42"' \
	    '@intact @image=xvda:target/blk-random.img @image=xvdb:target/blk-random.img' \
	    '@suspend=checkpoint,save @mem-set=24 vcpus=3 extra="log=info tests=console::,time::,smp:: stay" vif=[] disk=[]' \
	    '@suspend=save,checkpoint,save $(SUSPEND_LOAD)' \
	    'vcpus=4 extra="log=info tests=console::,smp::,irq::,time::,mem::"' \
	    'vcpus=40 extra="log=info tests=console::,smp::"' \
	    '$(VCPU_SET)'
	rig/xen-rig.py --expect-fatal "FATAL: unhandled trap 14 (#PF page fault)" $(IMAGE) xen.cfg \
	    'extra="log=warn tests=boot:: fault=pf"'
	$(MAKE) --no-print-directory test-xen-pvh

# The same image as a Xen PVH domU (xen-pvh.cfg), in one boot of the rig: the suite as it is,
# unpatched, at 32 MiB and 1 GiB, on the 2-level event ABI, with disks and a vif (and dom0's
# network checks; grown to maxmem, ballooned to a quarter and back), the whole suite in 16 MiB, app=blksum, on a bridge without DHCP, and under a name of its own, a
# checkpoint, a save + restore and two live migrations to the same host of a guest without
# devices and with three vCPUs, and the same (the save first, mid-blkfill) under disk and
# network load (@suspend, SUSPEND_LOAD); four vCPUs (the smp tests); vCPU hotplug (VCPU_SET); then the
# deliberate page fault and stack overflow (ring 0 here: the native IDT reports them, the #DF
# on its own stack).
test-xen-pvh: build target/blk-random.img
	rig/xen-rig.py --expect-bulk --timeout 600 --control-timeout 60 $(IMAGE) xen-pvh.cfg "" \
	    'extra="log=info nopvpatch"' "memory=32" "memory=1024 vcpus=2" 'extra="log=info evtchn=2l"' \
	    '@net @mem-set=128,16,64 maxmem=128 extra="log=warn stay $(DISK_ROLES)" $(DEVICES)' \
	    '@net memory=16 vcpus=2 extra="log=warn stay $(DISK_ROLES)" $(DEVICES)' \
	    '@image=xvdb:target/blk-random.img extra="log=warn tests=console:: app=blksum dev=xvdb"' \
	    '@nodhcp extra="log=warn stay" $(NET)' '@shutdown name="pvh-other-name" extra="log=warn stay"' \
	    '@suspend=checkpoint,save,migrate,migrate @mem-set=24 vcpus=3 extra="log=info tests=console::,time::,smp:: stay" vif=[] disk=[]' \
	    '@suspend=save,checkpoint,migrate,migrate $(SUSPEND_LOAD)' \
	    'vcpus=4 extra="log=info tests=console::,smp::,irq::,time::,mem::"' \
	    'vcpus=40 extra="log=info tests=console::,smp::"' \
	    '$(VCPU_SET)'
	rig/xen-rig.py --expect-fatal "FATAL: unhandled trap 14 (#PF page fault)" \
	    --expect-fatal "the kernel stack overflowed into its guard page" $(IMAGE) xen-pvh.cfg \
	    'extra="log=warn tests=boot:: fault=pf"' 'extra="log=warn tests=boot:: fault=stack"'

# Other backends and toolstack operations, in one boot of the rig with oxenstored (the OCaml
# xenstored, Debian's quotas) as dom0's xenstore (rig/README.md): the suite with a scratch disk,
# a read-only disk and a vif on blkback, then with the scratch disk on QEMU's qdisk (at
# log=info, whose blkfront lines say what was negotiated with QEMU); app=blksum and
# app=blkfill on qdisk; a bridge without DHCP; a domain name of the run's own; a disk and a vif
# attached to the running guest and detached again; xl shutdown in the middle of the
# self-tests; make bench's machinery: a @bench run (dom0 measures the network through the
# guest's sink and source) and a run of the Linux peer (--peer) in the same boot.
# --fast-hotplug: the standard scripts are test-xen's business (qdisk uses none).
# --control-timeout: the suite with two disks and a vif took 59 s to "control: ready" with
# another rig running. First, on the host, the Linux peer's fio rows (make bench) against a
# file (rig/test-linux-bench.sh).
test-xen-other: build target/blk-random.img target/blk-zero.img
	rig/test-linux-bench.sh
	rig/xen-rig.py --xenstored oxenstored --fast-hotplug --timeout 600 --control-timeout 90 \
	    --peer $(RIG_WORK)/linux-domu/vmlinux $(RIG_WORK)/linux-domu/linux-domu.cfg $(IMAGE) xen.cfg \
	    '@net extra="log=warn stay $(DISK_ROLES)" $(DEVICES)' \
	    '@net extra="log=info stay $(DISK_ROLES)" $(QDISK_DEVICES)' \
	    '@image=xvdb:target/blk-random.img extra="log=warn tests=console:: app=blksum dev=xvdb" disk=["format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target=scratch"]' \
	    '@image=xvdb:target/blk-zero.img extra="log=warn tests=console:: app=blkfill dev=xvdb seed=42" disk=["format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target=scratch"]' \
	    '@nodhcp extra="log=warn stay" $(NET)' \
	    '@shutdown name="rig-other-name-'"$$$$"'" extra="log=warn stay"' \
	    '@fault=blk-attach extra="log=warn tests=boot:: stay"' \
	    '@fault=vif-attach extra="log=warn tests=boot:: stay"' \
	    '@fault=shutdown-mid-tests extra="log=warn"' \
	    '@bench extra="log=warn tests=none bench=null_ stay" $(NET)' \
	    '@peer @shutdown extra="quiet loglevel=1 rigtest=stay" vif=[]'

# Fault injection, in one boot of the rig (rig/README.md, "Fault injection"): from dom0 while
# the guest runs, xl block-detach in the middle of a fill, xl network-detach while traffic
# flows, garbage in the keys backends publish (blkback's, and fake backends'), a flood of
# events on a disk's port, a one-frame grant table shared by a vif and two disks, and xl
# destroy in the middle of app=blkfill. Each run passes if the guest printed the fault's error
# line, still closed with 0 failed and powered off (destroy: the acknowledged writes are on
# the disk). 1-4 minutes. --control-timeout: creating a domain with two disks and a vif took
# 25 s on a loaded host. --disk-mb 128: the fill that xl destroy interrupts must outlast
# xl's start-up.
faults: build
	rig/xen-rig.py --fast-hotplug --disk-mb 128 --timeout 900 --control-timeout 90 $(IMAGE) xen.cfg \
	    '@fault=blk-detach extra="log=warn tests=boot:: app=blkfill dev=xvdb seed=7 stay" $(SCRATCH) vif=[]' \
	    '@fault=vif-detach extra="log=warn tests=boot:: stay" $(NET) disk=[]' \
	    '@fault=garbage-keys extra="log=warn tests=blk:: app=blksum stay $(DISK_ROLES)" $(DEVICES)' \
	    '@fault=evtchn-flood extra="log=warn tests=boot:: app=blksum stay" $(SCRATCH) vif=[]' \
	    '@fault=grant-exhaust max_grant_frames=1 extra="log=warn tests=blk:: stay $(DISK_ROLES)" $(DEVICES)' \
	    '@fault=destroy-blkfill extra="log=warn tests=boot:: app=blkfill dev=xvdb seed=9" $(SCRATCH) vif=[]' \
	    '@net @fault=hostile-backend extra="log=warn tests=boot:: app=blksum dev=xvda,xvdb stay" $(SCRATCH) $(NET)'

# Benchmarks (not tests). The Xen rows come from one boot of the rig in which our guest (PV,
# FIFO and 2-level event channels) and the Linux PV domU peer (rig/linux-domu.sh; its blkfront
# at its defaults and with max_indirect_segments=256) take turns, BENCH_ROUNDS times, with the
# same memory, vCPU and a fresh 64 MiB scratch disk each: the block rows are timed inside each
# guest (ours, and fio for Linux: the same sizes, offsets and queue depths), the network rows
# from dom0 with the same tools for both (@bench: ping, rig/netbench). Then PVH in a boot of its
# own, and natively (pv_ops). rig/bench-table.py prints the medians, spread and ours/Linux
# ratios (also to docs/bench.md), rig/bench-plot.py draws docs/bench.svg.
BENCH_ROUNDS ?= 3
BENCH_OURS := '@bench memory=128 extra="log=warn tests=none bench stay scratch=xvdb" $(SCRATCH) $(NET)'
BENCH_OURS_2L := '@bench memory=128 extra="log=warn tests=none bench=blk_,event_ stay evtchn=2l scratch=xvdb" $(SCRATCH) $(NET)'
# The spinning idle (idle=poll): the network rows of a guest that never blocks.
BENCH_OURS_POLL := '@bench memory=128 extra="log=warn tests=none bench=null_ stay idle=poll" $(NET)'
BENCH_PEER := '@peer @bench extra="quiet loglevel=1 rigtest=bench" $(SCRATCH) $(NET)'
BENCH_PEER_256 := '@peer @bench extra="quiet loglevel=1 rigtest=bench blkfront_indirect=256" $(SCRATCH) $(NET)'
# The parallel job (SHA-256 on 1, 2 and 4 vCPUs at once) in a guest of four vCPUs.
BENCH_SMP := 'vcpus=4 extra="log=warn tests=none bench=smp_"'
BENCH_RIG := rig/xen-rig.py --fast-hotplug --disk-mb 64 --bench-mib 32 --control-timeout 600
bench: build
	rig/run-native.sh --smp 4 --log target/bench-native.log $(IMAGE) "log=warn tests=none bench"
	rig/linux-domu.sh >/dev/null
	$(BENCH_RIG) --timeout $$(($(BENCH_ROUNDS) * 1200)) --log target/bench-xen.log \
	    --peer $(RIG_WORK)/linux-domu/vmlinux $(RIG_WORK)/linux-domu/linux-domu.cfg $(IMAGE) xen.cfg \
	    $(foreach r,$(shell seq $(BENCH_ROUNDS)),$(BENCH_OURS) $(BENCH_PEER) $(BENCH_PEER_256) $(BENCH_OURS_2L) $(BENCH_OURS_POLL) $(BENCH_SMP))
	$(BENCH_RIG) --timeout $$(($(BENCH_ROUNDS) * 1500)) --log target/bench-xen-pvh.log $(IMAGE) xen-pvh.cfg \
	    $(foreach r,$(shell seq $(BENCH_ROUNDS)),$(BENCH_OURS) $(BENCH_SMP))
	rig/bench-table.py --markdown-out docs/bench.md target/bench-native.log target/bench-xen.log \
	    target/bench-xen-pvh.log
	rig/bench-plot.py -o docs/bench.svg target/bench-native.log target/bench-xen.log \
	    target/bench-xen-pvh.log

# Disk images for the block apps: random content of an odd sector count, and zeros to fill.
target/blk-random.img:
	mkdir -p target && head -c $$((16387 * 512)) /dev/urandom > $@
target/blk-zero.img:
	mkdir -p target && head -c $$((8 << 20)) /dev/zero > $@

clean:
	cargo clean
