#!/usr/bin/env python3
"""Boots QEMU (TCG) -> Debian Xen 4.17 -> a Debian Linux dom0 from an initramfs, and runs a PV
guest with `xl create` once per RUN, all in one boot. See rig/README.md and
/work/shared/rig/NOTES.md (the facts this is built on).

  rig/xen-rig.py [--timeout SECONDS] [--run-timeout SECONDS] [--work DIR] [--disk-mb MIB]
                 [--expect-bulk] [--expect-fatal TEXT] [--fast-hotplug] [--verbose]
                 [--xl-verbose] [--control-timeout SECONDS] [--log FILE]
                 [--xenstored oxenstored|cxenstored] [--peer IMAGE2 CFG2] [--bench-mib MIB]
                 [--fpu-check SECONDS] IMAGE CFG [RUN ...]

RUN is a blank-separated list of xl key=value overrides, e.g. 'memory=32' or
'extra="log=debug bogus=1"' (quotes and [...] keep their blanks). No RUN means one run without
overrides. A RUN may start with directives: @shutdown, @reboot, @net, @bench (dom0 acts at the
guest's "control: ready"), @peer (boot the --peer guest), @image=<vdev>:<host path> (that disk
is a fresh copy of the file), @fault=<name> (dom0 injects a fault), @nodhcp (no DHCP server
during the run), @intact (every disk must come out unchanged), @suspend=<save|checkpoint|
migrate>,... (dom0 saves and restores, checkpoints or migrates the guest, step by step). rig/README.md has them all.
--timeout bounds the whole QEMU boot (default 300 s); --run-timeout destroys a guest that runs
longer; --expect-bulk fails a run without a verified console-bulk block; --expect-fatal TEXT:
every run must crash after printing TEXT (given N times, the Nth is for run N and the last for
the runs after it); --verbose shows everything live; --xl-verbose runs `xl -vvv create`;
--log FILE copies this invocation's log; --fast-hotplug uses rig/hotplug/ in dom0;
--xenstored picks dom0's xenstore daemon; --control-timeout bounds each wait of a control run
(default 20 s); --bench-mib is what netbench moves each way in a @bench run (default 32);
--fpu-check S runs rig/fpu-check.c in dom0 for S seconds beside the runs (dom0's SSE registers
must survive every context switch).
The cache is $RIG_WORK if set, else target/rig; --work overrides both.
Exit status: 0 all runs passed, 1 a run failed or is missing, 2 rig/setup error, 3 timeout,
130 interrupted.
"""

import argparse
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RIG_DIR = Path(__file__).resolve().parent
REPO_DIR = RIG_DIR.parent

CONTROLS = ("shutdown", "reboot", "net", "bench")
# @suspend=<step>,...: what dom0 does to a guest that stays up, one step after another, each
# once the guest said it resumed from the one before.
SUSPEND_STEPS = ("save", "checkpoint", "migrate")
# @fault=<name> (rig/README.md, "Fault injection") and the guest lines each wants, a line of
# its own for each pattern.
FAULT_WANTS = {
    "blk-detach": [r"blkfill [a-z0-9]+: .*backend closed the device"],
    "vif-detach": [r"net: device/vif/[0-9]+: the backend is closing"],
    "garbage-keys": [r"xvdb: .*max-ring-page-order", r"blksum xvdd: .*sectors: not a number",
                     r"blksum xvde: .*sector-size: not a power of two",
                     r"blksum xvdf: .*sectors: missing"],
    "evtchn-flood": [r"blksum xvdd: .*timed out"],
    "grant-exhaust": [r"device/vbd/[0-9]+: .*no free grant reference .*using requests of 11 pages"],
    "destroy-blkfill": [],
    "blk-attach": [r"device: vbd/51760 added",
                   r"blk: xvdd attached: sectors=16384 sector_size=512 mode=ro",
                   r"device: vbd/51760 removed"],
    "vif-attach": [r"device: vif/[0-9]+ added", r"net: up [0-9.]+/", r"device: vif/[0-9]+ removed"],
    "hostile-backend": [r"device/vbd/51712: the backend holds [0-9]+ pages past their requests "
                        r".*device marked broken",
                        r"blksum xvda: blkfront: the backend( broke the protocol"
                        r"|'s answer cannot be trusted)"],
    "shutdown-mid-tests": [r"^selftest: stopped by the toolstack \(poweroff\)",
                           r"^control: shutdown poweroff"],
}
FAULTS = tuple(FAULT_WANTS)
# The toolstack acts on these before the guest's tests end: they are no @shutdown runs.
FAULTS_OWN_END = ("destroy-blkfill", "shutdown-mid-tests")

# Appended to every staged cfg: a guest that reboots must not be restarted forever, and a
# crashed one is kept (xl -F still returns) so dom0 can dump its vCPU state before destroying
# it. Other runs than @reboot preserve a domain that reboots, as one that crashes: nothing asked
# for the reboot, so it is a triple fault (PVH) or a bug.
LIFECYCLE = """# added by rig/xen-rig.py
on_poweroff = "destroy"
on_reboot = "{on_reboot}"
on_watchdog = "destroy"
on_crash = "preserve"
"""


class RigError(Exception):
    """A usage or setup error: exit status 2."""


