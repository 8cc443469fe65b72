// The web client of dicomweb-nb's DICOMweb proxy: search a remote server, retrieve from it, send to it.
// Every URL is relative to this page ({root}/app/client/), so it works under Jupyter's base_url and
// behind reverse proxies. Authentication: Jupyter's cookie (POSTs carry the _xsrf cookie as
// X-XSRFToken), or a ?token= in the page URL, sent on as an Authorization header (dicomweb-nb serve).
"use strict";

const ROOT = new URL("../../", window.location.href);  // the DICOMweb root
const TOKEN = new URLSearchParams(window.location.search).get("token");
const TAG = {
  PatientName: "00100010", PatientID: "00100020", StudyDate: "00080020", StudyDescription: "00081030",
  ModalitiesInStudy: "00080061", StudyInstanceUID: "0020000D", SeriesInstanceUID: "0020000E",
  NumberOfStudyRelatedSeries: "00201206", NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209", Modality: "00080060", SeriesNumber: "00200011",
  SeriesDescription: "0008103E",
};
const ACTIVE = new Set(["Pending", "Running"]);
const state = { server: null, pollTimer: null, seenDone: null };

function $(selector) { return document.querySelector(selector); }

function xsrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function call(method, path, body) {
  const headers = { Accept: "application/json, application/dicom+json" };
  if (TOKEN) headers.Authorization = "token " + TOKEN;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    const xsrf = xsrfToken();
    if (xsrf) headers["X-XSRFToken"] = xsrf;
  }
  const response = await fetch(new URL(path, ROOT), {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (!response.ok) {
    let message = (data && (data.message || data.Message)) || `${response.status} ${response.statusText}`;
    if (data && data.RemoteStatus) message += ` (remote status ${data.RemoteStatus})`;
    throw new Error(message);
  }
  return data;
}

function say(text, isError) {
  const el = $("#message");
  el.textContent = text || "";
  el.className = isError ? "error" : "";
}

function value(obj, key) {
  const element = obj && obj[TAG[key]];
  const values = element && element.Value;
  if (!values || !values.length) return "";
  const first = values[0];
  if (first && typeof first === "object") return first.Alphabetic || "";
  return values.length > 1 ? values.join("\\") : String(first);
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

// One table row: its UID in data-uid, a cell per attribute, the UID, then an actions cell.
function tableRow(body, item, uid, keywords, ...actions) {
  const row = document.createElement("tr");
  row.dataset.uid = uid;
  for (const keyword of keywords) cell(row, value(item, keyword));
  cell(row, uid, "uid");
  const cellOfActions = cell(row, "", "actions");
  actions.forEach((action, index) => {
    if (index) cellOfActions.appendChild(document.createTextNode(" "));
    cellOfActions.appendChild(action);
  });
  body.appendChild(row);
  return row;
}

function button(label, onClick, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (title) b.title = title;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await onClick(); } catch (e) { say(e.message, true); } finally { b.disabled = false; }
  });
  return b;
}

function serverPath(op) { return `servers/${encodeURIComponent(state.server)}/${op}`; }

// -- servers ---------------------------------------------------------------------------------------
async function loadServers() {
  const servers = await call("GET", "servers?expand");
  const select = $("#server");
  select.textContent = "";
  const names = Object.keys(servers);
  for (const name of names) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.appendChild(option);
  }
  if (!names.length) {
    say("No remote DICOMweb server is configured: add one with PUT servers/{name} or c.DicomWeb.servers.", true);
    $("#search").disabled = true;
    return;
  }
  const remembered = sessionStorage.getItem("dicomweb-nb-server");
  state.server = names.includes(remembered) ? remembered : names[0];
  select.value = state.server;
  showServer(servers);
  select.addEventListener("change", () => {
    state.server = select.value;
    sessionStorage.setItem("dicomweb-nb-server", state.server);
    showServer(servers);
    $("#studies").hidden = true;
    $("#series-panel").hidden = true;
  });
}

function showServer(servers) {
  const entry = servers[state.server] || {};
  $("#server-info").textContent = entry.Url ? entry.Url : "";
  document.querySelectorAll(".send-label").forEach((el) => { el.textContent = state.server; });
}

// -- remote search ---------------------------------------------------------------------------------
async function searchStudies(event) {
  if (event) event.preventDefault();
  const args = { limit: "200", includefield: "NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances,ModalitiesInStudy" };
  for (const input of $("#search-form").querySelectorAll("input")) {
    if (input.value.trim()) args[input.name] = input.value.trim();
  }
  say(`Searching ${state.server}...`);
  const studies = (await call("POST", serverPath("get"), { Uri: "/studies", Arguments: args })) || [];
  const body = $("#studies tbody");
  body.textContent = "";
  for (const study of studies) {
    const uid = value(study, "StudyInstanceUID");
    const row = tableRow(body, study, uid,
      ["PatientName", "PatientID", "StudyDate", "StudyDescription", "ModalitiesInStudy",
       "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
      button("Series", () => showSeries(uid, row), "List the series of this study"),
      button("Retrieve", () => retrieve({ Study: uid }), "Copy this study into this server"));
  }
  $("#studies").hidden = false;
  $("#series-panel").hidden = true;
  say(`${studies.length} ${studies.length === 1 ? "study" : "studies"} found on ${state.server}.`);
}

async function showSeries(studyUid, row) {
  document.querySelectorAll("#studies tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  const series = (await call("POST", serverPath("get"), {
    Uri: `/studies/${studyUid}/series`,
    Arguments: { includefield: "NumberOfSeriesRelatedInstances,SeriesDescription" },
  })) || [];
  series.sort((a, b) => Number(value(a, "SeriesNumber") || 0) - Number(value(b, "SeriesNumber") || 0));
  const body = $("#series tbody");
  body.textContent = "";
  for (const item of series) {
    const uid = value(item, "SeriesInstanceUID");
    tableRow(body, item, uid, ["SeriesNumber", "Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances"],
      button("Retrieve", () => retrieve({ Study: studyUid, Series: uid }), "Copy this series into this server"));
  }
  $("#series-study").textContent = studyUid;
  $("#series-panel").hidden = false;
}

