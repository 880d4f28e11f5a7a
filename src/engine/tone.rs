//! `Engine::tone` (issue 15): a message's sentiment enters the user's state as a `sentiment`
//! event, then the configured tones are ranked for the user with their priors (`tone`). Both
//! go through `submit`, in that order, so the decision sees the message.

use crate::api::{
    Candidate, DecideRequest, Decision, Event, EventKind, ItemSpec, SentimentSource, ToneDecision,
    ToneRequest,
};
use crate::engine::pending::Pending;
use crate::engine::Engine;
use crate::error::Error;
use crate::saturation::SaturationConfig;
use crate::shard::msg::ToneInput;
use crate::tone::{item_id, lexicon, mood_bucket};

/// A tone request's two submissions, to wait on in order.
struct Submitted {
    recorded: Option<Pending<Result<crate::api::Ack, Error>>>,
    decided: Pending<Result<Decision, Error>>,
    sentiment: Option<f64>,
    source: SentimentSource,
}

impl Engine {
    fn submit_tone(&self, req: ToneRequest) -> Result<Submitted, Error> {
        let (sentiment, source) = match (req.sentiment, req.text.as_deref()) {
            (Some(s), _) => (Some(s), SentimentSource::Given),
            (None, Some(text)) => match lexicon::score(text) {
                Some(s) => (Some(s), SentimentSource::Lexicon),
                None => (None, SentimentSource::None),
            },
            (None, None) => (None, SentimentSource::None),
        };
        let ts_ms = req.ts_ms.unwrap_or_else(|| self.inner.clock.now_ms());
        let recorded = match sentiment {
            Some(s) => {
                let mut ev = Event::new(req.user.clone(), EventKind::Sentiment)
                    .value(s)
                    .at(ts_ms);
                ev.context = req.context.clone();
                // An invalid message (a NaN, an out-of-range score) refuses the whole request.
                let (shard, ev) = self.valid_event(ev)?;
                Some(self.submit(shard, |r| crate::shard::Msg::Event(ev, r)))
            }
            None => None,
        };
        let tones = &self.inner.cfg.tone.tones;
        let candidates = tones.iter().map(|t| {
            Candidate::Inline(ItemSpec::new(item_id(&t.name)).attr("tone", t.name.clone()))
        });
        let mut decide = DecideRequest::new(req.user, candidates, 1)
            .at(ts_ms)
            .explain(req.explain);
        decide.context = req.context;
        // The message's mood is part of the decision's context, so that rewards teach the
        // model which tone works in which mood (the decayed sentiment lags a conversation).
        if let Some(s) = sentiment {
            decide.context.push(("mood".into(), mood_bucket(s).into()));
        }
        // A chatbot answers every message: no frequency cap or fatigue applies to its tones.
        decide.saturation = Some(SaturationConfig::default());
        Ok(Submitted {
            recorded,
            decided: self.submit_decide_as(
                decide,
                Some(ToneInput {
                    message_sentiment: sentiment.map(|s| s as f32),
                }),
            ),
            sentiment,
            source,
        })
    }

    /// Records a chatbot message's sentiment (given, or scored from its text by the built-in
    /// lexicon) and chooses the tone to answer it in among `Config::tone`'s tones: learned
    /// from rewards on earlier tone decisions, plus each tone's prior on the user's decayed
    /// sentiment and its trend (`docs/tone.md`). Reward the decision on item `tone:<name>`.
    pub fn tone(&self, req: ToneRequest) -> Result<ToneDecision, Error> {
        let s = self.submit_tone(req)?;
        if let Some(recorded) = s.recorded {
            recorded.wait()??;
        }
        let decision = s.decided.wait()??;
        Ok(chosen(decision, s.sentiment, s.source))
    }

    /// `tone`, as a future.
    pub async fn tone_async(&self, req: ToneRequest) -> Result<ToneDecision, Error> {
        let s = self.submit_tone(req)?;
        if let Some(recorded) = s.recorded {
            recorded.await??;
        }
        let decision = s.decided.await??;
        Ok(chosen(decision, s.sentiment, s.source))
    }
}

fn chosen(decision: Decision, sentiment: Option<f64>, source: SentimentSource) -> ToneDecision {
    let item = decision.items.first().map_or("", |p| p.item.as_str());
    ToneDecision {
        tone: item.strip_prefix("tone:").unwrap_or(item).to_string(),
        sentiment,
        source,
        decision,
    }
}
