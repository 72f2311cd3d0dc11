// Shared pieces of the admin UI: the API client (cookie login + CSRF token), a small DOM
// builder that never parses HTML from data, and the common widgets (tables, forms,
// dialogs, usage bars, notices).

export const state = {
  user: null,
  csrf: null,
  // Called when the server says the login is gone (401 on a cookie request).
  onLoggedOut: () => {},
  // What the current page must stop (timers, event streams, sockets) when it is left.
  cleanups: [],
};

export function onLeave(f) {
  state.cleanups.push(f);
}

/// Calls `f` now and every `ms` until the page is left.
export function every(ms, f) {
  f();
  const t = setInterval(f, ms);
  onLeave(() => clearInterval(t));
}

export class ApiError extends Error {
  constructor(status, body) {
    super(describeProblem(status, body));
    this.status = status;
    this.body = body;
  }
}

function describeProblem(status, body) {
  if (!body || typeof body !== 'object') {
    return `The server answered ${status}.`;
  }
  let msg = body.title || `The server answered ${status}.`;
  const data = body.data;
  if (Array.isArray(data)) {
    const parts = data.map((d) => (d && d.message) || '').filter(Boolean);
    if (parts.length) msg += ': ' + parts.join('; ');
  } else if (data && typeof data === 'object' && data.error) {
    msg += ': ' + data.error;
  }
  return msg;
}

export function isAuthProblem(body) {
  return Boolean(body && typeof body.type === 'string' && body.type.endsWith('/invalid-auth-params'));
}

async function readBody(resp) {
  const type = resp.headers.get('content-type') || '';
  if (resp.status === 204) return null;
  if (type.includes('json')) return resp.json();
  return resp.text();
}

/// Calls the API with the login cookie. A GET with a body goes as POST with
/// X-Method-Override (browsers send no body with GET); every changing request carries the
/// CSRF token.
export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: 'application/json' };
  let wire = method;
  if (method === 'GET' && body !== undefined) {
    headers['X-Method-Override'] = 'GET';
    wire = 'POST';
  }
  if (wire !== 'GET' && wire !== 'HEAD' && state.csrf) {
    headers['X-CSRF-Token'] = state.csrf;
  }
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, { method: wire, headers, body: payload, credentials: 'same-origin' });
  } catch (e) {
    throw new ApiError(0, { title: 'The server cannot be reached. Check your connection.' });
  }
  const data = await readBody(resp).catch(() => null);
  if (!resp.ok) {
    // 401: the login expired; 400 invalid-auth-params: the cookie is gone (another tab
    // logged out), so the request went unauthenticated.
    const noLogin = resp.status === 401 || (resp.status === 400 && isAuthProblem(data));
    if (noLogin && !quiet401 && state.user) state.onLoggedOut();
    throw new ApiError(resp.status, data);
  }
  return data;
}

/// Runs a GraphQL query or mutation; answers its data.
export function gql(query, variables = {}) {
  return api('POST', '/admin/graphql', { query, variables });
}

/// Sends a form with files, reporting upload progress (`onProgress(sentBytes, total)`).
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('X-CSRF-Token', state.csrf || '');
    xhr.upload.onprogress = (e) => onProgress && onProgress(e.loaded, e.total);
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { title: 'The upload was interrupted.' }));
    xhr.send(form);
  });
}

// ---- DOM ---------------------------------------------------------------------------------

/// `h('div', {class: 'x', onclick: f}, child, ...)`: children are nodes or text (never
/// parsed as HTML); null/false children are skipped, arrays are flattened.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'checked' || k === 'selected' || k === 'disabled' || k === 'multiple') {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

// ---- formatting --------------------------------------------------------------------------

