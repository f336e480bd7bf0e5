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
    tab_home: "登记",
    tab_report: "隐患上报",
    tab_lookup: "进度查询",
    no_notices: "暂无通知",
    tap_to_return: "点击任意处返回",
    in_ok: "下井登记成功",
    out_ok: "升井登记成功",
    unknown_badge: "卡号未登记",
    already_in: "已在井下",
    not_in: "无下井记录",
    refused: "未能登记",
    went_down: "下井",
    came_up: "升井",
    down_since: "下井时间",
    more_alarms: "另有 {n} 个测点报警",
    county_notice: "通知",
    light_word: "本站预评",
    light_green: "绿灯",
    light_yellow: "黄灯",
    light_red: "红灯",
    must_read: "下井前请阅读县工会紧急通知，读完请点“已阅”",
    read_ok: "已阅",
    read_failed: "未能记录，请再点一次“已阅”",
    tab_board: "隐患公示",
    board: "隐患公示（未销号隐患）",
    ticket: "编号",
    state: "状态",
    deadline: "整改期限",
    no_board: "目前没有未销号的隐患",
    board_overdue: "{n} 项隐患已过整改期限仍未整改，已报县工会。",
    board_lost: "无法读取隐患公示",
    crowded_all: "井下已超员：{n} 人（核定 {max} 人）。登记照常，值班人员已收到报警。",
    crowded_team: "{team} 超员：{n} 人（限 {max} 人）。登记照常，值班人员已收到报警。",
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
    tab_home: "Check in",
    tab_report: "Report",
    tab_lookup: "Follow up",
    no_notices: "No notices",
    tap_to_return: "Tap anywhere to go back",
    in_ok: "Checked in",
    out_ok: "Checked out",
    unknown_badge: "Badge not on the roster",
    already_in: "Already underground",
    not_in: "No check-in found",
    refused: "Not recorded",
    went_down: "Down",
    came_up: "Up",
    down_since: "Down since",
    more_alarms: "{n} more channels in alarm",
    county_notice: "Notice",
    light_word: "Self-assessment",
    light_green: "green",
    light_yellow: "yellow",
    light_red: "red",
    must_read: "Before going down, read this urgent notice from the county union, then tap Read",
    read_ok: "Read",
    read_failed: "Not recorded; tap Read again",
    tab_board: "Hazard board",
    board: "Hazard board (open hazards)",
    ticket: "Ticket",
    state: "Status",
    deadline: "Deadline",
    no_board: "No open hazards",
    board_overdue: "{n} hazards are past their rectification deadline; the county union is told.",
    board_lost: "The board cannot be read",
    crowded_all: "Too many underground: {n} (limit {max}). Check-ins go on; the supervisor has the alarm.",
    crowded_team: "Team {team} over its limit: {n} (limit {max}). Check-ins go on; the supervisor has the alarm.",
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
  else renderAlert(null);
}

function msg(el, text, ok) {
  el.textContent = text;
  el.className = "result " + (ok ? "ok" : "err");
}

// The screen shown: `home` (air and check-in), `report`, `lookup` or
// `notices`. Away from home for long without a touch, the kiosk goes back.
let screen = "home";
const IDLE_BACK = 90000;
let idleTimer = null;
function show(name) {
  screen = name;
  document.querySelectorAll(".screen").forEach((e) => { e.hidden = e.id !== "screen-" + name; });
  document.querySelectorAll(".rail [data-screen]").forEach((b) => b.classList.toggle("active", b.dataset.screen === name));
  clearTimeout(idleTimer);
  if (name === "home") $("badge").focus();
  if (name === "lookup") loadBoard();
  else idleTimer = setTimeout(() => show("home"), IDLE_BACK);
}

// Touch targets of 15 mm on this screen: its width in pixels over its
// width in millimetres (from the page; 154 mm for the 7-inch Pi display).
function sizeTargets() {
  const mm = Number(document.body.dataset.screenMm) || 154;
  const px = Math.max(48, Math.ceil((window.innerWidth / mm) * 15));
  document.documentElement.style.setProperty("--touch", px + "px");
}

