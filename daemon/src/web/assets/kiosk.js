"use strict";
// The kiosk: air status (live over server-sent events), check-in and
// check-out, hazard reports and ticket lookup. Every text from the server
// goes into the page through textContent: nothing is parsed as HTML.

// This page's words, one per line; the words both pages use are in
// common.js (Common.T).
const T = {
  "zh-CN": {
    notices: "通知",
    air: "井下环境",
    checkin: "下井 / 升井登记",
    go_down: "下井",
    come_up: "升井",
    badge_prompt: "请刷卡，或输入卡号后按确认",
    confirm: "确认",
    report: "隐患随手拍",
    category: "类别",
    location: "地点",
    grade: "等级",
    general: "一般隐患",
    major: "重大隐患",
    description: "描述",
    photo: "照片（可选）",
    anonymous: "匿名举报",
    your_badge: "卡号（匿名可不填）",
    submit_report: "提交",
    lookup: "查询隐患处理进度",
    look_up: "查询",
    cat_gas: "瓦斯",
    cat_water: "水害",
    cat_roof: "顶板",
    cat_ventilation: "通风",
    cat_electrical: "机电",
    cat_machinery: "设备",
    cat_fire: "火灾",
    cat_transport: "运输",
    cat_other: "其他",
    your_ticket: "您的隐患编号",
    reported: "已上报",
    acknowledged: "已受理",
    assigned: "整改中",
    rectified: "已整改",
    closed: "已销号",
    rejected: "已驳回",
    overdue: "已超期",
    sending: "正在提交…",
    network: "网络错误，请重试",
    storage_full: "存储空间已满：下井/升井登记和隐患报告暂时无法保存，请向群监员报告。气体报警不受影响。",
  },
  en: {
    notices: "Notices",
    air: "Air below",
    checkin: "Check in / out",
    go_down: "Going down",
    come_up: "Coming up",
    badge_prompt: "Swipe your badge, or type it and press Confirm",
    confirm: "Confirm",
    report: "Report a hazard",
    category: "Category",
    location: "Location",
    grade: "Grade",
    general: "General",
    major: "Major",
    description: "Description",
    photo: "Photo (optional)",
    anonymous: "Anonymous",
    your_badge: "Badge (optional if anonymous)",
    submit_report: "Submit",
    lookup: "Follow a report",
    look_up: "Look up",
    cat_gas: "Gas",
    cat_water: "Water",
    cat_roof: "Roof/rib",
    cat_ventilation: "Ventilation",
    cat_electrical: "Electrical",
    cat_machinery: "Machinery",
    cat_fire: "Fire",
    cat_transport: "Transport",
    cat_other: "Other",
    your_ticket: "Your ticket",
    reported: "Reported",
    acknowledged: "Acknowledged",
    assigned: "Being fixed",
    rectified: "Fixed",
    closed: "Closed",
    rejected: "Rejected",
    overdue: "Overdue",
    sending: "Sending…",
    network: "Network error, try again",
    storage_full: "Storage is full: check-ins and hazard reports cannot be saved for now. Tell the station supervisor. Gas alarms are not affected.",
  },
};


let lang = document.documentElement.dataset.lang === "en" ? "en" : "zh-CN";
let mode = "in";
let lastState = null;
// Whether the live link to the daemon is lost: then no tile shows a number.
let linkLost = false;
const $ = (id) => document.getElementById(id);
const t = (k) => T[lang][k] ?? Common.T[lang][k] ?? k;

function applyLang() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-t]").forEach((el) => { el.textContent = t(el.dataset.t); });
  $("lang").textContent = t("switch");
  if (lastState) render(lastState);
}

function msg(el, text, ok) {
  el.textContent = text;
  el.className = "result " + (ok ? "ok" : "err");
}

