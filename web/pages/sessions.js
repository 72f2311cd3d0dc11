// Sessions: the list (filters, paging, create), and one session's page with live status,
// a code console (query mode), a terminal (PTY over WebSocket), logs and files.

import { api, gql, h, clear, section, table, badge, when, slotsText, form, dialog, confirmThen, notify, loading, errorBox, empty, bytes, onLeave, loadInto, parseJson } from '../lib.js';
import { Terminal } from '../terminal.js';

const PAGE = 20;
const STATUSES = ['ALL', 'PENDING', 'PREPARING', 'PULLING', 'RUNNING', 'RESTARTING', 'TERMINATING', 'TERMINATED', 'ERROR'];
const EVENTS = ['session_pending', 'session_preparing', 'session_pulling', 'session_started', 'session_restarting', 'session_terminating', 'session_terminated', 'session_failed', 'session_changed'];

const LIST = `query($limit: Int!, $offset: Int!, $status: String) {
  compute_session_list(limit: $limit, offset: $offset, status: $status) {
    total_count
    items { sess_id status status_info image created_at terminated_at occupied_slots agent access_key service_ports }
  }
}`;

const ONE = `query($id: String) {
  compute_session(sess_id: $id) {
    sess_id id status status_info image registry created_at terminated_at occupied_slots agent access_key group_name num_queries service_ports
  }
}`;

const list = { status: 'ALL', offset: 0 };

const APP_LABELS = { jupyter: 'Jupyter', jupyterlab: 'JupyterLab', http: 'Web server', ttyd: 'Terminal', tensorboard: 'TensorBoard', vscode: 'VS Code' };

// The browser apps of a session: its `http` service ports.
function appsOf(s) {
  const ports = parseJson(s.service_ports, []);
  return (Array.isArray(ports) ? ports : []).filter((p) => p && p.protocol === 'http').map((p) => p.name);
}

// Opens an app in a new tab: the tab opens at the click (so no popup blocker stops it),
// then goes to the one-time launch URL on the app's own origin. The app's page gets no
// handle back to this one.
async function openApp(id, app) {
  const tab = window.open('about:blank', '_blank');
  if (tab) tab.opener = null;
  try {
    const r = await api('POST', `/stream/kernel/${encodeURIComponent(id)}/apps/${encodeURIComponent(app)}/launch`);
    if (tab) tab.location.replace(r.url);
    else location.assign(r.url);
  } catch (err) {
    if (tab) tab.close();
    notify(`${APP_LABELS[app] || app} could not be opened: ${err.message}`, 'error');
  }
}

function appButtons(s, small) {
  if (s.status !== 'RUNNING') return null;
  const apps = appsOf(s);
  if (!apps.length) return null;
  return h(
    'span',
    { class: 'apps' },
    apps.map((a) => h('button', { type: 'button', class: small ? 'small app' : 'app', 'data-app': a, title: `Open ${APP_LABELS[a] || a} in a new tab`, onclick: () => openApp(s.sess_id, a) }, APP_LABELS[a] || a)),
  );
}

function isOver(status) {
  return status === 'TERMINATED' || status === 'CANCELLED';
}

function terminate(id, after) {
  confirmThen(`Terminate session ${id}? Its processes end and its scratch files are lost; mounted folders are kept.`, async () => {
    await api('DELETE', `/kernel/${encodeURIComponent(id)}`);
    notify(`Session ${id} is terminating.`);
    after();
  });
}

