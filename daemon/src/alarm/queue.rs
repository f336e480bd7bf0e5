//! The alarm events on their way from the alarm task to the store: bounded,
//! and never a wait for the alarm task.
//!
//! The alarm task pushes without awaiting; the recorder takes a batch,
//! writes it, and takes the next. While a write is pending (a stalled or
//! full disk) the events wait here, at most [`CAP`] of them. Beyond that
//! the queue makes room by dropping what tells the least, each drop
//! counted: first a flap of one alarm (returned, then recurred: it is still
//! active, as it was), then an alarm that came and went while the disk was
//! stalled (raised … cleared, never acknowledged), then the oldest event
//! nobody waits for, until it is nine tenths full. Acknowledgements, whose
//! supervisor waits for the record, are dropped only if nothing else is
//! left, and their waiter is told.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::engine::{AlarmEvent, EventKind};

/// Events held while the store does not take them.
pub const CAP: usize = 10_000;

/// Told once an event is recorded (or why not).
pub type Recorded = tokio::sync::oneshot::Sender<Result<(), String>>;

/// An event on its way to the store, with whoever waits for it.
#[derive(Debug)]
pub struct Pending {
    /// The event.
    pub event: AlarmEvent,
    /// The caller waiting for it to be on disk (an acknowledgement).
    pub done: Option<Recorded>,
}

/// The queue between the alarm task and the recorder.
#[derive(Debug, Default)]
pub struct EventQueue {
    events: Mutex<VecDeque<Pending>>,
    ready: Notify,
    /// Notified when an event someone waits for (an acknowledgement) is
    /// queued: a recorder waiting out a failure tries again at once, so the
    /// supervisor hears whether it was recorded.
    urgent: Notify,
    dropped: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

impl EventQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues an event; never waits. When the queue is full it first makes
    /// room (see the module's rules).
    pub fn push(&self, p: Pending) {
        let waited_for = p.done.is_some();
        let dropped = {
            let mut q = self.lock();
            let dropped = if q.len() >= CAP { make_room(&mut q) } else { 0 };
            q.push_back(p);
            dropped
        };
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.ready.notify_one();
        if waited_for {
            self.urgent.notify_one();
        }
    }

    /// Resolves once an event someone waits for was queued (at once if one
    /// was since the last call).
    pub async fn urgent(&self) {
        self.urgent.notified().await;
    }

