//! A real OpenSSH server for tests, one per [`Sshd`] value, killed on drop.
//!
//! [`Sshd::start`] makes a host key and a client key with `ssh-keygen` in a
//! temp dir, writes its own `sshd_config` (listen on 127.0.0.1 at a free
//! port, keys only, root by key only, `UsePAM no`, `StrictModes no`, its own
//! `AuthorizedKeysFile` and `PidFile`) and runs `/usr/sbin/sshd -D -e -f …`.
//! It is ready when its log says "Server listening". [`Sshd::start_in`] runs
//! the server inside namespace B of a [`Netns`] pair and the client inside
//! namespace A, so the session crosses the shaped link.
//!
//! Remote `PATH`: every authorized_keys line the kit writes carries
//! `environment="PATH=<dirs>:<system dirs>"`, and the config says
//! `PermitUserEnvironment PATH`. sshd reads authorized_keys at each login,
//! so [`Sshd::set_env_path`] takes effect for the next connection without a
//! restart, it also applies to forced-command keys, and a client's
//! environment cannot change it. The default dirs are [`bin_dir`] (the built
//! tools). Root's shell may still prepend entries from ~/.bashrc (Debian's
//! bash reads it for ssh commands); it never reorders the kit's dirs before
//! the system dirs, so a stand-in `zfs` placed there wins over /usr/sbin/zfs.
//!
//! [`bin_dir`]: crate::bin_dir

use crate::netns::Netns;
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// sshd's privilege-separation directory, which must exist.
pub const PRIVSEP_DIR: &str = "/run/sshd";
/// The system part of the remote `PATH`, after the kit's dirs.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Port sshd listens on inside a private namespace (nothing else is there).
const NETNS_PORT: u16 = 2222;
/// How long to wait for "Server listening" in the log.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for sshd to end after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at a free loopback port (another process may take it first).
const PORT_ATTEMPTS: usize = 5;
/// Pause between polls.
const POLL: Duration = Duration::from_millis(50);

/// Creates [`PRIVSEP_DIR`] (mode 0755) when missing.
pub fn ensure_privsep_dir() -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if Path::new(PRIVSEP_DIR).is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(PRIVSEP_DIR)
        .with_context(|| format!("creating {PRIVSEP_DIR}"))
}

/// Whether sshd failed because its port was taken.
fn is_bind_failure(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("Address already in use") || text.contains("Cannot bind any address")
}

/// Makes an ed25519 key pair at `path` (and `path.pub`) without passphrase.
pub fn keygen(path: &Path, comment: &str) -> anyhow::Result<()> {
    let out = Command::new(crate::find_program("ssh-keygen").context("no ssh-keygen")?)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("running ssh-keygen")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One authorized key: its options and its public key line.
#[derive(Debug, Clone)]
struct AuthorizedKey {
    options: String,
    public: String,
}

#[derive(Debug)]
struct KeysState {
    path_dirs: Vec<PathBuf>,
    keys: Vec<AuthorizedKey>,
}

/// A running sshd with its keys; killed when dropped.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    host: String,
    port: u16,
    client_netns: Option<String>,
    key: PathBuf,
    authorized_keys: PathBuf,
    state: Mutex<KeysState>,
}

