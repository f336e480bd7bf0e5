//! `pithead simulate`: the demo station's Modbus devices, served over TCP
//! (and optionally RTU on a serial port or pseudo-terminal), with drifting
//! values, scenarios and injected faults; and a line-based control port that
//! lets tests set registers and faults at a known time.
//!
//! The protocol is tokio-modbus's server. Faults that a well-formed server
//! cannot produce (garbage bytes, a wrong transaction id) are injected by a
//! wrapper around the TCP stream that rewrites the outgoing frame.

pub mod control;
pub mod model;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use crate::config::Table;
use model::{Fault, Noise, Scenario, Unit};

/// The simulated station, shared by the Modbus server, the drift and the
/// control port.
#[derive(Debug)]
pub struct Sim {
    units: Mutex<BTreeMap<u8, Unit>>,
    scenario: Mutex<(Scenario, Instant)>,
    /// A station-like drift of the bulk units (`--drift-share`), and when
    /// it last stepped.
    bulk_drift: Mutex<Option<(model::BulkDrift, Instant)>>,
}

impl Sim {
    /// The demo station's three units, running `scenario` from now.
    pub fn new(scenario: Scenario) -> Arc<Sim> {
        Self::with_bulk(scenario, 0, 0)
    }

    /// The demo station plus `units` extra units (ids from
    /// [`model::BULK_FIRST`]) of `registers` holding registers each, for
    /// load tests.
    pub fn with_bulk(scenario: Scenario, units: u8, registers: u16) -> Arc<Sim> {
        Self::with_bulk_drift(scenario, units, registers, 1000, None)
    }

    /// As [`Sim::with_bulk`], the bulk registers starting at `value`; with
    /// `share`, every second that share of them moves by one count around
    /// `value`, with a rare excursion (see [`model::BulkDrift`]) — a
    /// station's sensor noise — instead of the default drift.
    pub fn with_bulk_drift(
        scenario: Scenario,
        units: u8,
        registers: u16,
        value: u16,
        share: Option<f64>,
    ) -> Arc<Sim> {
        let mut map: BTreeMap<u8, Unit> = [model::FACE, model::RETURN, model::SUMP]
            .into_iter()
            .map(|u| (u, Unit::default()))
            .collect();
        for u in 0..units {
            let mut unit = Unit::default();
            unit.set_words(
                Table::Holding,
                0,
                &vec![value; usize::from(registers)],
                false,
            );
            map.insert(model::BULK_FIRST.saturating_add(u), unit);
        }
        let sim = Arc::new(Sim {
            units: Mutex::new(map),
            scenario: Mutex::new((scenario, Instant::now())),
            bulk_drift: Mutex::new(share.map(|share| {
                (
                    model::BulkDrift {
                        share: share.clamp(0.0, 1.0),
                        center: value,
                    },
                    Instant::now(),
                )
            })),
        });
        sim.step(&mut Noise::new(1));
        sim
    }

    fn units(&self) -> std::sync::MutexGuard<'_, BTreeMap<u8, Unit>> {
        self.units
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Switches scenario and restarts its clock.
    pub fn set_scenario(&self, s: Scenario) {
        if let Ok(mut g) = self.scenario.lock() {
            *g = (s, Instant::now());
        }
    }

    /// Runs `f` on a unit, if it exists.
    pub fn with_unit<T>(&self, unit: u8, f: impl FnOnce(&mut Unit) -> T) -> Option<T> {
        self.units().get_mut(&unit).map(f)
    }

    fn effective_fault(&self, unit: u8) -> Fault {
        let (scenario, since) = self
            .scenario
            .lock()
            .map(|g| *g)
            .unwrap_or((Scenario::Normal, Instant::now()));
        let explicit = self.units().get(&unit).and_then(|u| u.fault);
        explicit.unwrap_or_else(|| {
            model::scenario_faults(scenario, since.elapsed().as_secs_f64())
                .into_iter()
                .find(|(u, _)| *u == unit)
                .map_or(Fault::None, |(_, f)| f)
        })
    }

    /// Advances the drift by one step.
    fn step(&self, noise: &mut Noise) {
        let (scenario, since) = self
            .scenario
            .lock()
            .map(|g| *g)
            .unwrap_or((Scenario::Normal, Instant::now()));
        let air = model::air(scenario, since.elapsed().as_secs_f64(), noise);
        let mut units = self.units();
        model::write_air(&mut units, &air);
        let mut station = self
            .bulk_drift
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match station.as_mut() {
            Some((d, last)) => {
                if last.elapsed() >= Duration::from_secs(1) {
                    *last = Instant::now();
                    model::drift_bulk_share(&mut units, d, noise);
                }
            }
            None => model::drift_bulk(&mut units, noise),
        }
    }

