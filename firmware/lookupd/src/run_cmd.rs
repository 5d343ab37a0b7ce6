//! `lookupd run` (the appliance loop, configured by lookupd.toml and flags) and
//! `lookupd decode-serial` (serial report frames back to JSON lines).

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::Args;
use lookupd::config::RunConfig;

/// Every setting of lookupd.toml has a flag here; a flag wins over the file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The bundle directory (manifest.toml, model.onnx, gallery.gal, labels.tsv).
    #[arg(long)]
    bundle: PathBuf,
    /// Settings file (see firmware/lookupd/lookupd.toml for every key and its default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the settings in effect as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// [camera] uri: v4l2:///dev/videoN, file:///DIR or file:///DIR?step.
    #[arg(long)]
    camera: Option<String>,
    /// [camera] width.
    #[arg(long)]
    width: Option<u32>,
    /// [camera] height.
    #[arg(long)]
    height: Option<u32>,
    /// [camera] fps.
    #[arg(long)]
    fps: Option<u32>,
    /// [camera] pixel_format: auto, yuyv or mjpeg.
    #[arg(long)]
    pixel_format: Option<String>,
    /// [camera] timeout_ms.
    #[arg(long)]
    camera_timeout_ms: Option<u64>,
    /// [camera] max_frame_age_ms.
    #[arg(long)]
    max_frame_age_ms: Option<u64>,
    /// [trigger] specs (repeatable; replaces the file's list): gpio:CHIP:LINE[:active-low],
    /// motion, stdin, interval:MS.
    #[arg(long = "trigger")]
    triggers: Vec<String>,
    /// [trigger] debounce_ms.
    #[arg(long)]
    debounce_ms: Option<u64>,
    /// [trigger] enroll: the enrol button's GPIO line, CHIP:LINE[:active-low].
    #[arg(long)]
    enroll_trigger: Option<String>,
    /// [trigger] enroll_sku_prefix.
    #[arg(long)]
    enroll_sku_prefix: Option<String>,
    /// [motion] enter.
    #[arg(long)]
    motion_enter: Option<f32>,
    /// [motion] settle.
    #[arg(long)]
    motion_settle: Option<f32>,
    /// [motion] exit.
    #[arg(long)]
    motion_exit: Option<f32>,
    /// [motion] settle_frames.
    #[arg(long)]
    motion_settle_frames: Option<u32>,
    /// [led] line: the status LED's GPIO line, CHIP:LINE[:active-low].
    #[arg(long)]
    led: Option<String>,
    /// [led] blink_ms.
    #[arg(long)]
    blink_ms: Option<u64>,
    /// [lookup] k: hits per report (1 to 10).
    #[arg(long)]
    k: Option<usize>,
    /// [lookup] max_distance: beyond it the verdict is unknown.
    #[arg(long)]
    max_distance: Option<u32>,
    /// [lookup] runtime: auto, gpu or cpu.
    #[arg(long)]
    runtime: Option<String>,
    /// [gpu] pointwise_tiles: auto, narrow or wide.
    #[arg(long)]
    pointwise_tiles: Option<String>,
    /// [gpu] split_workgroups (0: never split).
    #[arg(long)]
    split_workgroups: Option<usize>,
    /// [gpu] split_sums: dispatch or workgroup.
    #[arg(long)]
    split_sums: Option<String>,
    /// [gpu] fuse_depthwise: true or false.
    #[arg(long)]
    fuse_depthwise: Option<bool>,
    /// [report] serial: also write postcard frames (COBS) to this file or serial device.
    #[arg(long)]
    serial: Option<String>,
}

impl RunArgs {
    /// The file's settings (or the defaults) with the flags applied.
    fn settings(&self) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(path) => RunConfig::read(path)?,
            None => RunConfig::default(),
        };
        fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *target = v.clone();
            }
        }
        set(&mut c.camera.uri, &self.camera);
        set(&mut c.camera.width, &self.width);
        set(&mut c.camera.height, &self.height);
        set(&mut c.camera.fps, &self.fps);
        set(&mut c.camera.pixel_format, &self.pixel_format);
        set(&mut c.camera.timeout_ms, &self.camera_timeout_ms);
        set(&mut c.camera.max_frame_age_ms, &self.max_frame_age_ms);
        if !self.triggers.is_empty() {
            c.trigger.specs = self.triggers.clone();
        }
        set(&mut c.trigger.debounce_ms, &self.debounce_ms);
        set(&mut c.trigger.enroll, &self.enroll_trigger);
        set(&mut c.trigger.enroll_sku_prefix, &self.enroll_sku_prefix);
        set(&mut c.motion.enter, &self.motion_enter);
        set(&mut c.motion.settle, &self.motion_settle);
        set(&mut c.motion.exit, &self.motion_exit);
        set(&mut c.motion.settle_frames, &self.motion_settle_frames);
        set(&mut c.led.line, &self.led);
        set(&mut c.led.blink_ms, &self.blink_ms);
        set(&mut c.lookup.k, &self.k);
        if self.max_distance.is_some() {
            c.lookup.max_distance = self.max_distance;
        }
        set(&mut c.lookup.runtime, &self.runtime);
        set(&mut c.gpu.pointwise_tiles, &self.pointwise_tiles);
        set(&mut c.gpu.split_workgroups, &self.split_workgroups);
        set(&mut c.gpu.split_sums, &self.split_sums);
        set(&mut c.gpu.fuse_depthwise, &self.fuse_depthwise);
        set(&mut c.report.serial, &self.serial);
        Ok(c)
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config = args.settings()?;
    if args.print_config {
        print!(
            "{}",
            toml::to_string(&config).context("printing the settings")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    // SIGINT and SIGTERM set the flag; the loop finishes the lookup in hand, reports, flushes
    // and returns, and the process exits 0.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let stdin = Box::new(BufReader::new(std::io::stdin()));
    let mut stdout = std::io::stdout().lock();
    let summary = lookupd::run(&args.bundle, &config, stdin, &mut stdout, stop)
        .with_context(|| format!("lookupd run --bundle {}", args.bundle.display()))?;
    stdout.flush().context("writing the reports")?;
    tracing::info!(
        lookups = summary.lookups,
        enrolled = summary.enrolled,
        faults = summary.faults,
        reason = %summary.reason,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DecodeSerialArgs {
    /// The captured serial stream (`-` or nothing: stdin).
    input: Option<PathBuf>,
}

pub fn decode_serial(args: DecodeSerialArgs) -> Result<ExitCode> {
    let mut input: Box<dyn std::io::BufRead> = match &args.input {
        Some(path) if path.as_os_str() != "-" => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        _ => Box::new(BufReader::new(std::io::stdin())),
    };
    let mut stdout = std::io::stdout().lock();
    let mut bad = 0u64;
    lookupd::report::decode_stream(&mut input, &mut stdout, |index, message| {
        bad += 1;
        eprintln!("lookupd: frame {index} skipped: {message}");
    })
    .context("decoding the serial stream")?;
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
