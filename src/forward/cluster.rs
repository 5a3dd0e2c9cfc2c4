//! Forwarded commands in front of a cluster: each client command's
//! [`Plan`] (see [`super::route`]) run on the masters, so that no `MOVED`
//! or `ASK` ever reaches a client.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::ProtocolVersion;

use super::route::{Part, Plan, merge, redirected};
use super::{Forwarder, Node, pack};
use crate::error::Error;

/// Redirections followed for one command before its error is passed on.
const MAX_REDIRECTS: usize = 5;

impl Forwarder {
    /// Runs the plans of a run of client commands: their parts grouped per
    /// master, one pipelined batch per master (in the clients' order), the
    /// masters at once; a part that Redis redirects is sent again where it
    /// says (after ASKING, for ASK; a map refresh is asked for on MOVED);
    /// then each plan's replies merged into the client's one reply.
    pub async fn run_plans(&self, proto: ProtocolVersion, plans: &[Plan]) -> Vec<Result<Bytes, Error>> {
        let parts: Vec<&Part> = plans
            .iter()
            .flat_map(|p| match p {
                Plan::Parts { parts, .. } => parts.iter().collect(),
                Plan::Answer(_) => Vec::new(),
            })
            .collect();
        let mut by_node: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, part) in parts.iter().enumerate() {
            by_node.entry(part.node.as_str()).or_default().push(i);
        }
        let sends = by_node.into_iter().map(|(node, idx)| {
            let mut packed = BytesMut::new();
            for &i in &idx {
                pack(&parts[i].args, &mut packed);
            }
            let node = Node::from(node);
            async move {
                let replies = self.send_to(&node, proto, 0, packed.freeze(), idx.len()).await;
                (idx, replies)
            }
        });
        let mut replies: Vec<Result<Bytes, Error>> = vec![Err(Error::internal("no reply")); parts.len()];
        for (idx, answered) in futures_util::future::join_all(sends).await {
            match answered {
                Ok(each) => {
                    for (i, reply) in idx.into_iter().zip(each) {
                        replies[i] = Ok(reply);
                    }
                }
                Err(e) => {
                    for i in idx {
                        replies[i] = Err(e.clone());
                    }
                }
            }
        }
        for (i, part) in parts.iter().enumerate() {
            if let Ok(reply) = &replies[i]
                && needs_resending(reply)
            {
                replies[i] = self.resend(proto, part, reply.clone()).await;
            }
        }
        let mut replies = replies.into_iter();
        plans
            .iter()
            .map(|plan| match plan {
                Plan::Answer(reply) => Ok(reply.clone()),
                Plan::Parts { parts, merge: how } => {
                    let mine: Result<Vec<Bytes>, Error> = replies.by_ref().take(parts.len()).collect();
                    mine.map(|mine| merge(how, &mine))
                }
            })
            .collect()
    }

    /// Sends `part` again until Redis stops redirecting it: `reply` was
    /// Redis's first answer (MOVED, ASK or TRYAGAIN).
    async fn resend(&self, proto: ProtocolVersion, part: &Part, mut reply: Bytes) -> Result<Bytes, Error> {
        for _ in 0..MAX_REDIRECTS {
            let mut packed = BytesMut::new();
            let (node, count) = match redirected(&reply) {
                Some((ask, node)) => {
                    if ask {
                        pack(&[&b"ASKING"[..]], &mut packed);
                    } else if let Some(topology) = self.topology() {
                        topology.refresh_soon();
                    }
                    (Node::from(node.as_str()), 1 + ask as usize)
                }
                // TRYAGAIN: a multi-key command while its slot migrates.
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    (Node::from(part.node.as_str()), 1)
                }
            };
            pack(&part.args, &mut packed);
            let mut each = self.send_to(&node, proto, 0, packed.freeze(), count).await?;
            reply = each.pop().unwrap_or_default();
            if !needs_resending(&reply) {
                return Ok(reply);
            }
        }
        Err(Error::unavailable("the cluster kept redirecting the command"))
    }
}

/// MOVED, ASK or TRYAGAIN: Redis did not run the command, and says to try
/// again (elsewhere).
fn needs_resending(reply: &[u8]) -> bool {
    redirected(reply).is_some() || reply.starts_with(b"-TRYAGAIN")
}
