//! The quarterly light (季度亮灯): green, yellow or red per station per
//! quarter, computed from the data the county holds, with the reasons.
//!
//! The rule (`[light]` in `county.toml`, defaults below; `docs/COUNTY.md`):
//! - **red** when, at the end of the quarter (or now, for the current one),
//!   a major hazard is open, a rectification is past its deadline, the
//!   quarter had at least `red_power_cuts` power cuts, or an alarm has
//!   waited longer than `ack_minutes` for an acknowledgement;
//! - **yellow** when a general hazard is open longer than
//!   `yellow_open_days`, the quarter had a power cut, the station's uplink
//!   was down for more than `offline_hours` in the quarter (from the
//!   changes of its retained status), or one of its channels had no good
//!   reading for more than `sensor_down_hours` of the quarter's minutes
//!   (from the summaries);
//! - **green** otherwise.
//!
//! It is computed from station data, and labelled so: the union's own
//! assessment is a separate record with its note.

pub use pithead_core::light::{Facts, Light, Rule, judge};

/// `(start, end)` of quarter `q` ("2026-Q4") as `YYYY-MM-DD`, or `None`.
pub fn quarter(q: &str) -> Option<(String, String)> {
    let (y, n) = q.split_once("-Q")?;
    let y: i32 = y.parse().ok().filter(|y| (2000..=2100).contains(y))?;
    let n: u32 = n.parse().ok().filter(|n| (1..=4).contains(n))?;
    let start = format!("{y}-{:02}-01", (n - 1) * 3 + 1);
    let end = if n == 4 {
        format!("{}-01-01", y + 1)
    } else {
        format!("{y}-{:02}-01", n * 3 + 1)
    };
    Some((start, end))
}