function statusLine(state) {
  const line = document.createElement("div");
  line.className = "status";
  const word = document.createElement("span");
  word.textContent = t("st_" + state);
  line.append(Common.icon(state), word);
  return line;
}

function valueOf(c) {
  if (c.state === "ok" && typeof c.value === "number") return formatValue(c.value) + " " + c.unit;
  return t(c.state);
}

let notices = [];
function renderAlert(s) {
  const box = $("alert");
  const icon = $("alert-icon");
  if (linkLost || !s) { box.hidden = true; return; }
  const b = s.banner;
  const c = b && s.channels.find((x) => x.id === b.channel);
  if (b && c) {
    box.className = "alert " + b.level;
    box.dataset.level = b.level;
    icon.replaceChildren(Common.icon(b.level));
    $("alert-title").textContent = [t("st_" + b.level), Common.label(c, lang), c.location, valueOf(c)].filter(Boolean).join(" · ");
    $("alert-more").textContent = b.more ? t("more_alarms").replace("{n}", b.more) : "";
    $("alert-advice").textContent = lang === "en" ? b.advice.en : b.advice.zh;
    box.hidden = false;
    return;
  }
  // No alarm: an urgent county notice takes the place.
  const urgent = notices.find((n) => n.priority === "urgent");
  if (urgent) {
    box.className = "alert notice";
    box.dataset.level = "notice";
    icon.replaceChildren(Common.icon("notice"));
    $("alert-title").textContent = t("county_notice") + " · " + urgent.title;
    $("alert-more").textContent = "";
    $("alert-advice").textContent = urgent.body;
    box.hidden = false;
    return;
  }
  box.hidden = true;
}

function render(s) {
  lastState = s;
  Common.setZone(s.timezone);
  $("clock").textContent = Common.clock(new Date());
  $("station").textContent = s.station;
  const tiles = $("tiles");
  tiles.replaceChildren();
  for (const c of s.channels) {
    const tile = document.createElement("div");
    // Without the daemon, the last reading is yesterday's number: none is shown.
    const status = linkLost ? "no_data" : c.status;
    tile.className = "tile " + (linkLost ? "nodata" : status);
    tile.dataset.channel = c.id;
    tile.dataset.state = linkLost ? "no_data" : c.state;
    tile.dataset.status = status;
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
    const place = document.createElement("div"); place.className = "place";
    const loc = document.createElement("span"); loc.className = "loc"; loc.textContent = c.location;
    // The id, small, for the technicians.
    const id = document.createElement("span"); id.className = "id"; id.textContent = c.id;
    place.append(loc, id);
    tile.append(statusLine(status), name, value, place);
    tiles.append(tile);
  }
  $("beacon").className = "beacon " + (linkLost ? "unknown" : s.beacon);
  $("beacon").title = linkLost ? t("link_lost") : s.beacon;
  $("link-lost").hidden = !linkLost;
  $("link-lost").textContent = linkLost ? t("link_lost") : "";
  // The station's own light (预评); none without the daemon.
  const light = linkLost ? null : s.light;
  $("light").hidden = !light;
  if (light) {
    $("light").className = "light " + light.light;
    $("light").dataset.light = light.light;
    $("light").textContent = t("light_word") + " " + t("light_" + light.light);
    $("light").title = light.reasons.map((r) => (lang === "en" ? r[1] : r[0])).join("；");
  }
  const crowded = linkLost ? [] : s.crowded || [];
  $("crowded").hidden = crowded.length === 0;
  $("crowded").textContent = crowded.map((c) => (c.subject === "underground" ? t("crowded_all")
    : t("crowded_team").replace("{team}", c.subject.replace(/^team:/, ""))).replace("{n}", c.count).replace("{max}", c.limit)).join(" ");
  $("storage").hidden = linkLost || !s.storage_full;
  $("storage").textContent = s.storage_full ? t("storage_full") : "";
  renderAlert(s);
}

