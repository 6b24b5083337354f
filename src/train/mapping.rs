//! Name mapping rules between a model's tensors and a weight file's: exact renames and
//! `*` patterns (`"features_*.conv.*": "features.*.conv.*"`), so that a PyTorch
//! `state_dict` with Sequential-style numeric paths loads with a few rules, not one per
//! tensor. Layer lists (`transfer.freeze`, `transfer.skip`) take the same patterns.

use std::collections::BTreeMap;

/// The texts each `*` of `pattern` stands for in `name`, if it matches. A `*` matches one
/// or more characters; the shortest match is tried first, so `a.*.b` splits at the first
/// place that lets the rest match.
pub fn glob(pattern: &str, name: &str) -> Option<Vec<String>> {
    fn go(p: &[u8], n: &[u8], caps: &mut Vec<String>) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => {
                for cut in 1..=n.len() {
                    caps.push(String::from_utf8_lossy(&n[..cut]).into_owned());
                    if go(rest, &n[cut..], caps) {
                        return true;
                    }
                    caps.pop();
                }
                false
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..], caps),
        }
    }
    let mut caps = Vec::new();
    go(pattern.as_bytes(), name.as_bytes(), &mut caps).then_some(caps)
}

/// Whether `name` is a pattern rather than a plain name.
pub fn is_pattern(name: &str) -> bool {
    name.contains('*')
}

/// `transfer.map`: our tensor name → the file's, from exact entries first, then the most
/// specific pattern (the most characters that are not `*`) that matches.
pub struct Mapping<'a> {
    exact: BTreeMap<&'a str, &'a str>,
    patterns: Vec<(&'a str, &'a str)>,
}

impl<'a> Mapping<'a> {
    /// The rules of `map`; `Err` names a pattern whose two sides have different numbers of `*`.
    pub fn new(map: &'a BTreeMap<String, String>) -> Result<Self, String> {
        let mut exact = BTreeMap::new();
        let mut patterns = Vec::new();
        for (ours, theirs) in map {
            if is_pattern(ours) || is_pattern(theirs) {
                let (a, b) = (ours.matches('*').count(), theirs.matches('*').count());
                if a != b {
                    return Err(format!(
                        "transfer.map `{ours}: {theirs}` has {a} `*` on the left and {b} on the right\n  hint: each `*` of the model's name stands for the same text in the file's, e.g. `\"f_*.*\": \"features.*.*\"`"
                    ));
                }
                patterns.push((ours.as_str(), theirs.as_str()));
            } else {
                exact.insert(ours.as_str(), theirs.as_str());
            }
        }
        patterns.sort_by_key(|(p, _)| std::cmp::Reverse(p.len() - p.matches('*').count()));
        Ok(Mapping { exact, patterns })
    }

    /// The name `ours` has in the file.
    pub fn theirs(&self, ours: &str) -> String {
        if let Some(t) = self.exact.get(ours) {
            return t.to_string();
        }
        for (pattern, target) in &self.patterns {
            if let Some(caps) = glob(pattern, ours) {
                let mut out = String::new();
                let mut caps = caps.into_iter();
                for (k, piece) in target.split('*').enumerate() {
                    if k > 0 {
                        out.push_str(&caps.next().unwrap_or_default());
                    }
                    out.push_str(piece);
                }
                return out;
            }
        }
        ours.to_string()
    }

    /// The rules (exact names and patterns) that no name of `ours` uses: likely typos.
    pub fn unused<'n>(&self, ours: impl Iterator<Item = &'n str> + Clone) -> Vec<&'a str> {
        let mut out: Vec<&str> = self
            .exact
            .keys()
            .filter(|k| !ours.clone().any(|n| n == **k))
            .copied()
            .collect();
        out.extend(
            self.patterns
                .iter()
                .filter(|(p, _)| !ours.clone().any(|n| glob(p, n).is_some()))
                .map(|(p, _)| *p),
        );
        out
    }
}

/// `features.10.conv` after `features.2.conv`: numbers in names compare as numbers, so a
/// PyTorch file's tensors list in module order.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let pieces = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    };
    let (pa, pb) = (pieces(a), pieces(b));
    for ((da, ta), (db, tb)) in pa.iter().zip(&pb) {
        let ord = match (da, db) {
            (true, true) => ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb)),
            _ => ta.cmp(tb),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Renames proposed one per tensor, folded into `*` patterns where they can be: in each
