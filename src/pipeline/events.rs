//! What happened in a pass, as it happens: the stream metrics and failure notifications subscribe to.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::state::Step;

/// One thing a pass did. Events carry ids, serials and messages, never a key or a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A pipeline step of a deployment was persisted.
    Step {
        /// Deployment id.
        id: String,
        /// The step now recorded.
        step: Step,
    },
    /// A deployment's pass ended.
    Outcome {
        /// Deployment id.
        id: String,
        /// Whether it ended well (renewed, not due, deferred, dry run).
        ok: bool,
        /// The one-line report (`renewed: …`, `not due: …`, or the error).
        message: String,
        /// The expiry of the certificate the target runs, when known.
        expires: Option<OffsetDateTime>,
    },
    /// An attempt to obtain a certificate from the CA ended.
    Order {
        /// Deployment id.
        id: String,
        /// It brought a certificate.
        issued: bool,
    },
}

type Subscriber = Arc<dyn Fn(&Event) + Send + Sync>;

/// The subscribers of a pipeline; each is called in order, synchronously, for every event.
#[derive(Clone, Default)]
pub struct EventSink(Vec<Subscriber>);

impl EventSink {
    /// Adds a subscriber.
    pub fn subscribe(&mut self, subscriber: impl Fn(&Event) + Send + Sync + 'static) {
        self.0.push(Arc::new(subscriber));
    }

    /// Tells every subscriber.
    pub fn emit(&self, event: &Event) {
        for subscriber in &self.0 {
            subscriber(event);
        }
    }
}
