//! The status LED on an embedded-hal output pin: a blink per lookup, steady on while a fault
//! lasts. A failing LED is logged once and otherwise ignored: it must never stop lookups.

use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;

#[derive(Debug)]
pub struct StatusLed<P> {
    pin: P,
    active_low: bool,
    blink: Duration,
    blink_until: Option<Instant>,
    fault: bool,
    lit: Option<bool>,
    warned: bool,
}

impl<P: OutputPin> StatusLed<P> {
    /// Starts dark.
    pub fn new(pin: P, active_low: bool, blink: Duration) -> Self {
        let mut led = Self {
            pin,
            active_low,
            blink,
            blink_until: None,
            fault: false,
            lit: None,
            warned: false,
        };
        led.show(Instant::now());
        led
    }

    /// A lookup happened at `now`: blink.
    pub fn lookup(&mut self, now: Instant) {
        self.blink_until = Some(now + self.blink);
        self.show(now);
    }

    /// A fault began (`true`) or ended.
    pub fn fault(&mut self, on: bool, now: Instant) {
        self.fault = on;
        self.show(now);
    }

    /// Call now and then: ends a blink whose time is over.
    pub fn tick(&mut self, now: Instant) {
        self.show(now);
    }

    fn show(&mut self, now: Instant) {
        if self.blink_until.is_some_and(|t| now >= t) {
            self.blink_until = None;
        }
        let lit = self.fault || self.blink_until.is_some();
        if self.lit == Some(lit) {
            return;
        }
        let high = lit != self.active_low;
        let result = if high {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        };
        match result {
            Ok(()) => self.lit = Some(lit),
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!("status LED: {e:?}");
            }
            Err(_) => {}
        }
    }

    /// The pin, back (tests check their mocks are done).
    pub fn into_pin(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction};

    #[test]
    fn blinks_per_lookup_and_stays_on_during_a_fault() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Active-low: lit is low.
        let expected = [
            State::High, // dark at start
            State::Low,  // lookup
            State::High, // blink over
            State::Low,  // fault
            State::High, // fault over
        ]
        .map(Transaction::set);
        let mut led = StatusLed::new(PinMock::new(&expected), true, Duration::from_millis(80));
        led.lookup(ms(0));
        led.tick(ms(40)); // still lit: no change on the pin
        led.tick(ms(81));
        led.fault(true, ms(100));
        led.lookup(ms(120)); // lit already
        led.tick(ms(300)); // the fault keeps it lit
        led.fault(false, ms(400));
        led.into_pin().done();
    }
}
