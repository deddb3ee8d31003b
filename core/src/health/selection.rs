//! Which backends may take requests right now.
//!
//! Rebuilt on a worker when the shared health record changes (or an ejection runs out), never
//! per request; what a policy lays out over the chosen backends is built by the balancer, and
//! only when they change. The rules, in order:
//! 1. Some primaries are eligible (healthy and not ejected): use them, unless fewer than
//!    `panic_threshold_percent` of all primaries are; then *panic*: use every primary, as
//!    Envoy does, because the few left would be overrun.
//! 2. No primary is eligible: use the eligible backups (nginx's `backup`).
//! 3. Nothing is eligible: *all down*; requests get a local 503.

use super::record::HealthRecord;
use crate::config::Config;

/// Which rule chose the population.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The eligible primaries.
    Normal,
    /// Too few primaries eligible: all primaries.
    Panic,
    /// No primary eligible: the eligible backups.
    Backup,
    /// Nothing eligible.
    AllDown,
}

impl Mode {
    /// Lower-case name, for logs and the status page.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Panic => "panic",
            Mode::Backup => "backup",
            Mode::AllDown => "all_down",
        }
    }
}

/// The backends requests may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The rule that applied.
    pub mode: Mode,
    /// Backend indices that may take requests, in configuration order.
    pub population: Vec<usize>,
    allowed: Vec<bool>,
    /// Each backend's own health (healthy and not ejected), whichever rule applied: what a
    /// selection over a subset of the backends ([`Self::within`]) starts from.
    eligible: Vec<bool>,
    /// The earliest time this selection may change without a record change (an ejection
    /// running out); `u64::MAX` when none.
    pub valid_until_ms: u64,
}

impl Selection {
    /// The selection for `config` given `record` (`None`: no health information, all
    /// eligible) at `now_ms`.
    pub fn build(config: &Config, record: Option<&HealthRecord>, now_ms: u64) -> Self {
        let eligible: Vec<bool> = (0..config.backends.len())
            .map(|index| {
                record
                    .and_then(|r| r.backends.get(index))
                    .is_none_or(|backend| backend.eligible(now_ms))
            })
            .collect();
        let valid_until_ms = record
            .map(|r| {
                r.backends
                    .iter()
                    .map(|b| b.ejected_until_ms)
                    .filter(|&until| until > now_ms)
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .unwrap_or(u64::MAX);
        let all: Vec<usize> = (0..config.backends.len()).collect();
        Self::over(config, &all, eligible, valid_until_ms)
    }

    /// The same rules applied to `members` only (indices into `config.backends`, in
    /// configuration order): the selection of a traffic-splitting subset, with this
    /// selection's health and lifetime. The panic threshold counts the members' primaries.
    pub fn within(&self, config: &Config, members: &[usize]) -> Self {
        Self::over(config, members, self.eligible.clone(), self.valid_until_ms)
    }

    /// Whether `other` was built from the same health of every backend as this one.
    pub fn same_health(&self, other: &Self) -> bool {
        self.eligible == other.eligible
    }

    /// The rules over `members`, given each backend's health.
    fn over(config: &Config, members: &[usize], eligible: Vec<bool>, valid_until_ms: u64) -> Self {
        let is_eligible = |index: usize| eligible.get(index).copied().unwrap_or(false);
        let (primaries, backups): (Vec<usize>, Vec<usize>) = members.iter().partition(|&&i| {
            config
                .backends
                .get(i)
                .is_some_and(|backend| !backend.backup)
        });
        let healthy_primaries: Vec<usize> = primaries
            .iter()
            .copied()
            .filter(|&i| is_eligible(i))
            .collect();
        let (mode, population) = if !healthy_primaries.is_empty() {
            let threshold = u64::from(config.panic_threshold_percent);
            let panic = (healthy_primaries.len() as u64) * 100 < threshold * primaries.len() as u64;
            if panic {
                (Mode::Panic, primaries)
            } else {
                (Mode::Normal, healthy_primaries)
            }
        } else {
            let healthy_backups: Vec<usize> =
                backups.into_iter().filter(|&i| is_eligible(i)).collect();
            if healthy_backups.is_empty() {
                (Mode::AllDown, Vec::new())
            } else {
                (Mode::Backup, healthy_backups)
            }
        };
        let mut allowed = vec![false; config.backends.len()];
        for &index in &population {
            if let Some(slot) = allowed.get_mut(index) {
                *slot = true;
            }
        }
        Self {
            mode,
            allowed,
            population,
            eligible,
            valid_until_ms,
        }
    }

    /// Whether backend `index` may take requests.
    pub fn allows(&self, index: usize) -> bool {
        self.allowed.get(index).copied().unwrap_or(false)
    }

    /// The weight of each backend of the population, in its order.
    pub fn weights(&self, config: &Config) -> Vec<u32> {
        self.population
            .iter()
            .filter_map(|&i| config.backends.get(i).map(|b| b.weight))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        Config::parse(json.as_bytes()).unwrap()
    }

    const FOUR_AND_BACKUP: &str = r#"{"backends": [{"cluster": "a"}, {"cluster": "b"},
        {"cluster": "c"}, {"cluster": "d"}, {"cluster": "spare", "backup": true}]}"#;