export function bytes(n) {
  const v = Number(n);
  if (!Number.isFinite(v)) return String(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${i === 0 ? x : x.toFixed(1)} ${units[i]}`;
}

export function when(t) {
  if (!t) return '—';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toLocaleString();
}

/// A slot amount for people: memory in bytes, the rest as numbers.
export function slot(name, value) {
  if (value === null || value === undefined || value === 'Infinity') return 'unlimited';
  if (name === 'mem' || name.endsWith('.mem')) return bytes(value);
  const n = Number(value);
  return Number.isFinite(n) ? String(Math.round(n * 100) / 100) : String(value);
}

export function parseJson(v, fallback = {}) {
  if (v === null || v === undefined || v === '') return fallback;
  if (typeof v === 'object') return v;
  try {
    return JSON.parse(v);
  } catch (_) {
    return fallback;
  }
}

export function slotsText(slots) {
  const s = parseJson(slots);
  const parts = Object.entries(s).map(([k, v]) => `${k} ${slot(k, v)}`);
  return parts.length ? parts.join(' · ') : '—';
}

// ---- widgets -----------------------------------------------------------------------------

export function loading(what = 'Loading…') {
  return h('p', { class: 'loading', role: 'status', 'aria-live': 'polite' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), what);
}

export function errorBox(err) {
  const msg = err && err.message ? err.message : String(err);
  return h('div', { class: 'error', role: 'alert' }, msg);
}

export function empty(text) {
  return h('p', { class: 'empty' }, text);
}

export function badge(status) {
  const s = String(status || '').toLowerCase();
  return h('span', { class: `badge badge-${s.replace(/[^a-z-]/g, '')}` }, status || '—');
}

/// A usage bar: `used` of `total` with a label; `total` null means unlimited.
export function bar(label, used, total, fmt = (x) => String(x)) {
  const u = Number(used) || 0;
  const t = total === null || total === undefined || total === 'Infinity' ? null : Number(total);
  const pct = t ? Math.min(100, Math.round((u / t) * 100)) : 0;
  const text = t === null ? `${fmt(u)} of unlimited` : `${fmt(u)} of ${fmt(t)}`;
  // Set through the CSSOM: the page's content security policy forbids style attributes.
  const fill = h('div', { class: 'bar-fill' });
  fill.style.width = `${pct}%`;
  return h(
    'div',
    { class: 'usage' },
    h('div', { class: 'usage-label' }, h('span', {}, label), h('span', { class: 'muted' }, text)),
    h(
      'div',
      {
        class: `bar${pct >= 90 ? ' bar-hot' : ''}`,
        role: 'progressbar',
        'aria-label': label,
        'aria-valuemin': '0',
        'aria-valuemax': '100',
        'aria-valuenow': String(pct),
        'aria-valuetext': text,
      },
      fill,
    ),
  );
}

/// A table: `columns` = [{label, cell: row => node|text}]; `empty` when there are no rows.
export function table(columns, rows, emptyText = 'Nothing here yet.', caption = null) {
  if (!rows || rows.length === 0) return empty(emptyText);
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      caption ? h('caption', { class: 'sr-only' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
      h(
        'tbody',
        {},
        rows.map((r) => h('tr', {}, columns.map((c) => h('td', { 'data-label': c.label }, c.cell(r))))),
      ),
    ),
  );
}

/// A form from field descriptions; `onSubmit(values)` may throw to show an error.
/// Field: {name, label, type ('text'|'password'|'number'|'select'|'checkbox'|'textarea'|
/// 'email'), options: [[value, text]], value, required, help, placeholder, multiple}.
export function form(fields, submitLabel, onSubmit, { cancel } = {}) {
  const status = h('div', { class: 'form-status', 'aria-live': 'polite' });
  const inputs = {};
  const rows = fields.map((f) => {
    const id = nextId(f.name);
    let input;
    const common = { id, name: f.name, required: f.required || null, 'aria-describedby': f.help ? `${id}-help` : null };
    if (f.type === 'select') {
      input = h('select', { ...common, multiple: f.multiple || null }, (f.options || []).map(([v, t]) => {
        const selected = Array.isArray(f.value) ? f.value.includes(v) : f.value === v;
        return h('option', { value: v, selected }, t);
      }));
    } else if (f.type === 'checkbox') {
      input = h('input', { ...common, type: 'checkbox', checked: f.value });
    } else if (f.type === 'textarea') {
      input = h('textarea', { ...common, rows: f.rows || 4, placeholder: f.placeholder || null });
      input.value = f.value || '';
    } else {
      input = h('input', {
        ...common,
        type: f.type || 'text',
        value: f.value ?? '',
        placeholder: f.placeholder || null,
        autocomplete: f.autocomplete || null,
        min: f.min ?? null,
        step: f.step ?? null,
      });
    }
    inputs[f.name] = { f, input };
    const label = h('label', { for: id }, f.label);
    const help = f.help ? h('small', { id: `${id}-help`, class: 'muted' }, f.help) : null;
    return f.type === 'checkbox'
      ? h('div', { class: 'field field-check' }, input, label, help)
      : h('div', { class: 'field' }, label, input, help);
  });
  const submit = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const el = h(
    'form',
    {
      onsubmit: async (e) => {
        e.preventDefault();
        const values = {};
        for (const [name, { f, input }] of Object.entries(inputs)) {
          if (f.type === 'checkbox') values[name] = input.checked;
          else if (f.type === 'number') values[name] = input.value === '' ? null : Number(input.value);
          else if (f.type === 'select' && f.multiple) values[name] = [...input.selectedOptions].map((o) => o.value);
          else values[name] = input.value;
        }
        submit.disabled = true;
        clear(status, loading('Working…'));
        try {
          await onSubmit(values);
          clear(status);
        } catch (err) {
          clear(status, errorBox(err));
        } finally {
          submit.disabled = false;
        }
      },
    },
    rows,
    status,
    h('div', { class: 'actions' }, cancel ? h('button', { type: 'button', onclick: cancel }, 'Cancel') : null, submit),
  );
  return el;
}

/// A modal dialog; answers `{close}`. Esc and the close button close it; focus moves in.
export function dialog(title, build) {
  const d = h('dialog', { 'aria-labelledby': 'dialog-title' });
  const close = () => {
    d.close();
    d.remove();
  };
  d.addEventListener('close', () => d.remove());
  clear(
    d,
    h('header', { class: 'dialog-head' }, h('h2', { id: 'dialog-title' }, title), h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', onclick: close }, '×')),
    build(close),
  );
  document.body.appendChild(d);
  d.showModal();
  const first = d.querySelector('input, select, textarea, button.primary');
  if (first) first.focus();
  return { close, el: d };
}

/// Asks before doing something that cannot be undone.
export function confirmThen(question, action) {
  dialog('Please confirm', (close) =>
    h(
      'div',
      {},
      h('p', {}, question),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', onclick: close }, 'Cancel'),
        h('button', {
          type: 'button',
          class: 'danger',
          onclick: async () => {
            close();
            try {
              await action();
            } catch (err) {
              notify(err.message, 'error');
            }
          },
        }, 'Yes, do it'),
      ),
    ),
  );
}

/// A short notice in the corner, read out by screen readers.
export function notify(text, kind = 'info') {
  const area = document.getElementById('notices');
  if (!area) return;
  const n = h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  area.appendChild(n);
  setTimeout(() => n.remove(), kind === 'error' ? 9000 : 4000);
}

/// A section of a page with a title and optional actions.
export function section(title, actions, ...body) {
  return h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, title), actions ? h('div', { class: 'card-actions' }, actions) : null), body);
}

/// Loads `load()` into a container, with loading and error states; answers a reload function.
export function loadInto(container, load, render) {
  const run = async (quiet = false) => {
    if (!quiet) clear(container, loading());
    try {
      const data = await load();
      clear(container, render(data, run));
    } catch (err) {
      clear(container, errorBox(err), h('button', { type: 'button', onclick: () => run() }, 'Try again'));
    }
  };
  run();
  return run;
}
