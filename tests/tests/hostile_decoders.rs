//! Hostile input for every decoder, through the real binaries: garbage,
//! empty, huge declared lengths and truncations end in one line on stderr
//! and the documented exit code (docs/EXIT-CODES.md), never a panic, and
//! never an allocation that follows a declared length: every case runs
//! under an address-space limit (`ulimit -v`) far below what the declared
//! lengths would need. The table in docs/RELIABILITY.md ("Hostile input")
//! points here.

use std::io::Write;
use std::process::{Command, Stdio};
use zpipe_tests::bin;
use zpipe_tests::data::noise;

/// Address-space limit (KiB) for every run: 512 MiB. The tools need far
/// less; the inputs below declare gigabytes.
const VMEM_KIB: u64 = 512 * 1024;

/// What a limited run left behind.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stderr: String,
    stdout_len: usize,
}

/// Runs `tool args` with `input` on stdin (through a file) and `env` set,
/// under [`VMEM_KIB`] of address space.
fn run_env(tool: &str, args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(input)
        .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {VMEM_KIB} && exec \"$0\" \"$@\""))
        .arg(bin(tool))
        .args(args)
        // Few malloc arenas, so the limit is about data, not thread count.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(std::fs::File::open(&path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    Out {
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        stdout_len: o.stdout.len(),
    }
}

fn run(tool: &str, args: &[&str], input: &[u8]) -> Out {
    run_env(tool, args, input, &[])
}

/// Exit `code`, exactly one stderr line starting with `tool: ` and holding
/// every word of `words`, and no panic text.
#[track_caller]
fn assert_refused(what: &str, o: &Out, tool: &str, code: i32, words: &[&str]) {
    assert_eq!(o.code, Some(code), "{what}: {o:?}");
    assert_eq!(o.stderr.lines().count(), 1, "{what}: {o:?}");
    assert!(o.stderr.starts_with(&format!("{tool}: ")), "{what}: {o:?}");
    assert!(!o.stderr.contains("panicked"), "{what}: {o:?}");
    for w in words {
        assert!(o.stderr.contains(w), "{what}: no '{w}' in {o:?}");
    }
}

#[test]
fn limit_leaves_room_for_honest_work() {
    // The same limit passes a normal stream, so the refusals below are the
    // decoders' own.
    let data = noise(1, 3 << 20);
    let mut enc = Vec::new();
    let mut e = zpipe_verify::Encoder::new(&mut enc, &Default::default()).unwrap();
    e.write_all(&data).unwrap();
    e.finish().unwrap();
    let o = run("zpipe-verify", &["-d"], &enc);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout_len, data.len());
}

mod verify_framing {
    use super::*;
    use zpipe_verify::format::{DataHeader, Header, MAX_FRAME_LEN};

    fn header(max: u32) -> Vec<u8> {
        Header { max_frame_len: max }.encode().to_vec()
    }

    fn data_header(len: u32) -> Vec<u8> {
        DataHeader {
            len,
            seq: 0,
            offset: 0,
            sha: [7; 32],
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn garbage_empty_huge_and_truncated_framing_exit_2() {
        let max = MAX_FRAME_LEN as u32;
        let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
            ("empty", Vec::new(), &[]),
            ("garbage", noise(2, 1 << 20), &["not a zpipe-verify stream"]),
            ("header only", header(1 << 20), &[]),
            (
                "header declaring 4 GiB frames",
                header(u32::MAX),
                &["frame size"],
            ),
            (
                "frame declaring 4 GiB",
                [header(max), data_header(u32::MAX)].concat(),
                &[],
            ),
            (
                "frame declaring 16 MiB, 10 bytes sent",
                [header(max), data_header(max), vec![1; 10]].concat(),
                &[],
            ),
            (
                "frame longer than the header allows",
                [header(4096), data_header(4097), vec![1; 4097]].concat(),
                &[],
            ),
            ("cut record", header(max)[..40].to_vec(), &[]),
        ];
        for (what, input, words) in cases {
            let o = run("zpipe-verify", &["-d"], &input);
            assert_refused(what, &o, "zpipe-verify", 2, words);
            assert_eq!(o.stdout_len, 0, "{what}: unverified bytes written");
        }
    }
}

mod verify_zfs {
    use super::*;
    use zpipe_verify::zfs::builder::{BeginFields, StreamBuilder};
    use zpipe_verify::zfs::ByteOrder;

