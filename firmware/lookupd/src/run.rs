//! The appliance loop: triggers -> newest frame -> preprocess -> embed and pack -> Hamming
//! top-k -> report (JSON lines, and serial frames), with enrolment and fault handling.
//!
//! Threads: one captures frames (and runs the motion trigger), one per GPIO line, interval or
//! stdin trigger; they send commands on a bounded channel to this loop, which owns the
//! appliance. The loop's buffers (frame, report, JSON and serial scratch) are made once.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

use crate::appliance::Appliance;
use crate::camera::{Camera, CameraUri, CaptureOptions, MotionHook};
use crate::config::{Checked, RunConfig};
use crate::error::{ApplianceError, Result};
use crate::frame::{Frame, PixelFormat};
use crate::led::StatusLed;
use crate::report::{self, Line, LookupReport, MAX_FRAME_BYTES};
use crate::trigger::{GpioLine, MotionDetector, PinTrigger, TriggerSpec};

/// What the trigger threads ask of the loop.
#[derive(Debug)]
enum Command {
    /// Name the newest frame; `trigger` indexes the trigger names, `at` is when it fired.
    Lookup { trigger: usize, at: Instant },
    /// Enrol the newest frame; `None`: a SKU is made from the prefix and the time.
    Enroll { sku: Option<String> },
    /// A trigger failed (and retries).
    Fault { source: String, message: String },
    /// End the loop after the commands before this one.
    Stop { reason: &'static str },
}

/// What a run did, returned when it ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub lookups: u64,
    pub enrolled: u64,
    pub faults: u64,
    pub reason: String,
}

/// How often the loop looks at the stop flag, the camera's state and the LED.
const TICK: Duration = Duration::from_millis(20);
/// How often GPIO lines are read.
const GPIO_POLL: Duration = Duration::from_millis(1);

/// Runs the appliance on the bundle in `bundle_dir` until `stop` is set (SIGINT, SIGTERM),
/// or the stdin trigger's input ends. `stdin` feeds the `stdin` trigger; reports go to `out`.
///
/// Refuses to start (an error) on a bad configuration or bundle; once running, faults are
/// reported and the loop goes on.
pub fn run(
    bundle_dir: &Path,
    config: &RunConfig,
    stdin: Box<dyn BufRead + Send>,
    out: &mut dyn Write,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let settings = config.check()?;
    let mut appliance = Appliance::open_tuned(bundle_dir, settings.runtime, settings.tuning, 1)?
        .with_max_distance(config.lookup.max_distance);
    // The GPU's frame buffers sized for the configured camera before the first lookup.
    appliance.warm_frames(config.camera.width, config.camera.height)?;
    let mut serial = match &settings.serial {
        Some(path) => Some(open_serial(path)?),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Command>(64);
    let trigger_names: Vec<String> = settings.triggers.iter().map(|t| t.to_string()).collect();
    let camera = start_camera(config, &settings, &tx)?;
    start_triggers(&settings, stdin, &tx, &stop);
    let mut led = settings.led_line.as_ref().and_then(|line| {
        match open_line(line, LineRequestFlags::OUTPUT) {
            Ok(pin) => Some(StatusLed::new(pin, line.active_low, settings.blink)),
            Err(message) => {
                tracing::warn!("status LED {line}: {message}; running without it");
                None
            }
        }
    });
    let mut ctx = Loop {
        appliance: &mut appliance,
        camera,
        settings: &settings,
        config,
        trigger_names: &trigger_names,
        out,
        json: Vec::with_capacity(4096),
        serial_buf: vec![0; MAX_FRAME_BYTES],
        frame: Frame::default(),
        report: LookupReport::new(),
        summary: RunSummary::default(),
    };
    let backend = ctx.appliance.backend().to_string();
    let camera_name = ctx.camera.uri().to_string();
    ctx.emit(&Line::Started {
        time_ms: unix_ms(),
        bundle: &bundle_dir.display().to_string(),
        items: ctx.appliance.len(),
        backend: &backend,
        camera: &camera_name,
        triggers: &trigger_names,
    })?;
    let reason = ctx.serve(&rx, &stop, serial.as_mut(), led.as_mut())?;
    ctx.summary.reason = reason.to_string();
    let summary = ctx.summary.clone();
    ctx.emit(&Line::Stopped {
        time_ms: unix_ms(),
        lookups: summary.lookups,
        faults: summary.faults,
        reason,
    })?;
    if let Some(serial) = serial.as_mut() {
        serial
            .1
            .flush()
            .map_err(|e| ApplianceError::io(&serial.0, e))?;
    }
    Ok(summary)
}

struct Loop<'a> {
    appliance: &'a mut Appliance,
    camera: Camera,
    settings: &'a Checked,
    config: &'a RunConfig,
    trigger_names: &'a [String],
    out: &'a mut dyn Write,
    json: Vec<u8>,
    serial_buf: Vec<u8>,
    frame: Frame,
    report: LookupReport,
    summary: RunSummary,
}

