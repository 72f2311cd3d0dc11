// Dashboard: the caller's resources against their policy, their running and pending
// sessions (with why they wait), and for admins the agents with capacity and live use.

import { state, api, gql, h, clear, section, bar, slot, parseJson, table, badge, when, empty, errorBox, every } from '../lib.js';

const SESSIONS = `query($status: String) {
  compute_sessions(status: $status) { sess_id status status_info image created_at occupied_slots agent }
}`;

const AGENTS = `query { agents { id status addr region version available_slots occupied_slots cpu_cur_pct mem_cur_bytes first_contact } }`;

function resources(check) {
  const limits = check.keypair_limits || {};
  const using = check.keypair_using || {};
  const names = Object.keys({ ...limits, ...using });
  if (!names.length) return empty('No resource slots are known yet.');
  return h(
    'div',
    { class: 'bars' },
    names.map((n) => bar(n === 'mem' ? 'Memory' : n === 'cpu' ? 'CPU cores' : n, using[n] || 0, limits[n], (x) => slot(n, x))),
  );
}

function sessionsCard(running, pending) {
  const link = (s) => h('a', { href: `#/sessions/${encodeURIComponent(s.sess_id)}` }, s.sess_id);
  return h(
    'div',
    {},
    h(
      'div',
      { class: 'stats' },
      h('div', { class: 'stat' }, h('span', { class: 'stat-n' }, String(running.length)), h('span', {}, 'running')),
      h('div', { class: 'stat' }, h('span', { class: 'stat-n' }, String(pending.length)), h('span', {}, 'pending')),
    ),
    pending.length
      ? h(
          'div',
          {},
          h('h3', {}, 'Waiting to start'),
          table(
            [
              { label: 'Session', cell: link },
              { label: 'Image', cell: (s) => s.image },
              { label: 'Why it waits', cell: (s) => s.status_info || 'waiting for the scheduler' },
              { label: 'Since', cell: (s) => when(s.created_at) },
            ],
            pending,
            '',
            'Pending sessions',
          ),
        )
      : null,
    running.length
      ? h(
          'div',
          {},
          h('h3', {}, 'Running'),
          table(
            [
              { label: 'Session', cell: link },
              { label: 'Image', cell: (s) => s.image },
              { label: 'Agent', cell: (s) => s.agent || '—' },
              { label: 'Started', cell: (s) => when(s.created_at) },
            ],
            running,
            '',
            'Running sessions',
          ),
        )
      : empty('No session is running. Start one on the Sessions page.'),
  );
}

function agentsCard(agents) {
  if (!agents.length) return empty('No agent has joined yet. Start one with `backend-ai-manager agent`.');
  return h(
    'div',
    { class: 'agents' },
    agents.map((a) => {
      const avail = parseJson(a.available_slots);
      const used = parseJson(a.occupied_slots);
      return h(
        'article',
        { class: 'agent' },
        h('div', { class: 'agent-head' }, h('h3', {}, a.id), badge(a.status)),
        h('p', { class: 'muted' }, `${a.addr || ''} · ${a.region || ''} · version ${a.version || '?'}`),
        Object.keys(avail).map((k) => bar(k === 'mem' ? 'Memory reserved' : k === 'cpu' ? 'CPU reserved' : `${k} reserved`, used[k] || 0, avail[k], (x) => slot(k, x))),
        a.cpu_cur_pct !== null && a.cpu_cur_pct !== undefined ? bar('CPU in use now', a.cpu_cur_pct, 100 * (Number(avail.cpu) || 1), (x) => `${Math.round(x)}%`) : null,
        a.mem_cur_bytes ? bar('Memory in use now', a.mem_cur_bytes, avail.mem, (x) => slot('mem', x)) : null,
      );
    }),
  );
}

export function dashboardPage() {
  const res = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const sess = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const agents = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const refresh = async () => {
    const jobs = [
      api('POST', '/resource/check-presets', {}).then(
        (c) => clear(res, resources(c)),
        (e) => clear(res, errorBox(e)),
      ),
      Promise.all([gql(SESSIONS, { status: 'RUNNING' }), gql(SESSIONS, { status: 'PENDING' })]).then(
        ([r, p]) => clear(sess, sessionsCard(r.compute_sessions || [], p.compute_sessions || [])),
        (e) => clear(sess, errorBox(e)),
      ),
    ];
    if (state.user.is_admin) {
      jobs.push(gql(AGENTS).then((d) => clear(agents, agentsCard(d.agents || [])), (e) => clear(agents, errorBox(e))));
    }
    await Promise.all(jobs);
  };
  every(5000, refresh);
  return h(
    'div',
    { class: 'page' },
    h('h1', {}, 'Dashboard'),
    h(
      'div',
      { class: 'grid' },
      section('Your resources', null, h('p', { class: 'muted' }, 'What your sessions hold now, against your resource policy.'), res),
      section('Sessions', h('a', { class: 'button', href: '#/sessions' }, 'All sessions'), sess),
    ),
    state.user.is_admin ? section('Agents', null, agents) : null,
  );
}