    fn begin() -> Vec<u8> {
        let mut b = StreamBuilder::new(ByteOrder::Little, false);
        b.begin(
            &BeginFields {
                toname: "p/a@s".into(),
                toguid: 5,
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        b.into_inner()
    }

    #[test]
    fn garbage_empty_huge_and_truncated_zfs_streams_exit_2() {
        let mut huge_payload = begin();
        // drr_payloadlen of the BEGIN: 2 GiB of nvlist that never comes.
        huge_payload[4..8].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let mut huge_be = begin();
        huge_be[4..8].copy_from_slice(&0xffff_fff8u32.to_le_bytes());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("garbage", noise(3, 1 << 20)),
            ("BEGIN declaring a 2 GiB payload", huge_payload),
            ("BEGIN declaring a 4 GiB payload", huge_be),
            ("cut BEGIN", begin()[..100].to_vec()),
            ("BEGIN and nothing after it", begin()),
        ];
        for (what, input) in cases {
            let o = run("zpipe-verify", &["--zfs"], &input);
            assert_refused(what, &o, "zpipe-verify", 2, &[]);
        }
    }
}

mod zstd_input {
    use super::*;
    use zpipe_compress::{SKIPPABLE_MAGIC_MIN, ZSTD_MAGIC};

    fn skippable(len: u32, body: &[u8]) -> Vec<u8> {
        [
            &(SKIPPABLE_MAGIC_MIN + 3).to_le_bytes()[..],
            &len.to_le_bytes(),
            body,
        ]
        .concat()
    }

    fn zstd_header(descriptor: u8, rest: &[u8]) -> Vec<u8> {
        [&ZSTD_MAGIC.to_le_bytes()[..], &[descriptor], rest].concat()
    }

    #[test]
    fn garbage_empty_huge_and_truncated_zstd_fail_cleanly() {
        // A raw last block of 1 byte: header (1 << 3) | last.
        let one_byte_block = [0x09, 0x00, 0x00, b'x'];
        let cases: Vec<(&str, Vec<u8>, i32, &[&str])> = vec![
            ("garbage", noise(4, 1 << 20), 1, &["not zstd"]),
            (
                "skippable frame declaring 4 GiB",
                skippable(u32::MAX - 16, &noise(5, 1000)),
                2,
                &[],
            ),
            (
                "window of 2 GiB",
                // No single segment, window descriptor exponent 21: 2^31.
                zstd_header(0x00, &[21 << 3, 0x09, 0x00, 0x00, b'x']),
                1,
                &["--memory"],
            ),
            (
                "content size of 2^60 with one byte",
                [
                    zstd_header(0xC0, &[0x00]),
                    (1u64 << 60).to_le_bytes().to_vec(),
                    one_byte_block.to_vec(),
                ]
                .concat(),
                2,
                &[],
            ),
            ("cut frame header", zstd_header(0xC0, &[0x00, 1, 2]), 2, &[]),
        ];
        for (what, input, code, words) in cases {
            let o = run("zpipe-compress", &["-d"], &input);
            assert_refused(what, &o, "zpipe-compress", code, words);
        }
    }

