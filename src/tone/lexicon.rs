//! A small built-in sentiment scorer for English text, so that a chatbot without a sentiment
//! model of its own can try tone decisions at once. It is a hand-made word list (about 180
//! words and phrases with a valence in −1..1, written for this project, not a published
//! lexicon), with three rules: a negation (`not`, `never`, `no`, `n't`…) flips the valence
//! of the next three words, an intensifier (`very`, `really`, `so`…) scales the next valence
//! word by 1.5, and an exclamation mark adds 10% to the magnitude. The score is the sum of
//! the valences squashed into −1..1 by `x / sqrt(x² + 2)`. A text without any word of the
//! list has no score (`None`), not a neutral one.
//!
//! It is a heuristic, fit for trying the engine out; a chatbot that has a real sentiment
//! model should send its score instead.

/// Words and their valence in −1..1.
const WORDS: &[(&str, f32)] = &[
    // Positive.
    ("amazing", 0.9),
    ("awesome", 0.9),
    ("excellent", 0.9),
    ("fantastic", 0.9),
    ("perfect", 0.9),
    ("love", 0.8),
    ("loved", 0.8),
    ("wonderful", 0.8),
    ("brilliant", 0.8),
    ("great", 0.7),
    ("delighted", 0.8),
    ("happy", 0.7),
    ("glad", 0.6),
    ("thanks", 0.5),
    ("thank", 0.5),
    ("thx", 0.4),
    ("appreciate", 0.6),
    ("helpful", 0.6),
    ("good", 0.5),
    ("nice", 0.5),
    ("cool", 0.4),
    ("fine", 0.2),
    ("ok", 0.1),
    ("okay", 0.1),
    ("easy", 0.4),
    ("fast", 0.3),
    ("quick", 0.3),
    ("works", 0.4),
    ("worked", 0.4),
    ("working", 0.3),
    ("solved", 0.6),
    ("fixed", 0.5),
    ("clear", 0.3),
    ("useful", 0.5),
    ("pleased", 0.6),
    ("enjoy", 0.6),
    ("enjoyed", 0.6),
    ("like", 0.3),
    ("liked", 0.4),
    ("best", 0.7),
    ("better", 0.3),
    ("satisfied", 0.6),
    ("recommend", 0.5),
    ("wow", 0.5),
    ("yay", 0.6),
    ("sweet", 0.4),
    ("calm", 0.2),
    ("relieved", 0.5),
    ("excited", 0.7),
    ("lovely", 0.7),
    ("superb", 0.9),
    ("smooth", 0.4),
    ("kind", 0.4),
    ("friendly", 0.5),
    ("success", 0.6),
    ("successful", 0.6),
    ("yes", 0.1),
    (":)", 0.5),
    (":-)", 0.5),
    (":d", 0.6),
    // Negative.
    ("terrible", -0.9),
    ("horrible", -0.9),
    ("awful", -0.9),
    ("worst", -0.9),
    ("hate", -0.9),
    ("hated", -0.9),
    ("disgusting", -0.9),
    ("furious", -0.9),
    ("useless", -0.8),
    ("angry", -0.8),
    ("scam", -0.8),
    ("ridiculous", -0.7),
    ("pathetic", -0.8),
    ("unacceptable", -0.8),
    ("disappointed", -0.7),
    ("disappointing", -0.7),
    ("frustrated", -0.7),
    ("frustrating", -0.7),
    ("annoyed", -0.6),
    ("annoying", -0.6),
    ("upset", -0.6),
    ("sad", -0.6),
    ("unhappy", -0.7),
    ("bad", -0.6),
    ("poor", -0.5),
    ("wrong", -0.5),
    ("broken", -0.6),
    ("broke", -0.5),
    ("bug", -0.4),
    ("buggy", -0.6),
    ("error", -0.4),
    ("errors", -0.4),
    ("fail", -0.6),
    ("failed", -0.6),
    ("fails", -0.6),
    ("failure", -0.6),
    ("crash", -0.6),
    ("crashed", -0.6),
    ("slow", -0.4),
    ("stuck", -0.5),
    ("confusing", -0.5),
    ("confused", -0.4),
    ("lost", -0.4),
    ("problem", -0.4),
    ("problems", -0.4),
    ("issue", -0.3),
    ("issues", -0.3),
    ("complaint", -0.5),
    ("refund", -0.3),
    ("cancel", -0.3),
    ("waiting", -0.3),
    ("waited", -0.4),
    ("again", -0.2),
    ("still", -0.2),
    ("never", -0.3),
    ("nothing", -0.3),
    ("nobody", -0.4),
    ("worse", -0.6),
    ("hopeless", -0.8),
    ("waste", -0.7),
    ("wasted", -0.7),
    ("rude", -0.7),
    ("incompetent", -0.8),
    ("nonsense", -0.6),
    ("stupid", -0.7),
    ("sucks", -0.8),
    ("damn", -0.5),
    ("wtf", -0.7),
    ("ugh", -0.5),
    ("sigh", -0.4),
    ("tired", -0.4),
    ("sick", -0.5),
    ("worried", -0.5),
    ("afraid", -0.5),
    ("scared", -0.5),
    ("sorry", -0.2),
    ("no", -0.2),
    ("late", -0.3),
    ("missing", -0.4),
    ("expensive", -0.3),
    ("overcharged", -0.7),
    ("impossible", -0.6),
    ("difficult", -0.4),
    ("hard", -0.2),
    ("mess", -0.6),
    (":(", -0.5),
    (":-(", -0.5),
];

