"use strict";
// The county dashboard. It logs in over /api/v1/session (an HttpOnly
// cookie), sends the CSRF token with every change, and refreshes whenever
// the database changed (server-sent `changed`, from PostgreSQL NOTIFY).
// Every server text is put in with textContent; nothing is parsed as HTML.

const T = {
  "zh-CN": {
    title: "县总工会 · 井口安全工作站总览", logout: "退出", login: "登录", user: "用户名", password: "密码", log_in: "登录",
    stations: "各站点", station: "站点", mine: "矿", presence: "连接", underground: "井下人数", overdue: "超时",
    alarms: "报警（断电）", hazards: "隐患 未销号 / 重大 / 超期", online: "在线", offline: "离线", never: "从未连接",
    since: "自", unregistered: "未登记站点", alarms_of: "报警", hazards_of: "隐患", people_of: "井下人员",
    channel: "测点", level: "级别", event: "状态", value: "值", at: "时间", ticket: "编号", status: "状态", grade: "等级",
    location: "地点", deadline: "期限", notices: "通知", notice_title: "标题", notice_body: "正文",
    urgent: "紧急（在井口屏幕顶部显示）", valid_hours: "有效期（小时）", send: "发送", sent_at: "发送时间",
    sent_by: "发送人", applied: "站点回执", read_by: "已阅（下井时）", read_n: "{n} 人", waiting: "等待回执", applied_ok: "已生效", refused: "被拒绝",
    all_stations: "全部站点", sent: "已发送", wrong: "登录失败", link_lost: "与总览服务器连接中断 — 数据可能不是最新",
    raised: "报警中", acknowledged: "已确认", returned: "已恢复待确认", escalated: "升级", recurred: "复发", cleared: "已解除",
    fault: "故障", warning: "预警", alarm: "报警", power_cut: "断电", overdue_level: "超时未升井",
    reported: "已上报", assigned: "整改中", rectified: "已整改", closed: "已销号", rejected: "已驳回",
    general: "一般", major: "重大", people_count: "井下 {n} 人，超时 {o} 人", no_headcount: "尚无人数记录",
    light: "季度亮灯（按站点数据计算）", light_green: "绿灯", light_yellow: "黄灯", light_red: "红灯",
    comment_only: "仅提意见", comment: "意见", owner: "负责人", measures: "整改措施",
    h_reported: "已上报", h_acknowledged: "已受理", h_assigned: "整改中", h_rectified: "已整改", h_closed: "已销号", h_rejected: "已驳回", h_overdue: "整改超期", overcrowded: "超员",
    switch: "English", viewer_note: "只读账户不能发送通知", role_operator: "操作员", role_viewer: "查看者",
    backlog: "上传积压", backlog_n: "{n} 条待上传", backlog_none: "无积压", backlog_unknown: "未报告",
    trends: "各测点每分钟趋势（近 {h} 小时，来自站点汇总）", no_trends: "尚无汇总数据", no_reading: "无有效读数 {n} 分钟",
    mean: "均值", range: "最小–最大", checkins_of: "最近登记", direction: "方向", dir_in: "入井", dir_out: "升井",
    name: "姓名", team: "班组", outcome: "结果", out_ok: "成功", out_unknown_badge: "未登记的卡", out_already_in: "已在井下", out_not_in: "不在井下",
    union_light: "县工会评定", computed: "按数据计算", set_light: "评定", note: "理由", saved: "已记录",
  },
  en: {
    title: "County union · shaft-head stations", logout: "Log out", login: "Log in", user: "User", password: "Password", log_in: "Log in",
    stations: "Stations", station: "Station", mine: "Mine", presence: "Link", underground: "Underground", overdue: "Overdue",
    alarms: "Alarms (power cuts)", hazards: "Hazards open / major / overdue", online: "online", offline: "offline", never: "never connected",
    since: "since", unregistered: "not registered", alarms_of: "Alarms", hazards_of: "Hazards", people_of: "Underground",
    channel: "Channel", level: "Level", event: "State", value: "Value", at: "Time", ticket: "Ticket", status: "Status", grade: "Grade",
    location: "Location", deadline: "Deadline", notices: "Notices", notice_title: "Title", notice_body: "Text",
    urgent: "Urgent (on top of the kiosk screen)", valid_hours: "Valid for (hours)", send: "Send", sent_at: "Sent",
    sent_by: "By", applied: "Station's answer", read_by: "Read at check-in", read_n: "{n} people", waiting: "waiting", applied_ok: "applied", refused: "refused",
    all_stations: "All stations", sent: "sent", wrong: "Login failed", link_lost: "Connection to the dashboard lost — data may be out of date",
    raised: "active", acknowledged: "acknowledged", returned: "returned, unacknowledged", escalated: "escalated", recurred: "recurred", cleared: "cleared",
    fault: "fault", warning: "warning", alarm: "alarm", power_cut: "power cut", overdue_level: "overdue underground", overcrowded: "over the staffing limit", h_overdue: "past its deadline",
    reported: "reported", assigned: "being fixed", rectified: "fixed", closed: "closed", rejected: "rejected",
    general: "general", major: "major", people_count: "{n} underground, {o} overdue", no_headcount: "no head-count yet",
    light: "Quarterly light (from station data)", light_green: "green", light_yellow: "yellow", light_red: "red",
    comment_only: "comment only", comment: "Comment", owner: "Owner", measures: "Measures",
    h_reported: "reported", h_acknowledged: "acknowledged", h_assigned: "being fixed", h_rectified: "fixed", h_closed: "closed", h_rejected: "rejected",
    switch: "中文", viewer_note: "a viewer account cannot send notices", role_operator: "operator", role_viewer: "viewer",
    backlog: "Uplink backlog", backlog_n: "{n} waiting", backlog_none: "none", backlog_unknown: "not reported",
    trends: "Per-minute trends of each channel (last {h} hours, from the station's summaries)", no_trends: "no summaries yet", no_reading: "no good reading for {n} minutes",
    mean: "mean", range: "min–max", checkins_of: "Latest check-ins", direction: "Direction", dir_in: "in", dir_out: "out",
    name: "Name", team: "Team", outcome: "Outcome", out_ok: "ok", out_unknown_badge: "unknown badge", out_already_in: "already in", out_not_in: "not underground",
    union_light: "Union's assessment", computed: "computed", set_light: "Assess", note: "Note", saved: "recorded",
  },
};

