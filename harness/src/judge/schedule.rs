//! When a run's faults fire: a pure function of the time and of what the timeline says, without
//! I/O, so the schedule is unit-tested here and the runner only applies what it is handed.
//!
//! A fault `at: 10s` fires 10 s after the run's clock starts; `after: <check>` (with an optional
//! delay) fires that long after the check first holds; a fault with `for:` has its undo (start
//! a killed node, heal a partition, clear impairments) scheduled that long after it fired.

use std::time::{Duration, Instant};

use crate::model::{Action, Check, Fault, Trigger};

/// A fault to apply now.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub action: Action,
    /// The line of the fault in the topology file (an undo keeps its fault's line).
    pub line: u64,
}

/// A fault not fired yet.
#[derive(Debug, Clone)]
struct Pending {
    /// When it fires, once known (an `after:` fault's only once its check holds).
    due: Option<Instant>,
    trigger: Trigger,
    action: Action,
    /// `for:`: undo this long after firing.
    undo_after: Option<Duration>,
    line: u64,
}

/// The faults of a run that have not fired yet.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    pending: Vec<Pending>,
}

impl Schedule {
    /// The faults of a topology, on a run clock that starts at `start`.
    pub fn new(faults: &[Fault], start: Instant) -> Self {
        let pending = faults
            .iter()
            .map(|f| Pending {
                due: None,
                trigger: f.trigger.clone(),
                action: f.action.clone(),
                undo_after: f.duration,
                line: f.line,
            })
            .collect();
        Schedule { start, pending }
    }

    /// The faults due at `now`, in file order, given whether each check holds on the timeline
    /// now. Each comes out once; an undo is scheduled as its fault comes out.
    pub fn due(&mut self, now: Instant, holds: impl Fn(&Check) -> bool) -> Vec<Due> {
        for p in self.pending.iter_mut().filter(|p| p.due.is_none()) {
            p.due = match &p.trigger {
                Trigger::At(d) => Some(self.start + *d),
                Trigger::After { check, delay } => holds(check).then(|| now + *delay),
            };
        }
        let (fire, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due.is_some_and(|due| due <= now));
        self.pending = keep;
        for p in &fire {
            if let (Some(d), Some(undo)) = (p.undo_after, p.action.undo()) {
                self.pending.push(Pending {
                    due: Some(now + d),
                    trigger: Trigger::At(Duration::ZERO),
                    action: undo,
                    undo_after: None,
                    line: p.line,
                });
            }
        }
        fire.into_iter()
            .map(|p| Due {
                action: p.action,
                line: p.line,
            })
            .collect()
    }

    /// Nothing left to fire.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn fault(trigger: Trigger, action: Action, duration: Option<Duration>, line: u64) -> Fault {
        Fault {
            trigger,
            action,
            duration,
            line,
        }
    }

    fn started(node: &str) -> Check {
        Check::Started { node: node.into() }
    }

    #[test]
    fn at_faults_fire_on_the_run_clock_once_and_in_file_order() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            &[
                fault(Trigger::At(S(5)), Action::Kill("a".into()), None, 10),
                fault(Trigger::At(S(5)), Action::Pause("b".into()), None, 11),
                fault(Trigger::At(S(9)), Action::Stop("c".into()), None, 12),
            ],
            t0,
        );
        assert!(s.due(t0 + S(4), |_| false).is_empty());
        let lines: Vec<u64> = s.due(t0 + S(5), |_| false).iter().map(|d| d.line).collect();
        assert_eq!(lines, [10, 11]);
        assert!(s.due(t0 + S(6), |_| false).is_empty());
        assert_eq!(
            s.due(t0 + S(30), |_| false),
            [Due {
                action: Action::Stop("c".into()),
                line: 12
            }]
        );
        assert!(s.is_empty());
    }

    #[test]
    fn an_after_fault_waits_for_its_check_then_its_delay() {
        let t0 = Instant::now();
        let check = started("bob");
        let mut s = Schedule::new(
            &[fault(
                Trigger::After {
                    check: check.clone(),
                    delay: S(2),
                },
                Action::Kill("monitor".into()),
                None,
                7,
            )],
            t0,
        );
        // never holds: never fires, however late
        assert!(s.due(t0 + S(100), |_| false).is_empty());
        // holds at 100 s: fires 2 s later, not before
        assert!(s.due(t0 + S(100), |c| *c == check).is_empty());
        assert!(s.due(t0 + S(101), |_| false).is_empty());
        assert_eq!(s.due(t0 + S(102), |_| false).len(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn a_fault_with_for_is_undone_that_long_after_it_fired() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            &[
                fault(Trigger::At(S(1)), Action::Kill("m".into()), Some(S(10)), 3),
                fault(
                    Trigger::At(S(1)),
                    Action::FlushNat("lan".into()),
                    Some(S(10)),
                    4,
                ),
            ],
            t0,
        );
        // fired late (at 3 s): the undo counts from the firing
        assert_eq!(s.due(t0 + S(3), |_| false).len(), 2);
        // a flush has no undo; the kill's is a start, at 13 s, with the kill's line
        assert!(!s.is_empty());
        assert!(s.due(t0 + S(12), |_| false).is_empty());
        assert_eq!(
            s.due(t0 + S(13), |_| false),
            [Due {
                action: Action::Start {
                    node: "m".into(),
                    new_identity: false
                },
                line: 3
            }]
        );
        assert!(s.is_empty());
    }
}
