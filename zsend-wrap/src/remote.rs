//! Reaching the other host: `[user@]host:DATASET` specs, the ssh argv
//! (user-overridable with `--ssh`), the cipher choice, and the one quoting
//! step for the one remote shell.
//!
//! ssh joins everything after the host into one string that the remote
//! user's shell parses. We therefore hand ssh exactly one argument, built by
//! quoting each remote word once with [`zpipe_core::child::quote_word`];
//! nothing is ever passed through a local shell.

use std::ffi::OsString;
use zpipe_core::child::quote_argv;
use zpipe_core::exit;

/// The fast AEAD ciphers we prefer when the CPU has AES instructions, with
/// OpenSSH's default last so negotiation never fails because of us.
pub const FAST_CIPHERS: &str =
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com";

/// `[user@]host:DATASET` as given to `--to` / `--from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// `user@host`, `host`, or `[v6addr]` as ssh takes it.
    pub host: String,
    /// The dataset (or snapshot) on that host.
    pub dataset: String,
}

impl RemoteSpec {
    /// Parses `[user@]host:DATASET`; `[::1]:pool/ds` for IPv6. The dataset
    /// may itself contain colons; the host may not.
    pub fn parse(s: &str) -> anyhow::Result<RemoteSpec> {
        let bad = || {
            exit::usage(format!(
                "'{s}' is not [user@]host:DATASET (e.g. backup@nas:tank/backups/home)"
            ))
        };
        let (host, dataset) = if let Some(open) = s.find('[').filter(|&i| !s[..i].contains(':')) {
            let close = s[open..].find("]:").map(|i| open + i).ok_or_else(bad)?;
            (&s[..close + 1], &s[close + 2..])
        } else {
            s.split_once(':').ok_or_else(bad)?
        };
        if host.is_empty() || dataset.is_empty() || host.contains('/') || host.starts_with('-') {
            return Err(bad());
        }
        Ok(RemoteSpec {
            host: host.to_string(),
            dataset: dataset.to_string(),
        })
    }
}

/// How to run ssh: the base argv and the cipher policy.
#[derive(Debug, Clone)]
pub struct Ssh {
    base: Vec<OsString>,
    cipher: Option<String>,
}

impl Ssh {
    /// From `--ssh "ssh -p 2222 -i key"` (split like a shell would) and
    /// `--ssh-cipher`.
    pub fn new(ssh: Option<&str>, cipher: Option<&str>) -> anyhow::Result<Ssh> {
        let spec = ssh.unwrap_or("ssh");
        let words = shlex::split(spec)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| exit::usage(format!("--ssh: cannot split '{spec}' into words")))?;
        Ok(Ssh {
            base: words.into_iter().map(OsString::from).collect(),
            cipher: cipher.map(str::to_string),
        })
    }

    /// True when the user's ssh argv already picks ciphers.
    pub fn user_chose_cipher(&self) -> bool {
        let words: Vec<String> = self
            .base
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        words.iter().enumerate().any(|(i, w)| {
            w == "-c"
                || (w.starts_with("-c") && w.len() > 2 && !w.starts_with("--"))
                || w.to_ascii_lowercase().contains("ciphers")
                || (w == "-o"
                    && words
                        .get(i + 1)
                        .is_some_and(|n| n.to_ascii_lowercase().starts_with("ciphers")))
        })
    }

    /// The ssh argv running `remote` (already split into words) on `host`.
    pub fn argv<S: AsRef<str>>(&self, host: &str, remote: &[S]) -> Vec<OsString> {
        let mut v = self.base.clone();
        if !self.user_chose_cipher() {
            if let Some(c) = &self.cipher {
                v.extend(["-c".into(), c.into()]);
            } else if cpu_has_aes() {
                v.extend(["-c".into(), FAST_CIPHERS.into()]);
            }
        }
        v.push("--".into());
        v.push(host.into());
        v.push(remote_command(remote).into());
        v
    }
}

/// The single remote command string: each word quoted exactly once.
pub fn remote_command<S: AsRef<str>>(words: &[S]) -> String {
    let w: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    quote_argv(&w)
}

/// True when this CPU has AES instructions (x86 `aes`, arm `aes`).
pub fn cpu_has_aes() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|t| {
        t.lines()
            .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
            .any(|l| l.split_whitespace().any(|w| w == "aes"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let r = RemoteSpec::parse("backup@nas:tank/my ds:x").unwrap();
        assert_eq!(r.host, "backup@nas");
        assert_eq!(r.dataset, "tank/my ds:x");
        let r = RemoteSpec::parse("[::1]:tank/a").unwrap();
        assert_eq!(r.host, "[::1]");
        assert_eq!(r.dataset, "tank/a");
        for bad in ["tank/a", "host:", ":tank", "-oProxyCommand=x:tank", "a/b:c"] {
            assert!(RemoteSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_words_are_quoted_once() {
        let cmd = remote_command(&["zrecv-wrap", "-F", "tank/a$(touch x)b", "t;b", "it's"]);
        assert_eq!(cmd, r"zrecv-wrap -F 'tank/a$(touch x)b' 't;b' 'it'\''s'");
    }

    #[test]
    fn cipher_policy() {
        let s = Ssh::new(Some("ssh -p 2222"), None).unwrap();
        let argv = s.argv("h", &["true"]);
        let has_c = argv.iter().any(|w| w == "-c");
        assert_eq!(has_c, cpu_has_aes());
        let s = Ssh::new(Some("ssh -c aes256-ctr"), None).unwrap();
        assert!(s.user_chose_cipher());
        assert_eq!(
            s.argv("h", &["true"]).iter().filter(|w| *w == "-c").count(),
            1
        );
        let s = Ssh::new(Some("ssh -o Ciphers=aes128-ctr"), Some("x")).unwrap();
        assert!(s.user_chose_cipher());
        let s = Ssh::new(None, Some("aes256-gcm@openssh.com")).unwrap();
        let argv = s.argv("h", &["true"]);
        assert!(argv
            .windows(2)
            .any(|w| w[0] == "-c" && w[1] == "aes256-gcm@openssh.com"));
        assert_eq!(argv.last().unwrap(), "true");
    }
}
