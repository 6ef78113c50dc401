//! `cairn-bench`: end-to-end figures for Cairn, printed as text or one JSON object.
//!
//! Subcommands:
//! - `ingest PATH`: chunk, hash and store every file under PATH into a fresh temporary block
//!   store; also times BLAKE3 alone over the same bytes with the same thread pool (the
//!   physical-limit baseline) and reports peak memory.
//! - `gen PATH`: writes a deterministic data set (mixed, one big file, or many small files).
//! - `edit-cost`: new block bytes after a small insert into a large file.
//! - `dir-change`: new tree-node bytes after changing one entry of a huge directory.
//! - `http-load`, `http-fill`: load against running servers (one or several instances).
//! - `event-latency`: an upload through one instance until its event reaches another's client.
//!
//! It does not compare against other tools itself: `benches/run.py` runs those in the same run.

mod dataset;
mod events;
mod http;
mod measure;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Cairn's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "cairn-bench", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chunk, hash and store every file under PATH into a fresh temporary block store.
    Ingest(measure::IngestArgs),
    /// Write a deterministic data set under PATH (which must not exist yet).
    Gen(dataset::GenArgs),
    /// New bytes stored after inserting a few bytes into a large file.
    EditCost(measure::EditCostArgs),
    /// New tree-node bytes after changing one entry of a huge directory.
    DirChange(measure::DirChangeArgs),
    /// Many clients doing heartbeats and small uploads against a running server.
    HttpLoad(http::LoadArgs),
    /// Upload many small files to a running server, then page through `GET /files/`.
    HttpFill(http::FillArgs),
    /// Time from an upload through one instance to its event on another instance's client.
    EventLatency(events::LatencyArgs),
    /// What the garbage collector's parents-first sweep costs against deleting in list order.
    GcCost(measure::GcCostArgs),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result: Result<()> = match args.command {
        Command::Ingest(args) => measure::ingest(&args),
        Command::Gen(args) => dataset::generate(&args),
        Command::EditCost(args) => measure::edit_cost(&args),
        Command::DirChange(args) => measure::dir_change(&args),
        Command::HttpLoad(args) => http::load(&args),
        Command::HttpFill(args) => http::fill(&args),
        Command::EventLatency(args) => events::latency(&args),
        Command::GcCost(args) => measure::gc_cost(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            #[allow(
                clippy::print_stderr,
                reason = "a binary reports its failure on stderr"
            )]
            {
                eprintln!("cairn-bench: {err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses sizes like `1GiB`, `64MiB`, `512KiB` or plain bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size '{text}'; use e.g. 64MiB"))?;
    let scale = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit '{other}'; use B, KiB, MiB or GiB")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size '{text}' is too large"))
}

/// The path argument type shared by subcommands.
type PathArg = PathBuf;
