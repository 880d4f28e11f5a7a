//! `LiveFeatures`: the per-user features read by name (issue 14), kept up to date on every
//! event in O(1): decayed windows, the current session, sentiment's short-term trend, the
//! last device, location and hour, conversion totals, the experiment arm.
//!
//! What `Signals` already keeps (clicks and events per hour, mean dwell, the decayed mean
//! sentiment) is read from it, not kept twice: `get` takes the user's `Signals`. A feature is
//! named by `Feature`, the one table of names; `docs/features.md` is the catalogue.
//!
//! **Time arrives with each event and each read; nothing here reads the clock**, so a replay
//! of the same events gives the same features bit for bit. The binary layout (`encode`,
//! `decode`) uses `persist::codec`'s helpers, so a checkpoint can carry it inside the user
//! record.

use std::sync::Arc;

use crate::actor::signals::Signals;
use crate::api::EventKind;
use crate::config::HygieneConfig;

/// Window of `clicks_1h` (ms): an exponential window with this mean lifetime.
const HOUR_MS: f64 = 3_600_000.0;
/// Window of `events_5m`, `engagement_velocity` and the short-term sentiment (ms).
const FIVE_MIN_MS: f64 = 300_000.0;
/// Window of `avg_scroll_depth` (ms).
const SCROLL_WINDOW_MS: f64 = HOUR_MS;

/// A feature's value as read: borrowed, so reading allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// A number.
    Num(f64),
    /// A string.
    Str(&'a str),
    /// A boolean.
    Bool(bool),
    /// Nothing known yet (no scroll seen, no device given); a rule reading it is skipped.
    Missing,
}

/// A feature's value, owned (for exports).
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureValue {
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// Nothing known yet.
    Missing,
}

impl Value<'_> {
    /// The owned value.
    pub fn to_owned_value(self) -> FeatureValue {
        match self {
            Value::Num(x) => FeatureValue::Num(x),
            Value::Str(s) => FeatureValue::Str(s.to_string()),
            Value::Bool(b) => FeatureValue::Num(f64::from(u8::from(b))),
            Value::Missing => FeatureValue::Missing,
        }
    }
}

/// The type of a feature's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureType {
    /// A number (`f64`).
    Num,
    /// A string.
    Str,
}

/// Every live feature, by name. The enum owns the names and types: there is no other table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Clicks in an exponential window of one hour.
    Clicks1h,
    /// Events of any kind in an exponential window of five minutes.
    Events5m,
    /// Events per minute over the last five minutes (`events_5m / 5`).
    EngagementVelocity,
    /// Decayed clicks per hour (`Signals`, half-life `hygiene.stats_half_life_s`).
    ClicksPerHour,
    /// Decayed events per hour (`Signals`).
    EngagementPerHour,
    /// The depth of the last scroll event (0..1).
    ScrollDepth,
    /// Mean scroll depth, weighted over an exponential window of one hour.
    AvgScrollDepth,
    /// Decayed mean dwell, seconds (`Signals`).
    DwellMeanS,
    /// When the current session started (Unix ms).
    SessionStartMs,
    /// Seconds from the current session's first event to its last.
    SessionLengthS,
    /// Events in the current session.
    SessionEvents,
    /// Sessions started, this one included.
    Sessions,
    /// Seconds since the last event.
    IdleS,
    /// Decayed mean sentiment, -1..1 (`Signals`).
    Sentiment,
    /// Mean sentiment of the last five minutes minus the decayed mean: negative when it turns.
    SentimentTrend,
    /// The `device` of the last event that gave one.
    LastDevice,
    /// The `location` of the last event that gave one.
    LastLocation,
    /// The hour of day (0..23) of the last event: its context's `hour`, else UTC.
    LastHour,
    /// Conversion events.
    Conversions,
    /// Sum of conversion values.
    ConversionValue,
    /// The experiment arm of the user's last decision (`experiment/arm`).
    ExperimentArm,
    /// The id of the user's segment (its nearest centroid; issue 14, item 4).
    Segment,
    /// The operator's name of the user's segment.
    SegmentName,
}

