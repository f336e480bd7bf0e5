//! Turning channels into as few Modbus read requests as possible. Pure.

use std::time::Duration;

use crate::config::{Config, Table};

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

/// The reads for one bus: every channel of every device on it, grouped by
/// device, table and poll interval, and — when `coalesce` — merged where
/// the registers are contiguous or overlap, up to the protocol's limit.
pub fn plan(cfg: &Config, bus: &str, coalesce: bool) -> Vec<Request> {
    let mut items: Vec<(usize, Table, Duration, u16, u16, usize)> = Vec::new();
    for (ci, ch) in cfg.channels.iter().enumerate() {
        let Some(di) = cfg.devices.iter().position(|d| d.id == ch.device) else {
            continue;
        };
        if cfg.devices[di].bus != bus {
            continue;
        }
        let width = if ch.table.is_bits() {
            1
        } else {
            ch.data_type.registers()
        };
        items.push((di, ch.table, ch.poll, ch.address, width, ci));
    }
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
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    fn cfg(channels: &str) -> Config {
        let src = format!(
            "[station]\ncounty = \"c\"\nid = \"s\"\nname = \"n\"\n[outputs]\nbackend = \"sim\"\n[storage]\ndata_dir = \"{}\"\n\
             [[bus]]\nid = \"b\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[device]]\nid = \"d1\"\nbus = \"b\"\nunit = 1\n\
             [[device]]\nid = \"d2\"\nbus = \"b\"\nunit = 2\n{channels}",
            std::env::temp_dir().display()
        );
        load_str(&src, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ch(id: &str, dev: &str, table: &str, addr: u16, dt: &str, poll: &str) -> String {
        format!(
            "[[channel]]\nid = \"{id}\"\ndevice = \"{dev}\"\nkind = \"generic\"\nunit = \"x\"\n\
             table = \"{table}\"\naddress = {addr}\ndata_type = \"{dt}\"\npoll = \"{poll}\"\n"
        )
    }

    #[test]
    fn contiguous_registers_merge_gaps_and_devices_do_not() {
        let c = cfg(&[
            ch("a", "d1", "input", 0, "u16", "1s"),
            ch("b", "d1", "input", 1, "f32", "1s"),
            ch("c", "d1", "input", 3, "u16", "1s"),
            ch("gap", "d1", "input", 10, "u16", "1s"),
            ch("slow", "d1", "input", 4, "u16", "10s"),
            ch("hold", "d1", "holding", 4, "u16", "1s"),
            ch("other", "d2", "input", 1, "u16", "1s"),
        ]
        .concat());
        let p = plan(&c, "b", true);
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
        assert_eq!(plan(&c, "b", false).len(), 7);
        assert!(plan(&c, "other-bus", true).is_empty());
    }

    #[test]
    fn reads_stop_at_the_protocol_limit() {
        let chans: String = (0..130u16)
            .map(|a| ch(&format!("c{a}"), "d1", "holding", a, "u16", "1s"))
            .collect();
        let p = plan(&cfg(&chans), "b", true);
        assert_eq!(
            p.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            [(0, 125), (125, 5)]
        );
        let bits: String = (0..2001u16)
            .map(|a| format!("[[channel]]\nid = \"c{a}\"\ndevice = \"d1\"\nkind = \"generic\"\nunit = \"\"\ntable = \"coil\"\naddress = {a}\n"))
            .collect();
        let p = plan(&cfg(&bits), "b", true);
        assert_eq!(
            p.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            [(0, 2000), (2000, 1)]
        );
    }
}
