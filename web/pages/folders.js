// Folders: the list (create, invitations), and one folder's browser (upload with
// progress, download, new directories, delete, rename, share).

import { api, upload, h, clear, section, table, when, bytes, form, dialog, confirmThen, notify, loadInto, parseJson, badge } from '../lib.js';

const enc = encodeURIComponent;
const PERMISSIONS = { ro: 'read only', rw: 'read and write', wd: 'read, write and delete' };

function perm(p) {
  const b = badge(p);
  b.textContent = PERMISSIONS[p] || p;
  return b;
}

export function foldersPage() {
  const body = h('div');
  const invites = h('div');
  const reload = loadInto(body, () => api('GET', '/folders'), (rows, again) =>
    table(
      [
        { label: 'Name', cell: (f) => h('a', { href: `#/folders/${enc(f.name)}` }, f.name) },
        { label: 'Host', cell: (f) => f.host },
        { label: 'Kind', cell: (f) => (f.type === 'group' ? `group ${f.group}` : f.is_owner ? 'yours' : 'shared with you') },
        { label: 'Permission', cell: (f) => perm(f.permission) },
        { label: 'Created', cell: (f) => when(f.created_at) },
        {
          label: 'Actions',
          cell: (f) =>
            f.is_owner
              ? h('button', {
                  type: 'button',
                  class: 'danger small',
                  onclick: () =>
                    confirmThen(`Delete folder ${f.name} and every file in it?`, async () => {
                      await api('DELETE', `/folders/${enc(f.name)}`);
                      notify(`Folder ${f.name} was deleted.`);
                      again(true);
                    }),
                }, 'Delete')
              : '—',
        },
      ],
      rows,
      'You have no folders yet. A folder keeps files between sessions; create one and mount it into sessions.',
      'Folders',
    ),
  );
  const reloadInvites = loadInto(invites, () => api('GET', '/folders/invitations/list'), (d, again) =>
    table(
      [
        { label: 'From', cell: (i) => i.inviter },
        { label: 'Permission', cell: (i) => perm(i.perm) },
        { label: 'Sent', cell: (i) => when(i.created_at) },
        {
          label: 'Answer',
          cell: (i) =>
            h(
              'span',
              { class: 'actions left' },
              h('button', { type: 'button', class: 'primary small', onclick: async () => { await answer('POST', '/folders/invitations/accept', i.id, 'Invitation accepted.'); again(true); reload(true); } }, 'Accept'),
              h('button', { type: 'button', class: 'small', onclick: async () => { await answer('DELETE', '/folders/invitations/delete', i.id, 'Invitation declined.'); again(true); } }, 'Decline'),
            ),
        },
      ],
      d.invitations || [],
      'No invitation is waiting for you.',
      'Invitations',
    ),
  );
  return h(
    'div',
    { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Folders'), h('button', { type: 'button', class: 'primary', id: 'new-folder', onclick: () => createDialog(() => reload(true)) }, 'New folder')),
    section('Your folders', null, body),
    section('Invitations', h('button', { type: 'button', onclick: () => reloadInvites() }, 'Refresh'), invites),
  );
}

async function answer(method, path, id, done) {
  try {
    await api(method, path, { inv_id: id });
    notify(done);
  } catch (err) {
    notify(err.message, 'error');
  }
}

async function createDialog(after) {
  let hosts = { allowed: [], default: null };
  try {
    hosts = await api('GET', '/folders/_/hosts');
  } catch (err) {
    notify(err.message, 'error');
    return;
  }
  if (!hosts.allowed.length) {
    notify('Your resource policy allows no storage host; ask an administrator.', 'error');
    return;
  }
  dialog('New folder', (close) =>
    form(
      [
        { name: 'name', label: 'Name', required: true, help: 'Letters, digits, "-", "_" and "."; it becomes /home/work/NAME in sessions.' },
        { name: 'host', label: 'Storage host', type: 'select', options: hosts.allowed.map((x) => [x, x]), value: hosts.default },
      ],
      'Create folder',
      async (v) => {
        await api('POST', '/folders', { name: v.name, host: v.host });
        close();
        notify(`Folder ${v.name} was created.`);
        after();
      },
      { cancel: close },
    ),
  );
}

// ---- one folder --------------------------------------------------------------------------

export function folderPage(name) {
  const base = `/folders/${enc(name)}`;
  let dir = '';
  const facts = h('div');
  const listing = h('div');
  const where = h('nav', { class: 'crumbs', 'aria-label': 'Path in the folder' });
  const progress = h('div', { class: 'upload-progress', 'aria-live': 'polite' });

  loadInto(facts, () => api('GET', base), (f) => {
    return h(
      'dl',
      { class: 'facts' },
      h('div', {}, h('dt', {}, 'Host'), h('dd', {}, f.host)),
      h('div', {}, h('dt', {}, 'Permission'), h('dd', {}, perm(f.permission))),
      h('div', {}, h('dt', {}, 'Owner'), h('dd', {}, f.is_owner ? 'you' : f.type === 'group' ? `group ${f.group}` : 'someone else')),
      h('div', {}, h('dt', {}, 'Files at the top'), h('dd', {}, String(f.numFiles))),
      h('div', {}, h('dt', {}, 'Created'), h('dd', {}, when(f.created_at))),
    );
  });

  const go = (d) => {
    dir = d;
    reload();
  };
  const full = (f) => (dir ? `${dir}/${f}` : f);
  const reload = () => {
    const parts = dir ? dir.split('/') : [];
    clear(
      where,
      h('button', { type: 'button', class: 'link', onclick: () => go('') }, name),
      parts.map((p, i) => [' / ', h('button', { type: 'button', class: 'link', onclick: () => go(parts.slice(0, i + 1).join('/')) }, p)]),
    );
    return loadInto(listing, () => api('GET', `${base}/files?path=${enc(dir || '.')}`), (d, again) => {
      const files = parseJson(d.files, []);
      const isDir = (f) => f.mode[0] === 'd';
      files.sort((a, b) => (isDir(a) === isDir(b) ? a.filename.localeCompare(b.filename) : isDir(a) ? -1 : 1));
      return table(
        [
          {
            label: 'Name',
            cell: (f) => (isDir(f) ? h('button', { type: 'button', class: 'link', onclick: () => go(full(f.filename)) }, `${f.filename}/`) : f.filename),
          },
          { label: 'Size', cell: (f) => (isDir(f) ? '—' : bytes(f.size)) },
          { label: 'Modified', cell: (f) => when(f.mtime) },
          {
            label: 'Actions',
            cell: (f) =>
              h(
                'span',
                { class: 'actions left' },
                isDir(f) ? null : h('a', { class: 'button small', href: `${base}/download_single?file=${enc(full(f.filename))}`, download: f.filename }, 'Download'),
                h('button', {
                  type: 'button',
                  class: 'danger small',
                  onclick: () =>
                    confirmThen(`Delete ${full(f.filename)}${isDir(f) ? ' and everything in it' : ''}?`, async () => {
                      await api('DELETE', `${base}/delete_files`, { files: [full(f.filename)], recursive: isDir(f) });
                      notify(`${f.filename} was deleted.`);
                      again(true);
                    }),
                }, 'Delete'),
              ),
          },
        ],
        files,
        'This folder is empty. Upload files or create a directory.',
        'Files',
      );
    });
  };
  reload();

  const picker = h('input', { type: 'file', id: 'folder-upload', multiple: true });
  const startUpload = async () => {
    if (!picker.files.length) {
      notify('Choose one or more files first.', 'error');
      return;
    }
    const fd = new FormData();
    let total = 0;
    for (const f of picker.files) {
      fd.append('src', f, full(f.name));
      total += f.size;
    }
    const meter = h('progress', { max: '100', value: '0', 'aria-label': 'Upload progress' });
    const text = h('span', {}, `Uploading ${picker.files.length} file(s), ${bytes(total)}…`);
    clear(progress, text, meter);
    try {
      await upload(`${base}/upload`, fd, (sent, all) => {
        const pct = all ? Math.round((sent / all) * 100) : 0;
        meter.value = pct;
        text.textContent = `Uploading… ${pct}% (${bytes(sent)} of ${bytes(all)})`;
      });
      clear(progress, h('span', { id: 'upload-done' }, `Uploaded ${picker.files.length} file(s).`));
      picker.value = '';
      reload();
    } catch (err) {
      clear(progress, h('span', { class: 'error', role: 'alert' }, err.message));
    }
  };

  const mkdir = () =>
    dialog('New directory', (close) =>
      form([{ name: 'path', label: 'Name', required: true }], 'Create', async (v) => {
        await api('POST', `${base}/mkdir`, { path: full(v.path) });
        close();
        reload();
      }, { cancel: close }),
    );

  const share = () =>
    dialog(`Share ${name}`, (close) =>
      form(
        [
          { name: 'emails', label: 'E-mail addresses', type: 'textarea', rows: 3, required: true, help: 'One per line or separated by commas.' },
          { name: 'perm', label: 'They may', type: 'select', options: [['ro', 'read'], ['rw', 'read and write'], ['wd', 'read, write and delete']], value: 'ro' },
        ],
        'Send invitations',
        async (v) => {
          const ids = v.emails.split(/[\s,]+/).filter(Boolean);
          const r = await api('POST', `${base}/invite`, { perm: v.perm, user_ids: ids });
          close();
          notify(`Invited: ${(r.invited_ids || []).join(', ') || 'nobody new'}.`);
        },
        { cancel: close },
      ),
    );

  const rename = () =>
    dialog(`Rename ${name}`, (close) =>
      form([{ name: 'new_name', label: 'New name', value: name, required: true }], 'Rename', async (v) => {
        await api('POST', `${base}/rename`, { new_name: v.new_name });
        close();
        notify('Renamed.');
        location.hash = `#/folders/${enc(v.new_name)}`;
      }, { cancel: close }),
    );

  return h(
    'div',
    { class: 'page' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/folders' }, 'Folders'), ' › '),
    h(
      'div',
      { class: 'page-head' },
      h('h1', {}, name),
      h('div', { class: 'actions' }, h('button', { type: 'button', onclick: share }, 'Share'), h('button', { type: 'button', onclick: rename }, 'Rename')),
    ),
    section('About', null, facts),
    section(
      'Files',
      h('button', { type: 'button', onclick: mkdir }, 'New directory'),
      where,
      h(
        'div',
        { class: 'upload' },
        h('label', { for: 'folder-upload' }, 'Upload into this directory'),
        picker,
        h('button', { type: 'button', class: 'primary', id: 'upload-start', onclick: startUpload }, 'Upload'),
        progress,
      ),
      listing,
    ),
  );
}
