//! The run's network: namespaces, veth pairs, a bridge, and nftables faults between them.

use super::*;

pub(super) fn run_cmd(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, the bridge and the harness's link; removed when dropped.
pub(super) struct Net {
    pub(super) prefix: String,
    pub(super) nodes: usize,
}

impl Net {
    pub(super) fn ns(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    pub(super) fn create(nodes: usize) -> Result<Net, String> {
        let subnet = subnet_of_run();
        let net = Net {
            prefix: format!("lcc{}n", std::process::id()),
            nodes,
        };
        let sw = format!("{}sw", net.prefix);
        run_cmd("ip", &["netns", "add", &sw])?;
        run_cmd("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run_cmd("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 1..=nodes {
            let ns = net.ns(i);
            run_cmd("ip", &["netns", "add", &ns])?;
            let v = format!("v{i}");
            run_cmd(
                "ip",
                &[
                    "-n", &sw, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns",
                    &ns,
                ],
            )?;
            run_cmd("ip", &["-n", &sw, "link", "set", &v, "master", "br0", "up"])?;
            run_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{subnet}.{i}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run_cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        // The harness's own link to the bridge (its clients reach the nodes' APIs).
        let host = format!("{}h", net.prefix);
        run_cmd(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "vh", "netns", &sw,
            ],
        )?;
        run_cmd(
            "ip",
            &["-n", &sw, "link", "set", "vh", "master", "br0", "up"],
        )?;
        run_cmd(
            "ip",
            &["addr", "add", &format!("{subnet}.254/24"), "dev", &host],
        )?;
        run_cmd("ip", &["link", "set", &host, "up"])?;
        Ok(net)
    }

    /// Adds a rule (`nft add rule inet lcpart input …`) to node `i`'s input filter, creating
    /// the table and chain if they are not there.
    pub(super) fn rule(&self, i: usize, rule: &[&str]) {
        let ns = self.ns(i);
        let nft = |args: &[&str]| {
            let mut full = vec!["netns", "exec", ns.as_str(), "nft"];
            full.extend_from_slice(args);
            let _ = run_cmd("ip", &full);
        };
        nft(&["add", "table", "inet", "lcpart"]);
        nft(&[
            "add chain inet lcpart input { type filter hook input priority 0 ; policy accept ; }",
        ]);
        let mut full = vec!["add", "rule", "inet", "lcpart", "input"];
        full.extend_from_slice(rule);
        nft(&full);
    }

    /// Node `i` drops everything from the nodes in `from` (never the harness).
    pub(super) fn drop_from(&self, i: usize, from: &[usize]) {
        let subnet = subnet_of_run();
        for j in from {
            self.rule(i, &["ip", "saddr", &format!("{subnet}.{j}"), "drop"]);
        }
    }

    /// Every node drops a random `pct` percent of what the other nodes send it (nft numgen).
    pub(super) fn lossy(&self, pct: u32) {
        let subnet = subnet_of_run();
        let nodes = format!("{subnet}.1-{subnet}.{}", self.nodes);
        let pct = pct.to_string();
        for i in 1..=self.nodes {
            self.rule(
                i,
                &[
                    "ip", "saddr", &nodes, "numgen", "random", "mod", "100", "<", &pct, "drop",
                ],
            );
        }
    }

    pub(super) fn heal(&self) {
        for i in 1..=self.nodes {
            let _ = run_cmd(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.ns(i),
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    "lcpart",
                ],
            );
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run_cmd("ip", &["link", "del", &format!("{}h", self.prefix)]);
        for i in 1..=self.nodes {
            let _ = run_cmd("ip", &["netns", "del", &self.ns(i)]);
        }
        let _ = run_cmd("ip", &["netns", "del", &format!("{}sw", self.prefix)]);
    }
}
