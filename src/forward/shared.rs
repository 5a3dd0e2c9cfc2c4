//! A connection to Redis shared by every client of one protocol and
//! database. Requests are pipelined on it: each client's batch goes out as
//! one write, in the order they came, and a reader task hands each batch
//! its replies, as Redis wrote them, in the same order. A batch is never
//! interleaved with another, so it costs one round trip.
//!
//! A client whose batch finds the connection free writes it itself, if
//! the socket takes it at once (one task wake-up fewer per request, which
//! is most of a request's cost with one client); otherwise the batch goes
//! to a writer task, which gathers what is queued into one write. Either
//! way, a batch's place among the replies is taken under the writer's lock,
//! right before its bytes go out, and a write that cannot finish at once
//! finishes in a task of its own, so a client that hangs up never leaves
//! half a command on the wire.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot};

use super::link::{Link, Writer};
use super::reply::Scanner;
use crate::error::Error;

/// A batch's replies, one `Bytes` each.
pub type Replies = Result<Vec<Bytes>, Error>;

struct Job {
    bytes: Bytes,
    count: usize,
    done: oneshot::Sender<Replies>,
}

/// A batch sent and waiting for its replies.
struct Waiting {
    count: usize,
    replies: Vec<Bytes>,
    done: oneshot::Sender<Replies>,
}

/// What the clients, the writer task and the reader task share.
struct Common {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    waiting: Mutex<VecDeque<Waiting>>,
    alive: AtomicBool,
}

impl Common {
    /// Takes a batch's place among the replies (the caller holds the
    /// writer's lock and writes its bytes next); gives `done` back if the
    /// connection is dead.
    fn queue(&self, count: usize, done: oneshot::Sender<Replies>) -> Result<(), oneshot::Sender<Replies>> {
        let mut waiting = self.waiting.lock();
        if !self.alive.load(Ordering::Acquire) {
            return Err(done);
        }
        waiting.push_back(Waiting {
            count,
            replies: Vec::with_capacity(count),
            done,
        });
        Ok(())
    }

    /// Fails every waiting batch; under the queue's lock, so no batch is
    /// queued after the drain and left waiting forever.
    fn fail(&self, why: &str) {
        let mut waiting = self.waiting.lock();
        self.alive.store(false, Ordering::Release);
        for w in waiting.drain(..) {
            let _ = w.done.send(Err(Error::unavailable(why.to_string())));
        }
    }

    /// Writes `bytes` (whose place is queued) while holding `writer`; what
    /// the socket does not take at once is written by a task of its own.
    fn write(self: &Arc<Self>, mut writer: OwnedMutexGuard<Writer>, bytes: Bytes) {
        let mut at = 0;
        while at < bytes.len() {
            match writer.write(&bytes[at..]).now_or_never() {
                Some(Ok(0)) => return self.fail("connection to Redis lost"),
                Some(Ok(n)) => at += n,
                Some(Err(e)) => return self.fail(&format!("connection to Redis lost: {e}")),
                None => break,
            }
        }
        if at == bytes.len() && writer.flush().now_or_never().is_some_and(|r| r.is_ok()) {
            return;
        }
        let rest = bytes.slice(at..);
        let common = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = async {
                writer.write_all(&rest).await?;
                writer.flush().await
            }
            .await
            {
                common.fail(&format!("connection to Redis lost: {e}"));
            }
        });
    }
}

/// The handle clients hold; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    jobs: mpsc::UnboundedSender<Job>,
    common: Arc<Common>,
}

impl Shared {
    /// Starts the writer and reader tasks over `link`.
    pub fn start(link: Link, open: Gauge) -> Shared {
        open.inc();
        let (reader, writer, input) = link.split();
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let common = Arc::new(Common {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            waiting: Mutex::default(),
            alive: AtomicBool::new(true),
        });
        tokio::spawn(write_queued(rx, common.clone()));
        tokio::spawn(read_replies(reader, input, common.clone(), Closing(open)));
        Shared { jobs, common }
    }

    pub fn is_alive(&self) -> bool {
        self.common.alive.load(Ordering::Acquire) && !self.jobs.is_closed()
    }

    /// Sends `bytes`, `count` commands, and waits for their replies.
    pub async fn send(&self, bytes: Bytes, count: usize) -> Replies {
        let lost = || Err(Error::unavailable("connection to Redis lost"));
        let (done, rx) = oneshot::channel();
        match self.common.writer.clone().try_lock_owned() {
            Ok(writer) => {
                if self.common.queue(count, done).is_err() {
                    return lost();
                }
                self.common.write(writer, bytes);
            }
            Err(_) => {
                if self.jobs.send(Job { bytes, count, done }).is_err() {
                    return lost();
                }
            }
        }
        rx.await.unwrap_or_else(|_| lost())
    }
}

/// The writer task: batches that found the connection busy, gathered into
/// one write.
async fn write_queued(mut rx: mpsc::UnboundedReceiver<Job>, common: Arc<Common>) {
    let mut buf = BytesMut::new();
    while let Some(job) = rx.recv().await {
        let writer = common.writer.clone().lock_owned().await;
        let mut next = Some(job);
        while let Some(job) = next.take() {
            if let Err(done) = common.queue(job.count, job.done) {
                let _ = done.send(Err(Error::unavailable("connection to Redis lost")));
            } else {
                buf.extend_from_slice(&job.bytes);
            }
            if buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if !common.alive.load(Ordering::Acquire) {
            break;
        }
        common.write(writer, buf.split().freeze());
    }
    // Every handle dropped, or the connection failed: close.
    let _ = common.writer.lock().await.shutdown().await;
}

/// The reader task: each reply to the batch waiting longest.
async fn read_replies(
    mut reader: super::link::Reader,
    mut input: BytesMut,
    common: Arc<Common>,
    _open: Closing,
) {
    let mut scanner = Scanner::default();
    loop {
        while !input.is_empty() {
            match scanner.scan(&input) {
                Ok(Some(len)) => {
                    let reply = input.split_to(len).freeze();
                    let mut waiting = common.waiting.lock();
                    let Some(front) = waiting.front_mut() else {
                        drop(waiting);
                        return common.fail("Redis sent a reply nobody asked for");
                    };
                    front.replies.push(reply);
                    if front.replies.len() == front.count {
                        let w = waiting.pop_front().expect("front");
                        let _ = w.done.send(Ok(w.replies));
                    }
                }
                Ok(None) => break,
                Err(e) => return common.fail(&format!("Redis sent something that is not RESP: {e}")),
            }
        }
        if !common.alive.load(Ordering::Acquire) {
            return;
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(64 * 1024);
        }
        match reader.read_buf(&mut input).await {
            Ok(0) => return common.fail("Redis closed the connection"),
            Ok(_) => {}
            Err(e) => return common.fail(&format!("connection to Redis lost: {e}")),
        }
    }
}

/// Counts the connection closed when the reader ends.
struct Closing(Gauge);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.dec();
    }
}
