// The admin UI's entry: login, the page frame and the hash router (#/sessions, ...).

import { state, api, h, clear, form, notify, errorBox, loading, isAuthProblem } from './lib.js';
import { dashboardPage } from './pages/dashboard.js';
import { sessionsPage, sessionPage } from './pages/sessions.js';
import { foldersPage, folderPage } from './pages/folders.js';
import { adminPage } from './pages/admin.js';

const root = document.getElementById('app');

const routes = [
  [/^\/$/, () => dashboardPage()],
  [/^\/sessions$/, () => sessionsPage()],
  [/^\/sessions\/([^/]+)$/, (m) => sessionPage(decodeURIComponent(m[1]))],
  [/^\/folders$/, () => foldersPage()],
  [/^\/folders\/([^/]+)$/, (m) => folderPage(decodeURIComponent(m[1]))],
  [/^\/admin$/, () => adminPage('users')],
  [/^\/admin\/([a-z-]+)$/, (m) => adminPage(m[1])],
];

const nav = [
  ['#/', 'Dashboard', (p) => p === '/'],
  ['#/sessions', 'Sessions', (p) => p.startsWith('/sessions')],
  ['#/folders', 'Folders', (p) => p.startsWith('/folders')],
  ['#/admin', 'Admin', (p) => p.startsWith('/admin'), true],
];

function currentPath() {
  const raw = location.hash.replace(/^#/, '') || '/';
  return raw.split('?')[0];
}

function frame(content) {
  const path = currentPath();
  const u = state.user;
  return h(
    'div',
    { class: 'frame' },
    h('a', { class: 'skip', href: '#main' }, 'Skip to content'),
    h(
      'header',
      { class: 'top' },
      h('a', { class: 'brand', href: '#/' }, h('img', { src: 'logo.svg', alt: '', width: 28, height: 28 }), h('span', {}, 'Backend.AI')),
      h(
        'nav',
        { 'aria-label': 'Main' },
        h(
          'ul',
          {},
          nav
            .filter(([, , , admin]) => !admin || u.is_admin)
            .map(([href, label, active]) => h('li', {}, h('a', { href, 'aria-current': active(path) ? 'page' : null }, label))),
        ),
      ),
      h(
        'div',
        { class: 'who' },
        h('span', { class: 'who-name', title: u.access_key }, u.email),
        h('span', { class: 'badge badge-role' }, u.role),
        h('button', { type: 'button', id: 'logout', onclick: logout }, 'Log out'),
      ),
    ),
    h('main', { id: 'main', tabindex: '-1' }, content),
  );
}

async function render() {
  for (const f of state.cleanups.splice(0)) {
    try {
      f();
    } catch (_) {
      /* a page's cleanup must not stop the next page */
    }
  }
  if (!state.user) {
    clear(root, loginPage());
    return;
  }
  const path = currentPath();
  let page = null;
  for (const [re, build] of routes) {
    const m = path.match(re);
    if (m) {
      page = build(m);
      break;
    }
  }
  if (!page) {
    page = h('div', {}, h('h1', {}, 'Page not found'), h('p', {}, 'There is no page at this address. ', h('a', { href: '#/' }, 'Go to the dashboard.')));
  }
  clear(root, frame(page));
  const title = root.querySelector('main h1');
  document.title = title ? `${title.textContent} · Backend.AI` : 'Backend.AI';
}

function loginPage() {
  document.title = 'Log in · Backend.AI';
  let mode = 'password';
  const holder = h('div');
  const draw = () => {
    const fields =
      mode === 'password'
        ? [
            { name: 'username', label: 'E-mail', type: 'email', required: true, autocomplete: 'username' },
            { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'current-password' },
            { name: 'domain', label: 'Domain', value: 'default', required: true, help: 'Most installations have only the "default" domain.' },
          ]
        : [
            { name: 'access_key', label: 'Access key', required: true, autocomplete: 'username' },
            { name: 'secret_key', label: 'Secret key', type: 'password', required: true, autocomplete: 'current-password' },
          ];
    clear(
      holder,
      h(
        'div',
        { class: 'tabs', role: 'tablist', 'aria-label': 'Log in with' },
        [['password', 'E-mail and password'], ['keypair', 'Keypair']].map(([m, label]) =>
          h('button', {
            type: 'button',
            role: 'tab',
            'aria-selected': String(mode === m),
            class: mode === m ? 'tab active' : 'tab',
            onclick: () => {
              mode = m;
              draw();
            },
          }, label),
        ),
      ),
      form(fields, 'Log in', async (v) => {
        const body = mode === 'password'
          ? { type: 'password', username: v.username, password: v.password, domain: v.domain }
          : { type: 'keypair', access_key: v.access_key, secret_key: v.secret_key };
        const who = await api('POST', '/auth/session', body, { quiet401: true });
        loggedIn(who);
        if (!location.hash || location.hash === '#/login') location.hash = '#/';
        render();
      }),
    );
    const first = holder.querySelector('input');
    if (first) first.focus();
  };
  draw();
  return h(
    'div',
    { class: 'login' },
    h(
      'main',
      { class: 'login-card card', id: 'main' },
      h('div', { class: 'brand brand-large' }, h('img', { src: 'logo.svg', alt: '', width: 40, height: 40 }), h('span', {}, 'Backend.AI')),
      h('h1', {}, 'Log in'),
      holder,
    ),
  );
}

function loggedIn(who) {
  state.user = who.user;
  state.csrf = who.csrf_token;
}

async function logout() {
  try {
    await api('DELETE', '/auth/session');
  } catch (err) {
    if (err.status !== 401) notify(err.message, 'error');
  }
  state.user = null;
  state.csrf = null;
  location.hash = '#/';
  render();
}

state.onLoggedOut = () => {
  state.user = null;
  state.csrf = null;
  notify('Your login has expired. Please log in again.', 'error');
  render();
};

async function start() {
  clear(root, loading('Starting…'));
  try {
    loggedIn(await api('GET', '/auth/session', undefined, { quiet401: true }));
  } catch (err) {
    if (err.status !== 401 && !isAuthProblem(err.body)) {
      clear(root, errorBox(err));
      return;
    }
  }
  window.addEventListener('hashchange', render);
  render();
}

start();
