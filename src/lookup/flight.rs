//! Single flight: one Redis GET per key in flight, however many lookups
//! miss on it at once.
//!
//! A flight is a `watch` channel that the lookup which started it fills
//! with the outcome, fetching in its own task. It is registered under the [`Stamp`] its key had when it
//! started, and only lookups whose key still has that stamp join it: a
//! lookup that starts after a write or an invalidation of its key never
//! gets an answer read before it. The fetch holds a [`FlightGuard`] that
//! unregisters its flights however it ends, and only its own (a newer
//! flight may have replaced one of them). If it ends without an answer (its
//! client hung up and the fetch was dropped), the lookups that joined it
//! ask again rather than fail.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::Found;
use super::Source;
use super::generation::Stamp;
use crate::error::Error;

/// What a fetch produced for one key: the value, or None if Redis has no
/// such key.
pub type Outcome = Result<Option<Bytes>, Error>;

/// The receiving end of a flight: `None` until the fetch has answered.
pub type Flight = watch::Receiver<Option<Outcome>>;

/// The sending end, held by the fetch task.
pub type FlightSender = watch::Sender<Option<Outcome>>;

struct InFlight {
    stamp: Stamp,
    flight: Flight,
}

/// The flights in progress, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<Bytes, InFlight>>,
}

/// What [`Flights::join_or_start`] decided.
pub enum Begun {
    /// A flight under the same stamp was already fetching this key.
    Joined(Flight),
    /// `found` said the key was cached after all.
    Found(Found),
    /// A new flight: the caller must fetch and answer through the sender.
    Started(FlightSender, Flight),
}

impl Flights {
    /// Joins the flight fetching `key` under `stamp`, or starts one. Before
    /// starting, `cached` is asked once more under the flights' lock: a
    /// flight that finished since the caller's first look at the cache has
    /// inserted its value, and a second GET would be wasted.
    pub fn join_or_start(&self, key: &Bytes, stamp: Stamp, cached: impl FnOnce() -> Option<Found>) -> Begun {
        let mut map = self.map.lock();
        if let Some(f) = map.get(key)
            && f.stamp == stamp
        {
            return Begun::Joined(f.flight.clone());
        }
        if let Some(found) = cached() {
            return Begun::Found(found);
        }
        let (tx, rx) = watch::channel(None);
        let entry = InFlight {
            stamp,
            flight: rx.clone(),
        };
        map.insert(key.clone(), entry);
        Begun::Started(tx, rx)
    }

    /// Unregisters the flights `keys`/`mine`, where they are still the
    /// registered ones.
    fn finish(&self, keys: &[Bytes], mine: &[Flight]) {
        let mut map = self.map.lock();
        for (key, mine) in keys.iter().zip(mine) {
            if map.get(key).is_some_and(|f| f.flight.same_channel(mine)) {
                map.remove(key);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Unregisters a fetch task's flights when dropped, panics included, so a
/// key is never left joined to a flight that will not answer.
pub struct FlightGuard<'a> {
    flights: &'a Flights,
    keys: &'a [Bytes],
    mine: Vec<Flight>,
}

impl<'a> FlightGuard<'a> {
    pub fn new(flights: &'a Flights, keys: &'a [Bytes], senders: &[FlightSender]) -> Self {
        FlightGuard {
            flights,
            keys,
            mine: senders.iter().map(|tx| tx.subscribe()).collect(),
        }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.flights.finish(self.keys, &self.mine);
    }
}

/// One key of a lookup: answered already, or waiting on a flight.
pub enum Slot {
    Ready(Found),
    Waiting(Flight),
}

impl Slot {
    /// The answer, or None if the flight was abandoned before it answered
    /// (the client whose task ran it hung up): then ask again.
    pub async fn wait(self) -> Option<Result<Found, Error>> {
        match self {
            Slot::Ready(found) => Some(Ok(found)),
            Slot::Waiting(mut flight) => {
                let outcome = flight.wait_for(Option::is_some).await.ok()?.clone()?;
                Some(outcome.map(|value| Found {
                    value,
                    source: Source::Miss,
                }))
            }
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

    fn start(flights: &Flights, k: &Bytes, stamp: Stamp) -> (FlightSender, Flight) {
        match flights.join_or_start(k, stamp, || None) {
            Begun::Started(tx, rx) => (tx, rx),
            _ => panic!("expected a new flight"),
        }
    }

    #[tokio::test]
    async fn a_second_miss_under_the_same_stamp_joins_and_shares_the_answer() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let (tx, first) = start(&flights, &k, g.stamp(&k));
        let Begun::Joined(second) = flights.join_or_start(&k, g.stamp(&k), || None) else {
            panic!("expected to join");
        };
        tx.send(Some(Ok(Some(key("v"))))).unwrap();
        for flight in [first, second] {
            let found = Slot::Waiting(flight).wait().await.unwrap().unwrap();
            assert_eq!(found.value, Some(key("v")));
        }
    }

    #[test]
    fn a_miss_after_its_key_was_bumped_starts_its_own_flight() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let (_tx, old) = start(&flights, &k, g.stamp(&k));
        g.bump(&k);
        let (_tx2, new) = start(&flights, &k, g.stamp(&k));
        assert!(!old.same_channel(&new));
        g.bump_all();
        let (_tx3, newer) = start(&flights, &k, g.stamp(&k));
        assert!(!new.same_channel(&newer));
    }

    #[test]
    fn a_value_cached_meanwhile_is_found_instead_of_starting_a_flight() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let found = Found {
            value: Some(key("v")),
            source: Source::Miss,
        };
        let answer = flights.join_or_start(&k, g.stamp(&k), || Some(found.clone()));
        assert!(matches!(answer, Begun::Found(f) if f == found));
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn the_guard_removes_only_its_own_flights() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let keys = [k.clone()];
        let (old_tx, _) = start(&flights, &k, g.stamp(&k));
        let old_guard = FlightGuard::new(&flights, &keys, std::slice::from_ref(&old_tx));
        g.bump(&k);
        let (new_tx, _) = start(&flights, &k, g.stamp(&k));
        drop(old_guard);
        assert_eq!(flights.len(), 1, "the newer flight must stay registered");
        let Begun::Joined(_) = flights.join_or_start(&k, g.stamp(&k), || None) else {
            panic!("the newer flight is still joinable");
        };
        drop(FlightGuard::new(&flights, &keys, std::slice::from_ref(&new_tx)));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_flight_abandoned_without_an_answer_says_so_rather_than_miss() {
        let (g, flights, k) = (Generations::new(), Flights::default(), key("k"));
        let (tx, rx) = start(&flights, &k, g.stamp(&k));
        drop(tx);
        assert!(
            Slot::Waiting(rx).wait().await.is_none(),
            "neither a value nor a nil"
        );
    }
}
