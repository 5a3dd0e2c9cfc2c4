//! One RESP connection: read into a buffer, take every complete command
//! from it, answer them in order into one output buffer, write it once
//! (pipelining). A malformed frame gets `-ERR Protocol error: …` and the
//! connection is closed, as Redis does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use super::encode::{Output, Proto, Reply, array_header, encode};
use super::parse::{Frame, Limits, Progress, parse_frame};
use super::{Answer, Session, Then, data, execute};
use crate::app::{AUTH_DEADLINE, App, WRITE_DEADLINE};
use crate::error::Error;
use crate::lookup::Found;
use crate::metrics::{Disconnect, Outcome};

/// Unanswered input a client may have buffered, as Redis's
/// client-query-buffer-limit: beyond it the connection is closed.
pub const MAX_INPUT: usize = 64 * 1024 * 1024;

/// Output written before answering more, so that a client pipelining
/// requests for large values without reading cannot grow it without bound.
const FLUSH_AT: usize = 64 * 1024;

/// Most commands taken from the buffer before they are answered.
const MAX_BATCH: usize = 1024;

/// Most pipelined GETs looked up together: bounds the answers produced
/// between two checks of the output's size.
const MAX_GET_RUN: usize = 64;

/// A connection's buffers and state.
pub(super) struct Conn<S> {
    pub(super) app: Arc<App>,
    pub(super) stream: S,
    pub(super) session: Session,
    pub(super) input: BytesMut,
    pub(super) output: Output,
    /// Commands taken from the input and not answered yet (each parsed,
    /// or the error that answers it).
    pub(super) pending: VecDeque<Result<Command, Error>>,
    /// Whether the last reply from a pinned connection was not an error.
    pub(super) last_reply_ok: bool,
    /// Times the current blocking command was sent again to a slot's new
    /// master (in front of a cluster).
    pub(super) redirects: u8,
    /// The `--max-parallel` slot held while commands are worked on.
    pub(super) slot: Option<OwnedSemaphorePermit>,
    /// A protocol error found after the pending commands.
    broken: Option<String>,
    /// Where the arguments of the command being parsed are (reused), and
    /// how far parsing it got.
    ranges: Vec<std::ops::Range<usize>>,
    progress: Progress,
    /// The input counted in the app's total so far.
    input_counted: usize,
    /// Whether the last answer was to a malformed frame.
    closed_for_protocol_error: bool,
    /// A run of pipelined GETs and their answers (reused).
    run_keys: Vec<Bytes>,
    run_found: Vec<Result<Found, Error>>,
    /// Replies computed and not encoded yet (reused).
    queued: VecDeque<Reply>,
}