    /// Up to `max` of the oldest events, taken out of the queue, without
    /// waiting.
    pub fn take_now(&self, max: usize) -> Vec<Pending> {
        let mut q = self.lock();
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Up to `max` of the oldest events, taken out of the queue; waits
    /// while there are none. `None` once closed and empty.
    pub async fn take(&self, max: usize) -> Option<Vec<Pending>> {
        loop {
            let notified = self.ready.notified();
            {
                let mut q = self.lock();
                if !q.is_empty() {
                    let n = q.len().min(max);
                    return Some(q.drain(..n).collect());
                }
                if self.closed.load(Ordering::Relaxed) {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// No more events will come (the alarm task ended).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Whether [`EventQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Events dropped to keep the bound, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Removes what tells the least until the queue is at most nine tenths
/// full (so that a long stall costs one pass per tenth of [`CAP`] events,
/// not one per event); returns how many events went.
fn make_room(q: &mut VecDeque<Pending>) -> u64 {
    use std::collections::HashMap;
    let before = q.len();
    let target = CAP - CAP / 10;
    let free = |p: &Pending| p.done.is_none();

    // 1. Flaps: a returned followed (for that alarm) by a recurred: the
    //    alarm is as it was before the pair.
    let mut gone = vec![false; q.len()];
    let mut last: HashMap<u64, usize> = HashMap::new();
    for (i, p) in q.iter().enumerate() {
        let id = p.event.alarm_id;
        if p.event.kind == EventKind::Recurred
            && free(p)
            && let Some(&j) = last.get(&id)
            && q[j].event.kind == EventKind::Returned
            && free(&q[j])
        {
            gone[i] = true;
            gone[j] = true;
            last.remove(&id);
            continue;
        }
        last.insert(id, i);
    }
    retain_marked(q, &gone);

    // 2. Alarms that came and went: raised, then (with nothing but flaps
    //    between) cleared, never acknowledged; oldest first.
    if q.len() > target {
        let mut excess = q.len() - target;
        let mut gone = vec![false; q.len()];
        // Alarm id → the indices of its events since its raise, while they
        // are only flaps.
        let mut runs: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, p) in q.iter().enumerate() {
            if excess == 0 {
                break;
            }
            let id = p.event.alarm_id;
            match p.event.kind {
                EventKind::Raised if free(p) => {
                    runs.insert(id, vec![i]);
                }
                EventKind::Returned | EventKind::Recurred if free(p) => {
                    if let Some(run) = runs.get_mut(&id) {
                        run.push(i);
                    }
                }
                EventKind::Cleared if free(p) => {
                    if let Some(run) = runs.remove(&id) {
                        for j in run.into_iter().chain([i]) {
                            gone[j] = true;
                            excess = excess.saturating_sub(1);
                        }
                    }
                }
                _ => {
                    runs.remove(&id);
                }
            }
        }
        retain_marked(q, &gone);
    }

    // 3. The oldest events nobody waits for.
    if q.len() > target {
        let mut excess = q.len() - target;
        q.retain(|p| {
            if excess > 0 && free(p) {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }

    // 4. Everything left waits for an answer (a storm of
    //    acknowledgements): the oldest go, their waiters told.
    while q.len() >= CAP {
        if let Some(p) = q.pop_front()
            && let Some(done) = p.done
        {
            let _ = done.send(Err("too many alarm events are waiting for the disk".into()));
        }
    }
    u64::try_from(before - q.len()).unwrap_or(u64::MAX)
}

fn retain_marked(q: &mut VecDeque<Pending>, gone: &[bool]) {
    let mut i = 0;
    q.retain(|_| {
        let keep = !gone.get(i).copied().unwrap_or(false);
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::alarm::engine::AlarmKind;
    use pithead_core::ReadingState;

    fn ev(kind: EventKind, id: u64) -> Pending {
        Pending {
            event: AlarmEvent {
                kind,
                alarm_id: id,
                channel: "ch4".into(),
                level: AlarmKind::Fault,
                value: None,
                state: ReadingState::CommFault,
                by: None,
                at: SystemTime::now(),
            },
            done: None,
        }
    }

    fn kinds(q: &EventQueue) -> Vec<(EventKind, u64)> {
        q.lock()
            .iter()
            .map(|p| (p.event.kind, p.event.alarm_id))
            .collect()
    }

    #[test]
    fn a_flapping_channel_on_a_stalled_disk_stays_bounded_and_keeps_what_matters() {
        let q = EventQueue::default();
        // Alarm 1 raised, then flapping for ever; alarm 2 raised once.
        q.push(ev(EventKind::Raised, 1));
        q.push(ev(EventKind::Raised, 2));
        for _ in 0..(3 * CAP) {
            q.push(ev(EventKind::Returned, 1));
            q.push(ev(EventKind::Recurred, 1));
        }
        assert!(q.len() <= CAP, "{}", q.len());
        let all = kinds(&q);
        assert_eq!(&all[..2], [(EventKind::Raised, 1), (EventKind::Raised, 2)]);
        assert!(q.dropped() >= u64::try_from(5 * CAP).unwrap_or(0));
        assert_eq!(
            q.dropped() + u64::try_from(q.len()).unwrap_or(0),
            u64::try_from(2 + 6 * CAP).unwrap_or(0),
            "every event is either queued or counted"
        );
    }

    #[test]
    fn alarms_that_came_and_went_go_before_anything_else() {
        let q = EventQueue::default();
        q.push(ev(EventKind::Raised, 7));
        for id in 100..(100 + CAP as u64 / 2) {
            q.push(ev(EventKind::Raised, id));
            q.push(ev(EventKind::Cleared, id));
        }
        q.push(ev(EventKind::Raised, 8));
        q.push(ev(EventKind::Raised, 9));
        let all = kinds(&q);
        assert_eq!(
            all[0],
            (EventKind::Raised, 7),
            "the oldest open alarm stays"
        );
        assert!(all.contains(&(EventKind::Raised, 8)));
        assert!(all.contains(&(EventKind::Raised, 9)));
        assert!(
            !all.contains(&(EventKind::Raised, 100)),
            "a come-and-go went"
        );
        assert!(
            all.iter().filter(|(_, id)| *id >= 100).all(|(_, id)| {
                all.contains(&(EventKind::Raised, *id)) && all.contains(&(EventKind::Cleared, *id))
            }),
            "pairs go together"
        );
        assert!(q.len() <= CAP);
    }

    #[test]
    fn an_acknowledgement_with_a_waiter_is_never_dropped() {
        let q = EventQueue::default();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let mut ack = ev(EventKind::Acknowledged, 1);
        ack.done = Some(tx);
        q.push(ack);
        for id in 0..(2 * CAP as u64) {
            q.push(ev(EventKind::Raised, 1000 + id));
        }
        assert_eq!(kinds(&q)[0], (EventKind::Acknowledged, 1));
        assert!(rx.try_recv().is_err(), "still waiting, not refused");
    }

    #[tokio::test]
    async fn take_hands_out_the_oldest_first_and_ends_when_closed() {
        let q = std::sync::Arc::new(EventQueue::default());
        for id in 0..5 {
            q.push(ev(EventKind::Raised, id));
        }
        let batch = q.take(3).await.unwrap_or_default();
        assert_eq!(
            batch.iter().map(|p| p.event.alarm_id).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(q.len(), 2);
        let _ = q.take(10).await;
        q.close();
        assert!(q.take(10).await.is_none());
    }
}
