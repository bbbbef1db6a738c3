//! Delivery to an MQTT broker: QoS 1 publish over mutual TLS, confirmed by
//! the PUBACK.

use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};

use crate::Error;
use crate::hub::{MAX_PAYLOAD, MqttHub};

/// Ping interval of an idle connection.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// One broker connection at a time. A connection is never reused after an
/// error: a fresh client and event loop start a clean session, so rumqttc
/// does not replay a publish the forwarding task is about to resend.
pub(crate) struct MqttLink {
    options: MqttOptions,
    topic: String,
    name: String,
    session: Option<(AsyncClient, EventLoop)>,
}

impl MqttLink {
    pub(crate) fn new(hub: &MqttHub) -> Result<MqttLink, Error> {
        let invalid = |what, reason| Error::InvalidMqttHub { what, reason };
        if hub.topic.is_empty() || hub.topic.len() > 65_535 {
            return Err(invalid("topic", "it must have 1 to 65535 bytes"));
        }
        if hub.topic.contains(['+', '#', '\0']) {
            return Err(invalid(
                "topic",
                "wildcards and NUL are not allowed in a topic to publish to",
            ));
        }
        if hub.client_id.is_empty() || hub.client_id.len() > 65_535 {
            return Err(invalid("client id", "it must have 1 to 65535 bytes"));
        }
        if hub.host.is_empty()
            || rustls::pki_types::ServerName::try_from(hub.host.as_str()).is_err()
        {
            return Err(invalid("host", "it is not a valid DNS name or IP address"));
        }
        let mut options = MqttOptions::new(hub.client_id.clone(), hub.host.clone(), hub.port);
        options
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                hub.tls.clone(),
            )))
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            // Room for the largest notification plus the packet header.
            .set_max_packet_size(64 * 1024, MAX_PAYLOAD + hub.topic.len() + 16);
        Ok(MqttLink {
            options,
            topic: hub.topic.clone(),
            name: format!("{}:{}", hub.host, hub.port),
            session: None,
        })
    }

    /// `host:port`, for logs and errors.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Forgets the connection (after a timeout left it in an unknown state).
    pub(crate) fn disconnect(&mut self) {
        self.session = None;
    }

    fn error(&self, reason: impl std::fmt::Display) -> Error {
        Error::MqttConnection {
            broker: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// Publishes `payload` and waits for its PUBACK, connecting first if
    /// needed. Any failure drops the connection.
    pub(crate) async fn deliver(&mut self, payload: &[u8]) -> Result<(), Error> {
        let outcome = self.try_deliver(payload).await;
        if outcome.is_err() {
            self.session = None;
        }
        outcome
    }

    async fn try_deliver(&mut self, payload: &[u8]) -> Result<(), Error> {
        let (client, events) = match self.session.take() {
            Some(session) => self.session.insert(session),
            None => {
                let (client, mut events) = AsyncClient::new(self.options.clone(), 4);
                // The first event of a new event loop is the CONNACK, or the
                // error that kept it from arriving (a refused return code
                // is an error too).
                events.poll().await.map_err(|e| self.error(e))?;
                self.session.insert((client, events))
            }
        };
        client
            .try_publish(
                self.topic.clone(),
                QoS::AtLeastOnce,
                false,
                payload.to_vec(),
            )
            .map_err(|e| Error::MqttConnection {
                broker: self.name.clone(),
                reason: e.to_string(),
            })?;
        let mut packet_id = None;
        loop {
            let event = match events.poll().await {
                Ok(event) => event,
                Err(e) => {
                    return Err(Error::MqttConnection {
                        broker: self.name.clone(),
                        reason: e.to_string(),
                    });
                }
            };
            match event {
                Event::Outgoing(Outgoing::Publish(id)) => packet_id = Some(id),
                Event::Incoming(Packet::PubAck(ack)) if Some(ack.pkid) == packet_id => {
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    /// Drives an open connection (keep-alive pings) until it fails; returns
    /// at once if there is none.
    pub(crate) async fn idle(&mut self) {
        if let Some((_, events)) = self.session.as_mut() {
            loop {
                if let Err(error) = events.poll().await {
                    tracing::debug!(broker = %self.name, %error, "idle MQTT connection closed");
                    break;
                }
            }
            self.session = None;
        }
    }
}