let lang = "zh-CN";
let csrf = "";
let role = "";
let chosen = null;
let stationList = [];
const $ = (id) => document.getElementById(id);
const t = (k) => T[lang][k] ?? k;
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; };
const time = (s) => {
  if (!s) return "";
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return String(s);
  return new Intl.DateTimeFormat("sv-SE", { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(d);
};
const row = (cells, cls) => { const tr = el("tr", null, cls); for (const c of cells) { const td = el("td"); if (c instanceof Node) td.append(c); else td.textContent = c ?? ""; tr.append(td); } return tr; };

async function api(method, url, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  let data = null;
  try { data = await r.json(); } catch (_) { /* empty */ }
  if (r.status === 401 && url !== "/api/v1/session") showLogin();
  return { status: r.status, data };
}
const message = (d) => (d ? (lang === "en" ? d.message_en : d.message_zh) || "" : "");
const say = (id, text, ok) => { const e = $(id); e.textContent = text; e.className = "result " + (ok ? "ok" : "err"); };

function applyLang() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-t]").forEach((e) => { e.textContent = t(e.dataset.t); });
  $("lang").textContent = t("switch");
  if (csrf) refresh();
}

function showLogin() {
  csrf = ""; $("app").hidden = true; $("login-view").hidden = false; $("logout").hidden = true; $("who").textContent = "";
}
function showApp(d) {
  csrf = d.csrf; role = d.role;
  $("login-view").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  $("who").textContent = d.user + " · " + t("role_" + d.role);
  $("notice-form").hidden = role !== "operator";
  live();
  refresh();
}

async function refresh() {
  await Promise.all([stations(), notices(), chosen ? station(chosen) : null]);
}

