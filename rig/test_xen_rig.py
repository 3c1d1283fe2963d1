#!/usr/bin/env python3
"""Tests of xen-rig.py's host side without QEMU: RUN specs, cfg staging, and the pass/fail
decision from a run's log (the guest's lines, dom0's markers and "rig: result" lines).

    python3 rig/test_xen_rig.py
"""
import importlib.util
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("xen_rig", HERE / "xen-rig.py")
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)

SHA_A = "a" * 64
SHA_B = "b" * 64


def no_bulk(_text):
    return True, ""


def pattern_of(digest):
    return lambda sectors, seed: (True, digest)


def run_log(n, *body, end="xl exit=0 reason=poweroff seconds=2.00 reasons=poweroff"):
    return "".join(line + "\n" for line in (f"rig: run {n} begin: x", *body,
                                            f"rig: run {n} end: {end}"))


def cfg_of(text, numbers=None):
    return rig.parse_cfg("/nowhere/xen.cfg", numbers or rig.DiskNumbers(), text)


class SplitOverrides(unittest.TestCase):
    def test_blanks_split_words_outside_quotes_and_brackets(self):
        self.assertEqual(rig.split_overrides(""), [])
        self.assertEqual(rig.split_overrides("  memory=32\tvcpus=2 "), ["memory=32", "vcpus=2"])
        self.assertEqual(rig.split_overrides('extra="log=debug bogus=1" name=\'a b\''),
                         ['extra="log=debug bogus=1"', "name='a b'"])

    def test_a_list_keeps_its_blanks_and_quotes(self):
        self.assertEqual(rig.split_overrides("disk=['a,raw,xvda,w',  'b,raw,xvdb,w'] vif=[ ]"),
                         ["disk=['a,raw,xvda,w',  'b,raw,xvdb,w']", "vif=[ ]"])

    def test_brackets_inside_quotes_are_text(self):
        self.assertEqual(rig.split_overrides('extra="a [b" x=1'), ['extra="a [b"', "x=1"])

    def test_unbalanced(self):
        for spec in ('extra="a', "disk=[a", "x=]", "x='a\""):
            with self.assertRaisesRegex(rig.RigError, "unbalanced"):
                rig.split_overrides(spec)


class Disks(unittest.TestCase):
    def test_vdev(self):
        self.assertEqual(rig.disk_vdev("img,raw,xvda,w"), "xvda")
        self.assertEqual(rig.disk_vdev("format=raw, vdev=xvdb ,access=rw,target=a,b,c"), "xvdb")
        self.assertEqual(rig.disk_vdev("format=raw,access=rw,target=x,y,xvdq"), "")

    def test_rewrite_both_syntaxes(self):
        numbers = rig.DiskNumbers()
        text, disks = rig.rewrite_disk_list(
            "disk = ['root.img,raw,xvda,w', \"format=raw,vdev=xvdb,target=/a,b\"]", numbers)
        self.assertEqual(text, "disk = ['/rig/disk1.img,raw,xvda,w', "
                               "\"format=raw,vdev=xvdb,target=/rig/disk2.img\"]")
        self.assertEqual([(d.path, d.vdev) for d in disks],
                         [("/rig/disk1.img", "xvda"), ("/rig/disk2.img", "xvdb")])
        _, more = rig.rewrite_disk_list("disk=['x,raw,xvdc']", numbers)
        self.assertEqual(more[0].path, "/rig/disk3.img")

    def test_no_vdev_is_an_error(self):
        with self.assertRaisesRegex(rig.RigError, "vdev"):
            rig.rewrite_disk_list("disk=['a,raw']", rig.DiskNumbers())


class Staging(unittest.TestCase):
    def test_kernel_ramdisk_disks_and_lifecycle(self):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "initrd.gz").write_text("x")
            path = Path(d) / "g.cfg"
            path.write_text('name = "g"\n  kernel = "old"\nramdisk = "initrd.gz"\n'
                            "memory = 32\ndisk = ['a.img,raw,xvda,w']\n")
            cfg = rig.parse_cfg(path, rig.DiskNumbers())
            text, ramdisk = rig.staged_cfg(cfg, "peer")
        self.assertEqual(cfg.name, "g")
        self.assertEqual(ramdisk, Path(d) / "initrd.gz")
        self.assertEqual(text, 'name = "g"\nkernel = "/rig/peer/kernel"\n'
                               'ramdisk = "/rig/peer/ramdisk"\nmemory = 32\n'
                               "disk = ['/rig/disk1.img,raw,xvda,w']\n")
        self.assertIn('on_reboot = "preserve"', rig.run_cfg_text(text, reboot=False))
        self.assertIn('on_reboot = "restart"', rig.run_cfg_text(text, reboot=True))
        self.assertIn('on_crash = "preserve"', rig.run_cfg_text(text, reboot=True))

    def test_a_missing_kernel_line_is_added(self):
        text, ramdisk = rig.staged_cfg(cfg_of('name = "g"\n'), "guest")
        self.assertEqual(text, 'name = "g"\nkernel = "/rig/guest/kernel"\n')
        self.assertIsNone(ramdisk)

    def test_missing_ramdisk(self):
        with self.assertRaisesRegex(rig.RigError, "ramdisk"):
            rig.staged_cfg(cfg_of('ramdisk = "/no/such/initrd"\n'), "guest")

    def test_multi_line_disk_list(self):
        with self.assertRaisesRegex(rig.RigError, "one line"):
            cfg_of("disk = [\n'a,raw,xvda'\n]\n")


