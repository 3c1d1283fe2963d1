//! The kernel command line (xl's `extra=`, QEMU's `-append`): whitespace-separated
//! `key=value` options. Unknown options and bad values are collected as warnings for the
//! caller to report; parsing never fails as a whole.

use log::LevelFilter;

/// Which self-tests (or benchmarks) run: all, none, or those whose name starts with one of
/// the prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection<'a> {
    All,
    None,
    /// A comma-separated list of name prefixes, e.g. `mem::,time::clock`.
    Prefixes(&'a str),
}

impl Selection<'_> {
    pub fn selects(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::None => false,
            Selection::Prefixes(list) => {
                list.split(',').filter(|p| !p.is_empty()).any(|p| name.starts_with(p))
            }
        }
    }
}

/// A deliberate failure after the self-tests, to show (and test) how the kernel dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A write to an unmapped address: #PF.
    PageFault,
    /// `ud2`: #UD.
    InvalidOpcode,
    /// A Rust panic.
    Panic,
    /// Recursion without end: the kernel stack overflows into its guard page.
    StackOverflow,
}

/// Which event channel ABI to use under Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnAbi {
    /// FIFO when Xen offers it, else 2-level.
    Auto,
    TwoLevel,
    Fifo,
}

/// What runs after the self-tests (`app=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// Read whole disks and print their SHA-256.
    BlkSum,
    /// Write the deterministic pattern over a disk.
    BlkFill,
}

impl App {
    pub fn name(self) -> &'static str {
        match self {
            App::BlkSum => "blksum",
            App::BlkFill => "blkfill",
        }
    }
}

/// A problem with one option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning<'a> {
    Unknown(&'a str),
    BadValue {
        option: &'a str,
        expected: &'static str,
    },
    /// Options that contradict each other.
    Conflict(&'static str),
}

impl core::fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Warning::Unknown(opt) => write!(f, "unknown option '{opt}' ignored"),
            Warning::BadValue { option, expected } => {
                write!(f, "bad option '{option}' ignored: expected {expected}")
            }
            Warning::Conflict(why) => f.write_str(why),
        }
    }
}

/// At most this many warnings are kept; more are counted in `dropped_warnings`.
pub const MAX_WARNINGS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    pub log: LevelFilter,
    pub tests: Selection<'a>,
    pub fault: Option<Fault>,
    pub bench: Selection<'a>,
    pub evtchn: EvtchnAbi,
    /// After the tests, stay up and serve the toolstack (xl shutdown/reboot) instead of
    /// powering off.
    pub stay: bool,
    pub app: Option<App>,
    /// The disks an app works on, in order (`dev=xvdb`, `dev=xvda,xvdb`).
    pub dev: Option<&'a str>,
    /// The pattern seed of `app=blkfill`.
    pub seed: u64,
    /// `scratch=xvdX`: the disk whose contents the destructive block self-tests and the
    /// block benchmarks may destroy. Nothing else is ever written unasked.
    pub scratch: Option<u32>,
    /// `rodisk=xvdX`: a disk the toolstack attached read-only, for the read-only test.
    pub rodisk: Option<u32>,
    /// `ip=a.b.c.d/len`: the network's static address; DHCP when absent.
    pub ip: Option<Ipv4Cidr>,
    /// `gw=a.b.c.d`: the default gateway that goes with `ip=`.
    pub gw: Option<[u8; 4]>,
    /// Patch the pv_ops call sites at boot (`nopvpatch` keeps the indirect calls).
    pub pvpatch: bool,
    /// netfront's checksum and segmentation offloads (`netoffload=off`: none, for a
    /// benchmark's other column).
    pub netoffload: bool,
    /// `idle=poll`: waits spin with events enabled instead of blocking in Xen, trading a
    /// busy vCPU for the wake-up's latency (`idle=block`, the default, blocks).
    pub idle_poll: bool,
    warnings: [Option<Warning<'a>>; MAX_WARNINGS],
    pub dropped_warnings: usize,
}

