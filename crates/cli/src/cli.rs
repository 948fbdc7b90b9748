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
  flinch sources                        what can be measured here, and why not
  flinch record --out run.flinch.csv -- python serve.py
                                        record while a command runs; it gets
                                        $FLINCH_MARKS
  flinch mark infer_start req=7         send a mark to the running recorder
  flinch calibrate --out idle.json      an idle profile (machine left alone)
  flinch analyze run.flinch.csv --from infer_start --to first_token
                                        spans: duration, energy above idle,
                                        verdicts
  flinch plot run.flinch.csv --from infer_start --to first_token -o run.png
                                        power and activity, every span shaded
  flinch export run.flinch.csv --perfetto run.json --csv run.wide.csv
                                        for ui.perfetto.dev and for pandas";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every source compiled in, whether it is available here (and why not), and its
    /// channels.
    #[command(after_help = SOURCES_EXAMPLES)]
    Sources(SourcesArgs),
    /// Record sources and marks into a trace file.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(Box<RecordArgs>),
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
  flinch calibrate --out idle.json           30 s of every available source
  flinch calibrate --source nvml --seconds 60 --out idle-ctx.json
  flinch record --idle idle.json --out run.flinch.csv -- python serve.py

Leave the machine alone while it runs. Idle is not one number: a GPU with a
CUDA context open draws more than one without (70 W vs ~119 W on an H100), so
calibrate in the state your spans wait in (e.g. with the server loaded and
idle). The profile is refused when the machine was not idle (GPU utilisation
above 0, power drifting, busy CPUs), saying what was seen; --allow-busy writes
it anyway, marked idle_ok: false. A run too short for the sources' update
periods is refused, saying how long it needs.";

const ANALYZE_EXAMPLES: &str = "\
Examples:
  flinch analyze run.flinch.csv          list the mark labels and their counts
  flinch analyze run.flinch.csv --from infer_start --to first_token
  flinch analyze run.flinch.csv --from infer_start --to first_token -v
                                         ...with each verdict's evidence
  flinch analyze run.flinch.csv --from infer_start --to first_token \\
      --json > spans.json
  flinch analyze day.flinch.csv --from token --to token --jsonl > spans.jsonl
                                         one line per span as it is measured
  flinch analyze run.flinch.csv --from step --to step     consecutive marks
  flinch analyze run.flinch.csv --from a --to b --idle idle.json
  flinch analyze run.flinch.csv --from a --to b --idle-window 2..12
  flinch analyze run.flinch.csv --from a --to b \\
      --idle-window idle_start..idle_end

Spans pair by req=ID when marks carry one, else in order. The idle level: give
one of --idle FILE and --idle-window A..B (not both); with neither, the
profile embedded by `record --idle` is used, if any. --idle-window A..B: A and
B are mark labels (the first A, then the first B after it) or seconds from the
trace's start (`2.5` or `2.5s`). The JSON output is documented in
docs/analysis.md.";

const PLOT_EXAMPLES: &str = "\
Examples:
  flinch plot run.flinch.csv                spans X_start..X_end, into run.png
  flinch plot run.flinch.csv --from infer_start --to first_token -o ttft.svg
  flinch plot run.flinch.csv --window 10..25 --idle-watts 119
  flinch plot run.flinch.csv --idle-window calib_start..calib_end
  flinch plot run.flinch.csv --idle idle.json --histogram never

Spans are paired like `flinch analyze` pairs them: each --to mark closes the
oldest open --from mark with the same req= field. Without --from/--to every
pair of labels X_start / X_end is shaded. Times in --window and --idle-window
are seconds from the trace's start (12.5 or 12.5s) or mark labels (the first
such mark). The idle level: give one of --idle-watts, --idle FILE and
--idle-window A..B (not several); with none, the profile embedded by `record
--idle` is used, if any. Span colours are the verdicts of `flinch analyze`
with that idle level: gpu-compute, cpu-compute, idle-wait, unresolved. An
existing picture is replaced only with --force.";

