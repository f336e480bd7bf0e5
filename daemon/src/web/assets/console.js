"use strict";
// The supervisor console. It logs in over /api/v1/session (an HttpOnly
// cookie) and sends the CSRF token it gets back with every change. Every
// server text is put in with textContent; nothing is parsed as HTML.

// This page's words, one per line; the words both pages use are in
// common.js (Common.T).
const T = {
  "zh-CN": {
    title: "主管控制台",
    logout: "退出",
    login: "主管登录",
    user: "用户名",
    password: "密码",
    log_in: "登录",
    tab_alarms: "报警",
    tab_people: "井下人员",
    tab_hazards: "隐患",
    tab_sensors: "传感器",
    tab_roster: "花名册",
    active_alarms: "当前报警",
    history: "历史报警",
    channel: "测点",
    level: "级别",
    state: "状态",
    value: "值",
    raised: "发生时间",
    acked_by: "确认人",
    cleared: "解除时间",
    ack: "确认",
    underground: "井下人员",
    print_roll: "打印撤离名单",
    badge: "卡号",
    name: "姓名",
    team: "班组",
    since: "下井时间",
    minutes: "时长（分）",
    role: "岗位",
    hazards: "隐患",
    devices: "设备",
    device: "设备",
    online: "在线",
    last_error: "最近错误",
    sensors: "测点",
    trend: "趋势（8 小时）",
    roster: "花名册",
    upload: "上传",
    roster_help: "上传 UTF-8 CSV 文件，表头为 badge,name,team,role。有错误时不导入任何记录。",
    fault: "故障",
    warning: "预警",
    alarm: "报警",
    power_cut: "断电",
    overdue: "超时未升井",
    active: "报警中",
    acknowledged: "已确认",
    returned: "已恢复待确认",
    h_reported: "已上报",
    h_acknowledged: "已受理",
    h_assigned: "整改中",
    h_rectified: "已整改",
    h_closed: "已销号",
    h_rejected: "已驳回",
    h_overdue: "整改超期",
    calibration: "标校",
    calibration_note: "标校期间该测点显示“标校”，读数不计入统计，报警标记为标校报警；断电功能仍然有效：达到断电值照常断电。",
    channel: "测点",
    cal_state: "标校",
    last_calibrated: "上次标校",
    cal_action: "操作",
    cal_until: "标校中，至 {t}（{by}：{why}）",
    cal_overdue: "已超过 {d} 天未标校",
    cal_never: "无记录",
    cal_start: "开始标校",
    cal_end: "结束标校",
    cal_minutes: "分钟",
    cal_reason: "原因（如：通标准气样）",
    cal_started: "已开始标校，至 {t}",
    cal_guard: "该测点在标校期间仍会断电",
    cal_ended: "已结束标校",
    self_light: "本站预评（按本站数据计算，与县工会季度亮灯同一规则）：",
    light_green: "绿灯",
    light_yellow: "黄灯",
    light_red: "红灯",
    hazards_overdue: "{n} 项隐患已过整改期限仍未整改，请督促责任人。",
    ok: "正常",
    next_step: "下一步",
    measures: "整改措施",
    funds: "整改资金",
    plan: "应急预案",
    major_category: "重大隐患类别",
    note: "备注",
    save: "提交",
    uplink_on: "上报已连接",
    uplink_off: "上报未连接",
    uplink_disabled: "上报未启用",
    pending: "待发",
    set_aside: "搁置（过大）",
    yes: "是",
    no: "否",
    wrong: "登录失败",
    no_data: "暂无数据",
    reporter: "举报人",
    anonymous: "匿名",
    storage_full: "存储空间已满：新的下井登记、隐患报告和报警记录无法保存。请清理数据盘（/var/lib/pithead 所在分区）。报警输出不受影响，腾出空间后自动恢复。",
    roll_title: "撤离名单 — 井下人员",
    printed_at: "打印时间",
    overdue_col: "超时",
    by_hand: "人工升井登记（本班）",
    at: "时间",
    by: "操作人",
    reason: "原因",
    check_out: "人工升井",
    reason_needed: "请填写原因",
    checked_out: "已人工升井",
    persons: "人",
    value_at_raise: "发生时值",
    value_now: "当前值",
    ack_all: "全部确认",
    ack_all_question: "确认全部 {n} 条未确认的报警？",
    ack_all_yes: "确认全部",
    cancel: "取消",
    ack_all_done: "已确认 {n} 条报警",
    nothing_to_ack: "没有未确认的报警",
    to_roll: "撤离名单（井下 {n} 人）",
    to_roll_unknown: "撤离名单",
    siren: "警报器",
    siren_on: "鸣响",
    siren_off: "静音",
    beacon_word: "信号灯",
    beacon_green: "绿",
    beacon_yellow: "黄",
    beacon_red: "红",
    relay: "断电继电器",
    relay_on: "供电",
    relay_off: "已断电",
    feedback: "馈电",
    subject_feedback: "馈电异常（断电继电器）",
    subject_overcrowded: "井下超员",
    subject_team: "班组超员：{team}",
    fb_present: "有电",
    fb_absent: "无电",
    fb_unreadable: "无法读取",
    fb_still_powered: "馈电异常：已断电但仍有电",
    fb_no_power: "馈电异常：应供电但无电",
    fb_mismatch_unreadable: "馈电异常：反馈无法读取",
    unknown: "未知",
    unacked: "未确认 {n} 条",
  },
  en: {
    title: "Supervisor console",
    logout: "Log out",
    login: "Supervisor login",
    user: "User",
    password: "Password",
    log_in: "Log in",
    tab_alarms: "Alarms",
    tab_people: "Underground",
    tab_hazards: "Hazards",
    tab_sensors: "Sensors",
    tab_roster: "Roster",
    active_alarms: "Active alarms",
    history: "History",
    channel: "Channel",
    level: "Level",
    state: "State",
    value: "Value",
    raised: "Raised",
    acked_by: "Acknowledged by",
    cleared: "Cleared",
    ack: "Acknowledge",
    underground: "Underground now",
    print_roll: "Print evacuation roll",
    badge: "Badge",
    name: "Name",
    team: "Team",
    since: "Since",
    minutes: "Minutes",
    role: "Role",
    hazards: "Hazards",
    devices: "Devices",
    device: "Device",
    online: "Online",
    last_error: "Last error",
    sensors: "Channels",
    trend: "Trend (8 hours)",
    roster: "Roster",
    upload: "Upload",
    roster_help: "Upload a UTF-8 CSV with the header badge,name,team,role. With any error nothing is imported.",
    fault: "Fault",
    warning: "Warning",
    alarm: "Alarm",
    power_cut: "Power cut",
    overdue: "Overdue underground",
    active: "Active",
    acknowledged: "Acknowledged",
    returned: "Returned, unacknowledged",
    h_reported: "Reported",
    h_acknowledged: "Acknowledged",
    h_assigned: "Being fixed",
    h_rectified: "Fixed",
    h_closed: "Closed",
    h_rejected: "Rejected",
    h_overdue: "Past its deadline",
    calibration: "Calibration",
    calibration_note: "While calibrating, the channel shows CALIBRATING, its readings stay out of the statistics and its alarms are marked as calibration alarms; power-cut protection still acts: at the power-cut level power is cut as always.",
    channel: "Channel",
    cal_state: "Calibration",
    last_calibrated: "Last calibrated",
    cal_action: "Action",
    cal_until: "calibrating until {t} ({by}: {why})",
    cal_overdue: "not calibrated for over {d} days",
    cal_never: "never",
    cal_start: "Start calibration",
    cal_end: "End calibration",
    cal_minutes: "minutes",
    cal_reason: "reason (e.g. standard gas)",
    cal_started: "calibrating until {t}",
    cal_guard: "this channel still cuts power while calibrating",
    cal_ended: "calibration ended",
    self_light: "Self-assessment (from this station's data, by the county's quarterly rule): ",
    light_green: "green",
    light_yellow: "yellow",
    light_red: "red",
    hazards_overdue: "{n} hazards are past their rectification deadline: chase their owners.",
    ok: "ok",
    next_step: "Next step",
    measures: "Measures",
    funds: "Funds",
    plan: "Plan",
    major_category: "Major hazard category",
    note: "Note",
    save: "Save",
    uplink_on: "uplink connected",
    uplink_off: "uplink down",
    uplink_disabled: "uplink off",
    pending: "waiting",
    set_aside: "set aside (too big)",
    yes: "yes",
    no: "no",
    wrong: "Login failed",
    no_data: "No data",
    reporter: "Reporter",
    anonymous: "anonymous",
    storage_full: "Storage is full: new check-ins, hazard reports and alarm records cannot be saved. Free space on the data disk (where /var/lib/pithead is). Alarm outputs are not affected; saving resumes by itself once there is space.",
    roll_title: "Evacuation roll — underground now",
    printed_at: "Printed",
    overdue_col: "Overdue",
    by_hand: "Checked out by hand (this shift)",
    at: "Time",
    by: "By",
    reason: "Reason",
    check_out: "Check out",
    reason_needed: "Give a reason",
    checked_out: "checked out by hand",
    persons: "people",
    value_at_raise: "Value at raise",
    value_now: "Value now",
    ack_all: "Acknowledge all",
    ack_all_question: "Acknowledge all {n} unacknowledged alarms?",
    ack_all_yes: "Acknowledge all",
    cancel: "Cancel",
    ack_all_done: "{n} alarms acknowledged",
    nothing_to_ack: "No alarm waits for an acknowledgement",
    to_roll: "Evacuation roll ({n} underground)",
    to_roll_unknown: "Evacuation roll",
    siren: "Siren",
    siren_on: "sounding",
    siren_off: "silent",
    beacon_word: "Beacon",
    beacon_green: "green",
    beacon_yellow: "yellow",
    beacon_red: "red",
    relay: "Power relay",
    relay_on: "power on",
    relay_off: "power cut",
    feedback: "Feedback",
    subject_feedback: "Power feedback fault (power relay)",
    subject_overcrowded: "Too many underground",
    subject_team: "Team over its limit: {team}",
    fb_present: "power present",
    fb_absent: "no power",
    fb_unreadable: "unreadable",
    fb_still_powered: "FEEDBACK FAULT: cut, power still present",
    fb_no_power: "FEEDBACK FAULT: allowed, no power",
    fb_mismatch_unreadable: "FEEDBACK FAULT: unreadable",
    unknown: "unknown",
    unacked: "{n} unacknowledged",
  },
};


