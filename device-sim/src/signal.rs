//! Plausible sensor signals: each kind has a daily cycle, slow drift,
//! noise and rare spikes, computed from a time passed in and a seeded RNG,
//! so a simulated fleet is reproducible and needs no clock of its own.

use sensor_hub_protocol::Value;

const DAY_MS: f64 = 86_400_000.0;

/// What a simulated sensor measures; decides range, unit and value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// Air temperature in °C (f32).
    Temperature,
    /// Relative humidity in % (f32).
    Humidity,
    /// Barometric pressure in hPa (f32).
    Pressure,
    /// CO₂ concentration in ppm (i32).
    Co2,
    /// Battery voltage in V (f32), slowly draining.
    Battery,
    /// Motion detected (bool).
    Motion,
}

impl SignalKind {
    /// Human name of the sensor.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::Temperature => "temperature",
            SignalKind::Humidity => "humidity",
            SignalKind::Pressure => "pressure",
            SignalKind::Co2 => "co2",
            SignalKind::Battery => "battery",
            SignalKind::Motion => "motion",
        }
    }

    /// Unit of the values, empty for booleans.
    pub fn unit(self) -> &'static str {
        match self {
            SignalKind::Temperature => "°C",
            SignalKind::Humidity => "%",
            SignalKind::Pressure => "hPa",
            SignalKind::Co2 => "ppm",
            SignalKind::Battery => "V",
            SignalKind::Motion => "",
        }
    }
}

/// The evolving state of one sensor's signal.
#[derive(Debug, Clone)]
pub struct Signal {
    kind: SignalKind,
    /// Fraction of a day by which this sensor's cycle is shifted.
    phase: f64,
    /// Random-walk drift added to the base level.
    drift: f64,
}

impl Signal {
    /// A signal of `kind` whose daily cycle is shifted by `phase` (0..1).
    pub fn new(kind: SignalKind, phase: f64) -> Signal {
        Signal {
            kind,
            phase,
            drift: 0.0,
        }
    }

    /// The sensor's kind.
    pub fn kind(&self) -> SignalKind {
        self.kind
    }

    /// Samples the signal at `time_ms` (Unix milliseconds).
    pub fn sample(&mut self, time_ms: u64, rng: &mut fastrand::Rng) -> Value {
        let day = (time_ms as f64 / DAY_MS + self.phase).fract();
        // Peak mid-afternoon, trough before dawn.
        let cycle = (std::f64::consts::TAU * (day - 0.375)).sin();
        let noise = gaussian(rng);
        let spike = if rng.u32(0..2_000) == 0 {
            gaussian(rng) * 8.0
        } else {
            0.0
        };
        self.drift = (self.drift + noise * 0.01).clamp(-3.0, 3.0);
        match self.kind {
            SignalKind::Temperature => {
                Value::F32((21.0 + 4.0 * cycle + self.drift + noise * 0.1 + spike) as f32)
            }
            SignalKind::Humidity => Value::F32(
                (50.0 - 12.0 * cycle + 2.0 * self.drift + noise * 0.5).clamp(0.0, 100.0) as f32,
            ),
            SignalKind::Pressure => {
                Value::F32((1013.0 + 4.0 * self.drift + noise * 0.05 + spike * 0.1) as f32)
            }
            SignalKind::Co2 => {
                let occupied = (cycle + 0.2).max(0.0);
                let ppm = 420.0 + 700.0 * occupied + 20.0 * self.drift + noise * 8.0 + spike * 20.0;
                Value::I32(ppm.max(380.0) as i32)
            }
            SignalKind::Battery => {
                // A cell drains from 4.2 V to 3.3 V over ten days, then is swapped.
                let life = (time_ms as f64 / (10.0 * DAY_MS) + self.phase).fract();
                Value::F32((4.2 - 0.9 * life + noise * 0.005) as f32)
            }
            SignalKind::Motion => {
                let chance = 0.05 + 0.25 * (cycle + 1.0) / 2.0;
                Value::Bool(rng.f64() < chance)
            }
        }
    }
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(kind: SignalKind) -> (f64, f64) {
        let mut signal = Signal::new(kind, 0.3);
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for minute in 0..(2 * 24 * 60) {
            let v = match signal.sample(1_700_000_000_000 + minute * 60_000, &mut rng) {
                Value::F32(f) => f64::from(f),
                Value::I32(i) => f64::from(i),
                Value::Bool(b) => f64::from(u8::from(b)),
            };
            lo = lo.min(v);
            hi = hi.max(v);
        }
        (lo, hi)
    }

    #[test]
    fn signals_stay_in_physical_ranges_and_vary() {
        let (lo, hi) = range(SignalKind::Temperature);
        assert!(lo > -10.0 && hi < 50.0 && hi - lo > 4.0, "{lo}..{hi}");
        let (lo, hi) = range(SignalKind::Humidity);
        assert!(lo >= 0.0 && hi <= 100.0 && hi - lo > 10.0, "{lo}..{hi}");
        let (lo, hi) = range(SignalKind::Co2);
        assert!(lo >= 380.0 && hi < 3_000.0 && hi - lo > 300.0, "{lo}..{hi}");
        let (lo, hi) = range(SignalKind::Battery);
        assert!(lo >= 3.2 && hi <= 4.3, "{lo}..{hi}");
        assert_eq!(range(SignalKind::Motion), (0.0, 1.0));
    }

    #[test]
    fn value_types_follow_the_kind() {
        let mut rng = fastrand::Rng::with_seed(1);
        let t = 1_700_000_000_000;
        assert!(matches!(
            Signal::new(SignalKind::Co2, 0.0).sample(t, &mut rng),
            Value::I32(_)
        ));
        assert!(matches!(
            Signal::new(SignalKind::Motion, 0.0).sample(t, &mut rng),
            Value::Bool(_)
        ));
        assert!(matches!(
            Signal::new(SignalKind::Pressure, 0.0).sample(t, &mut rng),
            Value::F32(_)
        ));
    }
}
