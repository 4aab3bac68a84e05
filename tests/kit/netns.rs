//! Slow links for tests: two private network namespaces A and B joined by a
//! veth pair, both ends shaped with `tc qdisc … root tbf` (this kernel has
//! no sch_netem), deleted on drop.
//!
//! Addresses ([`ADDR_A`], [`ADDR_B`]) exist only inside the pair's own
//! namespaces, so traffic between them never leaves the machine. Run
//! programs inside with [`Netns::command_a`]/[`Netns::command_b`]
//! (`ip netns exec NAME …`), or run Rust code on a thread moved into a
//! namespace with [`Netns::spawn_in`] (setns(2) affects only that thread).
//! Namespace names are `zpipetest-<pid>-<n>-a|b`; [`sweep_stale`] deletes
//! those of dead processes.

use anyhow::{bail, Context};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Prefix of every namespace the kit creates.
pub const NETNS_PREFIX: &str = "zpipetest";
/// Address of namespace A's veth end.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
/// Address of namespace B's veth end.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
/// Prefix length of the link's subnet.
const PREFIX_LEN: u8 = 30;
/// veth end in namespace A.
const VETH_A: &str = "veth-a";
/// veth end in namespace B.
const VETH_B: &str = "veth-b";
/// tbf bucket size: small, so the rate holds from the first packet.
pub const TBF_BURST: &str = "32kbit";
/// tbf queueing latency bound.
pub const TBF_LATENCY: &str = "50ms";
/// Timeout for one socket operation of [`Netns::transfer_rate`].
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between accept polls.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// Write size of [`Netns::transfer_rate`].
const CHUNK: usize = 64 << 10;

fn ip<I, S>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("ip", args)
}

fn run<I, S>(program: &str, args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(crate::find_program(program).unwrap_or_else(|| program.into()));
    cmd.args(args).stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Names of all named network namespaces.
pub fn list() -> Vec<String> {
    let ip = crate::find_program("ip").unwrap_or_else(|| "ip".into());
    let out = Command::new(ip).args(["netns", "list"]).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    })
    .unwrap_or_default()
}

/// Deletes kit namespaces whose creating process is gone; returns them.
pub fn sweep_stale() -> Vec<String> {
    let mut swept = Vec::new();
    for name in list() {
        if let Some(pid) = crate::owner_pid(NETNS_PREFIX, &name) {
            if pid != std::process::id()
                && !crate::pid_alive(pid)
                && ip(["netns", "del", &name]).is_ok()
            {
                swept.push(name);
            }
        }
    }
    swept
}

/// Checks that a namespace can be created and deleted here.
pub fn probe() -> anyhow::Result<()> {
    let name = crate::unique_name(NETNS_PREFIX) + "-probe";
    ip(["netns", "add", &name])?;
    ip(["netns", "del", &name])
}

/// Two namespaces joined by a shaped veth pair; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    a: String,
    b: String,
    rate: String,
}

impl Netns {
    /// Creates namespaces A and B, a veth pair between them with
    /// [`ADDR_A`]/[`ADDR_B`], and a `tbf rate <rate>` qdisc on both ends
    /// (`rate` in tc's words: `100mbit`, `20mbit`, `1gbit`).
    pub fn pair(rate: &str) -> anyhow::Result<Netns> {
        static SWEPT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        SWEPT.get_or_init(|| {
            sweep_stale();
        });
        let base = crate::unique_name(NETNS_PREFIX);
        let a = format!("{base}-a");
        let b = format!("{base}-b");
        ip(["netns", "add", &a])?;
        // From here on, drop deletes whatever was made.
        let mut ns = Netns {
            a,
            b: String::new(),
            rate: rate.to_string(),
        };
        ip(["netns", "add", &b])?;
        ns.b = b;
        let (a, b) = (ns.a.as_str(), ns.b.as_str());
        ip([
            "link", "add", VETH_A, "netns", a, "type", "veth", "peer", "name", VETH_B, "netns", b,
        ])?;
        for (name, dev, addr) in [(a, VETH_A, ADDR_A), (b, VETH_B, ADDR_B)] {
            ip([
                "-n",
                name,
                "addr",
                "add",
                &format!("{addr}/{PREFIX_LEN}"),
                "dev",
                dev,
            ])?;
            ip(["-n", name, "link", "set", "lo", "up"])?;
            ip(["-n", name, "link", "set", dev, "up"])?;
            run(
                "tc",
                [
                    "-n",
                    name,
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    TBF_BURST,
                    "latency",
                    TBF_LATENCY,
                ],
            )?;
        }
        Ok(ns)
    }

