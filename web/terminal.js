// A small terminal for the session's PTY: a screen of rows × cols with a cursor and a
// scrollback, enough VT100/xterm control sequences for shells, editors' simple modes and
// progress output (cursor movement, erasing, scroll); colours are dropped. Keys become the
// bytes a terminal sends.

const MAX_SCROLLBACK = 1000;

export class Terminal {
  constructor(el, send) {
    this.el = el;
    this.send = send;
    this.decoder = new TextDecoder();
    this.pending = '';
    this.scrollback = [];
    this.resizeTo(24, 80);
    this.pre = document.createElement('pre');
    this.pre.className = 'terminal-screen';
    el.appendChild(this.pre);
    el.addEventListener('keydown', (e) => this.key(e));
    el.addEventListener('paste', (e) => {
      e.preventDefault();
      const text = (e.clipboardData || window.clipboardData).getData('text');
      this.send(new TextEncoder().encode(text.replace(/\n/g, '\r')));
    });
    this.render();
  }

  /// Rows and columns that fit the element (at least 10 × 40).
  size() {
    const probe = document.createElement('span');
    probe.textContent = 'M';
    this.pre.appendChild(probe);
    const { width, height } = probe.getBoundingClientRect();
    probe.remove();
    const cols = Math.max(40, Math.floor((this.el.clientWidth - 16) / (width || 8)));
    const rows = Math.max(10, Math.floor((this.el.clientHeight - 16) / (height || 16)));
    this.resizeTo(rows, cols);
    this.render();
    return { rows, cols };
  }

  resizeTo(rows, cols) {
    const old = this.lines || [];
    this.rows = rows;
    this.cols = cols;
    this.lines = [];
    for (let r = 0; r < rows; r += 1) {
      const line = old[r] || [];
      this.lines.push(Array.from({ length: cols }, (_, c) => line[c] || ' '));
    }
    this.row = Math.min(this.row || 0, rows - 1);
    this.col = Math.min(this.col || 0, cols - 1);
  }

  write(bytes) {
    this.pending += this.decoder.decode(bytes, { stream: true });
    let i = 0;
    const s = this.pending;
    while (i < s.length) {
      const ch = s[i];
      if (ch === '\x1b') {
        const used = this.escape(s, i);
        if (used === 0) break; // an incomplete sequence: wait for more bytes
        i += used;
        continue;
      }
      this.char(ch);
      i += 1;
    }
    this.pending = s.slice(i);
    this.render();
  }

  char(ch) {
    switch (ch) {
      case '\r':
        this.col = 0;
        return;
      case '\n':
        this.lineFeed();
        return;
      case '\b':
        this.col = Math.max(0, this.col - 1);
        return;
      case '\t':
        this.col = Math.min(this.cols - 1, (Math.floor(this.col / 8) + 1) * 8);
        return;
      case '\x07':
        return;
      default:
        if (ch < ' ') return;
        if (this.col >= this.cols) {
          this.col = 0;
          this.lineFeed();
        }
        this.lines[this.row][this.col] = ch;
        this.col += 1;
    }
  }

  lineFeed() {
    if (this.row < this.rows - 1) {
      this.row += 1;
      return;
    }
    this.scrollback.push(this.lines.shift().join('').trimEnd());
    if (this.scrollback.length > MAX_SCROLLBACK) this.scrollback.shift();
    this.lines.push(Array(this.cols).fill(' '));
  }

  /// Handles the escape sequence at `i`; answers how many characters it used (0: not
  /// complete yet).
  escape(s, i) {
    if (i + 1 >= s.length) return 0;
    const kind = s[i + 1];
    if (kind === '[') {
      let j = i + 2;
      while (j < s.length && !/[@-~]/.test(s[j])) j += 1;
      if (j >= s.length) return 0;
      this.csi(s.slice(i + 2, j), s[j]);
      return j - i + 1;
    }
    if (kind === ']') {
      // OSC (window title...): up to BEL or ESC \
      for (let j = i + 2; j < s.length; j += 1) {
        if (s[j] === '\x07') return j - i + 1;
        if (s[j] === '\x1b' && s[j + 1] === '\\') return j - i + 2;
      }
      return 0;
    }
    if (kind === '(' || kind === ')') return i + 2 < s.length ? 3 : 0;
    return 2; // ESC =, ESC >, ESC 7/8 and others: ignored
  }

