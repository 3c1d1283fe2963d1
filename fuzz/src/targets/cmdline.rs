//! The kernel command line, as the toolstack (`extra=`) or the loader leaves it: arbitrary
//! bytes, made text as boot does, then parsed.

use guest::cmdline::{parse, text};

pub fn run(data: &[u8]) {
    let options = parse(text(data));
    // Everything the kernel later does with the result, short of acting on it.
    for w in options.warnings() {
        let _ = w.to_string();
    }
    for name in ["boot::start_info", "mem::", ""] {
        options.tests.selects(name);
        options.bench.selects(name);
    }
    let _ = options.app.map(|a| a.name());
}

pub fn seeds() -> Vec<Vec<u8>> {
    [
        &b"log=info"[..],
        b"log=warn tests=mem::,time:: frobnicate=1 nopvpatch stay",
        b"app=blkfill dev=xvdb seed=42 ip=10.0.0.2/24 gw=10.0.0.1 evtchn=2l",
        b"bench=pvops fault=pf log=debug\tapp=blksum\0garbage",
        b"tests= bench= ip=1.2.3.4/33 gw=01.2.3.4 seed=-1 log \xff\xfe",
        b"a b c d e f g h i j k l m n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}
