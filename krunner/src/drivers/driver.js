// Query-mode driver for Node.js, run by backend-ai-krunner as a persistent process.
// Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
// (see krunner/src/query.rs). Snippets run in this process's global context, so variables,
// functions and required modules persist between runs; the value of a snippet's last
// expression is printed, as in the REPL. A snippet that returns a promise finishes when the
// promise settles. SIGINT stops a running snippet (vm's breakOnSigint) and keeps the
// interpreter. `input(prompt)` (also `prompt`) asks the user for a line.
'use strict';
const fs = require('fs');
const vm = require('vm');
const util = require('util');
const path = require('path');
const Module = require('module');

const CMD = 3;
const EV = 4;

function send(kind, text) {
  const payload = Buffer.from(String(text), 'utf8');
  const frame = Buffer.concat([Buffer.from(`${kind} ${payload.length}\n`), payload]);
  let off = 0;
  while (off < frame.length) {
    try {
      off += fs.writeSync(EV, frame, off);
    } catch (e) {
      if (e.code !== 'EAGAIN' && e.code !== 'EINTR') throw e;
    }
  }
}

let pending = Buffer.alloc(0);
function readSome() {
  const buf = Buffer.alloc(65536);
  for (;;) {
    try {
      const n = fs.readSync(CMD, buf, 0, buf.length, null);
      if (n === 0) process.exit(0);
      pending = Buffer.concat([pending, buf.subarray(0, n)]);
      return;
    } catch (e) {
      if (e.code !== 'EAGAIN' && e.code !== 'EINTR') process.exit(0);
    }
  }
}

function readCommand() {
  for (;;) {
    const nl = pending.indexOf(10);
    if (nl >= 0) {
      const [op, len] = pending.subarray(0, nl).toString().split(' ');
      const n = Number(len);
      if (pending.length >= nl + 1 + n) {
        const text = pending.subarray(nl + 1, nl + 1 + n).toString('utf8');
        pending = pending.subarray(nl + 1 + n);
        return [op, text];
      }
    }
    readSome();
  }
}

// Ordered output: everything written through process.stdout/stderr (console.* included)
// goes out as events, synchronously.
for (const name of ['stdout', 'stderr']) {
  process[name].write = (chunk, encoding, cb) => {
    send(name, Buffer.isBuffer(chunk) ? chunk.toString('utf8') : String(chunk));
    if (typeof encoding === 'function') encoding();
    else if (typeof cb === 'function') cb();
    return true;
  };
}

function input(promptText) {
  if (promptText !== undefined && promptText !== '') process.stdout.write(String(promptText));
  send('waiting-input', '0');
  for (;;) {
    const [op, text] = readCommand();
    if (op === 'input') return text;
  }
}

const workdir = process.env.BACKENDAI_WORKDIR || process.cwd();
globalThis.require = Module.createRequire(path.join(workdir, '<query>'));
globalThis.input = input;
globalThis.prompt = input;
globalThis.module = { exports: {} };
globalThis.exports = globalThis.module.exports;
globalThis.__dirname = workdir;
globalThis.__filename = path.join(workdir, '<query>');
// A signal between snippets has nothing to stop; without a listener it would end Node.
process.on('SIGINT', () => {});

function report(err) {
  if (err && err.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') {
    process.stderr.write('Interrupted\n');
  } else if (err instanceof Error) {
    // The driver's own frames say nothing about the user's code.
    const stack = String(err.stack || err).split('\n')
      .filter((l) => !/^\s+at .*(node:vm|driver\.js|node:internal)/.test(l));
    process.stderr.write(`${stack.join('\n')}\n`);
  } else {
    process.stderr.write(`Uncaught ${util.inspect(err)}\n`);
  }
  return 1;
}

function run(code, finish) {
  let value;
  try {
    const script = new vm.Script(code, { filename: '<query>' });
    value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  } catch (err) {
    return finish(report(err));
  }
  if (value && typeof value.then === 'function') {
    value.then(
      (v) => {
        if (v !== undefined) process.stdout.write(`${util.inspect(v)}\n`);
        finish(0);
      },
      (err) => finish(report(err)),
    );
    return undefined;
  }
  if (value !== undefined) process.stdout.write(`${util.inspect(value)}\n`);
  return finish(0);
}

const KEYWORDS = ['async', 'await', 'break', 'case', 'catch', 'class', 'const', 'continue',
  'default', 'delete', 'do', 'else', 'export', 'extends', 'finally', 'for', 'function', 'if',
  'import', 'in', 'instanceof', 'let', 'new', 'return', 'switch', 'this', 'throw', 'try',
  'typeof', 'var', 'void', 'while', 'yield'];

function complete(text) {
  const m = /([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)\.?([A-Za-z_$][\w$]*)?$/.exec(text);
  if (!m) return [];
  const full = m[0];
  const dot = full.lastIndexOf('.');
  let obj = globalThis;
  let base = '';
  let prefix = full;
  if (dot >= 0) {
    base = full.slice(0, dot + 1);
    prefix = full.slice(dot + 1);
    try {
      obj = vm.runInThisContext(full.slice(0, dot));
    } catch (e) {
      return [];
    }
  }
  const names = new Set(dot < 0 ? KEYWORDS : []);
  for (let o = obj; o !== null && o !== undefined; o = Object.getPrototypeOf(o)) {
    for (const n of Object.getOwnPropertyNames(o)) names.add(n);
  }
  return [...names].filter((n) => n.startsWith(prefix) && /^[A-Za-z_$][\w$]*$/.test(n))
    .sort().map((n) => base + n);
}

function loop() {
  const [op, text] = readCommand();
  if (op === 'run') {
    run(text, (code) => {
      send('done', String(code));
      setImmediate(loop);
    });
  } else {
    if (op === 'complete') send('completion', complete(text).join('\n'));
    setImmediate(loop);
  }
}

process.chdir(workdir);
send('ready', '');
loop();
