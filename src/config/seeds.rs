//! `--redis-cluster`: the seed nodes, and how to reach any node of the
//! cluster with the same scheme, user and password.

/// A node's address as the cluster announces it: `host:port`.
pub type Addr = String;

/// `host:port`, with an IPv6 host in brackets.
pub fn join(host: &str, port: u16) -> Addr {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds {
    /// `rediss://`: TLS to every node.
    pub tls: bool,
    /// `user:pass` or `:pass`, as written (percent-encoding kept).
    userinfo: Option<String>,
    pub nodes: Vec<Addr>,
}

impl Seeds {
    /// `redis[s]://[user:pass@]host:port[,host:port…]`, or a plain
    /// `host:port,…` list.
    pub fn parse(text: &str) -> Result<Seeds, String> {
        let text = text.trim();
        let (tls, rest) = if let Some(rest) = text.strip_prefix("rediss://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("redis://") {
            (false, rest)
        } else if text.contains("://") {
            return Err("expected redis:// or rediss://".into());
        } else {
            (false, text)
        };
        let (userinfo, hosts) = match rest.rfind('@') {
            Some(at) => (Some(rest[..at].to_string()), &rest[at + 1..]),
            None => (None, rest),
        };
        // A cluster has database 0 only.
        let hosts = match hosts.split_once('/') {
            Some((hosts, "" | "0")) => hosts,
            Some((_, db)) => return Err(format!("a cluster has database 0 only, not {db}")),
            None => hosts,
        };
        let nodes = hosts
            .split(',')
            .map(|node| parse_node(node.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err("no seed node".into());
        }
        Ok(Seeds { tls, userinfo, nodes })
    }

    /// The URL of the node at `addr`, with the seeds' scheme and user.
    pub fn url(&self, addr: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.userinfo {
            Some(user) => format!("{scheme}://{user}@{addr}/0"),
            None => format!("{scheme}://{addr}/0"),
        }
    }

    /// For logs: the seeds without the password.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let user = match &self.userinfo {
            Some(_) => "***@",
            None => "",
        };
        format!("{scheme}://{user}{}", self.nodes.join(","))
    }
}

fn parse_node(node: &str) -> Result<Addr, String> {
    let (host, port) = node
        .rsplit_once(':')
        .ok_or_else(|| format!("'{node}' is not host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("'{node}': expected a port 1-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
        return Err(format!("'{node}' is not host:port"));
    }
    Ok(join(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists() {
        let s = Seeds::parse("redis://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001").unwrap();
        assert_eq!(s.nodes, ["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert_eq!(s.url("10.0.0.3:7002"), "redis://u:p%40ss@10.0.0.3:7002/0");
        assert_eq!(s.redacted(), "redis://***@10.0.0.1:7000,10.0.0.2:7001");
        let s = Seeds::parse("127.0.0.1:7000, [::1]:7001").unwrap();
        assert_eq!(s.nodes, ["127.0.0.1:7000", "[::1]:7001"]);
        assert_eq!(s.url("h:1"), "redis://h:1/0");
        assert!(Seeds::parse("rediss://h:1/0").unwrap().tls);
        for bad in [
            "",
            "h",
            "h:0",
            "h:x",
            "http://h:1",
            "redis://h:1/2",
            "redis://h:1,,h:2",
        ] {
            assert!(Seeds::parse(bad).is_err(), "{bad}");
        }
    }
}
