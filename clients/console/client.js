// The console's client view: one Switchboard client (the JS SDK) in a
// page, connected to this origin's /ws. It shows every frame with its
// mode, presence notices, the connection's states and whether a reconnect
// recovered what was sent meanwhile (SPEC §7), and delivery receipts: a
// delivery that asks for an ack gets an "ack" button (or is acked at once
// with auto-ack), a unicast may ask for a receipt, receipts are listed.

import { Switchboard } from './switchboard.js';
import { $, Log, clock, content, el, list, param, show } from './ui.js';

const MODES = { 0: 'welcome', 2: 'reply', 3: 'ack', 4: 'receipt', 100: 'unicast', 200: 'group', 300: 'broadcast', 400: 'presence' };

const frames = new Log($('frames'));
const timeline = new Log($('timeline'), 100);
/** group → clientIds seen online through presence notices. */
const peers = new Map();
let sb = null;
let sent = 0;
/** Whether this client got a welcome since Connect was pressed. */
let welcomed = false;

/** The gateway of this origin: ws(s)://host/ws, next to /console/. */
function defaultUrl() {
  const u = new URL('../ws', location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  return u.href;
}

function frame(mode, who, group, body, seq, cls, extra = null) {
  const name = MODES[mode] ?? String(mode);
  frames.add(
    el(
      'tr',
      { class: cls, dataset: { mode: String(mode) } },
      el('td', { class: 'time' }, clock()),
      el('td', {}, el('span', { class: `mode mode-${mode}` }, `${mode} ${name}`)),
      el('td', {}, who ?? ''),
      el('td', {}, group ?? ''),
      el('td', { class: 'content' }, body, extra ? ' ' : null, extra),
      el('td', { class: 'seq' }, seq ?? ''),
    ),
  );
}

/** Logs the ack (mode 3) this page sends for `msgId`. */
function acked(msgId, how) {
  frame(3, `→ gateway`, '', `ack ${msgId}${how}`, '', 'ack');
}

function moment(state, text) {
  timeline.add(el('li', { dataset: { state } }, el('span', { class: 'time' }, clock()), ' ', el('b', {}, state), ' ', text));
}

function setState(state, extra = '') {
  const badge = $('state');
  badge.textContent = extra ? `${state} · ${extra}` : state;
  badge.className = `badge state-${state}`;
  badge.dataset.state = state;
  const live = state !== 'idle' && state !== 'closed';
  $('connect').disabled = live;
  $('disconnect').disabled = !live;
  $('send').disabled = !live;
  for (const id of ['biz', 'client-id', 'groups', 'token', 'auto-ack']) $(id).disabled = live;
}

function showPeers() {
  const items = [];
  for (const [group, ids] of [...peers.entries()].sort()) {
    if (ids.size === 0) continue;
    items.push(el('li', {}, el('b', {}, group === '' ? '(bizCode)' : group), ': ', [...ids].sort().join(', ')));
  }
  $('presence').replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'no notices yet')]));
}

function onState(s) {
  const w = s.welcome;
  switch (s.state) {
    case 'connecting':
      setState('connecting', `attempt ${s.attempt ?? 1}`);
      moment('connecting', `attempt ${s.attempt ?? 1}`);
      break;
    case 'connected':
      setState('connected', w?.node ?? '');
      moment('connected', `to ${w?.node ?? '?'}`);
      $('who').textContent = w?.clientId ?? '–';
      $('node').textContent = w?.node ?? '–';
      $('joined').textContent = w?.groups?.length ? w.groups.join(', ') : '(none)';
      $('position').textContent = w?.epoch ? `${w.epoch} / ${w.seq}` : 'history off';
      welcomed = true;
      frame(
        0,
        w?.node,
        '',
        `clientId ${w?.clientId}, groups [${(w?.groups ?? []).join(', ')}], heartbeat ${w?.heartbeatSec}s` +
          (w?.recovered === undefined ? '' : `, recovered ${w.recovered}`),
        w?.seq,
        'welcome',
      );
      break;
    case 'reconnecting': {
      const why = [s.code, s.reason, s.status ? `HTTP ${s.status}` : ''].filter(Boolean).join(' ');
      setState('reconnecting', String(s.code ?? ''));
      // Browsers hide why a handshake failed (every refusal is 1006).
      const hint = welcomed || s.status ? '' : ' (refused or unreachable: check the token and the origin allow-list)';
      moment('reconnecting', `${why}${hint}; next attempt in ${Math.round(s.delayMs ?? 0)} ms`);
      break;
    }
    case 'closed': {
      const why = [s.code, s.reason, s.status ? `HTTP ${s.status}` : ''].filter(Boolean).join(' ');
      setState('closed', String(s.code ?? ''));
      moment('closed', why);
      break;
    }
    default:
      setState(s.state);
  }
}