    /// Answers one request as the device would, or `None` for no answer.
    fn answer(&self, req: &SlaveRequest<'_>) -> Result<Option<Response>, ExceptionCode> {
        let mut units = self.units();
        let Some(unit) = units.get_mut(&req.slave) else {
            // Nobody on the line has that address: no answer at all.
            return Ok(None);
        };
        unit.requests += 1;
        let illegal = ExceptionCode::IllegalDataAddress;
        let r = match &req.request {
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(unit.read_words(Table::Input, *a, *n).ok_or(illegal)?)
            }
            Request::ReadHoldingRegisters(a, n) => Response::ReadHoldingRegisters(
                unit.read_words(Table::Holding, *a, *n).ok_or(illegal)?,
            ),
            Request::ReadCoils(a, n) => {
                Response::ReadCoils(unit.read_bits(Table::Coil, *a, *n).ok_or(illegal)?)
            }
            Request::ReadDiscreteInputs(a, n) => Response::ReadDiscreteInputs(
                unit.read_bits(Table::Discrete, *a, *n).ok_or(illegal)?,
            ),
            Request::WriteSingleRegister(a, v) => {
                unit.set_words(Table::Holding, *a, &[*v], true);
                Response::WriteSingleRegister(*a, *v)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        Ok(Some(r))
    }
}

/// The Modbus service over a [`Sim`].
#[derive(Debug, Clone)]
pub struct SimService(Arc<Sim>);

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let sim = Arc::clone(&self.0);
        Box::pin(async move {
            match sim.effective_fault(req.slave) {
                Fault::Silent => return Ok(None),
                Fault::Exception => {
                    sim.with_unit(req.slave, |u| u.requests += 1);
                    return Err(ExceptionCode::ServerDeviceFailure);
                }
                Fault::Slow(d) => tokio::time::sleep(d).await,
                _ => {}
            }
            sim.answer(&req)
        })
    }
}

/// A TCP stream whose outgoing frames are corrupted for units that are set
/// to answer with garbage or a wrong transaction id.
#[derive(Debug)]
struct FaultyStream {
    inner: TcpStream,
    sim: Arc<Sim>,
    noise: Noise,
}

impl AsyncRead for FaultyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A whole MBAP frame: transaction id (2), protocol (2), length (2), unit (1), PDU.
        let fault = if buf.len() >= 8 {
            self.sim.effective_fault(buf[6])
        } else {
            Fault::None
        };
        let out: Vec<u8> = match fault {
            Fault::Garbage => {
                let mut g: Vec<u8> = buf
                    .iter()
                    .map(|_| (self.noise.sample() * 127.0 + 128.0) as u8)
                    .collect();
                // A whole frame's worth of noise: its length field agrees with
                // what is sent, so the client reads it all at once, and its
                // protocol id is not Modbus's 0.
                let len = u16::try_from(g.len() - 6).unwrap_or(u16::MAX);
                g[2..4].copy_from_slice(&[0xff, 0xff]);
                g[4..6].copy_from_slice(&len.to_be_bytes());
                g
            }
            Fault::WrongTid => {
                let mut w = buf.to_vec();
                let tid = u16::from_be_bytes([w[0], w[1]]).wrapping_add(0x1111);
                w[..2].copy_from_slice(&tid.to_be_bytes());
                w
            }
            _ => return Pin::new(&mut self.inner).poll_write(cx, buf),
        };
        Pin::new(&mut self.inner).poll_write(cx, &out)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves the simulated station over Modbus TCP on `listener` until
/// `shutdown`, with values drifting every 200 ms.
pub async fn serve_tcp(
    sim: Arc<Sim>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let drift = tokio::spawn(drift(Arc::clone(&sim), shutdown.clone()));
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let service = SimService(Arc::clone(&sim));
    let on_connected = |stream: TcpStream, _addr: SocketAddr| {
        let service = service.clone();
        let sim = Arc::clone(&sim);
        async move {
            let _ = stream.set_nodelay(true);
            Ok(Some((
                service,
                FaultyStream {
                    inner: stream,
                    sim,
                    noise: Noise::new(99),
                },
            )))
        }
    };
    let on_error = |e: io::Error| tracing::debug!(error = %e, "simulator connection ended");
    let r = tokio::select! {
        r = server.serve(&on_connected, on_error) => r,
        _ = shutdown.cancelled() => Ok(()),
    };
    drift.abort();
    r
}

/// Serves the simulated station over Modbus RTU on a serial device (for
/// tests, one end of a pseudo-terminal pair).
pub async fn serve_rtu(
    sim: Arc<Sim>,
    path: &str,
    baud: u32,
    shutdown: CancellationToken,
) -> io::Result<()> {
    use tokio_serial::SerialPortBuilderExt as _;
    let port = tokio_serial::new(path, baud)
        .open_native_async()
        .map_err(io::Error::other)?;
    let server = tokio_modbus::server::rtu::Server::new(port);
    tokio::select! {
        r = server.serve_forever(SimService(sim)) => r,
        _ = shutdown.cancelled() => Ok(()),
    }
}

async fn drift(sim: Arc<Sim>, shutdown: CancellationToken) {
    let mut noise = Noise::new(0x5eed);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => sim.step(&mut noise),
        }
    }
}
