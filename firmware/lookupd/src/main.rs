//! `lookupd`: the appliance binary. Argument parsing and wiring only; the logic lives in the
//! library crates and in this package's library (`lookupd::Appliance`, `lookupd::selftest`).

mod appliance_cmd;
mod gallery_cmd;
mod model_cmd;
mod npy;
mod run_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lookupd", version, about = "The product-lookup appliance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance: camera, triggers, lookups, reports (JSON lines on stdout), enrolment.
    Run(Box<run_cmd::RunArgs>),
    /// Name the products in images: embed each and search the bundle's gallery.
    Query(appliance_cmd::QueryArgs),
    /// Check a bundle (hashes, gallery, labels, model, self-test code); exit code 0 only if all
    /// checks pass.
    Selftest(appliance_cmd::SelftestArgs),
    /// Enrol photographs of a product as new gallery items (one per image), crash-safely.
    Enroll(appliance_cmd::EnrollArgs),
    /// Read serial report frames (postcard, COBS-delimited) and print them as JSON lines.
    DecodeSerial(run_cmd::DecodeSerialArgs),
    /// Build, inspect, check and search binary gallery files.
    #[command(subcommand)]
    Gallery(gallery_cmd::GalleryCommand),
    /// Run an ONNX model on a float32 NCHW .npy batch and write its first output as .npy.
    Embed(model_cmd::EmbedArgs),
    /// Time an ONNX model on a synthetic batch; prints one JSON object.
    BenchModel(model_cmd::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOOKUPD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_cmd::run(*args),
        Command::DecodeSerial(args) => run_cmd::decode_serial(args),
        Command::Query(args) => appliance_cmd::query(args),
        Command::Selftest(args) => appliance_cmd::selftest(args),
        Command::Enroll(args) => appliance_cmd::enroll(args),
        Command::Gallery(cmd) => gallery_cmd::run(cmd),
        Command::Embed(args) => model_cmd::embed(args),
        Command::BenchModel(args) => model_cmd::bench(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lookupd: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