def rig_log(msg):
    print(f"rig-host: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Disks and configs

@dataclass
class Disk:
    """A disk element as dom0 gets it: its file in dom0, its vdev, the element's text."""
    path: str
    vdev: str
    element: str


class DiskNumbers:
    """Numbers the disk files /rig/diskK.img across the cfgs and all runs of an invocation."""

    def __init__(self):
        self.last = 0

    def next_path(self):
        self.last += 1
        return f"/rig/disk{self.last}.img"


def disk_vdev(element):
    """The vdev of a disk element: its vdev= key, else the third positional field (target,
    format, vdev, access); target= comes last and may hold commas."""
    pos = 0
    for f in element.split("target=", 1)[0].split(","):
        f = "".join(f.split())
        if not f:
            continue
        if f.startswith("vdev="):
            return f[len("vdev="):]
        if "=" in f:
            continue
        pos += 1
        if pos == 3:
            return f
    return ""


QUOTED = re.compile(r"([\"'])([^\"']*)[\"']")


def rewrite_disk_list(text, numbers):
    """Points every element of a one-line disk list (`disk = [...]` or a disk= override) at a
    file /rig/diskK.img in dom0, in the positional ('path,raw,xvda,w') or the keyword
    ('...,target=path') syntax. Returns the rewritten text and its disks."""
    disks = []

    def one(m):
        q, el = m.group(1), m.group(2)
        path = numbers.next_path()
        vdev = disk_vdev(el)
        if not vdev:
            raise RigError(f"cannot tell the vdev of disk '{el}'")
        if "target=" in el:
            el = el[:el.index("target=")] + "target=" + path
        else:
            el = path + (el[el.index(","):] if "," in el else "")
        disks.append(Disk(path, vdev, f"{q}{el}{q}"))
        return f"{q}{el}{q}"

    return QUOTED.sub(one, text), disks


@dataclass
class Cfg:
    """An xl config as the rig reads it; disk_lines are its rewritten disk lines by line number
    (a RUN's @image may extend the last list, the one xl uses: disks)."""
    path: Path
    lines: list
    disk_lines: dict = field(default_factory=dict)
    disks: list = field(default_factory=list)
    extra: str = ""
    name: str = ""


def parse_cfg(path, numbers, text=None):
    path = Path(path)
    if text is None:
        text = path.read_text()
    cfg = Cfg(path, text.splitlines())
    for lineno, line in enumerate(cfg.lines, 1):
        m = re.match(r"\s*extra\s*=\s*[\"']([^\"']*)", line)
        if m:
            cfg.extra = m.group(1)
        m = re.match(r"\s*name\s*=\s*[\"']([^\"']*)[\"']", line)
        if m:
            cfg.name = m.group(1)
        if re.match(r"\s*disk\s*=", line):
            if "]" not in line:
                raise RigError(f"{path}: the disk = [...] list must be on one line")
            cfg.disk_lines[lineno], cfg.disks = rewrite_disk_list(line, numbers)
    return cfg


def resolve_cfg_path(cfg_path, p):
    """A path from the cfg as a person reading it would take it: relative to the cfg's
    directory first, then to the current directory."""
    if p.startswith("/"):
        return Path(p)
    beside = Path(cfg_path).parent / p
    return beside if beside.exists() else Path(p)


def staged_cfg(cfg, which):
    """The cfg as dom0 sees it, for /rig/<which>/ (guest or peer): kernel, ramdisk and disk
    paths replaced. Returns its text (without the lifecycle lines) and the host's ramdisk to
    copy to /rig/<which>/ramdisk, if any."""
    out = []
    ramdisk = None
    have_kernel = False
    for lineno, line in enumerate(cfg.lines, 1):
        if re.match(r"\s*kernel\s*=", line):
            line = f'kernel = "/rig/{which}/kernel"'
            have_kernel = True
        elif m := re.match(r"\s*ramdisk\s*=\s*[\"']([^\"']*)[\"']", line):
            ramdisk = resolve_cfg_path(cfg.path, m.group(1))
            if not ramdisk.is_file():
                raise RigError(f"ramdisk {ramdisk} (from {cfg.path}) not found")
            line = f'ramdisk = "/rig/{which}/ramdisk"'
        elif lineno in cfg.disk_lines:
            line = cfg.disk_lines[lineno]
        out.append(line + "\n")
    if not have_kernel:
        out.append(f'kernel = "/rig/{which}/kernel"\n')
    return "".join(out), ramdisk


def run_cfg_text(staged, reboot):
    """A run's cfg: the one reboot a @reboot run is about must restart the domain (xl create
    -F then waits on the new domain); the controller in dom0 bounds it to one."""
    return staged + LIFECYCLE.format(on_reboot="restart" if reboot else "preserve")


# ---------------------------------------------------------------------------------------------
# RUN specs

def _depth(word):
    """How many more [ than ] a word has outside quotes."""
    depth, q = 0, ""
    for c in word:
        if q:
            q = "" if c == q else q
        elif c in "\"'":
            q = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
    return depth


def split_overrides(spec):
    """Splits a RUN string into xl key=value arguments on blanks outside quotes and brackets,
    keeping the text as given (quotes included): xl appends each argument to the config text as
    a line of its own. shlex finds the words; each one's text is cut from the spec itself."""
    lex = shlex.shlex(spec, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    lex.escape = ""
    words = []
    end = 0
    try:
        while lex.get_token() is not None:
            start = end
            while spec[start] in lex.whitespace:
                start += 1
            end = lex.instream.tell()
            # The blank that ended the word was read too.
            if spec[end - 1] in lex.whitespace:
                end -= 1
            words.append((start, end))
    except ValueError:
        raise RigError(f"unbalanced quotes or brackets in run '{spec}'") from None
    tokens = []
    depth = 0
    for start, end in words:
        if depth > 0:
            tokens[-1] = (tokens[-1][0], end)
        else:
            tokens.append((start, end))
        depth += _depth(spec[start:end])
        if depth < 0:
            raise RigError(f"unbalanced quotes or brackets in run '{spec}'")
    if depth:
        raise RigError(f"unbalanced quotes or brackets in run '{spec}'")
    return [spec[s:e] for s, e in tokens]


@dataclass
class RunDisk:
    """One disk of a run, as dom0's /rig/run/<N>/disks line: a fresh scratch file of `src` MiB,
    or a copy of the image file `src` in dom0."""
    path: str
    vdev: str
    kind: str
    src: str

    def line(self):
        return f"{self.path} {self.vdev} {self.kind} {self.src}\n"


@dataclass
class Outcome:
    """What the host made of a run: its closing line, the lines it prints before the summary
    line, and why it failed (nothing: it passed)."""
    closing: str = ""
    notes: list = field(default_factory=list)
    why: list = field(default_factory=list)
    # Set when the run failed because the emulated CPU, not the guest, broke it (host_fault).
    host_fault: str = ""

    @property
    def passed(self):
        return not self.why


@dataclass
class Run:
    """One RUN: as given, what it asks of dom0, and (after the boot) its outcome."""
    n: int
    spec: str
    directives: list = field(default_factory=list)
    overrides: list = field(default_factory=list)  # as given, for the summary
    xl_args: list = field(default_factory=list)  # for xl create, disk paths rewritten
    control: str = ""
    fault: str = ""
    suspend: list = field(default_factory=list)  # @suspend steps, in order
    suspend_at_acked: bool = False  # @suspend-at=acked: the first step mid-blkfill
    vcpu_set: list = field(default_factory=list)  # @vcpu-set: xl vcpu-set counts, in order
    mem_set: list = field(default_factory=list)  # @mem-set: xl mem-set targets (MiB), in order
    nodhcp: bool = False
    intact: bool = False
    peer: bool = False
    qdisk: bool = False
    name: str = ""
    extra: str = ""
    disks: list = field(default_factory=list)
    expect_fatal: str = ""
    outcome: Outcome = None

    @property
    def label(self):
        label = " ".join(self.overrides)
        if self.directives:
            return (label + ", " if label else "") + " ".join(self.directives)
        return label or "no overrides"


class Images:
    """The @image files of an invocation: each goes into dom0 once, as /rig/images/<k>."""

    def __init__(self):
        self.files = []

    def number(self, src):
        src = os.path.realpath(src)
        if src not in self.files:
            self.files.append(src)
        return self.files.index(src) + 1


def parse_run(n, spec, cfg, peer_cfg, numbers, images, disk_mb):
    """A RUN string -> its record, checked before anything is built."""
    run = Run(n, spec)
    base = cfg
    given = None  # the disks of the run's last disk= override
    extra = None
    run_images = {}  # vdev -> image number, in the order given
    disk_arg = -1  # index in xl_args of the last disk= override (the one xl uses)
    for a in split_overrides(spec):
        if a.startswith("@"):
            if run.overrides:
                raise RigError(f"run {n}: the directive '{a}' must come before the overrides")
            run.directives.append(a)
            if a[1:] in CONTROLS:
                if run.control:
                    raise RigError(f"run {n}: more than one of @shutdown/@reboot/@net/@bench")
                run.control = a[1:]
            elif a == "@peer":
                if peer_cfg is None:
                    raise RigError(f"run {n}: @peer without --peer IMAGE CFG")
                if run.peer:
                    raise RigError(f"run {n}: @peer twice")
                if run_images:
                    raise RigError(f"run {n}: @peer must come before @image")
                run.peer = True
                base = peer_cfg
            elif a.startswith("@suspend="):
                run.suspend = a[len("@suspend="):].split(",")
                bad = [step for step in run.suspend if step not in SUSPEND_STEPS]
                if bad or not run.suspend:
                    raise RigError(f"run {n}: '{a}': steps are {', '.join(SUSPEND_STEPS)}")
                # After a checkpoint nothing watches the domain any more (xl create -F took
                # the suspend for the domain's end): a save or a migration must follow, whose
                # xl watches the new domain to its end.
                if run.suspend[-1] == "checkpoint":
                    raise RigError(f"run {n}: '{a}' must end with save or migrate")
            elif a == "@suspend-at=acked":
                run.suspend_at_acked = True
            elif a.startswith("@vcpu-set="):
                counts = a[len("@vcpu-set="):].split(",")
                if not all(c.isdigit() and 1 <= int(c) <= 32 for c in counts):
                    raise RigError(f"run {n}: '{a}': vCPU counts 1 to 32, comma-separated")
                run.vcpu_set = [int(c) for c in counts]
            elif a.startswith("@mem-set="):
                sizes = a[len("@mem-set="):].split(",")
                if not all(c.isdigit() and 4 <= int(c) <= 4096 for c in sizes):
                    raise RigError(f"run {n}: '{a}': targets of 4 to 4096 MiB, comma-separated")
                run.mem_set = [int(c) for c in sizes]
            elif a.startswith("@disk-mb="):
                size = a[len("@disk-mb="):]
                if not size.isdigit() or not 1 <= int(size) <= 1024:
                    raise RigError(f"run {n}: '{a}': the scratch disks' MiB, 1 to 1024")
                disk_mb = int(size)
            elif a == "@nodhcp":
                run.nodhcp = True
            elif a == "@intact":
                run.intact = True
            elif a.startswith("@image="):
                m = re.fullmatch(r"([a-z][a-z0-9]*):(.+)", a[len("@image="):])
                if not m:
                    raise RigError(f"run {n}: '{a}' is not @image=<vdev>:<host path>")
                vdev, src = m.groups()
                if not (os.path.isfile(src) and os.access(src, os.R_OK)):
                    raise RigError(f"run {n}: image '{src}' is not a readable file")
                size = os.stat(src).st_size
                if size == 0 or size % 512:
                    raise RigError(f"run {n}: image '{src}' is {size} bytes, "
                                   "not a (non-zero) multiple of 512")
                if vdev in run_images:
                    raise RigError(f"run {n}: two @image for {vdev}")
                run_images[vdev] = images.number(src)
            elif a.startswith("@fault="):
                run.fault = a[len("@fault="):]
                if run.fault not in FAULTS:
                    raise RigError(f"run {n}: unknown fault '{run.fault}' ({' '.join(FAULTS)})")
            else:
                raise RigError(f"run {n}: unknown directive '{a}' (@shutdown, @reboot, @net, "
                               "@bench, @peer, @nodhcp, @intact, @image=<vdev>:<path>, "
                               "@fault=<name>, @suspend=<steps>, @disk-mb=<MiB>, "
                               "@vcpu-set=<counts>, @mem-set=<MiB>)")
            continue
        run.overrides.append(a)
        if not re.match(r"[A-Za-z_][A-Za-z0-9_]*=", a):
            raise RigError(f"run {n}: '{a}' is not key=value")
        if m := re.match(r"name=[\"']?([^\"']*)", a):
            run.name = m.group(1)
        if m := re.match(r"extra=[\"']?([^\"']*)", a):
            extra = m.group(1)
        if a.startswith("disk="):
            a, given = rewrite_disk_list(a, numbers)
            disk_arg = len(run.xl_args)
        run.xl_args.append(a)
    run.extra = base.extra if extra is None else extra
    disks = list(base.disks if given is None else given)
    # An @image vdev the effective disk list lacks gets an element of its own: the list is
    # rewritten as an override (replacing the run's disk= or, if none, after the others).
    added = False
    for vdev in run_images:
        if any(d.vdev == vdev for d in disks):
            continue
        path = numbers.next_path()
        disks.append(Disk(path, vdev, f"'format=raw,vdev={vdev},access=rw,target={path}'"))
        added = True
    if added:
        arg = "disk=[" + ", ".join(d.element for d in disks) + "]"
        if disk_arg >= 0:
            run.xl_args[disk_arg] = arg
        else:
            run.xl_args.append(arg)
    for d in disks:
        if d.vdev in run_images:
            run.disks.append(RunDisk(d.path, d.vdev, "image", f"/rig/images/{run_images[d.vdev]}"))
        else:
            run.disks.append(RunDisk(d.path, d.vdev, "scratch", str(disk_mb)))
    run.qdisk = any("backendtype=qdisk" in d.element for d in disks)
    # vif-attach adds the guest's only vif while it runs: it boots without one (the last
    # assignment wins).
    if run.fault == "vif-attach":
        run.xl_args.append("vif=[]")
    # A fault run but those in FAULTS_OWN_END ends as a @shutdown run does (or as its @net run).
    if run.fault and not run.control and run.fault not in FAULTS_OWN_END:
        run.control = "shutdown"
    stays = " stay " in f" {run.extra} "
    # Without DHCP the guest has no address dom0 could check; one that stays up (and so waits
    # for the toolstack) is shut down at "control: ready".
    if run.nodhcp:
        if run.control in ("net", "bench"):
            raise RigError(f"run {n}: @nodhcp and @{run.control} do not go together "
                           "(no address to reach)")
        if not run.control and stays:
            run.control = "shutdown"
    if run.suspend:
        if not stays:
            raise RigError(f"run {n}: @suspend needs a guest that stays up ('stay' in extra)")
        if run.control not in ("", "shutdown", "net"):
            raise RigError(f"run {n}: @suspend goes with @shutdown or @net only")
        if run.fault or run.peer:
            raise RigError(f"run {n}: @suspend goes with no @fault and no @peer")
        run.control = run.control or "shutdown"
    if run.vcpu_set and (run.control not in ("shutdown", "net") or run.suspend):
        raise RigError(f"run {n}: @vcpu-set is for a @shutdown or @net run (without @suspend)")
    if run.mem_set and (run.control not in ("shutdown", "net") or run.suspend_at_acked
                        or run.peer):
        raise RigError(f"run {n}: @mem-set is for a @shutdown, @net or @suspend run of ours "
                       "(without @suspend-at)")
    if run.suspend_at_acked and not run.suspend:
        raise RigError(f"run {n}: @suspend-at=acked needs @suspend=<steps>")
    if run.suspend_at_acked and "app=blkfill" not in run.extra:
        raise RigError(f"run {n}: @suspend-at=acked is for a guest running app=blkfill")
    if run.fault == "shutdown-mid-tests" and stays:
        raise RigError(f"run {n}: @fault=shutdown-mid-tests is for a guest without 'stay' "
                       "(it powers off by itself)")
    run.name = run.name or base.name
    if not run.name:
        raise RigError(f"{base.path} has no name = \"...\"")
    return run


# ---------------------------------------------------------------------------------------------
# Reading a run's log

RESULT = re.compile(r"^rig: result run=(\d+) check=(\S+) status=(ok|fail) detail=(.*)$")
END = re.compile(r"^rig: run \d+ end: ")
CLOSING = re.compile(r"^[0-9]+ passed, ([0-9]+) failed, [0-9]+ skipped$")
DISK = re.compile(r"^rig: disk ([a-z0-9]*) (before|after) size=([0-9]*) sha256=([0-9a-f]*)$")
CONTROL_LINE = re.compile(r"^rig: control: \[[0-9.]*\] (.*)$")


@dataclass
class RunLog:
    """The lines of one run (rig: run N begin: to end:), sorted for the decision."""
    lines: list
    end: str = ""
    end_fields: dict = field(default_factory=dict)
    guest: list = field(default_factory=list)
    results: list = field(default_factory=list)  # (check, status, detail)
    disks_before: list = field(default_factory=list)  # (vdev, size, sha256), in order
    disks_after: dict = field(default_factory=dict)  # vdev -> (size, sha256), the last

    @classmethod
    def parse(cls, text, n):
        """Run n's lines (dom0's results for other runs are not this run's)."""
        log = cls(text.splitlines())
        for line in log.lines:
            if not (line.startswith("(XEN)") or line.startswith("rig: ")):
                log.guest.append(line)
            elif END.match(line):
                log.end = line
                log.end_fields = dict(re.findall(r"(\S+)=(\S*)", line.split(" end: ", 1)[1]))
            elif (m := RESULT.match(line)) and int(m.group(1)) == n:
                log.results.append(m.group(2, 3, 4))
            elif m := DISK.match(line):
                vdev, when, size, digest = m.groups()
                if when == "before":
                    log.disks_before.append((vdev, size, digest))
                else:
                    log.disks_after[vdev] = (size, digest)
        return log

    def before(self, vdev):
        found = [(size, digest) for v, size, digest in self.disks_before if v == vdev]
        return found[-1] if found else None

    def result(self, check, status=None):
        return [d for c, s, d in self.results if c == check and (status is None or s == status)]

    def control(self, prefix):
        """dom0's control.log lines (rig: control: [t] <prefix>...), without the time."""
        return [m.group(1) for line in self.lines
                if (m := CONTROL_LINE.match(line)) and m.group(1).startswith(prefix)]

    def end_says(self):
        return self.end.split("end: ", 1)[1] if self.end else ""


def pattern_sha256(sectors, seed):
    """The sha256 of the app=blkfill pattern (rig/blkfill-pattern.py): (ok, digest or error)."""
    done = subprocess.run([sys.executable, str(RIG_DIR / "blkfill-pattern.py"), "--sha256",
                           sectors, seed], capture_output=True, text=True)
    out = (done.stdout + done.stderr).rstrip("\n")
    return done.returncode == 0, out


def check_console(guest_text):
    """rig/check-console.py over the guest's lines: (ok, its output)."""
    done = subprocess.run([sys.executable, str(RIG_DIR / "check-console.py")],
                          input=guest_text.encode(errors="surrogateescape"),
                          capture_output=True)
    out = (done.stdout + done.stderr).decode(errors="surrogateescape").rstrip("\n")
    return done.returncode == 0, out


def _check_control(run, log, out, closings):
    """A control run: dom0's controller says whether each step came within --control-timeout;
    then what the guest must have printed and how each boot must have ended."""
    why, note = out.why, out.notes.append
    guest = log.guest
    control = run.control
    control_fails = log.result("control", "fail")
    control_oks = log.result("control", "ok")
    if control_fails:
        why.append("control: " + "; ".join(control_fails))
    elif not control_oks:
        why.append("control: no result from dom0's controller")
    else:
        note("control: " + "; ".join(control_oks))
    for line in log.control("net: "):
        if re.match(r"net: [a-z]", line):
            note(line)
    # The toolstack's steps (@vcpu-set, @mem-set): each must have its ok result.
    for check, wanted in (("vcpu-set", run.vcpu_set), ("mem-set", run.mem_set)):
        if not wanted:
            continue
        steps = log.result(check, "ok")
        for line in steps:
            note(f"{check}: {line}")
        if len(steps) != len(wanted):
            why.append(f"{check}: {len(steps)} of the {len(wanted)} steps "
                       f"({','.join(map(str, wanted))}) done")
    if control == "net" and not log.result("net", "ok"):
        why.append("net: the checks from dom0 did not all run")
    for line in log.control("bench: net_"):
        note("dom0 " + line)
    if control == "bench" and not log.result("bench"):
        why.append("bench: dom0's network measurements did not all run")
    if control == "reboot":
        boots, want_reasons, want_shut = 2, "reboot,poweroff", "reboot poweroff"
    elif run.suspend:
        # xl create -F ends at the first suspend; the xl watching the last domain reports
        # its end.
        boots, want_reasons, want_shut = 1, "suspend,poweroff", "poweroff"
        _check_resumes(run, guest, why)
        _check_uptime(log, why)
    else:
        boots, want_reasons, want_shut = 1, "poweroff", "poweroff"
    nready = sum(1 for line in guest if line == "control: ready")
    if nready != boots:
        why.append(f"{nready} 'control: ready' line(s), want {boots}")
    if closings and len(closings) != boots:
        why.append(f"{len(closings)} closing lines, want {boots}")
    shut = " ".join(line[len("control: shutdown "):] for line in guest
                    if line.startswith("control: shutdown "))
    if shut != want_shut:
        why.append(f"'control: shutdown' lines: '{shut}', want '{want_shut}'")
    if log.end and log.end_fields.get("reasons") != want_reasons:
        why.append(f"shutdown reasons {log.end_fields.get('reasons', '')}, "
                   f"want {want_reasons}")


RESUMED = re.compile(r"^control: resumed (in a new domain|cancelled \(same domain\)): "
                     r"resumes=(\d+) cancelled=(\d+)$")


def _check_resumes(run, guest, why):
    """A @suspend run: one 'control: resumed' line per step, in a new domain after a save or
    a migration, in the same one after a checkpoint, the counts going up by one each."""
    got = [m for m in map(RESUMED.match, guest) if m]
    want = ["cancelled (same domain)" if step == "checkpoint" else "in a new domain"
            for step in run.suspend]
    if [m.group(1) for m in got] != want:
        why.append(f"resumes: {[m.group(1) for m in got]}, want {want} ({','.join(run.suspend)})")
        return
    if run.suspend_at_acked and run.suspend[0] != "checkpoint":
        # The first step came mid-blkfill: the disk reconnected in the new domain, and the fill
        # went on from there (_check_disks then wants the whole disk to hold the pattern).
        if not any(re.match(r"^blkfill [a-z0-9]+ resumed at sectors=[0-9]+$", line)
                   for line in guest):
            why.append("no 'blkfill <dev> resumed at sectors=<n>' line after the first step")
        if not any(re.search(r"blkfill [a-z0-9]+ done sectors=", line) for line in guest):
            why.append("blkfill did not finish after the resume")
    new = cancelled = 0
    for step, m in zip(run.suspend, got):
        if step == "checkpoint":
            cancelled += 1
        else:
            new += 1
        if (int(m.group(2)), int(m.group(3))) != (new, cancelled):
            why.append(f"resume counts '{m.group(0)}', want resumes={new} cancelled={cancelled}")
            return


def _check_uptime(log, why):
    """A @suspend run with the network: the uptime on the status page dom0 fetched after each
    step never goes back (a clock that jumped back would show there first)."""
    # (dom0 copies the page into its log as it is, without a time stamp.)
    seen = [float(m.group(1)) for line in log.lines
            if (m := re.match(r"^rig: control: net: page: uptime: ([0-9]+\.[0-9]+) s$", line))]
    for before, after in zip(seen, seen[1:]):
        if after < before:
            why.append(f"the status page's uptime went back from {before} s to {after} s")


def _check_disks(log, out, pattern):
    """Disk contents, against dom0's "rig: disk <vdev> before|after" lines: what the guest
    read (blksum) must be the disk before the run, what it wrote (blkfill) the pattern."""
    why, note = out.why, out.notes.append
    guest = log.guest
    for line in guest:
        for dev, sectors, ssize, digest in re.findall(
                r"blksum ([a-z0-9]+) sectors=([0-9]+) sector_size=([0-9]+) "
                r"sha256=([0-9a-f]{64})", line):
            before = log.before(dev)
            if before is None:
                why.append(f"blksum {dev}: the run has no disk {dev} "
                           f"(no 'rig: disk {dev} before' line)")
            elif digest != before[1]:
                why.append(f"blksum {dev}: guest read sha256 {digest}, dom0 had {before[1]} "
                           f"({before[0]} bytes) before the run")
            elif int(sectors) * int(ssize) != int(before[0] or 0):
                why.append(f"blksum {dev}: sha256 matches but sectors={sectors} x "
                           f"sector_size={ssize} != {before[0]} bytes")
            else:
                note(f"blksum {dev} matches ({sectors} sectors, sha256 {digest[:16]}...)")
    for line in guest:
        for dev, sectors, seed in re.findall(
                r"blkfill ([a-z0-9]+) done sectors=([0-9]+) seed=([0-9]+)", line):
            after = log.disks_after.get(dev)
            if after is None:
                why.append(f"blkfill {dev}: the run has no disk {dev} "
                           f"(no 'rig: disk {dev} after' line)")
                continue
            size, digest = after
            if int(sectors) * 512 != int(size or 0):
                why.append(f"blkfill {dev}: guest filled {sectors} sectors "
                           f"({int(sectors) * 512} bytes) of a {size}-byte disk")
                continue
            ok, want = pattern(sectors, seed)
            if not ok:
                why.append(f"blkfill {dev}: blkfill-pattern.py: {want}")
            elif want != digest:
                why.append(f"blkfill {dev}: disk after the run has sha256 {digest}, the pattern "
                           f"for seed={seed} over {sectors} sectors {want}")
            else:
                note(f"blkfill {dev} verified {sectors} sectors (seed {seed})")


def _check_fault(run, log, out, pattern):
    """A fault run: dom0's steps (each must have been done), then the guest's error lines for
    the fault; that it went on is the closing line and the shutdown, checked with the rest."""
    why, note = out.why, out.notes.append
    guest = log.guest
    control_fails = log.result("control", "fail")
    control_oks = log.result("control", "ok")
    fault = run.fault
    for line in log.control("fault: "):
        note(line)
    if not run.control and control_fails:
        why.append(control_fails[0])
    if fault == "shutdown-mid-tests":
        # Not a control run: dom0's fault actor reports the timing (or why not).
        if control_oks:
            note("control: " + control_oks[0])
        elif not control_fails:
            why.append(f"fault {fault}: no result from dom0")
    for want in FAULT_WANTS[fault]:
        found = next((line for line in guest if re.search(want, line)), None)
        if found is not None:
            note(f"fault {fault}: guest: {found}")
        else:
            why.append(f"fault {fault}: no guest line matching '{want}'")
    if fault == "destroy-blkfill":
        acked = [m for line in guest for m in re.findall(
            r"blkfill [a-z0-9]+ acked sectors=[0-9]+ seed=[0-9]+", line)]
        last = acked[-1] if acked else ""
        hashed = next((m.groups() for line in log.lines if (m := re.match(
            r"^rig: fault: blkfill ([a-z0-9]*) acked sectors=([0-9]*) seed=([0-9]*) "
            r"sha256=([0-9a-f]*)$", line))), None)
        if any(re.search(r"blkfill [a-z0-9]+ done ", line) for line in guest):
            why.append(f"fault {fault}: blkfill finished before xl destroy")
        elif hashed is None or not hashed[3]:
            why.append(f"fault {fault}: no 'rig: fault: blkfill ... sha256=' line from dom0")
        else:
            dev, sectors, seed, digest = hashed
            if last != f"blkfill {dev} acked sectors={sectors} seed={seed}":
                why.append(f"fault {fault}: dom0 hashed '{dev} {sectors} {seed}', the "
                           f"guest's last line was '{last}'")
            elif not (r := pattern(sectors, seed))[0]:
                why.append(f"fault {fault}: blkfill-pattern.py: {r[1]}")
            elif r[1] != digest:
                why.append(f"fault {fault}: the first {sectors} sectors of {dev} hash to "
                           f"{digest}, the pattern to {r[1]}")
            else:
                note(f"fault {fault}: the {sectors} sectors acked before xl destroy hold "
                     f"the pattern (seed {seed})")


def _check_qdisk(log, out):
    """QEMU served the run's qdisk disks: dom0 saw its backend nodes and its process, and
    QEMU did not complain."""
    why, note = out.why, out.notes.append
    for line in log.lines:
        if m := re.match(r"^rig: qdisk: ((backend |all connected |states ).*)$", line):
            note("qdisk: " + m.group(1))
        elif m := re.match(r"^rig: qdisk: (qemu pid [0-9]* VmRSS: [0-9]* kB)", line):
            note("qdisk: " + m.group(1))
    if not log.result("qdisk-backend", "ok"):
        detail = (log.result("qdisk-backend") or ["no result from dom0"])[-1]
        why.append("qdisk: dom0 saw no backend nodes under /local/domain/0/backend/qdisk "
                   f"({detail})")
    if not log.result("qdisk-qemu", "ok"):
        why.append("qdisk: no xen-qemu-system-i386 process in dom0")
    qemu_dm = [line[len("rig: qemu-dm: "):] for line in log.lines
               if line.startswith("rig: qemu-dm: ")]
    for line in qemu_dm[:5]:
        note("qemu-dm: " + line)
    for detail in log.result("qemu-dm", "fail")[:1]:
        why.append(f"qdisk: QEMU: {detail}")


def _check_intact(log, out):
    """@intact: the guest was named no disk to write, so none may have changed."""
    why, note = out.why, out.notes.append
    changed = 0
    for vdev, size, digest in log.disks_before:
        after = log.disks_after.get(vdev)
        if after != (size, digest):
            changed += 1
            why.append(f"@intact: disk {vdev} was size={size} sha256={digest} before the "
                       f"run, {' '.join(after) if after else 'unknown'} after")
    if not log.disks_before:
        why.append("@intact: the run has no disk")
    elif not changed:
        note(f"@intact: {len(log.disks_before)} disk(s) unchanged")


def decide(run, text, expect_bulk=False, pattern=pattern_sha256, console=check_console):
    """A run's outcome from its log (None: it never began): the guest's own lines, dom0's
    markers and dom0's "rig: result" lines (rig/README.md, "Results")."""
    out = Outcome()
    why, note = out.why, out.notes.append
    if text is None:
        why.append("run missing (never began)")
        return out
    log = RunLog.parse(text, run.n)
    guest = log.guest
    end = log.end
    # One closing line per boot (a @reboot run has two); each must have 0 failed.
    closings = [line for line in guest if CLOSING.match(line)]
    out.closing = closings[-1] if closings else ""
    if not end:
        why.append("run did not end")
    if not closings:
        why.append("no closing line")
    for boot, c in enumerate(closings, 1):
        failed = int(CLOSING.match(c).group(1))
        if failed:
            why.append(("" if len(closings) == 1 else f"boot {boot}: ") + f"{failed} failed")
    nfail = sum(1 for line in guest if line.startswith("FAIL "))
    if nfail:
        why.append(f"{nfail} FAIL line(s)")
    want_reason = "destroyed" if run.fault == "destroy-blkfill" else "poweroff"
    if run.expect_fatal:
        want_reason = "crash"
        if not any(run.expect_fatal in line for line in guest):
            why.append(f"no '{run.expect_fatal}' (--expect-fatal)")
    control = run.control
    xl_ok = log.end_fields.get("exit") == "0"
    if end:
        if not xl_ok:
            why.append(f"xl create failed ({log.end_says()})")
        # (A control run checks the reason of every boot, below.)
        elif not control and log.end_fields.get("reason") != want_reason:
            why.append(f"guest did not end with {want_reason} ({log.end_says()})")
    if control:
        _check_control(run, log, out, closings)
    _check_disks(log, out, pattern)
    if run.fault:
        _check_fault(run, log, out, pattern)
    if run.qdisk:
        _check_qdisk(log, out)
    if run.intact:
        _check_intact(log, out)
    if run.nodhcp and not log.result("nodhcp", "ok"):
        why.append("@nodhcp: " + (log.result("nodhcp") or ["dom0 did not stop udhcpd"])[0])
    # The console integrity block is optional; a broken one fails the run.
    ok, bulk = console("".join(line + "\n" for line in guest))
    if not ok:
        why.append("console check: " + bulk.replace("\n", " "))
    elif bulk:
        for line in bulk.split("\n"):
            note(line)
    elif expect_bulk:
        why.append("no console-bulk block (--expect-bulk)")
    if why:
        out.host_fault = host_fault(text)
    return out


def split_log(log_text):
    """The log's runs: {N: the text from its "rig: run N begin:" line to its end marker, both
    included}. A marker may end a guest's last line, one that had no newline: the text before
    it stays in the run."""
    runs = {}
    current = None
    for line in log_text.splitlines():
        m = re.search(r"rig: run [0-9]+ end: ", line)
        if m:
            if current is not None:
                if m.start() > 0:
                    runs[current].append(line[:m.start()])
                runs[current].append(line[m.start():])
            current = None
            continue
        m = re.match(r"rig: run ([0-9]+) begin: ", line)
        if m:
            current = int(m.group(1))
            runs[current] = []
        if current is not None:
            runs[current].append(line)
    return {n: "".join(line + "\n" for line in lines) for n, lines in runs.items()}


# Xen 4.17's own virtual ranges (xen/arch/x86/include/asm/config.h): its text, and the direct
# map that holds its stacks. No guest of ours runs there, PV or PVH.
XEN_TEXT = (0xffff82d040000000, 0xffff82d080000000)
XEN_DIRECTMAP = (0xffff830000000000, 0xffff880000000000)


def host_fault(text):
    """A failed run's sign that the rig's emulated CPU, not the guest, broke it, or "".

    Now and then (about one PVH run in 35 under QEMU 7.2's and 10.0's TCG) a PVH guest dies of
    a triple fault whose vCPU state is Xen's own: rip just after Xen's VMRUN, rsp on Xen's
    stack, rax the VMCB's address, cr3 Xen's, beside the guest's other registers. The emulated
    SVM saved the host's state as the guest's at a #VMEXIT and the next VMRUN entered the
    guest on it. A guest cannot put Xen's addresses in its own rip and rsp together, so this
    pair names the host, and the rig runs such a run again. The pair is read from dom0's dump
    of a preserved domain (xenctx), or from Xen's own dump of the vCPU at the triple fault
    (`*** Dumping DomN vcpu#M state: ***`), which is all there is when the domain was
    destroyed before the run ended (a failed suspend step destroys it)."""
    vcpu = None
    regs = {}
    for line in text.splitlines():
        m = re.match(r"^rig: xenctx: (vcpu[0-9]+):$", line)
        if m:
            vcpu = m.group(1)
            continue
        m = re.match(r"^rig: xenctx: (rip|rsp): ([0-9a-f]{16})\b", line)
        if m and vcpu:
            regs.setdefault(vcpu, {})[m.group(1)] = int(m.group(2), 16)
            continue
        m = re.match(r"^\(XEN\).*\*\*\* Dumping (Dom[0-9]+ vcpu#[0-9]+) state: \*\*\*$", line)
        if m:
            vcpu = m.group(1)
            continue
        m = re.match(r"^\(XEN\).*(?: RIP: +[0-9a-f]{4}:\[<(?P<rip>[0-9a-f]{16})>\]|"
                     r"\brsp: (?P<rsp>[0-9a-f]{16})\b)", line)
        if m and vcpu and vcpu.startswith("Dom"):
            regs.setdefault(vcpu, {})[m.lastgroup] = int(m.group(m.lastgroup), 16)
    for vcpu, r in regs.items():
        rip, rsp = r.get("rip", 0), r.get("rsp", 0)
        if XEN_TEXT[0] <= rip < XEN_TEXT[1] and XEN_DIRECTMAP[0] <= rsp < XEN_DIRECTMAP[1]:
            return (f"{vcpu} held Xen's own registers (rip {rip:016x}, rsp {rsp:016x}): the "
                    "emulated CPU entered the guest on the hypervisor's state")
    return ""


def failure_tail(text):
    """What the guest and Xen said last in a failed run, so that a failure seen only in a CI
    excerpt (its tail) can still be read."""
    lines = text.splitlines()
    guest = [line for line in lines
             if line and not (line.startswith("(XEN)") or line.startswith("rig: "))]
    out = ["rig: | " + line for line in guest[-12:]]
    ctx = re.compile(r"^rig: xenctx: (domain|vcpu|rip|flags|rsp|rax|rbx|rbp|r10|r13|cr[023]|"
                     r"Code|[0-9a-f]{2} )")
    # The vCPU Xen names as the one that died comes first and whole: with 40 vCPUs dumped, the
    # first twenty lines would otherwise hold only vcpu0's registers.
    dead = {m.group(1) for line in lines
            if (m := re.match(r"^\(XEN\).* d[0-9]+v([0-9]+) (?:Triple fault|crashed)", line))}
    first, rest, vcpu = [], [], None
    for line in lines:
        if (m := re.match(r"^rig: xenctx: vcpu([0-9]+):$", line)):
            vcpu = m.group(1)
        if ctx.match(line):
            (first if vcpu in dead else rest).append("rig: C " + line[len("rig: xenctx: "):])
    out += first[:24] + rest[:max(0, 20 - len(first))]
    xen = re.compile(r"^\(XEN\).*(\bd[1-9][0-9]*|\(d[1-9][0-9]*\)|[Dd]omain [1-9]|domain_crash|"
                     r"Pagetable walk)")
    save = re.compile(r"HVM d[0-9]+(v[0-9]+)? (save|restore):")
    out += ["rig: X " + line for line in lines if xen.match(line) and not save.search(line)][-8:]
    return out


# ---------------------------------------------------------------------------------------------
# The boot

def whole(text, least=0):
    if not re.fullmatch(r"[0-9]+", text) or int(text) < least:
        raise RigError("--timeout, --run-timeout, --disk-mb, --control-timeout, --bench-mib and "
                       "--fpu-check take whole numbers")
    return int(text)


def parse_args(argv):
    synopsis = __doc__.split("\n\n")[1].strip()
    p = argparse.ArgumentParser(prog="rig/xen-rig.py", add_help=False, usage=synopsis)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--timeout", default="300")
    p.add_argument("--run-timeout", default="0")
    p.add_argument("--work")
    p.add_argument("--disk-mb", default="64")
    p.add_argument("--expect-bulk", action="store_true")
    p.add_argument("--expect-fatal", action="append", default=[])
    p.add_argument("--fast-hotplug", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--xl-verbose", action="store_true")
    p.add_argument("--control-timeout", default="20")
    p.add_argument("--log")
    p.add_argument("--xenstored", default="cxenstored")
    p.add_argument("--peer", nargs=2, metavar=("IMAGE2", "CFG2"))
    p.add_argument("--bench-mib", default="32")
    p.add_argument("--fpu-check", default="0")
    p.add_argument("image", nargs="?")
    p.add_argument("cfg", nargs="?")
    p.add_argument("runs", nargs="*")
    args = p.parse_args(argv)
    if args.help or args.cfg is None:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    args.timeout = whole(args.timeout)
    args.run_timeout = whole(args.run_timeout)
    args.disk_mb = whole(args.disk_mb)
    args.control_timeout = whole(args.control_timeout, 1)
    args.bench_mib = whole(args.bench_mib, 1)
    args.fpu_check = whole(args.fpu_check)
    if args.bench_mib > 1024:
        raise RigError("--bench-mib: at most 1024")
    if args.xenstored not in ("oxenstored", "cxenstored"):
        raise RigError(f"--xenstored takes oxenstored or cxenstored, not '{args.xenstored}'")
    return args


def plan(args):
    """The checked runs of an invocation, and what their staging needs."""
    if not os.path.isfile(args.image):
        raise RigError(f"no guest image {args.image}")
    if not os.path.isfile(args.cfg):
        raise RigError(f"no xl config {args.cfg}")
    if args.peer:
        if not os.path.isfile(args.peer[0]):
            raise RigError(f"no peer image {args.peer[0]}")
        if not os.path.isfile(args.peer[1]):
            raise RigError(f"no peer xl config {args.peer[1]}")
    numbers = DiskNumbers()
    images = Images()
    cfg = parse_cfg(args.cfg, numbers)
    peer_cfg = parse_cfg(args.peer[1], numbers) if args.peer else None
    specs = args.runs or [""]
    runs = [parse_run(i + 1, spec, cfg, peer_cfg, numbers, images, args.disk_mb)
            for i, spec in enumerate(specs)]
    fatal = args.expect_fatal
    if fatal:
        if any(r.control for r in runs):
            raise RigError("--expect-fatal and @shutdown/@reboot runs do not go together")
        for i, r in enumerate(runs):
            r.expect_fatal = fatal[min(i, len(fatal) - 1)]
    return cfg, peer_cfg, runs, images


def prepare_base(work):
    """rig/common.sh's host tools and package cache (shared with linux-domu.sh): RIG_BASE."""
    script = ('set -euo pipefail; . "$1"; rig_ensure_host_tools; rig_prepare_base; '
              'printf "%s\\n" "$RIG_BASE"')
    done = subprocess.run(["bash", "-c", script, "bash", str(RIG_DIR / "common.sh")],
                          env=dict(os.environ, RIG_WORK=str(work)), stdout=subprocess.PIPE,
                          text=True)
    if done.returncode:
        sys.exit(done.returncode)
    if not done.stdout.split():
        raise RigError("rig/common.sh's rig_prepare_base named no base directory")
    return Path(done.stdout.split()[-1])


def write(path, text, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)


def build(cmd, what):
    if subprocess.run(cmd).returncode:
        raise RigError(f"cannot build {what}")


def stage(args, cfg, peer_cfg, runs, images, stage_dir, fpu_check=0):
    """Everything dom0 gets beside its cached initramfs: its /init, the guests, one directory
    per run (rig/dom0-init.sh's header says what each file is). Returns the bytes of images."""
    rig = stage_dir / "rig"
    (rig / "run").mkdir(parents=True)
    shutil.copy(RIG_DIR / "dom0-init.sh", stage_dir / "init")
    (stage_dir / "init").chmod(0o755)
    (rig / "guest").mkdir()
    shutil.copy(args.image, rig / "guest" / "kernel")
    write(rig / "xl-opts", ("-vvv" if args.xl_verbose else "") + "\n")
    write(rig / "run-timeout", f"{args.run_timeout}\n")
    write(rig / "control-timeout", f"{args.control_timeout}\n")
    write(rig / "xenstored", ("oxenstored" if args.xenstored == "oxenstored" else "xenstored")
          + "\n")
    if args.fast_hotplug:
        shutil.copytree(RIG_DIR / "hotplug", rig / "hotplug")
    # dom0's tool for @fault=evtchn-flood, against the Xen libraries of the host's libxen-dev
    # (the same 4.17 as dom0's).
    if any(r.fault == "evtchn-flood" for r in runs):
        build(["gcc", "-O2", "-Wall", "-o", str(rig / "evtchn-flood"),
               str(RIG_DIR / "evtchn-flood.c"), "-lxenctrl", "-lxenevtchn"],
              "rig/evtchn-flood.c (needs gcc and libxen-dev)")
    # dom0's hostile blkback for @fault=hostile-backend, likewise.
    if any(r.fault == "hostile-backend" for r in runs):
        build(["gcc", "-O2", "-Wall", "-o", str(rig / "hostile-blkback"),
               str(RIG_DIR / "hostile-blkback.c"), "-lxengnttab", "-lxenevtchn", "-lxenstore"],
              "rig/hostile-blkback.c (needs gcc and libxen-dev)")
    # dom0's side of the network checks (@net) and benchmarks (@bench), static: dom0's busybox
    # root has no compiler and only the libraries xl needs.
    if any(r.control in ("net", "bench") for r in runs):
        build(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(rig / "netbench"),
               str(RIG_DIR / "netbench.c")], "rig/netbench.c (needs gcc and libc6-dev)")
    write(rig / "bench-bytes", f"{args.bench_mib << 20}\n")
    if fpu_check:
        build(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o",
               str(rig / "fpu-check"), str(RIG_DIR / "fpu-check.c")],
              "rig/fpu-check.c (needs gcc and libc6-dev)")
        write(rig / "fpu-check-seconds", f"{fpu_check}\n")
    # Symbols for the crash dump (xenctx -s); optional: binutils is not part of a base system.
    if shutil.which("nm"):
        with open(rig / "guest" / "System.map", "w") as f:
            if subprocess.run(["nm", "-n", args.image], stdout=f,
                              stderr=subprocess.DEVNULL).returncode:
                f.truncate(0)
    staged = {}
    for which, c, image in (("guest", cfg, args.image),
                            ("peer", peer_cfg, args.peer[0] if args.peer else None)):
        if c is None:
            continue
        (rig / which).mkdir(exist_ok=True)
        shutil.copy(image, rig / which / "kernel")
        staged[which], ramdisk = staged_cfg(c, which)
        if ramdisk is not None:
            shutil.copy(ramdisk, rig / which / "ramdisk")
    # The @image files (dom0 copies one afresh before each run that uses it) and the sha256 of
    # a scratch disk (zeros: dom0 would need seconds of TCG time for what the host does at once).
    (rig / "images").mkdir()
    image_bytes = 0
    for k, src in enumerate(images.files, 1):
        shutil.copy(src, rig / "images" / str(k))
        image_bytes += os.stat(rig / "images" / str(k)).st_size
    mib = bytes(1 << 20)
    for size in sorted({int(disk.src) for r in runs for disk in r.disks if disk.kind == "scratch"}):
        zero = hashlib.sha256()
        for _ in range(size):
            zero.update(mib)
        write(rig / f"zero-sha256-{size}", zero.hexdigest() + "\n")
    for r in runs:
        d = rig / "run" / str(r.n)
        d.mkdir()
        write(d / "cfg", run_cfg_text(staged["peer" if r.peer else "guest"],
                                      r.control == "reboot"))
        # The symbols for a crash dump of this run's kernel (the peer's are not at hand).
        if not r.peer:
            write(d / "ours", "")
        if r.control:
            write(d / "control", r.control + "\n")
        if r.fault:
            write(d / "fault", r.fault + "\n")
        if r.suspend:
            write(d / "suspend", " ".join(r.suspend) + "\n")
        if r.suspend_at_acked:
            write(d / "suspend_at", "acked\n")
        if r.vcpu_set:
            write(d / "vcpu_set", " ".join(map(str, r.vcpu_set)) + "\n")
        if r.mem_set:
            write(d / "mem_set", " ".join(map(str, r.mem_set)) + "\n")
        if r.nodhcp:
            write(d / "nodhcp", "")
        if r.qdisk:
            write(d / "qdisk", "")
        write(d / "args", "".join(a + "\n" for a in r.xl_args))
        write(d / "disks", "".join(disk.line() for disk in r.disks))
        write(d / "name", r.name + "\n")
        write(d / "label", r.spec + "\n")
    return image_bytes


def pad4(f):
    f.write(bytes(-f.tell() % 4))


def make_initrd(base, stage_dir, initrd, qdisk):
    """The cached dom0 initramfs, QEMU's cpio if a run has a qdisk disk (10 MB gzipped, 33 MB
    unpacked: it would slow every boot), then the stage as a cpio: each after the last, 4-byte
    aligned (the kernel's unpacker skips zero padding between archives but wants each header
    aligned)."""
    with open(initrd, "wb") as f:
        with open(base / "dom0.cpio.gz", "rb") as src:
            shutil.copyfileobj(src, f)
        pad4(f)
        if qdisk:
            with open(base / "qemu.cpio.gz", "rb") as src:
                shutil.copyfileobj(src, f)
            pad4(f)
        names = ["."]
        for root, dirs, files in os.walk(stage_dir):
            rel = os.path.relpath(root, stage_dir)
            for name in dirs + files:
                names.append("./" + os.path.normpath(os.path.join(rel, name)))
        listing = "".join(n + "\n" for n in sorted(names, key=os.fsencode)).encode()
        f.flush()
        done = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                              cwd=stage_dir, input=listing, stdout=f)
        if done.returncode:
            raise RigError("cpio of the run files failed")