    #[test]
    fn fuzz_leak_report_input_is_a_clean_error() {
        // The `decompress` target's first report (LeakSanitizer, 112 bytes
        // of a detached pipeline thread's TLS, not a real leak; see
        // docs/RELIABILITY.md "Fuzzing"): the input itself must fail cleanly.
        let data = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xdf, 0xff, 0x83, 0xf7, 0x0b, 0x26, 0x02,
        ];
        let cfg = zpipe_compress::DecompressConfig {
            workers: 2,
            memory_limit: 64 << 20,
        };
        let e = zpipe_compress::mem::decompress_bytes(&data[1..], 255 * 97 + 1, cfg).unwrap_err();
        let code = zpipe_core::exit::classify(&e);
        assert!(
            matches!(code, zpipe_core::Exit::Integrity | zpipe_core::Exit::Usage),
            "{e:#}"
        );
        let o = run("zpipe-compress", &["-d"], &data[1..]);
        assert_refused("fuzz input", &o, "zpipe-compress", 1, &[]);
    }

    #[test]
    fn lying_pzstd_size_frame_is_a_hint_not_an_allocation() {
        // A size frame is a skippable frame: zstd -d ignores it, and so does
        // the decoder when it lies (declares 4 GiB before a 9-byte frame),
        // without reserving what it declares.
        let one_byte_block = [0x09, 0x00, 0x00, b'x'];
        let input = [
            zpipe_compress::format::size_frame(u32::MAX).to_vec(),
            zstd_header(0x20, &[0x01]),
            one_byte_block.to_vec(),
        ]
        .concat();
        let o = run("zpipe-compress", &["-d"], &input);
        assert_eq!(o.code, Some(0), "{o:?}");
        assert_eq!(o.stdout_len, 1);
    }
}

mod meter_files_and_flags {
    use super::*;

    #[test]
    fn endless_or_binary_size_and_limit_files_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("binary");
        std::fs::write(&binary, noise(6, 4096)).unwrap();
        let binary = binary.display().to_string();
        let cases: Vec<(&str, Vec<&str>, &[&str])> = vec![
            (
                "endless --size-file",
                vec!["--size-file", "/dev/zero"],
                &["--size-file", "larger than"],
            ),
            (
                "endless --limit-file",
                vec!["--limit-file", "/dev/zero"],
                &["--limit-file", "larger than"],
            ),
            (
                "binary --limit-file",
                vec!["--limit-file", &binary],
                &["--limit-file"],
            ),
            (
                "binary --size-file",
                vec!["--size-file", &binary],
                &["--size-file"],
            ),
            (
                "missing --limit-file",
                vec!["--limit-file", "/nonexistent/x"],
                &["--limit-file"],
            ),
        ];
        for (what, args, words) in cases {
            let mut a = vec!["--quiet"];
            a.extend(args);
            let o = run("zpipe-meter", &a, b"data");
            assert_refused(what, &o, "zpipe-meter", 1, words);
        }
    }

    #[test]
    fn absurd_flag_values_are_usage_errors_naming_the_flag() {
        let nines = "9".repeat(400);
        let cases: Vec<(&str, &str)> = vec![
            ("--limit", "0"),
            ("--limit", "-5M"),
            ("--limit", &nines),
            ("--limit", "1e9"),
            ("--limit", "NaN"),
            ("--limit", "inf"),
            ("--limit", ""),
            ("--buffer", "9999P"),
            ("--buffer", "0"),
            ("--stall-timeout", &nines),
            ("--stall-timeout", "99999999999d"),
            ("--stall-timeout", "-1s"),
            ("--interval", "5 fortnights"),
            ("--fill", "101"),
            ("--limit-schedule", "25:00-01:00=1M"),
            ("--limit-schedule", ",,,"),
            ("--limit-schedule", "08:00-09:00=\u{1}"),
        ];
        for (flag, value) in cases {
            // `--flag=value`, so a value starting with '-' stays a value.
            let arg = format!("{flag}={value}");
            let mut args = vec!["--quiet", arg.as_str()];
            if flag == "--fill" {
                args.extend(["--buffer", "1M"]);
            }
            let o = run("zpipe-meter", &args, b"data");
            let what = format!("{flag} {value:.40}");
            assert_refused(&what, &o, "zpipe-meter", 1, &[flag]);
        }
    }

