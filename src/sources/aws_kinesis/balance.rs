//! Which leases a worker should take, decided from one scan of the lease table (no I/O here).
//!
//! - Expiry is judged by each worker's own clock: a lease is expired when its counter has
//!   not moved for `lease_duration` since this worker first saw that counter (the KCL's
//!   rule; clocks of different machines are never compared).
//! - A lease is ready when it is not finished and each parent shard is finished, or is
//!   neither in the table nor in the stream any more (trimmed by retention).
//! - The target share is the ready leases divided by the live workers (those holding an
//!   unexpired lease, and this one), rounded up and capped by `max_leases_per_worker`. Below
//!   it, a worker takes free and expired leases; when there are none, it steals one lease
//!   from the most loaded worker if that one holds more than the target (or the target while
//!   this one is two or more below it). One steal per scan, so shares move gradually.

use super::lease_table::Lease;
use rand::seq::{IndexedRandom, SliceRandom};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// When each lease's counter was last seen to change.
#[derive(Default)]
pub struct Observations {
    seen: HashMap<String, (u64, Instant)>,
}

impl Observations {
    /// Records one scan taken at `now`.
    pub fn update(&mut self, leases: &[Lease], now: Instant) {
        self.seen
            .retain(|key, _| leases.iter().any(|l| &l.key == key));
        for lease in leases {
            match self.seen.get_mut(&lease.key) {
                Some((counter, _)) if *counter == lease.counter => {}
                _ => {
                    self.seen.insert(lease.key.clone(), (lease.counter, now));
                }
            }
        }
    }

    /// The counter of `lease` has not moved for `duration`.
    pub fn expired(&self, lease: &Lease, now: Instant, duration: Duration) -> bool {
        self.seen.get(&lease.key).is_some_and(|(counter, since)| {
            *counter == lease.counter && now.duration_since(*since) >= duration
        })
    }
}

/// What to do after a scan.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free or expired leases to take.
    pub take: Vec<Lease>,
    /// A lease to steal from the most loaded worker.
    pub steal: Option<Lease>,
}

/// The scan, seen from one worker.
pub struct View<'a> {
    pub leases: &'a [Lease],
    /// Shard ids the stream lists now.
    pub listed: &'a BTreeSet<String>,
    pub me: &'a str,
    /// Leases this worker holds (is reading).
    pub held: &'a BTreeSet<String>,
    /// Whether a lease's counter has stood still for the lease duration.
    pub expired: &'a dyn Fn(&Lease) -> bool,
    /// 0: no limit.
    pub max_leases: usize,
}