  csi(params, final) {
    const priv = params.startsWith('?');
    const nums = params.replace(/^[?>]/, '').split(';').map((n) => parseInt(n, 10));
    const n = (k, d = 1) => (Number.isNaN(nums[k]) || nums[k] === undefined || nums[k] === 0 ? d : nums[k]);
    if (priv) return; // modes (cursor visibility, bracketed paste...): nothing to draw
    const blank = () => ' ';
    switch (final) {
      case 'A': this.row = Math.max(0, this.row - n(0)); break;
      case 'B': this.row = Math.min(this.rows - 1, this.row + n(0)); break;
      case 'C': this.col = Math.min(this.cols - 1, this.col + n(0)); break;
      case 'D': this.col = Math.max(0, this.col - n(0)); break;
      case 'G': this.col = Math.min(this.cols - 1, n(0) - 1); break;
      case 'd': this.row = Math.min(this.rows - 1, n(0) - 1); break;
      case 'H':
      case 'f':
        this.row = Math.min(this.rows - 1, n(0) - 1);
        this.col = Math.min(this.cols - 1, n(1) - 1);
        break;
      case 'J': {
        const mode = nums[0] || 0;
        if (mode === 2 || mode === 3) {
          this.lines = this.lines.map(() => Array(this.cols).fill(' '));
        } else if (mode === 0) {
          this.lines[this.row].fill(' ', this.col);
          for (let r = this.row + 1; r < this.rows; r += 1) this.lines[r].fill(' ');
        } else {
          this.lines[this.row].fill(' ', 0, this.col + 1);
          for (let r = 0; r < this.row; r += 1) this.lines[r].fill(' ');
        }
        break;
      }
      case 'K': {
        const mode = nums[0] || 0;
        const line = this.lines[this.row];
        if (mode === 0) line.fill(' ', this.col);
        else if (mode === 1) line.fill(' ', 0, this.col + 1);
        else line.fill(' ');
        break;
      }
      case 'P': {
        const line = this.lines[this.row];
        line.splice(this.col, n(0));
        while (line.length < this.cols) line.push(blank());
        break;
      }
      case '@': {
        const line = this.lines[this.row];
        line.splice(this.col, 0, ...Array(n(0)).fill(' '));
        line.length = this.cols;
        break;
      }
      case 'X': this.lines[this.row].fill(' ', this.col, this.col + n(0)); break;
      default: break; // SGR (colours) and the rest
    }
  }

  render() {
    const screen = this.lines.map((l, r) => {
      const text = l.join('');
      return r === this.row ? text : text.trimEnd();
    });
    this.pre.replaceChildren();
    const before = [...this.scrollback, ...screen.slice(0, this.row)].join('\n');
    const line = screen[this.row];
    const tail = screen.slice(this.row + 1).join('\n').replace(/\n+$/, '');
    this.pre.append(
      before + (before ? '\n' : '') + line.slice(0, this.col),
    );
    const cursor = document.createElement('span');
    cursor.className = 'cursor';
    cursor.textContent = line[this.col] || ' ';
    this.pre.append(cursor, line.slice(this.col + 1).trimEnd() + (tail ? '\n' + tail : ''));
    this.el.scrollTop = this.el.scrollHeight;
  }

  key(e) {
    const map = {
      Enter: '\r', Backspace: '\x7f', Tab: '\t', Escape: '\x1b',
      ArrowUp: '\x1b[A', ArrowDown: '\x1b[B', ArrowRight: '\x1b[C', ArrowLeft: '\x1b[D',
      Home: '\x1b[H', End: '\x1b[F', Delete: '\x1b[3~', PageUp: '\x1b[5~', PageDown: '\x1b[6~',
    };
    let out = null;
    if (e.ctrlKey && e.key === ']') {
      // The way out for keyboard users: Tab itself goes to the shell.
      e.preventDefault();
      this.el.blur();
      return;
    }
    if (e.ctrlKey && !e.altKey && e.key.length === 1) {
      const c = e.key.toUpperCase().charCodeAt(0);
      if (c >= 64 && c <= 95) out = String.fromCharCode(c - 64);
    } else if (map[e.key]) {
      out = map[e.key];
    } else if (e.key.length === 1 && !e.metaKey) {
      out = (e.altKey ? '\x1b' : '') + e.key;
    }
    if (out === null) return;
    e.preventDefault();
    this.send(new TextEncoder().encode(out));
  }
}
