// Admin pages (keypairs with is_admin): users, keypairs, resource policies, presets,
// domains, groups, images, agents, configuration, and the manager's freeze switch. Every
// change goes through the admin GraphQL schema or the admin REST routes, which check the
// caller's role again; the page only hides what the role cannot use.

import { state, api, gql, h, clear, section, table, badge, when, slotsText, form, dialog, confirmThen, notify, loadInto, parseJson, bytes } from '../lib.js';

const TABS = [
  ['users', 'Users'],
  ['keypairs', 'Keypairs'],
  ['policies', 'Resource policies'],
  ['presets', 'Presets'],
  ['domains', 'Domains', true],
  ['groups', 'Groups'],
  ['images', 'Images'],
  ['agents', 'Agents'],
  ['config', 'Configuration', true],
  ['manager', 'Manager'],
];

/// Runs a mutation whose result has `ok` and `msg`; throws the message when not ok.
async function mutate(query, variables, field) {
  const d = await gql(query, variables);
  const r = d[field];
  if (!r || !r.ok) throw new Error((r && r.msg) || 'The change was refused.');
  return r;
}

function actionButton(label, kind, run) {
  return h('button', { type: 'button', class: `${kind} small`, onclick: run }, label);
}

/// A tab with a list and an optional "create" form.
function listTab({ title, load, columns, emptyText, create }) {
  const box = h('div');
  const reload = loadInto(box, load, (rows) => table(columns(() => reload(true)), rows, emptyText, title));
  const add = create
    ? h('button', {
        type: 'button',
        class: 'primary',
        onclick: () =>
          dialog(create.title, (close) =>
            form(create.fields(), create.submit || 'Create', async (v) => {
              const r = await create.run(v);
              close();
              notify(`${create.title}: done.`);
              reload(true);
              if (create.after) create.after(r);
            }, { cancel: close }),
          ),
      }, create.title)
    : null;
  return section(title, add, box);
}

const slotsField = (name, label, help) => ({ name, label, value: '{}', help: help || 'JSON, e.g. {"cpu": "4", "mem": "8g"}; {} means no limit.' });

function checkJson(text) {
  try {
    JSON.parse(text || '{}');
  } catch (_) {
    throw new Error('The slots must be JSON, e.g. {"cpu": "4", "mem": "8g"}.');
  }
  return text || '{}';
}

