# Query-mode driver, run by backend-ai-krunner as a persistent Python process.
# Commands arrive as JSON lines on fd 3; events go out as JSON lines on fd 4.
# Output written through sys.stdout/sys.stderr is sent as ordered events; output that
# child processes write to the real fds 1 and 2 is read by the runner from those pipes.
import ast
import builtins
import json
import os
import signal
import sys
import traceback

_cmd = os.fdopen(3, "r", encoding="utf-8")
_ev = os.fdopen(4, "w", encoding="utf-8", buffering=1)


def _send(**msg):
    _ev.write(json.dumps(msg) + "\n")
    _ev.flush()


# Output is line-buffered per stream; writing to one stream first flushes the other, so
# the order between stdout and stderr is kept.
_pending = {"stdout": "", "stderr": ""}


def _flush(name):
    if _pending[name]:
        data, _pending[name] = _pending[name], ""
        _send(t="out", s=name, d=data)


def _flush_all():
    _flush("stdout")
    _flush("stderr")


class _Out:
    encoding = "utf-8"
    errors = "replace"

    def __init__(self, name):
        self.name = name
        self.other = "stderr" if name == "stdout" else "stdout"

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        if s:
            _flush(self.other)
            _pending[self.name] += s
            if "\n" in s or len(_pending[self.name]) >= 4096:
                _flush(self.name)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        _flush(self.name)

    def isatty(self):
        return False

    def fileno(self):
        return 1 if self.name == "stdout" else 2


def _read_cmd():
    line = _cmd.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)


def _input(prompt="", password=False):
    if prompt:
        sys.stdout.write(str(prompt))
    _flush_all()
    _send(t="waiting-input", is_password=password)
    while True:
        msg = _read_cmd()
        if msg.get("op") == "input":
            return msg.get("text", "")


class _In:
    encoding = "utf-8"

    def readline(self, *args):
        return _input() + "\n"

    def read(self, *args):
        return _input()

    def isatty(self):
        return False

    def fileno(self):
        return 0


sys.stdout = _Out("stdout")
sys.stderr = _Out("stderr")
sys.stdin = _In()
builtins.input = _input
try:
    import getpass

    getpass.getpass = lambda prompt="Password: ", stream=None: _input(prompt, True)
except ImportError:
    pass

def display(*objs):
    """Shows rich output as notebooks do: _repr_html_ as html, _repr_png_ / _repr_svg_ as
    media, anything else as its repr."""
    import base64

    for obj in objs:
        _flush_all()
        html = getattr(obj, "_repr_html_", None)
        png = getattr(obj, "_repr_png_", None)
        svg = getattr(obj, "_repr_svg_", None)
        if callable(png):
            data = png()
            if isinstance(data, str):
                data = data.encode("latin-1")
            _send(t="media", mime="image/png", data="data:image/png;base64," + base64.b64encode(data).decode())
        elif callable(svg):
            _send(t="media", mime="image/svg+xml", data=svg())
        elif callable(html):
            _send(t="html", d=html())
        else:
            sys.stdout.write(repr(obj) + "\n")


builtins.display = display

_globals = {"__name__": "__main__", "__builtins__": builtins}


def _run(code):
    try:
        tree = ast.parse(code, "<input>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<input>", "exec"), _globals)
        if last is not None:
            value = eval(compile(last, "<input>", "eval"), _globals)
            if value is not None:
                _globals["_"] = value
                sys.stdout.write(repr(value) + "\n")
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        etype, value, tb = sys.exc_info()
        traceback.print_exception(etype, value, tb.tb_next)
        return 1


def _complete(text):
    import rlcompleter

    completer = rlcompleter.Completer(_globals)
    matches = []
    for state in range(200):
        m = completer.complete(text, state)
        if m is None:
            break
        matches.append(m)
    return matches


signal.signal(signal.SIGINT, signal.default_int_handler)
os.chdir(os.environ.get("BACKENDAI_WORKDIR", os.getcwd()))
_send(t="ready")
while True:
    try:
        msg = _read_cmd()
        op = msg.get("op")
        if op == "run":
            code = _run(msg.get("code", ""))
            _flush_all()
            _send(t="done", exitCode=code)
        elif op == "complete":
            _send(t="completion", items=_complete(msg.get("text", "")))
    except KeyboardInterrupt:
        # An interrupt between runs has nothing to stop.
        continue