// The light's shape says it as well as its colour: ● green, ▲ yellow,
// ■ red.
const SHAPE = { green: "●", yellow: "▲", red: "■" };
async function stations() {
  const [{ data }, { data: lights }] = await Promise.all([api("GET", "/api/v1/stations"), api("GET", "/api/v1/lights")]);
  if (!Array.isArray(data)) return;
  const lightOf = {};
  for (const l of Array.isArray(lights) ? lights : []) lightOf[l.county + "/" + l.station] = l;
  stationList = data;
  const body = $("station-rows"); body.replaceChildren();
  for (const s of data) {
    const id = s.county + "/" + s.station;
    const a = el("a", s.name || id); a.href = "#" + id; a.dataset.station = id;
    a.addEventListener("click", (ev) => { ev.preventDefault(); chosen = id; station(id); });
    const name = el("span"); name.append(a);
    if (!s.registered) name.append(" ", el("span", t("unregistered"), "badge"));
    const p = s.presence || "";
    const presence = el("span", p ? t(p) : t("never"), "badge " + (p || "offline"));
    const since = el("span", p && s.presence_at ? " " + t("since") + " " + time(s.presence_at) : "", "muted");
    const link = el("span"); link.append(presence, since);
    const cls = [s.power_cuts ? "power_cut" : s.alarms ? "alarm" : "", p === "online" ? "" : "offline", s.registered ? "" : "unregistered"].join(" ");
    const l = lightOf[id];
    const light = el("span");
    if (l) {
      // The union's own assessment first, when it has made one; the
      // computed light always beside it.
      if (l.union) {
        const u = el("div", null, "union-light");
        u.append(el("span", SHAPE[l.union.light] + " " + t("union_light") + " " + t("light_" + l.union.light), "light " + l.union.light));
        u.append(el("div", l.union.note + " — " + l.union.by + " " + time(l.union.at), "muted reason"));
        light.append(u);
      }
      light.append(el("span", SHAPE[l.light] + " " + (l.union ? t("computed") + " " : "") + t("light_" + l.light), "light " + l.light + " computed"));
      for (const r of l.reasons) light.append(el("div", lang === "en" ? r.en : r.zh, "muted reason"));
      if (role === "operator") light.append(lightForm(s.county, s.station, l.quarter));
    }
    const b = s.backlog;
    const backlog = el("span", b ? (b.pending ? t("backlog_n").replace("{n}", b.pending) : t("backlog_none")) : t("backlog_unknown"), b && b.pending ? "badge backlog" : "muted");
    const backlogCell = el("span"); backlogCell.append(backlog);
    if (b) backlogCell.append(el("div", time(s.backlog_at), "muted"));
    const tr = row([name, s.mine, link, s.underground ?? "—", s.overdue ?? "—", s.alarms + (s.power_cuts ? "（" + s.power_cuts + "）" : ""), s.hazards_open + " / " + s.hazards_major + " / " + s.hazards_overdue, backlogCell, light], cls);
    tr.dataset.station = id;
    if (l) tr.dataset.light = l.union ? l.union.light : l.light;
    if (l) tr.dataset.computed = l.light;
    tr.dataset.backlog = b ? String(b.pending) : "";
    body.append(tr);
  }
  const pick = $("notice-stations");
  if (!pick.children.length || pick.dataset.count !== String(data.length)) {
    pick.replaceChildren();
    pick.dataset.count = String(data.length);
    const all = el("label"); const cb = el("input"); cb.type = "checkbox"; cb.value = "*"; cb.id = "notice-all"; all.append(cb, " " + t("all_stations")); pick.append(all);
    for (const s of data.filter((x) => x.registered)) {
      const l = el("label"); const c = el("input"); c.type = "checkbox"; c.value = s.county + "/" + s.station; l.append(c, " " + (s.name || c.value)); pick.append(l);
    }
  }
}

async function station(id) {
  const [c, s] = id.split("/");
  const { data } = await api("GET", "/api/v1/stations/" + encodeURIComponent(c) + "/" + encodeURIComponent(s));
  if (!data) return;
  $("station-view").hidden = false;
  const known = stationList.find((x) => x.county === c && x.station === s);
  $("station-title").textContent = (known && known.name ? known.name + " · " : "") + id;
  const alarms = $("alarm-rows"); alarms.replaceChildren();
  for (const a of data.alarms) alarms.append(row([a.channel, t(a.level === "overdue" ? "overdue_level" : a.level), t(a.event), a.value ?? "", time(a.at)], a.event === "cleared" ? "" : a.level));
  const hz = $("hazard-rows"); hz.replaceChildren();
  for (const h of data.hazards) {
    // The closed loop: every step, the county's among them.
    const steps = el("ol", null, "steps");
    for (const st of h.steps || []) steps.append(el("li", time(st.at) + " " + t("h_" + st.status) + (st.by ? " · " + st.by : "") + (st.note ? " — " + st.note : "")));
    const cell = el("div"); cell.append(el("div", h.location), steps);
    if (role === "operator") cell.append(hazardForm(c, s, h));
    const tr = row([h.ticket, t("h_" + h.status), t(h.grade), cell, time(h.deadline)], h.overdue ? "alarm" : "");
    tr.dataset.ticket = h.ticket;
    hz.append(tr);
  }
  const hc = data.headcount;
  $("people").textContent = hc ? t("people_count").replace("{n}", hc.underground).replace("{o}", hc.overdue) + " · " + time(hc.at) : t("no_headcount");
  const people = $("people-rows"); people.replaceChildren();
  for (const p of (hc && hc.people) || []) people.append(row([p.name, p.team, p.badge, time(p.since), p.overdue ? t("overdue") : ""], p.overdue ? "alarm" : ""));
  const ci = $("checkin-rows"); ci.replaceChildren();
  for (const c of data.checkins || []) ci.append(row([time(c.at), c.name || "", c.team || "", c.badge, t("dir_" + c.direction), t("out_" + c.outcome) + (c.by ? " · " + c.by : "")], c.outcome === "ok" ? "" : "alarm"));
  $("trends-title").textContent = t("trends").replace("{h}", data.trend_hours);
  const charts = $("trends"); charts.replaceChildren();
  if (!data.trends || !data.trends.length) charts.append(el("p", t("no_trends"), "muted"));
  for (const tr of data.trends || []) charts.append(chart(tr, data.trend_hours));
}

