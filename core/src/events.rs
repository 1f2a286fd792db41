//! The engine's event stream (`docker events`): what happened to containers and images,
//! kept in memory (the last [`KEPT_EVENTS`]) for `since`, and broadcast live.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::engine::Engine;
use crate::model::Event;

/// How many past events are kept for `docker events --since`.
pub const KEPT_EVENTS: usize = 1024;

/// Past events and live subscribers.
#[derive(Debug)]
pub struct EventLog {
    past: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            past: Mutex::new(VecDeque::with_capacity(KEPT_EVENTS)),
            live: broadcast::channel(256).0,
        }
    }
}

impl EventLog {
    /// Records and broadcasts an event.
    pub fn emit(&self, kind: &str, action: &str, actor_id: &str, attributes: &[(&str, &str)]) {
        let e = Event {
            kind: kind.into(),
            action: action.into(),
            actor_id: actor_id.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            time_nano: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        };
        {
            let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
            if past.len() == KEPT_EVENTS {
                past.pop_front();
            }
            past.push_back(e.clone());
        }
        let _ = self.live.send(e);
    }

    /// The kept events and a receiver for later ones, taken together so none is lost
    /// or seen twice.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        (past.iter().cloned().collect(), self.live.subscribe())
    }
}

impl Engine {
    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_and_live() {
        let log = EventLog::default();
        log.emit("image", "pull", "busybox:latest", &[("name", "busybox")]);
        let (past, mut rx) = log.subscribe();
        assert_eq!(past.len(), 1);
        log.emit("container", "create", "abc", &[]);
        let e = rx.recv().await.unwrap();
        assert_eq!(
            (e.kind.as_str(), e.action.as_str()),
            ("container", "create")
        );
        for _ in 0..KEPT_EVENTS + 5 {
            log.emit("image", "tag", "x", &[]);
        }
        assert_eq!(log.subscribe().0.len(), KEPT_EVENTS);
    }
}
