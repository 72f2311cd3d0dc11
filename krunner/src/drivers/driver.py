# Query-mode driver, run by backend-ai-krunner as a persistent Python process.
# Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
# (see krunner/src/query.rs). Output written through sys.stdout/sys.stderr is sent as
# ordered events; output that child processes write to the real fds 1 and 2 is read by the
# runner from those pipes.
import ast
import builtins
import os
import signal
import sys
import traceback

_cmd = os.fdopen(3, "rb", buffering=0)
_ev = os.fdopen(4, "wb", buffering=0)


def _send(kind, payload=""):
    data = payload.encode("utf-8", "replace")
    _ev.write(b"%s %d\n" % (kind.encode(), len(data)) + data)


# Output is line-buffered per stream; writing to one stream first flushes the other, so
# the order between stdout and stderr is kept.
_pending = {"stdout": "", "stderr": ""}


def _flush(name):
    if _pending[name]:
        data, _pending[name] = _pending[name], ""
        _send(name, data)


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


def _read_exact(n):
    data = b""
    while len(data) < n:
        chunk = _cmd.read(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data


def _read_cmd():
    header = b""
    while not header.endswith(b"\n"):
        c = _cmd.read(1)
        if not c:
            sys.exit(0)
        header += c
    op, length = header.decode().split()
    return op, _read_exact(int(length)).decode("utf-8", "replace")


def _input(prompt="", password=False):
    if prompt:
        sys.stdout.write(str(prompt))
    _flush_all()
    _send("waiting-input", "1" if password else "0")
    while True:
        op, text = _read_cmd()
        if op == "input":
            return text


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
            _send("media", "image/png\ndata:image/png;base64," + base64.b64encode(data).decode())
        elif callable(svg):
            _send("media", "image/svg+xml\n" + svg())
        elif callable(html):
            _send("html", html())
        else:
            sys.stdout.write(repr(obj) + "\n")


builtins.display = display


def _show_figures(*args, **kwargs):
    """matplotlib's plt.show(): every open figure goes out as a PNG image, then is closed,
    as the original's Python runner did."""
    import base64
    import io

    import matplotlib.pyplot as plt

    for num in plt.get_fignums():
        fig = plt.figure(num)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        _flush_all()
        _send("media", "image/png\ndata:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    plt.close("all")


class _MatplotlibHook:
    """Replaces pyplot.show once a snippet imports matplotlib.pyplot (a post-import hook on
    the real module), so kernels that never plot do not pay for importing it."""

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader.exec_module

        def exec_module(module):
            real(module)
            module.show = _show_figures

        spec.loader.exec_module = exec_module
        return spec


os.environ.setdefault("MPLBACKEND", "Agg")
sys.meta_path.insert(0, _MatplotlibHook())

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
_send("ready")
while True:
    try:
        op, text = _read_cmd()
        if op == "run":
            code = _run(text)
            _flush_all()
            _send("done", str(code))
        elif op == "complete":
            _send("completion", "\n".join(_complete(text)))
    except KeyboardInterrupt:
        # An interrupt between runs has nothing to stop.
        continue
