//! What starts a lookup: a GPIO button or light barrier (debounced), the camera's own motion
//! detector, a line on stdin, or a fixed interval. Each is parsed from a `--trigger` spec.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use embedded_hal::digital::InputPin;

use crate::frame::{THUMB_H, THUMB_W};

/// A trigger, as written in the config or after `--trigger`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerSpec {
    /// `gpio:CHIP:LINE[:active-low]`: a line of a GPIO character device (`CHIP` is `gpiochipN`
    /// or a path); active-low for a button that pulls the line to ground.
    Gpio(GpioLine),
    /// `motion`: the camera's frames: fires when something enters the view and settles.
    Motion,
    /// `stdin`: a line per lookup (`enroll SKU` enrols instead; end of input stops the loop).
    Stdin,
    /// `interval:MS`: a lookup every MS milliseconds.
    Interval(Duration),
}

/// A GPIO line: `CHIP:LINE[:active-low]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpioLine {
    pub chip: String,
    pub line: u32,
    pub active_low: bool,
}

impl GpioLine {
    /// The character device: `CHIP` itself when it is a path, else `/dev/CHIP`.
    pub fn chip_path(&self) -> PathBuf {
        if self.chip.contains('/') {
            PathBuf::from(&self.chip)
        } else {
            PathBuf::from("/dev").join(&self.chip)
        }
    }
}

impl FromStr for GpioLine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (chip, line, active_low) = match parts.as_slice() {
            [chip, line] => (chip, line, false),
            [chip, line, "active-low"] => (chip, line, true),
            [chip, line, "active-high"] => (chip, line, false),
            _ => {
                return Err(format!(
                    "GPIO line {s:?}: expected CHIP:LINE[:active-low], e.g. gpiochip0:17:active-low"
                ));
            }
        };
        if chip.is_empty() {
            return Err(format!("GPIO line {s:?}: the chip name is empty"));
        }
        let line = line
            .parse()
            .map_err(|_| format!("GPIO line {s:?}: line {line:?} is not a number"))?;
        Ok(GpioLine {
            chip: chip.to_string(),
            line,
            active_low,
        })
    }
}

impl fmt::Display for GpioLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.chip, self.line)?;
        if self.active_low {
            write!(f, ":active-low")?;
        }
        Ok(())
    }
}

impl FromStr for TriggerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "motion" => Ok(TriggerSpec::Motion),
            None if s == "stdin" => Ok(TriggerSpec::Stdin),
            Some(("gpio", line)) => Ok(TriggerSpec::Gpio(line.parse()?)),
            Some(("interval", ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(TriggerSpec::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "trigger {s:?}: the interval must be a positive number of milliseconds"
                )),
            },
            _ => Err(format!(
                "trigger {s:?} is not one of gpio:CHIP:LINE[:active-low], motion, stdin, \
                 interval:MS"
            )),
        }
    }
}

impl fmt::Display for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerSpec::Gpio(line) => write!(f, "gpio:{line}"),
            TriggerSpec::Motion => write!(f, "motion"),
            TriggerSpec::Stdin => write!(f, "stdin"),
            TriggerSpec::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

/// Debounces a digital level: a change counts once the level has held for the debounce time.
#[derive(Clone, Debug)]
pub struct Debouncer {
    debounce: Duration,
    stable: bool,
    candidate: bool,
    since: Duration,
}

impl Debouncer {
    /// Starts inactive.
    pub fn new(debounce: Duration) -> Self {
        Self {
            debounce,
            stable: false,
            candidate: false,
            since: Duration::ZERO,
        }
    }

    /// Feeds the level read at time `now` (any monotonic clock); returns `true` once per
    /// press: when an active level has held for the debounce time.
    pub fn update(&mut self, active: bool, now: Duration) -> bool {
        if active != self.candidate {
            self.candidate = active;
            self.since = now;
        }
        if self.candidate != self.stable && now.saturating_sub(self.since) >= self.debounce {
            self.stable = self.candidate;
            return self.stable;
        }
        false
    }

    /// The debounced level.
    pub fn is_active(&self) -> bool {
        self.stable
    }
}

/// A button or light barrier on an embedded-hal input pin, debounced.
#[derive(Debug)]
pub struct PinTrigger<P> {
    pin: P,
    active_low: bool,
    debouncer: Debouncer,
}