    fn with_down(down: &[usize]) -> HealthRecord {
        let mut record = HealthRecord::initial(5, true);
        for &i in down {
            record.backends[i].healthy = false;
        }
        record
    }

    fn build(down: &[usize]) -> Selection {
        Selection::build(&config(FOUR_AND_BACKUP), Some(&with_down(down)), 0)
    }

    #[test]
    fn healthy_primaries_only_and_never_the_backup() {
        let selection = build(&[1]);
        assert_eq!(
            (selection.mode, selection.population.clone()),
            (Mode::Normal, vec![0, 2, 3])
        );
        assert!(!selection.allows(1) && !selection.allows(4));
        let none = Selection::build(&config(FOUR_AND_BACKUP), None, 0);
        assert_eq!(none.population, [0, 1, 2, 3]);
    }

    #[test]
    fn panic_below_the_threshold_spreads_over_all_primaries() {
        let at_threshold = build(&[0, 1]);
        assert_eq!(at_threshold.mode, Mode::Normal, "2 of 4 is 50%: not below");
        let below = build(&[0, 1, 2]);
        assert_eq!(
            (below.mode, below.population.clone()),
            (Mode::Panic, vec![0, 1, 2, 3])
        );
        let disabled = Selection::build(
            &config(&FOUR_AND_BACKUP.replace(
                "\"backends\"",
                "\"panic_threshold_percent\": 0, \"backends\"",
            )),
            Some(&with_down(&[0, 1, 2])),
            0,
        );
        assert_eq!(
            (disabled.mode, disabled.population),
            (Mode::Normal, vec![3])
        );
    }

    #[test]
    fn backups_when_no_primary_is_eligible() {
        let selection = build(&[0, 1, 2, 3]);
        assert_eq!(
            (selection.mode, selection.population.clone()),
            (Mode::Backup, vec![4])
        );
    }

    #[test]
    fn all_down() {
        let selection = build(&[0, 1, 2, 3, 4]);
        assert_eq!(selection.mode, Mode::AllDown);
        assert!(selection.population.is_empty());
    }

    #[test]
    fn ejections_count_and_bound_the_selection_lifetime() {
        let mut record = with_down(&[]);
        record.backends[2].ejected_until_ms = 5_000;
        record.backends[3].ejected_until_ms = 9_000;
        let selection = Selection::build(&config(FOUR_AND_BACKUP), Some(&record), 1_000);
        assert_eq!(selection.population, [0, 1]);
        assert_eq!(selection.valid_until_ms, 5_000);
        let later = Selection::build(&config(FOUR_AND_BACKUP), Some(&record), 5_000);
        assert_eq!(later.population, [0, 1, 2]);
    }

    /// A subset gets the same rules over its members alone: its own panic threshold, its own
    /// backups, all down on its own while the backends outside it are up.
    #[test]
    fn within_applies_the_rules_to_the_members_alone() {
        let all = build(&[0, 1]);
        assert_eq!(all.mode, Mode::Normal);
        let over = |members: &[usize]| {
            let subset = all.within(&config(FOUR_AND_BACKUP), members);
            (subset.mode, subset.population)
        };
        assert_eq!(
            over(&[0, 1, 2]),
            (Mode::Panic, vec![0, 1, 2]),
            "1 of 3 is below 50%"
        );
        assert_eq!(over(&[1, 2]), (Mode::Normal, vec![2]));
        assert_eq!(over(&[0, 1, 4]), (Mode::Backup, vec![4]));
        assert_eq!(over(&[0, 1]), (Mode::AllDown, vec![]));
        assert!(all.same_health(&build(&[0, 1])));
        assert!(
            !all.same_health(&build(&[0, 1, 4])),
            "a backup's health counts too"
        );
        assert_eq!(all.population, build(&[0, 1, 4]).population);
    }

    #[test]
    fn weights_carry_over_to_the_population() {
        let cfg = config(
            r#"{"backends": [{"cluster": "a", "weight": 5}, {"cluster": "b"}, {"cluster": "c"}]}"#,
        );
        let mut record = HealthRecord::initial(3, true);
        record.backends[1].healthy = false;
        let selection = Selection::build(&cfg, Some(&record), 0);
        assert_eq!(selection.weights(&cfg), [5, 1]);
    }
}