impl<'a> Options<'a> {
    pub fn warnings(&self) -> impl Iterator<Item = &Warning<'a>> {
        self.warnings.iter().flatten()
    }

    fn warn(&mut self, w: Warning<'a>) {
        match self.warnings.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(w),
            None => self.dropped_warnings += 1,
        }
    }
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            log: LevelFilter::Info,
            tests: Selection::All,
            fault: None,
            bench: Selection::None,
            evtchn: EvtchnAbi::Auto,
            stay: false,
            app: None,
            dev: None,
            seed: 0,
            scratch: None,
            rodisk: None,
            ip: None,
            gw: None,
            pvpatch: true,
            netoffload: true,
            idle_poll: false,
            warnings: [None; MAX_WARNINGS],
            dropped_warnings: 0,
        }
    }
}

/// An IPv4 address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: [u8; 4],
    pub prefix_len: u8,
}

fn parse_ipv4(v: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = v.split('.');
    for byte in &mut out {
        let part = parts.next()?;
        // Leading zeros are refused: some read them as octal.
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        *byte = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn parse_cidr(v: &str) -> Option<Ipv4Cidr> {
    let (addr, len) = v.split_once('/')?;
    let prefix_len: u8 = len.parse().ok().filter(|&l| (1..=32).contains(&l))?;
    Some(Ipv4Cidr { addr: parse_ipv4(addr)?, prefix_len })
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    Some(match v {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

/// The command line as text from the bytes the loader left: invalid UTF-8 is cut at the first
/// bad byte rather than losing the whole line.
pub fn text(raw: &[u8]) -> &str {
    match core::str::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or(""),
    }
}

pub fn parse(line: &str) -> Options<'_> {
    let mut o = Options::default();
    for token in line.split_ascii_whitespace() {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        match (key, value) {
            ("log", Some(v)) => match parse_level(v) {
                Some(level) => o.log = level,
                None => o.warn(Warning::BadValue {
                    option: token,
                    expected: "off|error|warn|info|debug|trace",
                }),
            },
            ("tests", Some("all")) => o.tests = Selection::All,
            ("tests", Some("none")) => o.tests = Selection::None,
            ("tests", Some(v)) if !v.is_empty() => o.tests = Selection::Prefixes(v),
            ("tests", _) => o.warn(Warning::BadValue {
                option: token,
                expected: "all|none|<comma-separated name prefixes>",
            }),
            ("bench", None) => o.bench = Selection::All,
            ("bench", Some(v)) if !v.is_empty() => o.bench = Selection::Prefixes(v),
            ("bench", Some(_)) => o.warn(Warning::BadValue {
                option: token,
                expected: "bench or bench=<comma-separated name prefixes>",
            }),
            ("stay", None) => o.stay = true,
            ("nopvpatch", None) => o.pvpatch = false,
            ("app", Some("blksum")) => o.app = Some(App::BlkSum),
            ("app", Some("blkfill")) => o.app = Some(App::BlkFill),
            ("app", _) => o.warn(Warning::BadValue { option: token, expected: "blksum|blkfill" }),
            ("dev", Some(v)) if !v.is_empty() => o.dev = Some(v),
            ("scratch", Some(v)) => match crate::vdev::id(v) {
                Some(id) => o.scratch = Some(id),
                None => o.warn(Warning::BadValue { option: token, expected: "scratch=xvd[a-p]" }),
            },
            ("rodisk", Some(v)) => match crate::vdev::id(v) {
                Some(id) => o.rodisk = Some(id),
                None => o.warn(Warning::BadValue { option: token, expected: "rodisk=xvd[a-p]" }),
            },
            ("seed", Some(v)) => match v.parse() {
                Ok(seed) => o.seed = seed,
                Err(_) => o.warn(Warning::BadValue { option: token, expected: "a u64" }),
            },
            ("ip", Some(v)) => match parse_cidr(v) {
                Some(cidr) => o.ip = Some(cidr),
                None => o.warn(Warning::BadValue { option: token, expected: "ip=a.b.c.d/len" }),
            },
            ("gw", Some(v)) => match parse_ipv4(v) {
                Some(gw) => o.gw = Some(gw),
                None => o.warn(Warning::BadValue { option: token, expected: "gw=a.b.c.d" }),
            },
            ("evtchn", Some("2l")) => o.evtchn = EvtchnAbi::TwoLevel,
            ("evtchn", Some("fifo")) => o.evtchn = EvtchnAbi::Fifo,
            ("evtchn", _) => o.warn(Warning::BadValue { option: token, expected: "2l|fifo" }),
            ("netoffload", Some("on")) => o.netoffload = true,
            ("netoffload", Some("off")) => o.netoffload = false,
            ("netoffload", _) => o.warn(Warning::BadValue { option: token, expected: "on|off" }),
            ("idle", Some("poll")) => o.idle_poll = true,
            ("idle", Some("block")) => o.idle_poll = false,
            ("idle", _) => o.warn(Warning::BadValue { option: token, expected: "poll|block" }),
            ("fault", Some("pf")) => o.fault = Some(Fault::PageFault),
            ("fault", Some("ud")) => o.fault = Some(Fault::InvalidOpcode),
            ("fault", Some("panic")) => o.fault = Some(Fault::Panic),
            ("fault", Some("stack")) => o.fault = Some(Fault::StackOverflow),
            ("fault", _) => {
                o.warn(Warning::BadValue { option: token, expected: "pf|ud|panic|stack" })
            }
            ("log", None) => o.warn(Warning::BadValue { option: token, expected: "log=<level>" }),
            _ => o.warn(Warning::Unknown(token)),
        }
    }
    if o.scratch.is_some() && o.scratch == o.rodisk {
        o.warn(Warning::Conflict("scratch= and rodisk= name the same disk: neither is used"));
        (o.scratch, o.rodisk) = (None, None);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_bad_utf8() {
        assert_eq!(text(b"log=info"), "log=info");
        assert_eq!(text(b"log=info \xff stay"), "log=info ");
        assert_eq!(text(b"\xc3"), "");
    }

    #[test]
    fn defaults() {
        let o = parse("");
        assert_eq!(o.log, LevelFilter::Info);
        assert_eq!(o.tests, Selection::All);
        assert_eq!(o.warnings().count(), 0);
    }

    #[test]
    fn known_options() {
        let o = parse("  log=debug\ttests=mem::,time::clock ");
        assert_eq!(o.log, LevelFilter::Debug);
        assert!(o.tests.selects("mem::heap_stress"));
        assert!(o.tests.selects("time::clock_rate"));
        assert!(!o.tests.selects("time::other"));
        assert!(!o.tests.selects("cpu::cpuid"));
        assert_eq!(parse("tests=none").tests, Selection::None);
        assert!(!Selection::None.selects("x"));
        assert_eq!(parse("tests=all log=off").log, LevelFilter::Off);
        assert_eq!(parse("").bench, Selection::None);
        assert_eq!(parse("bench").bench, Selection::All);
        assert!(parse("bench=null,grant").bench.selects("grant_copy"));
        assert_eq!(parse("").evtchn, EvtchnAbi::Auto);
        assert!(!parse("").stay);
        let o = parse("app=blkfill dev=xvdb seed=42");
        assert_eq!((o.app, o.dev, o.seed), (Some(App::BlkFill), Some("xvdb"), 42));
        assert_eq!(parse("app=blksum").app, Some(App::BlkSum));
        assert_eq!(parse("seed=-1 app=x").warnings().count(), 2);
        assert!(parse("stay").stay);
        assert!(parse("").pvpatch);
        assert!(!parse("nopvpatch").pvpatch);
        assert_eq!(parse("nopvpatch=1").warnings().count(), 1);
        assert_eq!(parse("stay=1").warnings().count(), 1);
        assert_eq!(parse("evtchn=2l").evtchn, EvtchnAbi::TwoLevel);
        assert_eq!(parse("evtchn=fifo").evtchn, EvtchnAbi::Fifo);
        assert_eq!(parse("evtchn=3l").warnings().count(), 1);
        assert!(parse("").netoffload);
        assert!(!parse("netoffload=off").netoffload);
        assert!(parse("netoffload=on").netoffload);
        assert_eq!(parse("netoffload").warnings().count(), 1);
        assert!(!parse("").idle_poll);
        assert!(parse("idle=poll").idle_poll);
        assert!(!parse("idle=poll idle=block").idle_poll);
        assert_eq!(parse("idle=halt").warnings().count(), 1);
        assert_eq!(parse("bench=").warnings().count(), 1);
        assert_eq!(parse("").fault, None);
        assert_eq!(parse("fault=pf").fault, Some(Fault::PageFault));
        assert_eq!(parse("fault=ud").fault, Some(Fault::InvalidOpcode));
        assert_eq!(parse("fault=panic").fault, Some(Fault::Panic));
        assert_eq!(parse("fault=stack").fault, Some(Fault::StackOverflow));
        assert_eq!(parse("fault=x").warnings().count(), 1);
    }

    #[test]
    fn network_addresses() {
        let o = parse("ip=10.0.0.2/24 gw=10.0.0.1");
        assert_eq!(o.ip, Some(Ipv4Cidr { addr: [10, 0, 0, 2], prefix_len: 24 }));
        assert_eq!(o.gw, Some([10, 0, 0, 1]));
        assert_eq!(o.warnings().count(), 0);
        assert_eq!(parse("").ip, None);
        for bad in [
            "ip=10.0.0.2",
            "ip=10.0.0.2/33",
            "ip=10.0.0.2/0",
            "ip=10.0.0/24",
            "ip=10.0.0.256/24",
            "ip=10.0.0.01/24",
            "ip=10.0.0.2.3/24",
            "ip=a.b.c.d/8",
            "gw=10.0.0",
            "gw=",
        ] {
            let o = parse(bad);
            assert_eq!((o.ip, o.gw, o.warnings().count()), (None, None, 1), "{bad}");
        }
    }

    #[test]
    fn scratch_and_read_only_disks() {
        let o = parse("scratch=xvdb rodisk=xvdc");
        assert_eq!((o.scratch, o.rodisk), (Some(51728), Some(51744)));
        assert_eq!(o.warnings().count(), 0);
        assert_eq!((parse("").scratch, parse("").rodisk), (None, None));
        for bad in ["scratch=", "scratch=sda", "scratch=xvdb1", "rodisk=xvdz", "scratch"] {
            let o = parse(bad);
            assert_eq!((o.scratch, o.rodisk, o.warnings().count()), (None, None, 1), "{bad}");
        }
        // One disk cannot be both: a typo must not turn the read-only disk into scratch.
        let o = parse("scratch=xvdb rodisk=xvdb");
        assert_eq!((o.scratch, o.rodisk, o.warnings().count()), (None, None, 1));
    }

    #[test]
    fn last_value_wins() {
        assert_eq!(parse("log=error log=trace").log, LevelFilter::Trace);
    }

    #[test]
    fn unknown_and_bad_options_are_reported() {
        let o = parse("bogus=1 log=loud tests= log quiet");
        let w: Vec<_> = o.warnings().copied().collect();
        assert_eq!(
            w,
            [
                Warning::Unknown("bogus=1"),
                Warning::BadValue {
                    option: "log=loud",
                    expected: "off|error|warn|info|debug|trace"
                },
                Warning::BadValue {
                    option: "tests=",
                    expected: "all|none|<comma-separated name prefixes>"
                },
                Warning::BadValue { option: "log", expected: "log=<level>" },
                Warning::Unknown("quiet"),
            ]
        );
        assert_eq!(o.log, LevelFilter::Info, "a bad value leaves the default");
        assert_eq!(format!("{}", w[0]), "unknown option 'bogus=1' ignored");
    }

    #[test]
    fn warnings_beyond_the_limit_are_counted() {
        let o = parse("a b c d e f g h i j");
        assert_eq!(o.warnings().count(), MAX_WARNINGS);
        assert_eq!(o.dropped_warnings, 2);
    }
}
