//! One attempt at one delivery (claimed within its integration's rate limit and in-flight
//! cap), the stages in order: integration and plugin looked up → paused if the integration
//! is disabled → plugin `transform` →
//! secrets opened and filled in, requests signed ([`prepare`]) → sent ([`Sender`]) → plugin
//! `interpret` → [`decide`] → the attempt recorded with the request as sent (secrets
//! redacted) and a bounded response excerpt.
//!
//! Plugin calls are synchronous wasm. They run on the plugin runtime's threads (one per core)
//! within a slice of 10–20 ms, and a call that needs longer is run again on tokio's blocking
//! pool ([`Plugin::run`]): a slow plugin (bounded by its time limit) never stalls the network
//! tasks, and the threads plugin calls use stay as many as the cores.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use canopy_events::EventKind;
use uuid::Uuid;

use super::integrations::{Integrations, Ready};
use super::outcome::{AttemptResult, decide, default_verdict};
use super::request::{self, prepare};
use super::retry::RetrySchedule;
use super::sender::{Response, Sender};
use crate::clock::Clock;
use crate::crypto::seal::{MasterKey, random_bytes};
use crate::crypto::secret::SecretValue;
use crate::metrics::Metrics;
use crate::runtime::{
    Plugin, PluginConfig, PluginError, PluginRegistry, PluginRequest, PluginResponse, Refusal,
    Scope, Verdict,
};
use crate::store::{
    Attempt, Delivery, DeliveryStatus, Exchange, Integration, ReceivedResponse, SentRequest,
    Signal, Store, StoreError, Timestamp,
};

/// How much of a request body the delivery log keeps.
pub const REQUEST_EXCERPT_BYTES: usize = 16 << 10;
/// How much of a response body the delivery log keeps.
pub const RESPONSE_EXCERPT_BYTES: usize = 4 << 10;

/// Delivery policy from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule: RetrySchedule,
    /// Consecutive failed attempts that disable an integration (0: never).
    pub auto_disable_after: u32,
}

/// Everything an attempt needs. Shared by all worker tasks.
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub plugins: Arc<PluginRegistry>,
    pub sender: Sender,
    pub key: MasterKey,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    /// Where attempts take their time (a manual clock in tests).
    pub clock: Clock,
    /// Integrations read, with their configuration and opened secrets, kept between attempts.
    pub integrations: Integrations,
}

/// What a Test send came to.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TestOutcome {
    /// `succeeded`, `retry` (a delivery would be tried again), `failed` or `skipped`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `webhook-id` the test request carried.
    pub delivery_id: String,
    pub plugin_version: String,
    pub duration_ms: u64,
    /// The requests as sent (secrets redacted) and their responses (excerpts).
    pub exchanges: Vec<Exchange>,
}

/// What one attempt produced, before the schedule is applied.
struct Tried {
    result: AttemptResult,
    /// What it says about the destination (auto-disable).
    signal: Signal,
    exchanges: Vec<Exchange>,
    plugin_version: String,
}

impl Tried {
    /// An attempt that ended before any request went out. Whatever stopped it says nothing
    /// about the destination unless [`Tried::failing`] says so.
    fn without_request(result: AttemptResult, plugin_version: &str) -> Tried {
        Tried {
            result,
            signal: Signal::Neutral,
            exchanges: Vec::new(),
            plugin_version: plugin_version.to_owned(),
        }
    }

    /// Counts against the destination (its answer, or settings that cannot work).
    fn failing(mut self) -> Tried {
        self.signal = Signal::Failing;
        self
    }
}