let lang = document.documentElement.dataset.lang === "en" ? "en" : "zh-CN";
let csrf = "";
let tab = "alarms";
let timer = null;
// Whether the live link to the daemon is lost: then neither readings nor
// the alarm list are shown, only that they are unavailable.
let linkLost = false;
const $ = (id) => document.getElementById(id);
const t = (k) => T[lang][k] ?? Common.T[lang][k] ?? k;
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; };
// Times in the station's time zone (the live state says which).
const time = (s) => Common.time(s);

function applyLang() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-t]").forEach((e) => { e.textContent = t(e.dataset.t); });
  $("lang").textContent = t("switch");
  if (csrf) refresh();
}

async function api(method, url, body, contentType) {
  const headers = { "Accept-Language": lang };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType || "application/json";
    payload = contentType ? body : JSON.stringify(body);
  }
  const r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  if (r.status === 401 && url !== "/api/v1/session") { showLogin(); throw new Error("logged out"); }
  let data = null;
  try { data = await r.json(); } catch (_) { /* empty */ }
  return { status: r.status, data };
}

function message(d) { return d ? (lang === "en" ? d.message_en : d.message_zh) || "" : ""; }
function say(id, text, ok) { const e = $(id); e.textContent = text; e.className = "result " + (ok ? "ok" : "err"); }