impl Feature {
    /// Every feature, in catalogue order.
    pub const ALL: [Feature; 23] = [
        Feature::Clicks1h,
        Feature::Events5m,
        Feature::EngagementVelocity,
        Feature::ClicksPerHour,
        Feature::EngagementPerHour,
        Feature::ScrollDepth,
        Feature::AvgScrollDepth,
        Feature::DwellMeanS,
        Feature::SessionStartMs,
        Feature::SessionLengthS,
        Feature::SessionEvents,
        Feature::Sessions,
        Feature::IdleS,
        Feature::Sentiment,
        Feature::SentimentTrend,
        Feature::LastDevice,
        Feature::LastLocation,
        Feature::LastHour,
        Feature::Conversions,
        Feature::ConversionValue,
        Feature::ExperimentArm,
        Feature::Segment,
        Feature::SegmentName,
    ];

    /// The feature's name (`user.<name>` in rules, the key in exports).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Clicks1h => "clicks_1h",
            Feature::Events5m => "events_5m",
            Feature::EngagementVelocity => "engagement_velocity",
            Feature::ClicksPerHour => "clicks_per_hour",
            Feature::EngagementPerHour => "engagement_per_hour",
            Feature::ScrollDepth => "scroll_depth",
            Feature::AvgScrollDepth => "avg_scroll_depth",
            Feature::DwellMeanS => "dwell_mean_s",
            Feature::SessionStartMs => "session_start_ms",
            Feature::SessionLengthS => "session_length_s",
            Feature::SessionEvents => "session_events",
            Feature::Sessions => "sessions",
            Feature::IdleS => "idle_s",
            Feature::Sentiment => "sentiment",
            Feature::SentimentTrend => "sentiment_trend",
            Feature::LastDevice => "last_device",
            Feature::LastLocation => "last_location",
            Feature::LastHour => "last_hour",
            Feature::Conversions => "conversions",
            Feature::ConversionValue => "conversion_value",
            Feature::ExperimentArm => "experiment_arm",
            Feature::Segment => "segment",
            Feature::SegmentName => "segment_name",
        }
    }

    /// The feature named `name`.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The type of its value.
    pub fn kind(self) -> FeatureType {
        match self {
            Feature::LastDevice
            | Feature::LastLocation
            | Feature::ExperimentArm
            | Feature::SegmentName => FeatureType::Str,
            _ => FeatureType::Num,
        }
    }
}

/// The facts an event carries for the features beyond its kind and value: the raw `device`,
/// `location` and `hour` of its context (the rest of the context is only hashed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFacts {
    /// The context's `device`.
    pub device: Option<Box<str>>,
    /// The context's `location`.
    pub location: Option<Box<str>>,
    /// The context's `hour`, when it is an hour of day (0..23).
    pub hour: Option<u8>,
}

impl EventFacts {
    /// The facts of a context, `None` when it has none of their keys.
    pub fn of(context: &[(String, String)]) -> Option<Box<EventFacts>> {
        let mut facts = EventFacts::default();
        for (k, v) in context {
            match k.as_str() {
                "device" => facts.device = Some(v.as_str().into()),
                "location" => facts.location = Some(v.as_str().into()),
                "hour" => facts.hour = v.trim().parse::<u8>().ok().filter(|h| *h < 24),
                _ => {}
            }
        }
        (facts != EventFacts::default()).then(|| Box::new(facts))
    }
}

/// A user's features as of one time: everything `get` needs, borrowed.
#[derive(Clone, Copy)]
pub struct FeatureView<'a> {
    /// The user's live features.
    pub features: &'a LiveFeatures,
    /// The user's signal statistics (the features they already keep).
    pub signals: &'a Signals,
    /// The hygiene configuration (the statistics' half-life).
    pub hygiene: &'a HygieneConfig,
    /// `features.session_idle_s`.
    pub session_idle_s: u64,
    /// The time of the reading (Unix ms).
    pub now_ms: u64,
    /// The user's segment: its id and name (`None`: no segment yet, or segments are off).
    pub segment: Option<(u32, Option<&'a str>)>,
}

impl<'a> FeatureView<'a> {
    /// Every feature with its value, in catalogue order.
    pub fn all(&self) -> Vec<(Feature, FeatureValue)> {
        Feature::ALL
            .into_iter()
            .map(|f| (f, self.get(f).to_owned_value()))
            .collect()
    }

