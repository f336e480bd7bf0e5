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
    },
    en: {
      comm_fault: "COMM FAULT",
      out_of_range: "SENSOR FAULT",
      stale: "STALE",
      warming_up: "WARMING UP",
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
  return { T, label, formatValue };
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
