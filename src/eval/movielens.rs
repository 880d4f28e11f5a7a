//! MovieLens-100k, streamed in time order (real users, real order): the files from RecBole's
//! copy (fetched by `fetch`), and the next-item workload.
//!
//! Every rating is replayed by timestamp. For each rating in the test part (the last 20% of
//! ratings in time order), before any policy sees it, the policy ranks every item that user has
//! not rated yet (a full ranking, no sampled negatives) and the true item's rank gives HR@10
//! and NDCG@10. Then the rating is fed as an event. In the events-only mode that is all: a
//! `rating` event with its stars and time, as a tracking pipeline sends it, and the test
//! rankings are untracked previews. In the decisions mode, 4–5 is fed as a positive, 1–2 a
//! weak negative, 3 a neutral rating, and before the test part every rating is preceded by a
//! decision over 100 random unrated items, so nudge learns from what it placed and the user
//! did not pick. Item attributes: genres and release year; context: age bucket, gender,
//! occupation.

use std::collections::HashMap;
use std::path::Path;

use crate::api::ItemSpec;
use crate::eval::stats::{cluster_bootstrap, Cluster, Interval};
use crate::eval::{Feedback, Observation, Outcome, Policy, Request};
use crate::rng::Rng;

/// One rating.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rating {
    /// User index (`users`).
    pub user: u32,
    /// Item index (`items`).
    pub item: u32,
    /// 1..=5.
    pub stars: u8,
    /// Unix seconds.
    pub ts_s: u64,
}

/// The data set.
#[derive(Clone, Debug)]
pub struct MovieLens {
    /// Ratings in time order (ties keep file order).
    pub ratings: Vec<Rating>,
    /// Item ids and their attributes, by item index.
    pub items: Vec<ItemSpec>,
    /// User ids, by user index.
    pub users: Vec<String>,
    /// Each user's context pairs, by user index.
    pub contexts: Vec<Vec<(String, String)>>,
}

/// A malformed file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct ParseError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Reads a RecBole atomic file: a header of `name:type` columns, then tab-separated rows.
fn rows(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), ParseError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ParseError {
        file: file.clone(),
        line: 0,
        problem: e.to_string(),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let names = header
        .split('\t')
        .map(|h| h.split(':').next().unwrap_or("").to_string())
        .collect();
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    Ok((names, rows))
}

fn column(names: &[String], name: &str, file: &Path) -> Result<usize, ParseError> {
    names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| ParseError {
            file: file.display().to_string(),
            line: 1,
            problem: format!("no column `{name}`"),
        })
}

fn age_bucket(age: u32) -> &'static str {
    match age {
        0..=17 => "under 18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=49 => "45-49",
        50..=55 => "50-55",
        _ => "56+",
    }
}

