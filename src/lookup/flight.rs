//! Single flight: one Redis GET per key in flight, however many lookups
//! miss on it at once.
//!
//! The lookup that misses first fetches, in its own task, every key it
//! missed that no one else is fetching: one [`Batch`]. Each key of it is
//! registered, under the [`Stamp`] the key had when the lookup started, and
//! only lookups whose key still has that stamp join it: a lookup that
//! starts after a write or an invalidation of its key never gets an answer
//! read before it. A batch is registered and unregistered under one lock,
//! and answered once, for all its keys.
//!
//! When a fetch ends its keys are unregistered ([`Flights::finish`]), and
//! only its own (a newer flight may have replaced one of them). If it is
//! dropped before answering (its client hung up), [`Flights::abandon`]
//! keeps the keys registered when others joined them, for the fetch to be
//! finished elsewhere, and otherwise unregisters them and marks the batch
//! abandoned, so that anyone still waiting asks again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::generation::Stamp;
use crate::error::Error;

/// What a fetch produced for one key: the value, or None if Redis has no
/// such key.
pub type Outcome = Result<Option<Bytes>, Error>;

/// One fetch of one or more keys, and its answer once it has one.
pub struct Batch {
    answer: OnceLock<Vec<Outcome>>,
    abandoned: AtomicBool,
    /// Lookups that joined it (counted under the flights' lock).
    joined: AtomicUsize,
    done: Notify,
}

impl Batch {
    fn new() -> Self {
        Batch {
            answer: OnceLock::new(),
            abandoned: AtomicBool::new(false),
            joined: AtomicUsize::new(0),
            done: Notify::new(),
        }
    }

    /// Publishes one outcome per key, in order, and wakes the waiters.
    pub fn answer(&self, outcomes: Vec<Outcome>) {
        let _ = self.answer.set(outcomes);
        self.done.notify_waiters();
    }

    pub fn is_answered(&self) -> bool {
        self.answer.get().is_some()
    }

    /// The outcome for key `index`, once answered.
    pub fn outcome(&self, index: usize) -> Option<Outcome> {
        self.answer.get().map(|all| all[index].clone())
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.done.notify_waiters();
    }

    /// The outcome for key `index`, or None if the batch was abandoned
    /// before it answered (ask again).
    pub async fn wait(&self, index: usize) -> Option<Outcome> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Registered before looking, so an answer published in between
            // still wakes us.
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome(index) {
                return Some(outcome);
            }
            if self.abandoned.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

struct InFlight {
    stamp: Stamp,
    batch: Arc<Batch>,
    index: usize,
}

/// The keys being fetched, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<Bytes, InFlight>>,
}

/// The keys a lookup must fetch itself, with their stamps, and the batch
/// that others joining them wait on.
#[derive(Default)]
pub struct NewFlights {
    pub keys: Vec<Bytes>,
    pub stamps: Vec<Stamp>,
    batch: Option<Arc<Batch>>,
}

impl NewFlights {
    /// The batch these keys are fetched as, if there are any.
    pub fn batch(&self) -> Option<Arc<Batch>> {
        self.batch.clone()
    }
}

/// How one missing key is to be answered.
pub enum Begun {
    /// By a fetch already in flight under the same stamp: its batch, and
    /// the key's place in it.
    Joined(Arc<Batch>, usize),
    /// By this lookup's own fetch: the key's place in it.
    Started(usize),
}

