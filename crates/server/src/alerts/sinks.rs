//! Where alerts go when they fire or resolve: the log (always) and
//! webhooks (a JSON POST to each configured URL, retried with exponential
//! backoff). Each URL has its own queue and worker, so a slow receiver
//! delays only itself, and its notifications arrive in order.

use std::sync::Arc;
use std::time::Duration;

use corral_types::{Alert, AlertStatus};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::AlertsConfig;
use super::rules::{AlertChange, Transition};

/// Notifications waiting per webhook before new ones are dropped.
const QUEUE: usize = 1024;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The body of a webhook POST.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Notification {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// One line for chat tools: `[FIRING] crash_loop web/web/app: ...`.
    pub text: String,
    pub alert: Alert,
}

impl Notification {
    pub fn new(alert: &Alert) -> Notification {
        let detail = match alert.status {
            AlertStatus::Firing => &alert.summary,
            AlertStatus::Resolved => &alert.resolution,
        };
        Notification {
            status: alert.status,
            text: format!(
                "[{}] {} {}: {detail}",
                alert.status.as_str().to_uppercase(),
                alert.rule,
                alert.subject
            ),
            alert: alert.clone(),
        }
    }
}

/// How webhooks are called.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

impl Delivery {
    pub fn of(cfg: &AlertsConfig) -> Delivery {
        Delivery {
            retries: cfg.webhook_retries,
            backoff: cfg.webhook_backoff,
            timeout: cfg.webhook_timeout,
        }
    }
}

pub struct Sinks {
    webhooks: Vec<(String, mpsc::Sender<Arc<Notification>>)>,
}

impl Sinks {
    /// Start one worker per webhook URL; they stop on `shutdown`.
    pub fn start(cfg: &AlertsConfig, http: reqwest::Client, shutdown: CancellationToken) -> Sinks {
        let delivery = Delivery::of(cfg);
        let webhooks = cfg
            .webhooks
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(worker(
                    url.clone(),
                    http.clone(),
                    delivery.clone(),
                    rx,
                    shutdown.clone(),
                ));
                (url.clone(), tx)
            })
            .collect();
        Sinks { webhooks }
    }

    /// Log every firing and resolution and queue it for the webhooks.
    pub fn notify(&self, changes: &[AlertChange]) {
        for c in changes {
            let a = &c.alert;
            match c.transition {
                Transition::Fired => tracing::warn!(
                    alert = %a.id, rule = %a.rule, subject = %a.subject,
                    "alert firing: {}", a.summary
                ),
                Transition::Resolved => tracing::info!(
                    alert = %a.id, rule = %a.rule, subject = %a.subject,
                    "alert resolved: {}", a.resolution
                ),
                Transition::Updated => {
                    tracing::debug!(alert = %a.id, count = a.count, "alert seen again");
                    continue;
                }
            }
            let n = Arc::new(Notification::new(a));
            for (url, tx) in &self.webhooks {
                if tx.try_send(n.clone()).is_err() {
                    tracing::warn!(webhook = %url, alert = %a.id, "webhook queue full or closed; notification dropped");
                }
            }
        }
    }
}

async fn worker(
    url: String,
    http: reqwest::Client,
    d: Delivery,
    mut rx: mpsc::Receiver<Arc<Notification>>,
    shutdown: CancellationToken,
) {
    loop {
        let n = tokio::select! {
            n = rx.recv() => match n { Some(n) => n, None => return },
            _ = shutdown.cancelled() => return,
        };
        if let Err(e) = deliver(&http, &url, &n, &d, &shutdown).await {
            tracing::warn!(webhook = %url, alert = %n.alert.id, error = %e, "alert notification not delivered");
        }
    }
}

/// POST `n` to `url`; retry connection errors, timeouts, 5xx and 429
/// after `backoff`, doubling (at most a minute), `retries` times. Other
/// 4xx answers are final: the receiver refused it.
pub async fn deliver(
    http: &reqwest::Client,
    url: &str,
    n: &Notification,
    d: &Delivery,
    shutdown: &CancellationToken,
) -> Result<u32, String> {
    let mut wait = d.backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let last = match http.post(url).json(n).timeout(d.timeout).send().await {
            Ok(r) if r.status().is_success() => return Ok(attempt),
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                return Err(format!("{url} answered {}", r.status()));
            }
            Ok(r) => format!("{url} answered {}", r.status()),
            Err(e) => format!("cannot post to {url}: {e}"),
        };
        if attempt > d.retries {
            return Err(format!("{last} (after {attempt} attempts)"));
        }
        tracing::debug!(webhook = %url, attempt, error = %last, "retrying in {wait:?}");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return Err(format!("{last} (shutting down)")),
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}