async function retrieve(resource) {
  const answer = await call("POST", serverPath("retrieve"), { Resources: [resource], Synchronous: false });
  say(`Retrieve from ${state.server} started (job ${answer.ID}).`);
  await refreshJobs();
}

// -- local studies and STOW ------------------------------------------------------------------------
async function loadLocal() {
  const studies = (await call("GET", "studies?limit=200&includefield=NumberOfStudyRelatedInstances")) || [];
  const body = $("#local-studies tbody");
  body.textContent = "";
  for (const study of studies) {
    const uid = value(study, "StudyInstanceUID");
    const b = button("Send to ", () => stow(uid), "Send this study to the remote server by STOW-RS");
    b.className = "secondary send";
    const label = document.createElement("span");
    label.className = "send-label";
    label.textContent = state.server || "";
    b.appendChild(label);
    tableRow(body, study, uid, ["PatientName", "StudyDate", "StudyDescription", "NumberOfStudyRelatedInstances"], b);
  }
}

async function stow(studyUid) {
  if (!state.server) throw new Error("pick a remote server first");
  const answer = await call("POST", serverPath("stow"), { Resources: [{ Study: studyUid }], Synchronous: false });
  say(`Sending study to ${state.server} (job ${answer.ID}).`);
  await refreshJobs();
}

// -- jobs ------------------------------------------------------------------------------------------
function jobDetails(job) {
  const c = job.Content || {};
  const parts = [];
  if (c.RemoteServer) parts.push(c.RemoteServer);
  if (job.Type === "DicomWebWadoRetrieveClient") {
    parts.push(`${c.ReceivedInstancesCount || 0}${c.InstancesCount !== undefined ? " / " + c.InstancesCount : ""} instances received`);
  } else if (job.Type === "DicomWebStowClient") {
    parts.push(`${(c.Instances || []).length} / ${c.InstancesCount || 0} instances sent`);
  }
  return parts.join(": ");
}

async function refreshJobs() {
  let jobs;
  try {
    jobs = (await call("GET", "jobs?expand")) || [];
  } catch (e) {
    say(e.message, true);
    return;
  }
  jobs.reverse();  // newest first
  const body = $("#jobs tbody");
  body.textContent = "";
  let active = false;
  for (const job of jobs.slice(0, 50)) {
    const row = document.createElement("tr");
    row.dataset.job = job.ID;
    row.dataset.state = job.State;
    cell(row, job.ID.slice(0, 8), "uid").title = job.ID;
    cell(row, job.Type.replace("DicomWeb", "").replace("Client", ""));
    cell(row, job.State + (job.Cancelled ? " (cancelled)" : ""), "state state-" + job.State);
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = job.Progress;
    const progressCell = cell(row, "");
    progressCell.appendChild(progress);
    progressCell.append(` ${job.Progress}%`);
    const details = cell(row, jobDetails(job));
    if (job.State === "Failure") {
      const error = document.createElement("div");
      error.className = "error-text";
      error.textContent = job.ErrorDescription + (job.ErrorDetails ? ` - ${job.ErrorDetails}` : "");
      details.appendChild(error);
    }
    const actions = cell(row, "", "actions");
    if (ACTIVE.has(job.State)) {
      active = true;
      actions.appendChild(button("Cancel", async () => {
        await call("POST", `jobs/${job.ID}/cancel`, {});
        await refreshJobs();
      }));
    }
    body.appendChild(row);
  }
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(refreshJobs, active ? 1000 : 5000);
  // A retrieve that just finished brought new studies: show them.
  const done = jobs.filter((j) => j.Type === "DicomWebWadoRetrieveClient" && j.State === "Success").map((j) => j.ID);
  if (state.seenDone !== null && done.some((id) => !state.seenDone.has(id))) {
    loadLocal().catch((e) => say(e.message, true));
  }
  state.seenDone = new Set(done);
}

async function start() {
  $("#search-form").addEventListener("submit", (event) => searchStudies(event).catch((e) => say(e.message, true)));
  $("#refresh-local").addEventListener("click", () => loadLocal().catch((e) => say(e.message, true)));
  try {
    await loadServers();
  } catch (e) {
    say(`Cannot list the remote servers: ${e.message}`, true);
  }
  await Promise.all([loadLocal().catch((e) => say(e.message, true)), refreshJobs()]);
}

start();
