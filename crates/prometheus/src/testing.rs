//! Hostile clients of a metrics endpoint, for the reliability test and the abuse bench
//! (feature `testing`): many idle connections, slowloris clients sending a request head a
//! byte at a time, flooders scraping as fast as they can, and clients sending a huge
//! request head. Loopback only; every loop stops when asked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How hard to push.
#[derive(Clone, Debug)]
pub struct AbuseConfig {
    /// Connections opened and held without a byte sent (reopened when the server closes
    /// them).
    pub idle_connections: usize,
    /// Connections sending a request head one byte every 100 ms.
    pub slowloris: usize,
    /// Threads scraping `/metrics` back to back.
    pub flooders: usize,
    /// Bytes of request head each huge request sends (0: none).
    pub huge_request_bytes: usize,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            idle_connections: 1000,
            slowloris: 50,
            flooders: 4,
            huge_request_bytes: 8 << 20,
        }
    }
}

/// What the hostile clients saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AbuseStats {
    /// Connections opened (all kinds).
    pub connections: u64,
    /// Scrapes by the flooders answered `200`.
    pub scrapes_ok: u64,
    /// Flooder requests that failed (refused, closed, timed out).
    pub scrapes_failed: u64,
    /// Huge requests sent (as far as the server read them).
    pub huge_requests: u64,
    /// Huge requests answered with an error status (431 or 400) rather than dropped.
    pub huge_refused: u64,
    /// Slowloris or idle connections the server closed.
    pub closed_by_server: u64,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    scrapes_ok: AtomicU64,
    scrapes_failed: AtomicU64,
    huge: AtomicU64,
    huge_refused: AtomicU64,
    closed: AtomicU64,
}

/// Running hostile clients.
pub struct Abuse {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<JoinHandle<()>>,
}

fn connect(addr: SocketAddr, c: &Counts) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.connections.fetch_add(1, Ordering::Relaxed);
    Some(s)
}

/// Whether the server closed `s` (a read returns 0 or an error other than would-block).
fn closed(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 512];
    let r = s.read(&mut b);
    let _ = s.set_nonblocking(false);
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// One plain scrape; the status code.
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: flinch\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let head = std::str::from_utf8(buf.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

impl Abuse {
    /// Starts the clients against `addr`.
    pub fn start(addr: SocketAddr, cfg: &AbuseConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let mut threads = Vec::new();
        let spawn = |f: Box<dyn FnOnce() + Send>| std::thread::spawn(f);
        // Idle connections, held.
        if cfg.idle_connections > 0 {
            let (stop, c, n) = (stop.clone(), counts.clone(), cfg.idle_connections);
            threads.push(spawn(Box::new(move || {
                let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
                while !stop.load(Ordering::Relaxed) {
                    for slot in conns.iter_mut() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let gone = slot.as_mut().is_none_or(closed);
                        if gone {
                            if slot.is_some() {
                                c.closed.fetch_add(1, Ordering::Relaxed);
                            }
                            *slot = connect(addr, &c);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })));
        }
        // Slowloris: a request head a byte at a time.
        if cfg.slowloris > 0 {
            let (stop, c, n) = (stop.clone(), counts.clone(), cfg.slowloris);
            threads.push(spawn(Box::new(move || {
                let head = b"GET /metrics HTTP/1.1\r\nHost: flinch\r\nX-Slow: ";
                let mut conns: Vec<(Option<TcpStream>, usize)> =
                    (0..n).map(|_| (None, 0)).collect();
                while !stop.load(Ordering::Relaxed) {
                    for (slot, sent) in conns.iter_mut() {
                        if slot.is_none() {
                            *slot = connect(addr, &c);
                            *sent = 0;
                        }
                        if let Some(s) = slot {
                            let b = [head.get(*sent).copied().unwrap_or(b'a')];
                            if s.write_all(&b).is_err() || closed(s) {
                                c.closed.fetch_add(1, Ordering::Relaxed);
                                *slot = None;
                            } else {
                                *sent += 1;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })));
        }
        // Flooders.
        for _ in 0..cfg.flooders {
            let (stop, c) = (stop.clone(), counts.clone());
            threads.push(spawn(Box::new(move || {
                while !stop.load(Ordering::Relaxed) {
                    c.connections.fetch_add(1, Ordering::Relaxed);
                    match scrape(addr, Duration::from_secs(2)) {
                        Some(200) => c.scrapes_ok.fetch_add(1, Ordering::Relaxed),
                        _ => c.scrapes_failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })));
        }
        // Huge request heads.
        if cfg.huge_request_bytes > 0 {
            let (stop, c, n) = (stop.clone(), counts.clone(), cfg.huge_request_bytes);
            threads.push(spawn(Box::new(move || {
                let mut junk = b"GET /metrics HTTP/1.1\r\nHost: flinch\r\nX-Huge: ".to_vec();
                junk.resize(n, b'a');
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut s) = connect(addr, &c) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.write_all(&junk);
                    c.huge.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 12];
                    if s.read_exact(&mut buf).is_ok()
                        && (buf.starts_with(b"HTTP/1.1 431") || buf.starts_with(b"HTTP/1.1 400"))
                    {
                        c.huge_refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })));
        }
        Abuse {
            stop,
            counts,
            threads,
        }
    }

    /// Stops every client and says what they saw.
    pub fn stop(self) -> AbuseStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let c = &self.counts;
        AbuseStats {
            connections: c.connections.load(Ordering::Relaxed),
            scrapes_ok: c.scrapes_ok.load(Ordering::Relaxed),
            scrapes_failed: c.scrapes_failed.load(Ordering::Relaxed),
            huge_requests: c.huge.load(Ordering::Relaxed),
            huge_refused: c.huge_refused.load(Ordering::Relaxed),
            closed_by_server: c.closed.load(Ordering::Relaxed),
        }
    }
}

/// Threads of this process now.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of this process, KiB.
pub fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
