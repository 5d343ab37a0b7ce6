//! `flash`: keygen, pack, deploy, status, rollback. Argument parsing and printing only; the
//! work is in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use flash::archive::{PackOptions, pack};
use flash::build::{HOST_TARGET, build_lookupd, workspace_root};
use flash::keys::{keygen, load_private};
use flash::slots::{DeployOptions, DeployReport, Limits, StatusReport, deploy, rollback, status};
use flash::target::{TargetSpec, Transport};

#[derive(Debug, Parser)]
#[command(version, about = "Signs bundles and deploys them to the appliance A/B")]
struct Cli {
    /// Extra argument for every ssh call (repeatable), e.g. --ssh-arg=-i --ssh-arg=KEY.
    /// FLASH_SSH_OPTIONS (split at whitespace) is added too.
    #[arg(long, global = true, allow_hyphen_values = true)]
    ssh_arg: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

/// The longest wait either limit takes, in seconds.
const DAY: u64 = 24 * 3600;

/// How long deploy and rollback wait on the target.
#[derive(Debug, Args)]
struct LimitArgs {
    /// Seconds the self-test may run on the target before it is killed and counts as failed.
    #[arg(
        long,
        default_value_t = Limits::default().selftest_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=DAY)
    )]
    selftest_timeout: u64,
    /// Seconds to wait for another deploy or rollback of the target to finish (its lock).
    #[arg(
        long,
        default_value_t = Limits::default().lock_wait.as_secs(),
        value_parser = clap::value_parser!(u64).range(..=DAY)
    )]
    lock_wait: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            selftest_timeout: Duration::from_secs(self.selftest_timeout),
            lock_wait: Duration::from_secs(self.lock_wait),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make an ed25519 key pair: KEYDIR/private and KEYDIR/public. Never overwrites.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle and write one signed archive of it and lookupd.
    Pack {
        /// The bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// KEYDIR/private.
        #[arg(long)]
        key: PathBuf,
        /// Target triple of lookupd (e.g. aarch64-unknown-linux-gnu), or "host".
        #[arg(long, default_value = "aarch64-unknown-linux-gnu")]
        target: String,
        /// A prebuilt lookupd for the target; without it, cargo builds one (release).
        #[arg(long)]
        lookupd: Option<PathBuf>,
        /// Release name recorded in the archive (default: from the bundle's and binary's hashes).
        #[arg(long)]
        version: Option<String>,
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Deploy an archive to TARGET (dir:PATH or ssh://[user@]host[:port]/PATH).
    Deploy {
        archive: PathBuf,
        #[arg(long = "to")]
        target: String,
        /// KEYDIR/public, installed as the target's trusted key on its first deploy.
        #[arg(long)]
        trust_key: Option<PathBuf>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Both slots, their versions and hashes, which is active, the last outcome.
    Status {
        #[arg(long = "to")]
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Switch to the other slot if it verifies and passes the self-test.
    Rollback {
        #[arg(long = "to")]
        target: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flash: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn connect(spec: &str, ssh_args: &[String]) -> Result<Box<dyn Transport>> {
    Ok(TargetSpec::parse(spec)?.connect(ssh_args))
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let progress = std::io::stderr().is_terminal();
    match cli.command {
        Command::Keygen { out } => {
            let (private, public) = keygen(&out)?;
            println!("wrote {} and {}", private.display(), public.display());
        }
        Command::Pack {
            bundle,
            key,
            target,
            lookupd,
            version,
            out,
        } => {
            let key = load_private(&key)?;
            let (triple, build_triple) = if target == "host" {
                (HOST_TARGET.to_owned(), None)
            } else {
                (target.clone(), Some(target.as_str()))
            };
            let lookupd = match lookupd {
                Some(p) => p,
                None => build_lookupd(&workspace_root(), build_triple)?,
            };
            let manifest = pack(&PackOptions {
                bundle: &bundle,
                key: &key,
                target: &triple,
                lookupd: &lookupd,
                version,
                out: &out,
                progress,
            })
            .with_context(|| format!("packing {}", out.display()))?;
            println!(
                "wrote {} (version {}, target {}, {} files, {} bytes)",
                out.display(),
                manifest.version,
                manifest.target,
                manifest.files.len(),
                manifest.total_bytes()
            );
        }
        Command::Deploy {
            archive,
            target,
            trust_key,
            dry_run,
            json,
            limits,
        } => {
            let t = connect(&target, &cli.ssh_arg)?;
            let report = deploy(
                t.as_ref(),
                &DeployOptions {
                    archive: &archive,
                    trust_key: trust_key.as_deref(),
                    dry_run,
                    progress: progress && !json,
                    limits: limits.limits(),
                },
            )
            .with_context(|| format!("deploying {} to {target}", archive.display()))?;
            if json {
                print_json(&report)?;
            } else {
                print_deploy(&report);
            }
            if !report.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Status { target, json } => {
            let t = connect(&target, &cli.ssh_arg)?;
            let report = status(t.as_ref()).with_context(|| format!("reading {target}"))?;
            if json {
                print_json(&report)?;
            } else {
                print_status(&report);
            }
        }
        Command::Rollback {
            target,
            json,
            limits,
        } => {
            let t = connect(&target, &cli.ssh_arg)?;
            let report = rollback(t.as_ref(), limits.limits())
                .with_context(|| format!("rolling back {target}"))?;
            if json {
                print_json(&report)?;
            } else {
                println!("{}", report.message);
                if !report.ok {
                    println!("self-test output:\n{}", report.selftest.output.trim());
                }
            }
            if !report.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_deploy(r: &DeployReport) {
    if let Some(rec) = &r.recovered {
        println!("recovered: {rec}");
    }
    println!(
        "{} version {} ({}) to {} slot {}{}",
        if r.dry_run { "plan: deploy" } else { "deploy" },
        r.version,
        r.archive_target,
        r.target,
        r.slot,
        r.previous
            .map(|p| format!(" (active now: slot {p})"))
            .unwrap_or_default()
    );
    if r.install_key {
        println!("  install trusted.pub (first deploy)");
    }
    for f in &r.files {
        match f.action.as_str() {
            "remove" => println!("  remove {}", f.path),
            _ => println!("  {:6} {} ({} bytes)", f.action, f.path, f.bytes),
        }
    }
    if let Some(run) = &r.selftest
        && !run.passed
    {
        println!("self-test output:\n{}", run.output.trim());
    }
    println!("{}", r.message);
}

fn print_status(r: &StatusReport) {
    println!("target {} ({})", r.target, r.arch);
    println!(
        "trusted key: {}",
        r.trusted_key.as_deref().unwrap_or("none installed")
    );
    for s in &r.slots {
        let Some(slot) = s.slot else { continue };
        let mark = if r.active == Some(slot) { "*" } else { " " };
        println!(
            "{mark} slot {slot}: {} {}{}",
            s.version.as_deref().unwrap_or("-"),
            if s.verified {
                "verified"
            } else {
                "NOT VERIFIED"
            },
            s.problem
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
        if let Some(rec) = &s.record {
            println!("    last outcome: {} at {}", rec.outcome, rec.at_unix);
        }
        for (name, hash) in &s.files {
            println!("    {hash}  {name}");
        }
    }
    if let Some(holder) = &r.locked_by {
        println!("a deploy or rollback is running now: {holder}");
    }
    match (r.unconfirmed, &r.locked_by) {
        (Some(u), Some(_)) => println!("slot {u} is on trial: its self-test has not finished yet"),
        (Some(u), None) => println!(
            "WARNING: the switch to slot {u} was never confirmed (interrupted deploy); the next deploy or rollback undoes it"
        ),
        (None, _) => {}
    }
    if let Some(last) = &r.last {
        println!(
            "last: {} slot {} {} -> {}{}",
            last.action,
            last.slot.map(|s| s.to_string()).unwrap_or_default(),
            last.version,
            last.result,
            if last.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", last.detail.lines().next().unwrap_or(""))
            }
        );
    }
}