impl Loop<'_> {
    fn emit(&mut self, line: &Line<'_>) -> Result<()> {
        report::write_line(&mut self.out, &mut self.json, line)
            .map_err(|e| ApplianceError::io("<report output>", e))
    }

    fn fault(&mut self, source: &str, message: &str) -> Result<()> {
        self.summary.faults += 1;
        tracing::warn!("{source}: {message}");
        self.emit(&Line::Fault {
            time_ms: unix_ms(),
            source,
            message,
        })
    }

    fn serve(
        &mut self,
        rx: &Receiver<Command>,
        stop: &AtomicBool,
        mut serial: Option<&mut (PathBuf, std::fs::File)>,
        mut led: Option<&mut StatusLed<CdevPin>>,
    ) -> Result<&'static str> {
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok("signal");
            }
            match rx.recv_timeout(TICK) {
                Ok(Command::Lookup { trigger, at }) => {
                    if self.lookup(trigger, at, serial.as_deref_mut())?
                        && let Some(led) = led.as_deref_mut()
                    {
                        led.lookup(Instant::now());
                    }
                }
                Ok(Command::Enroll { sku }) => self.enroll(sku)?,
                Ok(Command::Fault { source, message }) => self.fault(&source, &message)?,
                Ok(Command::Stop { reason }) => return Ok(reason),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok("no trigger left"),
            }
            if let Some(change) = self.camera.fault_change() {
                if let Some(led) = led.as_deref_mut() {
                    led.fault(change.is_some(), Instant::now());
                }
                match change {
                    Some(message) => self.fault("camera", &message)?,
                    None => self.emit(&Line::Recovered {
                        time_ms: unix_ms(),
                        source: "camera",
                    })?,
                }
            }
            if let Some(led) = led.as_deref_mut() {
                led.tick(Instant::now());
            }
        }
    }

    /// Gets the newest frame into `self.frame`: a frame newer than the last one looked at if
    /// the held one is too old, waiting up to the camera timeout. `false`: none came.
    fn newest_frame(&mut self) -> bool {
        let step = matches!(self.camera.uri(), CameraUri::Replay { step: true, .. });
        if step {
            return self
                .camera
                .take_newer(&mut self.frame, self.settings.frame_timeout);
        }
        self.camera.take_newer(&mut self.frame, Duration::ZERO);
        if self.frame.seq > 0 && self.frame.captured.elapsed() <= self.settings.max_frame_age {
            return true;
        }
        self.camera
            .take_newer(&mut self.frame, self.settings.frame_timeout)
    }

    /// One lookup; `Ok(false)` when it could not be made (reported as a fault).
    fn lookup(
        &mut self,
        trigger: usize,
        at: Instant,
        serial: Option<&mut (PathBuf, std::fs::File)>,
    ) -> Result<bool> {
        let time_ms = unix_ms();
        if !self.newest_frame() {
            let message = format!(
                "no frame from the camera within {} ms",
                self.settings.frame_timeout.as_millis()
            );
            self.fault("lookup", &message)?;
            return Ok(false);
        }
        let capture_age = micros(at.saturating_duration_since(self.frame.captured));
        let frame = &self.frame;
        match self.appliance.lookup_rgb8(
            frame.width,
            frame.height,
            &frame.rgb,
            self.config.lookup.k,
        ) {
            Ok(lookup) => {
                self.summary.lookups += 1;
                self.report.fill(
                    self.summary.lookups,
                    time_ms,
                    &self.trigger_names[trigger],
                    &frame.label,
                    capture_age,
                    &lookup,
                );
                self.report.timings_us.total = micros(at.elapsed());
            }
            Err(e) => {
                self.fault("lookup", &e.to_string())?;
                return Ok(false);
            }
        }
        let report = std::mem::take(&mut self.report);
        let written = self.emit(&Line::Lookup(&report));
        if let Some((path, file)) = serial {
            let frame = report::encode_frame(&report, &mut self.serial_buf)
                .and_then(|bytes| file.write_all(bytes).and_then(|()| file.flush()));
            if let Err(e) = frame {
                let message = format!("{}: {e}", path.display());
                self.report = report;
                self.fault("serial", &message)?;
                written?;
                return Ok(true);
            }
        }
        self.report = report;
        written.map(|()| true)
    }

    fn enroll(&mut self, sku: Option<String>) -> Result<()> {
        if !self.newest_frame() {
            return self.fault("enroll", "no frame from the camera to enrol");
        }
        let sku = sku.unwrap_or_else(|| {
            format!(
                "{}{}",
                self.config.trigger.enroll_sku_prefix,
                unix_ms() / 1000
            )
        });
        let frame = &self.frame;
        let image = image::RgbImage::from_raw(frame.width, frame.height, frame.rgb.clone())
            .map(image::DynamicImage::ImageRgb8);
        let Some(image) = image else {
            return self.fault("enroll", "the frame's buffer does not match its size");
        };
        let label = frame.label.clone();
        match self.appliance.enroll(&sku, &image) {
            Ok(id) => {
                self.summary.enrolled += 1;
                self.emit(&Line::Enrolled {
                    time_ms: unix_ms(),
                    id,
                    sku: &sku,
                    frame: &label,
                })
            }
            // The enrolment journal keeps the gallery as it was (a full disk, for one).
            Err(e) => self.fault("enroll", &format!("{sku}: {e}")),
        }
    }
}