/// pair with the same numbers in the same order on both sides, every number becomes a
/// `*`, and so does a last part both share (`weight`, `running_var`). The patterns are
/// kept only if, with the recipe's `rules`, they give every tensor of the model the name
/// `expected` says (ours, theirs); otherwise the renames stay one per tensor.
pub fn fold_into_patterns(
    proposed: &[(String, String)],
    rules: &BTreeMap<String, String>,
    expected: &[(String, String)],
) -> Vec<(String, String)> {
    let mut patterns: Vec<(String, String)> = Vec::new();
    for (ours, theirs) in proposed {
        let Some(pattern) = generalize(ours, theirs) else {
            return proposed.to_vec();
        };
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
    }
    let mut combined = rules.clone();
    combined.extend(patterns.iter().cloned());
    let Ok(mapping) = Mapping::new(&combined) else {
        return proposed.to_vec();
    };
    let all_right = expected
        .iter()
        .all(|(ours, theirs)| mapping.theirs(ours) == *theirs);
    if all_right && patterns.len() < proposed.len() {
        patterns
    } else {
        proposed.to_vec()
    }
}

/// `features_3.c_1.bias` → `features.3.1.bias` as `features_*.c_*.*` → `features.*.*.*`;
/// `None` when the two sides do not carry the same numbers in the same order.
fn generalize(ours: &str, theirs: &str) -> Option<(String, String)> {
    fn starred(name: &str) -> (String, Vec<String>) {
        let (mut text, mut numbers) = (String::new(), Vec::<String>::new());
        let mut in_number = false;
        for c in name.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    text.push('*');
                    numbers.push(String::new());
                }
                numbers.last_mut().expect("a number was started").push(c);
            } else {
                text.push(c);
            }
            in_number = c.is_ascii_digit();
        }
        (text, numbers)
    }
    let ((ours, a), (theirs, b)) = (starred(ours), starred(theirs));
    if a != b {
        return None;
    }
    Some(match (ours.rsplit_once('.'), theirs.rsplit_once('.')) {
        (Some((x, last)), Some((y, their_last))) if last == their_last && !last.contains('*') => {
            (format!("{x}.*"), format!("{y}.*"))
        }
        _ => (ours, theirs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_fold_into_patterns_only_when_they_give_every_name() {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let proposed = pairs(&[
            ("features_0.c_0.weight", "features.0.0.weight"),
            ("features_0.c_1.bias", "features.0.1.bias"),
            (
                "features_1.block_0.c_1.running_var",
                "features.1.block.0.1.running_var",
            ),
            (
                "features_2.block_0.c_1.running_var",
                "features.2.block.0.1.running_var",
            ),
            ("classifier_3.weight", "classifier.3.weight"),
        ]);
        let folded = fold_into_patterns(&proposed, &BTreeMap::new(), &proposed);
        assert_eq!(
            folded,
            pairs(&[
                ("features_*.c_*.*", "features.*.*.*"),
                ("features_*.block_*.c_*.*", "features.*.block.*.*.*"),
                ("classifier_*.*", "classifier.*.*"),
            ])
        );
        // A tensor the patterns would rename wrongly keeps the renames one per tensor.
        let mut expected = proposed.clone();
        expected.push((
            "features_9.c_9.weight".into(),
            "features_9.c_9.weight".into(),
        ));
        assert_eq!(
            fold_into_patterns(&proposed, &BTreeMap::new(), &expected),
            proposed
        );
        // Different numbers on the two sides: nothing to fold.
        let shifted = pairs(&[
            ("f1.weight", "features.2.weight"),
            ("f2.weight", "features.3.weight"),
        ]);
        assert_eq!(
            fold_into_patterns(&shifted, &BTreeMap::new(), &shifted),
            shifted
        );
    }

    #[test]
    fn patterns_carry_their_stars_across() {
        let map: BTreeMap<String, String> = [
            ("f_*.c_*.*", "features.*.conv.*.*"),
            ("head.weight", "classifier.1.weight"),
            ("stem.*", "features.0.*"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let m = Mapping::new(&map).unwrap();
        assert_eq!(m.theirs("f_3.c_1.weight"), "features.3.conv.1.weight");
        assert_eq!(m.theirs("stem.bn.running_var"), "features.0.bn.running_var");
        assert_eq!(m.theirs("head.weight"), "classifier.1.weight");
        assert_eq!(m.theirs("head.bias"), "head.bias");
        assert_eq!(
            m.unused(["head.weight", "stem.x"].into_iter()),
            vec!["f_*.c_*.*"]
        );
    }

    #[test]
    fn unequal_stars_are_refused() {
        let map: BTreeMap<String, String> = [("a.*".to_string(), "b".to_string())].into();
        assert!(Mapping::new(&map)
            .err()
            .unwrap()
            .contains("1 `*` on the left and 0"));
    }

    #[test]
    fn glob_needs_text_for_each_star() {
        assert_eq!(glob("a*", "a"), None);
        assert_eq!(glob("a.*.b", "a.x.y.b"), Some(vec!["x.y".to_string()]));
    }

    #[test]
    fn numbers_sort_as_numbers() {
        let mut v = vec!["features.10.weight", "features.2.weight", "features.1.bias"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["features.1.bias", "features.2.weight", "features.10.weight"]
        );
    }
}