export function sessionsPage() {
  const body = h('div');
  const filter = h(
    'select',
    {
      id: 'status-filter',
      onchange: (e) => {
        list.status = e.target.value;
        list.offset = 0;
        reload();
      },
    },
    STATUSES.map((s) => h('option', { value: s, selected: s === list.status }, s === 'ALL' ? 'All' : s.toLowerCase())),
  );
  const reload = loadInto(
    body,
    () => gql(LIST, { limit: PAGE, offset: list.offset, status: list.status }),
    (d, again) => {
      const { items, total_count: total } = d.compute_session_list;
      const from = total ? list.offset + 1 : 0;
      const to = list.offset + items.length;
      return h(
        'div',
        {},
        table(
          [
            { label: 'Session', cell: (s) => h('a', { href: `#/sessions/${encodeURIComponent(s.sess_id)}` }, s.sess_id) },
            { label: 'Status', cell: (s) => h('span', {}, badge(s.status), s.status_info ? h('small', { class: 'muted block' }, s.status_info) : null) },
            { label: 'Image', cell: (s) => s.image },
            { label: 'Resources', cell: (s) => slotsText(s.occupied_slots) },
            { label: 'Apps', cell: (s) => appButtons(s, true) || (appsOf(s).length ? h('span', { class: 'muted' }, appsOf(s).map((a) => APP_LABELS[a] || a).join(', ')) : '—') },
            { label: 'Created', cell: (s) => when(s.created_at) },
            {
              label: 'Actions',
              cell: (s) => (isOver(s.status) ? '—' : h('button', { type: 'button', class: 'danger small', onclick: () => terminate(s.sess_id, () => again(true)) }, 'Terminate')),
            },
          ],
          items,
          list.status === 'ALL' ? 'You have no sessions yet. Create one to run code.' : `No session is ${list.status.toLowerCase()}.`,
          'Sessions',
        ),
        h(
          'nav',
          { class: 'pager', 'aria-label': 'Pages' },
          h('button', { type: 'button', disabled: list.offset === 0, onclick: () => { list.offset = Math.max(0, list.offset - PAGE); again(); } }, '← Previous'),
          h('span', { class: 'muted' }, `${from}–${to} of ${total}`),
          h('button', { type: 'button', disabled: to >= total, onclick: () => { list.offset += PAGE; again(); } }, 'Next →'),
        ),
      );
    },
  );
  const refresher = setInterval(() => reload(true), 10000);
  onLeave(() => clearInterval(refresher));
  return h(
    'div',
    { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Sessions'), h('button', { type: 'button', class: 'primary', id: 'new-session', onclick: () => createDialog() }, 'New session')),
    section('Your sessions', h('div', { class: 'field inline' }, h('label', { for: 'status-filter' }, 'Status'), filter), body),
  );
}

function randomName() {
  const hex = [...crypto.getRandomValues(new Uint8Array(4))].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `s-${hex}`;
}

async function createDialog() {
  const { el, close } = dialog('New session', () => h('div', { id: 'create-body' }, loading()));
  const holder = el.querySelector('#create-body');
  try {
    const [imgs, presets, folders, me] = await Promise.all([
      gql('query { images { name tag registry aliases installed } }'),
      api('GET', '/resource/presets'),
      api('GET', '/folders'),
      gql('query { user { groups { id name } } }'),
    ]);
    const images = (imgs.images || []).filter(Boolean);
    const groups = ((me.user && me.user.groups) || []).filter(Boolean);
    if (!images.length) {
      clear(holder, empty('No image is known yet. An administrator can rescan the registries on the Admin › Images page.'));
      return;
    }
    const presetList = presets.presets || [];
    const imageOptions = images.map((i) => {
      const ref = `${i.registry}/${i.name}:${i.tag}`;
      const alias = (i.aliases || [])[0];
      return [ref, alias ? `${alias} (${i.name}:${i.tag})` : `${i.name}:${i.tag}`];
    });
    const fields = [
      { name: 'name', label: 'Session name', value: randomName(), required: true, help: '4 to 64 letters, digits, "-", "_" or "."' },
      { name: 'image', label: 'Image', type: 'select', options: imageOptions, required: true },
      {
        name: 'preset',
        label: 'Resources',
        type: 'select',
        options: [['', "The image's minimum"], ...presetList.map((p) => [p.name, `${p.name}: ${slotsText(p.resource_slots)}`])],
      },
      { name: 'group', label: 'Group', type: 'select', options: groups.map((g) => [g.name, g.name]), value: groups.length ? groups[0].name : 'default' },
    ];
    const usable = (folders || []).filter((f) => f.permission);
    if (usable.length) {
      fields.push({ name: 'mounts', label: 'Folders to mount', type: 'select', multiple: true, options: usable.map((f) => [f.name, `${f.name} (${f.permission})`]), help: 'Mounted under /home/work/NAME. Hold Ctrl or ⌘ to pick several.' });
    }
    clear(
      holder,
      form(fields, 'Create session', async (v) => {
        const config = { mounts: v.mounts || [] };
        const preset = presetList.find((p) => p.name === v.preset);
        if (preset) config.resources = preset.resource_slots;
        const resp = await api('POST', '/kernel', {
          clientSessionToken: v.name,
          image: v.image,
          group: v.group || 'default',
          config,
          enqueueOnly: true,
        });
        close();
        notify(resp && resp.created === false ? `Session ${v.name} already exists.` : `Session ${v.name} is on its way.`);
        location.hash = `#/sessions/${encodeURIComponent(v.name)}`;
      }, { cancel: close }),
    );
  } catch (err) {
    clear(holder, errorBox(err));
  }
}

// ---- one session -------------------------------------------------------------------------

export function sessionPage(id) {
  const path = `/kernel/${encodeURIComponent(id)}`;
  const head = h('div', { class: 'session-head' }, loading());
  const panel = h('div', { class: 'tab-panel', role: 'tabpanel', id: 'session-panel' });
  const tabs = [
    ['console', 'Console', () => consoleTab(path)],
    ['terminal', 'Terminal', () => terminalTab(id)],
    ['logs', 'Logs', () => logsTab(path)],
    ['files', 'Files', () => filesTab(path)],
  ];
  let leaveTab = null;
  const tabBar = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Session tools' });
  const show = (key) => {
    if (leaveTab) leaveTab();
    leaveTab = null;
    clear(
      tabBar,
      tabs.map(([k, label]) =>
        h('button', { type: 'button', role: 'tab', id: `tab-${k}`, 'aria-selected': String(k === key), 'aria-controls': 'session-panel', class: k === key ? 'tab active' : 'tab', onclick: () => show(k) }, label),
      ),
    );
    const [, , build] = tabs.find(([k]) => k === key);
    const built = build();
    leaveTab = built.leave || null;
    clear(panel, built.el);
  };
  onLeave(() => leaveTab && leaveTab());

  let current = null;
  const refresh = async () => {
    try {
      const d = await gql(ONE, { id });
      const s = d.compute_session;
      if (!s) {
        clear(head, errorBox(new Error(`There is no session named ${id}.`)));
        return;
      }
      current = s;
      clear(
        head,
        h(
          'dl',
          { class: 'facts' },
          h('div', {}, h('dt', {}, 'Status'), h('dd', { id: 'session-status' }, badge(s.status), s.status_info ? h('small', { class: 'muted' }, ` ${s.status_info}`) : null)),
          h('div', {}, h('dt', {}, 'Image'), h('dd', {}, s.image)),
          h('div', {}, h('dt', {}, 'Resources'), h('dd', {}, slotsText(s.occupied_slots))),
          h('div', {}, h('dt', {}, 'Agent'), h('dd', {}, s.agent || '—')),
          h('div', {}, h('dt', {}, 'Group'), h('dd', {}, s.group_name || '—')),
          h('div', {}, h('dt', {}, 'Created'), h('dd', {}, when(s.created_at))),
          s.terminated_at ? h('div', {}, h('dt', {}, 'Ended'), h('dd', {}, when(s.terminated_at))) : null,
        ),
        isOver(s.status)
          ? null
          : h(
              'div',
              { class: 'actions' },
              appButtons(s, false),
              h('button', {
                type: 'button',
                onclick: async () => {
                  try {
                    await api('PATCH', path);
                    notify('The session restarted.');
                  } catch (err) {
                    notify(err.message, 'error');
                  }
                },
              }, 'Restart'),
              h('button', { type: 'button', class: 'danger', id: 'terminate', onclick: () => terminate(id, refresh) }, 'Terminate'),
            ),
      );
    } catch (err) {
      clear(head, errorBox(err));
    }
  };
  refresh();

  // Live status: the session's events re-read its facts.
  const events = new EventSource(`/stream/kernel/_/events?sessionId=${encodeURIComponent(id)}`);
  for (const name of EVENTS) events.addEventListener(name, () => refresh());
  onLeave(() => events.close());
  // The event stream covers changes; a slow poll covers a dropped stream.
  const poll = setInterval(() => {
    if (!current || !isOver(current.status)) refresh();
  }, 15000);
  onLeave(() => clearInterval(poll));

  const page = h(
    'div',
    { class: 'page' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/sessions' }, 'Sessions'), ' › '),
    h('h1', {}, id),
    section('Session', null, head),
    h('section', { class: 'card' }, tabBar, panel),
  );
  show('console');
  return page;
}

function consoleTab(path) {
  const out = h('pre', { class: 'console-out', id: 'console-output', 'aria-live': 'polite', 'aria-label': 'Output' });
  const code = h('textarea', { id: 'console-code', rows: 6, spellcheck: 'false', placeholder: 'print("hello")' });
  const run = h('button', { type: 'button', class: 'primary', id: 'console-run' }, 'Run');
  const inputRow = h('div', { class: 'console-input', hidden: true });
  const status = h('span', { class: 'muted', 'aria-live': 'polite' });

  const show = (items) => {
    for (const item of items || []) {
      const [kind, data] = item;
      if (kind === 'stdout' || kind === 'stderr') {
        out.appendChild(h('span', { class: kind }, data));
      } else if (kind === 'media' && Array.isArray(data) && String(data[0]).startsWith('image/')) {
        const [mime, payload] = data;
        const src = mime === 'image/svg+xml' ? `data:${mime};charset=utf-8,${encodeURIComponent(payload)}` : `data:${mime};base64,${payload}`;
        out.appendChild(h('img', { src, alt: 'Output image' }));
      } else if (kind === 'html') {
        out.appendChild(h('span', { class: 'muted' }, '[HTML output, shown as text]\n' + data));
      } else {
        out.appendChild(h('span', { class: 'muted' }, `[${kind}] ${typeof data === 'string' ? data : JSON.stringify(data)}\n`));
      }
    }
    out.scrollTop = out.scrollHeight;
  };

  const execute = async (mode, text, runId) => {
    const r = await api('POST', path, { mode, code: text, runId });
    return r.result;
  };

  const go = async () => {
    const text = code.value;
    if (!text.trim()) return;
    run.disabled = true;
    out.appendChild(h('span', { class: 'prompt' }, `>>> ${text.split('\n').join('\n... ')}\n`));
    clear(status, 'Running…');
    try {
      let result = await execute('query', text, null);
      for (;;) {
        show(result.console);
        if (result.status === 'finished' || result.status === 'exec-timeout' || result.status === 'build-finished' || result.status === 'clean-finished') {
          if (result.status === 'exec-timeout') out.appendChild(h('span', { class: 'stderr' }, 'The run was stopped: it took too long.\n'));
          break;
        }
        if (result.status === 'waiting-input') {
          const answer = await askInput(inputRow, result.options && result.options.is_password);
          result = await execute('input', answer, result.runId);
        } else {
          result = await execute('continue', '', result.runId);
        }
      }
      clear(status, 'Done.');
    } catch (err) {
      out.appendChild(h('span', { class: 'stderr' }, `${err.message}\n`));
      clear(status, 'Failed.');
    } finally {
      run.disabled = false;
      code.focus();
    }
  };
  run.addEventListener('click', go);
  code.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      go();
    }
  });
  return {
    el: h(
      'div',
      { class: 'console' },
      h('label', { for: 'console-code' }, 'Code (Python; Ctrl+Enter runs it)'),
      code,
      h('div', { class: 'actions left' }, run, h('button', { type: 'button', onclick: () => clear(out) }, 'Clear output'), status),
      inputRow,
      out,
    ),
  };
}