impl Sshd {
    /// Starts an sshd on a free port of 127.0.0.1.
    pub fn start() -> anyhow::Result<Sshd> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            match Self::launch("127.0.0.1", port, None) {
                Ok(s) => return Ok(s),
                Err(e) if is_bind_failure(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Starts an sshd inside namespace B of `netns` on its address (port
    /// 2222, so one per pair); the ssh argv runs the client inside
    /// namespace A, so the session crosses the shaped link.
    pub fn start_in(netns: &Netns) -> anyhow::Result<Sshd> {
        Self::launch(&netns.addr_b().to_string(), NETNS_PORT, Some(netns))
    }

    fn launch(host: &str, port: u16, netns: Option<&Netns>) -> anyhow::Result<Sshd> {
        ensure_privsep_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("zpipetest-sshd-")
            .tempdir()?;
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        let key = d.join("id_ed25519");
        keygen(&host_key, "zpipe-tests host")?;
        keygen(&key, "zpipe-tests client")?;
        let public = std::fs::read_to_string(d.join("id_ed25519.pub"))?
            .trim()
            .to_string();
        let authorized_keys = d.join("authorized_keys");
        let config = d.join("sshd_config");
        let log = d.join("sshd.log");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {host}\n\
                 Port {port}\n\
                 HostKey {hk}\n\
                 AuthorizedKeysFile {ak}\n\
                 PidFile {pid}\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitUserEnvironment PATH\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 UseDNS no\n\
                 X11Forwarding no\n\
                 MaxStartups 100:30:200\n\
                 MaxSessions 100\n\
                 LogLevel INFO\n",
                hk = host_key.display(),
                ak = authorized_keys.display(),
                pid = d.join("sshd.pid").display(),
            ),
        )?;
        let sshd = crate::find_program("sshd").context("no sshd")?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = ns.command_b(&sshd);
                c.arg("-D");
                c
            }
            None => {
                let mut c = Command::new(&sshd);
                c.arg("-D");
                c
            }
        };
        let log_file = std::fs::File::create(&log)?;
        let child = cmd
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("spawning sshd")?;
        let mut server = Sshd {
            dir,
            child,
            host: host.to_string(),
            port,
            client_netns: netns.map(|n| n.a().to_string()),
            key,
            authorized_keys,
            state: Mutex::new(KeysState {
                path_dirs: vec![crate::bin_dir()],
                keys: vec![AuthorizedKey {
                    options: String::new(),
                    public,
                }],
            }),
        };
        server.write_authorized_keys()?;
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if log.contains("Server listening") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("sshd exited at start ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("sshd did not start listening: {}", log.trim());
            }
            std::thread::sleep(POLL);
        }
    }

    fn write_authorized_keys(&self) -> anyhow::Result<()> {
        let state = self.state.lock().unwrap();
        let path = std::env::join_paths(&state.path_dirs)
            .context("PATH dirs contain ':'")?
            .into_string()
            .map_err(|_| anyhow::anyhow!("PATH dirs are not UTF-8"))?;
        if path.contains('"') {
            bail!("PATH dirs contain '\"'");
        }
        let env = if path.is_empty() {
            format!("environment=\"PATH={SYSTEM_PATH}\"")
        } else {
            format!("environment=\"PATH={path}:{SYSTEM_PATH}\"")
        };
        let mut text = String::new();
        for k in &state.keys {
            if k.options.is_empty() {
                text.push_str(&format!("{env} {}\n", k.public));
            } else {
                text.push_str(&format!("{},{env} {}\n", k.options, k.public));
            }
        }
        // Write then rename, so a login never reads a half-written file.
        let tmp = self.authorized_keys.with_extension("new");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.authorized_keys)?;
        Ok(())
    }

    /// Sets the remote `PATH` to `dirs` followed by [`SYSTEM_PATH`] for all
    /// keys, from the next connection on (default: `[bin_dir()]`).
    pub fn set_env_path(&self, dirs: &[PathBuf]) -> anyhow::Result<()> {
        self.state.lock().unwrap().path_dirs = dirs.to_vec();
        self.write_authorized_keys()
    }

    /// Makes a new client key authorized with `options` (e.g.
    /// `restrict,command="zsend-wrap --serve …"`) and returns its private
    /// key path; use it with [`Sshd::ssh_argv_with_key`]. The remote `PATH`
    /// option is appended to `options`.
    pub fn add_key(&self, options: &str) -> anyhow::Result<PathBuf> {
        let key = {
            // Held across keygen so concurrent calls get distinct files.
            let mut state = self.state.lock().unwrap();
            let n = state.keys.len();
            let key = self.dir.path().join(format!("id_extra_{n}"));
            keygen(&key, &format!("zpipe-tests extra {n}"))?;
            let public = std::fs::read_to_string(key.with_extension("pub"))?
                .trim()
                .to_string();
            state.keys.push(AuthorizedKey {
                options: options.to_string(),
                public,
            });
            key
        };
        self.write_authorized_keys()?;
        Ok(key)
    }

    /// The address sshd listens on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `root@<host>`.
    pub fn destination(&self) -> String {
        format!("root@{}", self.host)
    }

    /// The default client key (authorized without options).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The server's temp dir (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The ssh options that reach this server with `key`, without the
    /// program and the destination: `-F /dev/null -p N -i KEY -o …`.
    pub fn ssh_options_with_key(&self, key: &Path) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "-F".into(),
            "/dev/null".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            key.display().to_string(),
        ];
        for o in [
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
            "ConnectTimeout=10",
        ] {
            v.push("-o".into());
            v.push(o.into());
        }
        v
    }

    /// The ssh options with the default key (see
    /// [`Sshd::ssh_options_with_key`]).
    pub fn ssh_options(&self) -> Vec<String> {
        self.ssh_options_with_key(&self.key)
    }

    /// The argv up to and including `ssh` (`["ssh"]`, or
    /// `["ip", "netns", "exec", A, "ssh"]` for [`Sshd::start_in`]).
    fn ssh_program(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(ns) = &self.client_netns {
            v.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        v.push("ssh".into());
        v
    }

    /// The full argv reaching this server with `key`, ending with the
    /// destination: append the remote command (one string, quoted once).
    pub fn ssh_argv_with_key(&self, key: &Path) -> Vec<String> {
        let mut v = self.ssh_program();
        v.extend(self.ssh_options_with_key(key));
        v.push(self.destination());
        v
    }

    /// The full argv with the default key, ending with the destination.
    pub fn ssh_argv(&self) -> Vec<String> {
        self.ssh_argv_with_key(&self.key)
    }

    /// The ssh argv as one shell command line (each word quoted once), for
    /// tools that take an `--ssh "…"` string.
    pub fn ssh_command_line(&self) -> String {
        crate::shell_join(&self.ssh_argv())
    }

    /// A ready `Command` running `remote_command` (a shell command line for
    /// the remote shell) through ssh with the default key.
    pub fn ssh(&self, remote_command: &str) -> Command {
        self.ssh_with_key(&self.key, remote_command)
    }

    /// A ready `Command` running `remote_command` through ssh with `key`
    /// (from [`Sshd::add_key`]).
    pub fn ssh_with_key(&self, key: &Path, remote_command: &str) -> Command {
        let argv = self.ssh_argv_with_key(key);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).arg(remote_command);
        cmd
    }

    /// sshd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
