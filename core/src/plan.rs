//! Turning channels into as few Modbus read requests as possible. Pure:
//! it takes the channels' register specs, not the whole configuration.

use std::time::Duration;

use crate::domain::{DataType, Table};

/// Most registers one read may ask for (Modbus function 3/4).
pub const MAX_REGISTERS: u16 = 125;
/// Most bits one read may ask for (Modbus function 1/2).
pub const MAX_BITS: u16 = 2000;

/// One read request, polled on its own schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Index of the device in the configuration.
    pub device: usize,
    /// Which table.
    pub table: Table,
    /// First address.
    pub start: u16,
    /// How many registers or bits.
    pub count: u16,
    /// How often.
    pub interval: Duration,
    /// The channels it feeds: (channel index, offset from `start`).
    pub channels: Vec<(usize, u16)>,
}

/// Where one channel's value is: what [`plan`] needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Index of the channel in the configuration.
    pub channel: usize,
    /// Index of its device in the configuration.
    pub device: usize,
    /// Which table.
    pub table: Table,
    /// Its address.
    pub address: u16,
    /// Its encoding (how many registers it takes).
    pub data_type: DataType,
    /// How often it is read.
    pub poll: Duration,
}

/// The reads for a set of channels (one bus's): grouped by device, table
/// and poll interval, and — when `coalesce` — merged where the registers
/// are contiguous or overlap, up to the protocol's limit.
pub fn plan(points: impl IntoIterator<Item = Point>, coalesce: bool) -> Vec<Request> {
    let mut items: Vec<(usize, Table, Duration, u16, u16, usize)> = points
        .into_iter()
        .map(|p| {
            let width = if p.table.is_bits() {
                1
            } else {
                p.data_type.registers()
            };
            (p.device, p.table, p.poll, p.address, width, p.channel)
        })
        .collect();
    items.sort_by_key(|&(d, t, p, a, _, c)| (d, t as u8, p, a, c));

    let mut out: Vec<Request> = Vec::new();
    for (device, table, interval, address, width, channel) in items {
        let limit = if table.is_bits() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        };
        let end = u32::from(address) + u32::from(width);
        if coalesce
            && let Some(last) = out.last_mut()
            && last.device == device
            && last.table == table
            && last.interval == interval
            && u32::from(address) <= u32::from(last.start) + u32::from(last.count)
            && end - u32::from(last.start) <= u32::from(limit)
        {
            let new_count =
                end.max(u32::from(last.start) + u32::from(last.count)) - u32::from(last.start);
            last.count = u16::try_from(new_count).unwrap_or(limit);
            last.channels.push((channel, address - last.start));
            continue;
        }
        out.push(Request {
            device,
            table,
            start: address,
            count: width,
            interval,
            channels: vec![(channel, 0)],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(device: usize, table: Table, address: u16, data_type: DataType, poll: u64) -> Point {
        Point {
            channel: 0,
            device,
            table,
            address,
            data_type,
            poll: Duration::from_secs(poll),
        }
    }

    fn numbered(points: Vec<Point>) -> Vec<Point> {
        points
            .into_iter()
            .enumerate()
            .map(|(i, p)| Point { channel: i, ..p })
            .collect()
    }

    #[test]
    fn contiguous_registers_merge_gaps_and_devices_do_not() {
        let points = numbered(vec![
            ch(0, Table::Input, 0, DataType::U16, 1),
            ch(0, Table::Input, 1, DataType::F32, 1),
            ch(0, Table::Input, 3, DataType::U16, 1),
            ch(0, Table::Input, 10, DataType::U16, 1),
            ch(0, Table::Input, 4, DataType::U16, 10),
            ch(0, Table::Holding, 4, DataType::U16, 1),
            ch(1, Table::Input, 1, DataType::U16, 1),
        ]);
        let p = plan(points.clone(), true);
        let summary: Vec<(usize, Table, u16, u16, usize)> = p
            .iter()
            .map(|r| (r.device, r.table, r.start, r.count, r.channels.len()))
            .collect();
        assert_eq!(
            summary,
            [
                (0, Table::Holding, 4, 1, 1),
                (0, Table::Input, 0, 4, 3),
                (0, Table::Input, 10, 1, 1),
                (0, Table::Input, 4, 1, 1),
                (1, Table::Input, 1, 1, 1),
            ]
        );
        assert_eq!(p[1].channels, [(0, 0), (1, 1), (2, 3)]);
        assert_eq!(plan(points, false).len(), 7);
        assert!(plan([], true).is_empty());
    }

    #[test]
    fn reads_stop_at_the_protocol_limit() {
        let regs = numbered(
            (0..130u16)
                .map(|a| ch(0, Table::Holding, a, DataType::U16, 1))
                .collect(),
        );
        let p = plan(regs, true);
        assert_eq!(
            p.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            [(0, 125), (125, 5)]
        );
        let bits = numbered(
            (0..2001u16)
                .map(|a| ch(0, Table::Coil, a, DataType::U16, 1))
                .collect(),
        );
        let p = plan(bits, true);
        assert_eq!(
            p.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            [(0, 2000), (2000, 1)]
        );
    }
}
