// <facepair-pairing watch-url="...">: the pairing code, its steps and its outcome, followed live
// (Server-Sent Events, long-polling as the fallback). No dependencies. Styles are a constructed
// sheet and the DOM is built node by node, so it runs under a CSP without 'unsafe-inline'.

const CATALOGS = /*CATALOGS*/{};
const RTL = new Set(['ar', 'he', 'fa', 'ur']);
const SETTLED = ['approved', 'redeemed', 'canceled', 'exhausted'];
const KINDS = ['login_created', 'attempt_issued', 'attempt_succeeded', 'attempt_failed', 'attempt_canceled',
  'attempt_expired', 'attempt_superseded', 'login_canceled', 'login_redeemed', 'approval_expired'];

const CSS = `
:host { display: block; color-scheme: light;
  --_accent: var(--facepair-accent, #1a56c5); --_on-accent: var(--facepair-on-accent, #ffffff);
  --_bg: var(--facepair-background, #ffffff); --_text: var(--facepair-text, #1b1f24);
  --_muted: var(--facepair-muted, #4d5562); --_ok: var(--facepair-success, #146c2e);
  --_bad: var(--facepair-danger, #b3261e); --_focus: var(--facepair-focus, #1a56c5);
  --_radius: var(--facepair-radius, 14px);
  font-family: var(--facepair-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif); }
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
.card { background: var(--_bg); color: var(--_text); border-radius: var(--_radius); padding: 24px 20px;
  border: 1px solid var(--facepair-border, #d0d5dd); max-width: 100%; line-height: 1.5; overflow-wrap: anywhere; }
.platform { margin: 0 0 4px; color: var(--_muted); font-weight: 600; }
h2 { font-size: 1.35rem; margin: 0 0 14px; line-height: 1.3; }
h3 { font-size: 1.2rem; margin: 0 0 6px; }
h3:focus { outline: none; }
h3:focus-visible { outline: 3px solid var(--_focus); outline-offset: 3px; }
ol { padding-inline-start: 1.4em; margin: 0; }
li { margin-bottom: 10px; }
.code-row { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 14px; margin: 8px 0 4px; }
.code { direction: ltr; unicode-bidi: isolate; margin: 0; font-weight: 700; letter-spacing: .06em;
  display: flex; flex-wrap: wrap; column-gap: .4em;
  font-size: var(--facepair-code-size, clamp(1.9rem, 9vw, 3rem)); font-variant-numeric: tabular-nums;
  font-family: ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace; user-select: all; }
.countdown { color: var(--_muted); margin: 4px 0 0; }
.countdown.soon { color: var(--_bad); font-weight: 600; }
.notice { display: flex; gap: 10px; align-items: flex-start; margin: 16px 0 0; padding: 12px; border-radius: 10px;
  background: var(--facepair-notice-background, #f1f4f9); border: 1px solid var(--facepair-border, #d0d5dd); }
.notice svg { flex: none; margin-top: 2px; }
.notice p { margin: 0; }
.notice p + p { margin-top: 6px; }
.outcome { display: flex; gap: 12px; align-items: flex-start; }
.outcome.ok h3, .outcome.ok .icon { color: var(--_ok); }
.outcome.bad h3, .outcome.bad .icon { color: var(--_bad); }
.icon { flex: none; }
.detail { margin: 0; color: var(--_text); }
.status { margin: 12px 0 0; color: var(--_muted); min-height: 1.5em; }
.problem { color: var(--_bad); margin: 12px 0 0; font-weight: 600; }
.actions { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 16px; }
.actions:empty { display: none; }
button { font: inherit; font-weight: 600; padding: 10px 16px; min-height: 44px; min-width: 44px; border-radius: 10px;
  border: 2px solid var(--_accent); background: var(--_accent); color: var(--_on-accent); cursor: pointer; }
button.secondary { background: transparent; color: var(--_accent); }
button:focus-visible { outline: 3px solid var(--_focus); outline-offset: 2px; }
button:disabled { opacity: .7; cursor: progress; }
.sr-only { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden;
  clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap; border: 0; }
@media (prefers-reduced-motion: no-preference) { .outcome { animation: fp-in .2s ease-out; } }
@keyframes fp-in { from { opacity: 0; } to { opacity: 1; } }
`;

