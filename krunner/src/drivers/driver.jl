# Query-mode driver for Julia, run by backend-ai-krunner as a persistent process.
# Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
# (see krunner/src/query.rs). Snippets are evaluated in Main, so state persists between
# runs; the last value is shown as at the REPL (unless the snippet ends with `;`).
# readline() reads the user's input (the runner asks for it). SIGINT raises an
# InterruptException in the running snippet and keeps the interpreter.
const BAI_CMD = open(RawFD(3))
const BAI_EV = open(RawFD(4))

function bai_send(kind::AbstractString, payload::AbstractString="")
    data = Vector{UInt8}(payload)
    write(BAI_EV, Vector{UInt8}("$kind $(length(data))\n"), data)
    flush(BAI_EV)
end

function bai_read()
    header = readline(BAI_CMD)
    isempty(header) && eof(BAI_CMD) && exit(0)
    op, n = split(header, ' ')
    data = read(BAI_CMD, parse(Int, n))
    return String(op), String(data)
end

function bai_run(code::String)
    try
        value = include_string(Main, code, "query")
        if value !== nothing && !endswith(rstrip(code), ";")
            show(stdout, MIME("text/plain"), value)
            println(stdout)
        end
        flush(stdout)
        return 0
    catch err
        flush(stdout)
        if err isa InterruptException
            println(stderr, "Interrupted")
        else
            showerror(stderr, err, catch_backtrace())
            println(stderr)
        end
        return 1
    end
end

function bai_complete(text::String)
    m = match(r"[A-Za-z_][A-Za-z0-9_!.]*$", text)
    m === nothing && return String[]
    prefix = m.match
    sort!(unique!([string(n) for mod in (Main, Base, Core) for n in names(mod; all=false, imported=true)
                   if startswith(string(n), prefix)]))
end

Base.exit_on_sigint(false)
cd(get(ENV, "BACKENDAI_WORKDIR", pwd()))
bai_send("ready")
while true
    # An interrupt that lands between snippets has nothing to stop.
    try
        op, text = bai_read()
        if op == "run"
            bai_send("done", string(bai_run(text)))
        elseif op == "complete"
            bai_send("completion", join(bai_complete(text), "\n"))
        end
    catch err
        err isa InterruptException || rethrow()
    end
end
