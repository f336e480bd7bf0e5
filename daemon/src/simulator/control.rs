//! The simulator's control port: one command per line, one answer per line.
//!
//! ```text
//! set UNIT TABLE ADDR VALUE...   pin and set raw registers   -> ok UNIX_NANOS
//! unpin UNIT TABLE ADDR          let the drift move it again -> ok
//! fault UNIT FAULT               none|silent|garbage|slow[:MS]|wrong-tid|exception|auto
//! scenario NAME                  switch scenario, clock from 0
//! requests UNIT                  requests the unit received  -> ok N
//! ```
//! The time returned by `set` is taken while the registers are locked, so a
//! test can measure latency from the change itself.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Sim;
use super::model::{Fault, Scenario};
use crate::config::Table;

fn table(s: &str) -> Result<Table, String> {
    Ok(match s {
        "holding" => Table::Holding,
        "input" => Table::Input,
        "coil" => Table::Coil,
        "discrete" => Table::Discrete,
        _ => return Err(format!("unknown table `{s}`")),
    })
}

fn num<T: std::str::FromStr>(s: Option<&str>, what: &str) -> Result<T, String> {
    s.ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}"))
}

/// Runs one command; the answer line without its newline.
pub fn command(sim: &Sim, line: &str) -> String {
    match run(sim, line) {
        Ok(s) => s,
        Err(e) => format!("err {e}"),
    }
}

fn run(sim: &Sim, line: &str) -> Result<String, String> {
    let mut w = line.split_whitespace();
    let cmd = w.next().unwrap_or("");
    let no_unit = || "no such unit".to_owned();
    match cmd {
        "set" => {
            let unit: u8 = num(w.next(), "unit")?;
            let t = table(w.next().unwrap_or(""))?;
            let addr: u16 = num(w.next(), "address")?;
            let words = w
                .map(|v| v.parse::<u16>().map_err(|_| format!("bad value `{v}`")))
                .collect::<Result<Vec<_>, _>>()?;
            if words.is_empty() {
                return Err("missing value".into());
            }
            sim.with_unit(unit, |u| {
                u.set_words(t, addr, &words, true);
                let ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!("ok {ns}")
            })
            .ok_or_else(no_unit)
        }
        "unpin" => {
            let unit: u8 = num(w.next(), "unit")?;
            let t = table(w.next().unwrap_or(""))?;
            let addr: u16 = num(w.next(), "address")?;
            sim.with_unit(unit, |u| u.unpin(t, addr))
                .ok_or_else(no_unit)?;
            Ok("ok".into())
        }
        "fault" => {
            let unit: u8 = num(w.next(), "unit")?;
            let f = match w.next().unwrap_or("") {
                "auto" => None,
                s => Some(s.parse::<Fault>()?),
            };
            sim.with_unit(unit, |u| u.fault = f).ok_or_else(no_unit)?;
            Ok("ok".into())
        }
        "scenario" => {
            sim.set_scenario(w.next().unwrap_or("").parse::<Scenario>()?);
            Ok("ok".into())
        }
        "requests" => {
            let unit: u8 = num(w.next(), "unit")?;
            sim.with_unit(unit, |u| format!("ok {}", u.requests))
                .ok_or_else(no_unit)
        }
        "" => Err("empty command".into()),
        other => Err(format!("unknown command `{other}`")),
    }
}

/// Serves the control port until `shutdown`.
pub async fn serve(sim: Arc<Sim>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control port accept failed");
                    continue;
                }
            },
        };
        let sim = Arc::clone(&sim);
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = command(&sim, &line);
                if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_errors() {
        let sim = Sim::new(Scenario::Normal);
        assert!(command(&sim, "set 1 input 0 150").starts_with("ok "));
        assert_eq!(
            sim.with_unit(1, |u| u.read_words(Table::Input, 0, 1)),
            Some(Some(vec![150]))
        );
        assert_eq!(command(&sim, "fault 2 silent"), "ok");
        assert_eq!(command(&sim, "requests 1"), "ok 0");
        assert_eq!(command(&sim, "set 9 input 0 1"), "err no such unit");
        assert_eq!(
            command(&sim, "set 1 inputs 0 1"),
            "err unknown table `inputs`"
        );
        assert_eq!(
            command(&sim, "set 1 input 0 70000"),
            "err bad value `70000`"
        );
        assert!(command(&sim, "scenario boom").starts_with("err unknown scenario"));
        assert_eq!(command(&sim, "dance"), "err unknown command `dance`");
    }
}
