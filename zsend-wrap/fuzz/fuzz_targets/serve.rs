//! Fuzz target for serve mode's command parser (SSH_ORIGINAL_COMMAND from
//! a forced-command key) and the `[user@]host:DATASET` parser. Any string
//! is refused with a reason or parsed into a request whose every name lies
//! in an allowed dataset and holds no shell syntax; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zsend_wrap::remote::RemoteSpec;
use zsend_wrap::serve::{parse_request, send_what_args, Policy, Request, SendWhat};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = RemoteSpec::parse(&line);
    let policy = Policy {
        allow: vec!["tank/home".into(), "tank/my ds".into()],
        allow_snapshot: true,
        allow_prune: true,
    };
    let Ok(req) = parse_request(&line, &policy) else {
        return;
    };
    let names: Vec<String> = match &req {
        Request::List(ds) | Request::Snapshot(ds) | Request::Destroy(ds) => vec![ds.clone()],
        Request::Estimate(w) | Request::ZfsSend(w) | Request::Zsend(_, w) => match w {
            SendWhat::Snap { from, snap } => {
                let mut v = vec![snap.clone()];
                if let Some((_, f)) = from {
                    if !f.starts_with('@') {
                        v.push(f.clone());
                    }
                }
                v
            }
            SendWhat::Token(t) => {
                vec![
                    zsend_wrap::token::decode(t)
                        .expect("accepted token decodes")
                        .toname,
                ]
            }
        },
    };
    for n in &names {
        assert!(policy.allows(n), "{line:?} let through {n:?}");
        assert!(!n.starts_with('-'), "{line:?} let through option {n:?}");
    }
    let words = match &req {
        Request::Zsend(argv, _) => argv.clone(),
        Request::Estimate(w) | Request::ZfsSend(w) => send_what_args(w),
        _ => names,
    };
    for w in &words {
        assert!(
            !w.chars().any(|c| c.is_control() || "$`;|&<>".contains(c)),
            "{line:?} passed on {w:?}"
        );
    }
});