class Runs(unittest.TestCase):
    def setUp(self):
        self.numbers = rig.DiskNumbers()
        self.cfg = cfg_of('name = "guest"\nextra = "log=info"\n'
                          "disk = ['a.img,raw,xvda,w']\n", self.numbers)
        self.images = rig.Images()
        self.tmp = tempfile.TemporaryDirectory()
        self.image = Path(self.tmp.name) / "img"
        self.image.write_bytes(bytes(1024))

    def tearDown(self):
        self.tmp.cleanup()

    def parse(self, spec, peer=None):
        return rig.parse_run(1, spec, self.cfg, peer, self.numbers, self.images, 64)

    def test_plain(self):
        r = self.parse('memory=32 extra="log=debug x=1"')
        self.assertEqual(r.xl_args, ["memory=32", 'extra="log=debug x=1"'])
        self.assertEqual((r.name, r.extra, r.control), ("guest", "log=debug x=1", ""))
        self.assertEqual([d.line() for d in r.disks], ["/rig/disk1.img xvda scratch 64\n"])
        self.assertEqual(r.label, 'memory=32 extra="log=debug x=1"')
        self.assertEqual(self.parse("").label, "no overrides")

    def test_image_replaces_a_disk_or_adds_one(self):
        r = self.parse(f'@shutdown @image=xvda:{self.image} @image=xvdc:{self.image} '
                       'name="n1" extra="stay"')
        self.assertEqual(r.control, "shutdown")
        self.assertEqual(r.name, "n1")
        self.assertEqual([d.line() for d in r.disks],
                         ["/rig/disk1.img xvda image /rig/images/1\n",
                          "/rig/disk2.img xvdc image /rig/images/1\n"])
        self.assertEqual(r.xl_args[-1], "disk=['/rig/disk1.img,raw,xvda,w', "
                                        "'format=raw,vdev=xvdc,access=rw,target=/rig/disk2.img']")
        self.assertEqual(r.label, 'name="n1" extra="stay", @shutdown @image=xvda:'
                                  f'{self.image} @image=xvdc:{self.image}')
        self.assertEqual(self.images.files, [str(self.image.resolve())])

    def test_a_disk_override_is_the_list_extended(self):
        r = self.parse(f'@image=xvdc:{self.image} disk=["format=raw,vdev=xvdb,backendtype=qdisk,'
                       'target=scratch"] vif=[]')
        self.assertTrue(r.qdisk)
        self.assertEqual(r.xl_args[0], 'disk=["format=raw,vdev=xvdb,backendtype=qdisk,'
                                       'target=/rig/disk2.img", '
                                       "'format=raw,vdev=xvdc,access=rw,target=/rig/disk3.img']")
        self.assertEqual([d.vdev for d in r.disks], ["xvdb", "xvdc"])

    def test_faults_and_nodhcp_imply_shutdown(self):
        self.assertEqual(self.parse("@fault=blk-detach").control, "shutdown")
        self.assertEqual(self.parse("@fault=destroy-blkfill").control, "")
        r = self.parse("@fault=vif-attach")
        self.assertEqual(r.xl_args, ["vif=[]"])
        self.assertEqual(self.parse('@nodhcp extra="log=warn stay"').control, "shutdown")
        self.assertEqual(self.parse("@nodhcp").control, "")
        self.assertTrue(self.parse("@intact").intact)

    def test_vcpu_set_and_disk_mb(self):
        r = self.parse('@shutdown @vcpu-set=4,1,3 @disk-mb=256 maxvcpus=4 vcpus=2')
        self.assertEqual(r.vcpu_set, [4, 1, 3])
        self.assertEqual([d.line() for d in r.disks], ["/rig/disk1.img xvda scratch 256\n"])
        for spec, why in (("@shutdown @vcpu-set=0", "1 to 32"),
                          ("@shutdown @vcpu-set=2,", "1 to 32"),
                          ("@vcpu-set=2", "@shutdown or @net"),
                          ("@disk-mb=0", "1 to 1024"),
                          ("@disk-mb=2x", "1 to 1024")):
            with self.subTest(spec=spec), self.assertRaisesRegex(rig.RigError, why):
                self.parse(spec)

    def test_mem_set(self):
        self.assertEqual(self.parse("@net @mem-set=32,128").mem_set, [32, 128])
        r = self.parse('@suspend=save @mem-set=32 extra="stay"')
        self.assertEqual((r.mem_set, r.suspend), ([32], ["save"]))
        for spec, why in (("@shutdown @mem-set=2", "4 to 4096"),
                          ("@shutdown @mem-set=32,", "4 to 4096"),
                          ("@mem-set=32", "@shutdown, @net or @suspend"),
                          ("@mem-set=32 @disk-mb=256 @suspend=save @suspend-at=acked "
                           "extra=\"stay app=blkfill\"", "without @suspend-at")):
            with self.subTest(spec=spec), self.assertRaisesRegex(rig.RigError, why):
                self.parse(spec)

    def test_peer(self):
        peer = cfg_of('name = "linux"\nextra = "quiet"\ndisk = [\'p,raw,xvda,w\']\n',
                      self.numbers)
        r = self.parse("@peer @shutdown", peer)
        self.assertEqual((r.peer, r.name, r.extra), (True, "linux", "quiet"))
        self.assertEqual(r.disks[0].path, peer.disks[0].path)

    def test_refused(self):
        for spec, why in (("memory=32 @shutdown", "must come before"),
                          ("@shutdown @reboot", "more than one"),
                          ("@net @nodhcp", "do not go together"),
                          ("@bogus", "unknown directive"),
                          ("@fault=nope", "unknown fault"),
                          ("@peer", "without --peer"),
                          ("memory", "not key=value"),
                          ("@image=xvdb", "not @image"),
                          ("@image=xvdb:/no/such/file", "not a readable file"),
                          ('@fault=shutdown-mid-tests extra="stay"', "without 'stay'"),
                          ('@suspend=save extra="x"', "needs a guest that stays up"),
                          ('@suspend=save,checkpoint extra="stay"', "must end with save"),
                          ('@suspend=park extra="stay"', "steps are"),
                          ('@suspend-at=acked extra="stay"', "needs @suspend"),
                          ('@suspend=save @suspend-at=acked extra="stay"', "app=blkfill")):
            with self.subTest(spec=spec), self.assertRaisesRegex(rig.RigError, why):
                self.parse(spec)
        odd = Path(self.tmp.name) / "odd"
        odd.write_bytes(bytes(513))
        with self.assertRaisesRegex(rig.RigError, "multiple of 512"):
            self.parse(f"@image=xvdb:{odd}")
        with self.assertRaisesRegex(rig.RigError, "two @image"):
            self.parse(f"@image=xvdb:{self.image} @image=xvdb:{self.image}")
        with self.assertRaisesRegex(rig.RigError, "no name"):
            rig.parse_run(1, "", cfg_of("memory = 1\n"), None, self.numbers, self.images, 64)