const ICONS = {
  ok: 'M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z',
  bad: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm1 15h-2v-2h2zm0-4h-2V7h2z',
  clock: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.3-4.5-2.7z',
  shield: 'M12 1 3 5v6c0 5.5 3.8 10.7 9 12 5.2-1.3 9-6.5 9-12V5zm-1 6h2v6h-2zm0 8h2v2h-2z',
};

let sheet = null;
function styles() {
  if (!sheet) { sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); }
  return sheet;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'text') node.textContent = value;
    else if (key === 'hidden') node.hidden = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function icon(name, size = 28) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  for (const [k, v] of Object.entries({ viewBox: '0 0 24 24', width: size, height: size, 'aria-hidden': 'true', focusable: 'false', class: 'icon' })) svg.setAttribute(k, v);
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name]);
  path.setAttribute('fill', 'currentColor');
  svg.append(path);
  return svg;
}

/** The catalog for the first of `wanted` (language tags) that has one, else English. */
export function pickLanguage(wanted) {
  for (const tag of wanted) {
    const language = String(tag || '').toLowerCase().split(/[-_]/)[0];
    if (CATALOGS[language]) return language;
  }
  return 'en';
}

/** Where the watch API of a `watch_url` (`.../pair/{token}` or `.../v1/watch/{token}`) is. */
function watchApi(watchUrl) {
  let url;
  try { url = new URL(watchUrl, document.baseURI); } catch { return null; }
  const token = url.pathname.split('/').filter(Boolean).pop() || '';
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(token) || !/^https?:$/.test(url.protocol)) return null;
  return `${url.origin}/v1/watch/${token}`;
}

export class FacepairPairing extends HTMLElement {
  static observedAttributes = ['watch-url', 'lang', 'platform-name', 'desktop-place'];

  constructor() {
    super();
    this.shadow = this.attachShadow({ mode: 'open' });
    this.shadow.adoptedStyleSheets = [styles()];
    this.doc = null;
    this.generation = 0;
    this.fired = new Set();
  }

  connectedCallback() {
    if (!this.card) this.build();
    this.start();
  }

  disconnectedCallback() { this.stop(); }

  attributeChangedCallback(name, before, after) {
    if (!this.card || before === after) return;
    if (name === 'watch-url') { this.stop(); this.doc = null; this.fired.clear(); if (this.isConnected) this.start(); }
    else this.paint();
  }

  /** The language shown: the `lang` attribute, else the login's locale, else the browser's. */
  get language() {
    return pickLanguage([this.getAttribute('lang'), this.doc && this.doc.locale, ...(navigator.languages || [])]);
  }

  t(key, vars = {}) {
    const catalog = CATALOGS[this.language] || CATALOGS.en;
    const text = catalog[key] ?? CATALOGS.en[key] ?? '';
    return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
  }

  build() {
    const $ = (id, node) => { this[id] = node; return node; };
    this.card = el('section', { class: 'card', part: 'card' },
      $('platformLine', el('p', { class: 'platform', part: 'platform', hidden: true })),
      $('titleEl', el('h2', { part: 'title' })),
      $('pending', el('div', { hidden: true },
        el('ol', { part: 'steps' },
          $('stepOpen', el('li')),
          el('li', {}, $('stepType', el('span')),
            el('div', { class: 'code-row' },
              $('codeSpoken', el('span', { class: 'sr-only' })),
              $('code', el('p', { class: 'code', part: 'code', 'aria-hidden': 'true', translate: 'no' })),
              $('copyButton', el('button', { type: 'button', class: 'secondary', part: 'button copy-button' })))),
          $('stepSelfie', el('li'))),
        $('countdown', el('p', { class: 'countdown', part: 'countdown' })),
        el('div', { class: 'notice', part: 'notice' }, icon('shield', 22),
          el('div', {}, $('warning', el('p')), $('place', el('p', { hidden: true })))))),
      $('outcome', el('div', { class: 'outcome', part: 'outcome', hidden: true },
        $('outcomeIcon', el('span')),
        el('div', {}, $('headline', el('h3', { tabindex: '-1', part: 'headline' })), $('detail', el('p', { class: 'detail', part: 'detail' }))))),
      $('status', el('p', { class: 'status', part: 'status', role: 'status', 'aria-live': 'polite' })),
      $('problem', el('p', { class: 'problem', part: 'problem', role: 'alert', hidden: true })),
      el('div', { class: 'actions' },
        $('newCodeButton', el('button', { type: 'button', part: 'button new-code-button', hidden: true })),
        $('cancelButton', el('button', { type: 'button', class: 'secondary', part: 'button cancel-button', hidden: true }))));
    this.shadow.append(this.card);
    this.copyButton.addEventListener('click', () => this.copy());
    this.newCodeButton.addEventListener('click', () => this.newCode());
    this.cancelButton.addEventListener('click', () => this.cancel());
    this.paint();
  }

