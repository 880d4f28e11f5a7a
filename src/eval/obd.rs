//! The Open Bandit Dataset sample (Saito et al. 2020, arXiv:2008.07146) as a replay log: a
//! campaign of ZOZOTOWN under its uniformly random logging policy (`random/all`: 10,000
//! impressions of 80 items, propensity 1/80, 38 clicks; `random/men` and `random/women`
//! likewise, on their own catalogs).
//!
//! The sample has no user id. Each row's four hashed user features become the context, and
//! together they name a pseudo-user (a segment), so "personal" weights here are per segment.
//! The position (1–3) is added to the context. Items get their categorical features as
//! attributes and the numeric one bucketed. This module only reads the CSV files.

use std::path::Path;

use crate::api::ItemSpec;
use crate::eval::replay::Logged;

/// The sample, ready for `replay`.
#[derive(Clone, Debug)]
pub struct Obd {
    /// Logged decisions in time order.
    pub log: Vec<Logged>,
    /// The catalog.
    pub items: Vec<ItemSpec>,
}

/// A malformed file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct ObdError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

fn csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), ObdError> {
    let text = std::fs::read_to_string(path).map_err(|e| ObdError {
        file: path.display().to_string(),
        line: 0,
        problem: e.to_string(),
    })?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    Ok((header, rows))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `2019-11-24 00:00:34.762830+00:00` (UTC) into Unix ms.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('+').next()?;
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    let ms =
        (days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60) * 1000 + (sec * 1000.0) as i64;
    u64::try_from(ms).ok()
}

/// A campaign of the sample's random logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Campaign {
    /// Every item (80).
    All,
    /// Men's items.
    Men,
    /// Women's items.
    Women,
}

impl Campaign {
    /// The three, in table order.
    pub const ALL: [Campaign; 3] = [Campaign::All, Campaign::Men, Campaign::Women];

    /// Its folder's name.
    pub fn name(self) -> &'static str {
        match self {
            Campaign::All => "all",
            Campaign::Men => "men",
            Campaign::Women => "women",
        }
    }

    /// Indices of its rows file and item file among `fetch::OPEN_BANDIT_SAMPLE`'s members.
    pub fn members(self) -> (usize, usize) {
        match self {
            Campaign::All => (0, 1),
            Campaign::Men => (2, 3),
            Campaign::Women => (4, 5),
        }
    }
}

/// Loads a campaign's `<campaign>.csv` and its `item_context.csv`.
pub fn load(rows_csv: &Path, items_csv: &Path) -> Result<Obd, ObdError> {
    let bad = |file: &Path, line: usize, problem: String| ObdError {
        file: file.display().to_string(),
        line,
        problem,
    };
    let (header, rows) = csv(items_csv)?;
    let col = |h: &[String], name: &str, file: &Path| {
        h.iter()
            .position(|c| c == name)
            .ok_or_else(|| bad(file, 1, format!("no column `{name}`")))
    };
    let id_c = col(&header, "item_id", items_csv)?;
    let feature_cols: Vec<(String, usize)> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("item_feature_"))
        .map(|(i, h)| (h.clone(), i))
        .collect();
    let mut items = Vec::new();
    for (n, r) in rows.iter().enumerate() {
        let id = r
            .get(id_c)
            .ok_or_else(|| bad(items_csv, n + 2, "short row".into()))?;
        let mut spec = ItemSpec::new(format!("item{id}"));
        for (name, c) in &feature_cols {
            let v = r.get(*c).map_or("", String::as_str);
            // Numeric features are bucketed to one decimal; hashed ones are used as given.
            let value = v
                .parse::<f64>()
                .map_or_else(|_| v.to_string(), |x| format!("{x:.1}"));
            spec = spec.attr(name.clone(), value);
        }
        items.push(spec);
    }
    let candidates: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let (header, rows) = csv(rows_csv)?;
    let [ts_c, item_c, pos_c, click_c, prop_c] = [
        "timestamp",
        "item_id",
        "position",
        "click",
        "propensity_score",
    ]
    .map(|n| col(&header, n, rows_csv));
    let (ts_c, item_c, pos_c, click_c, prop_c) = (ts_c?, item_c?, pos_c?, click_c?, prop_c?);
    let user_cols: Vec<(String, usize)> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("user_feature_"))
        .map(|(i, h)| (h.clone(), i))
        .collect();
    let mut log = Vec::with_capacity(rows.len());
    for (n, r) in rows.iter().enumerate() {
        let line = n + 2;
        let get = |c: usize| {
            r.get(c)
                .map(String::as_str)
                .ok_or_else(|| bad(rows_csv, line, "short row".into()))
        };
        let ts_ms = parse_timestamp(get(ts_c)?)
            .ok_or_else(|| bad(rows_csv, line, "bad timestamp".into()))?;
        let num = |c: usize, what: &str| {
            get(c)?
                .parse::<f64>()
                .map_err(|_| bad(rows_csv, line, format!("`{what}` is not a number")))
        };
        let (click, propensity) = (num(click_c, "click")?, num(prop_c, "propensity_score")?);
        let mut context: Vec<(String, String)> = Vec::with_capacity(user_cols.len() + 1);
        let mut segment = String::from("segment");
        for (name, c) in &user_cols {
            let v = get(*c)?;
            segment.push(':');
            segment.push_str(&v[..v.len().min(8)]);
            context.push((name.clone(), v.to_string()));
        }
        context.push(("position".into(), get(pos_c)?.to_string()));
        log.push(Logged {
            ts_ms,
            user: segment,
            context,
            candidates: candidates.clone(),
            item: format!("item{}", get(item_c)?),
            propensity,
            reward: click.clamp(0.0, 1.0),
        });
    }
    log.sort_by_key(|l| l.ts_ms);
    Ok(Obd { log, items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_utc() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.5+00:00"), Some(1500));
        assert_eq!(
            parse_timestamp("2019-11-24 00:00:34.762830+00:00"),
            Some(1_574_553_634_762)
        );
        assert_eq!(parse_timestamp("nonsense"), None);
    }
}