    #[test]
    fn absurd_size_means_unknown_not_an_error() {
        for size in ["18446744073709551616", "99999999999999999999999", ""] {
            let o = run("zpipe-meter", &["--quiet", "--size", size], b"data");
            assert_eq!(o.code, Some(0), "--size {size}: {o:?}");
            assert_eq!(o.stdout_len, 4);
        }
    }
}

mod child_output {
    use super::*;

    /// A `zfs` or `ssh` stand-in that prints zeros forever.
    const ENDLESS: &str = "sh -c 'exec cat /dev/zero' endless";

    #[test]
    fn endless_remote_listing_is_a_child_error_not_an_oom() {
        // Pull mode reads the source's snapshot listing through ssh: a
        // hostile or broken source must not exhaust the backup host.
        let args = [
            "--quiet",
            "--zfs",
            "true",
            "--ssh",
            ENDLESS,
            "--from",
            "h:tank/ds",
            "tank/x",
        ];
        let o = run("zrecv-wrap", &args, b"");
        assert_refused("endless ssh output", &o, "zrecv-wrap", 4, &["more than"]);
    }

    #[test]
    fn endless_zfs_output_is_a_child_error_not_an_oom() {
        let o = run("zsend-wrap", &["--zfs", ENDLESS, "tank/a@s"], b"");
        assert_refused("endless zfs output", &o, "zsend-wrap", 4, &["more than"]);
    }
}

mod tokens_and_nvlists {
    use super::*;
    use zpipe_core::nvlist::{unpack_native, NvListError};