function showLogin() {
  csrf = "";
  clearInterval(timer);
  $("app").hidden = true; $("login-view").hidden = false; $("logout").hidden = true; $("who").textContent = "";
}

function showApp(user) {
  $("login-view").hidden = true; $("app").hidden = false; $("logout").hidden = false; $("who").textContent = user;
  selectTab(tab);
  clearInterval(timer);
  timer = setInterval(refresh, 3000);
}

function selectTab(name) {
  tab = name;
  document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== "tab-" + name; });
  document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  refresh();
}

async function refresh() {
  try {
    if (tab === "alarms") { await alarms(); await rollCount(); }
    else if (tab === "people") await people();
    else if (tab === "hazards") await hazards();
    else if (tab === "sensors") await sensors();
    else if (tab === "roster") await roster();
  } catch (_) { /* shown elsewhere */ }
}

function row(cells, cls) { const tr = el("tr", null, cls); cells.forEach((c) => { const td = el("td"); if (c instanceof Node) td.append(c); else td.textContent = c ?? ""; tr.append(td); }); return tr; }

// What the tables show while the daemon is out of reach.
function showLost() {
  $("link-lost").hidden = false;
  // What only the daemon knows goes with it.
  $("self-light").hidden = true;
  $("hazards-overdue").hidden = true;
  $("link-lost").textContent = t("link_lost");
  $("beacon").className = "beacon unknown";
  const lostRow = (cols) => { const tr = el("tr", null, "nodata"); const td = el("td", t("link_lost")); td.colSpan = cols; tr.append(td); return tr; };
  $("alarm-rows").replaceChildren(lostRow(8));
  showOutputs(null);
  $("history-rows").replaceChildren(lostRow(5));
  for (const tile of document.querySelectorAll("#sensor-tiles .tile")) {
    tile.className = "tile nodata";
    const v = tile.querySelector(".value");
    if (v) v.textContent = t("no_reading");
  }
  $("device-rows").replaceChildren(lostRow(3));
}

