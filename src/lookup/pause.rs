//! Pause points, compiled only for tests: a test arms a named point, and
//! the next lookup that reaches it stops there until the test releases it.
//! This is how the race tests force an interleaving (a reply that arrived
//! but is not inserted yet, say) instead of hoping a sleep produces it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;

#[derive(Default)]
pub struct Pauses {
    armed: Mutex<HashMap<&'static str, Arc<Gate>>>,
}

/// One armed point: the lookup that reaches it waits for [`Gate::release`].
pub struct Gate {
    arrived: Semaphore,
    released: Semaphore,
}

impl Pauses {
    /// Arms `point` for the next lookup that reaches it.
    pub fn arm(&self, point: &'static str) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            arrived: Semaphore::new(0),
            released: Semaphore::new(0),
        });
        self.armed.lock().insert(point, gate.clone());
        gate
    }

    /// Called by the code at `point`: waits there if a test armed it.
    pub async fn reach(&self, point: &'static str) {
        let gate = self.armed.lock().remove(point);
        if let Some(gate) = gate {
            gate.arrived.add_permits(1);
            gate.released.acquire().await.expect("never closed").forget();
        }
    }
}

const DEADLINE: Duration = Duration::from_secs(10);

impl Gate {
    /// Waits until a lookup stops here; panics after a deadline.
    pub async fn arrived(&self) {
        let wait = self.arrived.acquire();
        let permit = tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("nothing reached the pause point");
        permit.expect("never closed").forget();
    }

    /// Lets the lookup stopped here go on.
    pub fn release(&self) {
        self.released.add_permits(1);
    }
}
