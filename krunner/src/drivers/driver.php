<?php
// Query-mode driver for PHP, run by backend-ai-krunner as a persistent process.
// Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
// (see krunner/src/query.rs). Snippets are PHP code (an opening `<?php` is optional) run
// with eval() at the top level, so variables, functions and classes persist between runs.
// Output (echo, print, printf, warnings) goes out as ordered events; fgets(STDIN) reads the
// user's input (the runner asks for it). SIGINT stops a running snippet (pcntl) and keeps
// the interpreter. Names starting with __bai are the driver's own.
$__bai_cmd = fopen('php://fd/3', 'rb');
$__bai_ev = fopen('php://fd/4', 'wb');

function __bai_send($kind, $payload = '')
{
    global $__bai_ev;
    fwrite($__bai_ev, $kind . ' ' . strlen($payload) . "\n" . $payload);
    fflush($__bai_ev);
}

function __bai_read()
{
    global $__bai_cmd;
    $header = fgets($__bai_cmd);
    if ($header === false) {
        exit(0);
    }
    $parts = explode(' ', trim($header));
    $n = (int)($parts[1] ?? 0);
    $text = '';
    while (strlen($text) < $n) {
        $chunk = fread($__bai_cmd, $n - strlen($text));
        if ($chunk === false || $chunk === '') {
            exit(0);
        }
        $text .= $chunk;
    }
    return [$parts[0], $text];
}

class __BaiInterrupted extends Exception
{
}

function __bai_complete($text)
{
    if (!preg_match('/(\$?[A-Za-z_][A-Za-z0-9_]*)$/', $text, $m)) {
        return [];
    }
    $prefix = $m[1];
    if ($prefix[0] === '$') {
        $names = array_map(fn($v) => '$' . $v, array_keys($GLOBALS));
    } else {
        $f = get_defined_functions();
        $names = array_merge($f['internal'], $f['user'], get_declared_classes(), array_keys(get_defined_constants()));
    }
    $out = array_values(array_unique(array_filter($names, fn($n) => strncmp($n, $prefix, strlen($prefix)) === 0 && strncmp($n, '__bai', 5) !== 0 && strncmp($n, '$__bai', 6) !== 0)));
    sort($out);
    return $out;
}

ini_set('display_errors', 'stderr');
ini_set('html_errors', '0');
ini_set('log_errors', '0');
error_reporting(E_ALL);
set_error_handler(function ($no, $str, $file, $line) {
    if (!(error_reporting() & $no)) {
        return false;
    }
    $kind = match ($no) {
        E_WARNING, E_USER_WARNING => 'Warning',
        E_NOTICE, E_USER_NOTICE => 'Notice',
        E_DEPRECATED, E_USER_DEPRECATED => 'Deprecated',
        default => 'Error',
    };
    ob_flush();
    __bai_send('stderr', "PHP $kind:  $str on line $line\n");
    return true;
});
if (function_exists('pcntl_async_signals')) {
    pcntl_async_signals(true);
    pcntl_signal(SIGINT, function () {
        throw new __BaiInterrupted('Interrupted');
    });
}
// Everything echoed goes out as it is written (a chunk size of 1 flushes every write).
ob_start(function ($buffer) {
    if ($buffer !== '') {
        __bai_send('stdout', $buffer);
    }
    return '';
}, 1);
__bai_send('ready');
while (true) {
    try {
        [$__bai_op, $__bai_text] = __bai_read();
        if ($__bai_op === 'run') {
            $__bai_code = 0;
            try {
                $__bai_text = preg_replace('/^\s*<\?php\b/', '', $__bai_text);
                $__bai_text = preg_replace('/\?>\s*$/', '', $__bai_text);
                eval($__bai_text);
            } catch (__BaiInterrupted $__bai_e) {
                ob_flush();
                __bai_send('stderr', "Interrupted\n");
                $__bai_code = 1;
            } catch (Throwable $__bai_e) {
                ob_flush();
                __bai_send('stderr', 'PHP ' . get_class($__bai_e) . ':  ' . $__bai_e->getMessage() . ' on line ' . $__bai_e->getLine() . "\n");
                $__bai_code = 1;
            }
            ob_flush();
            __bai_send('done', (string)$__bai_code);
        } elseif ($__bai_op === 'complete') {
            __bai_send('completion', implode("\n", __bai_complete($__bai_text)));
        }
    } catch (__BaiInterrupted $__bai_e) {
        // An interrupt between snippets has nothing to stop.
    }
}