/// Words that flip the valence of the next three words.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot",
    "cant", "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent", "wont", "wouldnt",
    "shouldnt", "couldnt", "hardly",
];

/// Words that scale the next valence word.
const INTENSIFIERS: &[&str] = &[
    "very",
    "really",
    "so",
    "extremely",
    "totally",
    "completely",
    "absolutely",
    "incredibly",
    "super",
    "too",
];

/// How many words a negation reaches.
const NEGATION_REACH: usize = 3;

/// The sentiment of `text` in −1..1, or `None` when no word of the list occurs.
pub fn score(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    let mut sum = 0.0f32;
    let mut hits = 0;
    let mut negated = 0usize;
    let mut boost = 1.0f32;
    for raw in lower.split_whitespace() {
        let word = normalise(raw);
        if word.is_empty() {
            continue;
        }
        let negation = NEGATIONS.contains(&word.as_str()) || word.ends_with("n't");
        if let Some(&(_, v)) = WORDS.iter().find(|(w, _)| *w == word) {
            // A negation word that is also in the list ("no", "never") negates; it does not
            // count as a valence of its own.
            if !negation {
                let v = if negated > 0 { -0.75 * v } else { v };
                sum += v * boost;
                hits += 1;
                boost = 1.0;
            }
        }
        if INTENSIFIERS.contains(&word.as_str()) {
            boost = 1.5;
        }
        if negation {
            negated = NEGATION_REACH + 1;
        }
        negated = negated.saturating_sub(1);
    }
    if hits == 0 {
        return None;
    }
    let exclaim = lower.matches('!').count().min(3) as f32;
    let x = sum * (1.0 + 0.1 * exclaim);
    Some(f64::from(x / (x * x + 2.0).sqrt()))
}

/// A token without surrounding punctuation (emoticons kept), apostrophes removed except in
/// `n't`.
fn normalise(raw: &str) -> String {
    if WORDS
        .iter()
        .any(|(w, _)| *w == raw && !w.chars().all(char::is_alphabetic))
    {
        return raw.to_string();
    }
    let trimmed = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'');
    let trimmed = trimmed.trim_matches('\'');
    if trimmed.ends_with("n't") {
        return trimmed.to_string();
    }
    trimmed.replace('\'', "")
}

#[cfg(test)]
mod tests {
    use super::score;

    #[test]
    fn scores_have_the_sign_and_order_a_reader_expects() {
        let happy = score("Thanks, that worked perfectly, great help!").unwrap();
        let fine = score("ok that is fine").unwrap();
        let sour = score("This is useless. Still broken, I'm frustrated").unwrap();
        let furious = score("This is the worst, absolutely terrible service!!!").unwrap();
        assert!(happy > 0.5, "{happy}");
        assert!(fine > 0.0 && fine < happy, "{fine}");
        assert!(sour < -0.5, "{sour}");
        assert!(furious < sour, "{furious} vs {sour}");
        assert!((-1.0..=1.0).contains(&furious) && (-1.0..=1.0).contains(&happy));
    }

    #[test]
    fn negation_flips_and_unknown_text_has_no_score() {
        assert!(score("this is not good").unwrap() < 0.0);
        assert!(score("it isn't working").unwrap() < 0.0);
        assert!(score("not bad at all").unwrap() > 0.0);
        assert_eq!(score("what time is the meeting"), None);
        assert_eq!(score(""), None);
        assert!(score("I'm sad :(").unwrap() < 0.0);
    }
}
