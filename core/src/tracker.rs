//! Which outbox row each packet id stands for, and which rows the broker
//! has acknowledged.
//!
//! rumqttc assigns packet ids itself and reports them only as events: an
//! `Outgoing::Publish(pkid)` for each publish it writes, in the order the
//! publishes were handed to the client, and an `Incoming::PubAck(pkid)`
//! when the broker acknowledges one. (On a packet-id collision it reports
//! `AwaitAck` and holds the publish, and every later one, until that id is
//! acknowledged; the held publish's `Outgoing::Publish` then comes after the
//! `PubAck`, so the order still holds.) The tracker keeps what was handed
//! over in a FIFO, pairs it with packet ids as they appear, and turns
//! acknowledgements into row ids. On any disconnect everything unacknowledged
//! is forgotten: the rows are still unsent on disk and are published again
//! after the next CONNACK.
//!
//! Kept apart from the task so the mapping can be tested against every
//! interleaving of publishes, acknowledgements and reconnects.

use std::collections::{HashMap, VecDeque};

/// The mapping for one connection at a time.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Handed to the client, not yet written: `Some(row)` or `None` for a
    /// message that is not an outbox row (the status).
    awaiting: VecDeque<Option<i64>>,
    /// Written, waiting for the broker's PUBACK.
    in_flight: HashMap<u16, i64>,
    /// Acknowledged, not yet marked sent on disk.
    acked: Vec<i64>,
}

impl Tracker {
    /// A message was handed to the client.
    pub fn handed(&mut self, row: Option<i64>) {
        self.awaiting.push_back(row);
    }

    /// rumqttc wrote a publish with this packet id.
    pub fn written(&mut self, pkid: u16) {
        if let Some(Some(row)) = self.awaiting.pop_front() {
            self.in_flight.insert(pkid, row);
        }
    }

    /// The broker acknowledged this packet id. Returns the row, if it was one.
    pub fn acknowledged(&mut self, pkid: u16) -> Option<i64> {
        let row = self.in_flight.remove(&pkid)?;
        self.acked.push(row);
        Some(row)
    }

    /// The connection is gone (or a new one has started): forget what was
    /// not acknowledged. Acknowledged rows stay until they are taken.
    pub fn reset(&mut self) -> usize {
        let lost = self.in_flight.len() + self.awaiting.iter().flatten().count();
        self.awaiting.clear();
        self.in_flight.clear();
        lost
    }

    /// Messages handed over and not yet acknowledged.
    pub fn busy(&self) -> usize {
        self.awaiting.len() + self.in_flight.len()
    }

    /// Rows not to read from the outbox again: handed over, in flight or
    /// acknowledged but not yet marked.
    pub fn exclude(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.in_flight.values().copied().collect();
        v.extend(self.awaiting.iter().flatten());
        v.extend_from_slice(&self.acked);
        v
    }

    /// The rows written and not yet acknowledged.
    pub fn in_flight_rows(&self) -> Vec<i64> {
        self.in_flight.values().copied().collect()
    }