fn open_serial(path: &Path) -> Result<(PathBuf, std::fs::File)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ApplianceError::io(path, e))?;
    Ok((path.to_path_buf(), file))
}

fn start_camera(
    config: &RunConfig,
    settings: &Checked,
    tx: &SyncSender<Command>,
) -> Result<Camera> {
    let pixel_format = match config.camera.pixel_format.as_str() {
        "yuyv" => Some(PixelFormat::Yuyv),
        "mjpeg" => Some(PixelFormat::Mjpeg),
        _ => None,
    };
    let motion = settings
        .triggers
        .iter()
        .position(|t| *t == TriggerSpec::Motion)
        .map(|index| {
            let tx = tx.clone();
            MotionHook {
                detector: MotionDetector::new(config.motion),
                on_fire: Box::new(move || {
                    let _ = tx.try_send(Command::Lookup {
                        trigger: index,
                        at: Instant::now(),
                    });
                }),
            }
        });
    Ok(Camera::start(
        settings.camera.clone(),
        CaptureOptions {
            width: config.camera.width,
            height: config.camera.height,
            fps: config.camera.fps,
            pixel_format,
            timeout: settings.frame_timeout,
        },
        motion,
    ))
}

/// Starts a thread per trigger (the motion trigger runs on the capture thread).
fn start_triggers(
    settings: &Checked,
    stdin: Box<dyn BufRead + Send>,
    tx: &SyncSender<Command>,
    stop: &Arc<AtomicBool>,
) {
    let mut stdin = Some(stdin);
    for (index, spec) in settings.triggers.iter().enumerate() {
        let (tx, stop) = (tx.clone(), stop.clone());
        match spec {
            TriggerSpec::Motion => {}
            TriggerSpec::Stdin => {
                let input = stdin.take().expect("stdin is given once (checked)");
                spawn("trigger-stdin", move || read_commands(input, index, &tx));
            }
            TriggerSpec::Interval(period) => {
                let period = *period;
                spawn("trigger-interval", move || {
                    while !sleep_unless(&stop, period) {
                        if let Err(TrySendError::Disconnected(_)) = tx.try_send(Command::Lookup {
                            trigger: index,
                            at: Instant::now(),
                        }) {
                            return;
                        }
                    }
                });
            }
            TriggerSpec::Gpio(line) => {
                let (line, debounce) = (line.clone(), settings.debounce);
                spawn("trigger-gpio", move || {
                    watch_line(&line, debounce, &tx, &stop, || Command::Lookup {
                        trigger: index,
                        at: Instant::now(),
                    })
                });
            }
        }
    }
    if let Some(line) = settings.enroll_line.clone() {
        let (tx, stop, debounce) = (tx.clone(), stop.clone(), settings.debounce);
        spawn("trigger-enroll", move || {
            watch_line(&line, debounce, &tx, &stop, || Command::Enroll {
                sku: None,
            })
        });
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    // Trigger threads are never joined: the stdin one may be blocked in a read when the loop
    // ends, and the process exits after the loop.
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::error!("cannot start {name}: {e}");
    }
}