// The channels by id, for names, places and units beside alarms.
let channelsById = {};
// What an alarm that is not a channel's is about, in words.
const SUBJECTS = {
  "output:power_relay:feedback": "subject_feedback",
  "underground": "subject_overcrowded",
};
function channelText(id) {
  const c = channelsById[id];
  if (!c && SUBJECTS[id]) return t(SUBJECTS[id]);
  if (!c && id.startsWith("team:")) return t("subject_team").replace("{team}", id.slice(5));
  return c ? Common.label(c, lang) + (c.location ? " · " + c.location : "") : id;
}
function valueText(v, id) {
  const c = channelsById[id];
  return Common.formatValue(v) + (c && c.unit ? " " + c.unit : "");
}
// The channel's value now, beside the value when the alarm was raised.
function nowText(id) {
  const c = channelsById[id];
  if (!c) return "";
  return c.state === "ok" && typeof c.value === "number" ? valueText(c.value, id) : t(c.state);
}
let unackedIds = [];
async function alarms() {
  const [{ data }, { data: chans }] = await Promise.all([api("GET", "/api/v1/alarms"), api("GET", "/api/v1/channels")]);
  if (linkLost) return;
  if (Array.isArray(chans)) channelsById = Object.fromEntries(chans.map((c) => [c.id, c]));
  const list = Array.isArray(data) ? data : [];
  const active = list.filter((a) => a.state !== "cleared");
  const body = $("alarm-rows"); body.replaceChildren();
  for (const a of active) {
    let button = "";
    if (!a.acknowledged_by) {
      button = el("button", t("ack"));
      button.type = "button";
      button.dataset.alarm = a.id;
      button.addEventListener("click", () => ack(a.id));
    }
    body.append(row([channelText(a.channel), t(a.level), t(a.state), typeof a.value === "number" ? valueText(a.value, a.channel) : t(a.reading_state), nowText(a.channel), time(a.raised_at), a.acknowledged_by, button], a.level));
  }
  if (!active.length) body.append(row([t("no_data")]));
  unackedIds = active.filter((a) => !a.acknowledged_by).map((a) => a.id);
  $("ack-all").disabled = unackedIds.length === 0;
  const hist = $("history-rows"); hist.replaceChildren();
  for (const a of list.filter((a) => a.state === "cleared").slice(0, 100)) {
    hist.append(row([channelText(a.channel), t(a.level), time(a.raised_at), a.acknowledged_by, time(a.cleared_at)], a.level));
  }
}

async function ack(id) {
  const { status, data } = await api("POST", "/api/v1/alarms/" + id + "/ack", {});
  say("alarm-result", status === 200 ? t("acknowledged") : message(data), status === 200);
  alarms();
}

// Acknowledge all: one question, then every alarm nobody acknowledged,
// each recorded before the answer.
function askAckAll() {
  if (!unackedIds.length) { say("alarm-result", t("nothing_to_ack"), false); return; }
  $("ack-all-question").textContent = t("ack_all_question").replace("{n}", unackedIds.length);
  $("ack-all-confirm").hidden = false;
  $("ack-all-yes").focus();
}
async function ackAll() {
  $("ack-all-confirm").hidden = true;
  const { status, data } = await api("POST", "/api/v1/alarms/ack-all", {});
  if (status === 200) say("alarm-result", t("ack_all_done").replace("{n}", data.acknowledged.length), true);
  else if (data && Array.isArray(data.failed)) say("alarm-result", data.failed.map((f) => f.id + ": " + message(f)).join("; "), false);
  else say("alarm-result", message(data), false);
  alarms();
}

// The outputs as the daemon drives them, always in view; unknown while
// the daemon is out of reach.
function showOutputs(o) {
  const set = (id, text, cls) => { const e = $(id); e.querySelector(".v").textContent = text; e.className = "output " + cls; };
  if (!o) {
    for (const id of ["out-siren", "out-beacon", "out-relay", "out-feedback"]) set(id, t("unknown"), "unknown");
    $("unacked").textContent = "";
    return;
  }
  set("out-siren", t(o.siren ? "siren_on" : "siren_off"), o.siren ? "bad" : "good");
  set("out-beacon", t("beacon_" + o.beacon), o.beacon);
  set("out-relay", t(o.power_allowed ? "relay_on" : "relay_off"), o.power_allowed ? "good" : "bad");
}

// The relay's feedback (馈电) beside it: what the feeder really shows.
function showFeedback(f) {
  const e = $("out-feedback");
  e.hidden = !f;
  if (!f) return;
  const text = f.mismatch ? t(f.mismatch === "unreadable" ? "fb_mismatch_unreadable" : "fb_" + f.mismatch)
    : t(f.present === true ? "fb_present" : f.present === false ? "fb_absent" : "fb_unreadable");
  e.querySelector(".v").textContent = text;
  e.className = "output " + (f.mismatch ? "bad" : "good");
}

