//! One task per bus: a single master, one request at a time.
//!
//! Rules that keep readings honest on badly behaved lines:
//! * after a timeout or a reply that does not fit the request, the
//!   connection is dropped (TCP), or the port is closed and reopened with
//!   its input flushed (RTU); before the next request (a retry too) goes
//!   out on a serial line it is listened to until it has been silent for
//!   [`Bus::quiet`](crate::config::Bus::quiet) (a timeout and a quarter; every late byte starts the wait
//!   again and is thrown away), so a reply up to 2.25 timeouts late is
//!   never taken as an answer;
//! * every reply is checked against its request before anything is
//!   decoded: unit and function (tokio-modbus), and the number of
//!   registers or bits (here: tokio-modbus checks that only in debug
//!   builds); one that does not fit is a counted protocol error and a
//!   fault, never a value;
//! * a device that failed is offline: only one of its requests probes it,
//!   once per [`PROBE`] at most and without retries, so a dead unit costs
//!   the line one timeout per probe and never starves the others;
//! * every failure publishes a fault for the channels concerned at once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;
use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;

use super::decode::{self, Encoding, NoValue};
use super::metrics::{BusMetrics, ErrorKind};
use super::plan::Request;
use super::{Batch, DeviceHealth, Reading, ReadingState, Sink};
use crate::config::{Bus, Config, Parity, Table, Transport};

/// How often an offline device is asked again.
pub const PROBE: Duration = Duration::from_secs(3);
/// Longest wait between attempts to open a connection that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

struct Failure {
    kind: ErrorKind,
    detail: String,
    /// The line may hold stray bytes: resynchronise before the next request.
    resync: bool,
}

struct Scheduled {
    req: Request,
    due: Instant,
}

struct Device {
    health: DeviceHealth,
    /// Index (into the bus's requests) of the request that probes the
    /// device while it is offline.
    probe: usize,
}

pub(crate) struct BusPoller {
    cfg: Arc<Config>,
    bus: usize,
    requests: Vec<Scheduled>,
    devices: Vec<Option<Device>>,
    sink: Sink,
    conn: Option<Context>,
    backoff: Duration,
    next_connect: Instant,
    /// The line must be listened to until silent before the next request.
    drain: bool,
}

impl BusPoller {
    pub(crate) fn new(cfg: Arc<Config>, bus: usize, requests: Vec<Request>, sink: Sink) -> Self {
        let now = Instant::now();
        let mut devices: Vec<Option<Device>> = (0..cfg.devices.len()).map(|_| None).collect();
        for (i, r) in requests.iter().enumerate() {
            devices[r.device].get_or_insert_with(|| Device {
                health: DeviceHealth {
                    id: cfg.devices[r.device].id.clone(),
                    online: true,
                    consecutive_failures: 0,
                    last_error: None,
                    last_ok: None,
                },
                probe: i,
            });
        }
        BusPoller {
            requests: requests
                .into_iter()
                .map(|req| Scheduled { req, due: now })
                .collect(),
            devices,
            cfg,
            bus,
            sink,
            conn: None,
            backoff: Duration::from_millis(200),
            next_connect: now,
            drain: false,
        }
    }

    fn bus(&self) -> &Bus {
        &self.cfg.buses[self.bus]
    }

    fn metrics(&self) -> &BusMetrics {
        &self.sink.metrics.buses[self.bus]
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(requests = self.requests.len(), "polling");
        loop {
            let Some((idx, due)) = self.next() else {
                return;
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(due.into()) => {}
            }
            self.poll(idx).await;
            if self.bus().transport == Transport::Rtu {
                tokio::time::sleep(self.bus().frame_gap).await;
            }
        }
        if let Some(mut c) = self.conn.take() {
            let _ = c.disconnect().await;
        }
        tracing::info!("stopped");
    }

