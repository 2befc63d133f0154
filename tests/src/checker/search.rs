//! Linearizability search for one key (Wing & Gong, with Lowe's memoization as in
//! Porcupine): walk the invoke/complete events in time order, linearize a pending
//! operation whenever the model allows, backtrack when an operation's completion is reached
//! before it could be linearized, and never revisit a (set of linearized operations, state)
//! pair. Indeterminate operations complete "at infinity": each may take effect at any point
//! after its invocation, or never — except that one whose value a read returned must take
//! effect before that read completes, so it completes there (see [`deadlines`]).

use super::history::{Command, Op, Outcome, Response};
use super::model::{Bindings, Model, State, interchangeable};
use std::collections::HashSet;

/// Result of the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `deepest` is the largest number of operations linearized
    /// before the search had to give up, `blocking` the operation (index) whose completion
    /// could not be explained at that point.
    Violation {
        deepest: usize,
        blocking: usize,
    },
    /// The step budget ran out before an answer: neither a pass nor a failure.
    Unknown {
        steps: u64,
    },
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    call: bool,
    time: u64,
}

/// The time by which each operation must have taken effect in any linearization: its
/// completion when the client learned the outcome; for an indeterminate write, the earliest
/// completion of a read that returned its value (the read saw it, so the write precedes the
/// read's linearization point, which precedes the read's completion), else never
/// (`u64::MAX`: it may take effect at any time, or not at all). This only removes orders no
/// linearization can have, so it changes no verdict; it spares the search from trying the
/// write at every later point of a long history.
fn deadlines(ops: &[Op], model: &Model<'_>) -> Vec<u64> {
    let mut deadline: Vec<u64> = ops
        .iter()
        .map(|o| match o.outcome {
            Outcome::Indeterminate => u64::MAX,
            _ => o.complete,
        })
        .collect();
    for op in ops {
        if let (Command::Get, Outcome::Ok(Response::Read(Some((value, _))))) =
            (&op.command, &op.outcome)
            && let Some(w) = model.writer_of(value)
            && matches!(ops[w].outcome, Outcome::Indeterminate)
        {
            deadline[w] = deadline[w].min(op.complete.max(ops[w].invoke));
        }
    }
    deadline
}

/// Checks `ops` (the relevant operations of one key) against the register model.
pub fn search(ops: &[Op], bindings: &Bindings, budget: u64) -> Verdict {
    let model = Model::new(ops, bindings);
    let deadline = deadlines(ops, &model);
    let previous = interchangeable(ops);
    let mut events: Vec<Event> = Vec::with_capacity(2 * ops.len());
    for (i, op) in ops.iter().enumerate() {
        events.push(Event {
            op: i,
            call: true,
            time: op.invoke,
        });
        events.push(Event {
            op: i,
            call: false,
            time: deadline[i],
        });
    }
    // Calls before completions at equal times: the more permissive order.
    events.sort_by_key(|e| (e.time, !e.call, e.op));
    let n = events.len();
    let head = n;
    // Doubly linked list over events; index `n` is the head sentinel, `NIL` the end.
    const NIL: usize = usize::MAX;
    let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NIL } else { i }).collect();
    next.push(if n == 0 { NIL } else { 0 });
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { head } else { i - 1 }).collect();
    prev.push(NIL);
    let mut completion = vec![0usize; ops.len()];
    for (i, e) in events.iter().enumerate() {
        if !e.call {
            completion[e.op] = i;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        if nx != NIL {
            prev[nx] = i;
        }
    };

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = State::default();
    let mut steps = 0u64;
    let mut deepest = (0usize, 0usize);
    let mut cur = next[head];
    loop {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown { steps };
        }
        if cur == NIL {
            return Verdict::Linearizable;
        }
        let e = events[cur];
        if e.call {
            let op = e.op;
            let in_turn = previous[op].is_none_or(|p| linearized[p / 64] & (1 << (p % 64)) != 0);
            let stepped = in_turn
                .then(|| model.step(&state, op))
                .flatten()
                .and_then(|s2| {
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), s2)) {
                        Some(s2)
                    } else {
                        linearized[op / 64] &= !(1 << (op % 64));
                        None
                    }
                });
            match stepped {
                Some(s2) => {
                    stack.push((cur, state));
                    state = s2;
                    // Completion first, then the call: relinking goes in reverse.
                    unlink(&mut next, &mut prev, completion[op]);
                    unlink(&mut next, &mut prev, cur);
                    cur = next[head];
                }
                None => cur = next[cur],
            }
        } else if e.time == u64::MAX {
            // Every definite completion lies before the first indeterminate one, and all of
            // them were passed: every definite operation is linearized.
            return Verdict::Linearizable;
        } else {
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), e.op);
            }
            let Some((call, before)) = stack.pop() else {
                return Verdict::Violation {
                    deepest: deepest.0,
                    blocking: deepest.1,
                };
            };
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            relink(&mut next, &mut prev, call);
            relink(&mut next, &mut prev, completion[op]);
            cur = next[call];
        }
    }
}