// A tone while any alarm waits for an acknowledgement, again every few
// seconds, until it is acknowledged (the console must be logged in: a
// browser sounds only after a touch).
let unacked = 0;
function heard(s) {
  Common.setZone(s.timezone);
  if (linkLost) return;
  $("beacon").className = "beacon " + s.beacon;
  showOutputs(s.outputs);
  showFeedback(s.feedback);
  const light = s.light;
  $("self-light").hidden = !light;
  if (light) {
    $("self-light").dataset.light = light.light;
    $("self-light-word").className = "light " + light.light;
    $("self-light-word").textContent = t("self_light") + t("light_" + light.light);
    $("self-light-reasons").replaceChildren(...light.reasons.map((r) => el("li", lang === "en" ? r[1] : r[0])));
  }
  $("hazards-overdue").hidden = !s.hazards_overdue;
  $("hazards-overdue").textContent = s.hazards_overdue ? t("hazards_overdue").replace("{n}", s.hazards_overdue) : "";
  const before = unacked;
  unacked = s.unacknowledged || 0;
  $("unacked").textContent = unacked ? t("unacked").replace("{n}", unacked) : "";
  $("unacked").className = "output " + (unacked ? "bad" : "");
  if (csrf && unacked > before) Common.tone("alarm");
}
setInterval(() => { if (csrf && !linkLost && unacked > 0) Common.tone("alarm"); }, 3000);

let undergroundCount = null;
async function rollCount() {
  try {
    const { data } = await api("GET", "/api/v1/underground");
    undergroundCount = data ? data.count : null;
  } catch (_) { undergroundCount = null; }
  $("to-roll").textContent = undergroundCount === null ? t("to_roll_unknown") : t("to_roll").replace("{n}", undergroundCount);
}

async function people() {
  const { data } = await api("GET", "/api/v1/underground");
  if (!data) return;
  $("count").textContent = "（" + data.count + "）";
  $("roll-station").textContent = data.station || "";
  $("roll-count").textContent = data.count + " " + t("persons");
  $("roll-time").textContent = Common.time(new Date()) + (Common.zoneName() ? " (" + Common.zoneName() + ")" : "");
  const body = $("people-rows"); body.replaceChildren();
  // By team, then by time in: how a roll is read out at the shaft.
  const list = (data.people || []).slice().sort((a, b) => (a.team || "").localeCompare(b.team || "", "zh-CN") || (a.since < b.since ? -1 : 1));
  for (const p of list) {
    const form = el("form", null, "checkout no-print");
    const reason = el("input"); reason.name = "reason"; reason.maxLength = 200; reason.placeholder = t("reason");
    const b = el("button", t("check_out")); b.type = "submit";
    form.append(reason, b);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = reason.value.trim();
      if (!r) { say("checkout-result", t("reason_needed"), false); return; }
      const { status, data: d } = await api("POST", "/api/v1/underground/" + encodeURIComponent(p.badge) + "/checkout", { reason: r });
      say("checkout-result", status === 201 ? p.name + " " + t("checked_out") : message(d), status === 201);
      people();
    });
    body.append(row([p.team, p.name, p.badge, time(p.since), p.minutes, p.overdue ? t("yes") : "", form], p.overdue ? "overdue" : ""));
  }
  const hand = $("by-hand-rows"); hand.replaceChildren();
  for (const h of data.checked_out_by_hand || []) hand.append(row([h.name, h.badge, h.team, time(h.at), h.by, h.reason]));
}

async function hazards() {
  const { data } = await api("GET", "/api/v1/hazards");
  const box = $("hazard-list"); box.replaceChildren();
  for (const h of Array.isArray(data) ? data : []) {
    const card = el("div", null, "hazard");
    card.dataset.ticket = h.ticket;
    card.append(el("div", h.ticket + " · " + t("h_" + h.status) + " · " + h.grade + " · " + h.category + (h.overdue ? " · " + t("overdue") : "")));
    card.append(el("div", h.location + " — " + h.description, "muted"));
    card.append(el("div", t("reporter") + ": " + (h.reporter || t("anonymous")), "muted"));
    if (h.photo) {
      const img = el("img"); img.alt = ""; img.style.maxWidth = "240px";
      img.src = "/api/v1/hazards/" + encodeURIComponent(h.ticket) + "/photo";
      card.append(img);
    }
    const steps = el("ol", null, "steps");
    for (const s of h.steps) steps.append(el("li", time(s.at) + " " + t("h_" + s.status) + (s.by ? " · " + s.by : "") + (s.note ? " — " + s.note : "")));
    card.append(steps);
    // The server says which steps the lifecycle allows from here.
    if (h.next && h.next.length) card.append(stepForm(h, h.next));
    box.append(card);
  }
}