    /// The request due first.
    fn next(&self) -> Option<(usize, Instant)> {
        self.requests
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.due))
            .min_by_key(|&(_, due)| due)
    }

    async fn poll(&mut self, idx: usize) {
        let now = Instant::now();
        let device = self.requests[idx].req.device;
        let (online, probe) = match &self.devices[device] {
            Some(d) => (d.health.online, d.probe),
            None => (true, idx),
        };
        let interval = self.requests[idx].req.interval;
        if !online && idx != probe {
            // The device is offline and another request probes it: report
            // the fault without spending time on the line.
            let detail = self.devices[device]
                .as_ref()
                .and_then(|d| d.health.last_error.clone())
                .unwrap_or_else(|| "device offline".into());
            self.publish_fault(idx, ReadingState::CommFault, &detail);
            self.requests[idx].due = now + interval;
            return;
        }
        let attempts = if online {
            1 + u32::from(self.bus().retries)
        } else {
            1
        };
        let started = Instant::now();
        let mut outcome = Err(Failure {
            kind: ErrorKind::Transport,
            detail: "not tried".into(),
            resync: false,
        });
        for attempt in 1..=attempts {
            outcome = self.attempt(idx).await;
            match &outcome {
                Ok(_) => break,
                Err(f) => {
                    if f.resync {
                        // Not even a retry of the same request goes out
                        // before the line is silent: a device that queues
                        // requests would otherwise answer every later one
                        // with the reply before.
                        self.drop_connection();
                    }
                    // An exception is the device's answer: asking again
                    // gives the same one.
                    if attempt == attempts || f.kind == ErrorKind::Exception {
                        break;
                    }
                }
            }
        }
        self.metrics().duration.observe(started.elapsed());
        let wall = SystemTime::now();
        let at = Instant::now();
        match outcome {
            Ok(data) => {
                let batch = self.decode(idx, &data, at, wall);
                if let Some(d) = self.devices[device].as_mut() {
                    if !d.health.online {
                        tracing::info!(device = %d.health.id, "device answers again");
                    }
                    d.health.online = true;
                    d.health.consecutive_failures = 0;
                    d.health.last_error = None;
                    d.health.last_ok = Some(wall);
                }
                self.publish(device, batch);
                self.requests[idx].due = next_due(self.requests[idx].due, interval, at);
            }
            Err(f) => {
                self.metrics().error(f.kind);
                let mut went_offline = false;
                if let Some(d) = self.devices[device].as_mut() {
                    // A Modbus exception is the device answering: it is
                    // online and only this request's channels are faulty.
                    if f.kind != ErrorKind::Exception {
                        went_offline = d.health.online;
                        d.health.online = false;
                    }
                    d.health.consecutive_failures += 1;
                    d.health.last_error = Some(f.detail.clone());
                }
                if went_offline {
                    tracing::warn!(device = %self.cfg.devices[device].id, kind = f.kind.as_str(), error = %f.detail, "device failed");
                } else {
                    tracing::debug!(device = %self.cfg.devices[device].id, error = %f.detail, "device still failing");
                }
                self.publish_fault(idx, ReadingState::CommFault, &f.detail);
                let wait = if f.kind == ErrorKind::Exception {
                    interval
                } else {
                    interval.max(PROBE)
                };
                self.requests[idx].due = at + wait;
            }
        }
    }

    async fn attempt(&mut self, idx: usize) -> Result<Data, Failure> {
        let timeout = self.bus().timeout;
        let unit = self.cfg.devices[self.requests[idx].req.device].unit;
        if self.conn.is_none() {
            self.connect().await?;
        }
        let Some(ctx) = self.conn.as_mut() else {
            return Err(transport("no connection"));
        };
        ctx.set_slave(Slave(unit));
        let req = &self.requests[idx].req;
        let (table, start, count) = (req.table, req.start, req.count);
        self.sink.metrics.buses[self.bus].polls.inc();
        let request = match table {
            Table::Holding => tokio_modbus::Request::ReadHoldingRegisters(start, count),
            Table::Input => tokio_modbus::Request::ReadInputRegisters(start, count),
            Table::Coil => tokio_modbus::Request::ReadCoils(start, count),
            Table::Discrete => tokio_modbus::Request::ReadDiscreteInputs(start, count),
        };
        // `call`, not the typed readers: they only debug_assert the count
        // (a panic in a debug build, a wrong value in a release build).
        match tokio::time::timeout(timeout, ctx.call(request)).await {
            Err(_) => Err(Failure {
                kind: ErrorKind::Timeout,
                detail: format!("no answer within {}", humantime::format_duration(timeout)),
                resync: true,
            }),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(Failure {
                kind: if e.kind() == std::io::ErrorKind::InvalidData {
                    ErrorKind::Protocol
                } else {
                    ErrorKind::Transport
                },
                detail: format!("bad frame or connection: {e}"),
                resync: true,
            }),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(Failure {
                kind: ErrorKind::Protocol,
                detail: format!("reply does not match the request: {e}"),
                resync: true,
            }),
            Ok(Ok(Err(code))) => Err(Failure {
                kind: ErrorKind::Exception,
                detail: exception_text(code),
                resync: false,
            }),
            Ok(Ok(Ok(response))) => fits(table, count, response).map_err(|detail| Failure {
                kind: ErrorKind::Protocol,
                detail,
                resync: true,
            }),
        }
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        let now = Instant::now();
        if now < self.next_connect {
            return Err(transport("waiting to reconnect"));
        }
        let bus = self.bus().clone();
        let opened = match bus.transport {
            Transport::Tcp => open_tcp(&bus).await,
            Transport::Rtu => match open_rtu(&bus) {
                Ok(mut port) => {
                    if std::mem::take(&mut self.drain) {
                        // Let a late reply arrive, and die here.
                        let late = drain(&mut port, bus.quiet()).await;
                        if late > 0 {
                            tracing::debug!(bus = %bus.id, bytes = late, "late bytes thrown away");
                        }
                    }
                    Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)))
                }
                Err(e) => Err(e),
            },
        };
        self.sink.metrics.buses[self.bus].connects.inc();
        match opened {
            Ok(ctx) => {
                self.conn = Some(ctx);
                self.backoff = Duration::from_millis(200);
                Ok(())
            }
            Err(detail) => {
                self.next_connect = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                tracing::warn!(bus = %bus.id, error = %detail, retry_in = ?self.backoff, "cannot open bus");
                Err(transport(detail))
            }
        }
    }

    /// Drops the connection: reopened, its input flushed and (a serial
    /// line) left silent for [`Bus::quiet`](crate::config::Bus::quiet) before the next request.
    fn drop_connection(&mut self) {
        self.conn = None;
        if self.bus().transport == Transport::Rtu {
            self.drain = true;
        }
    }

    fn decode(&self, idx: usize, data: &Data, at: Instant, wall: SystemTime) -> Batch {
        let req = &self.requests[idx].req;
        req.channels
            .iter()
            .map(|&(ci, off)| {
                let ch = &self.cfg.channels[ci];
                let off = usize::from(off);
                let value = match data {
                    Data::Bits(bits) => match bits.get(off) {
                        Some(&b) => decode::in_range(decode::bit(b), ch.range),
                        None => Err(NoValue::Short),
                    },
                    Data::Words(words) => {
                        let e = Encoding {
                            data_type: ch.data_type,
                            byte_order: ch.byte_order,
                            word_order: ch.word_order,
                            scale: ch.scale,
                            offset: ch.offset,
                            range: ch.range,
                            decimals: ch.decimals.or_else(|| {
                                Encoding::implied_decimals(ch.data_type, ch.scale, ch.offset)
                            }),
                        };
                        decode::value(words.get(off..).unwrap_or(&[]), &e)
                    }
                };
                let reading = match value {
                    Ok(v) => Reading::ok(v, at, wall),
                    Err(NoValue::OutOfRange) => Reading::fault(
                        ReadingState::OutOfRange,
                        "outside the sensor range",
                        at,
                        wall,
                    ),
                    Err(NoValue::Short) => {
                        Reading::fault(ReadingState::CommFault, "short reply", at, wall)
                    }
                };
                (ci, reading)
            })
            .collect()
    }

    fn publish(&self, device: usize, batch: Batch) {
        if let Some(d) = &self.devices[device] {
            self.sink.publish(device, &d.health, batch);
        }
    }

    fn publish_fault(&self, idx: usize, state: ReadingState, detail: &str) {
        let req = &self.requests[idx].req;
        let (at, wall) = (Instant::now(), SystemTime::now());
        let detail: Arc<str> = Arc::from(detail);
        let batch = req
            .channels
            .iter()
            .map(|&(ci, _)| (ci, Reading::fault(state, Arc::clone(&detail), at, wall)))
            .collect();
        self.publish(req.device, batch);
    }
}

