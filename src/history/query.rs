//! A history query as clients write it (HTTP query string or WebSocket
//! request), its validation against the current time, and the answer.
//! Pure: resolving a sensor name to a channel and reading the database are
//! the shell's ([`super::History`]).

use serde::Serialize;
use serde_json::Value;

use super::{Point, Tier};

/// Points a query gets when it does not say.
pub const DEFAULT_MAX_POINTS: usize = 500;
/// Most points a query may ask for.
pub const MAX_POINTS_LIMIT: usize = 10_000;
/// Range a query covers when it gives no `from`: the hour before `to`.
pub const DEFAULT_SPAN_MS: u64 = 3_600_000;
/// Latest time a query may name: the last millisecond of year 9999 (the
/// database keys are signed 64-bit; anything past this is not a time).
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// How a query names a sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorRef {
    /// By channel number.
    Channel(u8),
    /// By the name the device declared.
    Name(String),
}

impl SensorRef {
    /// A path segment or JSON string: a channel number 0–255, else a name.
    pub fn parse(text: &str) -> SensorRef {
        match text.parse::<u8>() {
            Ok(channel) => SensorRef::Channel(channel),
            Err(_) => SensorRef::Name(text.to_string()),
        }
    }

    /// From a JSON `sensor` field: a number 0–255 or a non-empty string.
    pub fn from_json(value: &Value) -> Option<SensorRef> {
        match value {
            Value::Number(n) => n
                .as_u64()
                .and_then(|c| u8::try_from(c).ok())
                .map(SensorRef::Channel),
            Value::String(s) if !s.is_empty() => Some(SensorRef::parse(s)),
            _ => None,
        }
    }
}

/// A query before validation; absent fields take their defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeRequest {
    /// Start, Unix ms (default: `to` minus an hour).
    pub from_ms: Option<u64>,
    /// End, exclusive, Unix ms (default: now).
    pub to_ms: Option<u64>,
    /// Most points wanted (default 500).
    pub max_points: Option<u64>,
}

/// A validated range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Start, Unix ms.
    pub from_ms: u64,
    /// End, exclusive, Unix ms.
    pub to_ms: u64,
    /// Most points in the answer.
    pub max_points: usize,
}

impl RangeRequest {
    /// The range at `now_ms`, or what is wrong with it (a message for the
    /// client).
    pub fn validate(&self, now_ms: u64) -> Result<Range, String> {
        for (key, value) in [("from", self.from_ms), ("to", self.to_ms)] {
            if let Some(v) = value.filter(|&v| v > MAX_TIME_MS) {
                return Err(format!(
                    "`{key}` ({v}) is past the year 9999; give a Unix time in milliseconds (at most {MAX_TIME_MS})"
                ));
            }
        }
        let to_ms = self.to_ms.unwrap_or(now_ms);
        let from_ms = self
            .from_ms
            .unwrap_or_else(|| to_ms.saturating_sub(DEFAULT_SPAN_MS));
        if from_ms >= to_ms {
            return Err(format!(
                "`from` ({from_ms}) must be before `to` ({to_ms}); both are Unix times in milliseconds"
            ));
        }
        let max_points = match self.max_points {
            None => DEFAULT_MAX_POINTS,
            Some(n) if (1..=MAX_POINTS_LIMIT as u64).contains(&n) => n as usize,
            Some(n) => {
                return Err(format!(
                    "`max_points` ({n}) must be between 1 and {MAX_POINTS_LIMIT}"
                ))
            }
        };
        Ok(Range {
            from_ms,
            to_ms,
            max_points,
        })
    }
}

/// Name of a tier in answers.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Raw => "raw",
        Tier::Minute => "minute",
        Tier::Hour => "hour",
    }
}

/// One point of an answer.
#[derive(Debug, Serialize, PartialEq)]
pub struct PointView {
    /// Time of the reading or start of the bucket, Unix ms.
    pub t: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// Latest value.
    pub last: f64,
    /// Readings summarised.
    pub count: u64,
}

impl From<&Point> for PointView {
    fn from(p: &Point) -> PointView {
        PointView {
            t: p.t_ms,
            min: p.min,
            max: p.max,
            mean: p.mean,
            last: p.last,
            count: p.count,
        }
    }
}

/// The answer to a history query (the HTTP body, and the WebSocket
/// `history` message).
#[derive(Debug, Serialize, PartialEq)]
pub struct Answer {
    /// Always "history".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request's id (WebSocket), omitted when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Device id.
    pub device: u32,
    /// Channel of the sensor.
    pub channel: u8,
    /// Start of the range, Unix ms.
    pub from: u64,
    /// End of the range (exclusive), Unix ms.
    pub to: u64,
    /// Most points asked for.
    pub max_points: usize,
    /// Tier the points come from.
    pub tier: &'static str,
    /// Time each point covers, ms: the tier's bucket (1 for raw readings),
    /// or the reduction's step when the tier had more points than asked.
    pub step_ms: u64,
    /// The points, by time; never more than `max_points`.
    pub points: Vec<PointView>,
}

