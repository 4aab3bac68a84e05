//! Real resume tokens from public OpenZFS issues and zrepl's tests decode to
//! their documented values; corrupted tokens give one-line usage errors.

use std::path::PathBuf;
use zpipe_core::exit::{classify, Exit};
use zrecv_wrap::token::{decode, encode, ResumeToken};

fn fixtures() -> Vec<(String, serde_json::Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokens");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "fixtures missing in {}", dir.display());
    out
}

fn num(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().unwrap(),
        serde_json::Value::String(s) => {
            u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
        }
        other => panic!("not a number: {other}"),
    }
}

fn expected(e: &serde_json::Value) -> ResumeToken {
    let flags: Vec<&str> = e["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    ResumeToken {
        fromguid: if e["fromguid"].is_null() {
            None
        } else {
            Some(num(&e["fromguid"]))
        },
        object: num(&e["object"]),
        offset: num(&e["offset"]),
        bytes: num(&e["bytes"]),
        toguid: num(&e["toguid"]),
        toname: e["toname"].as_str().unwrap().to_string(),
        embedok: flags.contains(&"embedok"),
        largeblockok: flags.contains(&"largeblockok"),
        compressok: flags.contains(&"compressok"),
        rawok: flags.contains(&"rawok"),
        savedok: flags.contains(&"savedok"),
        ..Default::default()
    }
}

#[test]
fn real_tokens_decode_to_documented_values() {
    for (name, fx) in fixtures() {
        let token = fx["token"].as_str().unwrap();
        let got = decode(token).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(got, expected(&fx["expect"]), "{name}");
    }
}

#[test]
fn real_tokens_survive_reencoding() {
    for (name, fx) in fixtures() {
        let t = decode(fx["token"].as_str().unwrap()).unwrap();
        let again = encode(&t);
        assert_eq!(decode(&again).unwrap(), t, "{name}");
        // The header (version, checksum over our zlib bytes, length) is
        // well-formed: the packed length is the same as the original's.
        let orig_len = fx["token"].as_str().unwrap().split('-').nth(2).unwrap();
        assert_eq!(again.split('-').nth(2).unwrap(), orig_len, "{name}");
    }
}

#[test]
fn real_incremental_token_prints_like_zfs_send_nvt() {
    let fx = fixtures()
        .into_iter()
        .find(|(n, _)| n == "openzfs-issue-8129.json")
        .unwrap()
        .1;
    let t = decode(fx["token"].as_str().unwrap()).unwrap();
    assert_eq!(
        t.to_string(),
        "nvlist version: 0\n\
         \tfromguid = 0x239b146aaec41e6b\n\
         \tobject = 0x21\n\
         \toffset = 0x0\n\
         \tbytes = 0x63d0\n\
         \ttoguid = 0xbbeae606278ca4c4\n\
         \ttoname = master/replicate/TV@2018-1015-0000_daily\n\
         \tlargeblockok = 1\n\
         \tembedok = 1\n\
         \tcompressok = 1\n"
    );
}

/// zrepl's own "corrupted token" case: the last hex digits were replaced.
#[test]
fn zrepl_corrupted_token_is_rejected() {
    let bad = "1-bf31b879a-b8-789c636064000310a500c4ec50360710e72765a5269740f80cd8e4d3d28a534b18e00024cf86249f5459925acc802a8facbf243fbd3433858161f5ddb9ab1ae7c7466a20c97382e5f312735319180af2f3730cf58166953824c2cc0200cd12345";
    let err = decode(bad).unwrap_err();
    let line = format!("{err:#}");
    assert!(line.starts_with("not a valid resume token: "), "{line}");
    assert_eq!(classify(&err), Exit::Usage);
}

/// The zrepl full-send token (header `1-bf31b879a-b8-`).
fn real() -> String {
    fixtures()
        .into_iter()
        .find(|(n, _)| n == "zrepl-full.json")
        .unwrap()
        .1["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn reason(token: &str) -> String {
    let err = decode(token).expect_err(token);
    assert_eq!(classify(&err), Exit::Usage, "{err:#}");
    let line = format!("{err:#}");
    assert!(!line.contains('\n'), "{line}");
    assert!(line.starts_with("not a valid resume token: "), "{line}");
    line
}

#[test]
fn bad_hex_is_named() {
    let t = real().replacen("789c", "78zc", 1);
    assert!(reason(&t).contains("not hex-encoded"));
}

#[test]
fn wrong_checksum_is_named() {
    let t = real().replacen("1-bf31b879a-", "1-bf31b879b-", 1);
    assert!(reason(&t).contains("incorrect checksum"));
}

#[test]
fn truncated_payload_is_detected() {
    let t = real();
    for cut in [t.len() - 2, t.len() - 10, t.len() / 2] {
        let mut s = t[..cut].to_string();
        if s.len() % 2 == 1 {
            s.pop();
        }
        reason(&s);
    }
}

#[test]
fn wrong_version_is_named() {
    let t = real().replacen("1-", "2-", 1);
    assert!(reason(&t).contains("invalid version 2"));
}

#[test]
fn huge_length_is_refused_before_allocating() {
    let t = real().replacen("-b8-", "-ffffffffffff-", 1);
    assert!(reason(&t).contains("exceeds"));
}

#[test]
fn wrong_length_is_named() {
    let t = real().replacen("-b8-", "-b0-", 1);
    assert!(reason(&t).contains("decompression failed"));
    let t = real().replacen("-b8-", "-c0-", 1);
    assert!(reason(&t).contains("decompression failed"));
}

#[test]
fn empty_and_dash_are_refused() {
    assert!(reason("").contains("empty"));
    assert!(reason("-").contains("empty"));
    assert!(reason("1-2-3").contains("invalid format"));
}