const EXPORT_EXAMPLES: &str = "\
Examples:
  flinch export run.flinch.csv --perfetto run.json   open at ui.perfetto.dev
  flinch export day.flinch.csv --perfetto day.pftrace
                                         protobuf: long recordings
  flinch export day.flinch.csv --parquet day/   for pandas, polars, DuckDB
  flinch export run.flinch.csv --csv wide.csv        pd.read_csv(\"wide.csv\")
  flinch export run.flinch.csv --perfetto run.json \\
      --from infer_start --to first_token

Perfetto: a process per device with a counter track per channel, a `spans`
process with a thread per request (its stages nested in it), a `marks` process
with a thread per label. A .pftrace keeps about 3 M counter points (each
track's smallest and largest per bucket of time; --max-points full keeps all).
CSV: a row per timestamp (t_ns, t_s from the trace's
start), a column per channel, a `mark` column (the mark's line) and the mark
split up: `mark_label` and a `mark_KEY` column per field key (`mark_req`,
...). Every sample and mark appears exactly once. Existing files are replaced
only with --force.";

const SOURCES_EXAMPLES: &str = "\
Examples:
  flinch sources
  flinch sources --json
  flinch sources --rapl-root /host/sys/class/powercap";

const RECORD_EXAMPLES: &str = "\
Examples:
  flinch record --out run.flinch.csv --duration 30s
  flinch record --out run.flinch.csv --source nvml --interval 10ms \\
      -- python serve.py
  flinch record --out demo.flinch.csv --source synthetic \\
      --synthetic '50W/1s,250W/1s' --duration 5s
  flinch record --out run.flinch.csv --marks-file /shared/marks.txt \\
      --meta batch=8 --meta model=llama
  flinch record --out run.flinch.csv --print 1s -- python serve.py
                                        a row per device each second
  flinch record --out - --source nvml | python reader.py
                                        the trace through a pipe
  flinch record --prometheus [::]:9464 --span infer_start..first_token \\
      --idle idle.json -- python serve.py
  flinch record --out run.flinch.csv --pushgateway http://pushgw:9091 \\
      --job train -- python train.py

Marks: the recorder creates a FIFO (default
$XDG_RUNTIME_DIR/flinch/marks.fifo, else /tmp/flinch-$UID/marks.fifo) and
passes its path to a wrapped command as $FLINCH_MARKS. A client writes one
line per mark, non-blocking: `LABEL t=<CLOCK_MONOTONIC ns> [key=value ...]`.
Python:
  os.write(fd, f\"infer_start t={time.monotonic_ns()} req=7\\n\".encode())";

const MARK_EXAMPLES: &str = "\
Examples:
  flinch mark infer_start req=7
  flinch mark first_token req=7 --fifo /tmp/flinch-1000/marks.fifo
  flinch mark step_done --file /shared/marks.txt

The path is --fifo/--file, else $FLINCH_MARKS, else the per-user default FIFO.
On stderr it says which recorder took the mark (its pid and trace, as the
recorder publishes them next to its FIFO), so that a mark sent to a recorder
you did not mean is seen at once. Exit status: 0 sent, 1 dropped (the
recorder's pipe was full), 2 error (no recorder, bad mark).";

#[derive(Debug, Args)]
pub struct SourcesArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Measure each channel's read cost and how often its value changes (takes a few seconds)
    #[arg(long)]
    pub probe: bool,
    /// The --interval of the recording to show the cadences for (default: none, each
    /// source at its own cadence)
    #[arg(long, short, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Option<Duration>,
    #[command(flatten)]
    pub backends: BackendArgs,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The trace file to write (refused if it exists, unless --force), or `-` for standard
    /// output; optional with --print, --prometheus or --pushgateway
    #[arg(long, short, value_name = "TRACE", required_unless_present_any = ["print", "prometheus", "pushgateway"])]
    pub out: Option<PathBuf>,
    /// Replace an existing trace file
    #[arg(long)]
    pub force: bool,
    /// Sources to record: synthetic, nvml, dcgm, rapl, cpu (repeatable; default: every available one)
    #[arg(long = "source", short = 's', value_name = "NAME")]
    pub sources: Vec<String>,
    /// The finest cadence: poll every source at least this often (default: each at its
    /// own, from its sensor: instant power once per update, 10 a second; activity every
    /// 100 ms; the driver's power buffer every 1 s; CPU time every 100 ms)
    #[arg(long, short, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Option<Duration>,
    /// Stop after this long (default: until Ctrl-C, SIGTERM, or the wrapped command exits)
    #[arg(long, short, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
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
    /// When the trace cannot be written (disk full), how long to hold samples and marks in
    /// memory and retry before stopping
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub write_retry: Duration,
    /// No live status line
    #[arg(long, short)]
    pub quiet: bool,
    /// Sleep to each deadline in two stages, a long sleep and then a short one: closer to
    /// the deadline in a VM, at the cost of a second wake-up per poll
    #[arg(long)]
    pub precise_sleep: bool,
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Print one summary row per device every INTERVAL on standard output: mean power,
    /// energy in the interval, activity (docs/trace-format.md)
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration, help_heading = "Live output")]
    pub print: Option<Duration>,
    /// The format of --print's rows
    #[arg(
        long,
        value_name = "FORMAT",
        value_enum,
        default_value = "csv",
        requires = "print",
        help_heading = "Live output"
    )]
    pub print_format: crate::commands::print::PrintFormat,
    #[command(flatten)]
    pub export: ExportLiveArgs,
    /// The command to run while recording (after --)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Live export while recording (docs/fleet.md).
#[derive(Debug, Args, Clone)]
pub struct ExportLiveArgs {
    /// Serve live metrics at http://ADDR/metrics for Prometheus (e.g. `127.0.0.1:9464`, `[::]:9464`)
    #[arg(long, value_name = "ADDR", help_heading = "Live export")]
    pub prometheus: Option<String>,
    /// After the recording ends, keep serving until the endpoint is scraped once more (at most this long)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "prometheus", help_heading = "Live export")]
    pub prometheus_linger: Option<Duration>,
    /// Push the metrics to this Pushgateway (http://HOST:PORT) when the recording ends
    #[arg(
        long,
        value_name = "URL",
        requires = "job",
        help_heading = "Live export"
    )]
    pub pushgateway: Option<String>,
    /// The Pushgateway job name (grouped with instance=HOSTNAME)
    #[arg(
        long,
        value_name = "NAME",
        requires = "pushgateway",
        help_heading = "Live export"
    )]
    pub job: Option<String>,
    /// Also push this often while recording
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "pushgateway", help_heading = "Live export")]
    pub push_interval: Option<Duration>,
    /// Measure spans FROM..TO live: duration and energy histograms, verdict counts (repeatable)
    #[arg(long = "span", value_name = "FROM..TO", help_heading = "Live export")]
    pub spans: Vec<String>,
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
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub seconds: Duration,
    /// The sampling interval
    #[arg(long, short, value_name = "DURATION", default_value = "10ms", value_parser = parse_duration, allow_hyphen_values = true)]
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
    /// An idle profile written by `flinch calibrate` (instead of the trace's own; not with
    /// --idle-window)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "idle_window",
        requires = "from"
    )]
    pub idle: Option<PathBuf>,
    /// Take idle from a stretch of this trace: A..B, mark labels or seconds from its start
    /// (instead of the trace's own profile; not with --idle)
    #[arg(long, value_name = "A..B", requires = "from")]
    pub idle_window: Option<String>,
    /// Print one JSON object (documented in docs/analysis.md)
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,
    /// Print one JSON object per span as soon as it is measured, then one line with the
    /// rest (unmatched marks, summary, warnings): for traces of any length
    #[arg(long, requires = "from")]
    pub jsonl: bool,
    /// List every span (default: the first 20 when there are more than 50)
    #[arg(long)]
    pub all: bool,
    /// Under each span, the evidence of its verdict (power, activity, CPU time per device)
    #[arg(long, short = 'v')]
    pub evidence: bool,
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
    /// Do not say which recorder took the mark
    #[arg(long, short)]
    pub quiet: bool,
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
    /// The picture to write: .svg or .png (default: the trace's name with .png); refused if
    /// it exists, unless --force
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing picture (a symlink there is replaced, not written through)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub spans: SpanArgs,
    /// Only this stretch of time: A..B, A.. or ..B (seconds from the start, or mark labels)
    #[arg(long, value_name = "A..B")]
    pub window: Option<String>,
    /// An idle profile written by `flinch calibrate`
    #[arg(long, value_name = "FILE", help_heading = "Idle level")]
    pub idle: Option<PathBuf>,
    /// The idle level in watts: W for every device, or DEVICE=W (repeatable)
    #[arg(
        long,
        value_name = "W|DEVICE=W",
        allow_hyphen_values = true,
        help_heading = "Idle level"
    )]
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
#[group(id = "outputs", args = ["perfetto", "csv", "parquet"], required = true, multiple = true)]
pub struct ExportArgs {
    /// The trace to convert
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// Write a trace for the Perfetto UI here: Chrome trace-event JSON when the name ends
    /// in .json, else Perfetto's own protobuf format (.pftrace: a tenth of the size, for
    /// long recordings)
    #[arg(long, value_name = "OUT.pftrace|OUT.json")]
    pub perfetto: Option<PathBuf>,
    /// Counter points in the Perfetto file: `full`, or about N in all, each track cut into
    /// buckets of equal time keeping its smallest and largest sample (default: 3000000 for
    /// .pftrace, full for .json)
    #[arg(long, value_name = "N|full", value_parser = parse_points)]
    pub max_points: Option<Points>,
    /// Write one wide CSV here (a row per timestamp, a column per channel, a mark column)
    #[arg(long, value_name = "OUT.csv")]
    pub csv: Option<PathBuf>,
    /// Write samples.parquet, marks.parquet and spans.parquet into this directory (for
    /// pandas, polars, DuckDB)
    #[arg(long, value_name = "DIR")]
    pub parquet: Option<PathBuf>,
    /// Replace existing output files (a symlink there is replaced, not written through)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub spans: SpanArgs,
    /// Judge the spans against the idle level over this window of the trace (A..B, mark
    /// labels or seconds; default: the profile embedded in the trace): each span slice then
    /// carries its verdict and composition, and a `machine state` thread the state timeline
    #[arg(long, value_name = "A..B")]
    pub idle_window: Option<String>,
    /// No progress bar, no notes
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--max-points`: every sample, or about this many counter points in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Points {
    /// Every sample.
    Full,
    /// About this many.
    Total(usize),
}

/// Parses `full` or a number of points of at least 1000.
pub fn parse_points(s: &str) -> Result<Points, String> {
    if s.trim() == "full" {
        return Ok(Points::Full);
    }
    match s.trim().replace('_', "").parse::<usize>() {
        Ok(n) if n >= 1000 => Ok(Points::Total(n)),
        Ok(n) => Err(format!(
            "{n} points are too few to draw a trace; give at least 1000, or `full`"
        )),
        Err(_) => Err(format!("{s:?} is neither a number of points nor `full`")),
    }
}

/// Parses `10ms`, `1.5s`, `2m`, `500us`: a unit is required (`--interval 10` could mean
/// 10 ms as well as 10 s).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_length(s, false)
}

/// Parses a number of seconds (`30`, `0.5`) or a duration with its unit (`2m`): for
/// options whose name says seconds (`--seconds`).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    parse_length(s, true)
}

fn parse_length(s: &str, bare_is_seconds: bool) -> Result<Duration, String> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix('-') {
        return Err(
            if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                format!("{s:?}: a duration cannot be negative; give a length like 10ms, 1.5s or 2m")
            } else {
                format!(
                    "{s:?} is not a duration like 10ms, 1.5s or 2m (was the option's value left out?)"
                )
            },
        );
    }
    let bare = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.');
    if bare && !bare_is_seconds {
        return Err(format!(
            "{s:?} has no unit: give {t}ms or {t}s (a number alone could mean either)"
        ));
    }
    // humantime 2.4 parses fractions (`1.5s`, `3.1us`); a bare number is only seconds here.
    let d = if bare {
        t.parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| "not a number".to_owned())
    } else {
        humantime::parse_duration(t).map_err(|e| e.to_string())
    };
    match d {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{s:?}: must be longer than zero")),
        Err(e) => Err(format!(
            "{s:?} is not a duration like 10ms, 1.5s or 2m ({e})"
        )),
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
        // fractions, through humantime
        assert_eq!(parse_duration("3.1us"), Ok(Duration::from_nanos(3_100)));
        assert_eq!(parse_duration("0.25 ms"), Ok(Duration::from_micros(250)));
        assert_eq!(
            parse_duration("1m 30.5s"),
            Ok(Duration::from_millis(90_500))
        );
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown time unit")
        );
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
        // A bare number needs its unit, except where the option's name gives it.
        let e = parse_duration("10").unwrap_err();
        assert!(e.contains("has no unit: give 10ms or 10s"), "{e}");
        assert!(parse_duration("1.5").is_err());
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_seconds(" 1.5 "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_seconds("1.2.3").unwrap_err().contains("not a number"));
        assert_eq!(parse_key_value("batch=8"), Ok(("batch".into(), "8".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("bad key=1").is_err());
        assert!(parse_key_value("k=two words").is_err());
    }

    /// The examples in every help are written to fit 80 columns: clap wraps longer lines,
    /// which cuts a command in the middle (`... -- python` / `serve.py`).
    #[test]
    fn help_examples_fit_80_columns_and_are_never_cut() {
        use clap::CommandFactory;
        let mut cli = Cli::command().term_width(80);
        let mut helps = vec![(String::from("flinch"), cli.render_long_help().to_string())];
        for sub in cli.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            let name = sub.get_name().to_owned();
            let mut sub = sub.clone().term_width(80);
            helps.push((name, sub.render_long_help().to_string()));
        }
        for (name, help) in helps {
            let tail = help
                .split_once("Examples:")
                .unwrap_or_else(|| panic!("{name}: no examples"))
                .1;
            let sources = [
                TOP_EXAMPLES,
                SOURCES_EXAMPLES,
                RECORD_EXAMPLES,
                MARK_EXAMPLES,
                CALIBRATE_EXAMPLES,
                ANALYZE_EXAMPLES,
                PLOT_EXAMPLES,
                EXPORT_EXAMPLES,
            ];
            for line in tail.lines().filter(|l| !l.trim().is_empty()) {
                assert!(
                    sources
                        .iter()
                        .any(|src| src.lines().any(|l| l.trim_end() == line.trim_end())),
                    "{name} --help at 80 columns cut a line: {line:?}"
                );
            }
        }
        for src in [
            TOP_EXAMPLES,
            SOURCES_EXAMPLES,
            RECORD_EXAMPLES,
            MARK_EXAMPLES,
            CALIBRATE_EXAMPLES,
            ANALYZE_EXAMPLES,
            PLOT_EXAMPLES,
            EXPORT_EXAMPLES,
        ] {
            for l in src.lines() {
                assert!(l.chars().count() <= 78, "over 78 columns: {l:?}");
            }
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
