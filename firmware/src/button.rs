//! The department button: debounced, one event per press (not per bounce, not on release).
use embedded_hal::digital::InputPin;

/// Milliseconds a new level must hold before it counts.
pub const DEBOUNCE_MS: u32 = 20;

/// A debounced push button on an `InputPin`.
pub struct Button<P> {
    pin: P,
    active_low: bool,
    stable: bool,
    candidate: bool,
    since: u32,
}

impl<P: InputPin> Button<P> {
    /// `active_low`: the pin reads low while pressed (a button to ground with a pull-up).
    pub fn new(pin: P, active_low: bool) -> Self {
        Button {
            pin,
            active_low,
            stable: false,
            candidate: false,
            since: 0,
        }
    }

    /// Samples the pin at time `now_ms` (wrapping); true once per debounced press.
    /// A pin read error counts as "not pressed".
    pub fn poll(&mut self, now_ms: u32) -> bool {
        let high = self.pin.is_high().unwrap_or(self.active_low);
        let pressed = high != self.active_low;
        if pressed != self.candidate {
            self.candidate = pressed;
            self.since = now_ms;
            return false;
        }
        if pressed != self.stable && now_ms.wrapping_sub(self.since) >= DEBOUNCE_MS {
            self.stable = pressed;
            return pressed;
        }
        false
    }
}