impl Flights {
    /// For each missing key with the stamp it had before the lookup went
    /// further: join the flight fetching it under the same stamp, or add
    /// it to `new`. One lock for them all.
    pub fn begin(&self, misses: impl Iterator<Item = (Bytes, Stamp)>, new: &mut NewFlights) -> Vec<Begun> {
        let mut map = self.map.lock();
        misses
            .map(|(key, stamp)| {
                if let Some(f) = map.get(&key)
                    && f.stamp == stamp
                {
                    f.batch.joined.fetch_add(1, Ordering::Relaxed);
                    return Begun::Joined(f.batch.clone(), f.index);
                }
                let batch = new.batch.get_or_insert_with(|| Arc::new(Batch::new())).clone();
                let index = new.keys.len();
                map.insert(key.clone(), InFlight { stamp, batch, index });
                new.keys.push(key);
                new.stamps.push(stamp);
                Begun::Started(index)
            })
            .collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

impl Flights {
    /// Unregisters `keys` where `batch` is still the flight fetching them.
    pub fn finish(&self, keys: &[Bytes], batch: &Arc<Batch>) {
        unregister(&mut self.map.lock(), keys, batch);
    }

    /// For a fetch dropped before it answered. If anyone joined it, its keys
    /// stay registered and this returns true: the caller must finish the
    /// fetch. Otherwise they are unregistered and the batch is marked
    /// abandoned. Joining happens under the same lock, so no lookup can
    /// join in between.
    pub fn abandon(&self, keys: &[Bytes], batch: &Arc<Batch>) -> bool {
        {
            let mut map = self.map.lock();
            if batch.joined.load(Ordering::Relaxed) > 0 {
                return true;
            }
            unregister(&mut map, keys, batch);
        }
        // After unregistering: those who ask again must not find it.
        batch.abandon();
        false
    }
}

/// Removes `keys` where `batch` is still the flight fetching them.
fn unregister(map: &mut HashMap<Bytes, InFlight>, keys: &[Bytes], batch: &Arc<Batch>) {
    for key in keys {
        if map.get(key).is_some_and(|f| Arc::ptr_eq(&f.batch, batch)) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::generation::Generations;

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn begin(flights: &Flights, k: &Bytes, stamp: Stamp, new: &mut NewFlights) -> Begun {
        flights
            .begin(std::iter::once((k.clone(), stamp)), new)
            .pop()
            .unwrap()
    }

    #[tokio::test]
    async fn a_second_miss_under_the_same_stamp_joins_and_shares_the_answer() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let mut new = NewFlights::default();
        let Begun::Started(0) = begin(&flights, &k, g.stamp(&k), &mut new) else {
            panic!("expected a new flight");
        };
        let Begun::Joined(batch, 0) = begin(&flights, &k, g.stamp(&k), &mut NewFlights::default()) else {
            panic!("expected to join");
        };
        let waiter = tokio::spawn(async move { batch.wait(0).await });
        new.batch().unwrap().answer(vec![Ok(Some(key("v")))]);
        assert_eq!(waiter.await.unwrap(), Some(Ok(Some(key("v")))));
    }

    #[test]
    fn a_miss_after_its_key_was_bumped_starts_its_own_flight() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let mut old = NewFlights::default();
        begin(&flights, &k, g.stamp(&k), &mut old);
        g.bump(&k);
        let mut new = NewFlights::default();
        assert!(matches!(
            begin(&flights, &k, g.stamp(&k), &mut new),
            Begun::Started(0)
        ));
        g.bump_all();
        let mut newer = NewFlights::default();
        assert!(matches!(
            begin(&flights, &k, g.stamp(&k), &mut newer),
            Begun::Started(0)
        ));
    }

    #[test]
    fn a_run_of_misses_is_one_batch() {
        let (g, flights) = (Generations::new(), Flights::default());
        let keys = [key("a"), key("b"), key("c")];
        let mut new = NewFlights::default();
        let begun = flights.begin(keys.iter().map(|k| (k.clone(), g.stamp(k))), &mut new);
        assert!(matches!(
            begun[..],
            [Begun::Started(0), Begun::Started(1), Begun::Started(2)]
        ));
        assert_eq!(new.keys, keys);
        assert_eq!(flights.len(), 3);
    }

    #[test]
    fn finishing_removes_only_its_own_flights() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let keys = [k.clone()];
        let mut old = NewFlights::default();
        begin(&flights, &k, g.stamp(&k), &mut old);
        g.bump(&k);
        let mut new = NewFlights::default();
        begin(&flights, &k, g.stamp(&k), &mut new);
        flights.finish(&keys, &old.batch().unwrap());
        assert_eq!(flights.len(), 1, "the newer flight must stay registered");
        let Begun::Joined(..) = begin(&flights, &k, g.stamp(&k), &mut NewFlights::default()) else {
            panic!("the newer flight is still joinable");
        };
        flights.finish(&keys, &new.batch().unwrap());
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_fetch_nobody_joined_is_abandoned() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let keys = [k.clone()];
        let mut new = NewFlights::default();
        begin(&flights, &k, g.stamp(&k), &mut new);
        let mine = new.batch().unwrap();
        assert!(!flights.abandon(&keys, &mine), "nobody to finish it for");
        assert_eq!(flights.len(), 0);
        assert!(
            mine.wait(0).await.is_none(),
            "abandoned: neither a value nor a nil"
        );
    }

    #[test]
    fn a_dropped_fetch_someone_joined_stays_registered_to_be_finished() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let keys = [k.clone()];
        let mut new = NewFlights::default();
        begin(&flights, &k, g.stamp(&k), &mut new);
        let Begun::Joined(..) = begin(&flights, &k, g.stamp(&k), &mut NewFlights::default()) else {
            panic!("expected to join");
        };
        let mine = new.batch().unwrap();
        assert!(flights.abandon(&keys, &mine), "the caller must finish it");
        assert_eq!(flights.len(), 1);
        assert!(!mine.abandoned.load(Ordering::Relaxed));
    }
}
