//! RAPL: one sampler tick over a fake powercap tree, and why `energy_uj` is kept open.
//!
//! - `rapl_tick/zones=N`: one [`SamplerGroup`] tick over every zone source of a fake
//!   two-socket Intel server (package, core, dram per socket): flinch's real read path
//!   (`CounterFile::read_uj`, counter arithmetic, one reading per zone).
//! - `rapl_read/*`: one read of one counter file, four ways:
//!   - `pread_kept_open`: `pread` at offset 0 on a file opened once (what flinch does),
//!   - `reopen`: `open` + `read` + `close` every time (what scaphandre-style readers do),
//!   - `counterfile`: flinch's `CounterFile::read_uj`, which on a regular file (a fake tree,
//!     not sysfs) reads until two reads agree, so twice; on sysfs it reads once,
//!   - `sysfs_*`: the first two on a real sysfs attribute (`/sys/class/net/lo/statistics/
//!     rx_bytes`, served by kernfs like `energy_uj`; this machine has no powercap), since
//!     opening a sysfs file costs more than opening a file on ext4/tmpfs.
//!
//!   A real `energy_uj` read also reads an MSR (possibly on another CPU); that cost is the
//!   same whichever way the file is opened, and is not measured here.
use criterion::{Criterion, criterion_group, criterion_main};
use flinch_core::clock::MonotonicClock;
use flinch_rapl::testing::FakePowercap;
use flinch_rapl::{CounterFile, RaplConfig, parse_uj};
use flinch_record::sampler::{CountingSink, SamplerGroup};
use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SYSFS_PROXY: &str = "/sys/class/net/lo/statistics/rx_bytes";

fn pread_parse(f: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    parse_uj(&buf[..n])
}

fn reopen_parse(p: &Path) -> Option<u64> {
    let mut f = File::open(p).ok()?;
    let mut buf = [0u8; 32];
    let n = f.read(&mut buf).ok()?;
    parse_uj(&buf[..n])
}

fn rapl(c: &mut Criterion) {
    let fake = FakePowercap::intel_server(2).expect("a fake powercap tree in a temp dir");
    for (i, id) in ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1"]
        .iter()
        .enumerate()
    {
        fake.set_energy(id, 123_456_789 + i as u64)
            .expect("fake counter");
    }
    let cfg = RaplConfig::with_root(fake.root());
    let opened = flinch_rapl::open(&cfg).expect("the fake tree opens");
    let n = opened.sources.len();
    let mut group = SamplerGroup::new(
        Duration::from_millis(10),
        Arc::new(MonotonicClock),
        CountingSink::default(),
    );
    let mut base = 0;
    for (i, s) in opened.into_sources().into_iter().enumerate() {
        let channels = s.info().channels.len() as u32;
        group.add(s, i as u32, base);
        base += channels;
    }
    let mut g = c.benchmark_group("rapl_tick");
    g.bench_function(format!("zones={n}"), |b| b.iter(|| group.tick()));
    g.finish();
    assert_eq!(
        group.sink().readings % n as u64,
        0,
        "every zone must read on every tick"
    );

    let zone = flinch_rapl::discover(&cfg).expect("discovery").zones[0].clone();
    let path = zone.energy_path();
    let kept = File::open(&path).expect("energy_uj opens");
    let mut cf = CounterFile::open(&path, fake.root()).expect("energy_uj opens");
    assert_eq!(pread_parse(&kept), Some(123_456_789));
    assert_eq!(reopen_parse(&path), Some(123_456_789));

    let mut g = c.benchmark_group("rapl_read");
    g.bench_function("pread_kept_open", |b| {
        b.iter(|| black_box(pread_parse(&kept)))
    });
    g.bench_function("reopen", |b| b.iter(|| black_box(reopen_parse(&path))));
    g.bench_function("counterfile", |b| b.iter(|| black_box(cf.read_uj().ok())));
    let sysfs = Path::new(SYSFS_PROXY);
    if let Ok(f) = File::open(sysfs)
        && pread_parse(&f).is_some()
    {
        g.bench_function("sysfs_pread_kept_open", |b| {
            b.iter(|| black_box(pread_parse(&f)))
        });
        g.bench_function("sysfs_reopen", |b| {
            b.iter(|| black_box(reopen_parse(sysfs)))
        });
    } else {
        eprintln!("{SYSFS_PROXY} is not readable here: sysfs comparison skipped");
    }
    g.finish();
}

criterion_group!(benches, rapl);
criterion_main!(benches);