function lost() {
  linkLost = true;
  if (lastState) render(lastState);
  else {
    $("beacon").className = "beacon unknown";
    $("link-lost").hidden = false;
    $("link-lost").textContent = t("link_lost");
    renderAlert(null);
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

// With the box's badge reader (`[kiosk] badge_reader`), the daemon reads
// the badges; this page tells it the direction and shows each answer.
const hasReader = document.body && document.body.dataset.reader === "1";
function tellDirection() {
  if (!hasReader) return;
  fetch("/api/v1/kiosk/direction", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ direction: mode }) }).catch(() => {});
}
let readerSeq = null;
async function pollReader() {
  try {
    const r = await fetch("/api/v1/reader");
    const data = await r.json();
    const last = data && data.last;
    const seq = last ? last.seq : 0;
    if (readerSeq !== null && seq !== readerSeq && last) {
      readerSeq = seq;
      const unread = Array.isArray(last.answer.to_read) ? last.answer.to_read : [];
      if (last.status === 201 && unread.length) await mustRead(unread, last.answer.record.badge);
      confirmCheckin(last.status, last.answer, last.direction);
    }
    readerSeq = seq;
    if (data && data.direction && data.direction !== mode) tellDirection();
  } catch (_) { /* the link banner says so */ }
}

function setMode(m) {
  mode = m;
  tellDirection();
  $("mode-in").classList.toggle("active", m === "in");
  $("mode-out").classList.toggle("active", m === "out");
  $("badge").focus();
}

// The answer to a check-in covers the screen: who, which way and when,
// with a tone; a refusal in red with its reason and another tone. It goes
// away by itself (or at a touch, or with the next badge) and the kiosk is
// back on its main screen, ready for the next miner.
let confirmTimer = null;
function hideConfirm() {
  clearTimeout(confirmTimer);
  $("confirm").hidden = true;
  show("home");
}
function confirmCheckin(status, data, direction) {
  const box = $("confirm");
  const r = data && data.record;
  const ok = status === 201;
  box.className = "confirm " + (ok ? "ok" : "refused");
  box.dataset.outcome = ok ? "ok" : (r && r.outcome) || "error";
  $("confirm-icon").replaceChildren(Common.icon(ok ? "ok" : "alarm"));
  let title;
  if (ok) title = t(direction === "in" ? "in_ok" : "out_ok");
  else if (r && T[lang][r.outcome]) title = t(r.outcome);
  else title = t("refused");
  $("confirm-title").textContent = title;
  $("confirm-name").textContent = (r && r.name) || (r && r.badge) || "";
  let when = "";
  if (r && r.outcome === "already_in" && r.underground_since) when = t("down_since") + " " + Common.clock(r.underground_since);
  else if (r && r.at) when = t(direction === "in" ? "went_down" : "came_up") + " · " + Common.clock(r.at);
  $("confirm-when").textContent = when;
  $("checkin-result").textContent = status ? message(data) : t("network");
  box.hidden = false;
  Common.tone(ok ? "ok" : "refused");
  clearTimeout(confirmTimer);
  confirmTimer = setTimeout(hideConfirm, ok ? 4000 : 8000);
}

// Urgent county notices the miner has not read come before the check-in's
// answer: each is shown until 已阅 is tapped and recorded. The check-in is
// recorded already; nobody is kept from going down.
function mustRead(list, badge) {
  return new Promise((done) => {
    const box = $("must-read");
    let i = 0;
    const next = () => {
      if (i >= list.length) { box.hidden = true; done(); return; }
      $("must-read-title").textContent = list[i].title;
      $("must-read-body").textContent = list[i].body;
      $("must-read-result").textContent = "";
      box.hidden = false;
      $("read-ok").focus();
    };
    $("read-ok").onclick = async () => {
      try {
        const { status } = await post("/api/v1/notices/" + encodeURIComponent(list[i].msg_id) + "/read", { badge });
        if (status === 201 || status === 200 || status === 404) { i += 1; next(); return; }
      } catch (_) { /* said below */ }
      $("must-read-result").textContent = t("read_failed");
      Common.tone("refused");
    };
    next();
  });
}

