//! A "host" of a test's own: a network namespace joined to this one by a
//! veth pair, so processes run inside it reach the test's servers over a
//! real network link that the test can cut (a partition) and heal. Needs
//! root (`ip netns`); the namespace and its link go when dropped.

use std::process::Command;

pub struct Host {
    ns: String,
    link: String,
    /// This side's address, where servers listen for the host.
    pub gateway: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Host {
    /// Host number `n` (0-9) of this test process.
    pub fn create(n: u8) -> Host {
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let (ns, link, peer) = (format!("lf{tag}"), format!("lfh{tag}"), format!("lfn{tag}"));
        let subnet = format!("10.{}.{}", 200 + n, std::process::id() % 250);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{subnet}.2/24"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        Host {
            ns,
            link,
            gateway: format!("{subnet}.1"),
        }
    }

    /// The command prefix that runs a program inside this host.
    pub fn exec(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.ns]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Cuts the link: packets are dropped both ways (a partition).
    pub fn cut(&self) {
        ip(&["link", "set", &self.link, "down"]);
    }

    pub fn heal(&self) {
        ip(&["link", "set", &self.link, "up"]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
