// The console's admin view: the HTTP API of this origin (a router, or a
// standalone) with the API key typed into the page. The key stays in this
// page's memory: it is never stored, put in a URL or sent anywhere but in
// the Authorization header of this origin's API calls.

import { $, Log, clock, el, show } from './ui.js';

const REFRESH_MS = 2000;
/** A call not answered this long fails (so a hung call never blocks the
 * refreshes for good). */
const CALL_TIMEOUT_MS = 5000;
const calls = new Log($('calls'), 200);
let timer = null;
let busy = false;

/** `POST /api/websocket/<call>` on this origin; the `{code,msg,data}` answer
 * with the HTTP status. Every call is logged; refreshes only when they fail. */
async function api(call, body = {}, quiet = false, waitMs = 0) {
  const url = new URL(`../api/websocket/${call}`, location.href);
  let status = 0;
  let answer;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Authorization: `Bearer ${$('key').value}`,
        systemId: $('biz').value.trim(),
      },
      body: JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS + waitMs),
    });
    status = res.status;
    answer = await res.json().catch((e) =>
      e?.name === 'TimeoutError'
        ? { code: -1, msg: `no answer in ${CALL_TIMEOUT_MS} ms`, data: null }
        : { code: status, msg: 'not JSON', data: null },
    );
  } catch (e) {
    const msg = e?.name === 'TimeoutError' ? `no answer in ${CALL_TIMEOUT_MS} ms` : `network error: ${e.message ?? e}`;
    answer = { code: -1, msg, data: null };
  }
  if (!quiet || answer.code !== 0) {
    const ok = answer.code === 0;
    calls.add(
      el(
        'tr',
        { class: ok ? 'ok' : 'error', dataset: { call } },
        el('td', { class: 'time' }, clock()),
        el('td', {}, call),
        el('td', {}, status || '–'),
        el('td', {}, answer.code),
        el('td', { class: 'content' }, ok ? show(answer.data) : answer.msg),
      ),
    );
  }
  return { status, ...answer };
}

function setStatus(text, cls) {
  const s = $('status');
  s.textContent = text;
  s.className = `badge ${cls}`;
}

function closeButton(clientId) {
  const b = el('button', { type: 'button', class: 'small danger', dataset: { client: clientId } }, 'close');
  b.addEventListener('click', async () => {
    await api('close_client', { clientId });
    await refresh();
  });
  return b;
}

function rows(tbody, items, empty) {
  tbody.replaceChildren(...(items.length ? items : [el('tr', {}, el('td', { class: 'muted', colspan: 2 }, empty))]));
}

/** Reloads the lists: online (in the selected group), groups, nodes. */
async function refresh() {
  if (busy || $('key').value === '') return;
  busy = true;
  try {
    const filter = $('group-filter').value;
    const [online, groups, nodes] = await Promise.all([
      api('get_online_list', filter ? { groupName: filter } : {}, true),
      api('get_all_groups', {}, true),
      api('get_node_counts', {}, true),
    ]);
    const failed = [online, groups, nodes].find((a) => a.code !== 0);
    if (failed) {
      // A wrong key (401) or bizCode outside its scope (403) will not get
      // better by asking again every 2 s: auto-refresh stops.
      const refused = failed.status === 401 || failed.status === 403;
      if (refused && $('auto').checked) {
        $('auto').checked = false;
        schedule();
      }
      setStatus(`${failed.status || 'network'}: ${failed.msg}${refused ? ' (auto-refresh stopped)' : ''}`, 'warn');
      return;
    }
    setStatus(`${$('biz').value.trim()} · ${clock()}`, 'ok');
    $('online-count').textContent = String(online.data.count);
    rows(
      $('online'),
      online.data.list.map((c) => el('tr', { dataset: { client: c } }, el('td', {}, c), el('td', {}, closeButton(c)))),
      'nobody online',
    );
    $('group-count').textContent = String(groups.data.count);
    rows(
      $('groups'),
      groups.data.list.map((g) => el('tr', { dataset: { group: g.groupName } }, el('td', {}, g.groupName), el('td', {}, g.count))),
      'no groups',
    );
    const select = $('group-filter');
    const names = groups.data.list.map((g) => g.groupName);
    if (filter && !names.includes(filter)) names.push(filter);
    const shown = [...select.options].slice(1).map((o) => o.value);
    if (shown.join('\n') !== names.join('\n')) {
      select.replaceChildren(el('option', { value: '' }, 'whole bizCode'), ...names.map((n) => el('option', { value: n }, n)));
      select.value = filter;
    }
    const total = nodes.data.list.reduce((n, x) => n + x.count, 0);
    $('node-total').textContent = `${nodes.data.count} · ${total} clients`;
    rows(
      $('nodes'),
      nodes.data.list.map((n) => el('tr', { dataset: { node: n.node } }, el('td', {}, n.node), el('td', {}, n.count))),
      'no clients on any node',
    );
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = $('auto').checked ? setInterval(refresh, REFRESH_MS) : null;
}

function kind() {
  return document.querySelector('input[name="kind"]:checked')?.value ?? 'send_to_client';
}

function onKindChange() {
  const k = kind();
  const label = $('target-label');
  label.hidden = k === 'send_to_system';
  label.firstChild.textContent = k === 'send_to_group' ? 'groupName ' : 'clientId ';
  // Delivery receipts are for sends to clients.
  $('ack-label').hidden = k !== 'send_to_client';
}

async function send(ev) {
  ev.preventDefault();
  const k = kind();
  const body = { sendUserId: $('from').value, code: 0, msg: $('msg').value };
  const data = $('data').value.trim();
  if (data !== '') {
    try {
      body.data = JSON.parse(data);
    } catch {
      body.data = data;
    }
  }
  if (k === 'send_to_client') body.clientId = $('target').value.trim();
  if (k === 'send_to_group') body.groupName = $('target').value.trim();
  // The answer waits for the receipt: up to ackTimeoutMs more.
  const ackMs = k === 'send_to_client' ? Number($('ack-timeout').value || 0) : 0;
  if (ackMs > 0) body.ackTimeoutMs = ackMs;
  await api(k, body, false, ackMs);
}

function load() {
  schedule();
  refresh();
}

$('load').addEventListener('click', load);
// Enter in the key or bizCode field loads, as a form would (there is none:
// see admin.html).
for (const id of ['key', 'biz']) {
  $(id).addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') load();
  });
}
$('forget').addEventListener('click', () => {
  $('key').value = '';
  clearInterval(timer);
  setStatus('key forgotten', 'state-idle');
});
$('auto').addEventListener('change', schedule);
$('group-filter').addEventListener('change', refresh);
$('send-form').addEventListener('submit', send);
for (const r of document.querySelectorAll('input[name="kind"]')) r.addEventListener('change', onKindChange);
onKindChange();
