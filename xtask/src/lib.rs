//! Library side of xtask: the list of tools and man-page rendering, shared
//! by `cargo xtask` and the test that checks man/ is current.
//!
//! Man pages and completions are generated from each tool's `command()`, the
//! same clap definition the binaries parse with; a test in tests/ fails when
//! the checked-in man/ pages are stale.

/// Every tool's name and clap command, in the order the docs list them.
pub fn tools() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("zpipe-meter", zpipe_meter::command()),
        ("zpipe-compress", zpipe_compress::command()),
        ("zpipe-verify", zpipe_verify::command()),
        ("zsend-wrap", zsend_wrap::command()),
        ("zrecv-wrap", zrecv_wrap::command()),
    ]
}

/// Renders one tool's man page (roff).
pub fn render_man(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .date("2026-11")
        .source(concat!("zpipe ", env!("CARGO_PKG_VERSION")))
        .manual("zpipe manual")
        .render(&mut out)?;
    Ok(out)
}
