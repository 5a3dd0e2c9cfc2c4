//! Commands that go to Redis, and the state that decides where.
//!
//! - Refused first, changing nothing: `--deny-commands`, and writes
//!   without `--allow-writes`. Inside MULTI a refusal makes EXEC answer
//!   `-EXECABORT` (the queued commands are discarded), as Redis does with a
//!   command it refuses while queuing.
//! - Plain commands go on the shared connection of the client's protocol
//!   and database, a run of them pipelined as one batch (one round trip).
//! - A client gets a connection of its own ([`Pin`]) while it has a
//!   transaction open or keys watched, for a blocking command (no proxy
//!   timeout; the client hanging up closes it), while subscribed (replies
//!   and messages streamed as Redis sends them), and from its first WAIT
//!   on (so its writes and WAITs share a connection). It is given back
//!   when the state ends.
//! - A write's reply waits for the invalidations it caused
//!   ([`crate::forward::Forwarder::after_write`]), so a later read through
//!   the proxy never sees what it replaced.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::command::Command;
use super::conn::Conn;
use super::data::disabled;
use super::encode::{Reply, encode};
use super::{Then, ok, refused};
use crate::cluster::slot_of;
use crate::commands::{Class, Table};
use crate::config::Invalidation;
use crate::error::Error;
use crate::forward::{Node, Pinned, pack, reply, route};
use crate::metrics::Outcome;

/// A client's own backend connection and why it is held.
pub struct Pin {
    conn: Pinned,
    multi: Option<Multi>,
    watching: bool,
    /// Used WAIT: its writes and WAITs stay on this connection.
    waits: bool,
    subs: Option<Subs>,
}

/// A transaction being queued.
#[derive(Default)]
struct Multi {
    /// A command was refused while queuing: EXEC aborts.
    dirty: bool,
    /// What the queued writes touch, for `after_write`.
    effect: Option<Effect>,
}

/// What writes touched: the keys they name (None: not knowable), and
/// whether one swapped databases.
#[derive(Clone)]
struct Effect {
    keys: Option<Vec<Bytes>>,
    swapdb: bool,
}

impl Default for Effect {
    /// Nothing touched yet.
    fn default() -> Self {
        Effect {
            keys: Some(Vec::new()),
            swapdb: false,
        }
    }
}

impl Effect {
    /// What one write touches.
    fn of(class: &Class<'_>, args: &[Bytes]) -> Effect {
        let mut effect = Effect::default();
        effect.add(class, args);
        effect
    }

    fn add(&mut self, class: &Class<'_>, args: &[Bytes]) {
        let name = class.info.map_or("", |i| i.name.as_str());
        self.swapdb |= name == "swapdb";
        let keys = class.info.and_then(|info| {
            // A script may touch keys it did not declare; a command
            // without keys (FLUSHDB, SWAPDB) touches what it likes.
            if matches!(name, "eval" | "evalsha" | "fcall") {
                return None;
            }
            info.keys(args).filter(|k| !k.is_empty())
        });
        match (&mut self.keys, keys) {
            (Some(all), Some(keys)) => all.extend(keys.into_iter().cloned()),
            (all, _) => *all = None,
        }
    }
}

/// In front of a cluster: a MULTI whose master is not known yet. The
/// commands without keys queued since are sent, after MULTI, to the master
/// of the first keyed command (or any master at EXEC).
#[derive(Default)]
pub struct Queued {
    commands: Vec<Vec<Bytes>>,
    /// A command was refused while queuing: EXEC aborts.
    dirty: bool,
}

/// Subscriptions, as sent (Redis runs commands in order, so what was sent
/// is what it will have done), and the replies still owed to commands.
#[derive(Default)]
struct Subs {
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shards: HashSet<Bytes>,
    /// Per command sent while subscribed, the replies it will get.
    owed: VecDeque<usize>,
}

impl Pin {
    /// Whether the client's reads must go to this connection (in order,
    /// inside its transaction or subscription) rather than to the cache.
    pub fn holds_reads(&self) -> bool {
        self.multi.is_some() || self.watching || self.subs.is_some()
    }

    fn needed(&self) -> bool {
        self.holds_reads() || self.waits
    }

    pub fn streaming(&self) -> bool {
        self.subs.is_some()
    }