impl MovieLens {
    /// Loads `ml-100k.inter`, `.item` and `.user` (in that order, as `fetch` returns them).
    pub fn load(inter: &Path, item: &Path, user: &Path) -> Result<MovieLens, ParseError> {
        let bad = |file: &Path, line: usize, problem: &str| ParseError {
            file: file.display().to_string(),
            line,
            problem: problem.to_string(),
        };
        let mut item_index: HashMap<String, u32> = HashMap::new();
        let mut items = Vec::new();
        let (names, data) = rows(item)?;
        let (id_c, year_c, class_c) = (
            column(&names, "item_id", item)?,
            column(&names, "release_year", item)?,
            column(&names, "class", item)?,
        );
        for (n, r) in data.iter().enumerate() {
            let id = r.get(id_c).ok_or_else(|| bad(item, n + 2, "short row"))?;
            let mut spec = ItemSpec::new(format!("m{id}"));
            if let Some(year) = r.get(year_c).and_then(|y| y.parse::<u32>().ok()) {
                spec = spec
                    .attr("year", year.to_string())
                    .attr("decade", format!("{}s", year / 10 * 10));
            }
            for genre in r
                .get(class_c)
                .map_or("", |s| s.as_str())
                .split(' ')
                .filter(|g| !g.is_empty())
            {
                spec = spec.attr("genre", genre);
            }
            item_index.insert(id.clone(), items.len() as u32);
            items.push(spec);
        }
        let mut user_index: HashMap<String, u32> = HashMap::new();
        let (mut users, mut contexts) = (Vec::new(), Vec::new());
        let (names, data) = rows(user)?;
        let (id_c, age_c, gender_c, occ_c) = (
            column(&names, "user_id", user)?,
            column(&names, "age", user)?,
            column(&names, "gender", user)?,
            column(&names, "occupation", user)?,
        );
        for (n, r) in data.iter().enumerate() {
            let get = |c: usize| r.get(c).ok_or_else(|| bad(user, n + 2, "short row"));
            let id = get(id_c)?;
            let age: u32 = get(age_c)?
                .parse()
                .map_err(|_| bad(user, n + 2, "age is not a number"))?;
            user_index.insert(id.clone(), users.len() as u32);
            users.push(format!("user{id}"));
            contexts.push(vec![
                ("age".to_string(), age_bucket(age).to_string()),
                ("gender".to_string(), get(gender_c)?.clone()),
                ("occupation".to_string(), get(occ_c)?.clone()),
            ]);
        }
        let (names, data) = rows(inter)?;
        let (u_c, i_c, r_c, t_c) = (
            column(&names, "user_id", inter)?,
            column(&names, "item_id", inter)?,
            column(&names, "rating", inter)?,
            column(&names, "timestamp", inter)?,
        );
        let mut ratings = Vec::with_capacity(data.len());
        for (n, r) in data.iter().enumerate() {
            let field = |c: usize| r.get(c).map(String::as_str).unwrap_or("");
            let user = *user_index
                .get(field(u_c))
                .ok_or_else(|| bad(inter, n + 2, "unknown user"))?;
            let item = *item_index
                .get(field(i_c))
                .ok_or_else(|| bad(inter, n + 2, "unknown item"))?;
            let stars: f64 = field(r_c)
                .parse()
                .map_err(|_| bad(inter, n + 2, "bad rating"))?;
            let ts: f64 = field(t_c)
                .parse()
                .map_err(|_| bad(inter, n + 2, "bad timestamp"))?;
            if !(1.0..=5.0).contains(&stars) || ts.is_nan() || ts < 0.0 {
                return Err(bad(inter, n + 2, "rating or timestamp out of range"));
            }
            ratings.push(Rating {
                user,
                item,
                stars: stars as u8,
                ts_s: ts as u64,
            });
        }
        ratings.sort_by_key(|r| r.ts_s);
        Ok(MovieLens {
            ratings,
            items,
            users,
            contexts,
        })
    }

    /// Index of the first test rating: the last `fraction` of ratings in time order.
    pub fn split(&self, fraction: f64) -> usize {
        ((self.ratings.len() as f64) * (1.0 - fraction)).round() as usize
    }

    /// Unix ms of the first rating (where engines' clocks start).
    pub fn start_ms(&self) -> u64 {
        self.ratings.first().map_or(0, |r| r.ts_s * 1000)
    }
}

/// How a rating is fed to a policy: as the rating itself in an event stream, as tracked
/// outcomes (good, poor, neutral) when decisions come first.
pub fn outcome(stars: u8, feedback: Feedback) -> Outcome {
    if feedback == Feedback::EventsOnly {
        return Outcome::Rating(stars as f64);
    }
    match stars {
        4..=5 => Outcome::Click,
        1..=2 => Outcome::Skip,
        s => Outcome::Rating(s as f64),
    }
}

/// One policy's ranking quality on the test part.
#[derive(Clone, Debug)]
pub struct Row {
    /// The policy.
    pub name: String,
    /// HR@10 with a 95% user-bootstrap interval.
    pub hit_rate: Interval,
    /// NDCG@10 with a 95% user-bootstrap interval.
    pub ndcg: Interval,
    /// Test ratings ranked.
    pub ranked: usize,
    /// Per-user (hits, NDCG sum, count), for paired comparisons.
    pub per_user: Vec<(f64, f64, f64)>,
}

