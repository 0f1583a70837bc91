// The hosted page around <facepair-pairing>: on approval it tells the embedding page (to the
// configured origins only) and goes to the platform's return URL, with the platform's `state`.
'use strict';

const config = JSON.parse(document.body.dataset.config || '{}');
const pairing = document.getElementById('pairing');

pairing.addEventListener('facepair:approved', (event) => {
  // the platform's opaque state, never the login id: the backend redeems the login it keeps
  const { state, network_match: networkMatch } = event.detail;
  const message = { type: 'facepair:approved', state, network_match: networkMatch };
  if (window.parent !== window) {
    for (const origin of config.parent_origins || []) window.parent.postMessage(message, origin);
  }
  if (config.return_url) {
    const url = new URL(config.return_url);
    if (state != null) url.searchParams.set('state', state);
    setTimeout(() => { (window.parent !== window ? window.top : window).location.assign(url.toString()); }, 1200);
  }
});