/// Sleeps `d` unless `stop` is set first; returns whether it was.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(TICK));
    }
}

/// The stdin trigger: an empty line or `lookup` looks up, `enroll SKU` enrols, `quit` or the
/// end of input stops the loop.
fn read_commands(input: Box<dyn BufRead + Send>, index: usize, tx: &SyncSender<Command>) {
    for line in input.lines() {
        let command = match line {
            Err(e) => Command::Fault {
                source: "trigger".into(),
                message: format!("stdin: {e}"),
            },
            Ok(line) => {
                let line = line.trim();
                match line.split_once(char::is_whitespace) {
                    _ if line.is_empty() || line == "lookup" => Command::Lookup {
                        trigger: index,
                        at: Instant::now(),
                    },
                    _ if line == "quit" => Command::Stop { reason: "quit" },
                    Some(("enroll", sku)) if !sku.trim().is_empty() => Command::Enroll {
                        sku: Some(sku.trim().to_string()),
                    },
                    _ => Command::Fault {
                        source: "trigger".into(),
                        message: format!(
                            "stdin: {line:?} is not a command (empty line or `lookup`, \
                             `enroll SKU`, `quit`)"
                        ),
                    },
                }
            }
        };
        let last = matches!(command, Command::Stop { .. });
        if tx.send(command).is_err() || last {
            return;
        }
    }
    let _ = tx.send(Command::Stop {
        reason: "end of input",
    });
}

fn open_line(line: &GpioLine, flags: LineRequestFlags) -> std::result::Result<CdevPin, String> {
    let path = line.chip_path();
    let mut chip = Chip::new(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let handle = chip
        .get_line(line.line)
        .and_then(|l| l.request(flags, 0, "lookupd"))
        .map_err(|e| format!("{} line {}: {e}", path.display(), line.line))?;
    CdevPin::new(handle).map_err(|e| format!("{} line {}: {e}", path.display(), line.line))
}

/// Polls a GPIO line, debounced, sending `command()` per press; a line that cannot be opened
/// or read is reported and retried with backoff.
fn watch_line(
    line: &GpioLine,
    debounce: Duration,
    tx: &SyncSender<Command>,
    stop: &AtomicBool,
    command: impl Fn() -> Command,
) {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let report = |message: String| {
        tx.try_send(Command::Fault {
            source: "trigger".into(),
            message: format!("gpio:{line}: {message}"),
        })
    };
    while !stop.load(Ordering::SeqCst) {
        let pin = match open_line(line, LineRequestFlags::INPUT) {
            Ok(pin) => pin,
            Err(message) => {
                let _ = report(message);
                if sleep_unless(stop, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut trigger = PinTrigger::new(pin, line.active_low, debounce);
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match trigger.poll(start.elapsed()) {
                Ok(true) => {
                    if let Err(TrySendError::Disconnected(_)) = tx.try_send(command()) {
                        return;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = report(format!("read failed: {e}"));
                    break;
                }
            }
            std::thread::sleep(GPIO_POLL);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
