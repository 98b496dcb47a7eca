//! Verification codes from the service's mail: received by the SMTP sink or read from `.eml`
//! files, and handed to whoever waits for the code of that recipient.

pub mod maildir;
pub mod mime;
pub mod smtp;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::oneshot;

/// Codes by recipient. A recipient has at most one flow waiting for its code at a time (the
/// flow producer runs one BeginRecovery per email at a time), so a code is never ambiguous.
#[derive(Debug, Default)]
pub struct CodeBook {
    slots: Mutex<HashMap<String, Slot>>,
    received: AtomicU64,
}

#[derive(Debug)]
enum Slot {
    Codes(VecDeque<String>),
    Waiting(oneshot::Sender<String>),
}

impl CodeBook {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A code arrived for `recipient` (any case).
    pub fn deliver(&self, recipient: &str, code: String) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let key = recipient.to_ascii_lowercase();
        match slots.remove(&key) {
            Some(Slot::Waiting(tx)) => {
                if let Err(code) = tx.send(code) {
                    // The waiter gave up: keep the code for a later one.
                    slots.insert(key, Slot::Codes(VecDeque::from([code])));
                }
            }
            Some(Slot::Codes(mut codes)) => {
                codes.push_back(code);
                slots.insert(key, Slot::Codes(codes));
            }
            None => {
                slots.insert(key, Slot::Codes(VecDeque::from([code])));
            }
        }
    }

    /// Waits up to `timeout` for the next code sent to `recipient`.
    pub async fn wait(&self, recipient: &str, timeout: Duration) -> Option<String> {
        let key = recipient.to_ascii_lowercase();
        let rx = {
            let mut slots = self.slots.lock().ok()?;
            match slots.remove(&key) {
                Some(Slot::Codes(mut codes)) => {
                    let code = codes.pop_front();
                    if !codes.is_empty() {
                        slots.insert(key.clone(), Slot::Codes(codes));
                    }
                    if code.is_some() {
                        return code;
                    }
                    let (tx, rx) = oneshot::channel();
                    slots.insert(key.clone(), Slot::Waiting(tx));
                    rx
                }
                // A second waiter for one recipient replaces the first (which then times out).
                Some(Slot::Waiting(_)) | None => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(key.clone(), Slot::Waiting(tx));
                    rx
                }
            }
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(code)) => Some(code),
            _ => {
                if let Ok(mut slots) = self.slots.lock()
                    && matches!(slots.get(&key), Some(Slot::Waiting(_)))
                {
                    slots.remove(&key);
                }
                None
            }
        }
    }

    /// Codes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_code_reaches_a_waiter_whether_it_came_before_or_after() {
        let book = CodeBook::new();
        book.deliver("Ann@example.com", "111111".into());
        assert_eq!(
            book.wait("ann@example.com", Duration::from_millis(10))
                .await
                .as_deref(),
            Some("111111")
        );
        let waiter = {
            let book = Arc::clone(&book);
            tokio::spawn(async move { book.wait("bob@example.com", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        book.deliver("bob@example.com", "222222".into());
        assert_eq!(waiter.await.unwrap().as_deref(), Some("222222"));
        assert_eq!(
            book.wait("bob@example.com", Duration::from_millis(10))
                .await,
            None
        );
        assert_eq!(book.received(), 2);
    }
}
