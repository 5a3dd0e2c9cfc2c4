//! GET and MGET through the cache; a plain SET written through it (with
//! `--allow-writes`).

use bytes::Bytes;

use super::encode::Reply;
use super::{Answer, Then, ok, refused};
use crate::app::{self, App};
use crate::error::Error;
use crate::lookup::Found;
use crate::metrics::Outcome;

pub async fn get(app: &App, key: Bytes) -> Answer {
    get_answer(app.lookup.get(key).await)
}

/// The answer to one GET.
pub fn get_answer(found: Result<Found, Error>) -> Answer {
    let outcome = app::outcome(&found);
    match found {
        Ok(Found { value: Some(v), .. }) => (Reply::Bulk(v), outcome, Then::Continue),
        Ok(Found { value: None, .. }) => (Reply::Null, outcome, Then::Continue),
        Err(e) => refused(&e),
    }
}

/// MGET's values, one reply each, and how it ended; or the error that
/// answers it instead. The caller writes them as an array, a piece at a
/// time.
pub async fn mget_each(app: &App, keys: &[Bytes]) -> Result<(Vec<Reply>, Outcome), Answer> {
    let found = app.lookup.get_many(keys).await;
    let outcome = app::outcome_of_many(&found);
    match found {
        Ok(found) => {
            let values = found
                .into_iter()
                .map(|f| f.value.map_or(Reply::Null, Reply::Bulk))
                .collect();
            Ok((values, outcome))
        }
        Err(e) => Err(refused(&e)),
    }
}

/// A plain `SET key value`: written through the cache, which keeps the
/// value fresh (SET with options is forwarded like any other write).
pub async fn set(app: &App, args: Vec<Bytes>) -> Answer {
    if !app.allow_writes {
        return refused(&disabled("SET"));
    }
    match app.lookup.set(args[1].clone(), args[2].clone()).await {
        Ok(()) => ok(Reply::ok()),
        Err(e) => refused(&e),
    }
}

/// The refusal of a write without `--allow-writes`.
pub fn disabled(name: &str) -> Error {
    let message = format!("{name} is disabled: start the proxy with --allow-writes");
    Error::redis("ERR", message)
}