async function checkin(ev) {
  ev.preventDefault();
  const badge = $("badge").value.trim();
  if (!badge) return;
  const direction = mode;
  $("badge").value = "";
  try {
    const { status, data } = await post("/api/v1/checkins", { badge, direction });
    const unread = (data && Array.isArray(data.to_read)) ? data.to_read : [];
    if (status === 201 && unread.length) await mustRead(unread, (data.record && data.record.badge) || badge);
    confirmCheckin(status, data, direction);
  } catch (_) {
    confirmCheckin(0, null, direction);
  }
  $("badge").focus();
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
      li.textContent = Common.time(s.at, false) + " " + t(s.status) + (s.note ? " — " + s.note : "");
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

// The public board (隐患公示): open hazards, overdue first, never a name.
async function loadBoard() {
  const rows = $("board-rows");
  try {
    const r = await fetch("/api/v1/board");
    const list = r.ok ? await r.json() : null;
    if (!Array.isArray(list)) throw new Error("no board");
    rows.replaceChildren();
    for (const h of list) {
      const tr = document.createElement("tr");
      tr.className = h.overdue ? "overdue" : "";
      tr.dataset.ticket = h.ticket;
      const cells = [h.ticket, t("cat_" + h.category) + (h.grade === "major" ? " · " + t("major") : ""), h.location,
        t(h.status) + (h.overdue ? " · " + t("overdue") : ""), h.deadline ? Common.time(h.deadline, false) : "—"];
      for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
      rows.append(tr);
    }
    const late = list.filter((h) => h.overdue).length;
    $("board-overdue").hidden = late === 0;
    $("board-overdue").textContent = t("board_overdue").replace("{n}", late);
    $("no-board").hidden = list.length > 0;
    $("board-count").textContent = late ? String(late) : "";
  } catch (_) {
    // Never an old list shown as current.
    rows.replaceChildren();
    $("board-overdue").hidden = false;
    $("board-overdue").textContent = t("board_lost");
    $("no-board").hidden = true;
  }
}

async function loadNotices() {
  try {
    const r = await fetch("/api/v1/notices");
    const list = await r.json();
    notices = Array.isArray(list) ? list : [];
    const ul = $("notice-list");
    ul.replaceChildren();
    for (const n of notices) {
      const li = document.createElement("li");
      li.className = n.priority;
      const title = document.createElement("span"); title.className = "title"; title.textContent = n.title;
      const body = document.createElement("span"); body.textContent = n.body;
      li.append(title, body);
      ul.append(li);
    }
    $("no-notices").hidden = notices.length > 0;
    $("notice-count").textContent = notices.length ? String(notices.length) : "";
    renderAlert(lastState);
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
  document.querySelectorAll(".rail [data-screen]").forEach((b) => b.addEventListener("click", () => show(b.dataset.screen)));
  $("confirm").addEventListener("click", hideConfirm);
  // The next badge while the answer is shown: the answer goes, the digits
  // go into the field.
  $("badge").addEventListener("keydown", () => { if (!$("confirm").hidden) { clearTimeout(confirmTimer); $("confirm").hidden = true; } });
  // A touch away from home starts the wait for going back anew.
  document.addEventListener("pointerdown", () => { if (screen !== "home") show(screen); });
  window.addEventListener("resize", sizeTargets);
  sizeTargets();
  applyLang();
  connect();
  loadNotices();
  setInterval(loadNotices, 30000);
  loadBoard();
  setInterval(loadBoard, 60000);
  if (hasReader) { tellDirection(); pollReader(); setInterval(pollReader, 400); }
  const tick = () => { $("clock").textContent = Common.clock(new Date()); };
  tick();
  setInterval(tick, 1000);
});
