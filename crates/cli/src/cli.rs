//! Command-line definitions.

pub use crate::backends::BackendArgs;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Record GPU and CPU power next to named marks on one monotonic clock, and measure what
/// each span between two marks cost above idle.
#[derive(Debug, Parser)]
#[command(name = "flinch", version, about, long_about = None, after_help = TOP_EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const TOP_EXAMPLES: &str = "\
Examples:
  flinch sources                          what can be measured here, and why not
  flinch record --out run.flinch.csv -- python serve.py
                                          record while a command runs; it gets $FLINCH_MARKS
  flinch mark infer_start req=7           send a mark to the running recorder
  flinch calibrate --out idle.json        an idle profile (leave the machine alone)
  flinch analyze run.flinch.csv --from infer_start --to first_token
                                          spans: duration, energy above idle, verdicts
  flinch plot run.flinch.csv --from infer_start --to first_token -o run.png
                                          power and activity with every span shaded
  flinch export run.flinch.csv --perfetto run.json --csv run.wide.csv
                                          open in ui.perfetto.dev; load in pandas";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every source compiled in, whether it is available here (and why not), and its
    /// channels.
    #[command(after_help = SOURCES_EXAMPLES)]
    Sources(SourcesArgs),
    /// Record sources and marks into a trace file.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Send one mark to a running recorder (stamped with CLOCK_MONOTONIC now).
    #[command(after_help = MARK_EXAMPLES)]
    Mark(MarkArgs),
    /// Sample the machine while it is left alone and write an idle profile (per channel:
    /// mean, median, p5, p95, std, and the conditions it was taken under).
    #[command(after_help = CALIBRATE_EXAMPLES)]
    Calibrate(CalibrateArgs),
    /// Measure the spans between two marks of a trace: duration, energy above idle, what
    /// the silicon was doing (verdict and evidence), and their distribution.
    #[command(after_help = ANALYZE_EXAMPLES)]
    Analyze(AnalyzeArgs),
    /// Draw a trace: power per device with spans shaded by verdict, utilisation beneath,
    /// idle level, and a histogram of span durations (SVG or PNG).
    #[command(after_help = PLOT_EXAMPLES)]
    Plot(PlotArgs),
    /// Convert a trace for other tools: Perfetto / Chrome trace-event JSON, one wide CSV.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
}

const CALIBRATE_EXAMPLES: &str = "\
Examples:
  flinch calibrate --out idle.json                  30 s of every available source
  flinch calibrate --source nvml --seconds 60 --out idle-ctx.json
  flinch record --idle idle.json --out run.flinch.csv -- python serve.py

Leave the machine alone while it runs. Idle is not one number: a GPU with a CUDA context
open draws more than one without (70 W vs ~119 W on an H100), so calibrate in the state
your spans wait in (e.g. with the server loaded and idle). The profile is refused when
the machine was not idle (GPU utilisation above 0, power drifting, busy CPUs), saying
what was seen; --allow-busy writes it anyway, marked idle_ok: false.";

const ANALYZE_EXAMPLES: &str = "\
Examples:
  flinch analyze run.flinch.csv                     list the mark labels and their counts
  flinch analyze run.flinch.csv --from infer_start --to first_token
  flinch analyze run.flinch.csv --from infer_start --to first_token --json > spans.json
  flinch analyze run.flinch.csv --from step --to step        consecutive marks
  flinch analyze run.flinch.csv --from a --to b --idle idle.json
  flinch analyze run.flinch.csv --from a --to b --idle-window 2..12
  flinch analyze run.flinch.csv --from a --to b --idle-window idle_start..idle_end

Spans pair by req=ID when marks carry one, else in order. Idle comes from --idle-window,
else --idle, else the profile embedded by `record --idle`. --idle-window A..B: A and B are
mark labels (the first A, then the first B after it) or seconds from the trace's start
(`2.5` or `2.5s`). The JSON output is documented in docs/analysis.md.";

const PLOT_EXAMPLES: &str = "\
Examples:
  flinch plot run.flinch.csv                                   spans X_start..X_end, run.png
  flinch plot run.flinch.csv --from infer_start --to first_token -o ttft.svg
  flinch plot run.flinch.csv --window 10..25 --idle-watts 119
  flinch plot run.flinch.csv --idle-window calib_start..calib_end
  flinch plot run.flinch.csv --idle idle.json --histogram never

Spans are paired like `flinch analyze` pairs them: each --to mark closes the oldest open
--from mark with the same req= field. Without --from/--to every pair of labels X_start /
X_end is shaded. Times in --window and --idle-window are seconds from the trace's start
(12.5 or 12.5s) or mark labels (the first such mark). The idle level comes from
--idle-watts, else --idle, else --idle-window, else the profile embedded in the trace.
Span colours are the verdicts of `flinch analyze` with that idle level: gpu-compute,
cpu-compute, idle-wait, unresolved.";