    /// For CLIENT INFO: commands queued (-1: no transaction), keys watched.
    pub fn info(&self) -> (i64, i64) {
        (if self.multi.is_some() { 0 } else { -1 }, self.watching as i64)
    }

    /// A command was refused: inside a transaction, EXEC must abort.
    pub fn refused_in_multi(&mut self) {
        if let Some(multi) = self.multi.as_mut() {
            multi.dirty = true;
        }
    }

    /// The next frame from Redis while subscribed. Cancel-safe.
    pub async fn frame(&mut self) -> Result<Bytes, Error> {
        self.conn.reply().await
    }
}

/// What a forwarded command needs, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Subscribe,
    Wait,
    Blocking,
}

fn kind_of(name: &str, class: &Class<'_>) -> Kind {
    match name {
        "multi" => Kind::Multi,
        "exec" => Kind::Exec,
        "discard" => Kind::Discard,
        "watch" => Kind::Watch,
        "unwatch" => Kind::Unwatch,
        "subscribe" | "psubscribe" | "ssubscribe" => Kind::Subscribe,
        "wait" | "waitaof" => Kind::Wait,
        _ if class.blocking => Kind::Blocking,
        _ => Kind::Plain,
    }
}

/// The metric label of a command: its name in the table, or `other`.
fn label(class: &Class<'_>) -> String {
    match class.info {
        Some(info) => info.name.split('|').next().unwrap_or("other").to_string(),
        None => "other".into(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Answers a command that goes to Redis (and the plain ones pending
    /// right after it, in the same round trip).
    pub(super) async fn forward(&mut self, args: Vec<Bytes>, start: Instant) -> Then {
        let table = match self.app.forwarder.table().await {
            Ok(table) => table,
            Err(e) => return self.answer_refusal(&e, "other", start),
        };
        let class = table.classify(&args);
        let label = label(&class);
        if !self.session.authed {
            let e = unauthenticated(&class, &args);
            return self.answer_refusal(&e, &label, start);
        }
        if let Some(e) = self.refusal(&args, &class) {
            tracing::debug!(target: "resp", command = %label, error = %e, "refused");
            if let Some(multi) = self.session.pin.as_mut().and_then(|p| p.multi.as_mut()) {
                multi.dirty = true;
            }
            if let Some(queued) = self.session.queued.as_mut() {
                queued.dirty = true;
            }
            return self.answer_refusal(&e, &label, start);
        }
        if self.session.queued.is_some()
            && let Some(then) = self.cluster_multi(&args, &class, &label, start).await
        {
            return then;
        }
        if self.session.pin.as_ref().is_some_and(Pin::streaming) {
            return self.stream(args, &class).await;
        }
        let name = class.info.map_or("", |i| i.name.as_str());
        let in_multi = self.session.pin.as_ref().is_some_and(|p| p.multi.is_some());
        let kind = kind_of(name, &class);
        if in_multi && let Some(e) = self.other_master(&args, &class) {
            // The transaction's master does not serve this key.
            self.session.pin.as_mut().map(Pin::refused_in_multi);
            return self.answer_refusal(&e, &label, start);
        }
        if kind == Kind::Multi && std::mem::take(&mut self.session.watch_lost) {
            // The WATCH it follows was lost with its connection: what was
            // watched may have changed unseen, so the transaction aborts.
            if let Some(pin) = self.session.pin.take() {
                self.app.forwarder.unpin(pin.conn, false);
            }
            self.session.queued = Some(Queued {
                dirty: true,
                ..Queued::default()
            });
            self.app.metrics.command(&label, "ok");
            return self.reply(ok(Reply::ok()), start);
        }
        if kind == Kind::Unwatch {
            self.session.watch_lost = false;
        }
        if kind == Kind::Multi && self.session.pin.is_none() && self.app.forwarder.topology().is_some() {
            // Its master is the first key's: known later.
            self.session.queued = Some(Queued::default());
            self.app.metrics.command(&label, "ok");
            return self.reply(ok(Reply::ok()), start);
        }
        match kind {
            Kind::Exec if in_multi => return self.exec(args, &label, start).await,
            Kind::Discard if in_multi => {
                let then = self.on_pinned(args, &label, start, false).await;
                if let Some(pin) = self.session.pin.as_mut() {
                    pin.multi = None;
                    pin.watching = false;
                }
                self.release_if_done();
                return then;
            }
            // Inside MULTI everything is queued by Redis as it comes.
            _ if in_multi => {
                if class.write
                    && let Some(multi) = self.session.pin.as_mut().and_then(|p| p.multi.as_mut())
                {
                    multi
                        .effect
                        .get_or_insert_with(Effect::default)
                        .add(&class, &args);
                }
                return self.on_pinned(args, &label, start, false).await;
            }
            Kind::Multi | Kind::Watch | Kind::Subscribe | Kind::Wait | Kind::Blocking => {
                if let Err(e) = self.pin(&args, &class).await {
                    tracing::debug!(target: "resp", command = %label, error = %e, "refused");
                    return self.answer_refusal(&e, &label, start);
                }
            }
            Kind::Unwatch if self.session.pin.is_some() => {}
            _ => {}
        }
        match kind {
            Kind::Multi => {
                let then = self.on_pinned(args, &label, start, false).await;
                if let Some(pin) = self.session.pin.as_mut()
                    && self.last_reply_ok
                {
                    pin.multi = Some(Multi::default());
                }
                self.release_if_done();
                then
            }
            Kind::Watch => {
                let then = self.on_pinned(args, &label, start, false).await;
                if let Some(pin) = self.session.pin.as_mut()
                    && self.last_reply_ok
                {
                    pin.watching = true;
                }
                self.release_if_done();
                then
            }
            Kind::Unwatch if self.session.pin.is_some() => {
                let then = self.on_pinned(args, &label, start, false).await;
                if let Some(pin) = self.session.pin.as_mut() {
                    pin.watching = false;
                }
                self.release_if_done();
                then
            }
            Kind::Subscribe => {
                if let Some(pin) = self.session.pin.as_mut() {
                    pin.subs = Some(Subs::default());
                }
                self.stream(args, &class).await
            }
            Kind::Wait => {
                let first = self.session.pin.as_ref().is_some_and(|p| !p.waits);
                if first && let Some(pin) = self.session.pin.as_mut() {
                    pin.waits = true;
                    // WAIT counts the replicas that have this connection's
                    // last write. A write that always propagates brings that
                    // up to every write Redis took before it, the client's
                    // earlier ones on shared connections included.
                    let mut packed = BytesMut::new();
                    pack(&[&b"PUBLISH"[..], b"__redis-proxy__:wait", b""], &mut packed);
                    let sent = pin.conn.send(&packed).await;
                    if sent.is_err() || pin.conn.reply().await.is_err() {
                        self.lose_pin();
                        return self.answer_refusal(
                            &Error::unavailable("pinned connection lost"),
                            &label,
                            start,
                        );
                    }
                }
                self.on_pinned(args, &label, start, true).await
            }
            // In front of a cluster, a command for another master than the
            // one holding the client's WATCH or WAIT: on a shared
            // connection (a blocking one cannot be: CROSSSLOT).
            _ if self.session.pin.is_some() && self.pinned_elsewhere(&args, &class) => {
                if kind == Kind::Blocking {
                    let e = Error::redis("CROSSSLOT", "Keys in request don't hash to the same slot");
                    return self.answer_refusal(&e, &label, start);
                }
                self.forward_batch(args, &table, start).await
            }
            // A blocking command, or anything while the client holds its
            // own connection (WATCH, WAIT).
            _ if kind == Kind::Blocking || self.session.pin.is_some() => {
                let effect = class.write.then(|| Effect::of(&class, &args));
                let select = (name == "select").then(|| args.get(1).cloned()).flatten();
                let then = self.on_pinned(args, &label, start, kind == Kind::Blocking).await;
                if let Some(effect) = effect {
                    self.app.forwarder.after_write(effect.keys, effect.swapdb).await;
                }
                // SELECT on the client's own connection moves the client.
                if let Some(db) = select.and_then(|db| std::str::from_utf8(&db).ok()?.parse().ok())
                    && self.last_reply_ok
                    && let Some(pin) = self.session.pin.as_mut()
                {
                    self.session.db = db;
                    pin.conn.set_db(db);
                }
                self.release_if_done();
                then
            }
            _ => self.forward_batch(args, &table, start).await,
        }
    }

    /// Why the proxy refuses `args`, if it does.
    fn refusal(&self, args: &[Bytes], class: &Class<'_>) -> Option<Error> {
        if let Some(name) = self.app.deny.denies(args) {
            return Some(Error::redis(
                "ERR",
                format!("'{name}' is denied by this proxy (--deny-commands)"),
            ));
        }
        if class.write && !self.app.allow_writes {
            let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
            return Some(disabled(&name));
        }
        None
    }

    fn answer_refusal(&mut self, e: &Error, label: &str, start: Instant) -> Then {
        let answer = refused(e);
        self.app.metrics.command(label, "refused");
        self.reply(answer, start)
    }

    /// Takes a pinned connection if the client has none: in front of a
    /// cluster, to the master of the command's keys.
    async fn pin(&mut self, args: &[Bytes], class: &Class<'_>) -> Result<(), Error> {
        if self.session.pin.is_some() {
            return Ok(());
        }
        let node = self.master_of(args, class)?;
        self.pin_to(node).await
    }

    async fn pin_to(&mut self, node: Option<Node>) -> Result<(), Error> {
        let forwarder = &self.app.forwarder;
        let node = node.unwrap_or_else(|| forwarder.default_node());
        let conn = forwarder
            .pin_to(&node, self.session.protocol(), self.session.db)
            .await?;
        self.session.pin = Some(Pin {
            conn,
            multi: None,
            watching: false,
            waits: false,
            subs: None,
        });
        Ok(())
    }

    /// In front of a cluster, the master serving the command's keys (None:
    /// no keys, or not a cluster); keys of different slots are Redis's own
    /// CROSSSLOT error.
    fn master_of(&self, args: &[Bytes], class: &Class<'_>) -> Result<Option<Node>, Error> {
        let Some(topology) = self.app.forwarder.topology() else {
            return Ok(None);
        };
        let Some(keys) = class.info.and_then(|i| i.keys(args)).filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        let slot = slot_of(keys[0]);
        if keys.iter().any(|k| slot_of(k) != slot) {
            return Err(Error::redis(
                "CROSSSLOT",
                "Keys in request don't hash to the same slot",
            ));
        }
        match topology.map().owner(slot) {
            Some(node) => Ok(Some(Node::from(node.as_str()))),
            None => Err(Error::redis("CLUSTERDOWN", "Hash slot not served")),
        }
    }

    /// Inside a transaction on a cluster master: why the command cannot
    /// join it (its keys are served by another master), if so.
    fn other_master(&self, args: &[Bytes], class: &Class<'_>) -> Option<Error> {
        let pin = self.session.pin.as_ref()?;
        match self.master_of(args, class) {
            Err(e) => Some(e),
            Ok(Some(node)) if node != *pin.conn.node() => Some(Error::redis(
                "CROSSSLOT",
                "Keys in request don't hash to the same slot",
            )),
            Ok(_) => None,
        }
    }

    /// A command while a MULTI waits for its master (see [`Queued`]):
    /// None once the transaction has its connection (the command then goes
    /// on as inside any transaction), else the answer.
    async fn cluster_multi(
        &mut self,
        args: &[Bytes],
        class: &Class<'_>,
        label: &str,
        start: Instant,
    ) -> Option<Then> {
        let name = class.info.map_or("", |i| i.name.as_str());
        let keyed = class
            .info
            .and_then(|i| i.keys(args))
            .is_some_and(|k| !k.is_empty());
        match name {
            "discard" => {
                self.session.queued = None;
                self.app.metrics.command(label, "ok");
                return Some(self.reply(ok(Reply::ok()), start));
            }
            "multi" => {
                let e = Error::redis("ERR", "MULTI calls can not be nested");
                return Some(self.answer_refusal(&e, label, start));
            }
            "watch" => {
                let e = Error::redis("ERR", "WATCH inside MULTI is not allowed");
                return Some(self.answer_refusal(&e, label, start));
            }
            "exec" if self.session.queued.as_ref().is_some_and(|q| q.dirty) => {
                // Nothing of it was sent: it aborts here.
                self.session.queued = None;
                let e = Error::redis("EXECABORT", "Transaction discarded because of previous errors.");
                self.app.metrics.command(label, "error");
                return Some(self.reply(refused(&e), start));
            }
            "exec" => {}
            _ if !keyed || self.session.queued.as_ref().is_some_and(|q| q.dirty) => {
                let queued = self.session.queued.as_mut()?;
                queued.commands.push(args.to_vec());
                self.app.metrics.command(label, "ok");
                return Some(self.reply(ok(Reply::simple("QUEUED")), start));
            }
            _ => {}
        }
        let queued = self.session.queued.take()?;
        let node = match self.master_of(args, class) {
            Ok(node) => node,
            Err(e) => {
                self.session.queued = Some(Queued {
                    dirty: true,
                    ..queued
                });
                return Some(self.answer_refusal(&e, label, start));
            }
        };
        if let Err(e) = self.pin_to(node).await {
            self.session.queued = Some(Queued {
                dirty: true,
                ..queued
            });
            return Some(self.answer_refusal(&e, label, start));
        }
        // MULTI and what was queued, their replies (+OK, +QUEUED) already
        // given by the proxy.
        let table = self.app.forwarder.table_now();
        let mut multi = Multi {
            dirty: queued.dirty,
            effect: None,
        };
        let mut packed = BytesMut::new();
        pack(&[&b"MULTI"[..]], &mut packed);
        for command in &queued.commands {
            pack(command, &mut packed);
            if let Some(table) = &table {
                let class = table.classify(command);
                if class.write {
                    multi
                        .effect
                        .get_or_insert_with(Effect::default)
                        .add(&class, command);
                }
            }
        }
        let pin = self.session.pin.as_mut()?;
        let mut sent = pin.conn.send(&packed).await;
        for _ in 0..=queued.commands.len() {
            if sent.is_ok() {
                sent = pin.conn.reply().await.map(drop);
            }
        }
        if let Err(e) = sent {
            self.session.pin = None;
            self.session.queued = Some(Queued {
                dirty: true,
                ..Queued::default()
            });
            return Some(self.answer_refusal(&e, label, start));
        }
        pin.multi = Some(multi);
        None
    }

    /// The pinned connection is gone with whatever it held (lost, timed
    /// out, or its slot moved). A transaction it carried goes on here as
    /// one that must abort, so that no command after it runs outside it; a
    /// WATCH it carried makes the next transaction abort.
    fn lose_pin(&mut self) {
        if let Some(pin) = self.session.pin.take() {
            if pin.multi.is_some() {
                self.session.queued = Some(Queued {
                    dirty: true,
                    ..Queued::default()
                });
            } else if pin.watching {
                self.session.watch_lost = true;
            }
        }
    }

    /// In front of a cluster, outside a transaction: whether the command's
    /// keys belong to another master than the one the client is pinned to.
    fn pinned_elsewhere(&self, args: &[Bytes], class: &Class<'_>) -> bool {
        let Some(pin) = self.session.pin.as_ref() else {
            return false;
        };
        pin.multi.is_none()
            && !pin.streaming()
            && matches!(self.master_of(args, class), Ok(Some(node)) if node != *pin.conn.node())
    }

    /// Gives the pinned connection back once nothing needs it.
    fn release_if_done(&mut self) {
        if self.session.pin.as_ref().is_some_and(|p| !p.needed())
            && let Some(pin) = self.session.pin.take()
        {
            self.app.forwarder.unpin(pin.conn, true);
        }
    }

    /// Sends one command on the pinned connection and passes its reply on.
    /// `blocking`: no proxy timeout, and a client that hangs up meanwhile
    /// closes the connection (Redis then ends the command).
    async fn on_pinned(&mut self, args: Vec<Bytes>, label: &str, start: Instant, blocking: bool) -> Then {
        let mut packed = BytesMut::new();
        pack(&args, &mut packed);
        let resend = (blocking && self.app.forwarder.topology().is_some()).then(|| args.clone());
        let timeout = if blocking {
            None
        } else {
            self.app.forwarder.timeout
        };
        let Some(pin) = self.session.pin.as_mut() else {
            return self.answer_refusal(&Error::internal("no pinned connection"), label, start);
        };
        if blocking {
            // A command that may wait for ever must not hold a
            // --max-parallel slot meanwhile (with --max-parallel 1, one
            // BLPOP would stop every other client).
            self.slot = None;
        }
        let (stream, input) = (&mut self.stream, &mut self.input);
        let result = async {
            pin.conn.send(&packed).await?;
            if !blocking {
                return match timeout {
                    Some(limit) => tokio::time::timeout(limit, pin.conn.reply())
                        .await
                        .unwrap_or(Err(Error::ForwardTimeout(limit))),
                    None => pin.conn.reply().await,
                };
            }
            loop {
                tokio::select! {
                    reply = pin.conn.reply() => return reply,
                    read = stream.read_buf(input) => match read {
                        Ok(0) | Err(_) => return Err(Error::client(499, "the client hung up")),
                        Ok(_) => {}
                    },
                }
            }
        }
        .await;
        // In front of a cluster: the slot moved while the connection was
        // pinned. Its state (a transaction, WATCH) is dropped with it; a
        // blocking command is sent again to the slot's new master.
        if let Ok(reply) = &result
            && let Some((_, node)) = route::redirected(reply)
        {
            let held = self
                .session
                .pin
                .as_ref()
                .is_some_and(|p| p.multi.is_some() || p.watching);
            self.lose_pin();
            if let Some(topology) = self.app.forwarder.topology() {
                topology.refresh_soon();
            }
            if let Some(args) = resend
                && !held
                && self.redirects < 3
            {
                self.redirects += 1;
                let then = match self.pin_to(Some(Node::from(node.as_str()))).await {
                    Ok(()) => Box::pin(self.on_pinned(args, label, start, blocking)).await,
                    Err(e) => self.answer_refusal(&e, label, start),
                };
                self.redirects = 0;
                return then;
            }
            self.last_reply_ok = false;
            self.app.metrics.command(label, "error");
            let e = Error::redis(
                "ERR",
                "the key's slot moved to another master meanwhile (a transaction or WATCH on it is discarded); try again",
            );
            return self.reply(refused(&e), start);
        }
        match result {
            Ok(reply) => {
                self.last_reply_ok = !reply::is_error(&reply);
                self.app
                    .metrics
                    .command(label, if self.last_reply_ok { "ok" } else { "error" });
                self.output.put_raw(&reply);
                self.app.resp_metrics.record(Outcome::Ok, start);
                Then::Continue
            }
            Err(Error::Client { status: 499, .. }) => {
                // The connection's state is unknown: close it.
                self.session.pin = None;
                Then::Close
            }
            Err(e) => {
                // A lost or timed-out connection's state is unknown: close
                // it; its transaction, WATCH or subscriptions are gone.
                self.lose_pin();
                self.last_reply_ok = false;
                self.app.metrics.command(label, "backend_error");
                self.reply(refused(&e), start)
            }
        }
    }

    /// EXEC: the transaction runs, or aborts if a command was refused
    /// while it was queued; its writes' invalidations are waited for.
    async fn exec(&mut self, args: Vec<Bytes>, label: &str, start: Instant) -> Then {
        let Some(pin) = self.session.pin.as_mut() else {
            return Then::Continue;
        };
        let multi = pin.multi.take().unwrap_or_default();
        pin.watching = false;
        let then = if multi.dirty {
            let mut packed = BytesMut::new();
            pack(&[&b"DISCARD"[..]], &mut packed);
            let discarded = match pin.conn.send(&packed).await {
                Ok(()) => pin.conn.reply().await.map(drop),
                Err(e) => Err(e),
            };
            if discarded.is_err() {
                self.session.pin = None;
            }
            self.app.metrics.command(label, "error");
            let e = Error::redis("EXECABORT", "Transaction discarded because of previous errors.");
            self.reply(refused(&e), start)
        } else {
            let then = self.on_pinned(args, label, start, false).await;
            if let Some(effect) = multi.effect {
                self.app.forwarder.after_write(effect.keys, effect.swapdb).await;
            }
            then
        };
        self.release_if_done();
        then
    }

    /// Plain commands on the shared connection: this one and the plain ones
    /// pending after it, in one batch; writes' replies wait for their
    /// invalidations.
    async fn forward_batch(&mut self, first: Vec<Bytes>, table: &Table, start: Instant) -> Then {
        let mut packed = BytesMut::new();
        let mut labels = Vec::new();
        let mut effect: Option<Effect> = None;
        // In front of a cluster: where each command goes.
        let map = self.app.forwarder.topology().map(|t| t.map());
        let mut plans = Vec::new();
        let mut take = |args: &[Bytes], class: &Class<'_>| {
            match &map {
                Some(map) => plans.push(route::plan(args, class, map)),
                None => pack(args, &mut packed),
            }
            labels.push(label(class));
            if class.write {
                effect.get_or_insert_with(Effect::default).add(class, args);
            }
        };
        take(&first, &table.classify(&first));
        let mut count = 1;
        while count < 512
            && let Some(Ok(Command::Forward(next))) = self.pending.front()
        {
            let class = table.classify(next);
            let name = class.info.map_or("", |i| i.name.as_str());
            if kind_of(name, &class) != Kind::Plain || self.refusal(next, &class).is_some() {
                break;
            }
            take(next, &class);
            count += 1;
            self.pending.pop_front();
        }
        let writes = effect.is_some();
        let forwarder = self.app.forwarder.clone();
        let (proto, db) = (self.session.protocol(), self.session.db);
        let send = async move {
            let replies: Vec<Result<Bytes, Error>> = if plans.is_empty() {
                match forwarder.send(proto, db, packed.freeze(), count).await {
                    Ok(replies) => replies.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e); count],
                }
            } else {
                forwarder.run_plans(proto, &plans).await
            };
            if let Some(effect) = effect {
                forwarder.after_write(effect.keys, effect.swapdb).await;
            }
            Ok::<_, Error>(replies)
        };
        // Without tracking, a write's bookkeeping must finish even if its
        // client hangs up (with tracking, Redis's own invalidation would
        // follow anyway).
        let replies = if writes && self.app.reads.mode() == Invalidation::Ttl {
            tokio::spawn(send)
                .await
                .unwrap_or_else(|e| Err(Error::internal(format!("the write task failed: {e}"))))
        } else {
            send.await
        };
        match replies {
            Ok(replies) => {
                let took = start.elapsed();
                let mut outcomes = [0u64; Outcome::ALL.len()];
                for (reply, label) in replies.iter().zip(&labels) {
                    match reply {
                        Ok(reply) => {
                            let ok = !reply::is_error(reply);
                            self.app.metrics.command(label, if ok { "ok" } else { "error" });
                            self.output.put_raw(reply);
                            outcomes[Outcome::Ok as usize] += 1;
                        }
                        Err(e) => {
                            self.app.metrics.command(label, "backend_error");
                            encode(&Reply::error(e.resp_line()), self.session.proto, &mut self.output);
                            outcomes[Outcome::BackendError as usize] += 1;
                        }
                    }
                }
                self.app.resp_metrics.record_run(&outcomes, took);
                Then::Continue
            }
            Err(e) => {
                for label in &labels {
                    self.app.metrics.command(label, "backend_error");
                    encode(&Reply::error(e.resp_line()), self.session.proto, &mut self.output);
                }
                let mut outcomes = [0u64; Outcome::ALL.len()];
                outcomes[Outcome::BackendError as usize] = labels.len() as u64;
                self.app.resp_metrics.record_run(&outcomes, start.elapsed());
                Then::Continue
            }
        }
    }

    /// While subscribed: sends the command and notes the replies it is
    /// owed; replies and messages are passed on as they come
    /// ([`Conn::on_frame`]).
    async fn stream(&mut self, args: Vec<Bytes>, class: &Class<'_>) -> Then {
        let name = class.info.map_or("", |i| i.name.as_str()).to_string();
        let label = label(class);
        let Some(pin) = self.session.pin.as_mut() else {
            return Then::Continue;
        };
        let subs = pin.subs.get_or_insert_with(Subs::default);
        let owed = subs.expect(&name, &args[1..]);
        let mut packed = BytesMut::new();
        pack(&args, &mut packed);
        if let Err(e) = pin.conn.send(&packed).await {
            self.session.pin = None;
            self.app.metrics.command(&label, "backend_error");
            return self.reply(refused(&e), Instant::now());
        }
        subs.owed.push_back(owed);
        self.app.metrics.command(&label, "ok");
        Then::Continue
    }

    /// A frame from the subscribed connection: passed on; a reply settles
    /// what its command was owed; when nothing is subscribed or owed any
    /// more, the connection is given back.
    pub(super) fn on_frame(&mut self, frame: Bytes) {
        self.output.put_raw(&frame);
        let Some(subs) = self.session.pin.as_mut().and_then(|p| p.subs.as_mut()) else {
            return;
        };
        let message = matches!(
            first_word(&frame).map(|w| w.to_ascii_lowercase()).as_deref(),
            Some(b"message" | b"pmessage" | b"smessage")
        );
        if !message && let Some(owed) = subs.owed.front_mut() {
            // An error answers the whole command.
            if reply::is_error(&frame) || *owed <= 1 {
                subs.owed.pop_front();
            } else {
                *owed -= 1;
            }
        }
        if subs.owed.is_empty()
            && subs.channels.is_empty()
            && subs.patterns.is_empty()
            && subs.shards.is_empty()
        {
            if let Some(pin) = self.session.pin.as_mut() {
                pin.subs = None;
            }
            self.release_if_done();
        }
    }
}