impl<P: InputPin> PinTrigger<P> {
    pub fn new(pin: P, active_low: bool, debounce: Duration) -> Self {
        Self {
            pin,
            active_low,
            debouncer: Debouncer::new(debounce),
        }
    }

    /// Reads the pin at time `now`; `Ok(true)` once per debounced press.
    pub fn poll(&mut self, now: Duration) -> Result<bool, P::Error> {
        let high = self.pin.is_high()?;
        Ok(self.debouncer.update(high != self.active_low, now))
    }

    /// The pin, back (tests check their mocks are done).
    pub fn into_pin(self) -> P {
        self.pin
    }
}

/// Thresholds of the motion trigger, in grey levels (0 to 255) of mean absolute difference
/// over the frame's grey copy.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionSettings {
    /// Difference from the background above which something is in view.
    pub enter: f32,
    /// Difference between consecutive frames below which the view is still.
    pub settle: f32,
    /// Difference from the background below which the view is empty again (re-arms).
    pub exit: f32,
    /// Consecutive still frames (with something in view) before the trigger fires.
    pub settle_frames: u32,
}

impl Default for MotionSettings {
    fn default() -> Self {
        Self {
            enter: 12.0,
            settle: 3.0,
            exit: 6.0,
            settle_frames: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MotionState {
    /// The view shows the background; the background adapts slowly (light changes).
    Armed,
    /// Something entered; waiting for the view to settle.
    Entering { still: u32 },
    /// Fired; waiting for the view to return to the background.
    Fired { empty: u32 },
}

/// Frame differencing on a small grey copy of each frame: fires once when something enters the
/// view and the view settles, re-arms when the view is back to its background.
#[derive(Clone, Debug)]
pub struct MotionDetector {
    settings: MotionSettings,
    background: [f32; THUMB_W * THUMB_H],
    previous: [f32; THUMB_W * THUMB_H],
    frames: u64,
    state: MotionState,
}

/// How fast the background follows an empty view (per frame).
const BACKGROUND_RATE: f32 = 0.05;

impl MotionDetector {
    pub fn new(settings: MotionSettings) -> Self {
        Self {
            settings,
            background: [0.0; THUMB_W * THUMB_H],
            previous: [0.0; THUMB_W * THUMB_H],
            frames: 0,
            state: MotionState::Armed,
        }
    }

    /// Feeds the grey copy of the next frame; returns `true` when the trigger fires.
    pub fn update(&mut self, grey: &[f32; THUMB_W * THUMB_H]) -> bool {
        self.frames += 1;
        if self.frames == 1 {
            self.background = *grey;
            self.previous = *grey;
            return false;
        }
        let from_background = mean_abs_diff(grey, &self.background);
        let from_previous = mean_abs_diff(grey, &self.previous);
        self.previous = *grey;
        let s = &self.settings;
        let (next, fire) = match self.state {
            MotionState::Armed if from_background > s.enter => {
                (MotionState::Entering { still: 0 }, false)
            }
            MotionState::Armed => {
                for (b, &g) in self.background.iter_mut().zip(grey) {
                    *b += BACKGROUND_RATE * (g - *b);
                }
                (MotionState::Armed, false)
            }
            MotionState::Entering { .. } if from_background < s.exit => (MotionState::Armed, false),
            MotionState::Entering { still } if from_previous < s.settle => {
                if still + 1 >= s.settle_frames {
                    (MotionState::Fired { empty: 0 }, true)
                } else {
                    (MotionState::Entering { still: still + 1 }, false)
                }
            }
            MotionState::Entering { .. } => (MotionState::Entering { still: 0 }, false),
            MotionState::Fired { empty } if from_background < s.exit => {
                if empty + 1 >= s.settle_frames {
                    (MotionState::Armed, false)
                } else {
                    (MotionState::Fired { empty: empty + 1 }, false)
                }
            }
            MotionState::Fired { .. } => (MotionState::Fired { empty: 0 }, false),
        };
        self.state = next;
        fire
    }
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction};

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "gpio:gpiochip0:17",
            "gpio:gpiochip0:17:active-low",
            "gpio:/dev/gpiochip2:3",
            "motion",
            "stdin",
            "interval:250",
        ] {
            let spec: TriggerSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        let line: GpioLine = "gpiochip1:4".parse().unwrap();
        assert_eq!(line.chip_path(), PathBuf::from("/dev/gpiochip1"));
        for (bad, says) in [
            ("button", "is not one of"),
            ("gpio:gpiochip0", "expected CHIP:LINE"),
            ("gpio:gpiochip0:x", "not a number"),
            ("gpio::3", "chip name is empty"),
            ("gpio:gpiochip0:3:sideways", "expected CHIP:LINE"),
            ("interval:0", "positive"),
            ("interval:soon", "positive"),
        ] {
            let err = bad.parse::<TriggerSpec>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bouncing_active_low_button_fires_once_per_press() {
        // Sampled every 5 ms: released (high), a press that bounces for 10 ms then holds, a
        // release that bounces, a short glitch (shorter than the debounce), then a second press.
        let levels = [
            1, 1, 1, // released
            0, 1, 0, 1, 0, 0, 0, 0, 0, 0, // press: bounce, then held
            1, 0, 1, 1, 1, 1, 1, // release with a bounce
            0, 1, 1, 1, // a 5 ms glitch: no press
            0, 0, 0, 0, 0, // second press
        ];
        let transactions: Vec<Transaction> = levels
            .iter()
            .map(|&l| Transaction::get(if l == 1 { State::High } else { State::Low }))
            .collect();
        let mut trigger = PinTrigger::new(PinMock::new(&transactions), true, ms(20));
        let fired: Vec<usize> = (0..levels.len())
            .filter(|&i| trigger.poll(ms(5 * i as u64)).unwrap())
            .collect();
        // The first press stops bouncing at sample 7 and fires 20 ms later (sample 11); the
        // second starts at sample 24 and fires at sample 28.
        assert_eq!(fired, [11, 28]);
        trigger.into_pin().done();
    }

    #[test]
    fn an_active_high_light_barrier_fires_on_high() {
        let transactions = [
            State::Low,
            State::High,
            State::High,
            State::High,
            State::Low,
        ]
        .map(Transaction::get);
        let mut trigger = PinTrigger::new(PinMock::new(&transactions), false, ms(10));
        let fired: Vec<bool> = (0..5).map(|i| trigger.poll(ms(10 * i)).unwrap()).collect();
        assert_eq!(fired, [false, false, true, false, false]);
        trigger.into_pin().done();
    }

    /// A grey copy: a background with a little noise, and optionally a bright square at `x`.
    fn scene(seed: u32, object_at: Option<usize>) -> [f32; THUMB_W * THUMB_H] {
        let mut g = [0.0; THUMB_W * THUMB_H];
        for (i, v) in g.iter_mut().enumerate() {
            let noise = ((i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503))
                >> 28) as f32;
            *v = 80.0 + (i % THUMB_W) as f32 + noise * 0.2;
        }
        if let Some(x0) = object_at {
            for y in 6..18 {
                for x in x0..(x0 + 12).min(THUMB_W) {
                    g[y * THUMB_W + x] = 220.0;
                }
            }
        }
        g
    }

    #[test]
    fn motion_fires_once_per_visit_after_the_view_settles() {
        let mut m = MotionDetector::new(MotionSettings::default());
        let mut fired = Vec::new();
        let mut frame = 0;
        let mut feed = |m: &mut MotionDetector, object: Option<usize>, n: usize| {
            for _ in 0..n {
                frame += 1;
                if m.update(&scene(frame, object)) {
                    fired.push(frame);
                }
            }
        };
        feed(&mut m, None, 10); // empty view, sensor noise: nothing
        for x in [0, 6, 12] {
            feed(&mut m, Some(x), 1); // something slides in
        }
        feed(&mut m, Some(16), 8); // and stays: fires once, after 3 still frames
        feed(&mut m, None, 5); // taken away: re-arms
        feed(&mut m, Some(4), 6); // a second visit
        // Still from frame 15 on: fires at the third still frame (17); re-arms after three
        // empty frames; the second visit fires at its fourth frame (30).
        assert_eq!(fired, [17, 30], "frames at which the trigger fired");
    }

    #[test]
    fn motion_ignores_a_passing_object_that_never_settles() {
        let mut m = MotionDetector::new(MotionSettings::default());
        let mut frame = 0;
        for _ in 0..5 {
            frame += 1;
            assert!(!m.update(&scene(frame, None)));
        }
        for x in [0, 5, 10, 15, 20, 25] {
            frame += 1;
            assert!(!m.update(&scene(frame, Some(x))), "moving object at {x}");
        }
        for _ in 0..5 {
            frame += 1;
            assert!(!m.update(&scene(frame, None)));
        }
    }
}