impl Answer {
    /// The answer for `points` read from `tier` and reduced for `range`;
    /// `reduced` says whether [`super::reduce`] merged points.
    pub fn new(
        device: u32,
        channel: u8,
        range: Range,
        tier: Tier,
        reduced: bool,
        points: &[Point],
    ) -> Answer {
        let step_ms = if reduced {
            ((range.to_ms - range.from_ms) / range.max_points as u64).max(1)
        } else {
            tier.bucket_ms()
        };
        Answer {
            kind: "history",
            id: None,
            device,
            channel,
            from: range.from_ms,
            to: range.to_ms,
            max_points: range.max_points,
            tier: tier_name(tier),
            step_ms,
            points: points.iter().map(PointView::from).collect(),
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Plain numbers and strings (values are finite): cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_past_year_9999_are_refused_not_answered_empty() {
        // Regression: `to` ≥ 2^63 used to wrap in the database and answer
        // an empty range instead of a 400.
        let request = RangeRequest {
            from_ms: Some(0),
            to_ms: Some(1 << 63),
            max_points: None,
        };
        let e = request.validate(1_000).unwrap_err();
        assert!(e.contains("`to`") && e.contains("9999"), "{e}");
        let request = RangeRequest {
            from_ms: Some(u64::MAX),
            to_ms: None,
            max_points: None,
        };
        assert!(request.validate(1_000).unwrap_err().contains("`from`"));
        let ok = RangeRequest {
            from_ms: Some(0),
            to_ms: Some(MAX_TIME_MS),
            max_points: None,
        };
        assert!(ok.validate(1_000).is_ok());
    }

    use super::*;

    const NOW: u64 = 1_763_730_000_000;

    #[test]
    fn defaults_are_the_last_hour_and_500_points() {
        let range = RangeRequest::default().validate(NOW).unwrap();
        assert_eq!(
            range,
            Range {
                from_ms: NOW - 3_600_000,
                to_ms: NOW,
                max_points: 500
            }
        );
        let to = RangeRequest {
            to_ms: Some(NOW - 10_000),
            ..Default::default()
        };
        assert_eq!(to.validate(NOW).unwrap().from_ms, NOW - 10_000 - 3_600_000);
    }

    #[test]
    fn bad_ranges_and_point_counts_say_what_is_wrong() {
        let backwards = RangeRequest {
            from_ms: Some(NOW),
            to_ms: Some(NOW - 1),
            max_points: None,
        };
        assert!(backwards
            .validate(NOW)
            .unwrap_err()
            .contains("must be before"));
        for n in [0, 10_001] {
            let r = RangeRequest {
                max_points: Some(n),
                ..Default::default()
            };
            assert!(r.validate(NOW).unwrap_err().contains("between 1 and 10000"));
        }
        let ok = RangeRequest {
            max_points: Some(10_000),
            ..Default::default()
        };
        assert_eq!(ok.validate(NOW).unwrap().max_points, 10_000);
    }

    #[test]
    fn sensors_by_channel_or_name() {
        assert_eq!(SensorRef::parse("3"), SensorRef::Channel(3));
        assert_eq!(SensorRef::parse("256"), SensorRef::Name("256".into()));
        assert_eq!(SensorRef::parse("temp"), SensorRef::Name("temp".into()));
        assert_eq!(
            SensorRef::from_json(&serde_json::json!(255)),
            Some(SensorRef::Channel(255))
        );
        assert_eq!(SensorRef::from_json(&serde_json::json!(256)), None);
        assert_eq!(SensorRef::from_json(&serde_json::json!(-1)), None);
        assert_eq!(SensorRef::from_json(&serde_json::json!("")), None);
        assert_eq!(SensorRef::from_json(&serde_json::json!(null)), None);
    }

    #[test]
    fn the_answer_names_its_tier_and_step() {
        let range = Range {
            from_ms: NOW - 600_000,
            to_ms: NOW,
            max_points: 100,
        };
        let points = [Point::raw(NOW - 5, 21.5)];
        let raw = Answer::new(7, 1, range, Tier::Raw, false, &points);
        let json: Value = serde_json::from_str(&raw.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "history", "device": 7, "channel": 1,
                "from": NOW - 600_000, "to": NOW, "max_points": 100,
                "tier": "raw", "step_ms": 1,
                "points": [{"t": NOW - 5, "min": 21.5, "max": 21.5, "mean": 21.5, "last": 21.5, "count": 1}]
            })
        );
        let reduced = Answer::new(7, 1, range, Tier::Minute, true, &points);
        assert_eq!((reduced.tier, reduced.step_ms), ("minute", 6_000));
        assert_eq!(
            Answer::new(7, 1, range, Tier::Hour, false, &[]).step_ms,
            3_600_000
        );
    }
}
