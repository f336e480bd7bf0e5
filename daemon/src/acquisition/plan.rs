//! The reads for one bus: its channels from the configuration, planned by
//! [`pithead_core::plan`].

use pithead_core::plan::Point;
pub use pithead_core::plan::{MAX_BITS, MAX_REGISTERS, Request};

use crate::config::Config;

/// The reads for bus `bus`: every channel of every device on it.
pub fn plan(cfg: &Config, bus: &str, coalesce: bool) -> Vec<Request> {
    let points = cfg.channels.iter().enumerate().filter_map(|(ci, ch)| {
        let di = cfg.devices.iter().position(|d| d.id == ch.device)?;
        (cfg.devices[di].bus == bus).then_some(Point {
            channel: ci,
            device: di,
            table: ch.table,
            address: ch.address,
            data_type: ch.data_type,
            poll: ch.poll,
        })
    });
    pithead_core::plan::plan(points, coalesce)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Table, load_str};

    #[test]
    fn a_bus_reads_its_own_devices_channels_by_their_indices() {
        let src = format!(
            "[station]\ncounty = \"c\"\nid = \"s\"\nname = \"n\"\n[outputs]\nbackend = \"sim\"\n[storage]\ndata_dir = \"{}\"\n\
             [[bus]]\nid = \"a\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[bus]]\nid = \"b\"\ntransport = \"tcp\"\nhost = \"127.0.0.2\"\n\
             [[device]]\nid = \"d1\"\nbus = \"a\"\nunit = 1\n\
             [[device]]\nid = \"d2\"\nbus = \"b\"\nunit = 2\n\
             [[channel]]\nid = \"x\"\ndevice = \"d2\"\nkind = \"generic\"\nunit = \"\"\ntable = \"input\"\naddress = 7\n\
             [[channel]]\nid = \"y\"\ndevice = \"d1\"\nkind = \"generic\"\nunit = \"\"\ntable = \"input\"\naddress = 1\n\
             [[channel]]\nid = \"z\"\ndevice = \"d1\"\nkind = \"generic\"\nunit = \"\"\ntable = \"input\"\naddress = 2\n",
            std::env::temp_dir().display()
        );
        let cfg = load_str(&src, Path::new("t.toml")).unwrap();
        let a = plan(&cfg, "a", true);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].device, a[0].table, a[0].start, a[0].count),
            (0, Table::Input, 1, 2)
        );
        assert_eq!(a[0].channels, [(1, 0), (2, 1)]);
        let b = plan(&cfg, "b", true);
        assert_eq!(
            (b[0].device, b[0].start, b[0].channels.clone()),
            (1, 7, vec![(0, 0)])
        );
        assert!(plan(&cfg, "other-bus", true).is_empty());
    }
}