// The fifteen categories of 煤矿重大事故隐患判定标准 (2020).
const MAJOR_CATEGORIES = [
  ["over_capacity", "超能力、超强度或者超定员组织生产", "Over capacity, intensity or staffing"],
  ["gas_over_limit", "瓦斯超限作业", "Working with gas over the limit"],
  ["outburst_prevention", "突出矿井未实施防突出措施", "Outburst prevention not carried out"],
  ["gas_drainage_monitoring", "高瓦斯矿井无抽采、监控系统或不能正常运行", "High-gas mine without working drainage or monitoring"],
  ["ventilation", "通风系统不完善、不可靠", "Ventilation incomplete or unreliable"],
  ["water_hazard", "有严重水患，未采取有效措施", "Serious water hazard without measures"],
  ["out_of_bounds", "超层越界开采", "Mining beyond the licensed seams or bounds"],
  ["rock_burst", "有冲击地压危险，未采取有效措施", "Rock-burst risk without measures"],
  ["spontaneous_combustion", "自然发火严重，未采取有效措施", "Serious spontaneous combustion without measures"],
  ["banned_equipment", "使用明令禁止或淘汰的设备、工艺", "Banned or obsolete equipment or processes"],
  ["no_dual_power", "没有双回路供电系统", "No dual-circuit power supply"],
  ["building_while_producing", "边建设边生产或改扩建期间违规生产", "Building while producing"],
  ["illegal_contracting", "违规承包、转包或劳务承包", "Illegal contracting or subcontracting"],
  ["restructuring", "改制期间未明确安全责任或证照未变更", "Responsibilities or licences unclear in restructuring"],
  ["other", "其他重大事故隐患", "Other major hazard"],
];

function stepForm(h, next) {
  const f = el("form");
  const field = (name, label, type) => { const l = el("label", t(label)); const i = el("input"); i.name = name; if (type) i.type = type; l.append(i); f.append(l); return i; };
  const sl = el("label", t("next_step")); const sel = el("select"); sel.name = "status";
  for (const n of next) { const o = el("option", t("h_" + n)); o.value = n; sel.append(o); }
  sl.append(sel); f.append(sl);
  field("owner", "owner"); field("measures", "measures"); field("funds", "funds"); field("plan", "plan"); field("deadline", "deadline", "datetime-local");
  // A major hazard: its category of the fifteen of the national standard.
  if (h.grade === "major") {
    const cl = el("label", t("major_category")); const cs = el("select"); cs.name = "major_category";
    cs.append(el("option", "—"));
    cs.firstChild.value = "";
    for (const [k, zh, en] of MAJOR_CATEGORIES) { const o = el("option", lang === "en" ? en : zh); o.value = k; cs.append(o); }
    if (h.major_category) cs.value = h.major_category;
    cl.append(cs); f.append(cl);
  }
  field("note", "note");
  const b = el("button", t("save")); b.type = "submit"; f.append(b);
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { status: sel.value };
    for (const k of ["owner", "measures", "funds", "plan", "note"]) { const v = f.elements[k].value.trim(); if (v) body[k] = v; }
    if (f.elements.major_category && f.elements.major_category.value && body.status === "assigned") body.major_category = f.elements.major_category.value;
    const d = f.elements.deadline.value;
    if (d) body.deadline = new Date(d).toISOString();
    const { status, data } = await api("POST", "/api/v1/hazards/" + encodeURIComponent(h.ticket) + "/steps", body);
    say("hazard-result", status === 200 ? h.ticket + " → " + t("h_" + body.status) : message(data), status === 200);
    hazards();
  });
  return f;
}