    /// A zlib stream of `data` in stored blocks (no compressor needed).
    fn zlib_stored(data: &[u8]) -> Vec<u8> {
        let mut z = vec![0x78, 0x01];
        let mut chunks = data.chunks(65535).peekable();
        if chunks.peek().is_none() {
            z.extend([1, 0, 0, 0xff, 0xff]);
        }
        while let Some(c) = chunks.next() {
            z.push(u8::from(chunks.peek().is_none()));
            let len = c.len() as u16;
            z.extend(len.to_le_bytes());
            z.extend((!len).to_le_bytes());
            z.extend(c);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        z.extend(((b << 16) | a).to_be_bytes());
        z
    }

    /// A token framing `packed` (claimed length `len`) with a correct checksum.
    fn token(packed: &[u8], len: u64) -> String {
        let z = zlib_stored(packed);
        let sum = zpipe_core::fletcher4::varsize(&z)[0];
        let hex: String = z.iter().map(|b| format!("{b:02x}")).collect();
        format!("1-{sum:x}-{len:x}-{hex}")
    }

    /// A native little-endian nvlist holding one pair with the given
    /// declared size, element count and type.
    fn nvlist_pair(size: i32, nelem: i32, ty: i32) -> Vec<u8> {
        let mut b = vec![0, 1, 0, 0];
        b.extend(0i32.to_le_bytes()); // nvl_version
        b.extend(1u32.to_le_bytes()); // NV_UNIQUE_NAME
        b.extend(size.to_le_bytes());
        b.extend(7i16.to_le_bytes()); // "toname\0"
        b.extend(0i16.to_le_bytes());
        b.extend(nelem.to_le_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(b"toname\0\0");
        b.extend([0u8; 16]);
        b.extend(0i32.to_le_bytes()); // end of list
        b
    }

    const UINT64_ARRAY: i32 = 16;
    const STRING: i32 = 9;

    #[test]
    fn huge_declared_nvlist_sizes_are_errors_not_allocations() {
        let cases = [
            ("pair size 2 GiB", nvlist_pair(i32::MAX, 1, STRING)),
            ("negative pair size", nvlist_pair(-8, 1, STRING)),
            (
                "2^31 uint64 elements",
                nvlist_pair(40, i32::MAX, UINT64_ARRAY),
            ),
            ("negative element count", nvlist_pair(40, -1, UINT64_ARRAY)),
            ("unknown type", nvlist_pair(40, 1, 12345)),
        ];
        for (what, b) in cases {
            assert!(
                matches!(unpack_native(&b), Err(NvListError::BadPair { .. })),
                "{what}: {:?}",
                unpack_native(&b)
            );
        }
        // Nesting as deep as the input allows: refused at the libnvpair limit.
        let mut deep = vec![0, 1, 0, 0];
        for _ in 0..1000 {
            deep.extend(0i32.to_le_bytes());
            deep.extend(1u32.to_le_bytes());
            deep.extend(48i32.to_le_bytes());
            deep.extend(2i16.to_le_bytes());
            deep.extend(0i16.to_le_bytes());
            deep.extend(1i32.to_le_bytes());
            deep.extend(19i32.to_le_bytes()); // DATA_TYPE_NVLIST
            deep.extend(b"n\0\0\0\0\0\0\0");
            deep.extend(0i32.to_le_bytes());
            deep.extend(1u32.to_le_bytes());
            deep.extend([0u8; 16]);
        }
        assert_eq!(unpack_native(&deep), Err(NvListError::TooDeep));
    }

    /// Serve mode decodes the token of `zfs send -t` before anything runs.
    fn serve_token(t: &str) -> Out {
        let cmd = format!("zfs send -t {t}");
        run_env(
            "zsend-wrap",
            &["--serve", "--allow", "pool", "--zfs", "false"],
            b"",
            &[("SSH_ORIGINAL_COMMAND", &cmd)],
        )
    }

    #[test]
    fn garbage_huge_and_truncated_tokens_are_refused_in_one_line() {
        let good = zsend_wrap::token::encode(&zsend_wrap::token::ResumeToken {
            toname: "pool/fs@s".into(),
            toguid: 1,
            ..Default::default()
        });
        let packed = nvlist_pair(40, i32::MAX, UINT64_ARRAY);
        let cases: Vec<(&str, String, &str)> = vec![
            ("garbage", "x".repeat(300), "invalid format"),
            ("empty payload", "1-0-10-".into(), "empty"),
            ("length 2^64-1", "1-0-ffffffffffffffff-00".into(), "exceeds"),
            (
                "length beyond 64 bits",
                format!("1-0-{}-00", "f".repeat(40)),
                "overflows",
            ),
            ("cut payload", good[..good.len() - 6].to_string(), "token"),
            ("odd hex", format!("{good}0"), "odd"),
            ("wrong checksum", good.replacen("1-", "1-1", 1), "checksum"),
            ("version 2", good.replacen('1', "2", 1), "version"),
            (
                "inflates beyond its declared length (zlib bomb)",
                token(&vec![0u8; 2000], 16),
                "more than",
            ),
            (
                "nvlist with 2^31 elements",
                token(&packed, packed.len() as u64),
                "nvlist",
            ),
        ];
        for (what, t, word) in cases {
            let o = serve_token(&t);
            assert_refused(what, &o, "zsend-wrap", 1, &["resume token", word]);
        }
    }
}

mod wrapper_input {
    use super::*;

    #[test]
    fn zrecv_wrap_refuses_garbage_empty_and_cut_input_in_one_line() {
        let mut framed = Vec::new();
        let mut e = zpipe_verify::Encoder::new(&mut framed, &Default::default()).unwrap();
        e.write_all(&noise(9, 100_000)).unwrap();
        e.finish().unwrap();
        let cases: Vec<(&str, Vec<u8>, i32, &[&str])> = vec![
            (
                "garbage",
                noise(8, 100_000),
                1,
                &["not a zsend-wrap stream"],
            ),
            ("empty", Vec::new(), 2, &["empty"]),
            ("zeros", vec![0; 64], 1, &["not a zsend-wrap stream"]),
            ("cut framed stream", framed[..50_000].to_vec(), 2, &[]),
        ];
        for (what, input, code, words) in cases {
            let o = run(
                "zrecv-wrap",
                &["--quiet", "--zfs", "false", "pool/x"],
                &input,
            );
            assert_refused(what, &o, "zrecv-wrap", code, words);
        }
    }
}
