//! A lookup allocates nothing of its own: a counting allocator (per thread) shows that the
//! newest-frame handover, the search, the report and the serial frame allocate nothing, and that
//! a whole lookup allocates no more than the model runtime's run alone does. On the capture
//! thread, an MJPEG frame is decoded into the frame's own buffer: what remains is zune-jpeg's
//! decoder state, measured here (a fixed count of small allocations, never a frame-sized one).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use common::build_bundle;
use lookupd::frame::{Frame, FrameSlot};
use lookupd::report::{self, Line, LookupReport, MAX_FRAME_BYTES};
use lookupd::{Appliance, Lookup};

struct Counting;

thread_local! {
    // `const` and no destructor: reading it never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        BYTES.with(|n| n.set(n.get() + layout.size() as u64));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        BYTES.with(|n| n.set(n.get() + new_size as u64));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (ALLOCATIONS.with(Cell::get) - before, r)
}

/// Allocations, and bytes asked for, by this thread while `f` runs.
fn allocated<R>(f: impl FnOnce() -> R) -> ((u64, u64), R) {
    let before = BYTES.with(Cell::get);
    let (n, r) = allocations(f);
    ((n, BYTES.with(Cell::get) - before), r)
}

#[test]
fn a_lookup_allocates_nothing_beyond_the_model_runtime() {
    let b = build_bundle();
    let mut appliance = Appliance::open(b.dir(), infer::Backend::Cpu, 1).unwrap();
    let image = &b.items[3].image;
    let (w, h) = image.dimensions();

    // The hot path's own parts, warmed up once, then counted.
    let slot = FrameSlot::default();
    let mut capture = Frame::default();
    let mut frame = Frame::default();
    let mut report = LookupReport::new();
    let mut json = Vec::with_capacity(4096);
    let mut serial = vec![0u8; MAX_FRAME_BYTES];
    let mut sink = std::io::sink();
    let mut own_parts = |appliance: &mut Appliance, seq: u64| -> u64 {
        let (n, ()) = allocations(|| {
            // As the capture thread does: fill the buffer the last handover gave back.
            capture.resize(w, h);
            capture.rgb.copy_from_slice(image.as_raw());
            capture.seq = seq;
            capture.set_label("item-3/view-01.png");
            slot.publish(&mut capture);
            assert!(slot.take_newer(&mut frame, Duration::ZERO));
        });
        let lookup: Lookup<'_> = appliance
            .lookup_rgb8(frame.width, frame.height, &frame.rgb, 5)
            .unwrap();
        assert_eq!(lookup.hit(0).unwrap().sku, b.items[3].sku.as_str());
        let (m, ()) = allocations(|| {
            report.fill(seq, 1, "gpio:gpiochip0:17", &frame.label, 10, &lookup);
            report::write_line(&mut sink, &mut json, &Line::Lookup(&report)).unwrap();
            report::encode_frame(&report, &mut serial).unwrap();
        });
        n + m
    };
    // Three buffers take turns (capture, slot, lookup): each is sized once.
    for seq in 1..=3 {
        own_parts(&mut appliance, seq);
    }
    for seq in 4..20 {
        assert_eq!(
            own_parts(&mut appliance, seq),
            0,
            "frame handover and report, lookup {seq}"
        );
    }

    // The model runtime alone, on the same input, as the appliance runs it.
    let manifest = appliance.manifest().clone();
    let side = manifest.model.input_size as usize;
    let mut model = infer::Model::load(
        &b.file(bundle::MODEL_FILE),
        &infer::LoadOptions {
            backend: infer::Backend::Cpu,
            max_batch: 1,
            input_hw: Some((side, side)),
            ..infer::LoadOptions::default()
        },
    )
    .unwrap();
    let mut pre = bundle::Preprocessor::new(manifest.preprocess.clone()).unwrap();
    let mut input = vec![0.0; pre.out_len()];
    pre.apply_rgb8(w, h, image.as_raw(), &mut input).unwrap();
    let mut code = vec![0u8; manifest.model.code_bits as usize / 8];
    let run_alone = (0..10)
        .map(|_| allocations(|| model.run_packed(1, &input, &mut code).unwrap()).0)
        .max()
        .unwrap();
    let whole = (0..10)
        .map(|_| {
            allocations(|| {
                appliance.lookup_rgb8(w, h, image.as_raw(), 5).unwrap();
            })
            .0
        })
        .max()
        .unwrap();
    println!(
        "allocations per lookup: {whole}; of them the model runtime's (tract, CPU): {run_alone}"
    );
    assert!(
        whole <= run_alone,
        "a lookup allocated {whole} times, the model run alone {run_alone}"
    );
}