function render(s) {
  lastState = s;
  $("station").textContent = s.station;
  const tiles = $("tiles");
  tiles.replaceChildren();
  for (const c of s.channels) {
    const tile = document.createElement("div");
    // Without the daemon, the last reading is yesterday's number: none is shown.
    tile.className = "tile " + (linkLost ? "nodata" : c.level);
    tile.dataset.channel = c.id;
    tile.dataset.state = linkLost ? "no_data" : c.state;
    const name = document.createElement("div"); name.className = "name"; name.textContent = Common.label(c, lang);
    const value = document.createElement("div"); value.className = "value";
    if (linkLost) {
      value.textContent = t("no_reading");
    } else if (c.state === "ok" && typeof c.value === "number") {
      value.textContent = formatValue(c.value);
      const unit = document.createElement("span"); unit.className = "unit"; unit.textContent = c.unit;
      value.append(unit);
    } else {
      // A reading the box does not have is shown as what it is, never a number.
      value.textContent = t(c.state);
    }
    const loc = document.createElement("div"); loc.className = "loc"; loc.textContent = c.location;
    // The id, small, for the technicians.
    const id = document.createElement("div"); id.className = "id"; id.textContent = c.id;
    tile.append(name, value, loc, id);
    tiles.append(tile);
  }
  $("beacon").className = "beacon " + (linkLost ? "unknown" : s.beacon);
  $("beacon").title = linkLost ? t("link_lost") : s.beacon;
  $("link-lost").hidden = !linkLost;
  $("link-lost").textContent = linkLost ? t("link_lost") : "";
  $("storage").hidden = linkLost || !s.storage_full;
  $("storage").textContent = s.storage_full ? t("storage_full") : "";
}

function lost() {
  linkLost = true;
  if (lastState) render(lastState);
  else {
    $("beacon").className = "beacon unknown";
    $("link-lost").hidden = false;
    $("link-lost").textContent = t("link_lost");
  }
}

const formatValue = Common.formatValue;

function connect() {
  Live.start("/api/v1/stream", {
    onState: render,
    onLost: lost,
    onLive: () => { linkLost = false; if (lastState) render(lastState); },
  });
}