    /// Takes the acknowledged rows, to mark them sent.
    pub fn take_acked(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.acked)
    }

    /// Puts rows back that could not be marked; they are marked next time.
    pub fn return_acked(&mut self, rows: Vec<i64>) {
        self.acked.extend(rows);
    }

    /// Acknowledged rows not yet taken.
    pub fn acked(&self) -> usize {
        self.acked.len()
    }

    /// Rows in flight (for the log).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn publishes_map_in_order_and_the_status_is_skipped() {
        let mut t = Tracker::default();
        t.handed(None);
        t.handed(Some(10));
        t.handed(Some(11));
        t.written(1);
        t.written(2);
        t.written(3);
        assert_eq!(t.acknowledged(3), Some(11));
        assert_eq!(t.acknowledged(1), None, "the status is not a row");
        assert_eq!(t.acknowledged(2), Some(10));
        assert_eq!(t.acknowledged(2), None, "a second ack is nothing");
        assert_eq!(t.take_acked(), vec![11, 10]);
        assert_eq!(t.busy(), 0);
    }

    #[test]
    fn a_reconnect_forgets_the_unacknowledged_and_reused_ids_map_to_new_rows() {
        let mut t = Tracker::default();
        for row in [1, 2, 3] {
            t.handed(Some(row));
        }
        t.written(1);
        t.written(2);
        assert_eq!(t.acknowledged(1), Some(1));
        assert_eq!(t.reset(), 2, "row 2 in flight, row 3 never written");
        assert_eq!(t.exclude(), vec![1], "acked, not yet marked");
        // New connection: rumqttc starts its ids again from 1.
        t.handed(None);
        t.handed(Some(2));
        t.handed(Some(3));
        t.written(1);
        t.written(2);
        t.written(3);
        // A late ack for the old id 2 cannot arrive on the new connection;
        // the new id 2 is row 2 again, id 3 is row 3.
        assert_eq!(t.acknowledged(3), Some(3));
        assert_eq!(t.acknowledged(2), Some(2));
        assert_eq!(t.take_acked(), vec![1, 3, 2]);
    }

    #[test]
    fn a_collision_keeps_the_order() {
        // rumqttc: id 1 still in flight when the next publish gets id 1
        // again: AwaitAck(1), then after PubAck(1) the held publish is
        // written as Outgoing::Publish(1).
        let mut t = Tracker::default();
        t.handed(Some(7));
        t.handed(Some(8));
        t.written(1);
        // AwaitAck: nothing to do.
        assert_eq!(t.acknowledged(1), Some(7));
        t.written(1);
        assert_eq!(t.acknowledged(1), Some(8));
    }

    /// What can happen on the wire, for the model below.
    #[derive(Debug, Clone)]
    enum Step {
        /// The task hands over this many new rows.
        Publish(u8),
        /// rumqttc writes the next handed publish.
        Write,
        /// The broker acknowledges the n-th of the written, unacked ones.
        Ack(u8),
        /// The connection drops.
        Drop,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u8..5).prop_map(Step::Publish),
            Just(Step::Write),
            Just(Step::Write),
            any::<u8>().prop_map(Step::Ack),
            any::<u8>().prop_map(Step::Ack),
            Just(Step::Drop),
        ]
    }

    proptest! {
        /// A model of rumqttc (ids 1..=window, reused once free; handed
        /// publishes dropped with the connection) and of a broker that acks
        /// in any order. Whatever happens, a row is taken as acknowledged
        /// only if the broker acknowledged a publish of that very row, and
        /// every row the broker acknowledged is taken.
        #[test]
        fn only_rows_the_broker_acknowledged_are_marked(steps in proptest::collection::vec(step(), 1..200)) {
            let window = 8u16;
            let mut t = Tracker::default();
            let mut next_row = 0i64;
            // The client's queue and the broker's view: pkid -> row.
            let mut queue: VecDeque<Option<i64>> = VecDeque::new();
            let mut wire: Vec<(u16, Option<i64>)> = Vec::new();
            let mut broker_acked: BTreeSet<i64> = BTreeSet::new();
            let mut marked: BTreeSet<i64> = BTreeSet::new();
            let mut connected_once = false;
            for s in steps {
                match s {
                    Step::Publish(n) => {
                        if !connected_once {
                            t.handed(None);
                            queue.push_back(None);
                            connected_once = true;
                        }
                        for _ in 0..n {
                            next_row += 1;
                            t.handed(Some(next_row));
                            queue.push_back(Some(next_row));
                        }
                    }
                    Step::Write => {
                        let free = (1..=window).find(|id| wire.iter().all(|(p, _)| p != id));
                        if let (Some(id), Some(msg)) = (free, queue.front().copied()) {
                            queue.pop_front();
                            wire.push((id, msg));
                            t.written(id);
                        }
                    }
                    Step::Ack(i) => {
                        if !wire.is_empty() {
                            let (id, msg) = wire.remove(usize::from(i) % wire.len());
                            if let Some(row) = msg {
                                broker_acked.insert(row);
                            }
                            let got = t.acknowledged(id);
                            prop_assert_eq!(got, msg);
                        }
                    }
                    Step::Drop => {
                        queue.clear();
                        wire.clear();
                        t.reset();
                        connected_once = false;
                    }
                }
                marked.extend(t.take_acked());
                prop_assert!(marked.is_subset(&broker_acked));
            }
            prop_assert_eq!(marked, broker_acked);
        }
    }
}
