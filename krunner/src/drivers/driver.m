1;
% Query-mode driver for Octave, run by backend-ai-krunner as a persistent process.
% Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
% (see krunner/src/query.rs). Snippets are evaluated in the base workspace, so variables
% persist between runs; results display as at the Octave prompt. input() and keyboard
% prompts read the user's input (the runner asks for it). SIGINT stops a running snippet;
% Octave's interrupt cannot be caught, so the cleanup block reports the run and the
% interpreter's top level (fed by the runner) re-enters this loop with state kept.
% Names starting with __bai are the driver's own.

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

more off;
page_screen_output(false);
page_output_immediately(true);
__bai_send__("ready");
while true
  [__bai_op, __bai_text] = __bai_read__();
  if strcmp(__bai_op, "run")
    __bai_status = 1;
    unwind_protect
      try
        eval(__bai_text);
        __bai_status = 0;
      catch __bai_err
        fflush(stdout);
        fprintf(stderr, "error: %s\n", __bai_err.message);
      end_try_catch
    unwind_protect_cleanup
      fflush(stdout);
      fflush(stderr);
      __bai_send__("done", num2str(__bai_status));
    end_unwind_protect
  elseif strcmp(__bai_op, "complete")
    __bai_items = completion_matches(__bai_text);
    __bai_send__("completion", strjoin(cellstr(__bai_items)', "\n"));
  end
end
