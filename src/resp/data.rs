//! GET and MGET through the cache.

use bytes::Bytes;

use super::encode::Reply;
use super::{Answer, Then, refused};
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

/// The refusal of a write without `--allow-writes`.
pub fn disabled(name: &str) -> Error {
    let message = format!("{name} is disabled: start the proxy with --allow-writes");
    Error::redis("ERR", message)
}