    /// Name of namespace A.
    pub fn a(&self) -> &str {
        &self.a
    }

    /// Name of namespace B.
    pub fn b(&self) -> &str {
        &self.b
    }

    /// Address of A's end.
    pub fn addr_a(&self) -> Ipv4Addr {
        ADDR_A
    }

    /// Address of B's end.
    pub fn addr_b(&self) -> Ipv4Addr {
        ADDR_B
    }

    /// The configured tbf rate.
    pub fn rate(&self) -> &str {
        &self.rate
    }

    /// `ip netns exec <ns> <program>`: add arguments and run.
    pub fn command_in(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(crate::find_program("ip").unwrap_or_else(|| "ip".into()));
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// `ip netns exec <A> <program>`.
    pub fn command_a(&self, program: impl AsRef<OsStr>) -> Command {
        self.command_in(&self.a, program)
    }

    /// `ip netns exec <B> <program>`.
    pub fn command_b(&self, program: impl AsRef<OsStr>) -> Command {
        self.command_in(&self.b, program)
    }

    /// Runs `f` on a new thread that first moves into namespace `ns` (only
    /// that thread moves; sockets it opens belong to `ns`).
    pub fn spawn_in<T, F>(&self, ns: &str, f: F) -> std::thread::JoinHandle<anyhow::Result<T>>
    where
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .with_context(|| format!("setns {path}"))?;
            f()
        })
    }

    /// Sends `bytes` over TCP from A to B and returns the rate B saw, in
    /// bytes per second (from B's first byte to the end of the stream).
    pub fn transfer_rate(&self, bytes: u64) -> anyhow::Result<f64> {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let server = self.spawn_in(&self.b, move || {
            let listener = TcpListener::bind(SocketAddr::from((ADDR_B, 0)))?;
            port_tx.send(listener.local_addr()?.port())?;
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + IO_TIMEOUT;
            let mut conn = loop {
                match listener.accept() {
                    Ok((conn, _)) => break conn,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            bail!("no connection from A within {IO_TIMEOUT:?}");
                        }
                        std::thread::sleep(ACCEPT_POLL);
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut buf = vec![0u8; CHUNK];
            // The clock starts at the first byte; those bytes are not timed.
            let first = conn.read(&mut buf)? as u64;
            let start = Instant::now();
            let mut got = first;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            Ok((got, first, start.elapsed()))
        });
        let port = port_rx
            .recv_timeout(IO_TIMEOUT)
            .context("server in B did not start")?;
        let client = self.spawn_in(&self.a, move || {
            let mut conn =
                TcpStream::connect_timeout(&SocketAddr::from((ADDR_B, port)), IO_TIMEOUT)?;
            conn.set_write_timeout(Some(IO_TIMEOUT))?;
            let chunk = vec![0x5au8; CHUNK];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                conn.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            Ok(())
        });
        client
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        let (got, first, elapsed) = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
        if got != bytes {
            bail!("sent {bytes} bytes, B received {got}");
        }
        Ok((got - first) as f64 / elapsed.as_secs_f64().max(f64::EPSILON))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in [&self.a, &self.b] {
            if !name.is_empty() {
                if let Err(e) = ip(["netns", "del", name]) {
                    eprintln!("zpipe-tests: namespace not deleted: {e:#}");
                }
            }
        }
    }
}