    /// The value of `feature`.
    pub fn get(&self, feature: Feature) -> Value<'a> {
        match (feature, self.segment) {
            (Feature::Segment, Some((id, _))) => return Value::Num(f64::from(id)),
            (Feature::SegmentName, Some((_, Some(name)))) => return Value::Str(name),
            _ => {}
        }
        let f = self.features;
        f.get(
            feature,
            self.now_ms,
            self.signals,
            self.hygiene,
            self.session_idle_s,
        )
    }
}

/// One user's live features (what `Signals` does not already keep).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveFeatures {
    /// The time the decayed sums below are decayed to (Unix ms; 0: nothing yet).
    decayed_ms: u64,
    clicks_1h: f64,
    events_5m: f64,
    scroll_weight: f64,
    scroll_sum: f64,
    /// Short-term sentiment: weight and sum over five minutes.
    sentiment_weight: f64,
    sentiment_sum: f64,
    last_scroll: Option<f32>,
    session_start_ms: u64,
    last_event_ms: u64,
    session_events: u32,
    sessions: u32,
    last_hour: u8,
    conversions: u32,
    conversion_value: f64,
    last_device: Option<Box<str>>,
    last_location: Option<Box<str>>,
    arm: Option<Arc<str>>,
}

/// `e^(−Δt/τ)`: the weight left after `elapsed_ms` in an exponential window of `window_ms`.
fn window_factor(elapsed_ms: u64, window_ms: f64) -> f64 {
    if elapsed_ms == 0 {
        return 1.0;
    }
    (-(elapsed_ms as f64) / window_ms).exp()
}

impl LiveFeatures {
    /// Decays the windows to `ts_ms` (earlier times change nothing). A decision calls it so
    /// that reads at its time are plain loads.
    pub fn advance(&mut self, ts_ms: u64) {
        if ts_ms <= self.decayed_ms {
            return;
        }
        let dt = ts_ms - self.decayed_ms;
        let hour = window_factor(dt, HOUR_MS);
        let five = window_factor(dt, FIVE_MIN_MS);
        self.clicks_1h *= hour;
        self.scroll_weight *= window_factor(dt, SCROLL_WINDOW_MS);
        self.scroll_sum *= window_factor(dt, SCROLL_WINDOW_MS);
        self.events_5m *= five;
        self.sentiment_weight *= five;
        self.sentiment_sum *= five;
        self.decayed_ms = ts_ms;
    }

    /// Records one event (already accepted and range-checked) at `ts_ms`. A session ends
    /// after `session_idle_s` without events; an event older than the latest one adds its
    /// weight decayed by its age and does not move the session or the "last" facts.
    pub fn observe(
        &mut self,
        kind: EventKind,
        value: f64,
        ts_ms: u64,
        facts: Option<&EventFacts>,
        session_idle_s: u64,
    ) {
        self.advance(ts_ms);
        let age = self.decayed_ms.saturating_sub(ts_ms);
        let (hour, five) = (window_factor(age, HOUR_MS), window_factor(age, FIVE_MIN_MS));
        self.events_5m += five;
        match kind {
            EventKind::Click => self.clicks_1h += hour,
            EventKind::Scroll => {
                let w = window_factor(age, SCROLL_WINDOW_MS);
                self.scroll_weight += w;
                self.scroll_sum += w * value;
            }
            EventKind::Sentiment => {
                self.sentiment_weight += five;
                self.sentiment_sum += five * value;
            }
            EventKind::Conversion => {
                self.conversions = self.conversions.saturating_add(1);
                self.conversion_value += value;
            }
            _ => {}
        }
        let latest = ts_ms >= self.last_event_ms;
        if latest {
            let idle_ms = session_idle_s.saturating_mul(1000);
            if self.sessions == 0 || ts_ms - self.last_event_ms > idle_ms {
                self.sessions = self.sessions.saturating_add(1);
                self.session_start_ms = ts_ms;
                self.session_events = 0;
            }
            self.last_event_ms = ts_ms;
            if kind == EventKind::Scroll {
                self.last_scroll = Some(value as f32);
            }
            self.last_hour = ((ts_ms / 3_600_000) % 24) as u8;
            if let Some(f) = facts {
                if let Some(h) = f.hour {
                    self.last_hour = h;
                }
                if let Some(d) = &f.device {
                    self.last_device = Some(d.clone());
                }
                if let Some(l) = &f.location {
                    self.last_location = Some(l.clone());
                }
            }
        }
        if ts_ms >= self.session_start_ms {
            self.session_events = self.session_events.saturating_add(1);
        }
    }

