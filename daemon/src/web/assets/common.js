"use strict";
// Shared by the kiosk and the console: the words both use (`Common.T`,
// one per line), and the live link to the daemon (`Live`).

const Common = (() => {
  const T = {
    "zh-CN": {
      comm_fault: "断线",
      out_of_range: "故障/超量程",
      stale: "数据过期",
      warming_up: "预热中",
      calibrating: "标校中",
      link_lost: "与主机连接中断 — 读数不可用",
      no_reading: "无读数",
      deadline: "期限",
      owner: "负责人",
      switch: "English",
      kind_ch4: "甲烷",
      kind_co: "一氧化碳",
      kind_o2: "氧气",
      kind_co2: "二氧化碳",
      kind_h2s: "硫化氢",
      kind_no2: "二氧化氮",
      kind_so2: "二氧化硫",
      kind_nh3: "氨气",
      kind_water_level: "水位",
      kind_temperature: "温度",
      kind_flow: "涌水量",
      kind_generic: "测点",
      st_ok: "正常",
      st_warning: "预警",
      st_alarm: "报警",
      st_power_cut: "断电",
      st_comm_fault: "断线",
      st_fault: "故障",
      st_warming_up: "预热",
      st_calibrating: "标校",
      st_no_data: "无读数",
    },
    en: {
      comm_fault: "COMM FAULT",
      out_of_range: "SENSOR FAULT",
      stale: "STALE",
      warming_up: "WARMING UP",
      calibrating: "CALIBRATING",
      link_lost: "Connection lost — readings unavailable",
      no_reading: "no reading",
      deadline: "Deadline",
      owner: "Owner",
      switch: "中文",
      kind_ch4: "Methane",
      kind_co: "Carbon monoxide",
      kind_o2: "Oxygen",
      kind_co2: "Carbon dioxide",
      kind_h2s: "Hydrogen sulphide",
      kind_no2: "Nitrogen dioxide",
      kind_so2: "Sulphur dioxide",
      kind_nh3: "Ammonia",
      kind_water_level: "Water level",
      kind_temperature: "Temperature",
      kind_flow: "Water inflow",
      kind_generic: "Sensor",
      st_ok: "Normal",
      st_warning: "Warning",
      st_alarm: "Alarm",
      st_power_cut: "Power cut",
      st_comm_fault: "No signal",
      st_fault: "Fault",
      st_warming_up: "Warming up",
      st_calibrating: "Calibrating",
      st_no_data: "No reading",
    },
  };
  // What a miner reads for a channel: its configured name, else the
  // kind's name in the page's language (never the id or a raw kind).
  const label = (c, lang) => c.name || (T[lang] && T[lang]["kind_" + c.kind]) || T[lang].kind_generic;
  // A value at the resolution a person reads (no float noise).
  const formatValue = (v) => {
    const a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
  };

  // A shape per state, so that colour never carries a state alone: a
  // ring with a tick (normal), a triangle (warning), an octagon (alarm),
  // a lightning bolt (power cut), a cross (no signal), a square with a bar
  // (fault), an hourglass (warming up), cross-hairs (calibrating), a
  // hollow circle with a slash (no reading).
  const SHAPES = {
    ok: [["circle", { cx: 12, cy: 12, r: 9.5, fill: "none", "stroke-width": 2.6 }], ["path", { d: "M7 12.5l3.2 3.2L17 9", fill: "none", "stroke-width": 2.8 }]],
    warning: [["polygon", { points: "12,2 23,21.5 1,21.5" }], ["path", { d: "M12 9v6M12 17.5v1.5", fill: "none", class: "mark", "stroke-width": 2.4 }]],
    alarm: [["polygon", { points: "8,1.5 16,1.5 22.5,8 22.5,16 16,22.5 8,22.5 1.5,16 1.5,8" }], ["path", { d: "M12 6v8M12 16.5v2", fill: "none", class: "mark", "stroke-width": 2.6 }]],
    power_cut: [["polygon", { points: "14,1 3,14 11,14 9,23 21,9.5 13,9.5" }]],
    comm_fault: [["path", { d: "M4 4L20 20M20 4L4 20", fill: "none", "stroke-width": 3.4 }]],
    fault: [["rect", { x: 2.5, y: 2.5, width: 19, height: 19 }], ["path", { d: "M6.5 12h11", fill: "none", class: "mark", "stroke-width": 2.6 }]],
    warming_up: [["polygon", { points: "5,2 19,2 12,12 19,22 5,22 12,12" }]],
    calibrating: [["circle", { cx: 12, cy: 12, r: 8, fill: "none", "stroke-width": 2.4 }], ["path", { d: "M12 1v7M12 16v7M1 12h7M16 12h7", fill: "none", "stroke-width": 2.4 }]],
    no_data: [["circle", { cx: 12, cy: 12, r: 9.5, fill: "none", "stroke-width": 2.4 }], ["path", { d: "M5 19L19 5", fill: "none", "stroke-width": 2.4 }]],
    notice: [["rect", { x: 2, y: 4, width: 20, height: 16, rx: 2 }], ["path", { d: "M6 9h12M6 13h8", fill: "none", class: "mark", "stroke-width": 2 }]],
  };
  const NS = "http://www.w3.org/2000/svg";
  const icon = (state) => {
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", "icon");
    svg.setAttribute("aria-hidden", "true");
    svg.dataset.icon = SHAPES[state] ? state : "fault";
    for (const [tag, attrs] of SHAPES[svg.dataset.icon]) {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      svg.append(e);
    }
    return svg;
  };

  // Times in the station's time zone (the daemon says which; until then,
  // or if the browser does not know it, the browser's own).
  let zone;
  const formats = {};
  const format = (seconds) => {
    const key = (zone || "") + seconds;
    if (!formats[key]) {
      const opts = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
      if (seconds) opts.second = "2-digit";
      try {
        formats[key] = new Intl.DateTimeFormat("sv-SE", zone ? { ...opts, timeZone: zone } : opts);
      } catch (_) {
        formats[key] = new Intl.DateTimeFormat("sv-SE", opts);
      }
    }
    return formats[key];
  };
  const setZone = (z) => { zone = typeof z === "string" && z ? z : undefined; };
  // "2026-12-02 15:42:07" for an RFC 3339 time, in the station's zone.
  const time = (iso, seconds = true) => {
    if (!iso) return "";
    const d = iso instanceof Date ? iso : new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return format(seconds).format(d);
  };
  // "15:42", in the station's zone.
  const clock = (iso) => time(iso, false).slice(11, 16);

  // Short tones made by Web Audio (no sound files): `ok` two rising
  // beeps, `refused` a low double buzz, `alarm` the console's two-tone
  // call. Each tone played is listed in `tones` (kind, time, the audio
  // state), so a test can tell that the page sounded it.
  let audio = null;
  const tones = [];
  const PATTERNS = {
    ok: [[660, 0, 0.12, "sine"], [990, 0.15, 0.18, "sine"]],
    refused: [[220, 0, 0.28, "square"], [196, 0.36, 0.36, "square"]],
    alarm: [[880, 0, 0.3, "triangle"], [660, 0.34, 0.3, "triangle"], [880, 0.68, 0.3, "triangle"]],
  };
  const tone = (kind) => {
    const pattern = PATTERNS[kind];
    if (!pattern) return;
    try {
      audio = audio || new AudioContext();
      if (audio.state === "suspended") audio.resume();
      const t0 = audio.currentTime + 0.02;
      for (const [freq, at, len, type] of pattern) {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.type = type;
        osc.frequency.value = freq;
        gain.gain.setValueAtTime(0.0001, t0 + at);
        gain.gain.exponentialRampToValueAtTime(0.4, t0 + at + 0.01);
        gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + len);
        osc.connect(gain).connect(audio.destination);
        osc.start(t0 + at);
        osc.stop(t0 + at + len + 0.02);
      }
      tones.push({ kind, at: Date.now(), state: audio.state });
    } catch (e) {
      tones.push({ kind, at: Date.now(), state: "unavailable: " + e });
    }
    if (tones.length > 100) tones.shift();
  };

  const zoneName = () => zone || "";
  return { T, label, formatValue, icon, setZone, zoneName, time, clock, tone, tones };
})();