/// Serves one client until QUIT, EOF, a protocol error or shutdown. Any
/// byte stream will do: a TCP socket, or an in-memory pipe in a benchmark.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(app: Arc<App>, stream: S, shutdown: CancellationToken) {
    let session = Session::new(&app);
    let mut conn = Conn {
        app,
        stream,
        session,
        input: BytesMut::with_capacity(16 * 1024),
        output: Output::with_capacity(16 * 1024),
        pending: VecDeque::new(),
        broken: None,
        ranges: Vec::new(),
        progress: Progress::default(),
        input_counted: 0,
        closed_for_protocol_error: false,
        run_keys: Vec::new(),
        run_found: Vec::new(),
        queued: VecDeque::new(),
        last_reply_ok: false,
        redirects: 0,
        slot: None,
    };
    conn.run(shutdown).await;
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn run(&mut self, shutdown: CancellationToken) {
        if let Some(reason) = self.serve(shutdown).await {
            self.app.metrics.disconnected(reason);
        }
    }

    /// Serves until the client goes, the server shuts down (None), or the
    /// client must be closed (Some: why). The deadlines: `--client-idle-timeout`
    /// between reads, 10 s to authenticate, 30 s for replies to drain, and
    /// `--client-output-limit` on the replies waiting to be written.
    async fn serve(&mut self, shutdown: CancellationToken) -> Option<Disconnect> {
        let auth_by = tokio::time::Instant::now() + AUTH_DEADLINE;
        loop {
            let then = self.answer_buffered().await;
            if self.output.len() > self.app.output_limit {
                return Some(Disconnect::OutputLimit);
            }
            if !self.output.is_empty() {
                match tokio::time::timeout(WRITE_DEADLINE, self.output.write_to(&mut self.stream)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => return Some(Disconnect::WriteTimeout),
                }
            }
            match then {
                Then::Close if self.closed_for_protocol_error => return Some(Disconnect::ProtocolError),
                Then::Close => return None,
                Then::Flush => continue,
                Then::Continue => {}
            }
            let idle = self.app.idle_timeout;
            let authed = self.session.authed;
            // Subscribed: messages come whenever Redis sends them.
            let streaming = self.session.pin.as_mut().filter(|p| p.streaming());
            let is_streaming = streaming.is_some();
            let frame = async {
                match streaming {
                    Some(pin) => pin.frame().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                frame = frame => {
                    match frame {
                        Ok(frame) => self.on_frame(frame),
                        Err(_) => {
                            // The subscribed connection is gone: so is the client's state.
                            self.session.pin = None;
                            return None;
                        }
                    }
                    continue;
                }
                read = self.stream.read_buf(&mut self.input) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
                _ = tokio::time::sleep_until(auth_by), if !authed => return Some(Disconnect::AuthTimeout),
                _ = tokio::time::sleep(idle.unwrap_or_default()), if idle.is_some() && !is_streaming => {
                    return Some(Disconnect::Idle);
                }
            }
            if self.count_input() {
                let reply = Reply::error("ERR Protocol error: the proxy holds too much unanswered input");
                encode(&reply, self.session.proto, &mut self.output);
                let _ = tokio::time::timeout(WRITE_DEADLINE, self.output.write_to(&mut self.stream)).await;
                return Some(Disconnect::InputLimit);
            }
        }
    }

    /// Answers the complete commands in the input, in order, until it
    /// holds no complete command (`Continue`), the output is full (`Flush`:
    /// write it and call again) or the connection must close.
    async fn answer_buffered(&mut self) -> Then {
        let then = self.answer_buffered_holding_a_slot().await;
        // Given back before the (possibly slow) write.
        self.slot = None;
        then
    }

    /// [`Conn::answer_buffered`], with one `--max-parallel` slot for this
    /// stretch of work, taken at its first command (and given up while a
    /// blocking command waits; see `forwarding`).
    async fn answer_buffered_holding_a_slot(&mut self) -> Then {
        let app = self.app.clone();
        loop {
            if self.pending.is_empty() && self.broken.is_none() {
                self.take_commands();
                self.count_input();
            }
            if self.pending.is_empty() && self.queued.is_empty() {
                if let Some(e) = self.broken.take() {
                    self.closed_for_protocol_error = true;
                    let reply = Reply::error(format!("ERR Protocol error: {e}"));
                    encode(&reply, self.session.proto, &mut self.output);
                    app.resp_metrics.record(Outcome::ClientError, Instant::now());
                    return Then::Close;
                }
                return Then::Continue;
            }
            if self.slot.is_none() {
                self.slot = Some(app.slot().await);
            }
            match self.answer_pending().await {
                Then::Continue => {}
                then => return then,
            }
        }
    }

    /// Brings the app's count of unanswered input up to date with this
    /// connection's; true if this connection must go (see
    /// [`App::input_over_budget`]).
    fn count_input(&mut self) -> bool {
        let now = self.input.len();
        let over = self.app.input_over_budget(self.input_counted, now);
        self.input_counted = now;
        over
    }

    /// Moves up to MAX_BATCH complete commands from the input to `pending`.
    /// A command's arguments are slices of the read buffer, not copies.
    fn take_commands(&mut self) {
        // One huge MGET's argument list is not kept for the connection's life.
        if self.ranges.capacity() > 4096 && self.ranges.is_empty() {
            self.ranges = Vec::new();
        }
        // Before AUTH, one command at a time: pipelined after an AUTH, a
        // command is judged by the limits that hold once the AUTH has run.
        let (batch, limits) = if self.session.authed {
            (MAX_BATCH, Limits::AUTHENTICATED)
        } else {
            (1, Limits::UNAUTHENTICATED)
        };
        while self.pending.len() < batch {
            match parse_frame(&self.input, &mut self.ranges, &mut self.progress, limits) {
                // An empty line or array is no command: Redis answers nothing.
                Ok(Some(Frame::Array { len })) => {
                    let frame = self.input.split_to(len).freeze();
                    if !self.ranges.is_empty() {
                        self.pending.push_back(Command::from_frame(&frame, &self.ranges));
                    }
                }
                Ok(Some(Frame::Inline { len, args })) => {
                    self.input.advance(len);
                    if !args.is_empty() {
                        self.pending.push_back(Command::parse(args));
                    }
                }
                Ok(None) => {
                    if self.input.len() > MAX_INPUT {
                        self.broken = Some("query buffer over 64 MiB".to_string());
                    }
                    return;
                }
                Err(e) => {
                    self.broken = Some(e.to_string());
                    return;
                }
            }
        }
    }

    /// Answers pending commands in order until none are left or the output
    /// is full. A run of pipelined GETs is looked up together, so their
    /// misses cost one Redis round trip (an MGET), not one each.
    async fn answer_pending(&mut self) -> Then {
        // What is left of a long answer from before the last flush.
        if self.drain_queued() == Then::Flush {
            return Then::Flush;
        }
        while let Some(command) = self.pending.pop_front() {
            let start = Instant::now();
            match command {
                Ok(Command::Get(key)) if self.session.reads_cache(&self.app) && self.next_is_get() => {
                    self.take_get_run(key);
                    let lookup = &self.app.lookup;
                    lookup.get_each_into(&self.run_keys, &mut self.run_found).await;
                    self.run_keys.clear();
                    // Answered together: one clock read and one metrics
                    // update for the run.
                    let mut outcomes = [0u64; Outcome::ALL.len()];
                    for found in self.run_found.drain(..) {
                        let (reply, outcome, _) = data::get_answer(found);
                        outcomes[outcome as usize] += 1;
                        self.queued.push_back(reply);
                    }
                    self.app.resp_metrics.record_run(&outcomes, start.elapsed());
                }
                Ok(Command::Mget(keys)) if self.session.reads_cache(&self.app) => {
                    match data::mget_each(&self.app, &keys).await {
                        Ok((values, outcome)) => {
                            array_header(values.len(), &mut self.output);
                            self.queued.extend(values);
                            self.app.resp_metrics.record(outcome, start);
                        }
                        Err(answer) => {
                            self.reply(answer, start);
                        }
                    }
                }
                Ok(command) if self.session.authed && self.to_redis(&command) => {
                    let args = command.into_args().expect("only commands that can be forwarded");
                    if self.forward(args, start).await == Then::Close {
                        return Then::Close;
                    }
                }
                Ok(Command::Forward(args)) => {
                    if self.forward(args, start).await == Then::Close {
                        return Then::Close;
                    }
                }
                command => {
                    let answer = match command {
                        Ok(command) if self.pinned_refuses(&command) => {
                            // The name only: an AUTH's arguments are a password.
                            let name = match command {
                                Command::Hello(_) => "hello",
                                Command::Auth { .. } => "auth",
                                Command::Select(_) => "select",
                                _ => "client",
                            };
                            tracing::debug!(target: "resp", command = name, "refused while pinned");
                            if let Some(pin) = self.session.pin.as_mut() {
                                pin.refused_in_multi();
                            }
                            super::refused(&Error::redis(
                                "ERR",
                                "this command cannot be used through this proxy inside a transaction or \
                                 while subscribed",
                            ))
                        }
                        Ok(command) => execute(&self.app, &mut self.session, command).await,
                        Err(e) => super::refused(&e),
                    };
                    if self.reply(answer, start) == Then::Close {
                        return Then::Close;
                    }
                }
            }
            if self.drain_queued() == Then::Flush || self.output.len() >= FLUSH_AT {
                return Then::Flush;
            }
        }
        Then::Continue
    }

    /// Encodes queued replies (a run of GETs' answers, an MGET's values)
    /// until the output is full (`Flush`: the rest wait for the next call),
    /// checking the output's size after each reply rather than after the
    /// command: a long answer is written a piece at a time, as the client
    /// reads it, not built whole.
    fn drain_queued(&mut self) -> Then {
        while let Some(reply) = self.queued.pop_front() {
            encode(&reply, self.session.proto, &mut self.output);
            if self.output.len() >= FLUSH_AT {
                return Then::Flush;
            }
        }
        Then::Continue
    }

    /// Whether a command the front end could answer goes to Redis instead:
    /// reads off the cached database or inside a transaction, WATCH or
    /// subscription, and what Redis must queue or answer in order there.
    fn to_redis(&self, command: &Command) -> bool {
        let holds =
            self.session.pin.as_ref().is_some_and(|p| p.holds_reads()) || self.session.queued.is_some();
        match command {
            Command::Get(_) | Command::Mget(_) => !self.session.reads_cache(&self.app),
            Command::Ping(_) | Command::Echo(_) | Command::Info(_) => holds,
            Command::Select(_) => self.session.pin.is_some() && !holds,
            _ => false,
        }
    }

    /// Connection commands refused inside a transaction or subscription
    /// (their effect would be the proxy's, not queued by Redis).
    fn pinned_refuses(&self, command: &Command) -> bool {
        let holds =
            self.session.pin.as_ref().is_some_and(|p| p.holds_reads()) || self.session.queued.is_some();
        holds
            && matches!(
                command,
                Command::Hello(_) | Command::Auth { .. } | Command::Select(_) | Command::Client(_)
            )
    }

    fn next_is_get(&self) -> bool {
        matches!(self.pending.front(), Some(Ok(Command::Get(_))))
    }

    /// `first` and the GETs pending right after it, up to MAX_GET_RUN,
    /// into `run_keys`.
    fn take_get_run(&mut self, first: Bytes) {
        self.run_keys.push(first);
        while self.run_keys.len() < MAX_GET_RUN
            && let Some(Ok(Command::Get(key))) =
                self.pending.pop_front_if(|c| matches!(c, Ok(Command::Get(_))))
        {
            self.run_keys.push(key);
        }
    }

    /// Encodes an answer and counts it; what the connection does next.
    pub(super) fn reply(&mut self, (reply, outcome, then): Answer, start: Instant) -> Then {
        encode(&reply, self.session.proto, &mut self.output);
        self.app.resp_metrics.record(outcome, start);
        then
    }
}

impl Session {
    fn new(app: &App) -> Session {
        Session {
            id: app.next_client_id(),
            proto: Proto::Resp2,
            authed: !app.requires_password(),
            name: None,
            db: app.forwarder.default_db(),
            pin: None,
            queued: None,
            watch_lost: false,
        }
    }
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        self.app.input_over_budget(self.input_counted, 0);
    }
}
