//! The status page as `pgch run` serves it on its metrics listener: collected in this
//! process ([`HealthSource::InProcess`]) and kept for [`STATUS_FRESH_FOR`], so an open
//! page, or several, costs the source and ClickHouse one look per interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{collect, render, HealthSource, Status};
use crate::config::Settings;
use crate::metrics::http::StatusPages;

/// A status collected this recently is shown again instead of asking the servers anew.
pub const STATUS_FRESH_FOR: Duration = Duration::from_secs(2);

/// The settings to collect with, and the last status.
pub struct Page {
    settings: Settings,
    last: tokio::sync::Mutex<Option<(Instant, Arc<Status>)>>,
}

impl Page {
    /// A page for the pgch running with `settings`.
    pub fn new(settings: Settings) -> Arc<Page> {
        Arc::new(Page {
            settings,
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// The status, collected anew when the last one is older than [`STATUS_FRESH_FOR`];
    /// one collection at a time.
    async fn current(&self) -> Arc<Status> {
        let mut last = self.last.lock().await;
        if let Some((at, status)) = last.as_ref() {
            if at.elapsed() < STATUS_FRESH_FOR {
                return status.clone();
            }
        }
        let status = Arc::new(collect(&self.settings, HealthSource::InProcess).await);
        *last = Some((Instant::now(), status.clone()));
        status
    }
}

impl StatusPages for Page {
    fn html(&self) -> BoxFuture<'_, String> {
        Box::pin(async move { render::html(&*self.current().await) })
    }

    fn json(&self) -> BoxFuture<'_, String> {
        Box::pin(async move { render::json(&*self.current().await) })
    }
}