async function sensors() {
  const [{ data: devs }, { data: chans }] = await Promise.all([api("GET", "/api/v1/devices"), api("GET", "/api/v1/channels")]);
  if (linkLost) return;
  const body = $("device-rows"); body.replaceChildren();
  for (const d of Array.isArray(devs) ? devs : []) body.append(row([d.id, d.online ? t("yes") : t("no"), d.last_error], d.online ? "" : "fault"));
  const tiles = $("sensor-tiles"); tiles.replaceChildren();
  const sel = $("trend-channel");
  const chosen = sel.value;
  sel.replaceChildren();
  for (const c of Array.isArray(chans) ? chans : []) {
    const tile = el("div", null, "tile " + (c.state === "ok" ? "ok" : c.state === "calibrating" ? "calibrating" : "fault"));
    tile.dataset.channel = c.id;
    tile.append(el("div", Common.label(c, lang), "name"));
    // In calibration the supervisor sees the test gas's value, marked.
    const shown = (c.state === "ok" || c.state === "calibrating") && typeof c.value === "number" ? Common.formatValue(c.value) + " " + c.unit : "";
    tile.append(el("div", c.state === "calibrating" ? t("calibrating") + " " + shown : shown || t(c.state), "value"));
    tile.append(el("div", c.location, "loc"));
    tile.append(el("div", c.id, "id"));
    tiles.append(tile);
    const o = el("option", Common.label(c, lang) + " · " + c.id); o.value = c.id; sel.append(o);
  }
  if (chosen) sel.value = chosen;
  await calibrations(Array.isArray(chans) ? chans : []);
  if (sel.value) await trend(sel.value);
}

// Calibration (标校): start with a time and a reason, end early; the date
// of each sensor's last calibration, flagged when too old.
async function calibrations(chans) {
  const { data } = await api("GET", "/api/v1/calibrations");
  if (linkLost || !data) return;
  const byId = Object.fromEntries(chans.map((c) => [c.id, c]));
  const body = $("calibration-rows"); body.replaceChildren();
  for (const c of data.channels || []) {
    const ch = byId[c.channel];
    const name = ch ? Common.label(ch, lang) + " · " + c.channel : c.channel;
    const cal = c.calibration;
    const state = cal ? t("cal_until").replace("{t}", time(cal.until)).replace("{by}", cal.by).replace("{why}", cal.reason)
      : c.overdue ? t("cal_overdue").replace("{d}", data.calibration_days) : "";
    const last = c.last_calibrated ? time(c.last_calibrated) : t("cal_never");
    let action;
    if (cal) {
      action = el("button", t("cal_end"));
      action.type = "button";
      action.dataset.end = c.channel;
      action.addEventListener("click", async () => {
        const { status, data: d } = await api("DELETE", "/api/v1/channels/" + encodeURIComponent(c.channel) + "/calibration");
        say("calibration-result", status === 200 ? name + " " + t("cal_ended") : message(d), status === 200);
        sensors();
      });
    } else {
      action = el("form", null, "checkout");
      action.dataset.start = c.channel;
      const minutes = el("input"); minutes.name = "minutes"; minutes.type = "number"; minutes.min = 1; minutes.max = 120; minutes.value = 30; minutes.style.width = "5rem";
      const reason = el("input"); reason.name = "reason"; reason.maxLength = 200; reason.placeholder = t("cal_reason");
      const go = el("button", t("cal_start")); go.type = "submit";
      action.append(minutes, el("span", t("cal_minutes")), reason, go);
      action.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const { status, data: d } = await api("POST", "/api/v1/channels/" + encodeURIComponent(c.channel) + "/calibration", { minutes: Number(minutes.value), reason: reason.value });
        const ok = status === 201;
        say("calibration-result", ok ? name + " " + t("cal_started").replace("{t}", time(d.calibration.until)) + (d.guards_power ? "。" + t("cal_guard") : "") : message(d), ok);
        sensors();
      });
    }
    body.append(row([name, state, last, action], cal ? "calibrating" : c.overdue ? "warning" : ""));
  }
}

