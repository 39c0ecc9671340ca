//! Readiness and skip propagation over an apply's steps: which steps may start, and which a
//! failure rules out. No I/O and no provider calls: the apply loop asks, this answers.

use crate::dag::Step;

pub struct Scheduler {
    /// How many steps each step still waits for.
    waiting: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    /// Ruled out by a failure upstream.
    blocked: Vec<bool>,
    ready: Vec<usize>,
}

impl Scheduler {
    pub fn new(steps: &[Step]) -> Self {
        let waiting: Vec<usize> = steps.iter().map(|s| s.after.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
        for (i, s) in steps.iter().enumerate() {
            for &b in &s.after {
                dependents[b].push(i);
            }
        }
        let ready = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
        Scheduler {
            waiting,
            dependents,
            blocked: vec![false; steps.len()],
            ready,
        }
    }

    /// The steps that may start now (each is handed out once, unless [`Self::defer`]red).
    pub fn take_ready(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.ready)
    }

    /// Steps that were ready but could not start yet: offered again next time.
    pub fn defer(&mut self, steps: Vec<usize>) {
        self.ready.extend(steps);
    }

    /// The steps that wait for `step`.
    pub fn dependents(&self, step: usize) -> &[usize] {
        &self.dependents[step]
    }

    pub fn is_blocked(&self, step: usize) -> bool {
        self.blocked[step]
    }

    /// `step` succeeded: its dependents whose last wait this was become ready.
    pub fn succeeded(&mut self, step: usize) {
        for &d in &self.dependents[step] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 && !self.blocked[d] {
                self.ready.push(d);
            }
        }
    }

    /// `step` failed: everything downstream of it is ruled out. Returns the steps newly
    /// blocked, each once.
    pub fn failed(&mut self, step: usize) -> Vec<usize> {
        let mut newly = Vec::new();
        let mut stack = self.dependents[step].clone();
        while let Some(d) = stack.pop() {
            if !self.blocked[d] {
                self.blocked[d] = true;
                newly.push(d);
                stack.extend(self.dependents[d].iter().copied());
            }
        }
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::StepKind;

    fn step(i: usize, after: &[usize]) -> Step {
        Step {
            change: i,
            address: format!("network.n{i}").parse().unwrap(),
            kind: StepKind::Create,
            after: after.to_vec(),
        }
    }

    #[test]
    fn readiness_follows_dependencies_and_failures_block_everything_downstream() {
        // 0 → 1 → 3, 0 → 2, 4 alone.
        let steps = [
            step(0, &[]),
            step(1, &[0]),
            step(2, &[0]),
            step(3, &[1]),
            step(4, &[]),
        ];
        let mut s = Scheduler::new(&steps);
        assert_eq!(s.take_ready(), vec![0, 4]);
        assert!(s.take_ready().is_empty());
        s.succeeded(0);
        let mut r = s.take_ready();
        r.sort();
        assert_eq!(r, vec![1, 2]);
        let mut blocked = s.failed(1);
        blocked.sort();
        assert_eq!(blocked, vec![3]);
        assert!(s.is_blocked(3) && !s.is_blocked(2));
        // A blocked step never becomes ready, and is reported blocked only once.
        assert!(s.failed(1).is_empty());
        s.succeeded(2);
        assert!(s.take_ready().is_empty());
    }
}