// Shared by the kiosk and the console: the live link to the daemon.
//
// A page that has heard nothing from the daemon for LOST_AFTER ms (the
// daemon sends a `beat` every second) has lost it — the daemon is frozen
// or dead, or the network is gone — and must show no readings: the page's
// onLost does that. The link comes back by itself, with a growing pause
// between attempts, also after an error answer (a 503 closes an
// EventSource for good) and from a stream that is open but silent (a
// frozen daemon still accepts connections).

const Live = (() => {
  const LOST_AFTER = 3000;
  const FIRST_WAIT = 500;
  const MAX_WAIT = 8000;

  function start(url, { onState, onLost, onLive }) {
    let es = null;
    let opened = 0;
    let last = Date.now(); // the page load: a first answer gets 3 s too
    let alive = false;
    let lostShown = false;
    let wait = FIRST_WAIT;
    let retryAt = 0;

    const heard = () => {
      last = Date.now();
      wait = FIRST_WAIT;
      if (!alive) {
        alive = true;
        lostShown = false;
        if (onLive) onLive();
      }
    };
    const later = () => {
      retryAt = Date.now() + wait;
      wait = Math.min(wait * 2, MAX_WAIT);
    };
    const connect = () => {
      const src = new EventSource(url);
      es = src;
      opened = Date.now();
      src.addEventListener("state", (e) => {
        let s;
        try { s = JSON.parse(e.data); } catch (_) { return; }
        heard();
        onState(s);
      });
      src.addEventListener("beat", heard);
      src.onerror = () => {
        // CONNECTING: the browser tries again by itself; CLOSED (an error
        // answer): it never will, so we do.
        if (es === src && src.readyState === EventSource.CLOSED) {
          es = null;
          later();
        }
      };
    };
    setInterval(() => {
      const now = Date.now();
      if (now - last > LOST_AFTER) {
        if (alive || !lostShown) {
          alive = false;
          lostShown = true;
          onLost();
        }
        // Open but silent for as long: drop it and try again.
        if (es && now - opened > LOST_AFTER) {
          es.close();
          es = null;
          later();
        }
      }
      if (!es && now >= retryAt) connect();
    }, 250);
    connect();
    return { alive: () => alive };
  }

  return { start };
})();