def decide(run, text, **kw):
    kw.setdefault("console", no_bulk)
    return rig.decide(run, text, **kw)


class Decide(unittest.TestCase):
    def test_a_plain_run_passes(self):
        out = decide(rig.Run(1, ""), run_log(1, "ok 1 a", "skip 2 b: why",
                                             "1 passed, 0 failed, 1 skipped"))
        self.assertEqual((out.passed, out.closing), (True, "1 passed, 0 failed, 1 skipped"))

    def test_what_fails_a_plain_run(self):
        self.assertEqual(decide(rig.Run(1, ""), None).why, ["run missing (never began)"])
        self.assertEqual(decide(rig.Run(1, ""), "rig: run 1 begin: x\nok 1 a\n").why,
                         ["run did not end", "no closing line"])
        crash = "xl exit=0 reason=crash seconds=1 reasons=crash"
        why = decide(rig.Run(1, ""), run_log(1, "FAIL 1 a: no", "0 passed, 1 failed, 0 skipped",
                                             end=crash)).why
        self.assertEqual(why, ["1 failed", "1 FAIL line(s)",
                               "guest did not end with poweroff (xl exit=0 reason=crash "
                               "seconds=1 reasons=crash)"])
        failed = "xl exit=1 reason=unknown seconds=1 reasons=none"
        why = decide(rig.Run(1, ""), run_log(1, "1 passed, 0 failed, 0 skipped", end=failed)).why
        self.assertEqual(why, [f"xl create failed ({failed})"])

    def test_expect_fatal(self):
        r = rig.Run(1, "", expect_fatal="FATAL: trap")
        crash = "xl exit=0 reason=crash seconds=1 reasons=crash"
        self.assertTrue(decide(r, run_log(1, "1 passed, 0 failed, 0 skipped", "FATAL: trap 14",
                                          end=crash)).passed)
        self.assertEqual(decide(r, run_log(1, "1 passed, 0 failed, 0 skipped", end=crash)).why,
                         ["no 'FATAL: trap' (--expect-fatal)"])

    def test_a_control_run_passes_on_dom0s_result(self):
        r = rig.Run(3, "", control="shutdown")
        body = ["1 passed, 0 failed, 0 skipped", "control: ready", "control: shutdown poweroff"]
        ok = "rig: result run=3 check=control status=ok detail=ready 2.00 s"
        out = decide(r, run_log(3, *body, ok))
        self.assertTrue(out.passed, out.why)
        self.assertEqual(out.notes, ["control: ready 2.00 s"])
        # The wording of dom0's log lines decides nothing: only its result lines do.
        out = decide(r, run_log(3, *body, "rig: control: ok: ready 2.00 s"))
        self.assertEqual(out.why, ["control: no result from dom0's controller"])
        out = decide(r, run_log(3, *body, ok, "rig: result run=3 check=control status=fail "
                                "detail=the guest ignored xl shutdown"))
        self.assertEqual(out.why, ["control: the guest ignored xl shutdown"])
        # Another run's result is not this run's.
        out = decide(r, run_log(3, *body, "rig: result run=2 check=control status=ok detail=x"))
        self.assertEqual(out.why, ["control: no result from dom0's controller"])

    def test_vcpu_set_needs_every_step(self):
        r = rig.Run(3, "", control="shutdown", vcpu_set=[1, 4])
        body = ["1 passed, 0 failed, 0 skipped", "control: ready", "control: shutdown poweroff",
                "rig: result run=3 check=control status=ok detail=ready 2.00 s",
                "rig: result run=3 check=vcpu-set status=ok detail=1 vCPUs in service"]
        out = decide(r, run_log(3, *body))
        self.assertEqual(out.why, ["vcpu-set: 1 of the 2 steps (1,4) done"])
        out = decide(r, run_log(3, *body, "rig: result run=3 check=vcpu-set status=ok "
                                "detail=4 vCPUs in service"))
        self.assertTrue(out.passed, out.why)

    def test_mem_set_needs_every_step(self):
        r = rig.Run(3, "", control="shutdown", mem_set=[32, 128])
        body = ["1 passed, 0 failed, 0 skipped", "control: ready", "control: shutdown poweroff",
                "rig: result run=3 check=control status=ok detail=ready 2.00 s",
                "rig: result run=3 check=mem-set status=ok detail=at 32 MiB"]
        out = decide(r, run_log(3, *body))
        self.assertEqual(out.why, ["mem-set: 1 of the 2 steps (32,128) done"])
        out = decide(r, run_log(3, *body, "rig: result run=3 check=mem-set status=ok "
                                "detail=at 128 MiB"))
        self.assertTrue(out.passed, out.why)

    def test_control_run_guest_lines(self):
        r = rig.Run(1, "", control="reboot")
        ok = "rig: result run=1 check=control status=ok detail=t"
        closing = "1 passed, 0 failed, 0 skipped"
        good = [closing, "control: ready", "control: shutdown reboot", closing, "control: ready",
                "control: shutdown poweroff", ok]
        end = "xl exit=0 reason=poweroff seconds=1 reasons=reboot,poweroff"
        self.assertTrue(decide(r, run_log(1, *good, end=end)).passed)
        out = decide(r, run_log(1, closing, "control: ready", "control: shutdown poweroff", ok))
        self.assertEqual(out.why, ["1 'control: ready' line(s), want 2", "1 closing lines, want 2",
                                   "'control: shutdown' lines: 'poweroff', want 'reboot poweroff'",
                                   "shutdown reasons poweroff, want reboot,poweroff"])

    def test_net_and_bench_need_their_results(self):
        body = ["1 passed, 0 failed, 0 skipped", "control: ready", "control: shutdown poweroff",
                "rig: result run=1 check=control status=ok detail=t",
                "rig: control: [1.0] net: ping 1.2.3.4: 0% loss",
                "rig: control: [1.0] bench: net_ping_rtt 800.0 us/rtt"]
        out = decide(rig.Run(1, "", control="net"), run_log(1, *body))
        self.assertEqual(out.why, ["net: the checks from dom0 did not all run"])
        self.assertEqual(out.notes, ["control: t", "net: ping 1.2.3.4: 0% loss",
                                     "dom0 bench: net_ping_rtt 800.0 us/rtt"])
        net_ok = "rig: result run=1 check=net status=ok detail=x"
        self.assertTrue(decide(rig.Run(1, "", control="net"), run_log(1, *body, net_ok)).passed)
        out = decide(rig.Run(1, "", control="bench"), run_log(1, *body))
        self.assertEqual(out.why, ["bench: dom0's network measurements did not all run"])
        bench = "rig: result run=1 check=bench status=fail detail=x"
        self.assertTrue(decide(rig.Run(1, "", control="bench"), run_log(1, *body, bench)).passed)

    def test_blksum_and_blkfill(self):
        disks = [f"rig: disk xvdb before size=4096 sha256={SHA_A}",
                 f"rig: disk xvdb after size=4096 sha256={SHA_B}"]
        closing = "1 passed, 0 failed, 0 skipped"
        good = run_log(1, closing, *disks,
                       f"[ 1.0] blksum xvdb sectors=8 sector_size=512 sha256={SHA_A}",
                       "blkfill xvdb done sectors=8 seed=42")
        out = decide(rig.Run(1, ""), good, pattern=pattern_of(SHA_B))
        self.assertTrue(out.passed, out.why)
        self.assertEqual(out.notes, [f"blksum xvdb matches (8 sectors, sha256 {SHA_A[:16]}...)",
                                     "blkfill xvdb verified 8 sectors (seed 42)"])
        out = decide(rig.Run(1, ""), good, pattern=pattern_of(SHA_A))
        self.assertEqual(out.why, [f"blkfill xvdb: disk after the run has sha256 {SHA_B}, the "
                                   f"pattern for seed=42 over 8 sectors {SHA_A}"])
        bad = run_log(1, closing, *disks, f"blksum xvdb sectors=8 sector_size=512 sha256={SHA_B}",
                      f"blksum xvdc sectors=8 sector_size=512 sha256={SHA_A}",
                      "blkfill xvdb done sectors=4 seed=1")
        self.assertEqual(decide(rig.Run(1, ""), bad, pattern=pattern_of(SHA_B)).why, [
            f"blksum xvdb: guest read sha256 {SHA_B}, dom0 had {SHA_A} (4096 bytes) before the run",
            "blksum xvdc: the run has no disk xvdc (no 'rig: disk xvdc before' line)",
            "blkfill xvdb: guest filled 4 sectors (2048 bytes) of a 4096-byte disk"])

    def test_suspend_runs(self):
        ok = "rig: result run=1 check=control status=ok detail=t"
        end = "xl exit=0 reason=suspend seconds=1 reasons=suspend,poweroff"
        closing = "1 passed, 0 failed, 0 skipped"
        resumed = ["control: resumed cancelled (same domain): resumes=0 cancelled=1",
                   "control: resumed in a new domain: resumes=1 cancelled=1"]
        body = [closing, "control: ready", *resumed, "control: shutdown poweroff", ok]
        r = rig.Run(1, "", control="shutdown", suspend=["checkpoint", "save"])
        out = decide(r, run_log(1, *body, end=end))
        self.assertTrue(out.passed, out.why)
        out = decide(r, run_log(1, closing, "control: ready", resumed[1],
                                "control: shutdown poweroff", ok, end=end))
        self.assertEqual(out.why, ["resumes: ['in a new domain'], want ['cancelled (same domain)', "
                                   "'in a new domain'] (checkpoint,save)"])
        # The first step mid-blkfill: the disk must have reconnected and the fill finished.
        mid = rig.Run(1, "", control="shutdown", suspend=["save", "checkpoint", "save"],
                      suspend_at_acked=True)
        lines = ["blkfill xvdb acked sectors=2048 seed=9",
                 "control: resumed in a new domain: resumes=1 cancelled=0",
                 "blkfill xvdb resumed at sectors=2048", "blkfill xvdb done sectors=8 seed=9",
                 closing, "control: ready",
                 "control: resumed cancelled (same domain): resumes=1 cancelled=1",
                 "control: resumed in a new domain: resumes=2 cancelled=1",
                 "control: shutdown poweroff", ok]
        disks = [f"rig: disk xvdb before size=4096 sha256={SHA_A}",
                 f"rig: disk xvdb after size=4096 sha256={SHA_B}"]
        out = decide(mid, run_log(1, *disks, *lines, end=end), pattern=pattern_of(SHA_B))
        self.assertTrue(out.passed, out.why)
        pages = ["rig: control: net: page: uptime: 12.287 s",
                 "rig: control: net: page: uptime: 39.378 s"]
        out = decide(r, run_log(1, *body, *pages, end=end))
        self.assertTrue(out.passed, out.why)
        out = decide(r, run_log(1, *body, *reversed(pages), end=end))
        self.assertEqual(out.why, ["the status page's uptime went back from 39.378 s to 12.287 s"])
        out = decide(mid, run_log(1, *disks, *[x for x in lines if "xvdb resumed" not in x],
                                  end=end), pattern=pattern_of(SHA_B))
        self.assertEqual(out.why,
                         ["no 'blkfill <dev> resumed at sectors=<n>' line after the first step"])

    def test_intact(self):
        closing = "1 passed, 0 failed, 0 skipped"
        same = [f"rig: disk xvda before size=1 sha256={SHA_A}",
                f"rig: disk xvda after size=1 sha256={SHA_A}"]
        r = rig.Run(1, "", intact=True)
        self.assertEqual(decide(r, run_log(1, closing, *same)).notes,
                         ["@intact: 1 disk(s) unchanged"])
        self.assertEqual(decide(r, run_log(1, closing)).why, ["@intact: the run has no disk"])
        changed = run_log(1, closing, same[0], f"rig: disk xvda after size=1 sha256={SHA_B}")
        self.assertEqual(decide(r, changed).why, [
            f"@intact: disk xvda was size=1 sha256={SHA_A} before the run, 1 {SHA_B} after"])

    def test_nodhcp_and_qdisk(self):
        closing = "1 passed, 0 failed, 0 skipped"
        r = rig.Run(1, "", nodhcp=True)
        self.assertEqual(decide(r, run_log(1, closing)).why, ["@nodhcp: dom0 did not stop udhcpd"])
        fail = "rig: result run=1 check=nodhcp status=fail detail=no udhcpd to stop"
        self.assertEqual(decide(r, run_log(1, closing, fail)).why, ["@nodhcp: no udhcpd to stop"])
        r = rig.Run(1, "", qdisk=True)
        down = "rig: result run=1 check=qdisk-backend status=fail detail=states none"
        self.assertEqual(decide(r, run_log(1, closing, down)).why, [
            "qdisk: dom0 saw no backend nodes under /local/domain/0/backend/qdisk (states none)",
            "qdisk: no xen-qemu-system-i386 process in dom0"])
        good = ["rig: result run=1 check=qdisk-backend status=ok detail=up",
                "rig: result run=1 check=qdisk-qemu status=ok detail=pid 9",
                "rig: qdisk: backend /x up 0.50 s after creation: 51728=2",
                "rig: qemu-dm: hello"]
        out = decide(r, run_log(1, closing, *good))
        self.assertTrue(out.passed, out.why)
        self.assertEqual(out.notes, ["qdisk: backend /x up 0.50 s after creation: 51728=2",
                                     "qemu-dm: hello"])
        died = "rig: result run=1 check=qemu-dm status=fail detail=Aborted"
        out = decide(r, run_log(1, closing, *good, died))
        self.assertEqual(out.why, ["qdisk: QEMU: Aborted"])

    def test_fault_lines(self):
        closing = "1 passed, 0 failed, 0 skipped"
        r = rig.Run(1, "", control="shutdown", fault="blk-attach")
        body = [closing, "control: ready", "control: shutdown poweroff",
                "rig: result run=1 check=control status=ok detail=t",
                "rig: control: [2.0] fault: xl block-attach", "device: vbd/51760 added",
                "blk: xvdd attached: sectors=16384 sector_size=512 mode=ro"]
        out = decide(r, run_log(1, *body))
        self.assertEqual(out.why, ["fault blk-attach: no guest line matching "
                                   "'device: vbd/51760 removed'"])
        self.assertIn("fault: xl block-attach", out.notes)
        self.assertTrue(decide(r, run_log(1, *body, "device: vbd/51760 removed")).passed)

    def test_shutdown_mid_tests(self):
        r = rig.Run(1, "", fault="shutdown-mid-tests")
        body = ["selftest: stopped by the toolstack (poweroff) after 5 of 9 tests",
                "5 passed, 0 failed, 0 skipped", "control: shutdown poweroff"]
        out = decide(r, run_log(1, *body))
        self.assertEqual(out.why, ["fault shutdown-mid-tests: no result from dom0"])
        ok = "rig: result run=1 check=control status=ok detail=down 0.3 s"
        self.assertTrue(decide(r, run_log(1, *body, ok)).passed)
        fail = "rig: result run=1 check=control status=fail detail=still running"
        self.assertEqual(decide(r, run_log(1, *body, fail)).why, ["still running"])

    def test_destroy_blkfill(self):
        r = rig.Run(1, "", fault="destroy-blkfill")
        end = "xl exit=0 reason=destroyed seconds=1 reasons=destroyed"
        body = ["blkfill xvdb acked sectors=2048 seed=9",
                f"rig: fault: blkfill xvdb acked sectors=2048 seed=9 sha256={SHA_A}"]
        out = decide(r, run_log(1, *body, end=end), pattern=pattern_of(SHA_A))
        self.assertEqual(out.why, ["no closing line"])
        self.assertEqual(out.notes, ["fault destroy-blkfill: the 2048 sectors acked before xl "
                                     "destroy hold the pattern (seed 9)"])
        out = decide(r, run_log(1, "blkfill xvdb acked sectors=4096 seed=9", body[1], end=end),
                     pattern=pattern_of(SHA_A))
        self.assertIn("fault destroy-blkfill: dom0 hashed 'xvdb 2048 9', the guest's last line "
                      "was 'blkfill xvdb acked sectors=4096 seed=9'", out.why)

    def test_console_check(self):
        closing = "1 passed, 0 failed, 0 skipped"
        out = decide(rig.Run(1, ""), run_log(1, closing), expect_bulk=True)
        self.assertEqual(out.why, ["no console-bulk block (--expect-bulk)"])
        out = decide(rig.Run(1, ""), run_log(1, closing),
                     console=lambda text: (False, "console-bulk: block 1 BROKEN: x\nmore"))
        self.assertEqual(out.why, ["console check: console-bulk: block 1 BROKEN: x more"])
        # The real checker, on an empty block.
        empty = ["console-bulk: begin lines=0", "console-bulk: end bytes=0 fnv1a=cbf29ce484222325"]
        out = rig.decide(rig.Run(1, ""), run_log(1, closing, *empty), expect_bulk=True)
        self.assertEqual(out.notes, ["console-bulk: verified 0 bytes"])