class LiveFilter:
    """What the terminal shows: not the boot chatter of Xen and dom0 (everything before dom0's
    first "rig:" line; shown on failure) nor the bodies of console-bulk blocks; the log file
    has everything."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.booted = False
        self.in_bulk = False

    def shows(self, line):
        if self.verbose:
            return True
        if not self.booted:
            if not line.startswith(b"rig: "):
                return False
            self.booted = True
        if self.in_bulk:
            if b"console-bulk: end" in line:
                self.in_bulk = False
            return b"console-bulk:" in line
        if b"console-bulk: begin" in line:
            self.in_bulk = True
        return True


def new_invocation_dir(work):
    """A directory of this invocation's own under runs/ (several sessions may share one
    machine and cache); last-run and last-run.log point at the newest. Only the logs of the
    last 20 invocations are kept."""
    out = work / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    out.mkdir(parents=True)
    log = out / "console.log"
    log.write_bytes(b"")
    for link, target in (("last-run", f"runs/{out.name}"),
                         ("last-run.log", f"runs/{out.name}/console.log")):
        p = work / link
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.exists():
            shutil.rmtree(p)
        p.symlink_to(target)
    olds = sorted((d for d in (work / "runs").iterdir() if d.is_dir()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for old in olds[20:]:
        shutil.rmtree(old, ignore_errors=True)
    # Initramfs copies left by killed invocations (old enough not to belong to a running one).
    for old in (work / "runs").glob("*/initrd"):
        if time.time() - old.stat().st_mtime > 30 * 60:
            old.unlink(missing_ok=True)
    return out, log


def boot(qemu, timeout_s, log, verbose):
    """QEMU under timeout(1), its console to the log (\\r stripped) and, filtered, to the
    terminal. A ^C or TERM stops QEMU (timeout(1) puts it in a process group of its own, out of
    reach of the terminal's ^C) and the rest is drained, so the summary still covers the runs
    that finished. Returns QEMU's exit status and whether it was interrupted."""
    proc = subprocess.Popen(["timeout", "-k", "10", str(timeout_s), *qemu],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    interrupted = False

    def stop(_sig, _frame):
        nonlocal interrupted
        interrupted = True
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    live = LiveFilter(verbose)
    term = sys.stdout.buffer
    try:
        with open(log, "wb") as f:
            for line in proc.stdout:
                line = line.replace(b"\r", b"")
                f.write(line)
                f.flush()
                if live.shows(line):
                    term.write(line)
                    term.flush()
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return rc, interrupted


@dataclass
class Boot:
    """One boot of the rig: how QEMU ended, its log and the text of each run in it."""
    rc: int
    interrupted: bool
    log: Path
    out: Path
    lines: list
    run_logs: dict
    seconds: tuple


def boot_runs(args, cfg, peer_cfg, runs, images, base, work, fpu_check):
    """Stages RUNS, boots the rig once for them and splits its log by run."""
    t_start = time.time()
    out, log = new_invocation_dir(work)
    stage_dir = out / "stage"
    image_bytes = stage(args, cfg, peer_cfg, runs, images, stage_dir, fpu_check)
    any_qdisk = any(r.qdisk for r in runs)
    initrd = out / "initrd"
    make_initrd(base, stage_dir, initrd, any_qdisk)

    # @image files cost dom0 memory: the initramfs buffer and the unpacked file while booting,
    # the file and a run's working copy afterwards, in a tmpfs root that gets half of dom0's RAM
    # (NOTES.md: too small a root panics "Initramfs unpacking failed"). So 4x their size more
    # for dom0, and for QEMU. QEMU as a device model: its 33 MB in the initramfs buffer and
    # again in the tmpfs root, and ~23 MB RSS per domain it serves (measured).
    extra_mb = 4 * ((image_bytes + (1 << 20) - 1) >> 20) + (128 if any_qdisk else 0)
    # A run's scratch disks live in that tmpfs too, beside a save's image of the guest (two
    # 64 MiB disks fit in what dom0 has): twice what a run has beyond that, for dom0 and QEMU.
    scratch_mb = max((sum(int(disk.src) for disk in r.disks if disk.kind == "scratch")
                      for r in runs), default=0)
    extra_mb += 2 * max(0, scratch_mb - 128)
    dom0_mb = 512 + extra_mb
    xen_cmdline = (f"console=com1 com1=115200,8n1 dom0_mem={dom0_mb}M,max:{dom0_mb}M loglvl=all "
                   f"guest_loglvl=all console_timestamps=boot bootscrub=0 "
                   # Eager FPU switching: with Xen's lazy switching (its default on this AMD
                   # CPU model), dom0's processes lost or swapped SSE registers across context
                   # switches under TCG, hundreds a minute (rig/fpu-check.c), and died of heap
                   # corruption now and then (xl, QEMU, busybox, the Linux peer).
                   f"spec-ctrl=eager-fpu "
                   f"{os.environ.get('RIG_XEN_ARGS', '')}")
    dom0_cmdline = ("console=hvc0 earlyprintk=xen rdinit=/init quiet "
                    f"{os.environ.get('RIG_DOM0_ARGS', '')}")
    # -smap,-smep: dom0 dies early without them (NOTES.md). -avx,-avx2: turned off when dom0's
    # heap corruption was blamed on QEMU 7.2's new AVX emulation; its cause was lazy FPU
    # switching (see spec-ctrl above), and AVX stays off until a run shows it harmless.
    qemu = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max,-smap,-smep,-avx,-avx2",
            "-m", str(2048 + extra_mb), "-smp", "2", "-display", "none", "-monitor", "none",
            "-nic", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(base / "xen"), "-append", xen_cmdline,
            "-initrd", f"{base / 'vmlinux'} {dom0_cmdline},{initrd}"]
    sys.stdout.flush()
    rig_log(f"booting ({len(runs)} run(s), timeout {args.timeout} s, log {log})")
    t_qemu = time.time()
    qemu_rc, interrupted = boot(qemu, args.timeout, log, args.verbose)
    t_end = time.time()
    initrd.unlink(missing_ok=True)
    shutil.rmtree(stage_dir, ignore_errors=True)

    log_text = log.read_bytes().decode(errors="surrogateescape")
    run_logs = split_log(log_text)
    for n, text in run_logs.items():
        (out / f"run-{n}.log").write_bytes(text.encode(errors="surrogateescape"))
    return Boot(qemu_rc, interrupted, log, out, log_text.splitlines(), run_logs,
                (t_end - t_start, t_qemu - t_start, t_end - t_qemu))


def boot_trouble(b, timeout):
    """The exit status and lines for a boot that did not end well, or None."""
    if b.interrupted:
        return 130, ["rig: interrupted"]
    if b.rc in (124, 137):
        return 3, ([f"rig: TIMEOUT after {timeout} s; last lines of the log:"]
                   + ["rig: | " + line for line in b.lines[-30:]])
    if b.rc:
        return 1, ([f"rig: qemu exited with status {b.rc}; last lines of the log:"]
                   + ["rig: | " + line for line in b.lines[-30:]])
    if not any(line.startswith("rig: dom0 ready") for line in b.lines):
        return 1, (["rig: dom0 never came up; last lines of the log:"]
                   + ["rig: | " + line for line in b.lines[-40:]])
    return None


def boot_times(b):
    ready = [m.group(1) for line in b.lines if (m := re.match(r"^rig: dom0 ready: ([0-9.]*) s$",
                                                              line))]
    total, prepare, qemu = b.seconds
    return (f"rig: time: total {total:.1f} s (host prepare {prepare:.1f} s, "
            f"qemu {qemu:.1f} s, dom0 uptime at ready {' '.join(ready) or '?'} s)")


def main(argv):
    sys.stdout.reconfigure(errors="surrogateescape", line_buffering=True)
    args = parse_args(argv)
    cfg, peer_cfg, runs, images = plan(args)
    work = Path(args.work or os.environ.get("RIG_WORK") or REPO_DIR / "target" / "rig")
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    # QEMU's -initrd splits multiboot modules on commas and their command lines on spaces.
    if re.search(r"[,\s]", str(work)):
        raise RigError("work directory path must not contain commas or spaces")
    os.environ["RIG_WORK"] = str(work)

    base = prepare_base(work)
    b = boot_runs(args, cfg, peer_cfg, runs, images, base, work, args.fpu_check)
    boots = [b]
    logs = {r.n: b.run_logs.get(r.n) for r in runs}
    for r in runs:
        r.outcome = decide(r, logs[r.n], args.expect_bulk)

    # A run the emulated CPU broke (host_fault) gets one more chance, in a boot of its own:
    # the guest is not on trial there, and a second such fault still fails it.
    again = [r for r in runs if r.outcome.host_fault]
    if again and boot_trouble(b, args.timeout) is None:
        for r in again:
            print(f"rig: run {r.n}: host fault: {r.outcome.host_fault} (rig/README.md, "
                  "\"Host faults\"); running it again")
        b2 = boot_runs(args, cfg, peer_cfg, again, images, base, work, 0)
        boots.append(b2)
        for r in again:
            first = r.outcome.host_fault
            logs[r.n] = b2.run_logs.get(r.n)
            r.outcome = decide(r, logs[r.n], args.expect_bulk)
            r.outcome.notes.insert(0, f"run again after a host fault ({first})")

    print("rig: ---- summary ----")
    failed = []
    for r in runs:
        for line in r.outcome.notes:
            print(f"rig: run {r.n}: {line}")
        if r.outcome.passed:
            print(f"rig: run {r.n} ({r.label}): {r.outcome.closing} -> PASS")
        else:
            print(f"rig: run {r.n} ({r.label}): {r.outcome.closing or 'no closing line'} -> FAIL")
            for w in r.outcome.why:
                print(f"rig:   why: {w}")
            failed.append(r.n)

    for line in b.lines:
        if line.startswith("rig: xenstored: "):
            print(line)
            break
    for bt in boots:
        print(boot_times(bt))
        print(f"rig: log: {bt.log} (per run: {bt.out}/run-N.log)")
    print(f"rig: newest log: {work}/last-run.log")
    if args.log:
        with open(args.log, "wb") as f:
            for bt in boots:
                f.write(bt.log.read_bytes())

    # Last in the output, where a CI excerpt (its tail) shows it.
    for n in failed:
        if logs.get(n):
            print(f"rig: run {n} FAILED; its last guest lines, dom0's dump of a preserved "
                  "domain, Xen's last lines on domUs:")
            for line in failure_tail(logs[n]):
                print(line)

    fpu_failed = False
    if args.fpu_check:
        verdicts = [m for line in b.lines
                    if (m := re.match(r"^rig: fpu-check: ([0-9]+) rounds, ([0-9]+) bad$", line))]
        if verdicts:
            print(verdicts[-1].group(0))
        else:
            print("rig: fpu-check: no verdict from dom0")
        fpu_failed = not verdicts or verdicts[-1].group(2) != "0"

    for bt in boots:
        trouble = boot_trouble(bt, args.timeout)
        if trouble:
            rc, lines = trouble
            for line in lines:
                print(line)
            return rc
    return 1 if failed or fpu_failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RigError as e:
        print(f"rig-host: error: {e}", file=sys.stderr)
        sys.exit(2)
