1;
% Query-mode driver for Octave, run by backend-ai-krunner as a persistent process.
% Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
% (see krunner/src/query.rs). Snippets are evaluated in the base workspace, so variables
% persist between runs; results display as at the Octave prompt. input() reads the
% user's input (the runner asks for it). SIGINT stops a running snippet: Octave's interrupt
% cannot be caught, so the cleanup block reports the run and asks the runner (a `feed`
% event) to type `__bai_main__()` at Octave's prompt (the interpreter runs with --persist,
% reading its stdin after the interrupt), which re-enters this loop with the workspace
% kept. Names starting with __bai are the driver's own.

function __bai_send__(kind, payload)
  persistent fid = -1;
  if fid < 0
    fid = fopen("/dev/fd/4", "w");
  end
  if nargin < 2
    payload = "";
  end
  fwrite(fid, [kind " " num2str(numel(payload)) "\n" payload]);
  fflush(fid);
end

function [op, text] = __bai_read__()
  persistent fid = -1;
  if fid < 0
    fid = fopen("/dev/fd/3", "r");
  end
  header = fgetl(fid);
  if ! ischar(header)
    exit(0);
  end
  parts = strsplit(header, " ");
  op = parts{1};
  n = str2double(parts{2});
  text = "";
  if n > 0
    text = fread(fid, n, "*char")';
    while numel(text) < n
      more = fread(fid, n - numel(text), "*char")';
      if isempty(more)
        exit(0);
      end
      text = [text more];
    end
  end
end

function __bai_main__()
  while true
    [op, text] = __bai_read__();
    if strcmp(op, "run")
      status = 1;
      finished = false;
      unwind_protect
        try
          evalin("base", text);
          status = 0;
        catch err
          fflush(stdout);
          fprintf(stderr, "error: %s\n", err.message);
        end_try_catch
        finished = true;
      unwind_protect_cleanup
        fflush(stdout);
        if ! finished
          fprintf(stderr, "Interrupted\n");
          __bai_send__("feed", "__bai_main__()");
        end
        fflush(stderr);
        __bai_send__("done", num2str(status));
      end_unwind_protect
    elseif strcmp(op, "complete")
      items = regexprep(cellstr(completion_matches(text)), "\\x00", "");
      __bai_send__("completion", strjoin(items', "\n"));
    end
  end
end

more off;
page_screen_output(false);
page_output_immediately(true);
PS1("");
PS2("");
__bai_send__("ready");
__bai_main__();
