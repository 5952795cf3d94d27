//! A Redis subscription that survives Redis: one thread, its own small
//! runtime, a loop of connect → SUBSCRIBE → deliver messages, and on any
//! loss a short backoff and again. Each (re)subscription is reported, since
//! messages published while we were away are lost and the caller may need
//! to resynchronise (the site cache drops everything).

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::config::RedisConfig;

/// What a subscriber is told.
pub enum Event<'a> {
    /// Subscribed (first time or again after a loss).
    Subscribed,
    /// A message on one of the channels.
    Message { channel: &'a str, payload: &'a [u8] },
}

/// Starts the subscriber thread; it runs until the process exits.
pub fn spawn(
    config: RedisConfig,
    channels: Vec<String>,
    mut on_event: impl FnMut(Event<'_>) + Send + 'static,
) -> std::io::Result<()> {
    crate::background::spawn("reliw-subscriber", move || async move {
        subscribe_forever(&config, &channels, &mut on_event).await;
    })
}

async fn subscribe_forever(
    config: &RedisConfig,
    channels: &[String],
    on_event: &mut impl FnMut(Event<'_>),
) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    // Which server to try (cluster nodes are tried in turn).
    let mut attempt = 0;
    loop {
        match session(config, channels, on_event, attempt).await {
            Ok(()) => {
                tracing::warn!(?channels, "redis subscription lost; resubscribing");
                backoff = Duration::from_millis(100);
                warned = false;
            }
            Err(e) => {
                // One warning per outage, not one per retry.
                if !warned {
                    tracing::warn!(?channels, error = %e, "cannot subscribe; retrying");
                    warned = true;
                }
            }
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One subscription, until the connection ends.
async fn session(
    config: &RedisConfig,
    channels: &[String],
    on_event: &mut impl FnMut(Event<'_>),
    attempt: usize,
) -> Result<(), String> {
    let timeout = Duration::from_secs_f64(config.timeout);
    // With Sentinel: whichever server is master now.
    let client = tokio::time::timeout(timeout, super::redis::subscription_client(config, attempt))
        .await
        .map_err(|_| String::from("finding the master timed out"))?
        .map_err(|e| e.to_string())?;
    let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| String::from("connect timed out"))?
        .map_err(|e| e.to_string())?;
    for channel in channels {
        pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
    }
    tracing::info!(?channels, "subscribed");
    on_event(Event::Subscribed);
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        on_event(Event::Message {
            channel: msg.get_channel_name(),
            payload: msg.get_payload_bytes(),
        });
    }
    Ok(())
}