class Logs(unittest.TestCase):
    def test_split_log(self):
        log = ("(XEN) boot\nrig: run 1 begin: a\nok 1 x\nlast linerig: run 1 end: xl exit=0\n"
               "between\nrig: run 2 begin: b\nrig: run 2 end: xl exit=1\n")
        self.assertEqual(rig.split_log(log), {
            1: "rig: run 1 begin: a\nok 1 x\nlast line\nrig: run 1 end: xl exit=0\n",
            2: "rig: run 2 begin: b\nrig: run 2 end: xl exit=1\n"})

    def test_live_filter(self):
        live = rig.LiveFilter(verbose=False)
        lines = [b"(XEN) chatter", b"rig: xenstored: x", b"console-bulk: begin lines=2", b"body",
                 b"console-bulk: end bytes=1", b"after"]
        self.assertEqual([line for line in lines if live.shows(line)],
                         [b"rig: xenstored: x", b"console-bulk: begin lines=2",
                          b"console-bulk: end bytes=1", b"after"])
        self.assertTrue(all(rig.LiveFilter(verbose=True).shows(line) for line in lines))

    def test_failure_tail(self):
        text = run_log(1, "(XEN) d1v0 crashed", "(XEN) HVM d1v0 save: CPU", "rig: xenctx: rip: 1",
                       "rig: xenctx: junk", "guest line", "")
        self.assertEqual(rig.failure_tail(text), ["rig: | guest line", "rig: C rip: 1",
                                                  "rig: X (XEN) d1v0 crashed"])


    def test_failure_tail_puts_the_vcpu_that_died_first(self):
        text = run_log(1, "rig: xenctx: domain g (3) was preserved; its vCPU state:",
                       "rig: xenctx: vcpu0:", *[f"rig: xenctx: r10: {i}" for i in range(30)],
                       "rig: xenctx: vcpu1:", "rig: xenctx: rip: 2",
                       "rig: xenctx: Code (instr addr 2)", "rig: xenctx: cc <c3> cc",
                       "(XEN) [  279.98] d3v1 Triple fault - invoking HVM shutdown action 1")
        tail = rig.failure_tail(text)
        self.assertEqual(tail[:4], ["rig: C vcpu1:", "rig: C rip: 2", "rig: C Code (instr addr 2)",
                                    "rig: C cc <c3> cc"])
        self.assertEqual(tail[4:6], ["rig: C domain g (3) was preserved; its vCPU state:",
                                     "rig: C vcpu0:"])
        self.assertEqual(len([t for t in tail if t.startswith("rig: C ")]), 20)
        self.assertEqual(tail[-1], "rig: X (XEN) [  279.98] d3v1 Triple fault - invoking HVM "
                         "shutdown action 1")


