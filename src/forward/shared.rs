//! A connection to Redis shared by every client of one protocol and
//! database. Requests are pipelined on it: a writer task sends each
//! client's batch as one write, in the order they came, and a reader task
//! hands each batch its replies, as Redis wrote them, in the same order.
//! A batch is never interleaved with another, so it costs one round trip.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::link::Link;
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

/// The handle clients hold; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    jobs: mpsc::UnboundedSender<Job>,
    alive: Arc<AtomicBool>,
}

impl Shared {
    /// Starts the writer and reader tasks over `link`.
    pub fn start(link: Link, open: Gauge) -> Shared {
        open.inc();
        let (mut reader, mut writer, mut input) = link.split();
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let alive = Arc::new(AtomicBool::new(true));
        let waiting: Arc<Mutex<VecDeque<Waiting>>> = Arc::default();
        let fail = {
            let alive = alive.clone();
            let waiting = waiting.clone();
            // Under the queue's lock, so no batch is queued after the
            // drain and left waiting forever.
            move |why: &str| {
                let mut waiting = waiting.lock();
                alive.store(false, Ordering::Release);
                for w in waiting.drain(..) {
                    let _ = w.done.send(Err(Error::unavailable(why.to_string())));
                }
            }
        };
        let write_fail = fail.clone();
        let write_waiting = waiting.clone();
        let write_alive = alive.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            while let Some(job) = rx.recv().await {
                // Gather what else is queued into the same write.
                buf.clear();
                let mut next = Some(job);
                while let Some(job) = next.take() {
                    let mut waiting = write_waiting.lock();
                    if !write_alive.load(Ordering::Acquire) {
                        let _ = job.done.send(Err(Error::unavailable("connection to Redis lost")));
                        continue;
                    }
                    buf.extend_from_slice(&job.bytes);
                    waiting.push_back(Waiting {
                        count: job.count,
                        replies: Vec::with_capacity(job.count),
                        done: job.done,
                    });
                    drop(waiting);
                    if buf.len() < 64 * 1024 {
                        next = rx.try_recv().ok();
                    }
                }
                if !write_alive.load(Ordering::Acquire) {
                    break;
                }
                if let Err(e) = writer.write_all(&buf).await {
                    write_fail(&format!("connection to Redis lost: {e}"));
                    break;
                }
            }
            // Every handle dropped, or the connection failed: close.
            let _ = writer.shutdown().await;
        });
        let read_alive = alive.clone();
        tokio::spawn(async move {
            let _open = Closing(open);
            let mut scanner = Scanner::default();
            loop {
                while !input.is_empty() {
                    match scanner.scan(&input) {
                        Ok(Some(len)) => {
                            let reply = input.split_to(len).freeze();
                            let mut waiting = waiting.lock();
                            let Some(front) = waiting.front_mut() else {
                                drop(waiting);
                                fail("Redis sent a reply nobody asked for");
                                return;
                            };
                            front.replies.push(reply);
                            if front.replies.len() == front.count {
                                let w = waiting.pop_front().expect("front");
                                let _ = w.done.send(Ok(w.replies));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            fail(&format!("Redis sent something that is not RESP: {e}"));
                            return;
                        }
                    }
                }
                if !read_alive.load(Ordering::Acquire) {
                    return;
                }
                if input.capacity() - input.len() < 4096 {
                    input.reserve(64 * 1024);
                }
                match reader.read_buf(&mut input).await {
                    Ok(0) => {
                        fail("Redis closed the connection");
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        fail(&format!("connection to Redis lost: {e}"));
                        return;
                    }
                }
            }
        });
        Shared { jobs, alive }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && !self.jobs.is_closed()
    }

    /// Sends `bytes`, `count` commands, and waits for their replies.
    pub async fn send(&self, bytes: Bytes, count: usize) -> Replies {
        let (done, rx) = oneshot::channel();
        if self.jobs.send(Job { bytes, count, done }).is_err() {
            return Err(Error::unavailable("connection to Redis lost"));
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::unavailable("connection to Redis lost")))
    }
}

/// Counts the connection closed when the reader ends.
struct Closing(Gauge);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.dec();
    }
}