const tabs = {
  users: () =>
    listTab({
      title: 'Users',
      load: async () => (await gql('query { users { uuid email username full_name role domain_name is_active created_at groups { name } } }')).users.filter(Boolean),
      columns: (reload) => [
        { label: 'E-mail', cell: (u) => u.email },
        { label: 'Name', cell: (u) => u.full_name || u.username },
        { label: 'Role', cell: (u) => badge(u.role) },
        { label: 'Domain', cell: (u) => u.domain_name },
        { label: 'Groups', cell: (u) => (u.groups || []).map((g) => g.name).join(', ') || '—' },
        { label: 'Active', cell: (u) => (u.is_active ? 'yes' : 'no') },
        {
          label: 'Actions',
          cell: (u) =>
            u.is_active && u.email !== state.user.email
              ? actionButton('Deactivate', 'danger', () =>
                  confirmThen(`Deactivate ${u.email}? Their keypairs stop working.`, async () => {
                    await mutate('mutation($e: String!) { delete_user(email: $e) { ok msg } }', { e: u.email }, 'delete_user');
                    reload();
                  }),
                )
              : '—',
        },
      ],
      emptyText: 'No users.',
      create: {
        title: 'New user',
        fields: () => [
          { name: 'email', label: 'E-mail', type: 'email', required: true },
          { name: 'username', label: 'User name', required: true },
          { name: 'full_name', label: 'Full name' },
          { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'new-password' },
          { name: 'role', label: 'Role', type: 'select', options: [['user', 'user'], ['admin', 'domain admin'], ['superadmin', 'superadmin']], value: 'user' },
          { name: 'domain_name', label: 'Domain', value: state.user.domain_name || 'default', required: true },
        ],
        run: (v) =>
          mutate(
            'mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }',
            { e: v.email, p: { username: v.username, full_name: v.full_name, password: v.password, need_password_change: false, role: v.role, domain_name: v.domain_name, is_active: true } },
            'create_user',
          ),
      },
    }),

  keypairs: () =>
    listTab({
      title: 'Keypairs',
      load: async () => (await gql('query { keypairs { access_key user_id is_active is_admin resource_policy rate_limit last_used num_queries concurrency_used created_at } }')).keypairs.filter(Boolean),
      columns: (reload) => [
        { label: 'Access key', cell: (k) => h('code', {}, k.access_key) },
        { label: 'User', cell: (k) => k.user_id },
        { label: 'Admin', cell: (k) => (k.is_admin ? 'yes' : 'no') },
        { label: 'Policy', cell: (k) => k.resource_policy },
        { label: 'Rate limit', cell: (k) => `${k.rate_limit}/15 min` },
        { label: 'Queries', cell: (k) => String(k.num_queries) },
        { label: 'Last used', cell: (k) => when(k.last_used) },
        { label: 'Active', cell: (k) => (k.is_active ? 'yes' : 'no') },
        {
          label: 'Actions',
          cell: (k) =>
            k.access_key === state.user.access_key
              ? 'this login'
              : h(
                  'span',
                  { class: 'actions left' },
                  actionButton(k.is_active ? 'Deactivate' : 'Activate', '', async () => {
                    try {
                      await mutate('mutation($a: String!, $p: ModifyKeyPairInput!) { modify_keypair(access_key: $a, props: $p) { ok msg } }', { a: k.access_key, p: { is_active: !k.is_active } }, 'modify_keypair');
                      reload();
                    } catch (err) {
                      notify(err.message, 'error');
                    }
                  }),
                  actionButton('Delete', 'danger', () =>
                    confirmThen(`Delete keypair ${k.access_key}?`, async () => {
                      await mutate('mutation($a: String!) { delete_keypair(access_key: $a) { ok msg } }', { a: k.access_key }, 'delete_keypair');
                      reload();
                    }),
                  ),
                ),
        },
      ],
      emptyText: 'No keypairs.',
      create: {
        title: 'New keypair',
        fields: () => [
          { name: 'user_id', label: "User's e-mail", type: 'email', required: true },
          { name: 'resource_policy', label: 'Resource policy', value: 'default', required: true },
          { name: 'rate_limit', label: 'Requests per 15 minutes', type: 'number', value: 5000, min: 1 },
          { name: 'is_admin', label: 'Administrator keypair', type: 'checkbox' },
        ],
        run: (v) =>
          mutate(
            'mutation($u: String!, $p: KeyPairInput!) { create_keypair(user_id: $u, props: $p) { ok msg keypair { access_key secret_key } } }',
            { u: v.user_id, p: { is_active: true, is_admin: v.is_admin, resource_policy: v.resource_policy, rate_limit: v.rate_limit || 5000 } },
            'create_keypair',
          ),
        after: (r) =>
          dialog('The new keypair', (close) =>
            h(
              'div',
              {},
              h('p', {}, 'Give these to the user now: the secret key is not shown again.'),
              h('dl', { class: 'facts' }, h('div', {}, h('dt', {}, 'Access key'), h('dd', {}, h('code', {}, r.keypair.access_key))), h('div', {}, h('dt', {}, 'Secret key'), h('dd', {}, h('code', {}, r.keypair.secret_key)))),
              h('div', { class: 'actions' }, h('button', { type: 'button', class: 'primary', onclick: close }, 'Done')),
            ),
          ),
      },
    }),

  policies: () =>
    listTab({
      title: 'Resource policies',
      load: async () => (await gql('query { keypair_resource_policies { name total_resource_slots default_for_unspecified max_concurrent_sessions max_containers_per_session idle_timeout max_vfolder_count max_vfolder_size allowed_vfolder_hosts created_at } }')).keypair_resource_policies.filter(Boolean),
      columns: (reload) => [
        { label: 'Name', cell: (p) => p.name },
        { label: 'Total slots', cell: (p) => slotsText(p.total_resource_slots) },
        { label: 'Unspecified slots', cell: (p) => p.default_for_unspecified },
        { label: 'Concurrent sessions', cell: (p) => String(p.max_concurrent_sessions) },
        { label: 'Idle timeout', cell: (p) => (Number(p.idle_timeout) ? `${p.idle_timeout} s` : 'none') },
        { label: 'Folders', cell: (p) => `${p.max_vfolder_count || 'any number'} on ${(p.allowed_vfolder_hosts || []).join(', ') || 'no host'}` },
        {
          label: 'Actions',
          cell: (p) =>
            actionButton('Delete', 'danger', () =>
              confirmThen(`Delete resource policy ${p.name}?`, async () => {
                await mutate('mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }', { n: p.name }, 'delete_keypair_resource_policy');
                reload();
              }),
            ),
        },
      ],
      emptyText: 'No resource policies.',
      create: {
        title: 'New resource policy',
        fields: () => [
          { name: 'name', label: 'Name', required: true },
          slotsField('total_resource_slots', 'Total slots of a keypair'),
          { name: 'default_for_unspecified', label: 'Slots not listed are', type: 'select', options: [['UNLIMITED', 'unlimited'], ['LIMITED', 'not allowed']], value: 'UNLIMITED' },
          { name: 'max_concurrent_sessions', label: 'Concurrent sessions', type: 'number', value: 5, min: 0 },
          { name: 'idle_timeout', label: 'Idle timeout (seconds; 0 = none)', type: 'number', value: 0, min: 0 },
          { name: 'max_vfolder_count', label: 'Folders (0 = any number)', type: 'number', value: 10, min: 0 },
          { name: 'allowed_vfolder_hosts', label: 'Storage hosts (comma-separated)', value: 'local' },
        ],
        run: (v) =>
          mutate(
            'mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { create_keypair_resource_policy(name: $n, props: $p) { ok msg } }',
            {
              n: v.name,
              p: {
                default_for_unspecified: v.default_for_unspecified,
                total_resource_slots: checkJson(v.total_resource_slots),
                max_concurrent_sessions: v.max_concurrent_sessions || 0,
                max_containers_per_session: 1,
                idle_timeout: v.idle_timeout || 0,
                max_vfolder_count: v.max_vfolder_count || 0,
                max_vfolder_size: 0,
                allowed_vfolder_hosts: v.allowed_vfolder_hosts.split(',').map((x) => x.trim()).filter(Boolean),
              },
            },
            'create_keypair_resource_policy',
          ),
      },
    }),

  presets: () =>
    listTab({
      title: 'Resource presets',
      load: async () => (await gql('query { resource_presets { name resource_slots } }')).resource_presets.filter(Boolean),
      columns: (reload) => [
        { label: 'Name', cell: (p) => p.name },
        { label: 'Slots', cell: (p) => slotsText(p.resource_slots) },
        {
          label: 'Actions',
          cell: (p) =>
            actionButton('Delete', 'danger', () =>
              confirmThen(`Delete preset ${p.name}?`, async () => {
                await mutate('mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }', { n: p.name }, 'delete_resource_preset');
                reload();
              }),
            ),
        },
      ],
      emptyText: 'No presets: users choose resources by hand.',
      create: {
        title: 'New preset',
        fields: () => [{ name: 'name', label: 'Name', required: true }, slotsField('resource_slots', 'Slots', 'JSON, e.g. {"cpu": "1", "mem": "1g"}.')],
        run: (v) => mutate('mutation($n: String!, $p: CreateResourcePresetInput!) { create_resource_preset(name: $n, props: $p) { ok msg } }', { n: v.name, p: { resource_slots: checkJson(v.resource_slots) } }, 'create_resource_preset'),
      },
    }),

  domains: () =>
    listTab({
      title: 'Domains',
      load: async () => (await gql('query { domains { name description is_active total_resource_slots created_at } }')).domains.filter(Boolean),
      columns: (reload) => [
        { label: 'Name', cell: (d) => d.name },
        { label: 'Description', cell: (d) => d.description || '—' },
        { label: 'Total slots', cell: (d) => slotsText(d.total_resource_slots) },
        { label: 'Active', cell: (d) => (d.is_active ? 'yes' : 'no') },
        { label: 'Created', cell: (d) => when(d.created_at) },
        {
          label: 'Actions',
          cell: (d) =>
            d.is_active
              ? actionButton('Deactivate', 'danger', () =>
                  confirmThen(`Deactivate domain ${d.name}?`, async () => {
                    await mutate('mutation($n: String!) { delete_domain(name: $n) { ok msg } }', { n: d.name }, 'delete_domain');
                    reload();
                  }),
                )
              : '—',
        },
      ],
      emptyText: 'No domains.',
      create: {
        title: 'New domain',
        fields: () => [{ name: 'name', label: 'Name', required: true }, { name: 'description', label: 'Description' }, slotsField('total_resource_slots', 'Total slots')],
        run: (v) => mutate('mutation($n: String!, $p: DomainInput!) { create_domain(name: $n, props: $p) { ok msg } }', { n: v.name, p: { description: v.description, is_active: true, total_resource_slots: checkJson(v.total_resource_slots) } }, 'create_domain'),
      },
    }),

  groups: () =>
    listTab({
      title: 'Groups',
      load: async () => (await gql('query { groups(all: true) { id name domain_name description is_active total_resource_slots created_at } }')).groups.filter(Boolean),
      columns: (reload) => [
        { label: 'Name', cell: (g) => g.name },
        { label: 'Domain', cell: (g) => g.domain_name },
        { label: 'Description', cell: (g) => g.description || '—' },
        { label: 'Total slots', cell: (g) => slotsText(g.total_resource_slots) },
        { label: 'Active', cell: (g) => (g.is_active ? 'yes' : 'no') },
        {
          label: 'Actions',
          cell: (g) =>
            g.is_active
              ? actionButton('Deactivate', 'danger', () =>
                  confirmThen(`Deactivate group ${g.name}?`, async () => {
                    await mutate('mutation($g: String!) { delete_group(gid: $g) { ok msg } }', { g: g.id }, 'delete_group');
                    reload();
                  }),
                )
              : '—',
        },
      ],
      emptyText: 'No groups.',
      create: {
        title: 'New group',
        fields: () => [
          { name: 'name', label: 'Name', required: true },
          { name: 'domain_name', label: 'Domain', value: state.user.domain_name || 'default', required: true },
          { name: 'description', label: 'Description' },
          slotsField('total_resource_slots', 'Total slots'),
        ],
        run: (v) => mutate('mutation($n: String!, $p: GroupInput!) { create_group(name: $n, props: $p) { ok msg } }', { n: v.name, p: { domain_name: v.domain_name, description: v.description, is_active: true, total_resource_slots: checkJson(v.total_resource_slots) } }, 'create_group'),
      },
    }),

  images: () => {
    const rescan = h('button', {
      type: 'button',
      class: 'primary',
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          const r = await mutate('mutation { rescan_images { ok msg } }', {}, 'rescan_images');
          notify(r.msg || 'The registries were scanned.');
          again(true);
        } catch (err) {
          notify(err.message, 'error');
        } finally {
          e.target.disabled = false;
        }
      },
    }, 'Rescan registries');
    const aliasBtn = h('button', {
      type: 'button',
      onclick: () =>
        dialog('New alias', (close) =>
          form(
            [
              { name: 'alias', label: 'Alias', required: true, help: 'e.g. python' },
              { name: 'target', label: 'Image', required: true, help: 'registry/name:tag, or another alias' },
            ],
            'Save alias',
            async (v) => {
              await mutate('mutation($a: String!, $t: String!) { alias_image(alias: $a, target: $t) { ok msg } }', { a: v.alias, t: v.target }, 'alias_image');
              close();
              again(true);
            },
            { cancel: close },
          ),
        ),
    }, 'New alias');
    const box = h('div');
    const again = loadInto(box, async () => (await gql('query { images { name tag registry aliases installed size_bytes resource_limits { key min max } } }')).images.filter(Boolean), (rows) =>
      table(
        [
          { label: 'Image', cell: (i) => h('code', {}, `${i.registry}/${i.name}:${i.tag}`) },
          {
            label: 'Aliases',
            cell: (i) =>
              (i.aliases || []).length
                ? h('span', { class: 'chips' }, i.aliases.map((a) => h('span', { class: 'chip' }, a, h('button', {
                    type: 'button',
                    class: 'icon',
                    'aria-label': `Remove alias ${a}`,
                    onclick: () => confirmThen(`Remove alias ${a}?`, async () => {
                      await mutate('mutation($a: String!) { dealias_image(alias: $a) { ok msg } }', { a }, 'dealias_image');
                      again(true);
                    }),
                  }, '×'))))
                : '—',
          },
          { label: 'Limits', cell: (i) => (i.resource_limits || []).map((l) => `${l.key} ${l.min}–${l.max}`).join(', ') || '—' },
          { label: 'Size', cell: (i) => (i.size_bytes ? bytes(i.size_bytes) : '—') },
          { label: 'Installed', cell: (i) => (i.installed ? 'yes' : 'no') },
        ],
        rows,
        'No image is known yet: configure a registry (config/docker/registry/NAME) and rescan.',
        'Images',
      ),
    );
    return section('Images', h('span', { class: 'actions' }, aliasBtn, rescan), box);
  },

  agents: () =>
    listTab({
      title: 'Agents',
      load: async () => (await gql('query { agents { id status addr region version available_slots occupied_slots first_contact lost_at } }')).agents.filter(Boolean),
      columns: () => [
        { label: 'Agent', cell: (a) => a.id },
        { label: 'Status', cell: (a) => badge(a.status) },
        { label: 'Address', cell: (a) => a.addr },
        { label: 'Capacity', cell: (a) => slotsText(a.available_slots) },
        { label: 'Reserved', cell: (a) => slotsText(a.occupied_slots) },
        { label: 'Version', cell: (a) => a.version || '—' },
        { label: 'Joined', cell: (a) => when(a.first_contact) },
      ],
      emptyText: 'No agent has joined yet.',
    }),

  config: () => {
    const out = h('div');
    const show = async (key) => {
      clear(out, h('p', { class: 'loading' }, 'Loading…'));
      try {
        const r = await api('POST', '/config/get', { key, prefix: true });
        clear(out, h('pre', { class: 'logs', id: 'config-value' }, JSON.stringify(r.result, null, 2)));
      } catch (err) {
        clear(out, h('div', { class: 'error', role: 'alert' }, err.message));
      }
    };
    show('config');
    return h(
      'div',
      {},
      section('Read the shared configuration', null, form([{ name: 'key', label: 'Key or prefix', value: 'config', required: true }], 'Read', (v) => show(v.key)), out),
      section(
        'Change a key',
        null,
        h('p', { class: 'muted' }, 'Keys live in the shared configuration (etcd, or the embedded store). A JSON object sets every key under the prefix.'),
        form(
          [
            { name: 'key', label: 'Key', required: true, placeholder: 'config/docker/registry/local' },
            { name: 'value', label: 'Value (text or JSON object)', type: 'textarea', rows: 3, required: true },
          ],
          'Save',
          async (v) => {
            let value = v.value;
            if (value.trim().startsWith('{')) value = parseJson(value, null) || value;
            await api('POST', '/config/set', { key: v.key, value });
            notify(`${v.key} was saved.`);
            show(v.key);
          },
        ),
      ),
    );
  },

  manager: () => {
    const box = h('div');
    const reload = loadInto(box, () => api('GET', '/manager/status'), (s) =>
      h(
        'div',
        {},
        h('dl', { class: 'facts' }, h('div', {}, h('dt', {}, 'Status'), h('dd', { id: 'manager-status' }, badge(s.status))), h('div', {}, h('dt', {}, 'Active sessions'), h('dd', {}, String(s.active_sessions)))),
        h('p', { class: 'muted' }, 'A frozen manager keeps running sessions but refuses changes (new sessions, new folders...) until it is unfrozen, e.g. during maintenance.'),
        h(
          'div',
          { class: 'actions left' },
          s.status === 'frozen'
            ? h('button', { type: 'button', class: 'primary', id: 'unfreeze', onclick: () => setStatus('running') }, 'Unfreeze')
            : h('button', { type: 'button', class: 'danger', id: 'freeze', onclick: () => confirmThen('Freeze the manager? Users cannot start sessions until it is unfrozen.', () => setStatus('frozen')) }, 'Freeze'),
        ),
      ),
    );
    const setStatus = async (status) => {
      try {
        await api('PUT', '/manager/status', { status });
        notify(`The manager is ${status}.`);
      } catch (err) {
        notify(err.message, 'error');
      }
      reload(true);
    };
    return section('Manager', null, box);
  },
};

export function adminPage(tab) {
  if (!state.user.is_admin) {
    return h('div', { class: 'page' }, h('h1', {}, 'Admin'), h('div', { class: 'error', role: 'alert' }, 'These pages need an administrator’s login.'));
  }
  const visible = TABS.filter(([, , superOnly]) => !superOnly || state.user.role === 'superadmin');
  const known = visible.find(([k]) => k === tab);
  const current = known ? tab : 'users';
  return h(
    'div',
    { class: 'page' },
    h('h1', {}, 'Admin'),
    h(
      'nav',
      { class: 'subnav', 'aria-label': 'Admin sections' },
      h('ul', {}, visible.map(([k, label]) => h('li', {}, h('a', { href: `#/admin/${k}`, 'aria-current': k === current ? 'page' : null }, label)))),
    ),
    tabs[current](),
  );
}