/// Candidates of a warm-up decision.
const WARMUP_CANDIDATES: usize = 100;
/// Length of the ranked list.
pub const TOP_K: usize = 10;

/// Streams every rating through `policy` and scores its full rankings on the test part. With
/// `Feedback::Decisions` every training rating is preceded by a decision over 100 random
/// unrated items; with `Feedback::EventsOnly` the ratings arrive as plain `rating` events.
pub fn run(
    data: &MovieLens,
    policy: &mut dyn Policy,
    test_fraction: f64,
    seed: u64,
    feedback: Feedback,
) -> Row {
    let split = data.split(test_fraction);
    let n_items = data.items.len();
    let ids: Vec<String> = data.items.iter().map(|i| i.id.clone()).collect();
    let mut rated: Vec<Vec<bool>> = vec![vec![false; n_items]; data.users.len()];
    let mut per_user = vec![(0.0, 0.0, 0.0); data.users.len()];
    let mut rng = Rng::new(seed);
    let mut candidates: Vec<String> = Vec::with_capacity(n_items);
    let mut index: Vec<u32> = Vec::with_capacity(n_items);
    for (t, r) in data.ratings.iter().enumerate() {
        let (u, ts_ms) = (r.user as usize, r.ts_s * 1000);
        candidates.clear();
        index.clear();
        if t >= split {
            index.extend((0..n_items as u32).filter(|&i| !rated[u][i as usize]));
        } else if feedback == Feedback::Decisions {
            // Warm-up: a random sample of unrated items (the true one only by chance).
            for _ in 0..WARMUP_CANDIDATES * 2 {
                let i = rng.below(n_items) as u32;
                if !rated[u][i as usize] && !index.contains(&i) {
                    index.push(i);
                }
                if index.len() == WARMUP_CANDIDATES {
                    break;
                }
            }
        }
        candidates.extend(index.iter().map(|&i| ids[i as usize].clone()));
        let context = &data.contexts[u];
        if !candidates.is_empty() {
            let req = Request {
                user: &data.users[u],
                context,
                candidates: &candidates,
                n: TOP_K,
                ts_ms,
            };
            let top = policy.place(&req);
            if t >= split {
                let rank = top.iter().position(|&c| index[c] == r.item);
                let e = &mut per_user[u];
                e.0 += rank.is_some() as u8 as f64;
                e.1 += rank.map_or(0.0, |k| 1.0 / ((k + 2) as f64).log2());
                e.2 += 1.0;
            }
        }
        let obs = Observation {
            user: &data.users[u],
            context,
            item: &ids[r.item as usize],
            outcome: outcome(r.stars, feedback),
            ts_ms,
            shown: false,
        };
        policy.observe(&obs);
        rated[u][r.item as usize] = true;
    }
    let clusters = |f: fn(&(f64, f64, f64)) -> f64| -> Vec<Cluster> {
        per_user
            .iter()
            .filter(|e| e.2 > 0.0)
            .map(|e| Cluster {
                sum: f(e),
                count: e.2,
            })
            .collect()
    };
    Row {
        name: policy.name(),
        hit_rate: cluster_bootstrap(&clusters(|e| e.0), 1000, seed),
        ndcg: cluster_bootstrap(&clusters(|e| e.1), 1000, seed),
        ranked: per_user.iter().map(|e| e.2 as usize).sum(),
        per_user,
    }
}

/// Paired difference `a − b` of HR@10 (`ndcg = false`) or NDCG@10, user-bootstrap interval.
pub fn paired(a: &Row, b: &Row, ndcg: bool, seed: u64) -> Interval {
    let clusters: Vec<Cluster> = a
        .per_user
        .iter()
        .zip(&b.per_user)
        .filter(|(x, _)| x.2 > 0.0)
        .map(|(x, y)| Cluster {
            sum: if ndcg { x.1 - y.1 } else { x.0 - y.0 },
            count: x.2,
        })
        .collect();
    cluster_bootstrap(&clusters, 1000, seed)
}