async function trend(id) {
  const { data } = await api("GET", "/api/v1/channels/" + encodeURIComponent(id) + "/trend?hours=8");
  const box = $("trend"); box.replaceChildren();
  if (!data || !data.points.length) { box.append(el("p", t("no_data"), "muted")); return; }
  const NS = "http://www.w3.org/2000/svg";
  const W = 900, H = 240, P = 40;
  const svg = document.createElementNS(NS, "svg"); svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "trend");
  const ts = data.points.map((p) => p.t);
  const vals = data.points.flatMap((p) => [p.min, p.max]).filter((v) => v !== null);
  const levels = data.levels.map((l) => l.threshold);
  let lo = Math.min(...vals, ...levels), hi = Math.max(...vals, ...levels);
  if (hi === lo) { hi += 1; lo -= 1; }
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 60000);
  const x = (v) => P + ((v - t0) / (t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
  const line = (pts, color, width, dash) => { const p = document.createElementNS(NS, "polyline"); p.setAttribute("points", pts); p.setAttribute("fill", "none"); p.setAttribute("stroke", color); p.setAttribute("stroke-width", width); if (dash) p.setAttribute("stroke-dasharray", dash); svg.append(p); };
  const label = (text, px, py, color) => { const e = document.createElementNS(NS, "text"); e.setAttribute("x", px); e.setAttribute("y", py); e.setAttribute("fill", color); e.setAttribute("font-size", "12"); e.textContent = text; svg.append(e); };
  line(data.points.filter((p) => p.max !== null).map((p) => `${x(p.t)},${y(p.max)}`).join(" "), "#5b7a99", 1);
  line(data.points.filter((p) => p.mean !== null).map((p) => `${x(p.t)},${y(p.mean)}`).join(" "), "#9cc3ff", 2);
  const colours = { warning: "#f1c40f", alarm: "#e67e22", power_cut: "#e74c3c" };
  for (const l of data.levels) {
    line(`${P},${y(l.threshold)} ${W - P},${y(l.threshold)}`, colours[l.name] || "#aaa", 1, "6 4");
    label(t(l.name) + " " + l.threshold, W - P - 120, y(l.threshold) - 4, colours[l.name] || "#aaa");
  }
  for (const p of data.points.filter((p) => p.faults > 0)) {
    const r = document.createElementNS(NS, "rect"); r.setAttribute("x", x(p.t) - 1); r.setAttribute("y", H - P); r.setAttribute("width", 3); r.setAttribute("height", 6); r.setAttribute("fill", "#f1c40f"); svg.append(r);
  }
  label(hi.toFixed(2) + " " + data.unit, 4, P, "#8193a5");
  label(lo.toFixed(2) + " " + data.unit, 4, H - P, "#8193a5");
  box.append(svg);
}

async function roster() {
  const { data } = await api("GET", "/api/v1/roster");
  const body = $("roster-rows"); body.replaceChildren();
  for (const w of Array.isArray(data) ? data : []) body.append(row([w.badge, w.name, w.team, w.role]));
}

async function uploadRoster() {
  const file = $("roster-file").files[0];
  if (!file) return;
  const text = await file.text();
  const { status, data } = await api("POST", "/api/v1/roster", text, "text/csv; charset=utf-8");
  const out = $("roster-result"); out.replaceChildren();
  if (status === 200) { say("roster-result", JSON.stringify(data), true); roster(); return; }
  out.className = "result err";
  out.append(el("div", message(data)));
  const ul = el("ul");
  for (const l of (data && data.lines) || []) ul.append(el("li", "#" + l.line + ": " + l.message));
  out.append(ul);
}

async function beacon() {
  try {
    const { data } = await api("GET", "/api/v1/outputs");
    if (linkLost) return;
    if (data) $("beacon").className = "beacon " + data.beacon;
    const { data: h } = await api("GET", "/healthz");
    const full = !!h && h.storage === "full";
    $("storage").hidden = !full;
    $("storage").textContent = full ? t("storage_full") : "";
    if (csrf) {
      const { data: u } = await api("GET", "/api/v1/uplink");
      if (u) {
        const state = !u.enabled ? t("uplink_disabled") : u.connected ? t("uplink_on") : t("uplink_off");
        $("uplink").textContent = state + " · " + t("pending") + " " + u.pending + (u.set_aside ? " · " + t("set_aside") + " " + u.set_aside : "");
      }
    }
  } catch (_) { /* logged out */ }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("lang").addEventListener("click", () => { lang = lang === "en" ? "zh-CN" : "en"; applyLang(); });
  $("logout").addEventListener("click", async () => { await api("DELETE", "/api/v1/session"); showLogin(); });
  $("print").addEventListener("click", async () => { await people(); window.print(); });
  $("roster-upload").addEventListener("click", uploadRoster);
  $("ack-all").addEventListener("click", askAckAll);
  $("ack-all-yes").addEventListener("click", ackAll);
  $("ack-all-no").addEventListener("click", () => { $("ack-all-confirm").hidden = true; });
  $("to-roll").addEventListener("click", () => selectTab("people"));
  const tick = () => { $("clock").textContent = Common.time(new Date(), false); };
  tick();
  setInterval(tick, 1000);
  $("trend-channel").addEventListener("change", (e) => trend(e.target.value));
  document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => selectTab(b.dataset.tab)));
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const { status, data } = await api("POST", "/api/v1/session", { user: $("user").value, password: $("password").value });
    $("password").value = "";
    if (status === 200) { csrf = data.csrf; showApp(data.user); } else say("login-result", message(data) || t("wrong"), false);
  });
  applyLang();
  Live.start("/api/v1/stream", {
    onState: heard,
    onLost: () => { linkLost = true; showLost(); },
    onLive: () => { linkLost = false; $("link-lost").hidden = true; if (csrf) refresh(); beacon(); },
  });
  setInterval(beacon, 2000);
  const { status, data } = await api("GET", "/api/v1/session");
  if (status === 200) { csrf = data.csrf; showApp(data.user); } else showLogin();
});
