// facepair pairing page: shows the code, follows the login live (Server-Sent Events, with
// long-polling as the fallback), and tells the embedding page when the person is approved.
'use strict';

const token = decodeURIComponent(location.pathname.split('/').pop());
const config = JSON.parse(document.body.dataset.config || '{}');
const api = `/v1/watch/${encodeURIComponent(token)}`;
const KINDS = ['login_created', 'attempt_issued', 'attempt_succeeded', 'attempt_failed', 'attempt_canceled',
  'attempt_expired', 'attempt_superseded', 'login_canceled', 'login_redeemed', 'approval_expired'];
const REASONS = {
  FACE_MISMATCH: 'The face in the selfie did not match the person on record.',
  FAKE_FACE: 'The selfie looked like a photo, a screen or a mask.',
  VIRTUAL_CAMERA: 'A virtual camera was detected. Use your phone\u2019s own camera.',
  FACE_NOT_FOUND: 'No face could be found in the selfie.',
  TOO_MANY_FACES: 'More than one face was in the picture.',
  FACE_ANGLE_TOO_LARGE: 'The face was turned too far. Look straight at the camera.',
  FACE_TOO_SMALL: 'The face was too far from the camera.',
  FACE_CLOSE_TO_BORDER: 'The face was too close to the edge of the picture.',
  FACE_TOO_CLOSE: 'The face was too close to the camera.',
  FACE_CROPPED: 'Part of the face was cut off.',
  FACE_IS_OCCLUDED: 'Something covered part of the face.',
  EYES_CLOSED: 'The eyes were closed.',
  FAILED_TO_PREDICT_LANDMARKS: 'The face could not be read clearly. Try better light.',
  PROBABILITY_TOO_SMALL: 'The check was not sure enough. Try again in good light.',
  FAKE_CAPTURE: 'The capture did not look genuine.',
  DUPLICATE_IMAGE: 'The same picture was used before. Take a new selfie.',
};

const $ = (id) => document.getElementById(id);
let state = null;
let clockOffset = 0;
let countdownTimer = null;
let events = null;
let polling = false;
let announced = '';
let notified = false;

function show(id, visible) { $(id).hidden = !visible; }
function announce(text) { if (text !== announced) { announced = text; $('announce').textContent = text; } }
function problem(text) { $('problem').textContent = text || ''; show('problem', Boolean(text)); }

function renderCode(digits) {
  const code = $('code');
  code.replaceChildren(...(digits.match(/.{1,4}/g) || []).map((part) => {
    const span = document.createElement('span');
    span.className = 'group';
    span.textContent = part;
    return span;
  }));
  code.setAttribute('aria-label', `Code: ${digits.split('').join(' ')}`);
}

function tick() {
  if (!state || state.status !== 'pending') return;
  const left = Math.max(0, Math.round((Date.parse(state.attempt.expires_at) - (Date.now() + clockOffset)) / 1000));
  const minutes = Math.floor(left / 60);
  const seconds = String(left % 60).padStart(2, '0');
  $('countdown').textContent = left > 0 ? `This code works for ${minutes}:${seconds} more.` : 'This code has expired.';
  $('countdown').parentElement.classList.toggle('soon', left <= 30);
  if (left === 0) refresh();
}

function outcome(kind, icon, headline, detail) {
  const box = $('outcome');
  box.className = kind;
  $('icon').textContent = icon;
  $('headline').textContent = headline;
  $('detail').textContent = detail;
  show('outcome', true);
  announce(`${headline} ${detail}`);
}

