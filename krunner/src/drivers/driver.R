# Query-mode driver for R, run by backend-ai-krunner as a persistent process.
# Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
# (see krunner/src/query.rs). Snippets are evaluated in the global environment, so state
# persists between runs; visible values are printed as at the R prompt. readline() and
# readLines("stdin") read the user's input (the runner asks for it). SIGINT stops a
# running snippet and keeps the interpreter. The driver's own objects live in an attached
# environment ("backend.ai"), out of the user's workspace.
local({
  bai <- new.env()
  bai$cmd <- file("/dev/fd/3", open = "rb", blocking = TRUE, raw = TRUE)
  bai$ev <- file("/dev/fd/4", open = "wb", blocking = TRUE, raw = TRUE)
  bai$stdin <- file("stdin")
  open(bai$stdin, "r")

  bai$send <- function(kind, payload = "") {
    bytes <- charToRaw(enc2utf8(paste(payload, collapse = "\n")))
    writeBin(c(charToRaw(paste0(kind, " ", length(bytes), "\n")), bytes), bai$ev)
    flush(bai$ev)
  }

  bai$read <- function() {
    header <- raw(0)
    repeat {
      b <- readBin(bai$cmd, "raw", 1)
      if (length(b) == 0) quit(save = "no", status = 0)
      if (b == as.raw(10)) break
      header <- c(header, b)
    }
    parts <- strsplit(rawToChar(header), " ", fixed = TRUE)[[1]]
    n <- as.integer(parts[2])
    text <- ""
    if (n > 0) {
      got <- raw(0)
      while (length(got) < n) {
        chunk <- readBin(bai$cmd, "raw", n - length(got))
        if (length(chunk) == 0) quit(save = "no", status = 0)
        got <- c(got, chunk)
      }
      text <- rawToChar(got)
      Encoding(text) <- "UTF-8"
    }
    list(op = parts[1], text = text)
  }

  bai$run <- function(code) {
    exprs <- tryCatch(parse(text = code, keep.source = FALSE), error = function(e) e)
    if (inherits(exprs, "error")) {
      cat("Error: ", conditionMessage(exprs), "\n", sep = "", file = stderr())
      return(1L)
    }
    status <- 0L
    for (expr in exprs) {
      ok <- tryCatch(
        withCallingHandlers(
          {
            res <- withVisible(eval(expr, envir = globalenv()))
            if (res$visible) print(res$value)
            TRUE
          },
          warning = function(w) {
            cat("Warning message:\n", conditionMessage(w), "\n", sep = "", file = stderr())
            invokeRestart("muffleWarning")
          }
        ),
        error = function(e) {
          call <- conditionCall(e)
          call <- paste(deparse(call), collapse = " ")
          # A top-level stop() has the driver's eval() as its call: not the user's.
          where <- if (startsWith(call, "eval(expr, envir = globalenv())") || call == "NULL") "" else paste0(" in ", call)
          cat("Error", where, ": ", conditionMessage(e), "\n", sep = "", file = stderr())
          FALSE
        },
        interrupt = function(e) {
          cat("Interrupted\n", file = stderr())
          FALSE
        }
      )
      if (!isTRUE(ok)) {
        status <- 1L
        break
      }
    }
    flush(stdout())
    status
  }

  bai$complete <- function(text) {
    utils:::.assignLinebuffer(text)
    utils:::.assignEnd(nchar(text))
    utils:::.guessTokenFromLine()
    utils:::.completeToken()
    utils:::.retrieveCompletions()
  }

  tools <- new.env()
  # readline() returns "" at once when R is not interactive; this one asks the user.
  tools$readline <- function(prompt = "") {
    cat(prompt)
    flush(stdout())
    line <- readLines(bai$stdin, n = 1)
    if (length(line) == 0) "" else line
  }
  attach(tools, name = "backend.ai", warn.conflicts = FALSE)
  assign(".bai", bai, envir = as.environment("backend.ai"))
})

local({
  bai <- get(".bai", envir = as.environment("backend.ai"))
  bai$send("ready")
  repeat {
    # An interrupt that lands between snippets has nothing to stop.
    tryCatch({
      msg <- bai$read()
      if (identical(msg$op, "run")) {
        status <- tryCatch(bai$run(msg$text), interrupt = function(e) 1L)
        bai$send("done", as.character(status))
      } else if (identical(msg$op, "complete")) {
        items <- tryCatch(bai$complete(msg$text), error = function(e) character(0))
        bai$send("completion", paste(items, collapse = "\n"))
      }
    }, interrupt = function(e) NULL)
  }
})
