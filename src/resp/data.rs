//! GET and MGET through the cache; SET and DEL written through to Redis
//! (with `--allow-writes`).

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

/// `SET key value [options]`: a plain SET leaves the value fresh in the
/// cache; with options (EX, NX, GET, …) Redis decides, and our copy is
/// dropped.
pub async fn set(app: &App, args: Vec<Bytes>) -> Answer {
    if !app.allow_writes {
        return disabled("SET");
    }
    if args.len() == 3 {
        return match app.lookup.set(args[1].clone(), args[2].clone()).await {
            Ok(()) => ok(Reply::ok()),
            Err(e) => refused(&e),
        };
    }
    let key = vec![args[1].clone()];
    forwarded(app.lookup.write_through(args, key).await)
}

/// `DEL key …`, the keys dropped from the cache.
pub async fn del(app: &App, args: Vec<Bytes>) -> Answer {
    if !app.allow_writes {
        return disabled("DEL");
    }
    let keys = args[1..].to_vec();
    forwarded(app.lookup.write_through(args, keys).await)
}

fn disabled(name: &str) -> Answer {
    let message = format!("{name} is disabled: start the proxy with --allow-writes");
    refused(&Error::redis("ERR", message))
}

fn forwarded(result: Result<redis::Value, Error>) -> Answer {
    match result {
        Ok(value) => ok(from_redis(value)),
        Err(e) => refused(&e),
    }
}

/// A reply from Redis, passed on to the client.
fn from_redis(v: redis::Value) -> Reply {
    use redis::Value as V;
    match v {
        V::Nil => Reply::Null,
        V::Int(n) => Reply::Int(n),
        V::BulkString(b) => Reply::Bulk(b.into()),
        V::Okay => Reply::ok(),
        V::SimpleString(s) => Reply::Simple(s.into()),
        V::Array(items) | V::Set(items) => Reply::Array(items.into_iter().map(from_redis).collect()),
        V::Map(pairs) => Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (from_redis(k), from_redis(v)))
                .collect(),
        ),
        V::ServerError(e) => Reply::error(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_string(),
        }),
        other => Reply::bulk(format!("{other:?}")),
    }
}