function render(next) {
  if (state && next.event_seq < state.event_seq) return;
  state = next;
  clockOffset = Date.parse(next.server_time) - Date.now();
  problem('');
  const pending = next.status === 'pending';
  show('pending', pending);
  show('outcome', !pending);
  show('new-code', next.can_request_new_code && !pending);
  clearInterval(countdownTimer);
  if (pending) {
    renderCode(next.attempt.digit_string || '');
    announce('Enter the code shown in the iDenfy app on your phone.');
    tick();
    countdownTimer = setInterval(tick, 1000);
  } else if (next.status === 'approved' || next.status === 'redeemed') {
    outcome('ok', '\u2713', 'Face confirmed.', 'You are being signed in.');
    approved();
  } else if (next.status === 'failed' && next.attempt.status === 'canceled') {
    outcome('bad', '!', 'The check was canceled in the app.', next.can_request_new_code ? 'Get a new code to try again.' : '');
  } else if (next.status === 'failed') {
    const reason = REASONS[next.attempt.fail_reason] || 'The face check did not pass.';
    outcome('bad', '!', 'That did not work.', `${reason} ${next.can_request_new_code ? 'Get a new code to try again.' : ''}`.trim());
  } else if (next.status === 'expired') {
    outcome('bad', '\u231B', 'The code expired.', 'It was not used in time. Get a new code to try again.');
  } else if (next.status === 'exhausted') {
    const reason = next.attempt.fail_reason ? `${REASONS[next.attempt.fail_reason] || ''} ` : '';
    outcome('bad', '!', 'No more tries for this login.', `${reason}Start again from your computer.`.trim());
  } else if (next.status === 'canceled') {
    outcome('bad', '\u2715', 'This login was canceled.', 'Start again from your computer if you still want to log in.');
  }
  const settled = ['approved', 'redeemed', 'canceled', 'exhausted'].includes(next.status)
    || (next.status === 'expired' && !next.can_request_new_code);
  if (settled && events) {
    events.close();
    events = null;
  }
}

function approved() {
  if (notified) return;
  notified = true;
  // the platform's opaque state, never the login id: the backend redeems the login it keeps
  const message = { type: 'facepair:approved', state: state.state ?? null };
  if (window.parent !== window) {
    for (const origin of config.parent_origins || []) window.parent.postMessage(message, origin);
  }
  if (config.return_url) {
    const url = new URL(config.return_url);
    if (state.state != null) url.searchParams.set('state', state.state);
    setTimeout(() => { (window.parent !== window ? window.top : window).location.assign(url.toString()); }, 1200);
  }
}

async function refresh() {
  const response = await fetch(api, { cache: 'no-store' }).catch(() => null);
  if (!response) { problem('Cannot reach the server. Retrying\u2026'); return false; }
  if (response.status === 404) {
    outcome('bad', '?', 'This link is not valid.', 'Start the login again from your computer.');
    show('pending', false);
    return false;
  }
  if (response.status === 429) return true;
  if (!response.ok) { problem('The server is busy. Retrying\u2026'); return true; }
  render(await response.json());
  return true;
}

function follow() {
  if (!('EventSource' in window)) { poll(); return; }
  let opened = false;
  let failures = 0;
  events = new EventSource(`${api}/events`);
  events.onopen = () => { opened = true; failures = 0; problem(''); };
  for (const kind of KINDS) events.addEventListener(kind, (e) => render(JSON.parse(e.data)));
  events.onerror = () => {
    failures += 1;
    // the browser gave up on the stream for good (an answer other than 200: the server was
    // busy or unavailable), or there is no stream at all (a proxy that buffers, an old
    // browser): fall back to long-polling, which retries by itself
    const gaveUp = events && events.readyState === EventSource.CLOSED;
    if (events && (gaveUp || (!opened && failures >= 3))) { events.close(); events = null; poll(); }
  };
}

async function poll() {
  if (polling) return;
  polling = true;
  let etag = null;
  while (state && !['approved', 'redeemed', 'canceled', 'exhausted'].includes(state.status)) {
    const interval = (state.poll_interval_seconds || 2);
    const headers = etag ? { 'if-none-match': etag } : {};
    const response = await fetch(`${api}?wait=25`, { headers, cache: 'no-store' }).catch(() => null);
    if (response && response.status === 200) { etag = response.headers.get('etag'); render(await response.json()); }
    const wait = response && response.status === 429 ? Number(response.headers.get('retry-after') || interval) : interval;
    if (!response || response.status >= 500) problem('Cannot reach the server. Retrying\u2026');
    await new Promise((ok) => setTimeout(ok, wait * 1000));
  }
  polling = false;
}

$('new-code').addEventListener('click', async () => {
  const button = $('new-code');
  button.disabled = true;
  const response = await fetch(`${api}/attempts`, { method: 'POST' }).catch(() => null);
  button.disabled = false;
  if (response && response.status === 201) {
    render(await response.json());
    if (!events && !polling) follow();
    $('code').focus?.();
    return;
  }
  const body = response ? await response.json().catch(() => null) : null;
  const code = body && body.error && body.error.code;
  problem(code === 'attempt_budget_exhausted' ? 'No more codes can be issued right now. Start again later.'
    : code === 'idenfy_unavailable' || code === 'idenfy_timeout' ? 'The face check service is not answering. Try again in a moment.'
    : 'A new code could not be issued. Start again from your computer.');
});

refresh().then((ok) => { if (ok && state) follow(); });