// A kiosk on the LAN is set up once by opening the page as
// https://station/#kiosk=KEY (a key from kiosk.keys_file): the key stays in
// this browser, leaves the address bar at once, and goes with every change
// as X-Kiosk-Key. The fragment never reaches a server or a Referer.
let kioskKey = "";
function adoptKey() {
  const m = /(?:^#|&)kiosk=([^&]+)/.exec(location.hash);
  try {
    if (m) {
      localStorage.setItem("pithead.kiosk_key", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    kioskKey = localStorage.getItem("pithead.kiosk_key") || "";
  } catch (_) {
    if (m) kioskKey = decodeURIComponent(m[1]);
  }
}
adoptKey();
window.addEventListener("hashchange", adoptKey);

function keyed(headers) {
  if (kioskKey) headers["X-Kiosk-Key"] = kioskKey;
  return headers;
}

async function post(url, body) {
  const r = await fetch(url, { method: "POST", headers: keyed({ "Content-Type": "application/json", "Accept-Language": lang }), body: JSON.stringify(body) });
  let data = {};
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  return { status: r.status, data };
}

function message(data) {
  return (lang === "en" ? data.message_en : data.message_zh) || "";
}

function setMode(m) {
  mode = m;
  $("mode-in").classList.toggle("active", m === "in");
  $("mode-out").classList.toggle("active", m === "out");
  $("badge").focus();
}

let clearTimer = null;
async function checkin(ev) {
  ev.preventDefault();
  const badge = $("badge").value.trim();
  if (!badge) return;
  const out = $("checkin-result");
  msg(out, t("sending"), true);
  try {
    const { status, data } = await post("/api/v1/checkins", { badge, direction: mode });
    msg(out, message(data), status === 201);
  } catch (_) {
    msg(out, t("network"), false);
  }
  $("badge").value = "";
  $("badge").focus();
  clearTimeout(clearTimer);
  clearTimer = setTimeout(() => { out.textContent = ""; }, 8000);
}

async function report(ev) {
  ev.preventDefault();
  const out = $("report-result");
  const anonymous = $("anonymous").checked;
  const body = {
    category: $("category").value,
    location: $("location").value,
    grade: document.querySelector("input[name=grade]:checked").value,
    description: $("description").value,
    anonymous,
  };
  const badge = $("report-badge").value.trim();
  if (!anonymous && badge) body.badge = badge;
  msg(out, t("sending"), true);
  try {
    let status, data = {};
    const file = $("photo").files[0];
    if (file) {
      // Multipart: the report as JSON, and the photo; the browser sets
      // the boundary.
      const form = new FormData();
      form.append("report", JSON.stringify(body));
      form.append("photo", file);
      const r = await fetch("/api/v1/hazards", { method: "POST", headers: keyed({}), body: form });
      status = r.status;
      try { data = await r.json(); } catch (_) { /* not JSON */ }
    } else {
      ({ status, data } = await post("/api/v1/hazards", body));
    }
    if (status === 201) {
      out.replaceChildren();
      out.className = "result ok";
      const label = document.createElement("div"); label.textContent = t("your_ticket");
      const ticket = document.createElement("div"); ticket.className = "ticket"; ticket.id = "new-ticket"; ticket.textContent = data.ticket;
      out.append(label, ticket);
      if (data.photo_refused) {
        const note = document.createElement("div"); note.className = "muted"; note.id = "photo-refused";
        note.textContent = message(data.photo_refused);
        out.append(note);
      }
      $("report-form").reset();
    } else {
      msg(out, message(data), false);
    }
  } catch (_) {
    msg(out, t("network"), false);
  }
}

async function lookup(ev) {
  ev.preventDefault();
  const out = $("lookup-result");
  const ticket = $("ticket").value.trim();
  if (!ticket) return;
  try {
    const r = await fetch("/api/v1/hazards/" + encodeURIComponent(ticket));
    const data = await r.json();
    out.replaceChildren();
    if (r.status !== 200) { msg(out, message(data), false); return; }
    out.className = "result ok";
    const head = document.createElement("div");
    head.textContent = data.ticket + " · " + t(data.status) + (data.overdue ? " · " + t("overdue") : "");
    const desc = document.createElement("div"); desc.className = "muted"; desc.textContent = t("cat_" + data.category) + " · " + data.location;
    const steps = document.createElement("ol"); steps.className = "steps";
    for (const s of data.steps) {
      const li = document.createElement("li");
      li.textContent = s.at.replace("T", " ").slice(0, 16) + " " + t(s.status) + (s.note ? " — " + s.note : "");
      steps.append(li);
    }
    out.append(head, desc);
    if (data.photo) {
      const img = document.createElement("img");
      img.id = "lookup-photo";
      img.alt = "";
      img.style.maxWidth = "100%";
      img.src = "/api/v1/hazards/" + encodeURIComponent(data.ticket) + "/photo";
      out.append(img);
    }
    out.append(steps);
  } catch (_) {
    msg(out, t("network"), false);
  }
}

async function notices() {
  try {
    const r = await fetch("/api/v1/notices");
    const list = await r.json();
    const ul = $("notice-list");
    ul.replaceChildren();
    for (const n of Array.isArray(list) ? list : []) {
      const li = document.createElement("li");
      li.className = n.priority;
      const title = document.createElement("span"); title.className = "title"; title.textContent = n.title;
      const body = document.createElement("span"); body.textContent = n.body;
      li.append(title, body);
      ul.append(li);
    }
    $("notices").hidden = ul.children.length === 0;
  } catch (_) { /* keep what is shown */ }
}

document.addEventListener("DOMContentLoaded", () => {
  $("lang").addEventListener("click", () => { lang = lang === "en" ? "zh-CN" : "en"; applyLang(); });
  $("mode-in").addEventListener("click", () => setMode("in"));
  $("mode-out").addEventListener("click", () => setMode("out"));
  $("checkin-form").addEventListener("submit", checkin);
  $("report-form").addEventListener("submit", report);
  $("lookup-form").addEventListener("submit", lookup);
  $("anonymous").addEventListener("change", (e) => { $("report-badge").disabled = e.target.checked; });
  $("report-form").addEventListener("reset", () => { $("report-badge").disabled = false; });
  applyLang();
  connect();
  notices();
  setInterval(notices, 30000);
});