function askInput(row, secret) {
  return new Promise((resolve) => {
    const input = h('input', { type: secret ? 'password' : 'text', id: 'console-stdin', 'aria-label': 'Input for the program' });
    const send = () => {
      row.hidden = true;
      resolve(input.value);
    };
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        send();
      }
    });
    clear(row, h('label', { for: 'console-stdin' }, 'The program asks for input:'), input, h('button', { type: 'button', onclick: send }, 'Send'));
    row.hidden = false;
    input.focus();
  });
}

function terminalTab(id) {
  const screen = h('div', { class: 'terminal', id: 'terminal', tabindex: '0', role: 'application', 'aria-label': 'Terminal. Type to use the shell; Ctrl+] leaves it.' });
  const status = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Connecting…');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/stream/kernel/${encodeURIComponent(id)}/pty`);
  const term = new Terminal(screen, (bytesOut) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'stdin', chars: toBase64(bytesOut) }));
  });
  const resize = () => {
    const { rows, cols } = term.size();
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', rows, cols }));
  };
  ws.addEventListener('open', () => {
    clear(status, 'Connected. Click the terminal and type; Ctrl+] moves the focus out of it.');
    resize();
    screen.focus();
  });
  ws.addEventListener('message', (e) => {
    const m = parseJson(e.data, null);
    if (m && m.type === 'out') term.write(fromBase64(m.data));
  });
  ws.addEventListener('close', (e) => clear(status, `The terminal closed${e.reason ? ` (${e.reason})` : ''}.`));
  ws.addEventListener('error', () => clear(status, 'The terminal could not connect; is the session running?'));
  const ping = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: 'ping' })), 30000);
  window.addEventListener('resize', resize);
  return {
    el: h('div', {}, status, screen),
    leave: () => {
      clearInterval(ping);
      window.removeEventListener('resize', resize);
      ws.close();
    },
  };
}