/// The facts of every station for the quarter `[start, end)`, as of the
/// end (or now, if sooner).
pub async fn facts(
    db: &tokio_postgres::Client,
    rule: &Rule,
    start: &str,
    end: &str,
) -> Result<Vec<(String, String, Facts)>, tokio_postgres::Error> {
    let rows = db
        .query(
            "WITH bounds AS (SELECT $1::text::timestamptz AS s, least($2::text::timestamptz, now()) AS e),
             hz AS (
                 SELECT DISTINCT ON (m.county, m.station, m.body->>'ticket') m.county, m.station, m.body AS h
                 FROM messages m JOIN epochs ep USING (county, station, epoch), bounds
                 WHERE m.kind = 'hazard' AND m.created_at < bounds.e
                 ORDER BY m.county, m.station, m.body->>'ticket', ep.began DESC, m.seq DESC
             ), open_hz AS (
                 SELECT * FROM hz WHERE h->>'status' NOT IN ('closed', 'rejected')
             ), al AS (
                 SELECT DISTINCT ON (m.county, m.station, m.body->>'alarm_id') m.county, m.station, m.body AS a
                 FROM messages m JOIN epochs ep USING (county, station, epoch), bounds
                 WHERE m.kind = 'alarm' AND m.created_at < bounds.e
                 ORDER BY m.county, m.station, m.body->>'alarm_id', ep.began DESC, m.seq DESC
             )
             SELECT s.county, s.station,
                 (SELECT count(*) FROM open_hz o WHERE o.county = s.county AND o.station = s.station AND o.h->>'grade' = 'major'),
                 (SELECT count(*) FROM open_hz o, bounds WHERE o.county = s.county AND o.station = s.station
                     AND ((o.h->>'overdue')::boolean OR (o.h->>'deadline' IS NOT NULL AND (o.h->>'deadline')::timestamptz < bounds.e
                          AND o.h->>'status' IN ('acknowledged', 'assigned')))),
                 (SELECT count(*) FROM messages m, bounds WHERE m.county = s.county AND m.station = s.station AND m.kind = 'alarm'
                     AND m.body->>'level' = 'power_cut' AND m.body->>'event' IN ('raised', 'escalated')
                     AND m.created_at >= bounds.s AND m.created_at < bounds.e),
                 (SELECT count(*) FROM al, bounds WHERE al.county = s.county AND al.station = s.station
                     AND al.a->>'event' IN ('raised', 'escalated', 'recurred', 'returned')
                     AND (al.a->>'at')::timestamptz < bounds.e - make_interval(mins => $3::int)),
                 (SELECT count(*) FROM open_hz o, bounds WHERE o.county = s.county AND o.station = s.station AND o.h->>'grade' = 'general'
                     AND (o.h->>'reported_at')::timestamptz < bounds.e - make_interval(days => $4::int)),
                  (SELECT floor(coalesce(sum(extract(epoch FROM
                         least(coalesce(p.next_at, now()), bounds.e) - greatest(p.at, bounds.s))), 0) / 3600)::bigint
                  FROM (SELECT state, at, lead(at) OVER (ORDER BY at) AS next_at FROM presence_log pl
                        WHERE pl.county = s.county AND pl.station = s.station) p, bounds
                  WHERE p.state = 'offline' AND coalesce(p.next_at, now()) > bounds.s AND p.at < bounds.e),
                 d.minutes / 60, d.channel
             FROM stations s
             LEFT JOIN LATERAL (
                 SELECT cm.channel, count(*) AS minutes FROM channel_minutes cm, bounds
                 WHERE cm.county = s.county AND cm.station = s.station AND cm.mean IS NULL
                   AND cm.minute >= bounds.s AND cm.minute < bounds.e
                 GROUP BY cm.channel ORDER BY 2 DESC, 1 LIMIT 1
             ) d ON true
             WHERE s.registered ORDER BY 1, 2",
            &[&start, &end, &(rule.ack_minutes as i32), &(rule.yellow_open_days as i32)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                Facts {
                    major_open: r.get(2),
                    overdue: r.get(3),
                    power_cuts: r.get(4),
                    unacknowledged: r.get(5),
                    general_stale: r.get(6),
                    offline_hours: r.get::<_, Option<i64>>(7).unwrap_or(0),
                    sensor_down_hours: r.get::<_, Option<i64>>(8).unwrap_or(0),
                    sensor_down_channel: r.get(9),
                    calibration_overdue: 0,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_gives_red_yellow_and_green_with_reasons() {
        let rule = Rule::default();
        let g = judge(&rule, &Facts::default());
        assert_eq!((g.light, g.reasons.len()), ("green", 0));
        let y = judge(
            &rule,
            &Facts {
                power_cuts: 1,
                ..Facts::default()
            },
        );
        assert_eq!(y.light, "yellow");
        assert!(y.reasons[0].0.contains("断电 1 次"));
        let r = judge(
            &rule,
            &Facts {
                major_open: 1,
                overdue: 1,
                power_cuts: 1,
                ..Facts::default()
            },
        );
        assert_eq!(r.light, "red");
        let zh: Vec<&str> = r.reasons.iter().map(|(z, _)| z.as_str()).collect();
        assert_eq!(
            zh,
            [
                "重大隐患未销号 1 项",
                "隐患整改超期 1 项",
                "本季度断电 1 次"
            ]
        );
        assert_eq!(
            judge(
                &rule,
                &Facts {
                    power_cuts: 3,
                    ..Facts::default()
                }
            )
            .light,
            "red"
        );
        assert_eq!(
            judge(
                &rule,
                &Facts {
                    offline_hours: 25,
                    ..Facts::default()
                }
            )
            .light,
            "yellow"
        );
    }

    #[test]
    fn downtime_of_the_uplink_and_of_a_sensor_makes_it_yellow() {
        let rule = Rule::default();
        let l = judge(
            &rule,
            &Facts {
                sensor_down_hours: 25,
                sensor_down_channel: Some("ch4-1201-face".into()),
                ..Facts::default()
            },
        );
        assert_eq!(l.light, "yellow");
        assert_eq!(
            l.reasons[0].0,
            "测点 ch4-1201-face 本季度无有效读数 25 小时"
        );
        let at_the_limit = Facts {
            sensor_down_hours: 24,
            offline_hours: 24,
            ..Facts::default()
        };
        assert_eq!(judge(&rule, &at_the_limit).light, "green");
        let l = judge(
            &rule,
            &Facts {
                offline_hours: 30,
                ..Facts::default()
            },
        );
        assert_eq!(l.reasons[0].1, "uplink down 30 hours this quarter");
    }

    #[test]
    fn quarters_have_their_months() {
        assert_eq!(
            quarter("2026-Q4"),
            Some(("2026-10-01".into(), "2027-01-01".into()))
        );
        assert_eq!(
            quarter("2026-Q1"),
            Some(("2026-01-01".into(), "2026-04-01".into()))
        );
        assert_eq!(quarter("2026-Q5"), None);
        assert_eq!(quarter("x"), None);
    }
}