// One channel's minutes as an SVG chart: the min–max band, the mean as a
// line broken wherever a minute is missing or had no good reading, and
// every minute without a good reading marked red along the bottom — a
// reading the station did not have is never drawn as a value.
const SVG = "http://www.w3.org/2000/svg";
// A value as a person reads it: six significant digits at most, no
// floating-point tail (0.33, never 0.32999999999999996).
const num = (v) => String(Number(Number(v).toPrecision(6)));
const svg = (tag, attrs) => { const e = document.createElementNS(SVG, tag); for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v)); return e; };
function chart(tr, hours) {
  const W = 720, H = 130, L = 56, R = 8, TOP = 8, B = 22;
  const mins = tr.minutes;
  const good = mins.filter((m) => m[3] !== null);
  const down = mins.length - good.length;
  const fig = el("figure", null, "trend");
  fig.dataset.channel = tr.channel; fig.dataset.points = String(good.length); fig.dataset.down = String(down);
  const last = good.length ? good[good.length - 1] : null;
  const cap = el("figcaption");
  cap.append(el("b", tr.channel), " ", el("span", last ? t("mean") + " " + num(last[3]) + " · " + time(last[0]) : "", "muted"));
  if (down) cap.append(" ", el("span", t("no_reading").replace("{n}", down), "badge down"));
  fig.append(cap);
  const end = Date.now(), start = end - hours * 3600e3;
  let lo = Math.min(...good.map((m) => m[1] ?? m[3])), hi = Math.max(...good.map((m) => m[2] ?? m[3]));
  if (!good.length) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const x = (ms) => L + ((ms - start) / (end - start)) * (W - L - R);
  const y = (v) => TOP + (1 - (v - lo) / (hi - lo)) * (H - TOP - B);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": tr.channel, class: "chart" });
  s.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  for (const v of [lo, hi]) { const tx = svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }); tx.textContent = num(v); s.append(tx); }
  for (const ms of [start, end]) { const tx = svg("text", { x: x(ms), y: H - 6, "text-anchor": ms === start ? "start" : "end", class: "tick" }); tx.textContent = time(ms).slice(5); s.append(tx); }
  // Runs of consecutive good minutes.
  const runs = []; let run = [];
  for (const m of mins) {
    const prev = run[run.length - 1];
    if (m[3] === null || (prev && m[0] - prev[0] > 60e3)) { if (run.length) runs.push(run); run = []; }
    if (m[3] !== null) run.push(m);
  }
  if (run.length) runs.push(run);
  for (const r of runs) {
    const band = r.map((m) => `${x(m[0])},${y(m[2] ?? m[3])}`).concat(r.slice().reverse().map((m) => `${x(m[0])},${y(m[1] ?? m[3])}`));
    s.append(svg("polygon", { points: band.join(" "), class: "band" }));
    if (r.length === 1) s.append(svg("circle", { cx: x(r[0][0]), cy: y(r[0][3]), r: 2, class: "mean" }));
    else s.append(svg("polyline", { points: r.map((m) => `${x(m[0])},${y(m[3])}`).join(" "), class: "mean" }));
  }
  for (const m of mins) if (m[3] === null) s.append(svg("rect", { x: x(m[0]), y: H - B - 6, width: Math.max(2, x(m[0] + 60e3) - x(m[0])), height: 6, class: "down" }));
  fig.append(s);
  return fig;
}

// The union's own light for a station's quarter, with its note.
function lightForm(county, station, quarter) {
  const f = el("form", null, "light-action");
  const sel = el("select"); sel.name = "light";
  for (const v of ["green", "yellow", "red"]) { const o = el("option", SHAPE[v] + " " + t("light_" + v)); o.value = v; sel.append(o); }
  const note = el("input"); note.name = "note"; note.maxLength = 2000; note.placeholder = t("note");
  const b = el("button", t("set_light")); b.type = "submit";
  f.append(sel, note, b);
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const { status, data } = await api("POST", "/api/v1/lights/" + encodeURIComponent(county) + "/" + encodeURIComponent(station), { quarter, light: sel.value, note: note.value });
    say("light-result", status === 201 ? county + "/" + station + " · " + t("saved") : message(data), status === 201);
  });
  return f;
}

