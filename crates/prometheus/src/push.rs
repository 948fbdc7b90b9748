//! Pushing to a Prometheus Pushgateway: every interval while recording and once at the end,
//! for batch jobs that a scraper never sees.
//!
//! Each push is an HTTP `PUT` of the whole registry in the text format to
//! `URL/metrics/job/JOB/instance/INSTANCE`, which replaces what the same job and instance
//! pushed before (so a job's series never pile up across pushes). Pushes run on a thread of
//! their own with a timeout; a failing push is counted and reported, and never delays the
//! recording.

use crate::metrics::{ResultLabel, Shared};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where and how often to push.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// The Pushgateway, `http://host:port` (a path prefix is kept).
    pub url: String,
    /// The `job` grouping label.
    pub job: String,
    /// The `instance` grouping label (the host name by default).
    pub instance: String,
    /// Push this often while recording (`None`: only at the end).
    pub interval: Option<Duration>,
    /// The longest one push may take.
    pub timeout: Duration,
}

/// Why a push configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    /// The URL is not `http://...`.
    #[error(
        "--pushgateway {0:?}: expected http://HOST:PORT (this build speaks plain HTTP; put a \
         TLS-terminating proxy in front of an https Pushgateway)"
    )]
    Url(String),
    /// A grouping label value that cannot go into the path.
    #[error("{what} {value:?} must be [A-Za-z0-9_.:-]+ (it goes into the Pushgateway's URL path)")]
    Label {
        /// `--job` or `instance`.
        what: &'static str,
        /// The value.
        value: String,
    },
}

fn path_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

impl PushConfig {
    /// A configuration pushing as `job` from `instance` to `url`, checked.
    pub fn new(
        url: &str,
        job: &str,
        instance: &str,
        interval: Option<Duration>,
    ) -> Result<Self, PushConfigError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| PushConfigError::Url(url.to_owned()))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(PushConfigError::Url(url.to_owned()));
        }
        for (what, value) in [("--job", job), ("instance", instance)] {
            if !path_safe(value) {
                return Err(PushConfigError::Label {
                    what,
                    value: value.to_owned(),
                });
            }
        }
        Ok(PushConfig {
            url: url.trim_end_matches('/').to_owned(),
            job: job.to_owned(),
            instance: instance.to_owned(),
            interval,
            timeout: Duration::from_secs(10),
        })
    }

    /// The grouping key's URL.
    pub fn endpoint(&self) -> String {
        format!(
            "{}/metrics/job/{}/instance/{}",
            self.url, self.job, self.instance
        )
    }
}

/// Pushes the registry once; `Err` says why not.
pub(crate) fn push_once(cfg: &PushConfig, shared: &Shared) -> Result<(), String> {
    let body = shared.encode_text();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(cfg.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let url = cfg.endpoint();
    let r = agent
        .put(&url)
        .header(
            "Content-Type",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
        .send(body.as_bytes());
    let result = match r {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(mut resp) => {
            let status = resp.status();
            let text = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            Err(format!("push to {url} answered {status}: {}", text.trim()))
        }
        Err(e) => Err(format!("push to {url} failed: {e}")),
    };
    let label = if result.is_ok() { "ok" } else { "failed" };
    shared
        .f
        .pushes
        .get_or_create(&ResultLabel {
            result: label.to_owned(),
        })
        .inc();
    if let Err(e) = &result {
        shared.push_error(e.clone());
    }
    result
}

/// The pushing thread of one recording.
pub(crate) struct Pusher {
    cfg: PushConfig,
    shared: Arc<Shared>,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Pusher {
    pub(crate) fn start(cfg: PushConfig, shared: Arc<Shared>) -> Self {
        let (stop, rx) = channel();
        let thread = cfg.interval.and_then(|iv| {
            let cfg = cfg.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("flinch-push".into())
                .spawn(move || periodic(cfg, iv, shared, rx))
                .ok()
        });
        Pusher {
            cfg,
            shared,
            stop,
            thread,
        }
    }

    /// Stops the periodic pushes and pushes the final values.
    pub(crate) fn finish(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = push_once(&self.cfg, &self.shared);
    }
}

fn periodic(cfg: PushConfig, interval: Duration, shared: Arc<Shared>, stop: Receiver<()>) {
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {
                let _ = push_once(&cfg, &shared);
            }
            _ => return,
        }
    }
}