    /// Records the experiment arm of a decision (`None`: the user is in no experiment).
    pub fn set_arm(&mut self, arm: Option<(&str, &str)>) {
        match arm {
            None => self.arm = None,
            Some((experiment, arm)) => {
                let same = self.arm.as_deref().is_some_and(|a| {
                    a.len() == experiment.len() + 1 + arm.len()
                        && a.starts_with(experiment)
                        && a.ends_with(arm)
                });
                if !same {
                    self.arm = Some(format!("{experiment}/{arm}").into());
                }
            }
        }
    }

    /// The value of `feature` at `now_ms`, reading what `Signals` keeps from `signals`
    /// (decayed to `now_ms` on the fly; after `advance(now_ms)` the windows are loads).
    pub fn get<'a>(
        &'a self,
        feature: Feature,
        now_ms: u64,
        signals: &Signals,
        hygiene: &HygieneConfig,
        session_idle_s: u64,
    ) -> Value<'a> {
        let since = now_ms.saturating_sub(self.decayed_ms);
        let in_session = self.sessions > 0
            && now_ms.saturating_sub(self.last_event_ms) <= session_idle_s.saturating_mul(1000);
        let num = Value::Num;
        let string = |s: Option<&'a str>| s.map_or(Value::Missing, Value::Str);
        match feature {
            Feature::Clicks1h => num(self.clicks_1h * window_factor(since, HOUR_MS)),
            Feature::Events5m => num(self.events_5m * window_factor(since, FIVE_MIN_MS)),
            Feature::EngagementVelocity => {
                num(self.events_5m * window_factor(since, FIVE_MIN_MS) / 5.0)
            }
            Feature::ClicksPerHour => num(signals.clicks_per_hour_at(now_ms, hygiene)),
            Feature::EngagementPerHour => num(signals.engagement_per_hour_at(now_ms, hygiene)),
            Feature::ScrollDepth => self.last_scroll.map_or(Value::Missing, |s| num(s as f64)),
            Feature::AvgScrollDepth if self.scroll_weight > 0.0 => {
                num(self.scroll_sum / self.scroll_weight)
            }
            Feature::AvgScrollDepth => Value::Missing,
            Feature::DwellMeanS => num(signals.summary(hygiene).dwell_mean_s),
            Feature::SessionStartMs if in_session => num(self.session_start_ms as f64),
            Feature::SessionStartMs => Value::Missing,
            Feature::SessionLengthS if in_session => {
                num((self.last_event_ms - self.session_start_ms) as f64 / 1000.0)
            }
            Feature::SessionEvents if in_session => num(self.session_events as f64),
            Feature::SessionLengthS | Feature::SessionEvents => num(0.0),
            Feature::Sessions => num(self.sessions as f64),
            Feature::IdleS if self.sessions > 0 => {
                num(now_ms.saturating_sub(self.last_event_ms) as f64 / 1000.0)
            }
            Feature::IdleS => Value::Missing,
            Feature::Sentiment => num(signals.sentiment() as f64),
            Feature::SentimentTrend if self.sentiment_weight > 1e-9 => {
                num(self.sentiment_sum / self.sentiment_weight - signals.sentiment() as f64)
            }
            Feature::SentimentTrend => num(0.0),
            Feature::LastDevice => string(self.last_device.as_deref()),
            Feature::LastLocation => string(self.last_location.as_deref()),
            Feature::LastHour if self.sessions > 0 => num(self.last_hour as f64),
            Feature::LastHour => Value::Missing,
            Feature::Conversions => num(self.conversions as f64),
            Feature::ConversionValue => num(self.conversion_value),
            Feature::ExperimentArm => string(self.arm.as_deref()),
            // Not the actor's: `FeatureView` answers them from the shard's centroids.
            Feature::Segment | Feature::SegmentName => Value::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const IDLE_S: u64 = 1800;

    fn num(f: &LiveFeatures, s: &Signals, feature: Feature, now_ms: u64) -> f64 {
        let cfg = HygieneConfig::default();
        match f.get(feature, now_ms, s, &cfg, IDLE_S) {
            Value::Num(x) => x,
            other => panic!("{} is {other:?}", feature.name()),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn the_features_cost_a_user_152_bytes() {
        // docs/features.md quotes this figure; a new field changes both.
        assert_eq!(std::mem::size_of::<LiveFeatures>(), 152);
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        // Rules index a snapshot of every feature by `Feature as usize`.
        for (i, f) in Feature::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i, "{}", f.name());
        }
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        assert_eq!(Feature::from_name("clicks_in_an_hour"), None);
    }

    #[test]
    fn windows_decay_exponentially_with_their_length() {
        let (mut f, s) = (LiveFeatures::default(), Signals::default());
        f.observe(EventKind::Click, 1.0, T0, None, IDLE_S);
        f.observe(EventKind::Click, 1.0, T0 + 60_000, None, IDLE_S);
        f.observe(EventKind::Impression, 1.0, T0 + 60_000, None, IDLE_S);
        let now = T0 + 60_000;
        let expect_clicks = 1.0 + (-60_000.0f64 / 3_600_000.0).exp();
        assert!(close(num(&f, &s, Feature::Clicks1h, now), expect_clicks));
        let expect_events = 2.0 + (-60_000.0f64 / 300_000.0).exp();
        assert!(close(num(&f, &s, Feature::Events5m, now), expect_events));
        assert!(close(
            num(&f, &s, Feature::EngagementVelocity, now),
            expect_events / 5.0
        ));
        // An hour later the hour window kept e^-1 of it, the five-minute one e^-12.
        let later = now + 3_600_000;
        let clicks = num(&f, &s, Feature::Clicks1h, later);
        assert!(close(clicks, expect_clicks * (-1.0f64).exp()), "{clicks}");
        let events = num(&f, &s, Feature::Events5m, later);
        assert!(close(events, expect_events * (-12.0f64).exp()), "{events}");
        // Reading decays on the fly; `advance` stores the same values.
        let mut advanced = f.clone();
        advanced.advance(later);
        assert!(close(num(&advanced, &s, Feature::Clicks1h, later), clicks));
    }

    #[test]
    fn a_late_event_counts_as_old_and_leaves_the_last_facts() {
        let (mut f, s) = (LiveFeatures::default(), Signals::default());
        let mobile = EventFacts {
            device: Some("mobile".into()),
            location: Some("lyon".into()),
            hour: Some(21),
        };
        f.observe(EventKind::Scroll, 0.9, T0, Some(&mobile), IDLE_S);
        let desktop = EventFacts {
            device: Some("desktop".into()),
            ..EventFacts::default()
        };
        // Ten minutes older than the latest: decayed by its age, not the newest fact.
        f.observe(EventKind::Scroll, 0.3, T0 - 600_000, Some(&desktop), IDLE_S);
        let cfg = HygieneConfig::default();
        let get = |feature| f.get(feature, T0, &s, &cfg, IDLE_S);
        assert_eq!(get(Feature::LastDevice), Value::Str("mobile"));
        assert_eq!(get(Feature::LastLocation), Value::Str("lyon"));
        assert_eq!(get(Feature::LastHour), Value::Num(21.0));
        assert_eq!(get(Feature::ScrollDepth), Value::Num(0.9f32 as f64));
        let w = (-600_000.0f64 / 3_600_000.0).exp();
        let Value::Num(avg) = get(Feature::AvgScrollDepth) else {
            panic!("a mean")
        };
        assert!(close(avg, (0.9 + 0.3 * w) / (1.0 + w)), "{avg}");
    }

    #[test]
    fn missing_until_seen_and_utc_hour_without_a_context_hour() {
        let (mut f, s) = (LiveFeatures::default(), Signals::default());
        let cfg = HygieneConfig::default();
        for feature in [
            Feature::LastDevice,
            Feature::ScrollDepth,
            Feature::AvgScrollDepth,
            Feature::IdleS,
            Feature::ExperimentArm,
        ] {
            assert_eq!(f.get(feature, T0, &s, &cfg, IDLE_S), Value::Missing);
        }
        // 1_700_000_000_000 ms is 22:13 UTC.
        f.observe(EventKind::Click, 1.0, T0, None, IDLE_S);
        assert_eq!(num(&f, &s, Feature::LastHour, T0), 22.0);
        f.set_arm(Some(("ranker", "greedy")));
        assert_eq!(
            f.get(Feature::ExperimentArm, T0, &s, &cfg, IDLE_S),
            Value::Str("ranker/greedy")
        );
    }

    #[test]
    fn a_session_ends_after_the_idle_cut_off() {
        let (mut f, s) = (LiveFeatures::default(), Signals::default());
        f.observe(EventKind::Impression, 1.0, T0, None, IDLE_S);
        f.observe(EventKind::Click, 1.0, T0 + 600_000, None, IDLE_S);
        // 30 minutes exactly after the last event: still the same session.
        let at = T0 + 600_000 + IDLE_S * 1000;
        f.observe(EventKind::Click, 1.0, at, None, IDLE_S);
        assert_eq!(num(&f, &s, Feature::Sessions, at), 1.0);
        assert_eq!(num(&f, &s, Feature::SessionEvents, at), 3.0);
        assert_eq!(num(&f, &s, Feature::SessionLengthS, at), 600.0 + 1800.0);
        assert_eq!(num(&f, &s, Feature::SessionStartMs, at), T0 as f64);
        // Read after the cut-off, the session is over.
        let gone = at + IDLE_S * 1000 + 1;
        assert_eq!(num(&f, &s, Feature::SessionEvents, gone), 0.0);
        assert_eq!(num(&f, &s, Feature::SessionLengthS, gone), 0.0);
        assert_eq!(num(&f, &s, Feature::IdleS, gone), 1800.001);
        // One millisecond past it, an event starts a new session.
        f.observe(EventKind::Scroll, 0.5, gone, None, IDLE_S);
        assert_eq!(num(&f, &s, Feature::Sessions, gone), 2.0);
        assert_eq!(num(&f, &s, Feature::SessionEvents, gone), 1.0);
        assert_eq!(num(&f, &s, Feature::SessionStartMs, gone), gone as f64);
        assert_eq!(num(&f, &s, Feature::SessionLengthS, gone), 0.0);
    }

    #[test]
    fn sentiment_trend_is_short_minus_long_and_conversions_add_up() {
        let cfg = HygieneConfig::default();
        let (mut f, mut s) = (LiveFeatures::default(), Signals::default());
        let mut at = T0;
        for (value, step_ms) in [(0.8, 0), (0.6, 600_000), (-0.9, 3_600_000), (-0.7, 60_000)] {
            at += step_ms;
            s.advance(at, &cfg);
            s.observe(EventKind::Sentiment, value, &cfg);
            f.observe(EventKind::Sentiment, value, at, None, IDLE_S);
        }
        let trend = num(&f, &s, Feature::SentimentTrend, at);
        let long = num(&f, &s, Feature::Sentiment, at);
        assert!(
            long > -0.7 && trend < -0.2,
            "a turn: long {long}, trend {trend}"
        );
        f.observe(EventKind::Conversion, 25.0, at, None, IDLE_S);
        f.observe(EventKind::Conversion, 5.0, at, None, IDLE_S);
        assert_eq!(num(&f, &s, Feature::Conversions, at), 2.0);
        assert_eq!(num(&f, &s, Feature::ConversionValue, at), 30.0);
    }

    #[test]
    fn the_binary_form_round_trips() {
        let mut f = LiveFeatures::default();
        let facts = EventFacts {
            device: Some("tablet".into()),
            location: None,
            hour: Some(7),
        };
        f.observe(EventKind::Scroll, 0.4, T0, Some(&facts), IDLE_S);
        f.observe(EventKind::Conversion, 3.5, T0 + 5, None, IDLE_S);
        f.set_arm(Some(("e", "a")));
        use crate::persist::store;
        let path = std::path::Path::new("test");
        for features in [LiveFeatures::default(), f] {
            let out = store::encode(&features);
            let back: LiveFeatures = store::decode(&out, path, "features").unwrap();
            assert_eq!(back, features);
            for cut in 0..out.len() {
                assert!(store::decode::<LiveFeatures>(&out[..cut], path, "features").is_err());
            }
        }
    }
}