#[test]
fn an_mjpeg_frame_is_decoded_into_the_frame_buffer() {
    use lookupd::frame::{MjpegDecoder, has_huffman_tables};

    // A 640x480 camera frame (4:2:0, image's encoder, the standard tables), and the same frame
    // without its DHT segments, as many UVC cameras send it.
    let (w, h) = (640u32, 480u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x ^ y) & 0xff) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&img)
        .unwrap();
    let mut stripped = jpeg[..2].to_vec();
    let mut at = 2;
    while jpeg[at + 1] != 0xDA {
        let end = at + 2 + u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        if jpeg[at + 1] != 0xC4 {
            stripped.extend_from_slice(&jpeg[at..end]);
        }
        at = end;
    }
    stripped.extend_from_slice(&jpeg[at..]);
    assert_eq!(has_huffman_tables(&stripped), Some(false));

    let frame_bytes = (w * h * 3) as u64;
    let mut decoder = MjpegDecoder::default();
    let mut frame = Frame::default();
    for source in [&jpeg, &stripped] {
        decoder.decode(source, &mut frame).unwrap();
    }
    let buffer = frame.rgb.as_ptr();
    let mut per_frame = Vec::new();
    let mut counts_bytes = Vec::new();
    for (name, source) in [("with tables", &jpeg), ("without tables", &stripped)] {
        let counts: Vec<(u64, u64)> = (0..8)
            .map(|_| allocated(|| decoder.decode(source, &mut frame).unwrap()).0)
            .collect();
        assert_eq!(
            frame.rgb.as_ptr(),
            buffer,
            "{name}: the frame buffer was replaced"
        );
        // The same few allocations every frame, none of them an image.
        assert!(
            counts.windows(2).all(|c| c[0] == c[1]),
            "{name}: {counts:?}"
        );
        let (n, bytes) = counts[0];
        assert!(
            bytes < frame_bytes / 4,
            "{name}: {bytes} bytes allocated per frame of {frame_bytes}"
        );
        per_frame.push(format!("{name}: {n} allocations, {bytes} bytes"));
        counts_bytes.push(bytes);
    }

    // What the decode cost before: image's JPEG decoder (zune-jpeg inside) into a buffer of the
    // right size.
    let mut out = vec![0u8; frame_bytes as usize];
    let ((image_n, image_bytes), ()) = allocated(|| {
        use image::ImageDecoder;
        let d = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&jpeg)).unwrap();
        d.read_image(&mut out).unwrap();
    });
    println!(
        "MJPEG {w}x{h} ({} bytes), per frame after warm-up (zune-jpeg's decoder state; the \
         {frame_bytes}-byte picture goes into the frame's buffer): {}; image's decoder: \
         {image_n} allocations, {image_bytes} bytes",
        jpeg.len(),
        per_frame.join("; ")
    );
    // image copies the compressed frame before decoding it; the decoder here does not.
    assert!(
        counts_bytes
            .iter()
            .all(|&b| b + jpeg.len() as u64 <= image_bytes),
        "{counts_bytes:?} against image's {image_bytes}"
    );
}