// A comment, a next step (those the lifecycle allows), or both.
function hazardForm(county, station, h) {
  const f = el("form", null, "hazard-action");
  const sel = el("select"); sel.name = "status";
  const none = el("option", t("comment_only")); none.value = ""; sel.append(none);
  for (const n of h.next || []) { const o = el("option", t("h_" + n)); o.value = n; sel.append(o); }
  const input = (name, label, type) => { const l = el("label", t(label)); const i = el("input"); i.name = name; if (type) i.type = type; l.append(i); f.append(l); return i; };
  f.append(sel);
  input("comment", "comment"); input("owner", "owner"); input("measures", "measures"); input("deadline", "deadline", "datetime-local");
  const b = el("button", t("send")); b.type = "submit"; f.append(b);
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    if (sel.value) body.status = sel.value;
    for (const k of ["comment", "owner", "measures"]) { const v = f.elements[k].value.trim(); if (v) body[k] = v; }
    if (f.elements.deadline.value) body.deadline = new Date(f.elements.deadline.value).toISOString();
    const { status, data } = await api("POST", "/api/v1/stations/" + encodeURIComponent(county) + "/" + encodeURIComponent(station) + "/hazards/" + encodeURIComponent(h.ticket), body);
    say("hazard-result", status === 201 ? h.ticket + " · " + t("sent") : message(data), status === 201);
  });
  return f;
}

async function notices() {
  const { data } = await api("GET", "/api/v1/notices");
  if (!Array.isArray(data)) return;
  const body = $("notice-rows"); body.replaceChildren();
  for (const n of data) {
    const answer = n.outcome === "applied" ? t("applied_ok") + " " + time(n.applied_at) : n.outcome === "refused" ? t("refused") + ": " + (n.reason || "") : t("waiting");
    const read = Array.isArray(n.read) ? n.read : [];
    const who = read.length ? t("read_n").replace("{n}", read.length) + "：" + read.map((r) => r.name + (r.team ? "（" + r.team + "）" : "")).join("、") : "";
    const tr = row([time(n.sent_at), n.county + "/" + n.station, n.title, n.sent_by, answer, who], n.outcome === "refused" ? "alarm" : "");
    tr.dataset.read = String(read.length);
    tr.dataset.msgId = n.msg_id; tr.dataset.outcome = n.outcome || "waiting";
    body.append(tr);
  }
}

async function sendNotice(ev) {
  ev.preventDefault();
  const picked = [...document.querySelectorAll("#notice-stations input:checked")].map((c) => c.value);
  const body = { stations: picked, title: $("notice-title").value, body: $("notice-body").value, urgent: $("notice-urgent").checked, valid_hours: Number($("notice-hours").value) };
  const { status, data } = await api("POST", "/api/v1/notices", body);
  if (status === 201) { say("notice-result", t("sent") + " · " + data.sent.length, true); $("notice-form").reset(); notices(); }
  else say("notice-result", message(data), false);
}

// Live: refresh on every `changed`; a stream silent for 3 s is lost (the
// page says so), and it comes back by itself.
let es = null; let last = Date.now();
function live() {
  if (es) return;
  last = Date.now();
  const open = () => {
    es = new EventSource("/api/v1/stream");
    es.addEventListener("changed", () => { last = Date.now(); refresh(); });
    es.addEventListener("beat", () => { last = Date.now(); if (!$("link-lost").hidden) { $("link-lost").hidden = true; refresh(); } });
    es.onerror = () => { if (es && es.readyState === EventSource.CLOSED) { es = null; } };
  };
  open();
  setInterval(() => {
    if (Date.now() - last > 3000) {
      $("link-lost").hidden = false; $("link-lost").textContent = t("link_lost");
      if (es) { es.close(); es = null; }
      if (csrf) open();
    }
  }, 1000);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("lang").addEventListener("click", () => { lang = lang === "en" ? "zh-CN" : "en"; applyLang(); });
  $("logout").addEventListener("click", async () => { await api("DELETE", "/api/v1/session"); showLogin(); });
  $("notice-form").addEventListener("submit", sendNotice);
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const { status, data } = await api("POST", "/api/v1/session", { user: $("user").value, password: $("password").value });
    $("password").value = "";
    if (status === 200) showApp(data); else say("login-result", message(data) || t("wrong"), false);
  });
  applyLang();
  const { status, data } = await api("GET", "/api/v1/session");
  if (status === 200) showApp(data); else showLogin();
});