function onRecovered(r) {
  const badge = $('recovered');
  badge.hidden = false;
  badge.textContent = r.recovered ? 'recovered' : 'not recovered: reload state';
  badge.className = `badge ${r.recovered ? 'ok' : 'warn'}`;
  badge.dataset.recovered = String(r.recovered);
  moment('recovered', `recovered: ${r.recovered}${r.seq !== undefined ? ` (from seq ${r.seq})` : ''}`);
}

function onMessage(m) {
  const sentAt = m.ts ? ` (sent ${clock(m.ts)})` : '';
  let button = null;
  if (m.ack !== undefined) {
    if ($('auto-ack').checked) {
      // The SDK acks once the listeners returned (autoAck).
      acked(m.msgId, ' (auto)');
    } else {
      button = el('button', { type: 'button', class: 'small ack', dataset: { msgId: m.msgId ?? '' } }, 'ack');
      button.addEventListener('click', () => {
        m.ack();
        button.disabled = true;
        button.textContent = 'acked';
        acked(m.msgId, '');
      });
    }
  }
  const asks = m.ack !== undefined ? ' · asks for an ack' : '';
  frame(m.mode, m.from, m.group ?? '', show(m.content) + sentAt + asks, m.seq, 'delivery', button);
}

function onReceipt(r) {
  const who = [...r.acked, ...r.unacked].join(', ');
  frame(4, `← ${who}`, '', `receipt ${r.msgId}: acked [${r.acked.join(', ')}], unacked [${r.unacked.join(', ')}]`, '', 'receipt');
}

function onPresence(p) {
  const key = p.group ?? '';
  if (!peers.has(key)) peers.set(key, new Set());
  if (p.event === 'online') peers.get(key).add(p.clientId);
  else peers.get(key).delete(p.clientId);
  showPeers();
  frame(400, p.clientId, p.group ?? '', p.event, '', `presence ${p.event}`);
}

function connect() {
  const groups = list($('groups').value);
  const token = $('token').value;
  sb = new Switchboard({
    url: defaultUrl(),
    bizCode: $('biz').value.trim(),
    clientId: $('client-id').value.trim() || undefined,
    groups,
    token: token === '' ? undefined : token,
    autoAck: $('auto-ack').checked,
  });
  peers.clear();
  welcomed = false;
  showPeers();
  $('recovered').hidden = true;
  sb.on('state', onState);
  sb.on('recovered', onRecovered);
  sb.on('message', onMessage);
  sb.on('presence', onPresence);
  sb.on('receipt', onReceipt);
  sb.connect().catch((e) => moment('closed', `connect failed: ${e.message ?? e}`));
}

function disconnect() {
  sb?.close();
}

function mode() {
  return Number(document.querySelector('input[name="mode"]:checked')?.value ?? 100);
}

function onModeChange() {
  const m = mode();
  const label = $('target-label');
  label.hidden = m === 300;
  label.firstChild.textContent = m === 200 ? 'to group ' : 'to clientId ';
  // A receipt is for a unicast only.
  $('receipt-label').hidden = m !== 100;
}

async function send(ev) {
  ev.preventDefault();
  if (!sb) return;
  const m = mode();
  const to = $('target').value.trim();
  const target = m === 100 ? { clientId: to } : m === 200 ? { group: to } : { broadcast: true };
  const body = content($('content').value);
  const msgId = `console-${Date.now().toString(36)}-${++sent}`;
  const where = m === 300 ? 'everyone' : to;
  const ack = m === 100 && $('want-receipt').checked;
  try {
    const r = await sb.send(target, body, { msgId, ack });
    frame(2, `→ ${where}`, m === 200 ? to : '', `${MODES[m]} ${show(body)}: delivered to ${r.recipients}`, '', 'reply ok');
  } catch (e) {
    frame(2, `→ ${where}`, m === 200 ? to : '', `${MODES[m]} ${show(body)}: refused ${e.code ?? ''} ${e.message ?? e}`, '', 'reply error');
  }
}

$('url').textContent = defaultUrl();
for (const [field, id] of [['bizCode', 'biz'], ['clientId', 'client-id'], ['groups', 'groups']]) {
  const v = param(field);
  if (v) $(id).value = v;
}
$('connect').addEventListener('click', connect);
// Enter in a connect field connects, as a form would (there is none: see
// client.html).
for (const input of $('connect-form').querySelectorAll('input')) {
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !$('connect').disabled) connect();
  });
}
$('disconnect').addEventListener('click', disconnect);
$('send-form').addEventListener('submit', send);
$('clear').addEventListener('click', () => frames.clear());
for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener('change', onModeChange);
onModeChange();
showPeers();
setState('idle');
