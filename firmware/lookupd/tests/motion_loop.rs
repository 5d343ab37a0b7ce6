//! `lookupd run --trigger motion` on the replay camera (`file:///DIR`, at its frame rate) over a
//! synthetic scene: an empty counter, a product slides in, settles, stays, is taken away, the
//! counter is empty again, a second product comes and goes, and the replay loops back to the
//! empty counter and the first product. Exactly one lookup per visit, each naming the product
//! shown, from a frame of its stay; none while a product moves in or out or the view is empty.
//!
//! The two products are enrolled first (64x48 photographs, the frame size of the scene: the
//! motion detector's 32x24 grey copy then has samples in every cell of every frame).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::build_bundle;
use image::RgbImage;
use lookupd::Appliance;
use lookupd::config::RunConfig;
use serde_json::Value;

/// Collects the report lines and stops the loop once `want` lookups are reported.
struct Reports {
    buf: Vec<u8>,
    lines: Vec<Value>,
    lookups: usize,
    want: usize,
    stop: Arc<AtomicBool>,
}

impl Write for Reports {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).expect("a JSON line");
            if value["event"] == "lookup" {
                self.lookups += 1;
                if self.lookups >= self.want {
                    self.stop.store(true, Ordering::SeqCst);
                }
            }
            self.lines.push(value);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An empty counter: flat dark grey with a little sensor noise (a different draw per frame).
fn counter(width: u32, height: u32, seed: u64) -> RgbImage {
    let noise = common::noise_image(seed, width, height);
    RgbImage::from_fn(width, height, |x, y| {
        let n = noise.get_pixel(x, y)[0] % 3;
        image::Rgb([40 + n, 42 + n, 45 + n])
    })
}

/// The counter with `item` shifted `dx` pixels right of where it rests (partly in view).
fn sliding(item: &RgbImage, dx: i64, seed: u64) -> RgbImage {
    let mut frame = counter(item.width(), item.height(), seed);
    for (x, y, p) in item.enumerate_pixels() {
        let to = x as i64 + dx;
        if (0..item.width() as i64).contains(&to) {
            frame.put_pixel(to as u32, y, *p);
        }
    }
    frame
}

/// Frames of each phase of a visit: empty counter, entering, staying, leaving.
const EMPTY: usize = 10;
const ENTER: usize = 5;
const STAY: usize = 20;
const LEAVE: usize = 2;

/// Writes the scene into `dir` as `NNN-phase.png`; returns the frame ranges of the two stays.
fn write_scene(dir: &Path, a: &RgbImage, b: &RgbImage) -> [std::ops::Range<usize>; 2] {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0usize;
    let mut put = |image: RgbImage, phase: &str| {
        image.save(dir.join(format!("{n:03}-{phase}.png"))).unwrap();
        n += 1;
        n - 1
    };
    let mut stays = Vec::new();
    for (k, item) in [a, b].into_iter().enumerate() {
        let (w, h) = item.dimensions();
        for i in 0..EMPTY {
            put(counter(w, h, (k * 100 + i) as u64), "empty");
        }
        // Slides in from the right, a little further each frame.
        for i in 0..ENTER {
            let dx = (w as usize * (ENTER - i) / (ENTER + 1)) as i64;
            put(sliding(item, dx, (k * 100 + 50 + i) as u64), "enter");
        }
        let first = put(item.clone(), "stay");
        for _ in 1..STAY {
            put(item.clone(), "stay");
        }
        stays.push(first..first + STAY);
        for (i, dx) in [-((w / 2) as i64), -((w * 5 / 6) as i64)]
            .into_iter()
            .take(LEAVE)
            .enumerate()
        {
            put(sliding(item, dx, (k * 100 + 70 + i) as u64), "leave");
        }
    }
    // The empty counter again before the replay loops back to the first visit.
    let (w, h) = b.dimensions();
    for i in 0..EMPTY {
        put(counter(w, h, (300 + i) as u64), "empty");
    }
    [stays[0].clone(), stays[1].clone()]
}

#[test]
fn the_motion_trigger_reports_one_lookup_per_visit_with_the_right_item() {
    let b = build_bundle();
    let products = [
        ("PRODUCT-A", common::noise_image(71, 64, 48)),
        ("PRODUCT-B", common::noise_image(72, 64, 48)),
    ];
    {
        let mut appliance = Appliance::open(b.dir(), infer::Backend::Cpu, 1).unwrap();
        for (sku, image) in &products {
            appliance
                .enroll(sku, &image::DynamicImage::ImageRgb8(image.clone()))
                .unwrap();
        }
    }
    let frames = b.root.path().join("scene");
    let stays = write_scene(&frames, &products[0].1, &products[1].1);

    let mut config = RunConfig::default();
    config.camera.uri = format!("file://{}", frames.display());
    config.camera.fps = 40;
    config.trigger.specs = vec!["motion".into()];
    config.lookup.runtime = "cpu".into();
    config.lookup.k = 2;

    // Three lookups: both visits of the first pass, then the first visit again after the
    // replay loops (the trigger re-armed on the empty counter across the loop).
    let stop = Arc::new(AtomicBool::new(false));
    let mut reports = Reports {
        buf: Vec::new(),
        lines: Vec::new(),
        lookups: 0,
        want: 3,
        stop: stop.clone(),
    };
    // A pass is 84 frames (2.1 s at 40 fps): give up after about five.
    let watchdog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let summary = lookupd::run(
        &b.dir(),
        &config,
        Box::new(std::io::empty()),
        &mut reports,
        stop.clone(),
    )
    .unwrap();
    watchdog.join().unwrap();
    let lines = &reports.lines;
    assert!(lines.iter().all(|l| l["event"] != "fault"), "{lines:#?}");
    let lookups: Vec<&Value> = lines.iter().filter(|l| l["event"] == "lookup").collect();
    assert_eq!(lookups.len(), 3, "lookups: {lookups:#?}");
    assert_eq!(summary.lookups, 3);
    let (a, b) = (products[0].0, products[1].0);
    let expected = [(a, &stays[0]), (b, &stays[1]), (a, &stays[0])];
    for (n, (report, (sku, stay))) in lookups.iter().zip(expected).enumerate() {
        assert_eq!(report["trigger"], "motion", "lookup {n}");
        assert_eq!(report["verdict"], "known", "lookup {n}");
        assert_eq!(report["hits"][0]["sku"], sku, "lookup {n}");
        assert_eq!(report["hits"][0]["distance"], 0, "lookup {n}");
        // The frame looked at is one of the stay: after the product settled, before it left.
        let frame = report["frame"].as_str().unwrap();
        let index: usize = frame[..3].parse().unwrap();
        assert!(
            stay.contains(&index) && frame.ends_with("-stay.png"),
            "lookup {n} looked at {frame}, not a frame of {stay:?}"
        );
    }
}