impl Subs {
    /// Notes what a command sent while subscribed does to the
    /// subscriptions, and how many replies it will get.
    fn expect(&mut self, name: &str, args: &[Bytes]) -> usize {
        let set = match name {
            "subscribe" | "unsubscribe" => &mut self.channels,
            "psubscribe" | "punsubscribe" => &mut self.patterns,
            "ssubscribe" | "sunsubscribe" => &mut self.shards,
            _ => return 1,
        };
        if name.ends_with("unsubscribe") {
            if args.is_empty() {
                let n = set.len().max(1);
                set.clear();
                return n;
            }
            for a in args {
                set.remove(a);
            }
        } else {
            set.extend(args.iter().cloned());
        }
        args.len().max(1)
    }
}

/// The first element of an array or push, if it is a string.
fn first_word(frame: &[u8]) -> Option<&[u8]> {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return None;
    }
    let header_end = frame.iter().position(|&b| b == b'\n')? + 1;
    let rest = &frame[header_end..];
    match rest.first()? {
        b'$' => {
            let len_end = rest.iter().position(|&b| b == b'\r')?;
            let n: usize = std::str::from_utf8(&rest[1..len_end]).ok()?.parse().ok()?;
            rest.get(len_end + 2..len_end + 2 + n)
        }
        b'+' => {
            let end = rest.iter().position(|&b| b == b'\r')?;
            Some(&rest[1..end])
        }
        _ => None,
    }
}