impl Worker {
    /// Runs one attempt of a leased delivery. A storage failure leaves the lease to expire,
    /// so the delivery is tried again; a lease lost to another worker records nothing.
    pub async fn deliver(&self, delivery: Delivery) {
        let (id, integration) = (delivery.id, delivery.integration_id);
        match self.try_deliver(delivery).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost(_)) => {
                self.metrics.lease_lost();
                tracing::warn!(
                    delivery = %id, integration = %integration,
                    "the lease was lost (it expired and another worker claimed the delivery, or the delivery ended); this attempt's outcome is not recorded"
                )
            }
            Err(error) => tracing::error!(
                delivery = %id, integration = %integration, %error,
                "delivery not processed; it will be tried again when its lease ends"
            ),
        }
    }

    async fn try_deliver(&self, delivery: Delivery) -> Result<(), StoreError> {
        let Some(lease) = delivery.lease() else {
            return Err(StoreError::LeaseLost(delivery.id));
        };
        let now = self.clock.now();
        let Some(ready) = self
            .integrations
            .get(
                &*self.store,
                &self.key,
                &delivery.shop,
                delivery.integration_id,
            )
            .await?
        else {
            let failed = AttemptResult::Failed {
                reason: "the integration was deleted".into(),
            };
            let tried = Tried::without_request(failed, "");
            return self.finish(&delivery, tried, now, Instant::now()).await;
        };
        let integration = &ready.integration;
        if !integration.enabled {
            let reason = integration
                .disabled_reason
                .as_deref()
                .unwrap_or("the integration is disabled");
            self.store.pause(lease, now, reason).await?;
            self.metrics.delivery(DeliveryStatus::Paused);
            tracing::info!(delivery = %delivery.id, integration = %integration.id, "delivery paused");
            return Ok(());
        }
        let Some(plugin) = self.plugins.get(&integration.plugin) else {
            let retry = AttemptResult::Retry {
                after: None,
                reason: format!("the plugin `{}` is not installed", integration.plugin),
            };
            let tried = Tried::without_request(retry, "");
            return self.finish(&delivery, tried, now, Instant::now()).await;
        };
        let Some(event_json) = self.store.event_json(delivery.event_id).await? else {
            let failed = AttemptResult::Failed {
                reason: "the event is no longer stored".into(),
            };
            let tried = Tried::without_request(failed, &plugin.info().version);
            return self.finish(&delivery, tried, now, Instant::now()).await;
        };
        let started = Instant::now();
        let delivery_id = delivery.id.to_string();
        let tried = self
            .attempt(&delivery_id, &ready, plugin, event_json, now)
            .await;
        self.finish(&delivery, tried, now, started).await
    }

    /// Rehearses an integration before it is saved: the sample of every event type it takes
    /// goes through the plugin's `transform` and the host's request preparation (secrets filled
    /// in, declared hosts, header names and values, signatures), and nothing is sent. Anything
    /// the host would refuse at send time is refused here, named with its event type, so that
    /// settings accepted at save cannot make every delivery fail.
    pub async fn rehearse(
        &self,
        integration: &Integration,
        plugin: Arc<Plugin>,
    ) -> Result<(), String> {
        let secrets = open_secrets(&self.key, integration)?;
        let config = plugin_config(integration);
        let settings = integration.settings.clone();
        let kinds: Vec<EventKind> = EventKind::ALL
            .iter()
            .copied()
            .filter(|k| integration.subscribes_to(k.key()) && plugin.info().supports(k.key()))
            .collect();
        tokio::task::spawn_blocking(move || {
            for kind in kinds {
                let event = kind.key();
                // Fresh instances: a rehearsal is a one-off, and the integration may never exist.
                let requests = match plugin.transform(Scope::Fresh, kind.sample_json(), &config) {
                    Ok(call) => match call.value {
                        Ok(requests) => requests,
                        Err(Refusal::InvalidConfig(reason)) => return Err(reason),
                        // The plugin may decline a sample (skip, or an event it cannot take);
                        // that says nothing about the settings.
                        Err(Refusal::Skip(_) | Refusal::InvalidEvent(_)) => continue,
                    },
                    Err(error) if error.is_refused_output() => {
                        return Err(format!("a `{event}` event could not be sent: {error}"));
                    }
                    // A plugin that traps or breaks a limit is the plugin's defect, not the
                    // settings': its deliveries fail with the reason, the integration saves.
                    Err(_) => continue,
                };
                for request in &requests {
                    let attempt = request::Attempt {
                        delivery_id: "rehearsal",
                        timestamp: 0,
                    };
                    prepare(
                        request,
                        &secrets,
                        &plugin.info().allowed_hosts,
                        &settings,
                        attempt,
                    )
                    .map_err(|e| format!("a `{event}` event could not be sent: {e}"))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("the check was lost: {e}"))?
    }

    /// The Test button: one attempt of `event_json` through the integration's real plugin and
    /// network path, answered directly; nothing is stored, no rate limit or schedule applies.
    pub async fn test(&self, integration: &Integration, event_json: String) -> TestOutcome {
        let id = crate::store::new_id().to_string();
        let now = self.clock.now();
        let started = Instant::now();
        let tried = match self.plugins.get(&integration.plugin) {
            Some(plugin) => {
                let ready = Ready::new(integration.clone(), &self.key);
                self.attempt(&id, &ready, plugin, event_json, now).await
            }
            None => Tried::without_request(
                AttemptResult::Failed {
                    reason: format!("the plugin `{}` is not installed", integration.plugin),
                },
                "",
            ),
        };
        let (outcome, reason) = match tried.result {
            AttemptResult::Delivered => ("succeeded", None),
            AttemptResult::Retry { reason, .. } => ("retry", Some(reason)),
            AttemptResult::Failed { reason } => ("failed", Some(reason)),
            AttemptResult::Skipped { reason } => ("skipped", Some(reason)),
        };
        TestOutcome {
            outcome,
            reason,
            delivery_id: id,
            plugin_version: tried.plugin_version,
            duration_ms: started.elapsed().as_millis() as u64,
            exchanges: tried.exchanges,
        }
    }

    async fn attempt(
        &self,
        delivery_id: &str,
        ready: &Ready,
        plugin: Arc<Plugin>,
        event_json: String,
        now: Timestamp,
    ) -> Tried {
        let integration = &ready.integration;
        let version = plugin.info().version.clone();
        let fail = |reason: String, exchanges| Tried {
            result: AttemptResult::Failed { reason },
            signal: Signal::Neutral,
            exchanges,
            plugin_version: version.clone(),
        };
        let requests = match self.transform(&plugin, ready, event_json).await {
            Ok(Ok(requests)) if requests.is_empty() => {
                let skipped = AttemptResult::Skipped {
                    reason: "the plugin produced no request for this event".into(),
                };
                return Tried::without_request(skipped, &version);
            }
            Ok(Ok(requests)) => requests,
            Ok(Err(Refusal::Skip(reason))) => {
                return Tried::without_request(AttemptResult::Skipped { reason }, &version);
            }
            Ok(Err(Refusal::InvalidConfig(reason))) => {
                return fail(format!("invalid integration settings: {reason}"), vec![]).failing();
            }
            Ok(Err(Refusal::InvalidEvent(reason))) => {
                return fail(
                    format!("the plugin cannot take this event: {reason}"),
                    vec![],
                );
            }
            Err(error) => return fail(format!("plugin error: {error}"), vec![]),
        };
        let secrets = match &ready.secrets {
            Ok(secrets) => secrets,
            Err(error) => return fail(error.clone(), vec![]),
        };

        let mut exchanges = Vec::with_capacity(requests.len());
        for request in &requests {
            let attempt = request::Attempt {
                delivery_id,
                timestamp: now.unix_seconds(),
            };
            let allowed = &plugin.info().allowed_hosts;
            let prepared = match prepare(request, secrets, allowed, &integration.settings, attempt)
            {
                Ok(prepared) => prepared,
                Err(error) => {
                    let tried = fail(error.to_string(), exchanges);
                    // Settings that cannot work fail every delivery: the destination's count.
                    // A request this event alone cannot make (a header or URL built from its
                    // data) is not the destination's failure.
                    return if error.is_configuration() {
                        tried.failing()
                    } else {
                        tried
                    };
                }
            };
            let sent = SentRequest {
                method: prepared.method.as_str().to_owned(),
                url: request::redact_url(&prepared.url),
                headers: prepared.redacted_headers.clone(),
                body: excerpt(&prepared.body, REQUEST_EXCERPT_BYTES),
                body_bytes: prepared.body.len(),
            };
            let sending = Instant::now();
            let response = match self.sender.send(&prepared).await {
                Ok(response) => response,
                Err(error) => {
                    exchanges.push(Exchange {
                        request: sent,
                        response: None,
                        duration_ms: sending.elapsed().as_millis() as u64,
                        error: Some(error.to_string()),
                    });
                    let result = if error.is_retryable() {
                        AttemptResult::Retry {
                            after: None,
                            reason: error.to_string(),
                        }
                    } else {
                        AttemptResult::Failed {
                            reason: error.to_string(),
                        }
                    };
                    return Tried {
                        result,
                        signal: Signal::Failing,
                        exchanges,
                        plugin_version: version,
                    };
                }
            };
            self.metrics.attempt(plugin.id(), response.duration);
            let (verdict, note) = self.interpret(&plugin, integration.id, &response).await;
            exchanges.push(Exchange {
                request: sent,
                response: Some(ReceivedResponse {
                    status: response.status,
                    body: excerpt(&response.body, RESPONSE_EXCERPT_BYTES),
                    body_bytes: response.body_bytes,
                }),
                duration_ms: response.duration.as_millis() as u64,
                error: note,
            });
            if verdict != Verdict::Delivered {
                return Tried {
                    result: verdict.into(),
                    signal: Signal::Failing,
                    exchanges,
                    plugin_version: version,
                };
            }
        }
        Tried {
            result: AttemptResult::Delivered,
            signal: Signal::Healthy,
            exchanges,
            plugin_version: version,
        }
    }

    async fn transform(
        &self,
        plugin: &Arc<Plugin>,
        ready: &Ready,
        event_json: String,
    ) -> Result<Result<Vec<PluginRequest>, Refusal>, PluginError> {
        let scope = ready.integration.id.to_string();
        let call = plugin
            .clone()
            .transform_async(scope, event_json, ready.config.clone())
            .await?;
        self.metrics
            .plugin_call(plugin.id(), "transform", call.usage.duration);
        Ok(call.value)
    }

    /// The plugin's verdict on a response; if `interpret` itself fails, the host's own reading
    /// of the status, with the plugin's error as a note.
    async fn interpret(
        &self,
        plugin: &Arc<Plugin>,
        integration: Uuid,
        response: &Response,
    ) -> (Verdict, Option<String>) {
        let plugin_response = PluginResponse {
            status: response.status,
            headers: response.headers.clone(),
            body: response.body.clone(),
        };
        let scope = integration.to_string();
        let call = plugin.clone().interpret_async(scope, plugin_response).await;
        match call {
            Ok(call) => {
                self.metrics
                    .plugin_call(plugin.id(), "interpret", call.usage.duration);
                (call.value, None)
            }
            Err(error) => (
                default_verdict(response.status, &response.headers),
                Some(format!(
                    "plugin error in interpret (status read by the host): {error}"
                )),
            ),
        }
    }

    async fn finish(
        &self,
        delivery: &Delivery,
        tried: Tried,
        now: Timestamp,
        started: Instant,
    ) -> Result<(), StoreError> {
        let number = delivery.attempts + 1;
        let outcome = decide(
            &tried.result,
            tried.signal,
            number,
            &self.policy.schedule,
            self.clock.now(),
            jitter_unit(),
        );
        let attempt = Attempt {
            number,
            started_at: now,
            duration_ms: started.elapsed().as_millis() as u64,
            plugin_version: tried.plugin_version,
            outcome: outcome.status,
            error: outcome.error.clone(),
            exchanges: tried.exchanges,
        };
        let error = outcome.error.clone();
        // The request went out: its outcome must not be lost to a store that cannot write
        // for a while (a full disk). The delivery stays leased meanwhile.
        let lease = delivery.lease().ok_or(StoreError::LeaseLost(delivery.id))?;
        let recorded = keep_trying(|| {
            self.store.record_attempt(
                lease,
                attempt.clone(),
                outcome.clone(),
                self.clock.now(),
                self.policy.auto_disable_after,
            )
        })
        .await?;
        let status = recorded.status;
        self.metrics.delivery(status);
        let (id, integration) = (delivery.id, delivery.integration_id);
        match status {
            DeliveryStatus::Succeeded | DeliveryStatus::Skipped => tracing::info!(
                delivery = %id, %integration, attempt = number, status = %status,
                reason = error.as_deref().unwrap_or(""), "delivery finished"
            ),
            _ => tracing::warn!(
                delivery = %id, %integration, attempt = number, status = %status,
                error = error.as_deref().unwrap_or(""), "delivery attempt failed"
            ),
        }
        if recorded.integration_disabled {
            tracing::warn!(
                %integration,
                "integration disabled after {} consecutive failed attempts; its deliveries are paused until it is enabled again",
                self.policy.auto_disable_after
            );
        }
        Ok(())
    }
}

/// How long an attempt's outcome waits for a store that cannot take writes before it is given
/// up (the lease then brings the delivery back, and it is sent again).
const OUTCOME_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);
/// Pause between tries of a write the store refused as unavailable.
const UNAVAILABLE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a store write again while the store is unavailable, up to [`OUTCOME_PATIENCE`].
async fn keep_trying<T, F, Fut>(mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    loop {
        match write().await {
            Err(StoreError::Unavailable(reason)) if started.elapsed() < OUTCOME_PATIENCE => {
                tracing::debug!(%reason, "the store is unavailable; the outcome waits for it");
                tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
            }
            other => return other,
        }
    }
}

/// An integration's configuration as its plugin sees it: settings and secret names only.
pub fn plugin_config(integration: &Integration) -> PluginConfig {
    PluginConfig {
        settings: integration.settings.clone(),
        secrets_present: integration.secrets.keys().cloned().collect(),
    }
}

/// Opens an integration's sealed secrets. The error names the secret, never its value.
pub fn open_secrets(
    key: &MasterKey,
    integration: &Integration,
) -> Result<HashMap<String, SecretValue>, String> {
    integration
        .secrets
        .iter()
        .map(|(name, stored)| {
            let bytes = key
                .open(&stored.sealed)
                .map_err(|e| format!("the secret `{name}` cannot be opened: {e}"))?;
            let value = String::from_utf8(bytes)
                .map_err(|_| format!("the secret `{name}` is not valid text"))?;
            Ok((name.clone(), SecretValue::new(value)))
        })
        .collect()
}

/// The start of `bytes` as text, cut at a character boundary within `limit` bytes.
pub fn excerpt(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]);
    let mut text = text.into_owned();
    if bytes.len() > limit {
        // A cut multi-byte character shows as U+FFFD; drop it.
        while text.ends_with('\u{FFFD}') {
            text.pop();
        }
        text.push('…');
    }
    text
}

/// A uniform sample in [0, 1) for the retry jitter.
fn jitter_unit() -> f64 {
    (u64::from_le_bytes(random_bytes::<8>()) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_valid_text() {
        assert_eq!(excerpt(b"short", 16), "short");
        assert_eq!(excerpt(b"0123456789", 4), "0123…");
        // "é" is two bytes; a cut through it is dropped, not shown broken.
        assert_eq!(excerpt("aé".as_bytes(), 2), "a…");
        let unit = jitter_unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