  start() {
    this.api = watchApi(this.getAttribute('watch-url') || '');
    const generation = ++this.generation;
    this.abort = new AbortController();
    if (!this.api) { this.notFound(); return; }
    this.refresh(generation).then((ok) => { if (ok && generation === this.generation) this.follow(generation); });
  }

  stop() {
    this.generation += 1;
    if (this.abort) this.abort.abort();
    if (this.events) { this.events.close(); this.events = null; }
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
  }

  fetch(path, init = {}) {
    return fetch(`${this.api}${path}`, { cache: 'no-store', credentials: 'omit', signal: this.abort.signal, ...init })
      .catch(() => null);
  }

  async refresh(generation) {
    const response = await this.fetch('');
    if (generation !== this.generation) return false;
    if (!response) { this.problemText('offline'); this.retryLater(generation); return false; }
    if (response.status === 404) { this.notFound(); return false; }
    if (!response.ok) { this.retryLater(generation, Number(response.headers.get('retry-after')) || 2); return false; }
    this.render(await response.json());
    return true;
  }

  retryLater(generation, seconds = 3) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (generation === this.generation) this.refresh(generation).then((ok) => { if (ok && generation === this.generation) this.follow(generation); });
    }, seconds * 1000);
  }

  follow(generation) {
    if (this.events || this.pollingFor === generation || this.settled()) return;
    if (!('EventSource' in window)) { this.poll(generation); return; }
    let opened = false;
    let failures = 0;
    const events = new EventSource(`${this.api}/events`);
    this.events = events;
    events.onopen = () => { opened = true; failures = 0; this.problemText(null); };
    for (const kind of KINDS) events.addEventListener(kind, (e) => { if (generation === this.generation) this.render(JSON.parse(e.data)); });
    events.onerror = () => {
      failures += 1;
      // closed for good (an answer other than 200), or never opened (a proxy that buffers or
      // drops streams): long-poll instead, which retries by itself
      if (events.readyState === EventSource.CLOSED || (!opened && failures >= 3)) {
        events.close();
        if (this.events === events) this.events = null;
        if (generation === this.generation) this.poll(generation);
      }
    };
  }

  async poll(generation) {
    // one loop per generation: a loop of a stopped one ends at its next turn
    if (this.pollingFor === generation) return;
    this.pollingFor = generation;
    let etag = null;
    while (generation === this.generation && this.doc && !this.settled()) {
      const interval = this.doc.poll_interval_seconds || 2;
      const headers = etag ? { 'if-none-match': etag } : {};
      const response = await this.fetch('?wait=25', { headers });
      if (generation !== this.generation) break;
      if (response && response.status === 404) { this.notFound(); break; }
      if (response && response.status === 200) { etag = response.headers.get('etag'); this.render(await response.json()); }
      if (!response || response.status >= 500) this.problemText('offline');
      const wait = response && response.status === 429 ? Number(response.headers.get('retry-after')) || interval : interval;
      await new Promise((ok) => setTimeout(ok, wait * 1000));
    }
    if (this.pollingFor === generation) this.pollingFor = null;
  }

  settled() {
    const d = this.doc;
    return Boolean(d) && (SETTLED.includes(d.status) || (d.status === 'expired' && !d.can_request_new_code));
  }

  render(next) {
    if (this.doc && next.event_seq < this.doc.event_seq) return;
    this.doc = next;
    this.clockOffset = Date.parse(next.server_time) - Date.now();
    // read before painting hides the focused button
    const focused = Boolean(this.shadow.activeElement);
    this.problemText(null);
    this.paint();
    this.announceOutcome(focused);
    if (this.settled() && this.events) { this.events.close(); this.events = null; }
  }

  /** Writes every text in the current language, from the current document. */
  paint() {
    const lang = this.language;
    this.card.setAttribute('lang', lang);
    this.card.setAttribute('dir', RTL.has(lang) ? 'rtl' : 'ltr');
    const platform = this.getAttribute('platform-name') || (this.doc && this.doc.platform_name);
    this.platformLine.hidden = !platform;
    this.platformLine.textContent = platform ? this.t('platform', { platform }) : '';
    this.titleEl.textContent = this.t('title');
    this.stepOpen.textContent = this.t('step_open');
    this.stepType.textContent = this.t('step_type');
    this.stepSelfie.textContent = this.t('step_selfie');
    this.copyButton.textContent = this.t('copy');
    this.warning.textContent = this.t('warning');
    const place = this.getAttribute('desktop-place') || (this.doc && this.doc.desktop_place);
    this.place.hidden = !place;
    this.place.textContent = place ? this.t('place', { place }) : '';
    this.newCodeButton.textContent = this.t('new_code');
    this.cancelButton.textContent = this.t('cancel');
    const d = this.doc;
    if (!d) return;
    const pending = d.status === 'pending';
    this.pending.hidden = !pending;
    // beside an outcome the status line would repeat it: screen readers still hear it
    this.status.classList.toggle('sr-only', !pending);
    this.outcome.hidden = pending;
    this.newCodeButton.hidden = pending || !d.can_request_new_code;
    this.cancelButton.hidden = !['pending', 'failed', 'expired'].includes(d.status);
    clearInterval(this.timer);
    if (pending) {
      const digits = d.attempt.digit_string || '';
      if (this.code.textContent !== (digits.match(/.{1,4}/g) || []).join('')) {
        this.code.replaceChildren(...(digits.match(/.{1,4}/g) || []).map((g) => el('span', { class: 'group', text: g })));
      }
      this.codeSpoken.textContent = this.t('code_spoken', { digits: digits.split('').join(' ') });
      this.tick();
      this.timer = setInterval(() => this.tick(), 1000);
      this.say(this.t('waiting'));
      return;
    }
    const [kind, glyph, title, detail] = this.outcomeText(d);
    this.outcome.className = `outcome ${kind}`;
    this.outcomeIcon.replaceChildren(icon(glyph, 32));
    this.headline.textContent = title;
    this.detail.textContent = detail;
    this.say(`${title}. ${detail}`);
  }

  outcomeText(d) {
    const again = d.can_request_new_code ? ` ${this.t('try_again')}` : '';
    const reason = () => (d.attempt.fail_reason && CATALOGS.en[`fail_${d.attempt.fail_reason}`]
      ? this.t(`fail_${d.attempt.fail_reason}`) : this.t('fail_other'));
    switch (d.status) {
      case 'approved': case 'redeemed': return ['ok', 'ok', this.t('approved_title'), this.t('approved_detail')];
      case 'failed':
        if (d.attempt.status === 'canceled') return ['bad', 'bad', this.t('canceled_in_app_title'), again.trim()];
        return ['bad', 'bad', this.t('failed_title'), `${reason()}${again}`];
      case 'expired': return ['bad', 'clock', this.t('expired_title'), `${this.t('expired_detail')}${again}`];
      case 'exhausted': return ['bad', 'bad', this.t('exhausted_title'), `${d.attempt.fail_reason ? `${reason()} ` : ''}${this.t('exhausted_detail')}`];
      default: return ['bad', 'bad', this.t('canceled_title'), this.t('canceled_detail')];
    }
  }

  tick() {
    const d = this.doc;
    if (!d || d.status !== 'pending') return;
    const left = Math.max(0, Math.round((Date.parse(d.attempt.expires_at) - (Date.now() + this.clockOffset)) / 1000));
    const time = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`;
    this.countdown.textContent = this.t('expires_in', { time });
    this.countdown.classList.toggle('soon', left <= 60);
    if (left <= 60 && left > 0 && this.warnedFor !== d.attempt.id) { this.warnedFor = d.attempt.id; this.say(this.t('expires_soon')); }
    if (left === 0) { clearInterval(this.timer); this.refresh(this.generation); }
  }

  /** Tells the page once per attempt and outcome, with what it may act on (never a login id). */
  announceOutcome(focused) {
    const d = this.doc;
    const [name, detail] = {
      approved: ['facepair:approved', () => ({ state: d.state ?? null, network_match: d.attempt.network_match ?? 'unknown' })],
      redeemed: ['facepair:approved', () => ({ state: d.state ?? null, network_match: d.attempt.network_match ?? 'unknown' })],
      failed: ['facepair:failed', () => this.failure(d)],
      exhausted: ['facepair:failed', () => this.failure(d)],
      expired: ['facepair:expired', () => ({ can_request_new_code: d.can_request_new_code })],
      canceled: ['facepair:canceled', () => ({})],
    }[d.status] || [];
    const key = `${d.attempt.id}:${name}`;
    if (!name || this.fired.has(key)) return;
    this.fired.add(key);
    this.dispatchEvent(new CustomEvent(name, { detail: detail(), bubbles: true, composed: true }));
    if (focused) this.headline.focus();
  }

  failure(d) {
    return {
      fail_reason: d.attempt.fail_reason ?? null, canceled_in_app: d.attempt.status === 'canceled',
      can_request_new_code: d.can_request_new_code, final: d.status === 'exhausted',
    };
  }

  say(text) { if (this.status.textContent !== text) this.status.textContent = text; }

  problemText(key) {
    this.problem.hidden = !key;
    this.problem.textContent = key ? this.t(key) : '';
  }

  notFound() {
    this.pending.hidden = true;
    this.status.classList.add('sr-only');
    this.outcome.hidden = false;
    this.outcome.className = 'outcome bad';
    this.outcomeIcon.replaceChildren(icon('bad', 32));
    this.headline.textContent = this.t('not_found_title');
    this.detail.textContent = this.t('not_found_detail');
    this.say(`${this.t('not_found_title')}. ${this.t('not_found_detail')}`);
  }

  async copy() {
    const digits = this.doc && this.doc.attempt.digit_string;
    if (!digits) return;
    let copied = false;
    try { await navigator.clipboard.writeText(digits); copied = true; } catch {
      // no clipboard API (an insecure origin): copy the selected code the old way
      const range = document.createRange();
      range.selectNodeContents(this.code);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { copied = document.execCommand('copy'); } catch { copied = false; }
    }
    this.copyButton.textContent = this.t(copied ? 'copied' : 'copy_failed');
    this.say(this.t(copied ? 'copied' : 'copy_failed'));
    clearTimeout(this.copyTimer);
    this.copyTimer = setTimeout(() => { this.copyButton.textContent = this.t('copy'); }, 2500);
  }

  async newCode() {
    this.newCodeButton.disabled = true;
    const response = await this.fetch('/attempts', { method: 'POST' });
    this.newCodeButton.disabled = false;
    if (response && response.status === 201) {
      this.render(await response.json());
      this.follow(this.generation);
      this.copyButton.focus();
      return;
    }
    const body = response ? await response.json().catch(() => null) : null;
    const code = body && body.error && body.error.code;
    this.problemText(code === 'attempt_budget_exhausted' || code === 'rate_limited' ? 'new_code_budget'
      : ['idenfy_unavailable', 'idenfy_timeout', 'idenfy_rate_limited'].includes(code) ? 'new_code_unavailable'
        : 'new_code_failed');
  }

  async cancel() {
    this.cancelButton.disabled = true;
    const response = await this.fetch('/cancel', { method: 'POST' });
    this.cancelButton.disabled = false;
    if (response && response.ok) { this.render(await response.json()); return; }
    this.problemText('cancel_failed');
  }
}

if (!customElements.get('facepair-pairing')) customElements.define('facepair-pairing', FacepairPairing);