/// What an unauthenticated client is told: an unknown command or a wrong
/// number of arguments first, as Redis does, then NOAUTH.
fn unauthenticated(class: &Class<'_>, args: &[Bytes]) -> Error {
    match class.info {
        None => Error::redis("ERR", unknown_command(args)),
        Some(info) if !arity_fits(info.arity, args.len()) => Error::redis(
            "ERR",
            format!("wrong number of arguments for '{}' command", info.name),
        ),
        Some(_) => Error::redis("NOAUTH", "Authentication required."),
    }
}

fn arity_fits(arity: i64, n: usize) -> bool {
    if arity >= 0 {
        n == arity as usize
    } else {
        n >= arity.unsigned_abs() as usize
    }
}

/// `unknown command 'NAME', with args beginning with: 'a' 'b' `, as Redis
/// says it.
fn unknown_command(args: &[Bytes]) -> String {
    let mut msg = format!(
        "unknown command '{}', with args beginning with: ",
        super::command::printable(&args[0])
    );
    for a in args[1..].iter().take(8) {
        msg.push_str(&format!("'{}' ", super::command::printable(a)));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_of_a_message() {
        assert_eq!(
            first_word(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
            Some(&b"message"[..])
        );
        assert_eq!(
            first_word(b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
            Some(&b"subscribe"[..])
        );
        assert_eq!(first_word(b"+PONG\r\n"), None);
    }

    #[test]
    fn replies_owed_while_subscribed() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let mut subs = Subs::default();
        assert_eq!(subs.expect("subscribe", &[b("a"), b("b")]), 2);
        assert_eq!(subs.expect("psubscribe", &[b("p*")]), 1);
        assert_eq!(subs.expect("unsubscribe", &[]), 2);
        assert_eq!(
            subs.expect("unsubscribe", &[]),
            1,
            "nothing subscribed: one reply"
        );
        assert_eq!(subs.expect("punsubscribe", &[b("p*")]), 1);
        assert_eq!(subs.expect("ping", &[]), 1);
        assert!(subs.channels.is_empty() && subs.patterns.is_empty());
    }
}
