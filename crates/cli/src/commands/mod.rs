//! One module per subcommand.

pub mod analyze;
pub mod calibrate;
pub mod child;
pub mod export;
pub mod load;
pub mod mark;
pub mod plot;
pub mod print;
pub mod record;
pub mod sources;

use crate::Failure;
use flinch_core::Source;
use std::time::Duration;

/// Refuses an `--interval` finer than a recording takes ([`flinch_record::recorder::MIN_INTERVAL`]).
pub fn check_interval(interval: Duration) -> Result<(), Failure> {
    let min = flinch_record::recorder::MIN_INTERVAL;
    if interval < min {
        return Err(Failure::new(format!(
            "--interval {}: flinch samples every {} at the finest (a tick costs ~20 us of CPU and \
             no sensor updates faster than about every millisecond; at 1us the sampler missed \
             915827 of a second's 1000000 ticks); give {} or more",
            humantime::format_duration(interval),
            humantime::format_duration(min),
            humantime::format_duration(min)
        )));
    }
    Ok(())
}

/// How often each source will really be polled, in words: sources with a cadence of their
/// own keep it whatever `--interval` asks (`cpu.host every 20ms (its own cadence)`), and a
/// source that follows its sensor says so (`nvml.gpu0.fast once per sensor update (every
/// 100ms)`).
pub fn cadences(sources: &[Box<dyn Source>], interval: Duration) -> String {
    // (cadence, follows its sensor's updates, sources)
    let mut groups: Vec<(Duration, bool, Vec<&str>)> = Vec::new();
    for s in sources {
        let (iv, locked) = match s.phase_lock() {
            Some(l) => (l.period, true),
            None => (s.interval().unwrap_or(interval), false),
        };
        match groups.iter_mut().find(|(d, l, _)| *d == iv && *l == locked) {
            Some((_, _, v)) => v.push(&s.info().name),
            None => groups.push((iv, locked, vec![&s.info().name])),
        }
    }
    groups.sort_by_key(|(d, l, _)| (*d, !*l));
    groups
        .iter()
        .map(|(d, locked, names)| {
            if *locked {
                format!(
                    "{} once per sensor update (every {})",
                    names.join(", "),
                    humantime::format_duration(*d)
                )
            } else {
                format!(
                    "{} every {}{}",
                    names.join(", "),
                    humantime::format_duration(*d),
                    if *d == interval {
                        ""
                    } else {
                        " (its own cadence)"
                    }
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
