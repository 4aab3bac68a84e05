//! `zfs get` for the stand-in: adds the `receive_resume_token` property
//! (value `-` when there is no partial state, source `-`), in any position
//! of the property list, with `-H`, `-p`, `-r`, `-d`, `-o` and `-s`.
//! Requests without it go to the real `zfs get` unchanged.

use crate::state::{self, Partial, PARTIAL_PROP};
use crate::{exec_real, run_real, zfs_usage, ZfsError};

/// The OpenZFS property the stand-in adds.
pub const TOKEN_PROP: &str = "receive_resume_token";
/// Columns of `zfs get` output.
const COLUMNS: [&str; 4] = ["name", "property", "value", "source"];

#[derive(Default)]
struct Args {
    scripted: bool,
    parsable: bool,
    recursive: bool,
    depth: Option<String>,
    fields: Option<Vec<String>>,
    sources: Option<Vec<String>>,
    types: Option<String>,
    props: Vec<String>,
    datasets: Vec<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    let mut positional = Vec::new();
    while let Some(arg) = it.next() {
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            positional.push(arg.clone());
            continue;
        };
        let chars: Vec<char> = cluster.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            match c {
                'H' => a.scripted = true,
                'p' => a.parsable = true,
                'r' => a.recursive = true,
                'd' | 'o' | 's' | 't' => {
                    let rest: String = chars[i + 1..].iter().collect();
                    let val = if rest.is_empty() {
                        it.next().cloned().ok_or_else(|| {
                            zfs_usage(format!("missing argument for '{c}' option"))
                        })?
                    } else {
                        rest
                    };
                    let list = || val.split(',').map(str::to_string).collect::<Vec<_>>();
                    match c {
                        'd' => a.depth = Some(val.clone()),
                        'o' => a.fields = Some(list()),
                        's' => a.sources = Some(list()),
                        _ => a.types = Some(val.clone()),
                    }
                    break;
                }
                other => return Err(zfs_usage(format!("invalid option '{other}'"))),
            }
        }
    }
    let mut pos = positional.into_iter();
    a.props = pos
        .next()
        .ok_or_else(|| zfs_usage("missing property argument"))?
        .split(',')
        .map(str::to_string)
        .collect();
    a.datasets = pos.collect();
    Ok(a)
}

/// One output row: name, property, value, source.
type Row = [String; 4];

/// Runs `zfs get`.
pub fn main(args: &[String]) -> anyhow::Result<i32> {
    let a = match parse(args) {
        Ok(a) => a,
        Err(_) => exec_real(std::iter::once("get".to_string()).chain(args.iter().cloned())),
    };
    if !a.props.iter().any(|p| p == TOKEN_PROP) {
        exec_real(std::iter::once("get".to_string()).chain(args.iter().cloned()));
    }
    let mut real_props: Vec<String> = a
        .props
        .iter()
        .filter(|p| *p != TOKEN_PROP)
        .cloned()
        .collect();
    if !real_props.iter().any(|p| p == PARTIAL_PROP || p == "all") {
        real_props.push(PARTIAL_PROP.to_string());
    }
    let joined = real_props.join(",");
    let mut cmd: Vec<&str> = vec!["get", "-H", "-o", "name,property,value,source"];
    if a.parsable {
        cmd.push("-p");
    }
    if a.recursive {
        cmd.push("-r");
    }
    if let Some(d) = &a.depth {
        cmd.extend(["-d", d]);
    }
    if let Some(t) = &a.types {
        cmd.extend(["-t", t]);
    }
    cmd.push(&joined);
    cmd.extend(a.datasets.iter().map(String::as_str));
    let c = run_real(&cmd)?;
    if !c.ok() {
        return Err(ZfsError(c.stderr.trim_end().to_string(), c.code).into());
    }
    let real: Vec<Row> = c
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t').map(str::to_string);
            Some([f.next()?, f.next()?, f.next()?, f.next()?])
        })
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for r in &real {
        if !names.contains(&r[0].as_str()) {
            names.push(&r[0]);
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    for name in names {
        let of = |prop: &str| -> Vec<&Row> {
            real.iter()
                .filter(|r| r[0] == name && r[1] == prop)
                .collect()
        };
        for prop in &a.props {
            if prop == TOKEN_PROP {
                let partial = of(PARTIAL_PROP).first().map(|r| r[2].clone());
                rows.push([
                    name.to_string(),
                    TOKEN_PROP.to_string(),
                    token_value(name, partial.as_deref()),
                    "-".to_string(),
                ]);
            } else if prop == "all" {
                rows.extend(real.iter().filter(|r| r[0] == name).cloned());
            } else {
                rows.extend(of(prop).into_iter().cloned());
            }
        }
    }
    if let Some(s) = &a.sources {
        rows.retain(|r| source_matches(&r[3], s));
    }
    print!("{}", render(&a, &rows));
    Ok(0)
}

fn token_value(name: &str, partial: Option<&str>) -> String {
    if name.contains('@') {
        return "-".into();
    }
    partial
        .and_then(Partial::parse)
        .and_then(|p| state::token_string(&p).ok())
        .unwrap_or_else(|| "-".into())
}

fn source_matches(source: &str, wanted: &[String]) -> bool {
    let kind = match source {
        "-" => "none",
        "local" => "local",
        "default" => "default",
        "temporary" => "temporary",
        "received" => "received",
        s if s.starts_with("inherited") => "inherited",
        _ => "none",
    };
    wanted.iter().any(|w| w == kind)
}

fn render(a: &Args, rows: &[Row]) -> String {
    let fields: Vec<usize> = a
        .fields
        .clone()
        .unwrap_or_else(|| COLUMNS.iter().map(|s| s.to_string()).collect())
        .iter()
        .filter_map(|f| COLUMNS.iter().position(|c| c == f))
        .collect();
    let mut out = String::new();
    if a.scripted {
        for r in rows {
            let cells: Vec<&str> = fields.iter().map(|&i| r[i].as_str()).collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
        return out;
    }
    let header: Vec<String> = fields.iter().map(|&i| COLUMNS[i].to_uppercase()).collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in rows {
        for (k, &i) in fields.iter().enumerate() {
            widths[k] = widths[k].max(r[i].len());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (k, c) in cells.iter().enumerate() {
            if k == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[k]));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(String::as_str).collect());
    for r in rows {
        line(fields.iter().map(|&i| r[i].as_str()).collect());
    }
    out
}
