//! Network namespaces a test makes for itself (root and iproute2): named namespaces deleted on
//! drop (with every veth inside them), the routed topology the IMDS hop-limit tests need, and
//! running a thread inside one.
//!
//! Addresses exist only inside the namespaces; veth pairs are created inside them, never in the
//! host namespace. Where namespaces cannot be made (not root, no `ip`), the caller skips
//! ([`or_skip`] prints `SKIP: <reason>`); once they exist, a failing step is a real failure.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A namespace with a name unique to this process and call, ending in `role`; `Err` says
    /// why none can be made here.
    pub fn new(role: &str) -> Result<Netns, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root: cannot create network namespaces".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("`ip` (iproute2) is not installed".into());
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bh{}x{}{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name])
            .map_err(|e| format!("cannot create network namespaces: {e}"))?;
        Ok(Netns { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for [`enter_netns`].
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <name> ARGS…`; panics with ip's error (the namespace exists: not a skip).
    #[track_caller]
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        if let Err(e) = ip(&all) {
            panic!("setting up the namespaces: ip {}: {e}", all.join(" "));
        }
    }

    /// `ip netns exec <name> PROGRAM`, to run a command inside.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// client → router → imds: two veth pairs (10.200.1.0/30 and 10.200.2.0/30), default routes via
/// the router, `ip_forward=1` in the router. A reply sent from `imds` with `IP_TTL = 1` dies in
/// the router: what a bastion in a container sees on EC2 with hop limit 1.
pub struct Routed {
    pub client: Netns,
    pub router: Netns,
    pub imds: Netns,
}

impl Routed {
    /// The client's address.
    pub const CLIENT_IP: &'static str = "10.200.1.1";
    /// The address a server in `imds` listens on.
    pub const IMDS_IP: &'static str = "10.200.2.2";
    const ROUTER_CLIENT_SIDE: &'static str = "10.200.1.2";
    const ROUTER_IMDS_SIDE: &'static str = "10.200.2.1";

    /// Build it, or say why it cannot be built here.
    #[track_caller]
    pub fn build() -> Result<Routed, String> {
        let t = Routed {
            client: Netns::new("c")?,
            router: Netns::new("r")?,
            imds: Netns::new("i")?,
        };
        let (c, r, i) = (&t.client, &t.router, &t.imds);
        c.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "toc",
            "netns",
            r.name(),
        ]);
        r.ip(&[
            "link",
            "add",
            "toi",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            i.name(),
        ]);
        let cidr = |ip: &str| format!("{ip}/30");
        c.ip(&["addr", "add", &cidr(Self::CLIENT_IP), "dev", "eth0"]);
        r.ip(&["addr", "add", &cidr(Self::ROUTER_CLIENT_SIDE), "dev", "toc"]);
        r.ip(&["addr", "add", &cidr(Self::ROUTER_IMDS_SIDE), "dev", "toi"]);
        i.ip(&["addr", "add", &cidr(Self::IMDS_IP), "dev", "eth0"]);
        for (ns, dev) in [(c, "lo"), (r, "lo"), (i, "lo")] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        for (ns, dev) in [(c, "eth0"), (r, "toc"), (r, "toi"), (i, "eth0")] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        c.ip(&["route", "add", "default", "via", Self::ROUTER_CLIENT_SIDE]);
        i.ip(&["route", "add", "default", "via", Self::ROUTER_IMDS_SIDE]);
        let out = r
            .exec("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .output()
            .expect("run ip netns exec sysctl");
        assert!(
            out.status.success(),
            "setting up the namespaces: ip_forward in the router: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(t)
    }
}

/// `Some(value)`, or `None` after printing `SKIP: <reason>` (the test returns; it never
/// pretends to have run).
pub fn or_skip<T>(made: Result<T, String>) -> Option<T> {
    match made {
        Ok(t) => Some(t),
        Err(reason) => {
            println!("SKIP: {reason}");
            None
        }
    }
}

/// Run `f` on a new thread that has entered the namespace at `ns` (only that thread moves);
/// its result, or the thread's panic.
pub fn on_thread_in<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap_or_else(|e| panic!("enter the namespace: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Move the calling thread into a network namespace.
pub fn enter_netns(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {}: {e}", path.display()))
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