const EXPORT_EXAMPLES: &str = "\
Examples:
  flinch export run.flinch.csv --perfetto run.json      then open it at ui.perfetto.dev
  flinch export run.flinch.csv --csv run.wide.csv       pd.read_csv(\"run.wide.csv\")
  flinch export run.flinch.csv --perfetto run.json --from infer_start --to first_token

Perfetto: a process per device with a counter track per channel, a `spans` process with a
thread per request (its stages nested in it), a `marks` process with a thread per label.
CSV: a row per timestamp (t_ns, t_s from the trace's start), a column per channel, and a
`mark` column; every sample and mark appears exactly once.";

const SOURCES_EXAMPLES: &str = "\
Examples:
  flinch sources
  flinch sources --json
  flinch sources --rapl-root /host/sys/class/powercap";

const RECORD_EXAMPLES: &str = "\
Examples:
  flinch record --out run.flinch.csv --duration 30s
  flinch record --out run.flinch.csv --source nvml --interval 10ms -- python serve.py
  flinch record --out demo.flinch.csv --source synthetic --synthetic '50W/1s,250W/1s' --duration 5s
  flinch record --out run.flinch.csv --marks-file /shared/marks.txt --meta batch=8 --meta model=llama

Marks: the recorder creates a FIFO (default $XDG_RUNTIME_DIR/flinch/marks.fifo, else
/tmp/flinch-$UID/marks.fifo) and passes its path to a wrapped command as $FLINCH_MARKS.
A client writes one line per mark, non-blocking: `LABEL t=<CLOCK_MONOTONIC ns> [key=value ...]`.
Python: os.write(fd, f\"infer_start t={time.monotonic_ns()} req=7\\n\".encode())";

const MARK_EXAMPLES: &str = "\
Examples:
  flinch mark infer_start req=7
  flinch mark first_token req=7 --fifo /tmp/flinch-1000/marks.fifo
  flinch mark step_done --file /shared/marks.txt

The path is --fifo/--file, else $FLINCH_MARKS, else the per-user default FIFO.
Exit status: 0 sent, 1 dropped (the recorder's pipe was full), 2 error (no recorder, bad mark).";

#[derive(Debug, Args)]
pub struct SourcesArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Measure each channel's read cost and how often its value changes (takes a few seconds)
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub backends: BackendArgs,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The trace file to write (refused if it exists, unless --force)
    #[arg(long, short, value_name = "TRACE")]
    pub out: PathBuf,
    /// Replace an existing trace file
    #[arg(long)]
    pub force: bool,
    /// Sources to record: synthetic, nvml, dcgm, rapl, cpu (repeatable; default: every available one)
    #[arg(long = "source", short = 's', value_name = "NAME")]
    pub sources: Vec<String>,
    /// The fast sampling interval
    #[arg(long, short, value_name = "DURATION", default_value = "10ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this long (default: until Ctrl-C, SIGTERM, or the wrapped command exits)
    #[arg(long, short, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The FIFO to create and read marks from (default: per-user, see below)
    #[arg(long, value_name = "PATH")]
    pub marks_fifo: Option<PathBuf>,
    /// Do not create a marks FIFO
    #[arg(long, conflicts_with = "marks_fifo")]
    pub no_fifo: bool,
    /// A file that clients append marks to (read from its end at start)
    #[arg(long, value_name = "PATH")]
    pub marks_file: Option<PathBuf>,
    /// Run metadata stored in the trace header (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
    /// An idle profile written by `flinch calibrate`, embedded in the trace
    #[arg(long, value_name = "FILE")]
    pub idle: Option<PathBuf>,
    /// No live status line
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub backends: BackendArgs,
    /// The command to run while recording (after --)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Where to write the profile (refused if it exists, unless --force)
    #[arg(long, short, value_name = "FILE", default_value = "idle.json")]
    pub out: PathBuf,
    /// Replace an existing profile
    #[arg(long)]
    pub force: bool,
    /// Sources to sample: nvml, dcgm, rapl, cpu, synthetic (repeatable; default: every available one)
    #[arg(long = "source", short = 's', value_name = "NAME")]
    pub sources: Vec<String>,
    /// How long to sample (seconds, or a duration like 2m)
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_duration)]
    pub seconds: Duration,
    /// The sampling interval
    #[arg(long, short, value_name = "DURATION", default_value = "10ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Write the profile even when the machine was not idle (marked idle_ok: false)
    #[arg(long)]
    pub allow_busy: bool,
    /// Keep the recording the profile is made from in this trace file
    #[arg(long, value_name = "TRACE")]
    pub keep_trace: Option<PathBuf>,
    /// No progress bar and no table
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub backends: BackendArgs,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The trace written by `flinch record`
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// The label of the mark that starts a span
    #[arg(long, value_name = "LABEL", requires = "to")]
    pub from: Option<String>,
    /// The label of the mark that ends a span
    #[arg(long, value_name = "LABEL", requires = "from")]
    pub to: Option<String>,
    /// An idle profile written by `flinch calibrate` (overrides the trace's own)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "idle_window",
        requires = "from"
    )]
    pub idle: Option<PathBuf>,
    /// Take idle from a stretch of this trace: A..B, mark labels or seconds from its start
    #[arg(long, value_name = "A..B", requires = "from")]
    pub idle_window: Option<String>,
    /// Print one JSON object (documented in docs/analysis.md)
    #[arg(long)]
    pub json: bool,
    /// List every span (default: the first 20 when there are more than 50)
    #[arg(long)]
    pub all: bool,
    /// No progress bars
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    /// The mark's label ([A-Za-z0-9_.:/-]+)
    pub label: String,
    /// Fields as key=value (req=ID pairs the two ends of a span)
    #[arg(value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub fields: Vec<(String, String)>,
    /// The recorder's FIFO
    #[arg(long, value_name = "PATH", conflicts_with = "file")]
    pub fifo: Option<PathBuf>,
    /// A marks file to append to
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// The spans to draw or export.
#[derive(Debug, Args, Clone)]
pub struct SpanArgs {
    /// Label of the mark that starts each span
    #[arg(long, value_name = "LABEL", requires = "to", help_heading = "Spans")]
    pub from: Option<String>,
    /// Label of the mark that ends each span
    #[arg(long, value_name = "LABEL", requires = "from", help_heading = "Spans")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The trace to draw
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// The picture to write: .svg or .png (default: the trace's name with .png)
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub spans: SpanArgs,
    /// Only this stretch of time: A..B, A.. or ..B (seconds from the start, or mark labels)
    #[arg(long, value_name = "A..B")]
    pub window: Option<String>,
    /// An idle profile written by `flinch calibrate`
    #[arg(long, value_name = "FILE", help_heading = "Idle level")]
    pub idle: Option<PathBuf>,
    /// The idle level in watts: W for every device, or DEVICE=W (repeatable)
    #[arg(long, value_name = "W|DEVICE=W", help_heading = "Idle level")]
    pub idle_watts: Vec<String>,
    /// Take the idle level from the mean power over this window of the trace: A..B
    #[arg(long, value_name = "A..B", help_heading = "Idle level")]
    pub idle_window: Option<String>,
    /// When to draw the histogram of span durations
    #[arg(long, value_enum, default_value = "auto")]
    pub histogram: HistogramArg,
    /// Width of the picture in pixels
    #[arg(long, default_value_t = 1400, value_name = "PX")]
    pub width: u32,
    /// Height of the picture in pixels (default: from the panels drawn)
    #[arg(long, value_name = "PX")]
    pub height: Option<u32>,
    /// The title (default: the trace's file name, device and host)
    #[arg(long)]
    pub title: Option<String>,
    /// No progress bar, no notes
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--histogram`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HistogramArg {
    /// With 5 spans or more
    Auto,
    /// Whenever there is a span
    Always,
    /// Never
    Never,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The trace to convert
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// Write Chrome trace-event JSON for the Perfetto UI here
    #[arg(long, value_name = "OUT.json", required_unless_present = "csv")]
    pub perfetto: Option<PathBuf>,
    /// Write one wide CSV here (a row per timestamp, a column per channel, a mark column)
    #[arg(long, value_name = "OUT.csv")]
    pub csv: Option<PathBuf>,
    #[command(flatten)]
    pub spans: SpanArgs,
    /// No progress bar, no notes
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `10ms`, `1.5s`, `2m`, `500us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).or_else(|_| {
        // humantime does not take fractions like "1.5s"
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: f64 = n.parse().map_err(|_| ())?;
        let mult = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(()),
        };
        Duration::try_from_secs_f64(n * mult).map_err(|_| ())
    });
    match d {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{s:?}: must be longer than zero")),
        Err(_) => Err(format!("{s:?} is not a duration like 10ms, 1.5s or 2m")),
    }
}

/// Parses `key=value` with key in `[A-Za-z0-9_.:/-]+` and a value without blanks.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if !flinch_core::marks::is_valid_label(k) {
        return Err(format!("key {k:?} must be [A-Za-z0-9_.:/-]+"));
    }
    if v.chars().any(char::is_whitespace) {
        return Err(format!("value of {k} must not contain blanks"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_key_values_parse_or_say_why() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert_eq!(parse_key_value("batch=8"), Ok(("batch".into(), "8".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("bad key=1").is_err());
        assert!(parse_key_value("k=two words").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