/// Listens to a just-opened port until it has been silent for `quiet`,
/// throwing away whatever arrives (each byte starts the wait again), but
/// never longer than four times `quiet` in all (a line full of noise is
/// then the next request's problem, and its reply is checked). Returns the
/// bytes thrown away.
async fn drain(port: &mut tokio_serial::SerialStream, quiet: Duration) -> usize {
    use tokio::io::AsyncReadExt as _;
    let end = Instant::now() + quiet * 4;
    let mut buf = [0u8; 256];
    let mut thrown = 0;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return thrown;
        }
        match tokio::time::timeout(quiet.min(left), port.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => thrown += n,
            // Silent for `quiet`, or the port failed (the request will say).
            _ => return thrown,
        }
    }
}

/// Whether a reply fits its request (`count` registers or bits of
/// `table`), and its data if so. tokio-modbus has checked the unit, the
/// function and the frame; the quantity is checked here: a register reply
/// must hold exactly `count` words, a bit reply exactly ⌈count/8⌉ bytes.
fn fits(table: Table, count: u16, response: tokio_modbus::Response) -> Result<Data, String> {
    use tokio_modbus::Response as R;
    let want_bits = usize::from(count).div_ceil(8) * 8;
    match (table, response) {
        (Table::Holding, R::ReadHoldingRegisters(w)) | (Table::Input, R::ReadInputRegisters(w)) => {
            if w.len() == usize::from(count) {
                Ok(Data::Words(w))
            } else {
                Err(format!(
                    "reply holds {} registers, {count} were asked for",
                    w.len()
                ))
            }
        }
        (Table::Coil, R::ReadCoils(b)) | (Table::Discrete, R::ReadDiscreteInputs(b)) => {
            if b.len() == want_bits {
                Ok(Data::Bits(b))
            } else {
                Err(format!(
                    "reply holds {} bytes of bits, {} were asked for ({count} bits)",
                    b.len() / 8,
                    want_bits / 8
                ))
            }
        }
        (_, other) => Err(format!("reply to another request: {other:?}")),
    }
}