function toBase64(u8) {
  let s = '';
  for (const b of u8) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const u8 = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i += 1) u8[i] = s.charCodeAt(i);
  return u8;
}

function logsTab(path) {
  const box = h('div');
  const reload = loadInto(box, () => api('GET', `${path}/logs`), (d) => {
    const logs = (d && d.result && d.result.logs) || '';
    return logs ? h('pre', { class: 'logs', id: 'session-logs' }, logs) : empty('The session has written no logs yet.');
  });
  return { el: h('div', {}, h('div', { class: 'actions left' }, h('button', { type: 'button', onclick: () => reload() }, 'Refresh')), box) };
}

function filesTab(path) {
  let dir = '.';
  const box = h('div');
  const where = h('p', { class: 'muted' });
  const reload = () =>
    loadInto(box, () => api('GET', `${path}/files`, { path: dir }), (d) => {
      const files = parseJson(d.files, []);
      clear(where, `/home/work/${dir === '.' ? '' : dir}`);
      const rows = [...files].sort((a, b) => (a.mode[0] === 'd') === (b.mode[0] === 'd') ? a.filename.localeCompare(b.filename) : a.mode[0] === 'd' ? -1 : 1);
      return h(
        'div',
        {},
        dir !== '.' ? h('button', { type: 'button', onclick: () => { dir = dir.split('/').slice(0, -1).join('/') || '.'; reload(); } }, '↑ Up') : null,
        table(
          [
            {
              label: 'Name',
              cell: (f) =>
                f.mode[0] === 'd'
                  ? h('button', { type: 'button', class: 'link', onclick: () => { dir = dir === '.' ? f.filename : `${dir}/${f.filename}`; reload(); } }, `${f.filename}/`)
                  : f.filename,
            },
            { label: 'Size', cell: (f) => (f.mode[0] === 'd' ? '—' : bytes(f.size)) },
            { label: 'Mode', cell: (f) => h('code', {}, f.mode) },
            { label: 'Modified', cell: (f) => when(f.mtime) },
          ],
          rows,
          'This directory is empty.',
          'Files',
        ),
      );
    });
  reload();
  const picker = h('input', { type: 'file', id: 'session-upload', multiple: true });
  const send = h('button', {
    type: 'button',
    onclick: async () => {
      if (!picker.files.length) return;
      const fd = new FormData();
      for (const f of picker.files) fd.append('src', f, dir === '.' ? f.name : `${dir}/${f.name}`);
      try {
        await api('POST', `${path}/upload`, fd);
        notify('Uploaded.');
        picker.value = '';
        reload();
      } catch (err) {
        notify(err.message, 'error');
      }
    },
  }, 'Upload');
  return {
    el: h('div', {}, where, h('div', { class: 'actions left' }, h('label', { for: 'session-upload' }, 'Upload files (up to 1 MiB each) here:'), picker, send), box),
  };
}
