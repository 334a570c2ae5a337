// The pages of streamkit's UI: the list of queries (/) and one query's live page
// (/query/<id>). Both poll the JSON API once a second; nothing else is fetched.
"use strict";

const POLL_MS = 1000;
const PHASES = ["fetch", "decode", "execute", "state", "sink", "commit"];

function $(sel) { return document.querySelector(sel); }
function int(v) { return v == null ? "-" : Number(v).toLocaleString("en-US"); }
function dec(v) {
  return v == null ? "-" : Number(v).toLocaleString("en-US",
    {minimumFractionDigits: 1, maximumFractionDigits: 1});
}
function isoTime(t) { return t == null ? "-" : t.iso.replace("T", " ").replace("+00:00", "Z"); }

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

// Fill <tbody> of table `id` with rows (arrays of cell texts); an empty list shows `none`.
function fillTable(id, rows, none) {
  const body = document.querySelector(`#${id} tbody`);
  body.textContent = "";
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, none || "none", "sk-none");
    td.colSpan = document.querySelectorAll(`#${id} thead th`).length || 1;
    body.appendChild(tr);
    return;
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    r.forEach((v, i) => cell(tr, v, i > 0 && typeof v === "string" && /^[\d,.\-]+$/.test(v) ?
      "num" : ""));
    body.appendChild(tr);
  }
}

function setField(name, text) {
  const node = document.querySelector(`[data-field="${name}"]`);
  if (node) node.textContent = text;
}

// ---- the list of queries ----------------------------------------------------------------
async function pollIndex() {
  try {
    const reply = await fetch("/api/queries", {cache: "no-store"});
    const queries = await reply.json();
    fillTable("queries", queries.map((q) => [q.name, q.status, int(q.last_batch),
      int(q.input_rows), isoTime(q.started), q.id]), "no query has run in this process yet");
    document.querySelectorAll("#queries tbody tr").forEach((tr, i) => {
      const q = queries[i];
      if (!q) return;
      const first = tr.firstChild;
      first.textContent = "";
      const a = document.createElement("a");
      a.href = `/query/${encodeURIComponent(q.id)}`;
      a.textContent = q.name;
      first.appendChild(a);
    });
    $("#updated").textContent = new Date().toISOString().slice(11, 19) + "Z";
  } catch (e) {
    $("#updated").textContent = "cannot reach the process: " + e;
  }
}

// ---- one query --------------------------------------------------------------------------
function renderTiles(q) {
  const p = q.last_progress;
  setField("status", q.status + (q.error ? `: ${q.error}` : ""));
  setField("started", isoTime(q.started));
  setField("batches", int(q.totals.batches));
  setField("total_input_rows", int(q.totals.input_rows));
  setField("total_late_rows", int(q.totals.late_rows));
  setField("total_dead_letters", int(q.totals.dead_letters));
  if (!p) return;
  setField("batch_id", int(p.batch_id));
  setField("num_input_rows", int(p.num_input_rows));
  setField("input_rows_per_second", dec(p.input_rows_per_second));
  setField("processed_rows_per_second", dec(p.processed_rows_per_second));
  setField("duration_total_ms", dec(p.durations_ms.total));
  setField("watermark", isoTime(p.watermark));
  setField("state_rows", int(p.state_rows));
  setField("late_rows", int(p.late_rows));
  setField("dead_letters", int(p.dead_letters));
  setField("output_rows", int(p.output_rows));
}

function renderCharts(h) {
  const x = h.batch_id;
  SkCharts.line($("#chart-rates"), {title: "rows/s", x, yUnit: "", series: [
    {name: "input rows/s", values: h.input_rate},
    {name: "processed rows/s", values: h.processed_rate}]});
  SkCharts.line($("#chart-phases"), {title: "ms", x, yUnit: "ms", stacked: true,
    series: PHASES.map((k) => ({name: k, values: h["phase_" + k]}))});
  SkCharts.line($("#chart-event-time"), {title: "event time", x, yTime: true, series: [
    {name: "newest event time", values: h.newest_event},
    {name: "watermark", values: h.watermark}]});
  SkCharts.line($("#chart-lag"), {title: "lag", x, yUnit: "ms",
    series: h.lag_partitions.map((k, i) => ({name: k, values: h.lag_ms[i]}))});
  SkCharts.line($("#chart-rejects"), {title: "rows", x, series: [
    {name: "late rows", values: h.late_rows},
    {name: "dead letters", values: h.dead_letters}]});
}

function renderPartitions(q) {
  const parts = q.last_progress ? q.last_progress.partitions : [];
  fillTable("partitions", parts.map((x) => [x.partition, x.owner || "-", int(x.records),
    x.lag_ms == null ? "-" : int(x.lag_ms), x.state, int(x.consecutive_errors),
    x.last_error || ""]), "no partition reported");
}

function renderSource(q) {
  const box = $("#source");
  const s = q.source;
  box.hidden = !s;
  if (!s) return;
  $("#source-error").textContent = s.error || "";
  $("#source-title").textContent = s.title || "source";
  fillTable("workers", (s.workers || []).map((w) => [w.worker, int(w.leases),
    w.shards.join(", "), w.self ? "this process" : ""]), "no worker holds a lease");
  fillTable("leases", (s.leases || []).map((l) => [l.shard, l.owner || "(free)",
    int(l.counter), l.checkpoint, l.lag_ms == null ? "-" : int(l.lag_ms)]), "no lease");
}

function renderSide(q) {
  const side = q.side;
  fillTable("dead-reasons", Object.entries(side.dead_letters_by_reason).map(([r, n]) =>
    [r, int(n)]), "no dead letters");
  fillTable("dead-sample", side.dead_letter_sample.map((d) => [int(d.batch_id), d.partition,
    d.position, d.reason, d.raw]), "no dead letters");
  const late = side.late_row_sample;
  const cols = late.length ? Object.keys(late[0]) : [];
  const head = $("#late-sample thead tr");
  head.textContent = "";
  for (const c of cols.length ? cols : ["late rows"]) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  fillTable("late-sample", late.map((r) => cols.map((c) => r[c])), "no late rows");
}

function renderCheckpoint(q) {
  const c = q.checkpoint;
  setField("checkpoint_location", c.location || "(none: nothing is checkpointed)");
  setField("committed_batch", c.committed_batch == null ? "-" : int(c.committed_batch));
  fillTable("offsets", Object.entries(c.offsets).map(([k, v]) => [k, v]),
    q.source && q.source.leases ? "kept in the lease table (above)" : "none");
}

async function pollQuery(key) {
  try {
    const reply = await fetch(`/api/queries/${encodeURIComponent(key)}`, {cache: "no-store"});
    if (!reply.ok) {
      $("#updated").textContent = `query ${key}: ${reply.status} ${await reply.text()}`;
      return;
    }
    const q = await reply.json();
    document.title = `${q.name} · streamkit`;
    $("#name").textContent = q.name;
    renderTiles(q);
    renderCharts(q.history);
    renderPartitions(q);
    renderSource(q);
    renderSide(q);
    renderCheckpoint(q);
    $("#updated").textContent = new Date().toISOString().slice(11, 19) + "Z";
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    $("#updated").textContent = "cannot reach the process: " + e;
  }
}

function every(fn) {
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try { await fn(); } finally { busy = false; }
  };
  tick();
  setInterval(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "query") {
    const key = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
    every(() => pollQuery(key));
  } else {
    every(pollIndex);
  }
});