/// The next time a request is due: one interval on, but never in the past
/// (a late poll does not cause a burst of catch-up polls).
fn next_due(due: Instant, interval: Duration, now: Instant) -> Instant {
    let next = due + interval;
    if next <= now { now + interval } else { next }
}

fn transport(detail: impl Into<String>) -> Failure {
    Failure {
        kind: ErrorKind::Transport,
        detail: detail.into(),
        resync: false,
    }
}

fn exception_text(code: ExceptionCode) -> String {
    format!(
        "device refused the request: exception {:#04x} ({code})",
        u8::from(code)
    )
}

async fn open_tcp(bus: &Bus) -> Result<Context, String> {
    let host = bus.host.clone().unwrap_or_default();
    let target = format!("{host}:{}", bus.port);
    let stream = tokio::time::timeout(
        bus.timeout.max(Duration::from_secs(1)),
        TcpStream::connect(&target),
    )
    .await
    .map_err(|_| format!("connecting to {target} timed out"))?
    .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(0)))
}

fn open_rtu(bus: &Bus) -> Result<tokio_serial::SerialStream, String> {
    use tokio_serial::{SerialPort as _, SerialPortBuilderExt as _};
    let path = bus.path.clone().unwrap_or_default();
    let name = path.display().to_string();
    let parity = match bus.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = if bus.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let stop_bits = if bus.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let port = tokio_serial::new(&name, bus.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|e| format!("cannot open {name}: {e}"))?;
    // Whatever arrived while the port was closed belongs to no request.
    let _ = port.clear(tokio_serial::ClearBuffer::All);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_must_hold_exactly_what_was_asked() {
        use tokio_modbus::Response as R;
        let words = |n| vec![7u16; n];
        assert!(
            matches!(fits(Table::Input, 3, R::ReadInputRegisters(words(3))), Ok(Data::Words(w)) if w.len() == 3)
        );
        assert!(
            fits(Table::Input, 3, R::ReadInputRegisters(words(4))).is_err(),
            "one more"
        );
        assert!(
            fits(Table::Input, 3, R::ReadInputRegisters(words(2))).is_err(),
            "one fewer"
        );
        assert!(
            fits(Table::Holding, 3, R::ReadInputRegisters(words(3))).is_err(),
            "another table"
        );
        // 10 coils come as 2 bytes: 16 bits.
        assert!(matches!(
            fits(Table::Coil, 10, R::ReadCoils(vec![true; 16])),
            Ok(Data::Bits(_))
        ));
        assert!(fits(Table::Coil, 10, R::ReadCoils(vec![true; 24])).is_err());
        assert!(fits(Table::Coil, 10, R::ReadCoils(vec![true; 8])).is_err());
        assert!(fits(Table::Discrete, 8, R::ReadDiscreteInputs(vec![false; 8])).is_ok());
    }

    #[test]
    fn late_polls_do_not_burst() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_due(t0, s, t0 + Duration::from_millis(10)), t0 + s);
        assert_eq!(
            next_due(t0, s, t0 + Duration::from_secs(5)),
            t0 + Duration::from_secs(6)
        );
    }
}