impl View<'_> {
    pub fn ready(&self, lease: &Lease) -> bool {
        if lease.finished() {
            return false;
        }
        lease.parents.iter().all(
            |parent| match self.leases.iter().find(|l| &l.key == parent) {
                Some(parent) => parent.finished(),
                None => !self.listed.contains(parent),
            },
        )
    }

    /// Held by a live worker other than this one.
    fn held_by_other<'l>(&self, lease: &'l Lease) -> Option<&'l str> {
        let owner = lease.owner.as_deref()?;
        (owner != self.me && !(self.expired)(lease)).then_some(owner)
    }

    /// Can be taken without stealing: free, expired, or this worker's own from a previous
    /// run (worker ids are unique, so nobody else reads it).
    fn free(&self, lease: &Lease) -> bool {
        !self.held.contains(&lease.key) && self.held_by_other(lease).is_none()
    }

    pub fn plan(&self) -> Plan {
        let ready: Vec<&Lease> = self.leases.iter().filter(|l| self.ready(l)).collect();
        let mut load: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        for lease in &ready {
            if let Some(owner) = self.held_by_other(lease) {
                load.entry(owner).or_default().push(lease);
            }
        }
        let mine = ready.iter().filter(|l| self.held.contains(&l.key)).count();
        let workers = load.len() + 1;
        let mut target = ready.len().div_ceil(workers);
        if self.max_leases > 0 {
            target = target.min(self.max_leases);
        }
        let need = target.saturating_sub(mine);
        if need == 0 {
            return Plan::default();
        }
        let mut free: Vec<&Lease> = ready.iter().copied().filter(|l| self.free(l)).collect();
        if !free.is_empty() {
            // In random order, so workers starting together rarely race for the same lease.
            free.shuffle(&mut rand::rng());
            free.truncate(need);
            return Plan {
                take: free.into_iter().cloned().collect(),
                steal: None,
            };
        }
        let busiest = load
            .iter()
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)));
        let Some((_, leases)) = busiest else {
            return Plan::default();
        };
        let worth_it = leases.len() > target || (leases.len() == target && mine + 1 < target);
        if !worth_it {
            return Plan::default();
        }
        Plan {
            take: Vec::new(),
            steal: leases.choose(&mut rand::rng()).map(|l| (*l).clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(key: &str, owner: Option<&str>) -> Lease {
        Lease {
            key: key.into(),
            owner: owner.map(str::to_string),
            counter: 1,
            checkpoint: "TRIM_HORIZON".into(),
            parents: Vec::new(),
            checkpoint_owner: None,
        }
    }

    fn plan_for(me: &str, leases: &[Lease], expired: &dyn Fn(&Lease) -> bool) -> Plan {
        let held: BTreeSet<String> = leases
            .iter()
            .filter(|l| l.owner.as_deref() == Some(me))
            .map(|l| l.key.clone())
            .collect();
        let listed = leases.iter().map(|l| l.key.clone()).collect();
        View {
            leases,
            listed: &listed,
            me,
            held: &held,
            expired,
            max_leases: 0,
        }
        .plan()
    }

    fn owned(owners: &[&str]) -> Vec<Lease> {
        owners
            .iter()
            .enumerate()
            .map(|(i, o)| lease(&format!("s{i}"), (!o.is_empty()).then_some(*o)))
            .collect()
    }

    #[test]
    fn a_worker_takes_its_share_of_free_leases() {
        let leases = owned(&["", "", "", "", "", ""]);
        // Alone, it takes all six.
        assert_eq!(plan_for("a", &leases, &|_| false).take.len(), 6);
        // With two others holding one each: 6 / 3 = 2.
        let leases = owned(&["b", "c", "", "", "", ""]);
        let plan = plan_for("a", &leases, &|_| false);
        assert_eq!(plan.take.len(), 2);
        assert!(plan.take.iter().all(|l| l.owner.is_none()));
    }

    #[test]
    fn expired_leases_are_free_and_their_owner_no_longer_counts() {
        let leases = owned(&["a", "a", "b", "b", "dead", "dead"]);
        let expired = |l: &Lease| l.owner.as_deref() == Some("dead");
        let plan = plan_for("a", &leases, &expired);
        // Two live workers: target 3, so one of the dead worker's leases.
        assert_eq!(plan.take.len(), 1);
        assert_eq!(plan.take[0].owner.as_deref(), Some("dead"));
        assert_eq!(plan.steal, None);
    }

    #[test]
    fn a_joining_worker_steals_one_lease_at_a_time_until_balanced() {
        let mut owners = vec!["a", "a", "b", "b", "c", "c"];
        let mut steals = 0;
        loop {
            let leases = owned(&owners);
            let plan = plan_for("d", &leases, &|_| false);
            assert!(plan.take.is_empty());
            let Some(stolen) = plan.steal else { break };
            let index: usize = stolen.key[1..].parse().unwrap();
            owners[index] = "d";
            steals += 1;
            assert!(steals <= 2, "{owners:?}");
        }
        let d = owners.iter().filter(|o| **o == "d").count();
        assert_eq!(d, 1, "6 leases on 4 workers: 2/2/1/1 ({owners:?})");
        // Nobody else wants to steal back: the others hold 2 or 1 of a target of 2.
        for me in ["a", "b", "c"] {
            assert_eq!(plan_for(me, &owned(&owners), &|_| false), Plan::default());
        }
    }

    #[test]
    fn a_worker_holding_everything_is_relieved_down_to_the_target() {
        let mut owners = vec!["a"; 6];
        for _ in 0..10 {
            let Some(stolen) = plan_for("b", &owned(&owners), &|_| false).steal else {
                break;
            };
            let index: usize = stolen.key[1..].parse().unwrap();
            owners[index] = "b";
        }
        assert_eq!(owners.iter().filter(|o| **o == "b").count(), 3);
    }

    #[test]
    fn children_are_ready_only_after_their_parents_finish() {
        let mut parent = lease("p", Some("a"));
        let mut child = lease("c", None);
        child.parents = vec!["p".into()];
        let listed: BTreeSet<String> = ["p", "c"].map(String::from).into();
        let held = BTreeSet::new();
        let leases = [parent.clone(), child.clone()];
        let view = View {
            leases: &leases,
            listed: &listed,
            me: "b",
            held: &held,
            expired: &|_| false,
            max_leases: 0,
        };
        assert!(!view.ready(&child));
        assert!(
            view.plan().take.is_empty(),
            "the parent is a's; the child waits"
        );
        parent.checkpoint = "SHARD_END".into();
        parent.owner = None;
        let leases = [parent, child.clone()];
        let view = View {
            leases: &leases,
            ..view
        };
        assert!(view.ready(&child));
        assert_eq!(view.plan().take, vec![child.clone()]);
        // A parent trimmed from the stream and missing from the table holds nothing back.
        let orphan = [child.clone()];
        let view = View {
            leases: &orphan,
            listed: &BTreeSet::new(),
            ..view
        };
        assert!(view.ready(&child));
        // A parent still listed but without a lease yet: wait for it to be created.
        let view = View {
            leases: &orphan,
            listed: &listed,
            ..view
        };
        assert!(!view.ready(&child));
    }

    #[test]
    fn max_leases_per_worker_caps_the_share() {
        let leases = owned(&["", "", "", "", "", ""]);
        let held = BTreeSet::new();
        let listed = leases.iter().map(|l| l.key.clone()).collect();
        let view = View {
            leases: &leases,
            listed: &listed,
            me: "a",
            held: &held,
            expired: &|_| false,
            max_leases: 4,
        };
        assert_eq!(view.plan().take.len(), 4);
    }

    #[test]
    fn expiry_needs_the_counter_to_stand_still_for_the_duration() {
        let mut observations = Observations::default();
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut lease = lease("s0", Some("a"));
        observations.update(std::slice::from_ref(&lease), start);
        assert!(!observations.expired(&lease, start + second / 2, second));
        assert!(observations.expired(&lease, start + second, second));
        lease.counter += 1;
        observations.update(std::slice::from_ref(&lease), start + second);
        assert!(!observations.expired(&lease, start + second + second / 2, second));
        assert!(observations.expired(&lease, start + 2 * second, second));
    }
}