class HostFaults(unittest.TestCase):
    # From CI's excerpt of a failed PVH run (d19, 40 vCPUs): vcpu0 held Xen's state.
    XEN_STATE = ["rig: xenctx: domain g (19) was preserved; its vCPU state:",
                 "rig: xenctx: vcpu0:", "rig: xenctx: rip: ffff82d0402044a5",
                 "rig: xenctx: flags: 00000246 i z p", "rig: xenctx: rsp: ffff83008ccc7f70",
                 "rig: xenctx: vcpu1:", "rig: xenctx: rip: ffffffff801023a8 hypercall_page+0x3a8",
                 "rig: xenctx: rsp: ffffffff82107e98",
                 "(XEN) [  289.235101] d19v0 Triple fault - invoking HVM shutdown action 1"]
    CRASH = "xl exit=0 reason=crash seconds=1 reasons=crash"

    def test_xens_own_registers_in_a_guest_name_the_host(self):
        out = decide(rig.Run(1, ""), run_log(1, "ok 1 a", *self.XEN_STATE, end=self.CRASH))
        self.assertFalse(out.passed)
        self.assertEqual(out.host_fault, "vcpu0 held Xen's own registers (rip ffff82d0402044a5, "
                         "rsp ffff83008ccc7f70): the emulated CPU entered the guest on the "
                         "hypervisor's state")

    # From CI's log of a PVH run destroyed after a failed migrate (d16): no xenctx dump, only
    # Xen's own at the triple fault.
    XEN_DUMP = ["(XEN) [  143.714803] d16v0 Triple fault - invoking HVM shutdown action 1",
                "(XEN) [  143.715057] *** Dumping Dom16 vcpu#0 state: ***",
                "(XEN) [  143.715501] ----[ Xen-4.17.7  x86_64  debug=n  Not tainted ]----",
                "(XEN) [  143.715937] RIP:    e008:[<ffff82d0402044a5>]",
                "(XEN) [  143.716569] RFLAGS: 0000000000000246   CONTEXT: hvm guest (d16v0)",
                "(XEN) [  143.724396] rax: 000000008a27c000   rbx: 0000001df915140b   "
                "rcx: ffffffff801021e0",
                "(XEN) [  143.727057] rbp: ffffffff801a53f0   rsp: ffff83008ccb7f70   "
                "r8:  ffffffff801a5497"]

    def test_xens_own_dump_of_the_vcpu_names_the_host_too(self):
        out = decide(rig.Run(1, ""), run_log(1, "ok 1 a", *self.XEN_DUMP, end=self.CRASH))
        self.assertEqual(out.host_fault, "Dom16 vcpu#0 held Xen's own registers (rip "
                         "ffff82d0402044a5, rsp ffff83008ccb7f70): the emulated CPU entered "
                         "the guest on the hypervisor's state")
        own = [line.replace("ffff83008ccb7f70", "ffffffff82107e98") for line in self.XEN_DUMP]
        out = decide(rig.Run(1, ""), run_log(1, "ok 1 a", *own, end=self.CRASH))
        self.assertEqual(out.host_fault, "", "Xen's text without Xen's stack: a wild jump")

    def test_a_guests_own_crash_is_no_host_fault(self):
        # The guest's own addresses; or Xen's text without Xen's stack, as a wild jump would
        # leave it; or a run that passed.
        own = [line.replace("ffff82d0402044a5", "ffffffff80104000") for line in self.XEN_STATE]
        jump = [line.replace("ffff83008ccc7f70", "ffffffff82107e98") for line in self.XEN_STATE]
        for body in (own, jump):
            out = decide(rig.Run(1, ""), run_log(1, *body, end=self.CRASH))
            self.assertFalse(out.passed)
            self.assertEqual(out.host_fault, "")
        self.assertEqual(rig.host_fault(run_log(1, "rig: xenctx: rip: ffff82d0402044a5",
                                                "rig: xenctx: rsp: ffff83008ccc7f70")), "",
                         "registers outside a vCPU's block")
        out = decide(rig.Run(1, ""), run_log(1, "1 passed, 0 failed, 0 skipped", *self.XEN_STATE))
        self.assertEqual((out.passed, out.host_fault), (True, ""))

    def test_a_boot_that_runs_again_stages_only_those_runs(self):
        with tempfile.TemporaryDirectory() as d:
            image = Path(d) / "kernel"
            image.write_text("k")
            args = rig.parse_args([str(image), str(HERE.parent / "xen.cfg"), "", "vcpus=40",
                                   "memory=32", "--fpu-check", "5"])
            cfg, peer_cfg, runs, images = rig.plan(args)
            rig.stage(args, cfg, peer_cfg, runs[1:2], images, Path(d) / "stage")
            staged = Path(d) / "stage" / "rig"
            self.assertEqual([p.name for p in (staged / "run").iterdir()], ["2"])
            self.assertEqual((staged / "run" / "2" / "args").read_text(), "vcpus=40\n")
            self.assertFalse((staged / "fpu-check-seconds").exists())

if __name__ == "__main__":
    unittest.main()
